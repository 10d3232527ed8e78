"""zero_dte's rules on hand-made markets, and its YAML backtest through the CLI, reconciled to the cent."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from strikebench.config import load_config
from strikebench.engine.core import Engine
from strikebench.plugins.commissions import ZeroCommission
from strikebench.plugins.features import OpeningRange, Vwap
from strikebench.plugins.fill_models import MidSlippageFill
from strikebench.plugins.risk_managers import (
    DailyLossCap, MaxOpenTrades, NoNewRiskWindow, PerTradeMaxLoss, PortfolioWorstCase,
)
from strikebench.strategies.zero_dte import ZeroDte, ZeroDteParams
from strikebench.testing import ModelMarket, make_chain

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "xsp_zero_dte.yaml"
NY = "America/New_York"
EVERY_15 = [dt.time(h, m) for h in range(10, 15) for m in (0, 15, 30, 45)] + [dt.time(15)]


def spx(**kw) -> ZeroDte:
    """zero_dte on SPXW (5-point strikes) with a low credit floor, so hand-made chains trade."""
    base = dict(underlying="SPX", root="SPXW", strike_grid=5, widths=[5, 10], min_credit=0.05, max_bid_ask_width=2.0)
    return ZeroDte(ZeroDteParams(**{**base, **kw}))


def features(price_vs_range: str) -> dict:
    """Context of a decision at spot 4800 with the opening range 4790-4798 (above), 4802-4810 (below) or around."""
    ranges = {"above": (4790.0, 4798.0, 4795.0), "below": (4802.0, 4810.0, 4805.0), "inside": (4795.0, 4805.0, 4799.0)}
    lo, hi, vwap = ranges[price_vs_range]
    return {"k": 0.30, "price": 4800.0, "or_low": lo, "or_high": hi, "or_width": hi - lo, "vwap": vwap}


TODAY = "2024-01-08"


def chain(expiries=(TODAY, "2024-01-09"), at=f"{TODAY} 11:00"):
    return make_chain(spot=4800, expiries=expiries, iv=0.15, at=at)


# -------------------------------------------------------------------- schedule
def test_decisions_every_15_minutes_from_10_to_15_by_default_and_configurable():
    assert ZeroDte().decision_times() == EVERY_15
    assert spx(first_decision="10:30", last_decision="12:00", every_minutes=30).decision_times() == [
        dt.time(10, 30), dt.time(11), dt.time(11, 30), dt.time(12)]
    with pytest.raises(ValueError, match="is before first_decision"):
        ZeroDteParams(first_decision="14:00", last_decision="10:00")
    with pytest.raises(ValueError, match="not a multiple of the 5-point strike grid"):
        ZeroDteParams(strike_grid=5, widths=[7])


# ------------------------------------------------------------------- side rule
def test_price_above_vwap_and_the_opening_range_high_sells_puts():
    action, reason, candidates, chosen = spx().evaluate(chain(), features("above"))
    assert action == "TRADE" and "sell puts" in reason
    assert candidates[chosen].details["right"] == "P"
    # the matrix still lists the call side, each rejected by the side rule
    calls = [c for c in candidates if c.details["right"] == "C"]
    assert calls and all(c.score is None and c.details["rejected"].startswith("side:") for c in calls)
    # put and call side x 3 deltas x 2 widths, each spread once (two delta targets may share a strike)
    pairs = [(c.details["short_strike"], c.details["long_strike"]) for c in candidates]
    assert len(pairs) == len(set(pairs)) and 8 <= len(pairs) <= 12
    assert {c.details["width"] for c in candidates} == {5, 10}


def test_price_below_vwap_and_the_opening_range_low_sells_calls():
    action, reason, candidates, chosen = spx().evaluate(chain(), features("below"))
    assert action == "TRADE" and "sell calls" in reason
    c = candidates[chosen].details
    assert c["right"] == "C" and c["long_strike"] == c["short_strike"] + c["width"]


def test_inside_the_opening_range_skips_with_the_matrix_logged():
    action, reason, candidates, chosen = spx().evaluate(chain(), features("inside"))
    assert action == "SKIP" and chosen is None and "inside the opening range 4795-4805" in reason
    assert {c.details["right"] for c in candidates} == {"P", "C"} and all(c.score is None for c in candidates)
    assert candidates[0].details["rejected"].startswith("side: no puts (price 4800 inside the opening range")


def test_a_breakout_vwap_disagrees_with_is_skipped():
    ctx = {**features("above"), "vwap": 4801.0}  # above the range, below VWAP
    action, reason, _, _ = spx().evaluate(chain(), ctx)
    assert action == "SKIP" and "VWAP 4801.00 disagrees" in reason


def test_no_features_no_trade_and_a_fixed_side_rule_needs_none():
    action, reason, _, _ = spx().evaluate(chain(), {"k": 0.3, "price": 4800.0, "or_high": None, "or_low": None})
    assert action == "SKIP" and reason == "opening range not known yet"
    action, _, candidates, chosen = spx(side_rule="put").evaluate(chain(), {"k": 0.3})
    assert action == "TRADE" and candidates[chosen].details["right"] == "P"


def test_max_vix_skips_a_high_vix_day():
    action, reason, _, _ = spx(max_vix=30).evaluate(chain(), {**features("above"), "vix": 32.5})
    assert action == "SKIP" and reason == "VIX 32.5 above max 30"


# ------------------------------------------------------------------ 0DTE only
def test_only_todays_expiry_is_considered():
    _, _, candidates, _ = spx().evaluate(chain(), features("above"))
    assert {c.details["expiry"] for c in candidates} == {TODAY}
    action, reason, candidates, _ = spx().evaluate(chain(expiries=["2024-01-09"]), features("above"))
    assert action == "SKIP" and reason == "no SPXW expiry today (2024-01-08)" and candidates == []


def test_the_stored_rows_decide_like_the_whole_chain():
    strat, snap = spx(), chain()
    part = snap.subset(strat.relevant_rows(snap))
    assert len(part) == len(snap) / 2  # today's of two expiries
    a, b = strat.evaluate(snap, features("above")), strat.evaluate(part, features("above"))
    assert (a[0], a[1], a[3]) == (b[0], b[1], b[3]) and [c.credit for c in a[2]] == [c.credit for c in b[2]]


# ------------------------------------------------------------ engine, end to end
def _breakout(direction: float):
    """Flat 4800 through 09:44, then 0.2 points a minute in ``direction`` (every session)."""
    def path(index):
        i = np.arange(len(index)) % 390
        return 4800.0 + direction * 0.2 * np.maximum(i - 14, 0)
    return path


def run(strategy, market, risk_managers=()):
    engine = Engine(market=market, strategies=[("zero_dte", strategy)], fill_model=MidSlippageFill(),
                    commission=ZeroCommission(), risk_managers=list(risk_managers),
                    features=[OpeningRange(), Vwap()])
    engine.run_all()
    return engine


def test_a_day_trending_up_sells_0dte_put_spreads_at_decision_times_only():
    market = ModelMarket(TODAY, TODAY, spot=_breakout(+1), iv=0.15)
    engine = run(spx(take_profit_pct=0.99, stop_multiple=50), market, [MaxOpenTrades(MaxOpenTrades.Params(limit=3))])
    assert [d.decided_at.time() for d in engine.decisions] == EVERY_15
    # the features the side rule used are in each decision's context
    first = engine.decisions[0]
    assert first.context["or_high"] == 4800.0 and first.context["price"] == pytest.approx(4800.0 + 0.2 * 16)
    trades = engine.portfolio.all_trades()
    assert len(trades) == 3
    for t in trades:
        assert pd.Timestamp(t.opened_at).tz_convert(NY).time() in EVERY_15
        assert t.expiry == dt.date(2024, 1, 8)
        assert [leg.contract.right for leg in t.legs] == ["P", "P"]
        assert t.exit_reason == "settlement"  # held to the PM settlement (no take profit / stop reachable)


def test_a_day_trending_down_sells_call_spreads():
    market = ModelMarket(TODAY, TODAY, spot=_breakout(-1), iv=0.15)
    engine = run(spx(), market, [MaxOpenTrades()])
    trades = engine.portfolio.all_trades()
    assert trades and all(leg.contract.right == "C" for t in trades for leg in t.legs)


def test_guardrails_veto_and_the_decision_says_which():
    market = ModelMarket(TODAY, TODAY, spot=_breakout(+1), iv=0.30)  # 0.30: strikes quotable up to 15:00
    # an SPX 5-wide spread risks about 400-500 $: over a 200 $ per-trade cap
    engine = run(spx(widths=[5]), market, [PerTradeMaxLoss(PerTradeMaxLoss.Params(max_loss=200)),
                                            NoNewRiskWindow()])
    assert not engine.portfolio.all_trades()
    risk = [d for d in engine.decisions if d.reason.startswith("risk:")]
    # before 15:00 the strategy evaluates and the per-trade cap vetoes the entry it chose; from 15:00 the window
    # blocks every entry, so the decision is a SKIP naming it, recorded without a chain or candidates
    evaluated, blocked = [d for d in risk if d.candidates], [d for d in risk if not d.candidates]
    assert evaluated and all("per_trade_max_loss: worst-case loss" in d.reason for d in evaluated)
    assert blocked and all(d.reason.startswith("risk: no_new_risk_window: ") and d.snapshot_checksum is None
                           and d.decided_at.time() >= dt.time(15) for d in blocked)
    # the gate was asked before sending (ctx.would_veto), so no order exists: the entries count, the orders do not
    summary = engine.summary()
    assert summary["vetoed_entries"] == len(risk) and summary["vetoed_orders"] == 0
    # the last hour: 15:00 is 60 minutes before the close
    last = engine.decisions[-1]
    assert last.decided_at.time() == dt.time(15) and "no_new_risk_window" in last.reason


def test_portfolio_worst_case_caps_concurrent_spreads():
    market = ModelMarket(TODAY, TODAY, spot=_breakout(+1), iv=0.15)
    strat = spx(widths=[5], take_profit_pct=0.99, stop_multiple=50)
    engine = run(strat, market, [PortfolioWorstCase(PortfolioWorstCase.Params(cap=1000)), DailyLossCap(
        DailyLossCap.Params(cap=500))])
    trades = engine.portfolio.all_trades()
    assert 1 <= len(trades) <= 2 and sum(t.max_loss for t in trades) <= 1000
    assert any("portfolio_worst_case: portfolio worst case would be" in d.reason for d in engine.decisions)


# ----------------------------------------------------------------- the YAML, CLI
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    proc = subprocess.run(
        [sys.executable, "-m", "strikebench.cli", "backtest", str(CONFIG), "--quiet", "--set", f"output.dir={out}",
         "--set", "data.end=2023-01-31"],
        capture_output=True, text=True, env={"COLUMNS": "200", "NO_COLOR": "1", "PATH": "", "MPLBACKEND": "Agg"},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = list(out.iterdir())
    return run_dir


def test_the_yaml_validates_with_its_features_and_guardrails():
    resolved = load_config(CONFIG)
    assert [f.entry.name for f in resolved.features] == ["opening_range", "vwap", "atr", "momentum", "vix"]
    rules = {r.entry.name: r.params for r in resolved.risk}
    assert rules["per_trade_max_loss"].max_loss == 200 and rules["daily_loss_cap"].cap == 500
    assert rules["no_new_risk_window"].minutes_before_close == 60 and "portfolio_worst_case" in rules


def test_the_cli_backtest_reconciles_to_the_cent(cli_run):
    db = sqlite3.connect(cli_run / "journal.sqlite")
    trades = pd.read_sql("select * from trades", db)
    fills = pd.read_sql("select * from fills", db)
    summary = json.loads((cli_run / "summary.json").read_text())
    assert summary["completed"] is True
    closed = trades[trades.closed_at.notna()]
    assert len(closed) > 5
    realized = sum(Decimal(x) for x in closed.realized_pnl)
    open_ids = set(trades[trades.closed_at.isna()].trade_id)
    open_flows = sum(Decimal(x) for x in fills[fills.trade_id.isin(open_ids)].cash) if open_ids else Decimal(0)
    assert Decimal(str(summary["final_cash"])) - Decimal(str(summary["initial_cash"])) == realized + open_flows
    # 0DTE: every trade expires the day it opens, entries only at the 15-minute decision times before 15:00
    opened = pd.to_datetime(trades.opened_at, utc=True).dt.tz_convert(NY)
    assert (opened.dt.date.astype(str) == trades.expiry.astype(str)).all()
    assert set(opened.dt.strftime("%H:%M")) <= {t.strftime("%H:%M") for t in EVERY_15[:-1]}
    assert (pd.to_numeric(trades.max_loss) <= 200).all()


def test_the_cli_run_logs_a_matrix_every_slot_and_journals_the_vetoes(cli_run):
    decisions = pd.read_csv(cli_run / "decisions.csv")
    days = pd.to_datetime(decisions.decided_at, utc=True).dt.tz_convert(NY).dt.date.nunique()
    assert len(decisions) == days * len(EVERY_15)
    at_15 = decisions[pd.to_datetime(decisions.decided_at, utc=True).dt.tz_convert(NY).dt.strftime("%H:%M") == "15:00"]
    assert all(r.startswith("price") or "no_new_risk_window" in r or r.startswith("risk:") or "VIX" in r
               for r in at_15.reason)
    assert (at_15.action == "SKIP").all()
    # the report counts the entries the risk managers vetoed (SKIPs naming a rule), read here from decisions.csv
    summary = json.loads((cli_run / "summary.json").read_text())
    risk_skips = int(((decisions.action == "SKIP") & decisions.reason.str.startswith("risk:")).sum())
    assert risk_skips > 0 and summary["vetoed_entries"] == risk_skips
    db = sqlite3.connect(cli_run / "journal.sqlite")
    context = json.loads(db.execute("select context from context_snapshots c join trade_decisions d "
                                    "on d.context_id = c.context_id where d.action = 'TRADE' limit 1").fetchone()[0])
    assert {"or_high", "or_low", "vwap", "atr", "mom_5", "mom_15", "vix", "vix9d", "price"} <= set(context)


def test_a_zero_dte_decision_replays_from_the_journal(cli_run):
    decisions = pd.read_csv(cli_run / "decisions.csv")
    for action in ("TRADE", "SKIP"):  # a SKIP that evaluated a chain (not one a risk rule blocked before it)
        decision_id = decisions[(decisions.action == action) & decisions.snapshot_id.notna()].iloc[0].decision_id
        proc = subprocess.run([sys.executable, "-m", "strikebench.cli", "replay-decision", str(cli_run), decision_id],
                              capture_output=True, text=True, env={"COLUMNS": "200", "NO_COLOR": "1", "PATH": ""})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "same result" in proc.stdout
    # a SKIP a risk rule made before any chain was built has nothing to re-evaluate, and says so in one line
    blocked = decisions[(decisions.action == "SKIP") & decisions.snapshot_id.isna()].iloc[0]
    proc = subprocess.run([sys.executable, "-m", "strikebench.cli", "replay-decision", str(cli_run), blocked.decision_id],
                          capture_output=True, text=True, env={"COLUMNS": "200", "NO_COLOR": "1", "PATH": ""})
    assert proc.returncode != 0 and "before any chain was built: a risk rule blocked every entry (risk: " in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
