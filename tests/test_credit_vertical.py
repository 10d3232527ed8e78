"""credit_vertical's rules on hand-made markets where the answer is known."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pytest

from strikebench.options.contracts import OptionContract
from strikebench.plugins.commissions import ZeroCommission
from strikebench.plugins.fill_models import MidSlippageFill
from strikebench.plugins.risk_managers import MaxNewTradesPerDay, MaxOpenTrades, NoEntryAfterStop
from strikebench.strategies.credit_vertical import CreditVertical, CreditVerticalParams
from strikebench.testing import ModelMarket, make_chain, run_strategy


def cv(**kw) -> CreditVertical:
    return CreditVertical(CreditVerticalParams(**kw))


def test_evaluate_picks_the_expiry_nearest_each_target_and_the_delta_closest_short():
    # Monday 2024-01-08 10:00: daily expiries; targets 3/5/7 -> Thu 11th, Fri 12th... (Mon 15th is MLK day)
    expiries = ["2024-01-09", "2024-01-10", "2024-01-11", "2024-01-12", "2024-01-16", "2024-01-17"]
    snap = make_chain(spot=4800, expiries=expiries, iv=0.15, at="2024-01-08 10:00")
    strat = cv(short_deltas=[0.20], dte_targets=[3, 7], min_credit=0.0, max_bid_ask_width=5.0)
    action, reason, candidates, chosen = strat.evaluate(snap, {"k": 0.30})
    by_target = {c.details["target_dte"]: c.details for c in candidates}
    assert by_target[3]["expiry"] == "2024-01-11"
    # 7 DTE would be Monday 15th, a holiday: nearest within +-1 is Tue 16th (8 DTE), not Sun 14th
    assert by_target[7]["expiry"] == "2024-01-16"
    for d in by_target.values():
        rows = snap.rows(d["expiry"], "P")
        best = rows[np.argmin(np.abs(np.abs(snap.delta[rows]) - 0.20))]
        assert d["short_strike"] == snap.strike[best]
        assert d["long_strike"] == d["short_strike"] - 25
    assert action == "TRADE" and chosen is not None


def test_skip_when_no_expiry_within_tolerance():
    snap = make_chain(spot=4800, expiries=["2024-01-19"], at="2024-01-08 10:00")
    action, reason, candidates, chosen = cv(dte_targets=[3]).evaluate(snap, {})
    assert action == "SKIP" and "no expiry within 1d of 3 DTE" in reason and chosen is None


def test_min_credit_filter_skips_with_the_reason():
    snap = make_chain(spot=4800, expiries=["2024-01-11"], at="2024-01-08 10:00")
    action, reason, candidates, _ = cv(dte_targets=[3], min_credit=50.0).evaluate(snap, {})
    assert action == "SKIP" and "< min 50.00" in reason
    assert all("rejected" in c.details for c in candidates)


def test_estimated_credit_is_mid_minus_k_times_width():
    snap = make_chain(spot=4800, expiries=["2024-01-11"], at="2024-01-08 10:00", half_spread=0.10)
    _, _, candidates, chosen = cv(dte_targets=[3], short_deltas=[0.20], min_credit=0).evaluate(snap, {"k": 0.30})
    d = candidates[chosen].details
    s, l = d["short_row"], d["long_row"]
    mid = (snap.bid[s] + snap.ask[s]) / 2 - (snap.bid[l] + snap.ask[l]) / 2
    width = (snap.ask[s] - snap.bid[s]) + (snap.ask[l] - snap.bid[l])
    assert d["est_credit"] == pytest.approx(mid - 0.30 * width, abs=1e-4)


def money(x) -> Decimal:
    """A float amount the engine produced from integer cents, as the exact decimal it stands for."""
    return Decimal(repr(float(x)))


def _week(spot=4800.0, **kw):
    return ModelMarket("2024-01-08", "2024-01-12", spot=spot, iv=0.15, **kw)


def test_entries_happen_only_at_the_three_times_and_one_trade_a_day():
    engine = run_strategy(cv(min_credit=0.05), _week(),
                          risk_managers=[MaxNewTradesPerDay(), MaxOpenTrades(MaxOpenTrades.Params(limit=5))])
    times = {d.decided_at.time() for d in engine.decisions}
    assert times == {dt.time(10), dt.time(11), dt.time(12)}
    opened = [t.opened_at.date() for t in engine.portfolio.all_trades()]
    assert len(opened) == len(set(opened)) > 0  # at most one a day
    assert all(t.opened_at.time() == dt.time(10) for t in engine.portfolio.all_trades())


def test_max_open_trades_one_blocks_while_a_trade_is_open():
    engine = run_strategy(cv(min_credit=0.05, dte_targets=[7]), _week(), risk_managers=[MaxOpenTrades()])
    trades = sorted(engine.portfolio.all_trades(), key=lambda t: t.opened_at)
    for a, b in zip(trades, trades[1:]):
        assert b.opened_at >= a.closed_at
    skips = [d for d in engine.decisions if d.action == "SKIP" and "max_open_trades" in d.reason]
    assert skips


def _falling(index):
    """Flat 4800 until Tuesday noon, then down 150 points by Wednesday's close."""
    t = (index.asi8 - index.asi8[0]) / 6e10  # minutes since start
    return np.where(np.arange(len(index)) < 390 + 150, 4800.0, 4800.0 - np.minimum(np.arange(len(index)) - 540, 500) * 0.3)


