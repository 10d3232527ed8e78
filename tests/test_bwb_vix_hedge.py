"""bwb_vix_hedge on hand-made chains and markets: BWB structure, hedge sizing, the risk ladder, the
probe gate, and a year through the CLI reconciled to the cent."""

from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
import subprocess
import sys
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from strikebench.api import Strategy
from strikebench.engine.core import Engine
from strikebench.plugins.commissions import CboeRetail, ZeroCommission
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
    """The strategy with its defaults (seed 004), ungated unless a test asks for the probe gate."""
    return BwbVixHedge(BwbVixHedgeParams(**{"require_probe_sentiment": None, **kw}))


def the_delta_variant(**kw) -> BwbVixHedge:
    """The earlier variant: the short strike nearest 0.30 delta, no risk cap or stress checks."""
    return bwb(short_strike_rule="delta", short_delta=0.30, max_risk=None, drawdown_max_loss=None,
               crash_max_loss=None, **kw)


# Monday 8 January 2024, 10:00: Wednesday 7 February is 30 days out
SPX_30DTE = dict(spot=4800, expiries=["2024-02-07"], iv=0.15, at="2024-01-08 10:00")
# at 25 % vol the seed's 350-points-below strike (4450) is inside the 0.10-0.25 delta band
SEED_CHAIN = dict(spot=4800, expiries=["2024-02-07"], iv=0.25, at="2024-01-08 10:00", strikes=np.arange(4000, 5201, 5.0))
CENT = Decimal("0.01")


def d(x) -> Decimal:
    return Decimal(str(x))


def hand_bwb(snap, short_strike: float, k: str = "0.30") -> dict:
    """One 1/-2/1 put BWB (50 above, 100 below) from the chain's quotes, in Decimal, written out."""
    row = {float(snap.strike[r]): r for r in snap.rows("2024-02-07", "P")}
    short_strike = d(short_strike)
    up, sh, lo = row[short_strike + 50], row[short_strike], row[short_strike - 100]
    mid = lambda r: (d(snap.bid[r]) + d(snap.ask[r])) / 2
    width = lambda r: d(snap.ask[r]) - d(snap.bid[r])
    net_mid = mid(up) - 2 * mid(sh) + mid(lo)          # + = a debit
    credit = -(net_mid + Decimal(k) * (width(up) + 2 * width(sh) + width(lo)))
    # the order's limit: the estimate rounded down to the 0.05 complex-order tick (less credit)
    limit = (credit / Decimal("0.05")).to_integral_value(rounding=ROUND_FLOOR) * Decimal("0.05")
    spot = Decimal("4800")

    def pnl(level: Decimal) -> Decimal:  # expiry value of the three puts plus the credit, dollars
        value = max(short_strike + 50 - level, 0) - 2 * max(short_strike - level, 0) + max(short_strike - 100 - level, 0)
        return ((limit + value) * 100).quantize(CENT)

    return {"credit": credit, "limit": limit, "max_loss": ((50 - limit) * 100).quantize(CENT),
            "minus5": pnl(spot * Decimal("0.95")), "minus7": pnl(spot * Decimal("0.93")),
            "delta": abs(float(snap.delta[sh]))}


