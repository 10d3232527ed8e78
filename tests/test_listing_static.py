"""A decision's selections from the listing shared by a session's snapshots equal the general paths (issue 15, s8).

Snapshots a source builds from one listing (``ChainSnapshot.from_sorted(static=...)``, the synthetic market's
session layouts) share what depends only on the contracts: contract groups, strike order, root masks, days to
expiry, OCC symbols, key lookups, a subset's listing. Each is checked against the general computation on a fresh
snapshot (its own) and against masks; the sorted search of ``closest_deltas`` against lexsort, with ties made by
rounding; ``dropped`` against one count per flag; ``relevant_rows`` of zero_dte against its mask.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from strikebench import journal as J
from strikebench.feeds.synthetic.market import SyntheticMarket
from strikebench.options.chain import _FLAG_NAMES, COLUMNS, QUOTE_UNUSABLE, ChainSnapshot
from strikebench.strategies.zero_dte import ZeroDte, ZeroDteParams
from test_decision_paths import closest_delta_general  # the general path (lexsort), one copy

NY = "America/New_York"


def fresh(snap):
    """The same snapshot with nothing computed or shared."""
    return ChainSnapshot(**{f: getattr(snap, f) for f in snap.__dataclass_fields__})


def row_general(snap, root, expiry, is_call, strike, valid_only=True):
    """find() by masks: the row of (root, expiry, right, strike to the thousandth), None when absent."""
    milli = np.rint(snap.strike * 1000.0)
    with np.errstate(invalid="ignore"):
        mask = ((snap.root == root) & (snap.expiry == np.datetime64(expiry, "D")) & (snap.is_call == is_call)
                & (milli == round(strike * 1000.0)))
    hit = np.flatnonzero(mask)
    if hit.size == 0 or (valid_only and not snap.valid[hit[0]]):
        return None
    return int(hit[0])


def chain(rng, *, n=60, roots=("SPXW",), n_exp=3, day="2024-01-08", deltas=None):
    """Puts and calls of a few roots and expiries; |delta| ties, NaN deltas and unusable quotes."""
    ts = pd.Timestamp(f"{day} 11:00", tz=NY)
    strikes = 4700.0 + 5.0 * np.arange(n)
    cols = {k: [] for k in ("root", "expiry", "strike", "is_call")}
    for root in roots:
        for e in range(n_exp):
            exp = np.datetime64(ts.date() + dt.timedelta(days=2 * e), "D")
            for call in (False, True):
                cols["root"] += [root] * n
                cols["expiry"] += [exp] * n
                cols["strike"] += list(strikes)
                cols["is_call"] += [call] * n
    m = len(cols["strike"])
    delta = deltas(rng, m) if deltas else np.round(rng.uniform(-1, 1, m), int(rng.integers(1, 4)))
    delta[rng.random(m) < 0.05] = np.nan
    bid = np.round(rng.uniform(-0.1, 2.0, m), 2)
    ask = bid + rng.choice([-0.05, 0.0, 0.05, 0.1], m)
    bid[rng.random(m) < 0.05] = np.nan
    return ChainSnapshot.from_arrays("SPX", ts, 4800.0, root=np.asarray(cols["root"]),
                                     expiry=np.asarray(cols["expiry"], dtype="datetime64[D]"),
                                     strike=np.asarray(cols["strike"]), is_call=np.asarray(cols["is_call"]),
                                     bid=bid, ask=ask, delta=delta)


def rounding_ties(rng, m):
    """|delta| values a few ulps apart (distances to a target round to the same float) and exact repeats."""
    base = rng.choice([0.1, 0.15, 0.2, 0.3, 0.7], m)
    return base * rng.choice([-1.0, 1.0], m) + np.sign(rng.uniform(-1, 1, m)) * rng.integers(0, 6, m) * 2.0 ** -55


@pytest.mark.parametrize("seed", range(8))
def test_closest_deltas_sorted_search_is_lexsort_of_the_distances(seed):
    rng = np.random.default_rng(seed)
    targets = [0.1, 0.15, 0.2, 0.3, 0.7, 0.0, 1.0, -0.1, 0.5, float("nan"), float("inf"), float("-inf"),
               0.1 + 2.0 ** -54, 0.2 - 2.0 ** -53, *np.round(rng.random(6), 3).tolist(), *rng.random(4).tolist()]
    for snap in (chain(rng), chain(rng, deltas=rounding_ties), chain(rng, roots=("SPX", "SPXW"), n=7),
                 chain(rng, deltas=lambda r, m: np.full(m, np.nan))):
        for root in (None, "SPXW", "SPX", "NOPE"):
            for expiry in snap.expiries:
                for right in ("P", "C"):
                    want = [closest_delta_general(snap, expiry, right, t, root) for t in targets]
                    assert fresh(snap).closest_deltas(expiry, right, targets, root=root) == want, (root, expiry)
                    assert [snap.closest_delta(expiry, right, t, root=root) for t in targets] == want


@pytest.mark.parametrize("n", [12, 2100])  # the second: more rows than a key list holds (numpy's searchsorted)
def test_offset_row_and_find_are_the_masks(n):
    rng = np.random.default_rng(n)
    snap = chain(rng, n=n // 12 if n < 100 else n // 6, roots=("SPX", "SPXW"))
    assert (len(snap) > 4096) == (n > 100)
    rows = range(len(snap)) if len(snap) < 500 else rng.choice(len(snap), 300, replace=False).tolist()
    for row in rows:
        call = bool(snap.is_call[row])
        for points in (5.0, -5.0, 10.0, 2.5, 0.0, 0.0004999, 0.0005, 1e-9, -4800.0, 1e15, 1e17):
            strike = float(snap.strike[row]) + (points if call else -points)
            want = row_general(snap, str(snap.root[row]), snap.expiry[row], call, strike)
            assert snap.offset_row(row, points) == want, (row, points)
            assert fresh(snap).offset_row(np.int64(row), points) == want
            for valid_only in (True, False):
                assert snap.find(str(snap.root[row]), snap.expiry[row], call, strike, valid_only=valid_only) == \
                    row_general(snap, str(snap.root[row]), snap.expiry[row], call, strike, valid_only)
    with pytest.raises(ValueError):  # what round() of a NaN strike says, as before
        snap.offset_row(0, float("nan"))
    assert snap.find("NOPE", snap.expiry[0], True, 4700.0) is None


def test_dropped_counts_each_flag():
    rng = np.random.default_rng(5)
    values = np.array([np.nan, np.inf, -np.inf, 0.0, -0.05, 0.05, 1.0, 1.05])
    for size in (0, 1, 7, 500):
        bid, ask = rng.choice(values, size), rng.choice(values, size)
        ts = pd.Timestamp("2024-01-08 10:00", tz=NY)
        snap = ChainSnapshot.from_arrays("SPX", ts, 4800.0, root=np.full(size, "SPXW"),
                                         expiry=np.full(size, np.datetime64("2024-01-08")),
                                         strike=np.arange(size) + 1.0, is_call=np.zeros(size, dtype=bool),
                                         bid=bid, ask=ask)
        odd = rng.integers(-128, 128, size).astype(np.int8)  # any int8 flags (built directly), and wider ones
        for s in (snap, ChainSnapshot(**{**{f: getattr(snap, f) for f in snap.__dataclass_fields__}, "flags": odd}),
                  ChainSnapshot(**{**{f: getattr(snap, f) for f in snap.__dataclass_fields__},
                                   "flags": odd.astype(np.int64) * 3})):
            want = {"total": int(np.count_nonzero(s.flags & QUOTE_UNUSABLE))}
            want.update({name: int(np.count_nonzero(s.flags & bit)) for bit, name in _FLAG_NAMES.items()})
            assert s.dropped == want and list(s.dropped) == list(want)


def selections(snap):
    """Everything a decision reads from a snapshot's listing, as plain values."""
    out = [snap.expiries, snap.dte.tolist(), snap.dropped]
    roots = sorted(set(snap.root.tolist())) + ["NOPE"]
    for root in [None, *roots]:
        for day in [None, *snap.expiries, dt.date(2030, 1, 1)]:
            for right in (None, "P", "C"):
                for valid_only in (True, False):
                    out.append(snap.rows(day, right, root=root, valid_only=valid_only).tolist())
            if day is not None:
                out.append([snap.closest_deltas(day, r, [0.1, 0.2, 0.5], root=root) for r in ("P", "C")])
        out.append([snap.nearest_expiry(t, tol, root=root) for t in (0, 1, 3, 7, 30) for tol in (0, 1, 5)])
    out.append([snap.occ_symbol(r) for r in range(0, len(snap), 7)])
    out.append([snap.offset_row(r, w) for r in range(0, len(snap), 5) for w in (1.0, 5.0, 25.0)])
    return out


