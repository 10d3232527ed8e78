"""Quiet bars: a backtest skips the bars at which nothing can happen, with the same run bar for bar.

The engine (``Engine._plan_quiet``) skips the bars before the next one at which a working order, a decision,
a strategy's ``manage`` or the session's end can act, and writes their account values in one slice. Here the
same runs go bar by bar (``quiet_bars = False``) and with quiet stretches, and must agree on every decision,
order, trade and on the account value after every bar; a scripted trade's value on a skipped bar is checked
against its quotes by hand.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from strikebench.api import RunInfo
from strikebench.config import load_config
from strikebench.engine.core import Engine
from strikebench.engine.runner import build_engine, run_cerebro
from strikebench.options.contracts import OptionContract
from strikebench.options.orders import Leg
from strikebench.plugin_manager import get_plugin_manager
from strikebench.plugins.commissions import CboeRetail
from strikebench.plugins.fill_models import MidSlippageFill
from strikebench.testing import ModelMarket, ScriptedStrategy

ROOT = Path(__file__).resolve().parents[1]


def _run(config: str, end: str, quiet: bool, market=None):
    pm = get_plugin_manager()
    resolved = load_config(str(ROOT / "configs" / config), [f"data.end={end}"], registry=pm.registry)
    market = market if market is not None else resolved.data.build().open()
    engine = build_engine(resolved, run=RunInfo(run_id="q", name="q", mode="backtest"), market=market)
    engine.quiet_bars = quiet
    run_cerebro(engine)
    return engine, market


def _story(engine):
    decisions = [(d.strategy, str(d.decided_at), d.action, d.reason, d.chosen, d.snapshot_checksum)
                 for d in engine.decisions]
    orders = [(o.client_id, o.status.value, o.status_reason, o.filled_quantity, o.avg_fill_price)
              for o in engine.broker.orders.values()]
    trades = [(t.trade_id, str(t.opened_at), str(t.closed_at), t.exit_reason, t.realized_pnl, t.fees)
              for t in engine.portfolio.all_trades()]
    return decisions, orders, trades


@pytest.mark.parametrize("config,end", [("all_strategies.yaml", "2023-01-13"),
                                        ("spx_credit_vertical.yaml", "2023-01-31")])
def test_quiet_stretches_change_nothing(config, end):
    slow, market = _run(config, end, quiet=False)
    fast, _ = _run(config, end, quiet=True, market=market)
    assert slow.quiet_bar_count == 0
    n = len(fast.timeline)
    assert fast.quiet_bar_count > n // 2  # most bars of these runs are quiet: the path is exercised
    assert fast.i == slow.i == n - 1
    assert _story(fast) == _story(slow)
    assert len(fast.decisions) > 20 and len(fast.portfolio.all_trades()) > 3
    # the account value after every bar, bit for bit, skipped bars included
    assert np.array_equal(fast.equity_curve, slow.equity_curve)
    assert fast.summary() == slow.summary()


def test_a_skipped_bar_is_valued_at_its_quotes():
    """A put spread opened at 10:00 and held: no manage, no decision, no order until the close, so the
    bars between are quiet; each one's account value is cash + the spread's mid value at that minute."""
    expiry = dt.date(2024, 1, 12)
    p1, p2 = OptionContract("SPXW", expiry, 4700.0, "P"), OptionContract("SPXW", expiry, 4695.0, "P")

    def short_leg(ts):  # the short put's quote walks up a nickel every minute from 10:00
        step = max(0, (ts.hour * 60 + ts.minute) - 600)
        return (3.00 + 0.05 * step, 3.40 + 0.05 * step)

    class Hold(ScriptedStrategy):
        def manage(self, ctx, trade):  # no exit rule: nothing to do before the session ends
            ctx.idle_until(trade, 10_000)

    market = ModelMarket("2024-01-08", "2024-01-08", spot=4710.0, quotes={p1: short_leg, p2: (2.40, 2.60)})
    strat = Hold([Leg(p1, -1), Leg(p2, 1)], at="10:00")
    engine = Engine(market=market, strategies=[("s", strat)], fill_model=MidSlippageFill(), commission=CboeRetail())
    engine.run_all()
    assert engine.quiet_bar_count > 300
    (trade,) = engine.portfolio.all_trades()
    cash = engine.portfolio.cash if trade.is_open else None
    assert cash is not None
    minutes = engine.timeline.index
    for i in (31, 45, 200, 388):  # 10:01, 10:15, 12:50, 15:58: skipped bars
        assert i < len(minutes) - 1
        b, a = short_leg(minutes[i])
        short_mid, long_mid = (b + a) / 2, (2.40 + 2.60) / 2
        value = cash + (-short_mid + long_mid) * 100
        assert round(engine.equity_curve[i], 6) == round(value, 6), minutes[i]


def test_a_working_order_is_tried_every_bar():
    """No bar is quiet while an order works: a credit limit of 1.00 on a spread whose mid credit is 0.70 until
    10:29 and 1.20 from 10:30 fills at 10:30, at the mid (the mid fill model), not at a later busy bar."""
    from strikebench.plugins.fill_models import MidFill

    expiry = dt.date(2024, 1, 12)
    p1, p2 = OptionContract("SPXW", expiry, 4700.0, "P"), OptionContract("SPXW", expiry, 4695.0, "P")

    def short_leg(ts):
        return (3.00, 3.40) if (ts.hour, ts.minute) < (10, 30) else (3.60, 3.80)

    market = ModelMarket("2024-01-08", "2024-01-08", spot=4710.0, quotes={p1: short_leg, p2: (2.40, 2.60)})
    strat = ScriptedStrategy([Leg(p1, -1), Leg(p2, 1)], at="10:00", limit=-1.00)
    engine = Engine(market=market, strategies=[("s", strat)], fill_model=MidFill(), commission=CboeRetail())
    engine.run_all()
    (order,) = strat.orders
    (fill,) = order.fills
    assert fill.filled_at.strftime("%H:%M") == "10:30"
    assert fill.net_price == -1.20  # short mid 3.70 - long mid 2.50, a credit
    assert engine.quiet_bar_count > 0  # the bars before 10:00 (no trade, no order) are quiet