# ------------------------------------------------------------------ the BWB (seed 004)
def test_the_short_strike_is_the_one_nearest_350_points_below_spot_inside_the_delta_band():
    snap = make_chain(**SEED_CHAIN)
    action, reason, candidates, chosen = bwb(max_risk=None).evaluate(snap, {"k": 0.30})
    assert action == "TRADE"
    d0 = candidates[chosen].details
    # 4800 - 350 = 4450: inside 0.10-0.25 |delta| at 25 % vol, wings 4500 and 4350 listed
    assert (d0["upper_strike"], d0["short_strike"], d0["lower_strike"]) == (4500, 4450, 4350)
    assert 0.10 <= abs(d0["short_delta"]) <= 0.25 and chosen == 0
    hand = hand_bwb(snap, 4450)
    assert d(d0["est_credit"]) == hand["credit"] and hand["credit"] > 0
    assert d(d0["max_loss"]) == hand["max_loss"]
    assert d(d0["limit_credit"]) == hand["limit"] and d(d0["credit_dollars"]) == hand["limit"] * 100
    assert d(d0["credit_vs_target"]) == hand["limit"] * 100 - 800
    # the seed's quality gates, priced at expiry: 4560 (-5 %) and 4464 (-7 %) are above the 4500 upper
    # strike, so both keep the whole credit; the check passes
    assert d(d0["pnl_at_expiry_minus5pct"]) == hand["minus5"] == hand["limit"] * 100
    assert d(d0["pnl_at_expiry_minus7pct"]) == hand["minus7"]
    assert candidates[chosen].legs == ("SPXW  240207P04500000", "SPXW  240207P04450000", "SPXW  240207P04350000")
    # every candidate is inside the band, ranked by distance from 4450 (ties: the farther out of the money)
    strikes = [c.details["short_strike"] for c in candidates]
    assert strikes[:5] == [4450, 4445, 4455, 4440, 4460]
    assert all(0.10 <= abs(c.details["short_delta"]) <= 0.25 for c in candidates)


def test_a_candidate_over_the_4200_risk_cap_is_refused_with_the_reason_and_the_next_nearest_is_taken():
    snap = make_chain(**SEED_CHAIN)
    risk_4450 = hand_bwb(snap, 4450)["max_loss"]
    cap = float(risk_4450 - CENT)  # one cent below the nearest candidate's risk
    action, reason, candidates, chosen = bwb(max_risk=cap).evaluate(snap, {"k": 0.30})
    assert candidates[0].details["short_strike"] == 4450
    assert candidates[0].details["rejected"] == f"max risk {risk_4450:,.2f} > cap {cap:,.2f}"
    assert candidates[0].score is None
    # the first candidate by distance (4445, 4455, 4440 ...) whose risk, worked out by hand, fits the cap
    order = [c.details["short_strike"] for c in candidates]
    fits = next(s for s in order if hand_bwb(snap, s)["max_loss"] <= d(cap))
    assert action == "TRADE" and candidates[chosen].details["short_strike"] == fits
    assert f"nearer refused: max risk {risk_4450:,.2f} > cap" in reason


def test_the_seed_defaults_refuse_every_candidate_when_no_bwb_fits_4200_of_risk():
    """50/100 wings risk 5,000 less the credit: 4,200 needs an 8.00 credit, which this chain never pays."""
    snap = make_chain(**SEED_CHAIN)
    action, reason, candidates, chosen = bwb().evaluate(snap, {"k": 0.30})
    assert action == "SKIP" and chosen is None and candidates
    assert reason.startswith(f"all {len(candidates)} candidates refused; nearest 30DTE put BWB 4500/4450x2/4350: ")
    for c in candidates:
        hand = hand_bwb(snap, c.details["short_strike"])
        assert hand["limit"] < 8 and hand["max_loss"] > 4200
        assert c.details["rejected"].startswith(("max risk", "credit", "not a credit"))


def test_the_minus_7pct_check_refuses_a_structure_that_loses_after_a_7pct_drop():
    snap = make_chain(**SEED_CHAIN)
    # offset 225: short 4575 (|delta| 0.23), its lower wing 4475 is above 4464 (-7 %): the full max loss there
    action, reason, candidates, chosen = bwb(short_offset=225, max_risk=None).evaluate(snap, {"k": 0.30})
    first = candidates[0].details
    assert first["short_strike"] == 4575
    hand = hand_bwb(snap, 4575)
    assert d(first["pnl_at_expiry_minus7pct"]) == hand["minus7"] == -hand["max_loss"]
    assert first["rejected"] == f"P&L {hand['minus7']:,.2f} at -7% worse than breakeven"
    # the chosen one loses nothing at -7 % and no more than 5,000 at -5 %
    c = candidates[chosen].details
    assert hand_bwb(snap, c["short_strike"])["minus7"] >= 0 and hand_bwb(snap, c["short_strike"])["minus5"] >= -5000
    # with the check off (crash_max_loss: null) 4575 is taken
    _, _, cands, chosen = bwb(short_offset=225, max_risk=None, crash_max_loss=None).evaluate(snap, {"k": 0.30})
    assert cands[chosen].details["short_strike"] == 4575


