"""A decision a risk rule blocks whatever the entry is recorded without building a chain, and trades the same.

The README's main job (one trade open at a time, one a day, no entry after a stop, the last hour and event
windows closed) spends most of its decision times unable to enter. ``journal.blocked_decisions: reason``
(the default) records those as SKIPs naming the rules without pricing, evaluating or storing a chain;
``full`` evaluates and stores them as before. The run is the same either way: same orders, fills and trades
to the cent, same decisions (the blocked ones were SKIPs in full too).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from strikebench.api import RunInfo
from strikebench.config import load_config
from strikebench.engine.runner import build_engine
from strikebench.plugin_manager import get_plugin_manager

ROOT = Path(__file__).resolve().parents[1]


class CountingMarket:
    """The run's market, counting the chain rows it is asked to price (snapshot and batched snapshots)."""

    def __init__(self, market):
        self._m = market
        self.rows = 0
        self.batches: list[int] = []  # minutes priced per call

    def __getattr__(self, name):
        return getattr(self._m, name)

    def snapshot(self, *a, **k):
        snap = self._m.snapshot(*a, **k)
        self.rows += len(snap)
        self.batches.append(1)
        return snap

    def snapshots(self, *a, **k):
        snaps = self._m.snapshots(*a, **k)
        self.rows += sum(len(s) for s in snaps if s is not None)
        self.batches.append(len(snaps))
        return snaps


@pytest.fixture(scope="module")
def runs():
    pm = get_plugin_manager()
    out = {}
    market = None
    for mode in ("full", "reason"):
        resolved = load_config(str(ROOT / "configs" / "spx_credit_vertical.yaml"),
                               ["data.end=2023-01-31", f"journal.blocked_decisions={mode}"], registry=pm.registry)
        market = market or resolved.data.build().open()
        counting = CountingMarket(market)
        engine = build_engine(resolved, run=RunInfo(run_id="same-run", name="t", mode="backtest"), market=counting)
        engine.run_all()
        out[mode] = (engine, counting)
    return out


def _trade_rows(engine):
    """Every field of every trade: legs, entry and exit prices per leg, fees, P&L, settlement (exact floats)."""
    return [dataclasses.astuple(t) for t in engine.portfolio.all_trades()]


def test_blocked_decisions_cost_no_chain_and_the_run_trades_the_same(runs):
    full, full_market = runs["full"]
    fast, fast_market = runs["reason"]
    # the same trades, legs, fills and P&L to the cent (a blocked decision could never have traded)
    assert _trade_rows(fast) and _trade_rows(fast) == _trade_rows(full)
    assert fast.portfolio.cash == full.portfolio.cash and fast.portfolio.fees_cents == full.portfolio.fees_cents
    assert [d.decision_id for d in fast.decisions] == [d.decision_id for d in full.decisions]
    blocked = 0
    for f, d in zip(full.decisions, fast.decisions):
        assert d.action == f.action
        if d.snapshot_checksum is None:  # blocked: recorded before any chain, naming the rules
            blocked += 1
            assert d.action == "SKIP" and d.candidates == () and d.chosen is None
            assert d.reason.startswith("risk: ")
            if f.reason.startswith("risk:"):  # the full run evaluated a TRADE and the gate turned it down
                assert d.reason == f.reason
        else:
            assert dataclasses.astuple(d) == dataclasses.astuple(f)
    # most of the main job's decision times cannot enter (one trade open at a time, one a day)
    assert blocked > len(fast.decisions) / 2
    # and the session's other decision times are not priced ahead in one batch once they mostly go unused
    # (every decision of the full run uses its chain: its three decision times stay batched)
    assert set(full_market.batches) == {3}
    assert fast_market.batches.count(1) > 2 * fast_market.batches.count(3)
    assert fast_market.rows < full_market.rows * 0.3
    # the summary's count of entries risk blocked includes the blocked decisions
    assert fast.summary()["vetoed_entries"] >= blocked


def test_full_evaluates_every_decision_and_stores_its_chain(runs):
    full, _ = runs["full"]
    assert all(d.snapshot_checksum is not None for d in full.decisions)
    assert any(d.reason.startswith("risk:") and d.candidates for d in full.decisions)


def test_a_batch_pays_by_the_share_of_minutes_used_and_what_a_minute_costs():
    from strikebench.engine.core import _batch_pays

    # a request not priced yet: a further minute counts half a snapshot (2 a k > (k + 1) o)
    for asked in range(0, 30):
        for offered in range(1, 30):
            for k in range(1, 25):
                assert _batch_pays(asked, offered, k, None) == (2 * asked * k > (k + 1) * offered)
    # a small chain (a 0DTE XSP expiry, ~200 rows) is batched when a third of its minutes ask; a large one
    # (~1,000 SPX rows, a further minute ~40 % of a snapshot) only when most do
    assert _batch_pays(1, 3, 16, 200) and not _batch_pays(1, 3, 16, 1000)
    assert _batch_pays(3, 4, 3, 1000) and not _batch_pays(1, 2, 3, 1000)
    # a minute every decision uses: always batched; none used: never
    assert all(_batch_pays(5, 5, k, rows) for k in (2, 5, 21) for rows in (1, 200, 5000))
    assert not any(_batch_pays(0, 5, k, rows) for k in (1, 5, 21) for rows in (1, 200, 5000))
