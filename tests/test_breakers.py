"""Circuit breakers, hand-checked on small markets: each trips on the first bar that meets its rule, with
figures derived here from the pinned quotes, vetoes new risk (never exits) until its documented reset,
and is journaled and reported."""

from __future__ import annotations

import datetime as dt
import json
import math
import os

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from strikebench.api import PluginParams, Strategy
from strikebench.calendar import NY
from strikebench.errors import DataError
from strikebench.options.contracts import OptionContract
from strikebench.options.orders import Leg
from strikebench.plugins import breakers as br
from strikebench.plugins.fill_models import NaturalFill
from strikebench.testing import ModelMarket, orders_of, run_strategy, trades_of

EXP = dt.date(2024, 1, 26)
SHORT, LONG = OptionContract("SPXW", EXP, 4700.0, "P"), OptionContract("SPXW", EXP, 4695.0, "P")
LEGS = (Leg(SHORT, -1), Leg(LONG, +1))
BAD_MINUTES = {"10:30", "11:30"}  # the spread is quoted much higher at these minutes: every exit loses


def _quote(normal, bad):
    return lambda ts: bad if f"{ts:%H:%M}" in BAD_MINUTES else normal


# at the natural: entry credit 3.00 - 2.60 = 0.40; exit debit 5.20 - 3.00 = 2.20; each round trip -180.00
QUOTES = {SHORT: _quote((3.00, 3.40), (5.00, 5.20)), LONG: _quote((2.40, 2.60), (3.00, 3.10))}
LOSS = round((0.40 - 2.20) * 100, 2)


class RoundTrips(Strategy):
    """Each session: open the spread at each entry time, close it at the paired exit time."""

    name = "round_trips"
    Params = PluginParams

    def __init__(self, pairs=(("10:00", "10:30"),), days=None):
        super().__init__()
        self.pairs = [(dt.time.fromisoformat(a), dt.time.fromisoformat(b)) for a, b in pairs]
        self.days = days
        self.opened: list = []  # (time, order or None when vetoed)

    def decision_times(self):
        return sorted({t for p in self.pairs for t in p})

    def on_decision_time(self, ctx):
        if self.days is not None and ctx.today not in self.days:
            return
        now = ctx.now.time()
        if any(now == b for _, b in self.pairs):
            for trade in ctx.open_trades():
                ctx.close_trade(trade, "scripted exit")
        if any(now == a for a, _ in self.pairs):
            self.opened.append((ctx.now.to_pydatetime(), ctx.open_trade(LEGS, 1)))


def _run(strategy, breaker, start="2024-01-08", end="2024-01-12", **market):
    m = ModelMarket(start, end, quotes=QUOTES, **market)
    return run_strategy(strategy, m, fill_model=NaturalFill(), risk_managers=[breaker])


def _at(day, hhmm):
    return dt.datetime.combine(day, dt.time.fromisoformat(hhmm), NY)


D1, D2, D3, D4 = dt.date(2024, 1, 8), dt.date(2024, 1, 9), dt.date(2024, 1, 10), dt.date(2024, 1, 11)


def test_daily_loss_pct_trips_on_the_closing_fill_that_reaches_the_limit_and_resets_next_session():
    # 0.3 % of 100,000 = 300: the first exit (-180) stays under, the second (-360 at 11:30) reaches it
    breaker = br.DailyLossPct(br.DailyLossPct.Params(pct=0.3))
    strat = RoundTrips([("10:00", "10:30"), ("11:00", "11:30"), ("12:00", "12:30")], days={D1, D2})
    engine = _run(strat, breaker)
    assert LOSS == -180.0 and [t.realized_pnl for t in trades_of(engine)][:2] == [-180.0, -180.0]
    (trip, trip2) = engine.risk_gate.trips
    assert trip.rule == "daily_loss_pct" and trip.scope == "account" and trip.tripped_at == _at(D1, "11:30")
    assert trip.figures["realized_today"] == -360.0 and trip.figures["limit"] == 300.0
    assert trip.figures["start_equity"] == 100_000.0
    opened = {at: order for at, order in strat.opened}
    assert opened[_at(D1, "10:00")] is not None and opened[_at(D1, "11:00")] is not None
    assert opened[_at(D1, "12:00")] is None  # vetoed: tripped at 11:30
    # next session: the base is day 1's closing equity 99,640.00; 0.3 % of it = 298.92; it trips again at 11:30
    assert opened[_at(D2, "10:00")] is not None and opened[_at(D2, "11:00")] is not None
    assert trip2.tripped_at == _at(D2, "11:30") and trip2.figures["start_equity"] == 99_640.0
    assert trip2.figures["limit"] == round(0.003 * 99_640.0, 2)
    vetoed = [o for o in orders_of(engine) if o.status_reason.startswith("vetoed")]
    assert [o.created_at for o in vetoed] == [_at(D1, "12:00"), _at(D2, "12:00")]
    assert "daily_loss_pct: tripped at 11:30" in vetoed[0].status_reason