def test_the_credit_rule_takes_the_credit_nearest_800_dollars():
    snap = make_chain(**SEED_CHAIN)
    _, _, candidates, chosen = bwb(short_strike_rule="credit", max_risk=None, crash_max_loss=None,
                                   drawdown_max_loss=None).evaluate(snap, {"k": 0.30})
    in_band = [c.details["short_strike"] for c in candidates]
    best = min(in_band, key=lambda s: (abs(hand_bwb(snap, s)["limit"] * 100 - 800), s))
    assert candidates[chosen].details["short_strike"] == best


def test_the_delta_variant_is_one_two_one_at_0_30_delta():
    snap = make_chain(**SPX_30DTE)
    action, reason, candidates, chosen = the_delta_variant().evaluate(snap, {"k": 0.30})
    assert action == "TRADE" and chosen == 0
    d0 = candidates[0].details
    puts = snap.rows("2024-02-07", "P")
    nearest = puts[np.argmin(np.abs(np.abs(snap.delta[puts]) - 0.30))]
    assert d0["short_strike"] == snap.strike[nearest] == 4710
    assert (d0["upper_strike"], d0["lower_strike"]) == (4760, 4610)
    upper, short, lower = d0["rows"]
    mid = lambda r: (snap.bid[r] + snap.ask[r]) / 2
    width = lambda r: snap.ask[r] - snap.bid[r]
    net_mid = mid(upper) - 2 * mid(short) + mid(lower)
    ba = width(upper) + 2 * width(short) + width(lower)
    assert d0["est_credit"] == pytest.approx(-(net_mid + 0.30 * ba), abs=1e-4) and d0["est_credit"] > 0
    # worst case below 4610: the 100-point wing minus the 50-point one, less the credit; best at 4710
    assert d(d0["limit_credit"]) == hand_bwb(snap, 4710)["limit"]  # 4710's estimate on the 0.05 tick, down
    assert d(d0["max_loss"]) == hand_bwb(snap, 4710)["max_loss"] == (50 - d(d0["limit_credit"])) * 100
    assert d(d0["max_profit"]) == (50 + d(d0["limit_credit"])) * 100
    assert d0["pnl_at_expiry_minus7pct"] == pytest.approx(-d0["max_loss"], abs=0.01)  # 4464 is below 4610
    assert candidates[0].legs == ("SPXW  240207P04760000", "SPXW  240207P04710000", "SPXW  240207P04610000")
    assert d0["contracts"] == 1 and d0["dte"] == 30


def test_bwb_skips_below_the_minimum_credit_and_when_not_a_credit():
    snap = make_chain(**SPX_30DTE)
    action, reason, candidates, _ = the_delta_variant(min_credit=20).evaluate(snap, {"k": 0.30})
    assert action == "SKIP" and "credit " in reason and "< min 20.00" in reason
    # a nearly balanced fly (50 above, 55 below) costs money: never entered
    action, reason, _, _ = the_delta_variant(lower_wing=55).evaluate(snap, {"k": 0.30})
    assert action == "SKIP" and "not a credit" in reason


def test_bwb_skips_at_max_positions_and_without_a_30_dte_expiry():
    snap = make_chain(**SPX_30DTE)
    action, reason, _, _ = bwb().evaluate(snap, {"open_positions": 4})
    assert action == "SKIP" and reason == "4 BWBs open (max 4)"
    far = make_chain(spot=4800, expiries=["2024-02-20"], at="2024-01-08 10:00")  # 43 DTE
    action, reason, _, _ = bwb().evaluate(far, {})
    assert action == "SKIP" and "no SPXW expiry within 4d of 30 DTE" in reason


def test_a_period_loss_past_the_ladder_limit_stops_new_bwbs():
    snap = make_chain(**SPX_30DTE)
    action, reason, _, _ = the_delta_variant().evaluate(snap, {"ladder_limit": 2000, "period_pnl": -2000})
    assert action == "SKIP" and reason == "day P&L -2000.00 used up the ladder limit 2000"
    assert the_delta_variant().evaluate(snap, {"ladder_limit": 2000, "period_pnl": -1999.99})[0] == "TRADE"


