"""iron_condor on hand-built chains and a tiny deterministic market (strikebench.testing)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from sb_iron_condor import IronCondor, IronCondorParams, choose_condor
from strikebench.testing import ModelMarket, decisions_of, make_chain, orders_of, run_strategy, trades_of

# Monday 8 January 2024, 10:00 New York; SPXW Friday expiries 4 to 7 weeks out.
FRIDAYS = ["2024-02-02", "2024-02-09", "2024-02-16", "2024-02-23"]


def condor(**params) -> IronCondor:
    return IronCondor(IronCondorParams(**params))


def test_picks_the_expiry_nearest_30_dte_and_the_strikes_nearest_16_delta():
    snap = make_chain(spot=4800, expiries=FRIDAYS, iv=0.15, at="2024-01-08 10:00")
    c = choose_condor(snap, IronCondorParams())
    assert c.expiry == dt.date(2024, 2, 9)  # 32 DTE beats 25 (2 Feb) and 39 (16 Feb)
    for right, row in (("P", c.short_put), ("C", c.short_call)):
        rows = snap.rows(c.expiry, right)
        nearest = rows[np.argmin(np.abs(np.abs(snap.delta[rows]) - 0.16))]
        assert row == nearest
    assert snap.strike[c.short_put] - snap.strike[c.long_put] == 50
    assert snap.strike[c.long_call] - snap.strike[c.short_call] == 50
    assert snap.strike[c.short_put] < 4800 < snap.strike[c.short_call]
    # credit = the two shorts' mids less the two wings' mids
    mid = snap.mid
    assert c.credit == pytest.approx(mid[c.short_put] + mid[c.short_call] - mid[c.long_put] - mid[c.long_call],
                                     abs=1e-4)


def test_legs_buy_the_wings_and_sell_the_shorts():
    snap = make_chain(spot=4800, expiries=FRIDAYS, iv=0.15, at="2024-01-08 10:00")
    legs = choose_condor(snap, IronCondorParams()).legs(snap)
    assert [leg.ratio for leg in legs] == [1, -1, -1, 1]
    assert [leg.contract.right for leg in legs] == ["P", "P", "C", "C"]
    assert legs[0].contract.strike < legs[1].contract.strike < legs[2].contract.strike < legs[3].contract.strike


def test_skips_when_no_expiry_is_within_the_tolerance():
    snap = make_chain(spot=4800, expiries=["2024-01-19", "2024-03-15"], at="2024-01-08 10:00")
    assert choose_condor(snap, IronCondorParams()) == "no SPXW expiry within 5d of 30 DTE"


def test_skips_when_the_credit_is_too_small():
    snap = make_chain(spot=4800, expiries=FRIDAYS, iv=0.15, at="2024-01-08 10:00")
    reason = choose_condor(snap, IronCondorParams(min_credit=50))
    assert reason.startswith("credit ") and reason.endswith("< min 50.00")


def test_evaluate_is_the_replayable_decision():
    snap = make_chain(spot=4800, expiries=FRIDAYS, iv=0.15, at="2024-01-08 10:00")
    action, reason, (candidate,), chosen = condor().evaluate(snap, {})
    assert (action, chosen) == ("TRADE", 0)
    assert reason == candidate.description == "32DTE 4560/4610P 5035/5085C for 13.50"
    assert candidate.details["strikes"] == [4560.0, 4610.0, 5035.0, 5085.0]
    assert candidate.legs[1] == "SPXW  240209P04610000"
    assert condor(min_credit=50).evaluate(snap, {})[:2] == ("SKIP", "credit 13.50 < min 50.00")


def test_exit_dte_must_come_before_entry():
    with pytest.raises(ValueError, match="exit_dte 25 must be below the shortest entry DTE 25"):
        IronCondorParams(exit_dte=25)


def _market(spot=4800.0, start="2024-01-08", end="2024-01-12", **kw) -> ModelMarket:
    return ModelMarket(start, end, spot=spot, iv=0.15, expiries=FRIDAYS, **kw)


def test_opens_one_condor_at_ten_and_holds_it():
    engine = run_strategy(condor(), _market())
    (trade,) = trades_of(engine)
    assert trade.opened_at == dt.datetime(2024, 1, 8, 10, 0, tzinfo=trade.opened_at.tzinfo)
    assert trade.entry_credit > 1.0 and trade.is_open
    actions = [(d.decided_at.date().day, d.action) for d in decisions_of(engine)]
    assert actions == [(8, "TRADE"), (9, "SKIP"), (10, "SKIP"), (11, "SKIP"), (12, "SKIP")]
    assert decisions_of(engine, action="SKIP")[0].reason == "1 condor(s) open, max 1"
    # one order, filled at mid - 0.30 x the combo's width, on the 0.05 complex tick
    (order,) = orders_of(engine)
    assert order.avg_fill_price == -trade.entry_credit
    assert round(order.avg_fill_price / 0.05, 6) == round(order.avg_fill_price / 0.05)


def test_takes_profit_at_half_the_credit():
    # a quiet market: time decay alone halves the condor's value in about two weeks
    engine = run_strategy(condor(), _market(end="2024-01-24"))
    (t,) = trades_of(engine, closed=True)
    assert (t.entry_credit, t.exit_price, t.exit_reason) == (13.10, 6.50, "take_profit")
    assert t.exit_price <= 0.50 * t.entry_credit
    assert t.closed_at.date() == dt.date(2024, 1, 24)
    # zero commission: P&L = (13.10 credit - 6.50 debit) x 100 = 660.00
    assert t.realized_pnl == 660.00


def _crash(index):
    """Flat at 4800 on Monday, then down 2 points a minute from Tuesday's open."""
    minutes = np.arange(len(index))
    return 4800.0 - np.clip(minutes - 390, 0, None) * 2.0


def test_stops_out_at_twice_the_credit_in_a_crash():
    engine = run_strategy(condor(), _market(spot=_crash, end="2024-01-09"))
    (t,) = trades_of(engine)
    assert t.exit_reason == "stop_loss"
    assert t.exit_price >= 2.0 * t.entry_credit - 1e-9
    assert t.closed_at.date() == dt.date(2024, 1, 9)
    # the loss is (debit - credit) x 100 and cash moved by exactly that
    assert round(t.realized_pnl * 100) == (round(t.entry_credit * 100) - round(t.exit_price * 100)) * 100
    assert engine.portfolio.cash_cents == 100_000_00 + round(t.realized_pnl * 100)


def test_strikebench_finds_it_through_the_entry_point(monkeypatch):
    from strikebench.plugin_manager import get_plugin_manager

    monkeypatch.delenv("STRIKEBENCH_LOAD_PLUGINS", raising=False)
    entry = get_plugin_manager().registry.get("strategy", "iron_condor")
    assert (entry.cls, entry.distribution, entry.plugin) == (IronCondor, "sb-iron-condor", "iron_condor")
