"""bwb_vix_hedge on hand-made chains and markets: BWB structure, hedge sizing, the risk ladder, the
probe gate, and a year through the CLI reconciled to the cent."""

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

from strikebench.api import Strategy
from strikebench.engine.core import Engine
from strikebench.plugins.commissions import ZeroCommission
from strikebench.plugins.fill_models import MidSlippageFill
from strikebench.strategies.bwb_vix_hedge import (
    BwbVixHedge,
    BwbVixHedgeParams,
    RiskLadder,
    hedge_size,
    implied_forward,
    ladder_contracts,
)
from strikebench.testing import ModelMarket, make_chain

ROOT = Path(__file__).resolve().parents[1]


def bwb(**kw) -> BwbVixHedge:
    return BwbVixHedge(BwbVixHedgeParams(**kw))


# Monday 8 January 2024, 10:00: Wednesday 7 February is 30 days out
SPX_30DTE = dict(spot=4800, expiries=["2024-02-07"], iv=0.15, at="2024-01-08 10:00")


# ------------------------------------------------------------------ the BWB
def test_bwb_is_one_two_one_with_a_50_point_upper_and_100_point_lower_wing_for_a_credit():
    snap = make_chain(**SPX_30DTE)
    action, reason, candidates, chosen = bwb().evaluate(snap, {"k": 0.30})
    assert action == "TRADE" and chosen == 0
    d = candidates[0].details
    puts = snap.rows("2024-02-07", "P")
    nearest = puts[np.argmin(np.abs(np.abs(snap.delta[puts]) - 0.30))]
    assert d["short_strike"] == snap.strike[nearest] == 4710
    assert (d["upper_strike"], d["lower_strike"]) == (4760, 4610)
    upper, short, lower = d["rows"]
    mid = lambda r: (snap.bid[r] + snap.ask[r]) / 2
    width = lambda r: snap.ask[r] - snap.bid[r]
    net_mid = mid(upper) - 2 * mid(short) + mid(lower)
    ba = width(upper) + 2 * width(short) + width(lower)
    assert d["est_credit"] == pytest.approx(-(net_mid + 0.30 * ba), abs=1e-4) and d["est_credit"] > 0
    # worst case below 4610: the 100-point wing minus the 50-point one, less the credit; best at 4710
    assert d["max_loss"] == pytest.approx((50 - d["est_credit"]) * 100, abs=0.01)
    assert d["max_profit"] == pytest.approx((50 + d["est_credit"]) * 100, abs=0.01)
    assert d["pnl_at_expiry_minus7pct"] == pytest.approx(-d["max_loss"], abs=0.01)  # 4464 is below 4610
    assert candidates[0].legs == ("SPXW  240207P04760000", "SPXW  240207P04710000", "SPXW  240207P04610000")
    assert d["contracts"] == 1 and d["dte"] == 30


def test_bwb_skips_below_the_minimum_credit_and_when_not_a_credit():
    snap = make_chain(**SPX_30DTE)
    action, reason, candidates, _ = bwb(min_credit=20).evaluate(snap, {"k": 0.30})
    assert action == "SKIP" and reason.startswith("credit ") and "< min 20.00" in reason
    # a nearly balanced fly (50 above, 55 below) costs money: never entered
    action, reason, _, _ = bwb(lower_wing=55).evaluate(snap, {"k": 0.30})
    assert action == "SKIP" and reason.startswith("not a credit")


def test_bwb_skips_at_max_positions_and_without_a_30_dte_expiry():
    snap = make_chain(**SPX_30DTE)
    action, reason, _, _ = bwb().evaluate(snap, {"open_positions": 4})
    assert action == "SKIP" and reason == "4 BWBs open (max 4)"
    far = make_chain(spot=4800, expiries=["2024-02-20"], at="2024-01-08 10:00")  # 43 DTE
    action, reason, _, _ = bwb().evaluate(far, {})
    assert action == "SKIP" and "no SPXW expiry within 4d of 30 DTE" in reason