def test_the_probe_gate_admits_only_bullish_by_default():
    snap = make_chain(**SPX_30DTE)
    gated = the_delta_variant(require_probe_sentiment=["bullish"])
    assert BwbVixHedgeParams().require_probe_sentiment == ["bullish"]  # the seed's rule is the default
    for mood in ("neutral", "bearish", "volatile", "no_evidence", None):
        action, reason, _, _ = gated.evaluate(snap, {"sentiment": mood})
        assert action == "SKIP" and reason.startswith(f"probe sentiment {mood or 'not published'} not in [bullish]")
    assert gated.evaluate(snap, {"sentiment": "bullish"})[0] == "TRADE"
    # the looser option admits neutral -- but never "no evidence yet"
    loose = the_delta_variant(require_probe_sentiment=["bullish", "neutral"])
    assert loose.evaluate(snap, {"sentiment": "neutral"})[0] == "TRADE"
    assert loose.evaluate(snap, {"sentiment": "no_evidence"})[0] == "SKIP"
    assert the_delta_variant().evaluate(snap, {"sentiment": "bearish"})[0] == "TRADE"  # no gate configured
    with pytest.raises(ValueError):
        BwbVixHedgeParams(require_probe_sentiment=["bullish", "no_evidence"])


def test_params_refuse_a_butterfly_that_is_not_broken_and_a_bad_ladder():
    with pytest.raises(ValueError, match="must be wider than upper_wing"):
        BwbVixHedgeParams(upper_wing=50, lower_wing=50)
    with pytest.raises(ValueError, match="strictly decreasing"):
        BwbVixHedgeParams(risk_ladder=[400, 800])
    with pytest.raises(ValueError, match="start notch 9"):
        BwbVixHedgeParams(ladder_start=9)
    with pytest.raises(ValueError, match="short_delta_min 0.3 must be below short_delta_max 0.25"):
        BwbVixHedgeParams(short_delta_min=0.3)
    with pytest.raises(ValueError):
        BwbVixHedgeParams(require_probe_sentiment=["euphoric"])


# ------------------------------------------------------------------ the ladder
def test_the_seed_ladder_steps_up_on_the_tenth_profitable_day_not_the_ninth():
    ladder = RiskLadder(up_after=10, down_loss_pct=0.15)  # the strategy's defaults
    assert ladder.limit == 2000
    assert [ladder.record(25.0) for _ in range(9)] == [2000] * 9  # nine profitable days: unchanged
    assert ladder.record(0.01) == 3200                             # the tenth steps up one notch
    assert [ladder.record(1.0) for _ in range(9)] == [3200] * 9  # the count restarts after a step
    assert ladder.record(1.0) == 5000
    # a flat day (e.g. nothing held) neither counts nor ends the run; a losing day, even a small one, ends it
    ladder = RiskLadder(up_after=10, down_loss_pct=0.15)
    days = [10.0] * 5 + [0.0] + [10.0] * 4
    assert [ladder.record(x) for x in days][-1] == 2000 and ladder.record(10.0) == 3200
    ladder = RiskLadder(up_after=10, down_loss_pct=0.15)
    for x in [10.0] * 9 + [-1.0] + [10.0] * 9:
        ladder.record(x)
    assert ladder.limit == 2000 and ladder.record(10.0) == 3200


def test_the_seed_ladder_steps_down_on_a_day_loss_over_15pct_of_its_limit():
    ladder = RiskLadder(up_after=10, down_loss_pct=0.15)
    assert ladder.record(-300.0) == 2000      # exactly 15 % of 2,000: not over
    assert ladder.record(-300.01) == 1200     # over: one notch down
    assert ladder.record(-180.0) == 1200      # 15 % of 1,200 = 180: not over
    assert ladder.record(-180.01) == 800
    assert [ladder.record(-10_000.0) for _ in range(3)] == [400, 400, 400]  # stops at the last notch


