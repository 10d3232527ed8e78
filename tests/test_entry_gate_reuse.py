"""The entry gate's reuse of risk managers' answers, and the closing curve's no-leg-left-out shortcut.

* ``RiskGate.entries_blocked(..., version=v)`` answers from a manager's last answer while the account's version is
  the same and the time is before the one the manager's ``blocks_entries_until`` gave: on random sequences of
  decision times (window edges, blackout edges, overlapping blackouts, new days) and account changes (open
  trades, trades opened today, exits, realized losses that trip the daily cap), every answer, reason text
  included, equals a gate that asks every manager every time; and a backtest whose strategy asks at every bar
  records the same SKIP reasons with and without reuse.
* ``closing_curve`` / ``closing_order_legs`` skip ``left_legs`` when every sold leg is bid above zero on every
  minute (``_may_leave_legs`` False): then ``left_legs`` leaves nothing out, whatever the asks, and the curve is
  the general one bit for bit.
"""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import pytest

from strikebench.api import RiskManager, Strategy, Veto
from strikebench.calendar import NY
from strikebench.engine import broker as broker_mod
from strikebench.engine.broker import _may_leave_legs, closing_curve, closing_order_legs
from strikebench.engine.context import RiskGate
from strikebench.options.contracts import OptionContract
from strikebench.options.fills import left_legs
from strikebench.options.orders import Leg
from strikebench.plugins import risk_managers as rm
from strikebench.plugins.fill_models import MidSlippageFill, NaturalFill
from strikebench.testing import ModelMarket, run_strategy

from test_closing_curve import ROOTS, bits, closing_curve_by_rows


class _Portfolio:
    """A portfolio view the test changes by hand (what the built-in managers read)."""

    def __init__(self, today):
        self.today = today
        self.trades: list[str] = []
        self.trades_opened_today = 0
        self.realized_today = 0.0
        self.exit_reasons_today: list[str] = []

    def open_trades(self, strategy=None):
        return [t for t in self.trades if strategy is None or t == strategy]


class _Clock(RiskManager):
    """A rule without a promise (names the minute): asked every time, never reused."""

    name = "clock"

    def blocks_entries(self, strategy, at, portfolio):
        return Veto(f"odd minute {at:%H:%M}") if at.minute % 2 else None


class _NoRule(RiskManager):
    """Keeps the default blocks_entries (never blocks) but trips: its trips are still handed out by the gate."""

    name = "tripper"

    def __init__(self):
        super().__init__()
        self.pending: list = []

    def pop_trips(self, upto=None):
        out = [t for t in self.pending if upto is None or t[0] <= upto]
        self.pending = [t for t in self.pending if not (upto is None or t[0] <= upto)]
        return out


def _managers(day: dt.date):
    def at(h, m, d=day):
        return dt.datetime(d.year, d.month, d.day, h, m, tzinfo=NY)

    blackout = rm.EventBlackout()
    nxt = day + dt.timedelta(days=1)
    # overlapping windows listed out of order, one on the next day, one-minute wide ones
    blackout.windows = [(at(13, 0), at(14, 0), "B"), (at(11, 0), at(13, 30), "A"), (at(12, 15), at(12, 16), "C"),
                        (at(10, 30, nxt), at(10, 45, nxt), "D"), (at(11, 0), at(11, 1), "E")]
    return [rm.MaxOpenTrades(rm.MaxOpenTrades.Params(limit=2, per_strategy=True)),
            rm.MaxNewTradesPerDay(rm.MaxNewTradesPerDay.Params(limit=3)), rm.NoEntryAfterStop(),
            rm.DailyLossCap(rm.DailyLossCap.Params(cap=500.0)),
            rm.NoNewRiskWindow(rm.NoNewRiskWindow.Params(minutes_before_close=60, minutes_after_open=15)),
            blackout, _Clock(), _NoRule()]