def test_a_period_loss_past_the_ladder_limit_stops_new_bwbs():
    snap = make_chain(**SPX_30DTE)
    action, reason, _, _ = bwb().evaluate(snap, {"ladder_limit": 2000, "period_pnl": -2000})
    assert action == "SKIP" and "used up the ladder limit 2000" in reason
    assert bwb().evaluate(snap, {"ladder_limit": 2000, "period_pnl": -1999.99})[0] == "TRADE"


def test_the_probe_gate_blocks_unfavourable_or_missing_sentiment():
    snap = make_chain(**SPX_30DTE)
    gated = bwb(require_probe_sentiment=["bullish", "neutral"])
    for mood in ("bearish", "volatile", None):
        action, reason, _, _ = gated.evaluate(snap, {"sentiment": mood})
        assert action == "SKIP" and reason.startswith("probe sentiment") and "[bullish, neutral]" in reason
    assert gated.evaluate(snap, {"sentiment": "bullish"})[0] == "TRADE"
    assert bwb().evaluate(snap, {"sentiment": "bearish"})[0] == "TRADE"  # no gate configured


def test_params_refuse_a_butterfly_that_is_not_broken_and_a_bad_ladder():
    with pytest.raises(ValueError, match="must be wider than upper_wing"):
        BwbVixHedgeParams(upper_wing=50, lower_wing=50)
    with pytest.raises(ValueError, match="strictly decreasing"):
        BwbVixHedgeParams(risk_ladder=[400, 800])
    with pytest.raises(ValueError, match="start notch 9"):
        BwbVixHedgeParams(ladder_start=9)
    with pytest.raises(ValueError):
        BwbVixHedgeParams(require_probe_sentiment=["euphoric"])


# ------------------------------------------------------------------ the ladder
def test_the_ladder_steps_down_after_a_loss_and_up_after_two_wins():
    ladder = RiskLadder()
    assert ladder.limit == 2000
    assert [ladder.record(x) for x in (-10, -10, -10, -10, -10)] == [1200, 800, 400, 400, 400]
    assert [ladder.record(x) for x in (5, 5, 0, 5, 5)] == [400, 800, 800, 800, 1200]
    assert ladder.record(5) == 1200 and ladder.record(-1) == 800  # a loss resets the run of wins
    top = RiskLadder(start=0)
    assert [top.record(1) for _ in range(4)] == [5000, 5000, 5000, 5000]
    assert RiskLadder(up_after=1, start=5).record(1) == 800


def test_ladder_contracts_scale_with_the_limit():
    assert [ladder_contracts(1, x, 2000) for x in (5000, 3200, 2000, 1200, 800, 400)] == [3, 2, 1, 1, 1, 1]
    assert [ladder_contracts(2, x, 2000) for x in (5000, 3200, 2000, 1200, 800, 400)] == [5, 3, 2, 1, 1, 1]
    snap = make_chain(**SPX_30DTE)
    _, reason, candidates, _ = bwb().evaluate(snap, {"ladder_limit": 5000})
    assert candidates[0].details["contracts"] == 3 and reason.startswith("3 x 30DTE put BWB")


# ------------------------------------------------------------------ the hedge
def test_hedge_size_arithmetic():
    # four BWBs risking 4,800 each; a quarter of it in 10-point VIX spreads costing 0.70
    s = hedge_size(19_200, hedge_ratio=0.25, width=10, cost_per_spread=70, budget_pct=0.02)
    assert s == {"target": 5, "budget": 384.0, "affordable": 5, "buy": 5}
    # the budget binds: 0.90 a spread buys 4 (4 x 90 = 360 <= 384 < 450)
    assert hedge_size(19_200, hedge_ratio=0.25, width=10, cost_per_spread=90, budget_pct=0.02)["buy"] == 4
    # two held, costing 150: target 5 - 2 = 3 more, budget 384 - 150 = 234 buys 3 at 70
    s = hedge_size(19_200, hedge_ratio=0.25, width=10, cost_per_spread=70, budget_pct=0.02,
                   held_spreads=2, held_cost=150)
    assert (s["budget"], s["affordable"], s["buy"]) == (234.0, 3, 3)
    assert hedge_size(0, hedge_ratio=0.25, width=10, cost_per_spread=70, budget_pct=0.02)["buy"] == 0