def test_the_weekly_variant_steps_down_after_any_loss_and_up_after_two_wins():
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
    _, reason, candidates, chosen = the_delta_variant().evaluate(snap, {"ladder_limit": 5000})
    assert candidates[chosen].details["contracts"] == 3 and reason.startswith("3 x 30DTE put BWB")


# ------------------------------------------------------------------ the hedge
def test_hedge_size_arithmetic():
    # four BWBs risking 4,800 each; a quarter of it in 10-point VIX spreads costing 0.70
    s = hedge_size(19_200, hedge_ratio=0.25, width=10, cost_per_spread=70, budget_pct=0.02)
    assert (s["target"], s["budget"], s["affordable"], s["buy"]) == (5, 384.0, 5, 5)
    # coverage: held max payoff / exposure = 0 before, 5 x 1,000 / 19,200 = 26.04 % after
    assert (s["coverage"], s["coverage_after"], s["over_budget"]) == (0.0, 0.2604, False)
    # the budget binds (hedge_coverage: budget): 0.90 a spread buys 4 (4 x 90 = 360 <= 384 < 450)
    assert hedge_size(19_200, hedge_ratio=0.25, width=10, cost_per_spread=90, budget_pct=0.02)["buy"] == 4
    # ... and does not under "always": all 5, flagged over budget (450 > 384)
    s = hedge_size(19_200, hedge_ratio=0.25, width=10, cost_per_spread=90, budget_pct=0.02, binding_budget=False)
    assert (s["buy"], s["over_budget"]) == (5, True)
    # two held, costing 150: target 5 - 2 = 3 more, budget 384 - 150 = 234 buys 3 at 70
    s = hedge_size(19_200, hedge_ratio=0.25, width=10, cost_per_spread=70, budget_pct=0.02,
                   held_spreads=2, held_cost=150)
    assert (s["budget"], s["affordable"], s["buy"], s["coverage"]) == (234.0, 3, 3, round(2000 / 19_200, 4))
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


def test_hedge_skips_without_exposure_and_when_covered_and_the_budget_variant_above_the_vix_maximum():
    snap = _vix_chain(18.0)
    assert bwb().evaluate(snap, {"exposure": 0})[1] == "no BWB exposure to hedge"
    high = make_chain(spot=25.0, expiries=["2024-02-21"], iv=0.9, at="2024-01-08 10:30", root="VIX",
                      underlying="VIX", strikes=np.arange(10, 61, 1.0), rate=0.0, div_yield=0.0)
    # seed 004, always keep coverage: VIX 25 does not stop the hedge ...
    action, reason, candidates, _ = bwb().evaluate(high, {"exposure": 19_200})
    assert action == "TRADE" and candidates[0].details["buy"] == 5 and "coverage 0% of 25% target -> 26%" in reason
    # ... the budget variant waits for VIX <= 22
    action, reason, _, _ = bwb(hedge_coverage="budget").evaluate(high, {"exposure": 19_200})
    assert action == "SKIP" and reason == "VIX 25.00 above the entry maximum 22"
    action, reason, _, _ = bwb().evaluate(snap, {"exposure": 19_200, "held_spreads": 5, "held_cost": 350})
    assert action == "SKIP" and "hedged (target 5; coverage 26% of 25% target)" in reason


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


@pytest.mark.parametrize("gate, mood, entries", [
    (["bullish"], "bullish", 2), (["bullish"], "neutral", 0), (["bullish"], "no_evidence", 0),
    (["bullish"], "bearish", 0), (["bullish"], "volatile", 0),
    (["bullish", "neutral"], "neutral", 2), (["bullish", "neutral"], "no_evidence", 0),
])
def test_the_gate_lets_bwbs_in_only_on_a_favourable_sentiment(gate, mood, entries):
    strat = the_delta_variant(require_probe_sentiment=gate, hedge=False, profit_target_pct=0.99)
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
        assert all(d.reason == f"probe sentiment {mood} not in [{', '.join(gate)}]" for d in decisions)
    assert engine.signals == {"probe_sentiment": mood}