def slices(snap, rng):
    """Subsets a decision stores (and their selections), as checksums, blobs and plain values."""
    out = []
    picks = [np.arange(len(snap)), np.flatnonzero(snap.is_call), np.flatnonzero(snap.dte <= 3),
             np.sort(rng.choice(len(snap), max(1, len(snap) // 3), replace=False)), np.arange(len(snap))[::-1][:9]]
    for rows in picks:
        sub = snap.subset(rows)
        out += [sub.checksum, J.snapshot_to_bytes(sub), sub.key.tolist(), selections(sub)]
    return out


@pytest.mark.parametrize("und,expiries,roots,is_call", [
    ("XSP", (0, 0), ["XSP"], None), ("SPX", (2, 8), ["SPXW"], False), ("SPX", (0, 45), None, None),
    ("XSP", (7, 20), ["XSP"], True)])
def test_snapshots_of_one_listing_share_what_a_fresh_snapshot_computes(und, expiries, roots, is_call):
    market = SyntheticMarket(seed=7, start="2023-03-01", end="2023-03-10")
    minutes = market.minutes()
    rng = np.random.default_rng(1)
    for day in market.sessions()[:3]:
        d = day.date()
        ats = [minutes[minutes.searchsorted(pd.Timestamp(f"{d} {t}", tz=NY))] for t in ("10:00", "10:15", "14:45")]
        exps = [e for e in market.listed_expiries(und, d) if expiries[0] <= (e - d).days <= expiries[1]]
        batch = market.snapshots(und, ats, exps, roots=roots, is_call=is_call)
        one = market.snapshot(und, ats[1], exps, roots=roots, is_call=is_call)
        assert batch[0]._static is batch[2]._static is one._static  # one listing: shared
        for snap in (*batch, one):
            own = fresh(snap)
            assert own._static is not snap._static
            seed = int(rng.integers(1 << 30))
            assert selections(snap) == selections(own)
            assert slices(snap, np.random.default_rng(seed)) == slices(own, np.random.default_rng(seed))
        assert batch[1].checksum == one.checksum and batch[1].timestamp is ats[1]


def test_snapshots_at_times_of_another_form_are_the_same():
    market = SyntheticMarket(seed=7, start="2023-03-01", end="2023-03-10")
    d = market.sessions()[1].date()
    exps = [e for e in market.listed_expiries("XSP", d) if (e - d).days == 0]
    texts = [f"{d} 10:00", f"{d} 11:30"]
    for ats in (texts, [pd.Timestamp(t, tz=NY) for t in texts], [pd.Timestamp(t, tz=NY).as_unit("us") for t in texts],
                [pd.Timestamp(t, tz=NY).tz_convert("UTC") for t in texts]):
        got = market.snapshots("XSP", ats, exps, roots=["XSP"])
        want = [market.snapshot("XSP", a, exps, roots=["XSP"]) for a in ats]
        for g, w in zip(got, want):
            assert g.timestamp == w.timestamp and str(g.timestamp.tz) == str(w.timestamp.tz) == NY
            assert g.timestamp.unit == "ns" and g.checksum == w.checksum


@pytest.mark.parametrize("seed", range(4))
def test_zero_dte_relevant_rows_are_today_s_expiry_of_the_root(seed):
    rng = np.random.default_rng(seed)
    for snap in (chain(rng, roots=("XSP", "SPXW")), chain(rng, roots=("SPXW",), n=5), chain(rng, roots=("XSP",))):
        for root in ("XSP", "SPXW"):
            z = ZeroDte(ZeroDteParams(root=root))
            want = np.flatnonzero((snap.dte == 0) & (snap.root == root))
            got = z.relevant_rows(fresh(snap))
            assert np.array_equal(got, want) and got.dtype == want.dtype
    empty = chain(rng).subset(np.zeros(0, dtype=int))
    assert ZeroDte(ZeroDteParams(root="XSP")).relevant_rows(empty).size == 0
    assert list(COLUMNS)[:4] == ["root", "expiry", "strike", "is_call"]
