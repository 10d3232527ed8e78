"""xsp_probe: spread widths and entry days, the sentiment rules on known sequences, publishing it
through ctx.publish, and the BWB gated by the probes in one portfolio through the CLI."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from strikebench.strategies.xsp_probe import XspProbe, XspProbeParams, probe_sentiment
from strikebench.testing import ModelMarket, make_chain, run_strategy

from test_bwb_vix_hedge import backtest_and_reconcile, check_bwb_decisions

ROOT = Path(__file__).resolve().parents[1]
# Monday 8 January 2024: XSP dailies; Thursday 18th is 10 DTE
EXPIRIES = ["2024-01-12", "2024-01-16", "2024-01-18", "2024-01-19", "2024-01-26", "2024-01-31"]


def xsp_chain(at="2024-01-08 10:00", expiries=EXPIRIES):
    return make_chain(spot=480, expiries=expiries, iv=0.15, at=at, root="XSP", underlying="XSP",
                      strikes=np.arange(440, 521, 1.0), half_spread=0.02)


def probe(**kw) -> XspProbe:
    return XspProbe(XspProbeParams(**kw))


# ------------------------------------------------------------------ sentiment
@pytest.mark.parametrize("outcomes, mood", [
    ([("P", 40), ("P", 35)], "no_evidence"),                               # two probes: not neutral, unknown
    ([("P", 40), ("P", 35), ("P", 30), ("P", -120)], "bullish"),          # puts win 3 of 4 (75%)
    ([("P", 40), ("P", 35), ("P", -120)], "neutral"),                     # puts win 2 of 3 (67%)
    ([("P", 40), ("P", -100), ("P", -120), ("P", 30)], "bearish"),        # puts lose half the time
    ([("C", 40), ("C", -100), ("P", 30), ("C", -90)], "bullish"),         # a rally runs over the calls
    ([("P", -80), ("C", -100), ("P", 30), ("C", 45)], "volatile"),        # both sides lose half
    ([("P", 40), ("C", 35), ("P", 30), ("C", 45)], "bullish"),            # every probe wins
    ([("C", 40), ("C", 35), ("C", 30)], "neutral"),                       # calls only, all fine
])
def test_sentiment_from_a_known_sequence(outcomes, mood):
    assert probe_sentiment(outcomes) == mood


def test_no_evidence_is_never_neutral():
    """Too few closed probes is its own value, so a gate that admits neutral cannot mistake it for one."""
    assert probe_sentiment([]) == probe_sentiment([("P", 40)] * 2) == "no_evidence"
    assert probe_sentiment([("P", 40)] * 2, min_outcomes=2) == "bullish"
    assert XspProbe().sentiment == "no_evidence"  # before any probe closes


def test_sentiment_reads_only_the_last_lookback_probes():
    old_losses = [("P", -100)] * 6
    recent_wins = [("P", 50)] * 4
    assert probe_sentiment(old_losses + recent_wins, lookback=8) == "bearish"  # the last 8: 4 losses, 4 wins
    assert probe_sentiment(old_losses + recent_wins, lookback=4) == "bullish"
    assert probe_sentiment([("P", 0.0)] * 3) == "bearish"  # a scratch is not a win


# ------------------------------------------------------------------ structure
def test_put_probe_is_a_5_wide_credit_spread_10_days_out():
    snap = xsp_chain()
    action, reason, candidates, chosen = probe().evaluate(snap, {"k": 0.30, "side": "P"})
    assert action == "TRADE"
    d = candidates[chosen].details
    assert (d["right"], d["expiry"], d["dte"]) == ("P", "2024-01-18", 10)
    assert d["short_strike"] - d["long_strike"] == 5
    puts = snap.rows("2024-01-18", "P")
    assert d["short_strike"] == snap.strike[puts[np.argmin(np.abs(np.abs(snap.delta[puts]) - 0.20))]]
    s, l = d["short_row"], d["long_row"]
    mid = (snap.bid[s] + snap.ask[s]) / 2 - (snap.bid[l] + snap.ask[l]) / 2
    width = (snap.ask[s] - snap.bid[s]) + (snap.ask[l] - snap.bid[l])
    assert d["est_credit"] == pytest.approx(mid - 0.30 * width, abs=1e-4) and d["est_credit"] > 0
    # the call side is built too (journaled) but this entry sells the put
    assert [c.details["right"] for c in candidates] == ["P", "C"]


@pytest.mark.parametrize("width", [3, 4, 7])
def test_widths_three_to_seven_points(width):
    _, _, candidates, chosen = probe(width=width, side="call").evaluate(xsp_chain(), {"side": "C"})
    d = candidates[chosen].details
    assert d["long_strike"] - d["short_strike"] == width


def test_params_refuse_widths_outside_three_to_seven_and_a_bad_dte_window():
    for bad in (2, 8, 4.5):
        with pytest.raises(ValueError):
            XspProbeParams(width=bad)
    with pytest.raises(ValueError, match="dte_min <= target_dte <= dte_max"):
        XspProbeParams(dte_min=7, target_dte=25, dte_max=20)
    with pytest.raises(ValueError):
        XspProbeParams(entry_weekdays=["Sat"])


def test_skips_off_entry_days_past_the_weekly_count_and_outside_the_dte_window():
    wed = xsp_chain(at="2024-01-10 10:00")
    assert probe().evaluate(wed, {})[:2] == ("SKIP", "not an entry day (Wed)")
    assert probe().evaluate(xsp_chain(), {"week_entries": 4})[1] == "4 probes this week (max 4)"
    near = xsp_chain(expiries=["2024-01-09", "2024-01-12"])  # 1 and 4 DTE only
    assert probe().evaluate(near, {})[1] == "no XSP expiry 7-20 DTE"


# ------------------------------------------------------------------ in the engine
def _xsp_weeks(spot=480.0):
    return ModelMarket("2024-01-08", "2024-01-26", spot=spot, iv=0.15, root="XSP", underlying="XSP",
                       strikes=np.arange(430, 531, 1.0), half_spread=0.02,
                       expiries=["2024-01-18", "2024-01-19", "2024-01-26", "2024-02-02", "2024-02-09"])


def test_probes_open_monday_and_tuesday_alternating_sides_and_publish_the_sentiment():
    strat = probe()
    engine = run_strategy(strat, _xsp_weeks())
    trades = sorted(engine.portfolio.all_trades(), key=lambda t: t.opened_at)
    assert trades
    assert {t.opened_at.strftime("%a") for t in trades} <= {"Mon", "Tue"}
    assert {t.opened_at.strftime("%H:%M") for t in trades} <= {"10:00", "13:00"}
    weeks = pd.Series([t.opened_at.isocalendar()[1] for t in trades]).value_counts()
    assert weeks.max() <= 4
    sides = ["C" if t.legs[0].contract.is_call else "P" for t in trades]
    assert sides == (["P", "C"] * len(sides))[: len(sides)]
    for t in trades:
        short, long = t.legs
        assert (short.ratio, long.ratio) == (-1, 1) and abs(short.contract.strike - long.contract.strike) == 5
        assert 7 <= (t.expiry - t.opened_at.date()).days <= 20
    # the published value is the rules applied to the closed probes, in closing order
    assert strat.outcomes
    assert engine.signals["probe_sentiment"] == strat.sentiment == probe_sentiment(strat.outcomes)
    closed = sorted(engine.portfolio.closed_trades(), key=lambda t: (t.closed_at, t.trade_id))
    assert [pnl for _, pnl in strat.outcomes] == [t.realized_pnl for t in closed]


def test_a_falling_market_turns_the_probes_bearish():
    # XSP slides 480 -> ~450 over three weeks: the put probes are stopped out, the calls win
    falling = lambda idx: 480.0 - np.arange(len(idx)) * 30.0 / len(idx)
    strat = probe()
    engine = run_strategy(strat, _xsp_weeks(falling))
    puts = [pnl for right, pnl in strat.outcomes if right == "P"]
    assert puts and sum(p <= 0 for p in puts) / len(puts) >= 0.5
    assert engine.signals["probe_sentiment"] in ("bearish", "volatile")


# ------------------------------------------------------------------ both in one portfolio, via the CLI
def test_bwb_gated_by_the_probes_in_one_portfolio_reconciles_and_obeys_the_gate(tmp_path):
    run_dir, trades = backtest_and_reconcile(ROOT / "configs" / "spx_bwb_with_probe.yaml", tmp_path)
    assert set(trades.strategy) == {"bwb_vix_hedge", "xsp_probe"}
    db = sqlite3.connect(run_dir / "journal.sqlite")
    decisions = pd.read_sql("select d.*, c.context from trade_decisions d left join context_snapshots c "
                            "on d.context_id = c.context_id", db)
    bwb = decisions[(decisions.strategy == "bwb_vix_hedge") & decisions.reason.str.contains("BWB|probe sentiment")]
    gated = bwb[bwb.reason.str.startswith("probe sentiment")]
    entered = bwb[bwb.action == "TRADE"]
    assert len(gated) > 0 and len(entered) > 0
    # seed 004: the butterfly enters on a bullish probe sentiment only; "no evidence yet" and neutral wait
    for ctx in entered.context:
        assert json.loads(ctx)["sentiment"] == "bullish"
    moods = {json.loads(c)["sentiment"] for c in gated.context}
    assert moods <= {"neutral", "bearish", "volatile", "no_evidence"} and "no_evidence" in moods
    for row in gated.itertuples():
        assert row.reason == f"probe sentiment {json.loads(row.context)['sentiment']} not in [bullish]"
    # the entries follow the credit rule of the config, inside the delta band and the -5 % / -7 % checks
    check_bwb_decisions(bwb[bwb.candidates != "[]"], cap=None, rule="credit")
    probes = trades[trades.strategy == "xsp_probe"]
    opened = pd.to_datetime(probes.opened_at, utc=True).dt.tz_convert("America/New_York")
    assert set(opened.dt.strftime("%a")) <= {"Mon", "Tue"} and len(probes) > 50