@pytest.mark.parametrize("seed", range(12))
def test_reused_answers_equal_asking_every_manager_every_time(seed):
    pyrng = random.Random(seed)
    day = dt.date(2024, 1, 8)
    reused, asked = RiskGate(_managers(day)), RiskGate(_managers(day))
    for gate in (reused, asked):  # the same trips pending in both
        gate.risk_managers[-1].pending = [(dt.datetime(2024, 1, 8, 11, 0, tzinfo=NY), "t1"),
                                          (dt.datetime(2024, 1, 9, 10, 0, tzinfo=NY), "t2")]
    ports = {id(reused): _Portfolio(day), id(asked): _Portfolio(day)}
    version, minute, hits = 0, 9 * 60 + 30, 0
    sessions = [dt.date(2024, 1, d) for d in (9, 10, 11, 12, 16, 17, 18, 19, 22, 23, 24, 25, 26)]
    for step in range(400):
        change = pyrng.random()
        if change < 0.03 and sessions:  # a new session
            day = sessions.pop(0)
            minute = 9 * 60 + 30
            version += 1
            for p in ports.values():
                p.today, p.trades_opened_today, p.realized_today, p.exit_reasons_today = day, 0, 0.0, []
        elif change < 0.25:  # an account change (an order event, a fill, a settlement)
            version += 1
            what, who = pyrng.randrange(4), pyrng.choice(["a", "b"])
            for p in ports.values():
                if what == 0:
                    p.trades.append(who)
                    p.trades_opened_today += 1
                elif what == 1 and p.trades:
                    p.trades.pop(0)
                    p.exit_reasons_today.append("stop_loss" if step % 5 == 0 else "take_profit")
                elif what == 2:
                    p.realized_today -= 150.0
        elif change < 0.30:
            pass  # an event that changes nothing the managers read still moves the version (below)
        minute = min(minute + pyrng.choice([0, 1, 1, 2, 5, 15, 29, 30, 31, 44, 45, 60]), 16 * 60 - 1)
        at = dt.datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=NY)
        strategy = pyrng.choice(["a", "b"])
        got = reused.entries_blocked(strategy, at, ports[id(reused)], version=version)
        want = asked.entries_blocked(strategy, at, ports[id(asked)])
        assert got == want, (step, at, strategy)
        due = [name for when, name in ((dt.datetime(2024, 1, 8, 11, 0, tzinfo=NY), "t1"),
                                        (dt.datetime(2024, 1, 9, 10, 0, tzinfo=NY), "t2")) if when <= at]
        assert [t[1] for t in reused.trips] == due  # a trip is handed out at the first ask from its time on
        hits += len(reused._entry_answers)
    assert reused.trips == asked.trips
    assert hits  # answers were kept


def test_a_manager_without_a_promise_and_a_changed_version_are_asked_again():
    calls = []

    class Counting(rm.MaxOpenTrades):
        def blocks_entries(self, strategy, at, portfolio):
            calls.append(at)
            return super().blocks_entries(strategy, at, portfolio)

    gate = RiskGate([Counting()])
    p = _Portfolio(dt.date(2024, 1, 8))
    p.trades = ["cv"]
    t = [dt.datetime(2024, 1, 8, 10 + k, 0, tzinfo=NY) for k in range(4)]
    assert gate.entries_blocked("cv", t[0], p, version=1)[0].reason == "1 open trade(s), limit 1"
    assert gate.entries_blocked("cv", t[1], p, version=1)[0].reason == "1 open trade(s), limit 1"
    assert len(calls) == 1  # reused
    p.trades = []
    assert gate.entries_blocked("cv", t[2], p, version=2) == []  # the account changed: asked
    assert gate.entries_blocked("cv", t[3], p) == []  # no version: asked
    assert len(calls) == 3


class _AskEveryBar(Strategy):
    """Asks the gate at every decision minute and opens a one-lot spread when nothing blocks."""

    name = "asker"

    def __init__(self):
        super().__init__()
        self.answers: list = []

    def decision_times(self):
        return [dt.time(h, m) for h in range(9, 16) for m in range(0, 60, 7) if (h, m) >= (9, 30)]

    def on_decision_time(self, ctx):
        blocked = ctx.entries_blocked()
        self.answers.append((ctx.now, [(v.rule, v.reason) for v in blocked]))
        if not blocked:
            ctx.open_trade([Leg(SHORT, -1), Leg(LONG, +1)], 1)

    def manage(self, ctx, trade):
        if ctx.now.minute % 20 == 0:
            ctx.close_trade(trade, "stop_loss" if ctx.now.hour % 2 else "take_profit")


DAY = dt.date(2024, 1, 10)
SHORT = OptionContract("SPXW", DAY + dt.timedelta(days=2), 4700.0, "P")
LONG = OptionContract("SPXW", DAY + dt.timedelta(days=2), 4690.0, "P")


def _gate_run(reuse: bool, monkeypatch):
    if not reuse:
        plain = RiskGate.entries_blocked
        monkeypatch.setattr(RiskGate, "entries_blocked",
                            lambda self, strategy, at, portfolio, version=None: plain(self, strategy, at, portfolio))
    market = ModelMarket(DAY, DAY + dt.timedelta(days=1), spot=4710.0,
                         quotes={SHORT: (5.00, 5.20), LONG: (4.00, 4.20)}, settlement={})
    blackout = rm.EventBlackout()
    blackout.windows = [(dt.datetime(2024, 1, 10, 11, 0, tzinfo=NY), dt.datetime(2024, 1, 10, 11, 40, tzinfo=NY), "X")]
    managers = [rm.MaxOpenTrades(rm.MaxOpenTrades.Params(limit=2)), rm.MaxNewTradesPerDay(rm.MaxNewTradesPerDay.Params(limit=6)),
                rm.NoEntryAfterStop(), rm.NoNewRiskWindow(rm.NoNewRiskWindow.Params(minutes_after_open=20)), blackout]
    strat = _AskEveryBar()
    run_strategy(strat, market, risk_managers=managers)
    monkeypatch.undo()
    return strat.answers