def _hand_ladder(day_pnls, limits=(5000, 3200, 2000, 1200, 800, 400), notch=2):
    """Seed 004 written out: up a notch on the 10th profitable day in a row, down on a day loss over 15 %."""
    run, out = 0, []
    for pnl in day_pnls:
        if pnl < 0:
            run = 0
            if -pnl > Decimal("0.15") * limits[notch]:
                notch = min(notch + 1, len(limits) - 1)
        elif pnl > 0:
            run += 1
            if run == 10:
                notch, run = max(notch - 1, 0), 0
        out.append(limits[notch])
    return out


def _ladder_run(spot, commission=None):
    market = ModelMarket("2024-01-08", "2024-01-31", spot=spot, iv=0.15,
                         expiries=["2024-02-09", "2024-02-16", "2024-02-23", "2024-03-01"])
    strat = the_delta_variant(hedge=False, profit_target_pct=1.0, stop_loss_pct=None, exit_dte=None)
    engine = Engine(market=market, strategies=[("bwb_vix_hedge", strat)], fill_model=MidSlippageFill(),
                    commission=commission or ZeroCommission())
    engine.run_all()
    equity = [Decimal(str(round(e, 2))) for _, e in engine.equity_by_day]
    diffs = [b - a for a, b in zip([Decimal("100000.00")] + equity, equity)]
    return strat, engine, diffs


def test_in_a_run_the_ladder_steps_up_after_the_tenth_profitable_marked_day():
    """A quiet market: the BWBs gain their theta day by day; the day P&L is the account's marked equity change."""
    strat, engine, diffs = _ladder_run(4800.0)
    days = [str(d) for d, _ in engine.equity_by_day]
    history = strat.ladder_history  # (day, P&L, limit after), recorded at the next session's start
    assert [h[0] for h in history] == ["-".join(str(int(x)) for x in d.split("-")) for d in days[:-1]]
    assert [Decimal(str(h[1])) for h in history] == diffs[:-1]  # to the cent
    expected = _hand_ladder(diffs[:-1])
    assert [h[2] for h in history] == expected
    tenth = next(i for i, h in enumerate(history) if h[2] == 3200)
    last_loss = max(i for i, x in enumerate(diffs[:tenth]) if x < 0)  # the entry day's spread paid
    run = [x for x in diffs[last_loss + 1:tenth + 1] if x != 0]  # flat days neither count nor break the run
    assert len(run) == 10 and all(x > 0 for x in run) and diffs[last_loss + 1:tenth].count(Decimal(0)) > 0
    assert history[tenth - 1][2] == 2000  # the ninth profitable day: still 2,000; the tenth: 3,200
    # the next entry is sized on the new limit: round(1 x 3200 / 2000) = 2 contracts
    after = [t for t in engine.portfolio.all_trades() if str(t.opened_at.date()) > days[tenth]]
    assert after and all(t.contracts == 2 for t in after)


def test_in_a_run_a_day_loss_over_15pct_of_the_limit_steps_the_ladder_down():
    def drop(index):  # 4800, then 80 points lower from 11:00 on Thursday 18 January
        return np.where(index >= pd.Timestamp("2024-01-18 11:00", tz="America/New_York"), 4720.0, 4800.0)

    # real fees: an entry day's marked P&L carries them, as the account's equity does
    strat, engine, diffs = _ladder_run(drop, CboeRetail())
    days = [str(d) for d, _ in engine.equity_by_day]
    i = days.index("2024-01-18")
    assert diffs[i] < Decimal("-300")  # the BWBs at 4710 lose more than 15 % of 2,000 that day
    history = strat.ladder_history
    assert [Decimal(str(h[1])) for h in history] == diffs[:-1]
    assert [h[2] for h in history] == _hand_ladder(diffs[:-1])
    assert history[i - 1][2] == 2000 and history[i][2] == 1200


# ------------------------------------------------------------------ hedge coverage in a run
class SpxAndVix:
    """Two ModelMarkets as one: SPX (the BWBs) and VIX (the hedge), dispatched by symbol and root."""

    def __init__(self, spx: ModelMarket, vix: ModelMarket):
        self.spx, self.vix = spx, vix

    def _of(self, name: str) -> ModelMarket:
        return self.vix if name == "VIX" else self.spx

    def sessions(self):
        return self.spx.sessions()

    def bars(self, symbol):
        return self._of(symbol).bars(symbol)

    def snapshot(self, underlying, at, expiries=None):
        return self._of(underlying).snapshot(underlying, at, expiries)

    def leg_quotes(self, contracts, day):
        return self._of(contracts[0].root).leg_quotes(contracts, day)

    def settlement_value(self, contract):
        return self._of(contract.root).settlement_value(contract)


