"""A counterfactual's exit levels come from its fill, not from its limit (strikebench.ml.outcomes).

The candidate below is a 4000/3975 SPXW put credit spread with a 2.00 credit limit. At the decision bar its
mid is a 3.00 credit, so the mid fill model fills it at 3.00, a better credit than the limit. The take
profit (50 %) is then a closing cost of 1.50 or less, not 1.00: the trade closes at the first bar whose
closing mid is at or under 1.50 (1.40 at 09:32), not at 09:33 (0.90, the first bar under 1.00).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from strikebench.ml.outcomes import Spec, simulate
from strikebench.options.chain import LegQuotes
from strikebench.options.contracts import OptionContract, Right
from strikebench.options.orders import Leg
from strikebench.plugins.commissions import ZeroCommission
from strikebench.plugins.fill_models import MidFill

DAY = dt.date(2023, 3, 15)
SHORT = OptionContract(root="SPXW", expiry=DAY, strike=4000.0, right=Right.PUT)
LONG = OptionContract(root="SPXW", expiry=DAY, strike=3975.0, right=Right.PUT)
# per minute from 09:30: (short bid, short ask, long bid, long ask); the combo mid is short mid - long mid
QUOTES = [
    (4.90, 5.10, 1.90, 2.10),  # 09:30 decision: mid credit 3.00 >= the 2.00 limit: fills at 3.00
    (4.40, 4.60, 1.90, 2.10),  # 09:31 closing mid 2.50: neither level
    (2.30, 2.50, 0.90, 1.10),  # 09:32 closing mid 1.40: <= 1.50 = 50 % of the fill's credit -> take profit
    (1.80, 2.00, 0.90, 1.10),  # 09:33 closing mid 0.90: the first bar <= 1.00 (50 % of the limit's credit)
    (1.70, 1.90, 0.90, 1.10),
]


class _Market:
    def leg_quotes(self, contracts, day):
        assert day == DAY
        times = pd.date_range(f"{DAY} 09:30", periods=len(QUOTES), freq="1min", tz="America/New_York")
        cols = {SHORT: (0, 1), LONG: (2, 3)}
        bid = np.array([[row[cols[c][0]] for c in contracts] for row in QUOTES])
        ask = np.array([[row[cols[c][1]] for c in contracts] for row in QUOTES])
        return LegQuotes(contracts=tuple(contracts), times=times.as_unit("ns").asi8.copy(), bid=bid, ask=ask)

    def settlement_value(self, contract):
        return 4100.0  # both expire worthless (not reached: the trade exits first)


def test_take_profit_level_is_from_the_fill_credit_not_the_limit():
    spec = Spec(decided_at=pd.Timestamp(f"{DAY} 09:30", tz="America/New_York"),
                legs=(Leg(SHORT, -1), Leg(LONG, 1)), quantity=1, limit=-2.00, take_profit_pct=0.50,
                stop_multiple=2.0)
    (out,) = simulate(_Market(), [spec], MidFill(), ZeroCommission(), sessions=[DAY])
    assert out.filled and out.resolved
    assert out.entry_price == -3.00  # the mid, better than the limit
    assert out.opened_at == pd.Timestamp(f"{DAY} 09:30", tz="America/New_York")
    assert out.exit_reason == "take_profit"
    assert out.closed_at == pd.Timestamp(f"{DAY} 09:32", tz="America/New_York")
    assert out.exit_price == 1.40
    assert out.pnl_cents == (300 - 140) * 100  # (3.00 credit - 1.40 to close) x 100, no fees
    assert out.fees_cents == 0