def test_stop_loss_closes_at_twice_the_credit_and_blocks_new_entries_that_day():
    market = ModelMarket("2024-01-08", "2024-01-12", spot=_falling, iv=0.15)
    engine = run_strategy(cv(min_credit=0.05, dte_targets=[3], short_deltas=[0.20]), market,
                          risk_managers=[MaxOpenTrades(), MaxNewTradesPerDay(), NoEntryAfterStop()])
    stopped = [t for t in engine.portfolio.closed_trades() if t.exit_reason == "stop_loss"]
    assert stopped
    t = stopped[0]
    assert t.exit_price >= 2.0 * t.entry_credit - 1e-9
    # P&L to the cent: (credit - debit) x 100 with zero commission
    assert money(t.realized_pnl) == (money(t.entry_credit) - money(t.exit_price)) * 100
    day = t.closed_at.date()
    later = [o for o, _ in engine.vetoes if o.created_at.date() == day and o.created_at > t.closed_at]
    assert all("no_entry_after_stop" in o.status_reason for o in later)
    assert not [x for x in engine.portfolio.all_trades() if x.opened_at.date() == day and x.opened_at > t.closed_at]


def test_take_profit_when_the_spread_costs_half_the_credit():
    # price rises steadily: puts decay fast
    market = ModelMarket("2024-01-08", "2024-01-12", spot=lambda idx: 4800.0 + np.arange(len(idx)) * 0.08, iv=0.15)
    engine = run_strategy(cv(min_credit=0.05, dte_targets=[5]), market, risk_managers=[MaxOpenTrades()])
    tps = [t for t in engine.portfolio.closed_trades() if t.exit_reason == "take_profit"]
    assert tps
    for t in tps:
        assert t.exit_price <= 0.5 * t.entry_credit + 1e-9


def test_held_to_settlement_pnl_to_the_cent():
    market = ModelMarket("2024-01-08", "2024-01-12", spot=4800.0, iv=0.15, settlement={"2024-01-11": 4790.0})
    strat = cv(min_credit=0.05, dte_targets=[3], short_deltas=[0.10], take_profit_pct=0.99, stop_multiple=50)
    engine = run_strategy(strat, market, risk_managers=[MaxOpenTrades()])
    settled = [t for t in engine.portfolio.closed_trades() if t.exit_reason == "settlement"]
    assert settled
    t = settled[0]
    short, long = t.legs
    payoff = -max(short.contract.strike - 4790.0, 0) + max(long.contract.strike - 4790.0, 0)
    assert money(t.exit_price) == -money(payoff)
    assert money(t.realized_pnl) == (money(t.entry_credit) + money(payoff)) * 100
    # cash identity, whether or not trades are still open at the end: final cash - initial cash =
    # Σ realized P&L of closed trades + the entry cash of the open ones (zero commission here)
    realized = sum(money(x.realized_pnl) for x in engine.portfolio.closed_trades())
    open_flows = sum(-money(x.entry_price) * 100 * x.contracts - money(x.fees) for x in engine.portfolio.open_trades())
    assert money(engine.portfolio.cash) - 100_000 == realized + open_flows


def test_width_must_be_on_the_strike_grid():
    with pytest.raises(ValueError, match="not a multiple of the 5-point strike grid"):
        CreditVerticalParams(width=23)


def test_exit_trigger_mid_takes_profit_no_later_than_the_executable_price():
    market = lambda: ModelMarket("2024-01-08", "2024-01-12", spot=lambda idx: 4800.0 + np.arange(len(idx)) * 0.005, iv=0.15)
    by_fill = run_strategy(cv(min_credit=0.05, dte_targets=[5]), market(), risk_managers=[MaxOpenTrades()])
    by_mid = run_strategy(cv(min_credit=0.05, dte_targets=[5], exit_trigger="mid"), market(), risk_managers=[MaxOpenTrades()])
    first_fill = min(t.closed_at for t in by_fill.portfolio.closed_trades() if t.exit_reason == "take_profit")
    first_mid = min(t.closed_at for t in by_mid.portfolio.closed_trades() if t.exit_reason == "take_profit")
    assert first_mid < first_fill  # the mid reaches half the credit before the price one can close at