def _hedged_run(**kw):
    spike = pd.Timestamp("2024-01-11 09:45", tz="America/New_York")  # VIX 18 -> 32 on Thursday morning
    vix = ModelMarket("2024-01-08", "2024-01-12", spot=lambda idx: np.where(idx >= spike, 32.0, 18.0), iv=1.2,
                      root="VIX", underlying="VIX", expiries=["2024-02-21"], strikes=np.arange(10, 61, 1.0),
                      half_spread=0.05)
    spx = ModelMarket("2024-01-08", "2024-01-12", spot=4800.0, iv=0.15, expiries=["2024-02-09"])
    strat = the_delta_variant(profit_target_pct=1.0, **kw)
    engine = Engine(market=SpxAndVix(spx, vix), strategies=[("bwb_vix_hedge", strat)], fill_model=MidSlippageFill(),
                    commission=ZeroCommission())
    engine.run_all()
    return engine


def test_coverage_sold_at_the_hedge_take_profit_is_bought_back_at_the_next_hedge_time():
    engine = _hedged_run()
    trades = sorted(engine.portfolio.all_trades(), key=lambda t: t.opened_at)
    bwbs = [t for t in trades if t.legs[0].contract.root == "SPXW"]
    hedges = [t for t in trades if t.legs[0].contract.root == "VIX"]
    (fly,) = bwbs
    assert fly.opened_at.strftime("%a %H:%M") == "Wed 10:00"
    # coverage = hedges' max payoff (10 points x 100 x spreads) / the BWB's worst case; target 25 %
    target = math.ceil(Decimal("0.25") * Decimal(str(fly.max_loss)) / 1000)
    first, second = hedges
    assert first.opened_at.strftime("%a %H:%M") == "Wed 10:30" and first.contracts == target
    assert first.exit_reason == "hedge_take_profit" and first.closed_at.strftime("%a %H:%M") == "Thu 09:45"
    # Thursday 10:30: coverage is 0 with the BWB still open -> the shortfall is bought again, VIX 32 or not
    assert second.opened_at.strftime("%a %H:%M") == "Thu 10:30" and second.contracts == target
    assert [leg.contract.strike for leg in second.legs][1] - [leg.contract.strike for leg in second.legs][0] == 10
    rehedge = [d for d in engine.decisions if d.decided_at.strftime("%a %H:%M") == "Thu 10:30"]
    (decision,) = rehedge
    after = target * 1000 / Decimal(str(fly.max_loss))
    assert decision.action == "TRADE" and f"coverage 0% of 25% target -> {after:.0%}" in decision.reason
    # Friday 10:30: covered, nothing bought
    (friday,) = [d for d in engine.decisions if d.decided_at.strftime("%a %H:%M") == "Fri 10:30"]
    assert friday.action == "SKIP" and f"hedged (target {target}" in friday.reason


def test_the_budget_variant_leaves_the_bwb_uncovered_while_vix_is_above_its_maximum():
    engine = _hedged_run(hedge_coverage="budget", hedge_budget_pct=0.5)
    hedges = [t for t in engine.portfolio.all_trades() if t.legs[0].contract.root == "VIX"]
    assert len(hedges) == 1 and hedges[0].exit_reason == "hedge_take_profit"
    thursday = [d for d in engine.decisions if d.decided_at.strftime("%a %H:%M") == "Thu 10:30"]
    assert thursday[0].reason == "VIX 32.00 above the entry maximum 22"