def test_daily_loss_pct_per_strategy_scope_blocks_only_the_losing_strategy():
    from strikebench.testing import portfolio_view, order_request

    breaker = br.DailyLossPct(br.DailyLossPct.Params(pct=0.1, scope="strategy"))
    view = portfolio_view()
    rec = type("T", (), {})()  # a closed trade of strategy "a" lost 150.00 at 10:30
    rec.strategy, rec.realized_pnl, rec.closed_at, rec.trade_id = "a", -150.0, _at(D1, "10:30"), "t1"
    view.closed_trades = lambda strategy=None: [rec]
    assert breaker.check(order_request(LEGS, at=_at(D1, "11:00"), strategy="b"), view) is None
    veto = breaker.check(order_request(LEGS, at=_at(D1, "11:00"), strategy="a"), view)
    assert veto is not None and "1,000.00 (100.00)" not in veto.reason and "(100.00)" in veto.reason
    (trip,) = breaker.pop_trips()
    assert trip.scope == "strategy:a" and trip.tripped_at == _at(D1, "10:30")


def test_losing_days_trips_at_the_close_of_the_nth_losing_session_and_pauses():
    breaker = br.LosingDays(br.LosingDays.Params(days=2, pause_sessions=1))
    strat = RoundTrips([("10:00", "10:30")])
    engine = _run(strat, breaker)
    trip, again = engine.risk_gate.trips
    assert trip.tripped_at == _at(D2, "16:00") and trip.figures["losing_sessions"] == 2
    assert trip.figures["last_change"] == -180.0
    opened = {at.date(): order for at, order in strat.opened}
    assert opened[D1] is not None and opened[D2] is not None
    assert opened[D3] is None  # the one paused session
    assert opened[D4] is not None  # the count restarted: D4 is one losing day, not three
    assert len(trades_of(engine)) == 4  # D1, D2, D4, D5 (2024-01-12)
    assert again.tripped_at == _at(dt.date(2024, 1, 12), "16:00")  # D4 and D5 lost: two more in a row


def test_drawdown_breaker_trips_at_the_first_close_past_the_limit_and_rebases_the_mark():
    # closing equity 99,820 (0.18 %) then 99,640 (0.36 % >= 0.3 %)
    breaker = br.DrawdownBreaker(br.DrawdownBreaker.Params(max_pct=0.3, pause_sessions=1))
    strat = RoundTrips([("10:00", "10:30")])
    engine = _run(strat, breaker)
    trip, again = engine.risk_gate.trips
    assert trip.tripped_at == _at(D2, "16:00")
    assert trip.figures["equity"] == 99_640.0 and trip.figures["high_water_mark"] == 100_000.0
    assert trip.figures["drawdown_pct"] == round((100_000 - 99_640) / 100_000 * 100, 4)
    opened = {at.date(): order for at, order in strat.opened}
    assert opened[D3] is None and opened[D4] is not None
    # after the pause the mark is D3's close 99,640: D4 and D5 lose 180 each = 0.36 % of it -> trips at D5's close
    assert [e for _, e in engine.equity_by_day] == [99_820.0, 99_640.0, 99_640.0, 99_460.0, 99_280.0]
    assert again.tripped_at == _at(dt.date(2024, 1, 12), "16:00") and again.figures["high_water_mark"] == 99_640.0


def test_drawdown_breaker_rebases_the_mark_on_the_closes_of_its_pause():
    from strikebench.testing import order_request, portfolio_view

    b = br.DrawdownBreaker(br.DrawdownBreaker.Params(max_pct=0.5, pause_sessions=1))
    closes = [(D1, 99_000.0), (D2, 101_000.0), (D3, 100_000.0)]  # D1 -1 %: trip; D2 paused; D3 -0.99 % of 101,000
    for day, equity in closes:
        b.on_session_start(day, None, None)
        blocked = b.check(order_request(LEGS, at=_at(day, "10:00")), portfolio_view(today=day)) is not None
        assert blocked == (day == D2)
        b.on_session_end(day, equity, portfolio_view(today=day))
    first, second = b.trips
    assert first.tripped_at == _at(D1, "16:00") and first.figures["drawdown_pct"] == 1.0
    assert second.tripped_at == _at(D3, "16:00") and second.figures["high_water_mark"] == 101_000.0
    assert second.figures["drawdown_pct"] == round(1_000 / 101_000 * 100, 4)


