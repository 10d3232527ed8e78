"""What a decision computes once per listing or skips reads as the general paths (issue 15, s9).

* ``offset_row``'s contract is found once per listing (``ChainSnapshot._static``); each snapshot still reads its own
  quote (a row unusable in one snapshot of the session is usable in the next).
* A blob's listing columns (root codes, expiry, strike, right) are encoded once per listing: every snapshot's blob is
  still the general one.
* ``candidates_json`` checks a :class:`Candidate`'s fields plain field by field: any other shape takes the general
  path (the same text).
* ``skip_if_blocked`` builds its SKIP's context only when it records it.
* zero_dte asks whether today's expiry is listed only when it found no candidate: the same result.
* A decision id's minute text is made once a bar.
"""

from __future__ import annotations

import collections
import datetime as dt
import types

import numpy as np
import pandas as pd
import pytest

from strikebench import journal as J
from strikebench.api import Candidate
from strikebench.engine.context import StrategyContext
from strikebench.options.chain import ChainSnapshot
from strikebench.strategies.spreads import skip_if_blocked
from strikebench.strategies.zero_dte import ZeroDte, ZeroDteParams
from test_decision_paths import blob_general, candidates_json_general, offset_row_general, zero_dte_general
from test_listing_static import chain, fresh

NY = "America/New_York"


def requoted(snap, rng, static):
    """The same listing with other quotes (some rows unusable, others usable again), sharing ``static``."""
    m = len(snap)
    bid = np.round(rng.uniform(-0.1, 2.0, m), 2)
    ask = bid + rng.choice([-0.05, 0.0, 0.05, 0.1], m)
    bid[rng.random(m) < 0.15] = np.nan
    cols = {f: getattr(snap, f) for f in ("root", "expiry", "strike", "is_call")}
    other = ChainSnapshot.from_sorted(snap.underlying, snap.timestamp, snap.underlying_price, snap.key,
                                      static=static, bid=bid, ask=ask, last=snap.last, volume=snap.volume,
                                      open_interest=snap.open_interest, iv=snap.iv,
                                      delta=np.round(rng.uniform(-1, 1, m), 3), gamma=snap.gamma, theta=snap.theta,
                                      vega=snap.vega, **cols)
    assert other._static is static
    return other


def session(seed, **kw):
    """Four snapshots of one listing (one shared static), quotes differing."""
    rng = np.random.default_rng(seed)
    first = chain(rng, **kw)
    static: dict = {}
    return [requoted(first, rng, static) for _ in range(4)]


@pytest.mark.parametrize("seed", range(4))
def test_offset_row_of_snapshots_sharing_a_listing_reads_each_ones_quotes(seed):
    snaps = session(seed, roots=("SPXW", "SPX"), n=30)
    rows = list(range(len(snaps[0]))) + [-1, -7]
    for snap in snaps:  # the first fills the listing's memo, the others read it
        for row in rows:
            for points in (5.0, -5.0, 10, 0.0, 2.5, 0.0005, 145.0, -4800.0):
                want = offset_row_general(fresh(snap), row % len(snap), points)
                assert snap.offset_row(row, points) == want, (row, points)
                assert snap.offset_row(np.int64(row), points) == want
    assert snaps[0]._static["offset_row"]  # (the memo is the listing's)
    # rows unusable in one snapshot and usable in another were asked: the quote is each snapshot's own
    valid = np.array([s.valid for s in snaps])
    assert (valid.any(axis=0) & ~valid.all(axis=0)).sum() > 10


@pytest.mark.parametrize("seed", range(3))
def test_blobs_of_snapshots_sharing_a_listing_are_the_general_ones(seed):
    for kw in (dict(roots=("XSP",), n_exp=1), dict(roots=("SPXW", "SPX"), n=20), dict(roots=("B", "A"), n=3)):
        snaps = session(seed, **kw)
        subs = [s.subset(np.flatnonzero(s.is_call)) for s in snaps]
        for snap in snaps + subs:
            for fmt in ("columns-lz4", "columns-zlib"):
                assert J.snapshot_to_bytes(snap, fmt) == blob_general(snap, fmt) == J.snapshot_to_bytes(
                    fresh(snap), fmt)
        assert subs[0]._static is subs[3]._static and "blob_listing" in subs[0]._static
    empty = session(seed)[0].subset(np.zeros(0, dtype=int))
    assert J.snapshot_to_bytes(empty) == blob_general(empty)


