"""The paper broker's money: fills by the shared rule (legs inside their quotes, exact sum), and XSP
settlement exact to the cent on a three-decimal print. Figures derived here from quotes and rules."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from strikebench.brokers.paper import PaperAccount, PaperParams
from strikebench.calendar import NY
from strikebench.options.contracts import OptionContract
from strikebench.options.orders import Leg, Order, OrderType
from strikebench.plugins.commissions import ZeroCommission
from strikebench.plugins.fill_models import MidSlippageFill
from strikebench.testing import ModelMarket

DAY = dt.date(2024, 1, 10)
P470, P468 = OptionContract("XSP", DAY, 470.0, "P"), OptionContract("XSP", DAY, 468.0, "P")


def test_paper_fill_legs_and_xsp_settlement_to_the_cent(tmp_path):
    market = ModelMarket(DAY, DAY, spot=471.0, root="XSP", underlying="XSP",
                         quotes={P470: (0.40, 0.44), P468: (0.20, 0.22)}, settlement={DAY: 469.997})
    account = PaperAccount(tmp_path / "paper.sqlite", market=market, fill_model=MidSlippageFill(),
                           commission=ZeroCommission(), params=PaperParams(latency_seconds=0), underlying="XSP")
    try:
        at = pd.Timestamp("2024-01-10 10:00", tz=NY)
        order = Order("O-1", (Leg(P470, -1), Leg(P468, 1)), 3, order_type=OrderType.MARKET, opens=True,
                      created_at=at.to_pydatetime())
        account.place(order, at)
        account.sync(pd.Timestamp("2024-01-10 16:05", tz=NY))
        (placed,) = account.orders()
        (fill,) = placed.fills
        # mid -0.42 + 0.21 = -0.21, width 0.06: -0.192 -> up to -0.19 (XSP 0.01); f = (-19 - -24) / (-18 - -24) = 5/6:
        # sell 470 at 0.44 - 5/6 x 0.04 = 0.407 -> 0.41, buy 468 at 0.20 + 5/6 x 0.02 = 0.217 -> 0.22: -0.41 + 0.22 = -0.19
        assert fill.net_price == -0.19 and fill.leg_prices == (0.41, 0.22)
        # 469.997 against the short 470 put: 0.003 x 100 x 3 = 0.90 paid, not 0 (rounded before multiplying)
        settled = {s.occ: s.cash for s in account.settlements()}
        assert settled == {P470.occ_compact: -0.90, P468.occ_compact: 0.0}
        assert round(account.balances()["cash"] * 100) == 100_000_00 + 3 * 19_00 - 90
    finally:
        account.close()