def _vix(path):
    """VIX minute closes: 15 on day 1; day 2 jumps to 18.10 at 11:00 (+20.67 %); day 3 opens at 18.10 (no jump),
    reaches 30 at 13:00."""
    def f(index):
        out = np.full(len(index), 15.0)
        local = index.tz_convert(NY)
        hm = local.hour * 60 + local.minute
        d = local.date
        out[(d == D2) & (hm >= 11 * 60)] = 18.10
        out[d == D3] = 18.10
        out[(d == D3) & (hm >= 13 * 60)] = 30.0
        return out
    return f


def test_vix_jump_trips_on_the_first_bar_over_the_jump_or_the_level_and_resets_next_session():
    breaker = br.VixJump(br.VixJump.Params(level=30, jump_pct=20))
    strat = RoundTrips([("10:00", "10:30"), ("11:00", "11:30"), ("13:00", "13:30")], days={D2, D3})
    engine = _run(strat, breaker, end="2024-01-10", other_bars={"VIX": _vix(None)})
    t2, t3 = engine.risk_gate.trips
    assert t2.tripped_at == _at(D2, "11:00") and t2.figures["previous_close"] == 15.0
    assert t2.figures["change_pct"] == round((18.10 / 15.0 - 1) * 100, 4) and "above the previous close" in t2.reason
    assert t3.tripped_at == _at(D3, "13:00") and t3.figures["vix"] == 30.0 and "level 30" in t3.reason
    opened = {at: order for at, order in strat.opened}
    assert opened[_at(D2, "10:00")] is not None and opened[_at(D2, "11:00")] is None
    assert opened[_at(D2, "13:00")] is None
    assert opened[_at(D3, "10:00")] is not None and opened[_at(D3, "11:00")] is not None  # 18.10 vs 18.10: 0 %
    assert opened[_at(D3, "13:00")] is None
    # exits were never blocked: every opened trade closed
    assert all(not t.is_open for t in trades_of(engine))


def test_vix_jump_without_vix_bars_is_a_data_error():
    with pytest.raises(DataError, match="no minute bars for 'VIX'"):
        _run(RoundTrips(), br.VixJump(br.VixJump.Params()))


def _bsm(is_call, s, k, t, r, q, v):
    if t <= 0:
        return max(s - k, 0.0) if is_call else max(k - s, 0.0)
    d1 = (math.log(s / k) + (r - q + v * v / 2) * t) / (v * math.sqrt(t))
    d2 = d1 - v * math.sqrt(t)
    if is_call:
        return s * math.exp(-q * t) * norm.cdf(d1) - k * math.exp(-r * t) * norm.cdf(d2)
    return k * math.exp(-r * t) * norm.cdf(-d2) - s * math.exp(-q * t) * norm.cdf(-d1)


def test_var_breaker_reprices_the_book_under_past_returns_and_vetoes_over_the_limit():
    # 13 sessions 2024-01-02..2024-01-19; each session's level is fixed: closes give 11 past returns by 01-18
    days = pd.bdate_range("2024-01-02", "2024-01-19")
    levels = {d.date(): 4800.0 * (1 + 0.012 * math.sin(i * 1.7)) for i, d in enumerate(days)}

    def spot(index):
        return np.array([levels[d] for d in index.tz_convert(NY).date])

    m = ModelMarket("2024-01-02", "2024-01-19", spot=spot, iv=0.2, expiries=[EXP])
    sessions = [d.date() for d in m.sessions()]
    today = sessions[-1]  # 2024-01-19 (2024-01-15 is a holiday)
    closes = np.array([levels[d] for d in sessions[:-1]])
    rets = (closes[1:] / closes[:-1] - 1)[-250:]
    at = _at(today, "10:00")
    s = levels[today]
    t = (pd.Timestamp(f"{EXP} 16:00", tz=NY) - pd.Timestamp(at)).total_seconds() / (365 * 86400)
    short, long = OptionContract("SPXW", EXP, round(s / 5) * 5 - 100, "P"), OptionContract("SPXW", EXP, round(s / 5) * 5 - 150, "P")
    pnl = []
    for r in rets:
        v = lambda k, tt, sp: _bsm(False, sp, k, tt, 0.045, 0.015, 0.2)
        pnl.append(100 * 2 * (-(v(short.strike, t - 1 / 365, s * (1 + r)) - v(short.strike, t, s))
                              + (v(long.strike, t - 1 / 365, s * (1 + r)) - v(long.strike, t, s))))
    pnl = np.sort(pnl)
    k = math.floor(0.1 * len(pnl))  # 11 scenarios at 90 %: the second worst
    var, cvar = -pnl[k], -np.mean(pnl[: k + 1])
    assert len(rets) == 11 and var > 0 and cvar >= var

    legs = (Leg(short, -1), Leg(long, +1))
    strat = RoundTrips()
    strat.on_decision_time = lambda ctx: ctx.today == today and strat.opened.append((ctx.now, ctx.open_trade(legs, 2)))
    strat.decision_times = lambda: [dt.time(10, 0)]
    tight = br.VarBreaker(br.VarBreaker.Params(confidence=0.9, max_var=round(var, 2) - 0.01))
    engine = run_strategy(strat, m, fill_model=NaturalFill(), risk_managers=[tight])
    (trip,) = engine.risk_gate.trips
    assert trip.tripped_at == at and trip.figures["var"] == round(var, 2) and trip.figures["cvar"] == round(cvar, 2)
    assert trip.figures["scenarios"] == 11
    assert [o.status_reason.startswith("vetoed: var_breaker") for o in orders_of(engine)] == [True]

    strat.opened.clear()
    loose = br.VarBreaker(br.VarBreaker.Params(confidence=0.9, max_var=round(var, 2), max_cvar=round(cvar, 2)))
    engine = run_strategy(strat, m, fill_model=NaturalFill(), risk_managers=[loose])
    assert engine.risk_gate.trips == [] and len(trades_of(engine)) == 1