Pair = collections.namedtuple("Pair", "short long")


class Text(str):
    pass


class Details(dict):
    pass


def test_candidates_json_of_candidates_of_any_shape_is_the_general_text():
    legs = ("SPXW  240108P04800000", "SPXW  240108P04795000")
    details = {"expiry": "2024-01-08", "short_row": 3, "mid_credit": 0.15, "rejected": None, "ok": True}
    shapes = [
        dict(), dict(legs=list(legs)), dict(legs=Pair(*legs)), dict(legs=(1, 2.5)), dict(legs=None), dict(legs=()),
        dict(legs=(np.str_("X"),)), dict(description=Text("text")), dict(description=3), dict(score=np.float64(0.2)),
        dict(score=float("nan")), dict(score=1), dict(details=Details(details)), dict(details=None),
        dict(details={**details, 7: "int key"}), dict(details={**details, "nested": {"a": [1, np.int64(2)]}}),
        dict(details={**details, "nested": {"a": [1, 2.0, None]}}), dict(details={**details, "x": float("inf")}),
        dict(details={**details, "x": np.float64(0.1)}), dict(details={**details, "x": dt.date(2024, 1, 8)}),
        dict(details=types.MappingProxyType(details)), dict(credit=Text("0.40")), dict(credit=np.float64(0.35)),
    ]
    for shape in shapes:
        fields = {"description": "0DTE P 4800/4795", "legs": legs, "score": 0.5, "credit": 0.55, "details": details,
                  **shape}
        cands = [Candidate(**fields), Candidate("plain", legs=legs, score=None, credit=0.1, details=dict(details))]
        for group in (cands, cands[::-1], cands[:1], [{"description": "d", "credit": 0.1, **shape}] + cands):
            try:
                want = candidates_json_general(group)
            except (TypeError, ValueError) as exc:
                with pytest.raises(type(exc)):
                    J.candidates_json(group)
                continue
            assert J.candidates_json(group) == want, shape


class FakeContext:
    """What skip_if_blocked asks of a StrategyContext."""

    def __init__(self, blocked):
        self.records_blocked_in_full, self.blocked, self.decided = False, blocked, []

    def entries_blocked(self):
        return [types.SimpleNamespace(rule="max_open_trades", reason="1 open")] if self.blocked else []

    def decide(self, action, reason, **kw):
        self.decided.append((action, reason, kw))


def test_skip_if_blocked_builds_its_context_only_for_the_skip_it_records():
    asked = []

    def context():
        asked.append(1)
        return {"k": 0.3, "price": 4800.0}

    free = FakeContext(False)
    assert not skip_if_blocked(free, context, ruleset_version="v") and not asked and not free.decided
    blocked = FakeContext(True)
    assert skip_if_blocked(blocked, context, ruleset_version="v") and asked == [1]
    as_dict = FakeContext(True)
    assert skip_if_blocked(as_dict, {"k": 0.3, "price": 4800.0}, ruleset_version="v")
    assert blocked.decided == as_dict.decided == [
        ("SKIP", "risk: max_open_trades: 1 open", {"context": {"k": 0.3, "price": 4800.0}, "ruleset_version": "v"})]