# ------------------------------------------------------------------ a year through the CLI
def backtest_and_reconcile(config: Path, out: Path) -> tuple[Path, pd.DataFrame]:
    """Run ``config`` through the CLI; check Σ realized P&L + open trades' fills = final - initial cash."""
    proc = subprocess.run(
        [sys.executable, "-m", "strikebench.cli", "backtest", str(config), "--quiet", "--set", f"output.dir={out}"],
        capture_output=True, text=True, env={"COLUMNS": "200", "NO_COLOR": "1", "PATH": "", "MPLBACKEND": "Agg"},
        timeout=900,
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


def check_bwb_decisions(decisions: pd.DataFrame, *, cap: float | None, rule: str) -> dict:
    """Seed 004's entry rules re-checked on every journaled BWB decision, from its candidates' own numbers."""
    seen = {"TRADE": 0, "SKIP": 0, "refused by the cap": 0}
    for row in decisions.itertuples():
        cands = json.loads(row.candidates)
        if not cands or "short_strike" not in cands[0]["details"]:
            continue
        seen[row.action] += 1
        for c in cands:
            dd = c["details"]
            credit = d(dd["est_credit"])
            assert (dd["upper_strike"] - dd["short_strike"], dd["short_strike"] - dd["lower_strike"]) == (50, 100)
            assert 0.10 <= abs(dd["short_delta"]) <= 0.25
            # 50/100 wings: the worst case is 5,000 less the credit at the order's limit, to the cent
            limit = (credit / Decimal("0.05")).to_integral_value(rounding=ROUND_FLOOR) * Decimal("0.05")
            assert credit <= 0 or d(dd["limit_credit"]) == limit
            assert credit <= 0 or d(dd["max_loss"]) == (50 - limit) * 100
            why = dd.get("rejected", "")
            if cap is not None and d(dd["max_loss"]) > d(cap):
                assert why.startswith(("max risk", "credit", "not a credit")), why
                seen["refused by the cap"] += why.startswith("max risk")
            if not why:
                assert dd["pnl_at_expiry_minus7pct"] >= 0 and dd["pnl_at_expiry_minus5pct"] >= -5000
        distance = [abs(c["details"]["offset_miss"]) for c in cands]
        credit_miss = [abs(c["details"]["credit_vs_target"]) for c in cands if c["details"]["est_credit"] > 0]
        assert (distance if rule == "offset" else credit_miss) == sorted(distance if rule == "offset" else credit_miss)
        if row.action == "TRADE":
            chosen = cands[int(row.chosen)]["details"]
            assert "rejected" not in chosen and all("rejected" in c["details"] for c in cands[:int(row.chosen)])
            if cap is not None:
                assert chosen["max_loss"] <= cap
        else:
            assert row.reason.startswith(f"all {len(cands)} candidates refused") or row.reason.startswith("risk:")
    return seen


def test_a_year_of_the_seed_rules_reconciles_to_the_cent_and_every_decision_obeys_them(tmp_path):
    run_dir, trades = backtest_and_reconcile(ROOT / "configs" / "spx_bwb_vix_hedge.yaml", tmp_path)
    db = sqlite3.connect(run_dir / "journal.sqlite")
    decisions = pd.read_sql("select * from trade_decisions where strategy = 'bwb_vix_hedge'", db)
    opened = pd.to_datetime(decisions.decided_at, utc=True).dt.tz_convert("America/New_York")
    bwb_decisions = decisions[opened.dt.strftime("%H:%M") == "10:00"]
    assert set(opened[bwb_decisions.index].dt.strftime("%a")) == {"Wed"} and len(bwb_decisions) >= 50
    seen = check_bwb_decisions(bwb_decisions, cap=4200.0, rule="offset")
    assert seen["TRADE"] + seen["SKIP"] >= 50
    legs = pd.read_sql("select * from trade_legs", db)
    bwbs = trades[trades.trade_id.isin(legs[legs.root == "SPXW"].trade_id)]
    hedges = trades[trades.trade_id.isin(legs[legs.root == "VIX"].trade_id)]
    assert len(bwbs) <= seen["TRADE"]
    assert len(bwbs) + len(hedges) == len(trades)
    assert (bwbs.max_loss.astype(float) <= 4200 * bwbs.contracts.astype(float)).all()
    assert hedges.empty or not bwbs.empty  # a hedge only ever covers open butterflies