def test_historical_var_takes_the_lower_quantile_and_the_tail_mean():
    assert br.historical_var(np.array([-50.0, 10, -10, 30, -30, 0, 20, 5, -5, 15]), 0.8) == (30.0, 40.0)


class _StubData:
    """Stands in for the synthetic feed: hands the runner a hand-made market."""

    def __init__(self, market):
        self.market = market
        self.params = type("P", (), {"model_dump": staticmethod(lambda: {"seed": 7})})()

    def build(self):
        return self

    def open(self):
        return self.market


def test_trips_are_journaled_and_reported(tmp_path):
    import dataclasses
    import io
    import sqlite3

    from rich.console import Console

    from strikebench.cli import main
    from strikebench.engine.runner import run_backtest
    from strikebench.plugin_manager import get_plugin_manager
    from strikebench.report import load_config_text

    pm = get_plugin_manager(load_entry_points=False)
    resolved = load_config_text("""\
name: cv_vix_breaker
data: {source: synthetic, seed: 7, start: 2024-01-08, end: 2024-01-09}
strategies:
  - name: credit_vertical
    params: {dte_targets: [3], entry_times: ["10:00"]}
risk:
  - name: vix_jump
    params: {level: 20, jump_pct: null}
""", registry=pm.registry)
    vix = _by_minute({D1: [(0, 18.0)], D2: [(0, 18.0), (45, 21.5)]})  # D2: 21.50 from 10:15
    market = ModelMarket(D1, D2, other_bars={"VIX": vix})
    resolved = dataclasses.replace(resolved, data=_StubData(market))
    console = Console(file=io.StringIO(), width=200)
    summary = run_backtest(resolved, console=console, progress=False, pm=pm, out_dir=str(tmp_path))
    run_dir = summary["run_dir"]
    db = sqlite3.connect(os.path.join(run_dir, "journal.sqlite"))
    (row,) = db.execute("SELECT rule, scope, tripped_at, reason, figures, resets FROM breaker_trips").fetchall()
    assert row[:3] == ("vix_jump", "account", "2024-01-09T10:15:00-05:00")
    assert json.loads(row[4])["vix"] == 21.5 and row[5] == "next session"
    assert "circuit-breaker trips" in console.file.getvalue() and "VIX 21.50 >= level 20" in console.file.getvalue()
    assert json.loads(open(os.path.join(run_dir, "summary.json")).read())["breaker_trips"][0]["rule"] == "vix_jump"
    assert "Circuit-breaker trips" in open(os.path.join(run_dir, "report.html")).read()
    assert main(["report", run_dir]) == 0  # rebuilt from the journal alone


def _by_minute(steps):
    """VIX levels: {day: [(minute of session, level from then on), ...]}."""
    def f(index):
        local = index.tz_convert(NY)
        out = np.full(len(index), 15.0)
        k = (local.hour * 60 + local.minute - 570).to_numpy()
        for day, changes in steps.items():
            for start, level in changes:
                out[(local.date == day) & (k >= start)] = level
        return out
    return f