def _vix_chain(future=18.0, at="2024-01-08 10:30"):
    # rate and dividend 0: the chain's forward is the future itself
    return make_chain(spot=future, expiries=["2024-02-21"], iv=0.9, at=at, root="VIX", underlying="VIX",
                      strikes=np.arange(10, 61, 1.0), rate=0.0, div_yield=0.0, half_spread=0.05)


def test_hedge_call_spread_sits_above_the_future_and_is_sized_to_the_exposure():
    snap = _vix_chain(18.0)
    assert implied_forward(snap, "2024-02-21", root="VIX") == pytest.approx(18.0, abs=0.05)
    action, reason, candidates, chosen = bwb().evaluate(snap, {"k": 0.30, "exposure": 19_200})
    assert action == "TRADE"
    d = candidates[0].details
    assert (d["long_strike"], d["short_strike"]) == (23, 33)  # future 18 + offset 5; 10 wide
    lo, hi = d["long_row"], d["short_row"]
    est = (snap.bid[lo] + snap.ask[lo]) / 2 - (snap.bid[hi] + snap.ask[hi]) / 2 + 0.30 * (
        (snap.ask[lo] - snap.bid[lo]) + (snap.ask[hi] - snap.bid[hi]))
    assert d["est_debit"] == pytest.approx(est, abs=1e-4)
    expected = hedge_size(19_200, hedge_ratio=0.25, width=10, cost_per_spread=est * 100, budget_pct=0.02)
    assert d["buy"] == expected["buy"] > 0 and reason.startswith(f"{expected['buy']} x 44DTE VIX call spread 23/33")


def test_hedge_skips_without_exposure_above_the_vix_maximum_and_when_hedged():
    snap = _vix_chain(18.0)
    assert bwb().evaluate(snap, {"exposure": 0})[1] == "no BWB exposure to hedge"
    high = make_chain(spot=25.0, expiries=["2024-02-21"], iv=0.9, at="2024-01-08 10:30", root="VIX",
                      underlying="VIX", strikes=np.arange(10, 61, 1.0), rate=0.0, div_yield=0.0)
    action, reason, _, _ = bwb().evaluate(high, {"exposure": 19_200})
    assert action == "SKIP" and reason == "VIX 25.00 above the entry maximum 22"
    action, reason, _, _ = bwb().evaluate(snap, {"exposure": 19_200, "held_spreads": 5, "held_cost": 350})
    assert action == "SKIP" and "hedged (target 5)" in reason


# ------------------------------------------------------------------ in the engine
class Publisher(Strategy):
    """Publishes a fixed probe sentiment at each session start (stands in for xsp_probe)."""

    name = "publisher"

    def __init__(self, mood):
        super().__init__()
        self.mood = mood

    def on_session_start(self, ctx):
        ctx.publish("probe_sentiment", self.mood)


def _two_weeks():
    # Wednesdays 10th and 17th January 2024: 30 DTE = Fridays 9th and 16th February
    return ModelMarket("2024-01-08", "2024-01-19", spot=4800.0, iv=0.15, expiries=["2024-02-09", "2024-02-16"])


def _run(strategies):
    engine = Engine(market=_two_weeks(), strategies=strategies, fill_model=MidSlippageFill(),
                    commission=ZeroCommission())
    engine.run_all()
    return engine


