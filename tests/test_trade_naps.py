"""Promises about one trade alone (``ctx.idle_until(trade, bar, own="trade")``, what ``credit_exit`` makes).

The engine keeps such a promise by trade (``ctx._kept_naps``) until its bar, a session start or settlement, or an
event of that trade's own orders and fills: when the strategy is managed for another reason (another of its
trades' fills or exit bar), the trades whose promise holds are not managed again. Here the same runs go with the
promises kept and with every promise forgotten at once (each trade managed whenever the strategy is, as before
kept promises), and must agree on every decision, order, trade and the account value after every bar; and an event
of one trade's orders wakes that trade, not the strategy's others.
"""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import pytest

from strikebench.api import Strategy
from strikebench.engine.core import Engine
from strikebench.options.contracts import OptionContract
from strikebench.options.orders import Leg
from strikebench.plugins.commissions import ZeroCommission
from strikebench.plugins.fill_models import MidSlippageFill
from strikebench.strategies.spreads import credit_exit
from strikebench.testing import ModelMarket

DAYS = ("2024-01-08", "2024-01-10")
EXPIRY = dt.date(2024, 1, 12)  # the trades live across the sessions: each session starts with trades held


class _Forgetful(dict):
    """A context's kept promises that keep nothing: every trade is managed whenever its strategy is."""

    def __setitem__(self, key, value):
        pass


def _minute(ts) -> int:
    return (ts.hour * 60 + ts.minute) - (9 * 60 + 30) + 390 * (ts.date() - dt.date(2024, 1, 8)).days


def _market(seed: int, spreads: list[tuple[OptionContract, OptionContract]]):
    """Each short put walks by its own random path (nickel steps, some minutes with a zero-bid long wing)."""
    rng = np.random.default_rng(seed)
    quotes = {}
    for k, (short, long) in enumerate(spreads):
        steps = rng.choice([-10, -5, 0, 5, 10], size=390 * 5)
        path = np.maximum(60, 400 + np.cumsum(steps))

        def short_quote(ts, path=path):
            c = int(path[min(_minute(ts), len(path) - 1)])
            return c / 100, (c + 20) / 100

        def long_quote(ts, k=k):
            m = _minute(ts)
            return (0.0, 0.05) if (m + 7 * k) % 97 < 9 else (0.40, 0.55)  # a wing without a bid now and then

        quotes[short], quotes[long] = short_quote, long_quote
    return ModelMarket(DAYS[0], DAYS[1], spot=4750.0, quotes=quotes, expiries=[EXPIRY])


class _Many(Strategy):
    """Opens one credit put spread at each of its decision times; exits each by the credit rule (idle)."""

    name = "many"

    def __init__(self, times, spreads, levels):
        super().__init__()
        self.times, self.spreads, self.levels = times, spreads, levels
        self.managed: list[tuple[str, int]] = []
        self._opened = 0

    def decision_times(self):
        return self.times

    def on_decision_time(self, ctx):
        short, long = self.spreads[self._opened % len(self.spreads)]
        self._opened += 1
        ctx.open_trade([Leg(short, -1), Leg(long, +1)], 1)

    def manage(self, ctx, trade):
        self.managed.append((trade.trade_id, ctx._engine.i))
        tp, stop = self.levels[hash(trade.trade_id) % len(self.levels)]
        credit_exit(ctx, trade, take_profit_pct=tp, stop_multiple=stop, idle=True)