def test_a_backtest_records_the_same_answers_with_and_without_reuse(monkeypatch):
    reused = _gate_run(True, monkeypatch)
    asked = _gate_run(False, monkeypatch)
    assert reused == asked
    reasons = {r for _, vs in asked for r, _ in vs}
    assert {"max_open_trades", "no_new_risk_window", "event_blackout"} <= reasons  # the rules were exercised
    assert any(not vs for _, vs in asked)


# ------------------------------------------------------------------ closing curve: no leg left out
def _quotes(rng, n, k, zero_rate):
    mid = rng.uniform(0.05, 8.0, size=(1, k)) + np.cumsum(rng.normal(0, 0.05, size=(n, k)), axis=0)
    half = rng.choice([0.01, 0.025, 0.05, 0.10, 0.003], size=(n, k))
    bid, ask = np.round(mid - half, 2), np.round(mid + half, 2)
    bid = np.where(bid <= 0, 0.05, bid)  # positive bids, but for the cells drawn below
    u = rng.random((n, k))
    bid = np.where(u < zero_rate, 0.0, bid)
    bid = np.where((u > 0.5) & (u < 0.5 + zero_rate), np.nan, bid)
    bid = np.where((u > 0.6) & (u < 0.6 + zero_rate), -0.05, bid)
    ask = np.where((u > 0.7) & (u < 0.7 + zero_rate), np.nan, ask)  # asks do not matter to the shortcut
    bid = np.where((u > 0.8) & (u < 0.8 + zero_rate), ask + 0.05, bid)  # crossed
    bid = np.where((u > 0.9) & (u < 0.9 + zero_rate), 5e-324, bid)  # the least positive float
    return bid, ask


@pytest.mark.parametrize("seed", range(6))
def test_no_leg_left_out_when_every_sold_leg_is_bid_and_the_curve_is_the_general_one(seed):
    rng = np.random.default_rng(900 + seed)
    pyrng = random.Random(seed)
    expiry = dt.date(2024, 1, 19)
    shortcut = 0
    for trial in range(80):
        root = pyrng.choice(list(ROOTS))
        base, width = ROOTS[root]
        k = pyrng.choice([1, 2, 2, 3, 4])
        strikes = [base + width * i for i in pyrng.sample(range(-10, 10), k)]
        legs = tuple(Leg(OptionContract(root, expiry, s, pyrng.choice("PC")), pyrng.choice([1, -1, 2, -2]))
                     for s in strikes)
        n = pyrng.choice([1, 2, 7, 390])
        bid, ask = _quotes(rng, n, k, pyrng.choice([0.0, 0.0, 0.001, 0.01, 0.05]))
        ratios = np.array([leg.ratio for leg in legs], dtype=np.float64)
        left = left_legs(ratios, bid, ask)
        if not _may_leave_legs(ratios, bid):
            shortcut += 1
            assert not left.any()
        for row in range(min(n, 5)):  # one minute (an exit order's legs)
            assert _may_leave_legs(ratios, bid[row]) == _may_leave_legs(ratios, bid[row:row + 1])
            got = closing_order_legs(legs, bid[row], ask[row])
            assert got[2].dtype == bool and got[2].tolist() == (~left[row]).tolist()
        model = pyrng.choice([MidSlippageFill(), NaturalFill()])
        got = closing_curve(model, legs, bid, ask, as_of=dt.date(2024, 1, 10))
        want = closing_curve_by_rows(model, legs, bid, ask, as_of=dt.date(2024, 1, 10))
        assert np.array_equal(bits(got), bits(want)), (legs, trial)
    assert shortcut > 20


def test_closing_order_legs_keeps_every_leg_in_order_when_none_can_be_left_out():
    legs = (Leg(OptionContract("SPXW", dt.date(2024, 1, 19), 4700.0, "P"), 2),
            Leg(OptionContract("SPXW", dt.date(2024, 1, 19), 4690.0, "P"), -2))
    got, qty, keep = closing_order_legs(legs, np.array([1.0, 0.5]), np.array([1.2, 0.6]))
    assert qty == 2 and keep.tolist() == [True, True] and [leg.ratio for leg in got] == [1, -1]
    got, qty, keep = closing_order_legs(legs, np.array([1.0, 0.0]), np.array([1.2, 0.05]))
    assert qty == 2 and keep.tolist() == [True, False] and [leg.ratio for leg in got] == [1]
    assert broker_mod._may_leave_legs(np.array([1.0, 2.0]), np.array([0.0, np.nan])) is False  # nothing sold