@pytest.mark.parametrize("seed", range(4))
def test_zero_dte_without_today_s_expiry_or_usable_deltas_is_the_general_path(seed):
    rng = np.random.default_rng(seed)
    later = chain(rng, roots=("XSP",), n=20)
    snaps = [chain(rng, roots=("XSP",), n=20), chain(rng, roots=("SPXW",), n=20),  # (no XSP: nothing listed)
             later.subset(np.flatnonzero(later.dte > 0))]  # (XSP listed, none today)
    nan = chain(rng, roots=("XSP",), n=20)
    snaps.append(ChainSnapshot(**{**{f: getattr(nan, f) for f in nan.__dataclass_fields__},
                                  "delta": np.full(len(nan), np.nan)}))  # today listed, no usable delta
    for snap in snaps:
        for rule in ("both", "put", "opening_range_vwap"):
            z = ZeroDte(ZeroDteParams(root="XSP", side_rule=rule, widths=[5.0]))
            context = {"k": 0.3, "price": 4800.0, "or_high": 4790.0, "or_low": 4700.0, "vwap": 4750.0}
            got = z.evaluate(fresh(snap), context)
            assert repr(got) == repr(zero_dte_general(z, fresh(snap), context))
    for snap in snaps[1:3]:
        assert "no XSP expiry today" in ZeroDte(ZeroDteParams(root="XSP")).evaluate(fresh(snap), {})[1]
    assert "no XSP expiry today" not in ZeroDte(ZeroDteParams(root="XSP")).evaluate(fresh(snaps[3]), {})[1]


def test_decision_ids_name_each_bar_s_minute():
    labels = [pd.Timestamp(t, tz=NY) for t in ("2024-01-08 10:00", "2024-01-08 10:15", "2024-01-09 10:00")]
    recorded = []
    engine = types.SimpleNamespace(now=None, risk_gate=types.SimpleNamespace(take_notes=lambda *a: {}),
                                   record_decision=lambda d, s: recorded.append(d))
    ctx = StrategyContext(engine, "zd", strategy=None)
    want = []
    for label in labels + [labels[0], pd.Timestamp(labels[1])]:  # (a label again, an equal Timestamp object)
        engine.now = label
        for _ in range(2):
            ctx.decide("SKIP", "why")
            want.append(f"zd-{label.to_pydatetime():%Y%m%dT%H%M}-{len(want) + 1}")
    assert [d.decision_id for d in recorded] == want
    assert [d.decided_at for d in recorded] == [lab.to_pydatetime() for lab in labels + labels[:2] for _ in (0, 1)]


def test_listing_memo_is_one_dict_per_listing_and_day():
    snaps = session(3, roots=("XSP",), n=20)
    memo = snaps[0].listing_memo("a")
    assert all(s.listing_memo("a") is memo for s in snaps) and snaps[0].listing_memo("b") is not memo
    assert fresh(snaps[0]).listing_memo("a") is not memo  # (built another way: its own)
    rows = np.arange(0, len(snaps[0]), 2)
    assert snaps[1].subset(rows).listing_memo("a") is snaps[2].subset(rows).listing_memo("a") is not memo
    assert snaps[1].subset(rows[1:]).listing_memo("a") is not snaps[1].subset(rows).listing_memo("a")
    other = session(3, roots=("XSP",), n=20, day="2024-01-09")[0]
    assert other.listing_memo("a") is not memo


@pytest.mark.parametrize("seed", range(4))
def test_zero_dte_over_a_session_of_one_listing_is_the_general_path(seed):
    """Decisions one after another on snapshots sharing a listing (its pairs' names memoized at the first) equal the
    general path on fresh snapshots, whatever the quotes (pairs found in one and not in another)."""
    strategies = [ZeroDte(ZeroDteParams(root="XSP", side_rule=rule, widths=widths, short_deltas=[0.1, 0.2, 0.3, 0.45],
                                         min_credit=0.0, max_bid_ask_width=5.0))
                  for rule, widths in (("both", [5.0, 10.0]), ("put", [5.0]), ("both", [10.0, 5.0, 15.0]))]
    for kw in (dict(roots=("XSP",), n=30, n_exp=1), dict(roots=("XSP", "SPXW"), n=30)):
        snaps = session(seed, **kw)
        snaps += [s.subset(np.flatnonzero(s.dte == 0)) for s in snaps]
        for z in strategies:
            for snap in snaps:
                context = {"k": 0.3, "price": 4800.0}
                assert repr(z.evaluate(snap, context)) == repr(zero_dte_general(z, fresh(snap), context))
        assert snaps[0].listing_memo("zero_dte.pairs")