def _run(seed: int, keep: bool):
    pyrng = random.Random(seed)
    spreads = [(OptionContract("SPXW", EXPIRY, 4700.0 + 10 * k, "P"), OptionContract("SPXW", EXPIRY, 4690.0 + 10 * k, "P"))
               for k in range(4)]
    times = sorted({dt.time(9 + (30 + m) // 60, (30 + m) % 60) for m in pyrng.sample(range(1, 385), 9)})
    levels = [(pyrng.choice([0.3, 0.5, 0.8]), pyrng.choice([1.5, 2.0, 3.0])) for _ in range(3)]
    strat = _Many(times, spreads, levels)
    engine = Engine(market=_market(seed, spreads), strategies=[(strat.name, strat)], fill_model=MidSlippageFill(),
                    commission=ZeroCommission())
    if not keep:
        for ctx in engine.contexts:
            ctx._kept_naps = _Forgetful()
    engine.run_all()
    return engine, strat


def _story(engine):
    orders = [(o.client_id, o.status.value, o.status_reason, o.filled_quantity, o.avg_fill_price,
               [(f.filled_at, f.net_price, f.leg_prices) for f in o.fills]) for o in engine.broker.orders.values()]
    trades = [(t.trade_id, str(t.opened_at), str(t.closed_at), t.exit_reason, t.realized_pnl, t.partly_closed_at)
              for t in engine.portfolio.all_trades()]
    return orders, trades


@pytest.mark.parametrize("seed", range(6))
def test_kept_promises_change_nothing_and_skip_the_trades_they_hold_for(seed):
    fast, strat = _run(seed, keep=True)
    slow, strat_slow = _run(seed, keep=False)
    assert _story(fast) == _story(slow)
    assert np.array_equal(fast.equity_curve, slow.equity_curve)
    assert fast.summary() == slow.summary()
    trades = fast.portfolio.all_trades()
    assert len(trades) >= 9 and any(t.exit_reason in ("take_profit", "stop_loss") for t in trades)
    # every (trade, bar) managed with kept promises is one managed without; fewer of them
    assert set(strat.managed) <= set(strat_slow.managed)
    assert len(strat.managed) < len(strat_slow.managed)
    # a trade is managed after its fill (the bar after a decision's order; the bar of a working order's fill), on
    # its exit bar, and at each session start it is held into: its own promise holds through its strategy's other
    # trades' fills and exits
    opened = {t.trade_id: fast.timeline.index.get_loc(t.opened_at) for t in trades}
    starts = set(np.flatnonzero(fast.timeline.first).tolist())
    for tid, bar in strat.managed:
        trade = next(t for t in trades if t.trade_id == tid)
        closed = trade.closed_at or trade.partly_closed_at  # a wing without a bid left to expire: partly closed
        exit_bar = fast.timeline.index.get_loc(closed) if closed is not None else None
        assert bar in (opened[tid], opened[tid] + 1, exit_bar) or bar in starts, (tid, bar)


class _Pending(Strategy):
    """Two trades that never meet a level; at 11:00 an exit limit of the first that cannot fill, cancelled at 12:00."""

    name = "pending"
    SPREADS = [(OptionContract("SPXW", EXPIRY, 4700.0, "P"), OptionContract("SPXW", EXPIRY, 4690.0, "P")),
               (OptionContract("SPXW", EXPIRY, 4710.0, "P"), OptionContract("SPXW", EXPIRY, 4700.0, "P"))]

    def __init__(self):
        super().__init__()
        self.managed: list[tuple[int, dt.time]] = []
        self.exit = None

    def decision_times(self):
        return [dt.time(10, 0), dt.time(10, 10), dt.time(11, 0), dt.time(12, 0)]

    def on_decision_time(self, ctx):
        t = ctx.now.time()
        if t < dt.time(10, 30):
            short, long = self.SPREADS[t.minute // 10]
            ctx.open_trade([Leg(short, -1), Leg(long, +1)], 1)
        elif t == dt.time(11, 0):
            self.exit = ctx.close_trade(ctx.open_trades()[0], "manual", limit=0.05)  # a debit of 0.05: never
        else:
            assert ctx.cancel(self.exit)

    def manage(self, ctx, trade):
        k = [t.trade_id for t in ctx._engine.portfolio.all_trades()].index(trade.trade_id)
        self.managed.append((k, ctx.now.time()))
        credit_exit(ctx, trade, take_profit_pct=1.0, stop_multiple=100.0, idle=True)  # never meets a level


def test_an_event_of_one_trades_orders_wakes_that_trade_only():
    quotes = {c: (2.00, 2.20) if c.strike == 4710.0 else (1.00, 1.20) if c.strike == 4700.0 else (0.50, 0.60)
              for pair in _Pending.SPREADS for c in pair}
    market = ModelMarket(DAYS[0], DAYS[0], spot=4750.0, quotes=quotes, expiries=[EXPIRY])
    strat = _Pending()
    engine = Engine(market=market, strategies=[(strat.name, strat)], fill_model=MidSlippageFill(),
                    commission=ZeroCommission())
    engine.run_all()
    assert strat.exit is not None and strat.exit.status.value == "cancelled"
    # the first trade: after its fill, after its exit order went working (pending: idle), after it was cancelled;
    # the second: after its fill only (the first trade's order events do not wake it, nor its fill the first)
    assert strat.managed == [(0, dt.time(10, 1)), (1, dt.time(10, 11)), (0, dt.time(11, 1)), (0, dt.time(12, 1))]