@pytest.mark.parametrize("mood, entries", [("bullish", 2), ("neutral", 2), ("bearish", 0), ("volatile", 0)])
def test_the_gate_lets_bwbs_in_only_on_a_favourable_sentiment(mood, entries):
    strat = bwb(require_probe_sentiment=["bullish", "neutral"], hedge=False, profit_target_pct=0.99)
    # the publisher is listed second: the BWB still reads the value published at this session's start
    engine = _run([("bwb_vix_hedge", strat), ("publisher", Publisher(mood))])
    trades = engine.portfolio.all_trades()
    assert len(trades) == entries
    for t in trades:
        assert t.opened_at.strftime("%a %H:%M") == "Wed 10:00"
        assert [leg.ratio for leg in t.legs] == [1, -2, 1]
        strikes = [leg.contract.strike for leg in t.legs]
        assert strikes[0] - strikes[1] == 50 and strikes[1] - strikes[2] == 100
        assert len({leg.contract.expiry for leg in t.legs}) == 1 and t.entry_credit > 0
    decisions = [d for d in engine.decisions if d.strategy == "bwb_vix_hedge"]
    assert len(decisions) == 2 and all(d.decided_at.strftime("%a") == "Wed" for d in decisions)
    if not entries:
        assert all(d.reason == f"probe sentiment {mood} not in [bullish, neutral]" for d in decisions)
    assert engine.signals == {"probe_sentiment": mood}


# ------------------------------------------------------------------ a year through the CLI
def backtest_and_reconcile(config: Path, out: Path) -> tuple[Path, pd.DataFrame]:
    """Run ``config`` through the CLI; check Σ realized P&L + open trades' fills = final - initial cash."""
    proc = subprocess.run(
        [sys.executable, "-m", "strikebench.cli", "backtest", str(config), "--quiet", "--set", f"output.dir={out}"],
        capture_output=True, text=True, env={"COLUMNS": "200", "NO_COLOR": "1", "PATH": "", "MPLBACKEND": "Agg"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = list(out.iterdir())
    db = sqlite3.connect(run_dir / "journal.sqlite")
    trades = pd.read_sql("select * from trades", db)
    fills = pd.read_sql("select * from fills", db)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] is True
    closed = trades[trades.closed_at.notna()]
    realized = sum(Decimal(x) for x in closed.realized_pnl)
    open_ids = set(trades[trades.closed_at.isna()].trade_id)
    open_flows = sum((Decimal(x) for x in fills[fills.trade_id.isin(open_ids)].cash), Decimal(0))
    assert Decimal(str(summary["final_cash"])) - Decimal(str(summary["initial_cash"])) == realized + open_flows
    per_trade = fills.groupby("trade_id").cash.apply(lambda s: sum(Decimal(x) for x in s))
    for row in closed.itertuples():
        assert per_trade[row.trade_id] == Decimal(row.realized_pnl), row.trade_id
    return run_dir, trades


def test_a_year_of_bwbs_and_vix_hedges_reconciles_to_the_cent(tmp_path):
    run_dir, trades = backtest_and_reconcile(ROOT / "configs" / "spx_bwb_vix_hedge.yaml", tmp_path)
    db = sqlite3.connect(run_dir / "journal.sqlite")
    legs = pd.read_sql("select * from trade_legs", db)
    bwbs = trades[trades.trade_id.isin(legs[legs.root == "SPXW"].trade_id)]
    hedges = trades[trades.trade_id.isin(legs[legs.root == "VIX"].trade_id)]
    assert len(bwbs) > 20 and len(hedges) > 3 and len(bwbs) + len(hedges) == len(trades)
    opened = pd.to_datetime(bwbs.opened_at, utc=True).dt.tz_convert("America/New_York")
    assert set(opened.dt.strftime("%a %H:%M")) == {"Wed 10:00"}
    assert (bwbs.entry_credit.astype(float) >= 0.50).all()
    # never more than four BWBs open at once
    spans = list(zip(pd.to_datetime(bwbs.opened_at, utc=True), pd.to_datetime(bwbs.closed_at, utc=True)))
    for start, _ in spans:
        assert sum(o <= start and (pd.isna(c) or c > start) for o, c in spans) <= 4
