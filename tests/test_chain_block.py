"""Snapshots built from blocks of minutes (``ChainSnapshot.from_block``, the synthetic market's batches) equal
``from_sorted`` of each minute's row, column for column, and select as fresh snapshots do (issue 15, s11).
``spreads.relevant_slice`` equals ``subset`` of the rows; the checksum's header time is ``Timestamp.isoformat``'s;
``Candidate`` and ``Decision`` are built as their dataclass' generated ``__init__`` builds them; ``contract(row)``
kept per listing is the row's contract."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from strikebench.feeds.synthetic.market import SyntheticMarket
from strikebench.options.chain import COLUMNS, ChainSnapshot, quote_flags
from strikebench.strategies.zero_dte import ZeroDte, ZeroDteParams
from test_decision_paths import closest_delta_general
from test_listing_static import chain, fresh, rounding_ties

NY = "America/New_York"
SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -0.05, 5e-324, 0.05, 3.0])
QUOTES = ("bid", "ask", "last", "volume", "iv", "delta", "gamma", "theta", "vega")


def blocks(rng, base, k, deltas=None):
    """k minutes of quotes for ``base``'s listing: unusable quotes (NaN, inf, zero ask, crossed, negative bid),
    NaN / inf / tied deltas."""
    n = len(base)
    bid = np.round(rng.uniform(-0.1, 2.0, (k, n)), 2)
    ask = bid + rng.choice([-0.05, 0.0, 0.05, 0.1], (k, n))
    bid[rng.random((k, n)) < 0.1] = rng.choice(SPECIAL)
    ask[rng.random((k, n)) < 0.05] = rng.choice(SPECIAL)
    delta = deltas(rng, (k, n)) if deltas else np.round(rng.uniform(-1, 1, (k, n)), int(rng.integers(1, 4)))
    delta[rng.random((k, n)) < 0.05] = rng.choice([np.nan, np.inf, -np.inf, 0.0, -0.0])
    out = {"bid": bid, "ask": ask, "delta": delta}
    for name in QUOTES:
        if name not in out:
            out[name] = (rng.integers(0, 1000, (k, n)) if name == "volume" else rng.normal(0, 1, (k, n)))
    return out


def ties(rng, shape):
    return rounding_ties(rng, int(np.prod(shape))).reshape(shape)


@pytest.mark.parametrize("seed", range(6))
def test_block_snapshots_are_from_sorted_of_each_minute_and_their_delta_sides_their_own(seed):
    rng = np.random.default_rng(seed)
    targets = [0.1, 0.15, 0.2, 0.3, 0.5, 0.0, 1.0, float("nan"), float("inf"), *rng.random(3).tolist()]
    for base in (chain(rng), chain(rng, roots=("SPX", "SPXW"), n=7), chain(rng, n=1, n_exp=1)):
        for k in (1, 2, 5):
            q = blocks(rng, base, k, deltas=ties if seed % 2 else None)
            flags = quote_flags(q["bid"], q["ask"])
            ts = [base.timestamp + pd.Timedelta(minutes=15 * j) for j in range(k)]
            px = (4800.0 + rng.normal(0, 5, k)).tolist()
            listing = {name: getattr(base, name) for name in ("root", "expiry", "strike", "is_call", "open_interest")}
            static = {}
            got = ChainSnapshot.from_block(base.underlying, ts, px, base.key, flags, static=static, **listing, **q)
            assert len(got) == k
            for j, snap in enumerate(got):
                own = ChainSnapshot.from_sorted(base.underlying, ts[j], px[j], base.key,
                                                **listing, **{name: q[name][j].copy() for name in QUOTES})
                for name in (*COLUMNS, "flags", "key"):
                    a, b = getattr(snap, name), getattr(own, name)
                    assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name
                    assert not a.flags.writeable
                assert (snap.timestamp, snap.underlying_price) == (own.timestamp, own.underlying_price)
                assert snap.checksum == own.checksum and snap._static is static
            # every minute's sides (asked in any order: a later minute first) against a fresh snapshot's and the
            # general lexsort
            for j in rng.permutation(k).tolist():
                snap = got[j]
                for root in (None, *sorted(set(base.root.tolist())), "NOPE"):
                    for expiry in [*base.expiries, dt.date(2030, 1, 1)]:
                        for right in ("P", "C"):
                            want = fresh(snap).closest_deltas(expiry, right, targets, root=root)
                            assert snap.closest_deltas(expiry, right, targets, root=root) == want, (j, root, expiry)
                            assert want == [closest_delta_general(snap, expiry, right, t, root) for t in targets]
                            memo_key = ("delta_side", expiry, right == "C", root)
                            assert snap._delta_side(expiry, right, root) == fresh(snap)._delta_side(expiry, right,
                                                                                                    root), memo_key


def test_block_shapes_are_checked():
    rng = np.random.default_rng(1)
    base = chain(rng, n=5, n_exp=1)
    q = blocks(rng, base, 3)
    flags = quote_flags(q["bid"], q["ask"])
    listing = {name: getattr(base, name) for name in ("root", "expiry", "strike", "is_call", "open_interest")}
    ts = [base.timestamp] * 3
    with pytest.raises(ValueError, match="flags"):
        ChainSnapshot.from_block("SPX", ts, [1.0] * 3, base.key, flags[:2], **listing, **q)
    with pytest.raises(ValueError, match="bid"):
        ChainSnapshot.from_block("SPX", ts, [1.0] * 3, base.key, flags, **listing, **{**q, "bid": q["bid"][:2]})
    with pytest.raises(ValueError, match="strike"):
        ChainSnapshot.from_block("SPX", ts, [1.0] * 3, base.key, flags, **{**listing, "strike": base.strike[:-1]},
                                 **q)
    with pytest.raises(ValueError, match="prices"):
        ChainSnapshot.from_block("SPX", ts, [1.0] * 2, base.key, flags, **listing, **q)
    # a 1-D quote column is every minute's
    one = ChainSnapshot.from_block("SPX", ts, [1.0] * 3, base.key, flags, **listing, **{**q, "iv": q["iv"][0]})
    assert all(np.array_equal(s.iv, q["iv"][0]) for s in one)


def test_market_batches_are_its_single_snapshots():
    """The synthetic market's batch of a session (from_block) against snapshot() at each minute: every column and
    the sides of closest_deltas."""
    market = SyntheticMarket(seed=7, start="2023-03-01", end="2023-03-03")
    day = market.sessions()[1]
    ats = [pd.Timestamp(f"{day.date()} {t}", tz=NY) for t in ("10:00", "11:15", "15:59")]
    for und, kw in (("XSP", {"expiries": [day.date()], "roots": ["XSP"]}), ("SPX", {"roots": ["SPXW"], "is_call": False}),
                    ("SPX", {})):
        got = market.snapshots(und, ats, **{k: v for k, v in kw.items() if k != "expiries"},
                               expiries=kw.get("expiries"))
        for at, snap in zip(ats, got):
            own = market.snapshot(und, at, kw.get("expiries"), **{k: v for k, v in kw.items() if k != "expiries"})
            assert snap.checksum == own.checksum
            for expiry in snap.expiries[:3]:
                for right in ("P", "C"):
                    assert snap.closest_deltas(expiry, right, [0.05, 0.1, 0.2, 0.45]) == \
                        fresh(own).closest_deltas(expiry, right, [0.05, 0.1, 0.2, 0.45])


def test_relevant_slice_is_subset_of_the_relevant_rows():
    """spreads.relevant_slice: the snapshot itself when the rows are every row (kept per listing and key), else the
    subset, for zero_dte's, credit_vertical's and xsp_probe's rows on chains where they are every row and where they
    are not (other expiries, roots, sides), several minutes of each listing."""
    from strikebench.strategies.credit_vertical import CreditVertical, CreditVerticalParams
    from strikebench.strategies.spreads import relevant_slice

    market = SyntheticMarket(seed=3, start="2023-03-01", end="2023-03-03")
    day = market.sessions()[0]
    ats = [pd.Timestamp(f"{day.date()} {t}", tz=NY) for t in ("10:00", "10:15", "10:30")]
    zd = [ZeroDte(ZeroDteParams(root=root)) for root in ("XSP", "SPXW")]
    cv = [CreditVertical(CreditVerticalParams(**kw)) for kw in ({}, {"side": "both"}, {"dte_targets": [3]})]
    xsp = [lambda s, lo=lo, hi=hi: np.flatnonzero((s.root == "XSP") & (s.dte >= lo) & (s.dte <= hi))
           for lo, hi in ((7, 20), (0, 0), (2, 5))]
    rows_of = [(s.relevant_rows, ("zd", s.params.root)) for s in zd] + \
        [(s.relevant_rows, ("cv", id(s))) for s in cv] + [(f, ("xsp", i)) for i, f in enumerate(xsp)]
    requests = [("XSP", [day.date()], ["XSP"], None), ("XSP", None, ["XSP"], None), ("XSP", None, None, None),
                ("SPX", None, ["SPXW"], False), ("SPX", None, None, None)]
    seen_whole = set()
    for und, expiries, roots, is_call in requests:
        if und == "XSP" and expiries is None:
            expiries = [e for e in market.listed_expiries("XSP", day.date()) if 7 <= (e - day.date()).days <= 20]
        snaps = market.snapshots(und, ats, expiries, roots=roots, is_call=is_call)
        for _ in range(2):
            for snap in snaps:
                for f, key in rows_of:
                    want = snap.subset(f(snap))
                    got = relevant_slice(snap, f, key)
                    assert (got is snap) == (want is snap)
                    seen_whole.add(got is snap)
                    assert got.checksum == want.checksum and len(got) == len(want)
    assert seen_whole == {True, False}


def test_isoformat_is_the_timestamp_s():
    """The checksum's header time: Timestamp.isoformat's text, with and without nanoseconds, aware (New York across
    DST, UTC, fixed offsets) and naive; datetimes as they are."""
    from strikebench.options.chain import _isoformat

    rng = np.random.default_rng(0)
    ns = rng.integers(pd.Timestamp("1677-09-22").value, pd.Timestamp("2262-04-10").value, 300)
    for v in [*ns.tolist(), pd.Timestamp("2023-03-12 06:59:59.999999", tz="UTC").value,
              pd.Timestamp("2023-11-05 05:30", tz="UTC").value, pd.Timestamp("2023-11-05 06:30", tz="UTC").value]:
        for cut in (1, 1000, 60 * 10**9):  # nanoseconds, microseconds, whole minutes
            t = pd.Timestamp(v // cut * cut)
            for ts in (t, t.tz_localize("UTC"), t.tz_localize("UTC").tz_convert(NY),
                       t.tz_localize("UTC").tz_convert("Asia/Kolkata"), t.tz_localize("UTC").tz_convert("-03:30")):
                assert _isoformat(ts) == ts.isoformat(), (ts, ts.nanosecond)
    for fold in (0, 1):  # 01:30 of the fall-back day, each offset
        ts = pd.Timestamp(dt.datetime(2023, 11, 5, 1, 30, fold=fold), tz=NY)
        assert _isoformat(ts) == ts.isoformat()
    d = dt.datetime(2023, 1, 5, 10, 15, tzinfo=dt.timezone.utc)
    assert _isoformat(d) == d.isoformat()


@pytest.mark.parametrize("cls_name", ["Candidate", "Decision"])
def test_candidate_and_decision_init_is_the_dataclass_s(cls_name):
    """Candidate's and Decision's written-out __init__ against the one dataclasses generates for the same fields:
    the same signature (names, kinds, defaults), the same objects for every mix of positional, keyword and default
    arguments (a new dict per object for the factory default), frozen, equal and unhashable alike."""
    import dataclasses
    import inspect

    from strikebench import api

    cls = getattr(api, cls_name)
    fields = dataclasses.fields(cls)
    ref = dataclasses.make_dataclass(
        "Ref", [(f.name, f.type, dataclasses.field(default=f.default, default_factory=f.default_factory))
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
                else (f.name, f.type) for f in fields], frozen=True)
    mine, theirs = inspect.signature(cls.__init__), inspect.signature(ref.__init__)
    assert [(p.name, p.kind) for p in mine.parameters.values()] == [(p.name, p.kind) for p in theirs.parameters.values()]
    for p, q in zip(mine.parameters.values(), theirs.parameters.values()):
        if q.default is not inspect.Parameter.empty and repr(q.default) != "<factory>":
            assert p.default == q.default and type(p.default) is type(q.default), p.name
    rng = np.random.default_rng(2)
    values = {f.name: [object(), None, 0, "x", {"a": 1}, (), dt.datetime(2023, 1, 5)] for f in fields}
    required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for _ in range(300):
        given = {f.name: values[f.name][rng.integers(7)] for f in fields
                 if f.name in required or rng.random() < 0.5}
        npos = int(rng.integers(0, len(fields) + 1))
        names = [f.name for f in fields]
        # positional for a prefix of the fields when every one of them is given
        k = 0
        while k < npos and names[k] in given:
            k += 1
        args = [given[n] for n in names[:k]]
        kw = {n: v for n, v in given.items() if n not in names[:k]}
        a, b = cls(*args, **kw), ref(*args, **kw)
        assert [getattr(a, f.name) for f in fields] == [getattr(b, f.name) for f in fields]
        assert all(getattr(a, f.name) is getattr(b, f.name) for f in fields if f.name in given)
        assert a == cls(*args, **kw) and vars(a) == {f.name: getattr(b, f.name) for f in fields}
        assert repr(a).split("(", 1)[1] == repr(b).split("(", 1)[1]
    one, two = cls(*[values[n][3] for n in required]), cls(*[values[n][3] for n in required])
    factory = [f.name for f in fields if f.default_factory is not dataclasses.MISSING]
    assert factory and all(getattr(one, n) == {} and getattr(one, n) is not getattr(two, n) for n in factory)
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.__setattr__(fields[0].name, 1)
    with pytest.raises(TypeError):  # unhashable (a dict field), as the dataclass' is
        hash(cls(*[values[n][3] for n in required]))
    with pytest.raises(TypeError):
        cls()
    assert dataclasses.replace(one, **{required[0]: "y"}) == cls(*["y"] + [values[n][3] for n in required[1:]])


def test_contract_of_a_row_is_kept_per_listing():
    """contract(row) kept per listing: the contract of the row's columns for every row (ints, numpy ints, negative
    rows) of snapshots sharing a listing and of their subsets (another listing of rows), asked twice."""
    from strikebench.options.chain import _contract

    market = SyntheticMarket(seed=5, start="2023-03-01", end="2023-03-03")
    day = market.sessions()[0]
    ats = [pd.Timestamp(f"{day.date()} {t}", tz=NY) for t in ("10:00", "12:00")]
    snaps = market.snapshots("SPX", ats, roots=["SPX", "SPXW"])
    rng = np.random.default_rng(0)
    for snap in [*snaps, snaps[0].subset(np.arange(3, len(snaps[0]), 7)), snaps[1].subset(np.arange(5, 40))]:
        n = len(snap)
        for row in [*rng.integers(-n, n, 40).tolist(), *rng.integers(-n, n, 10), 0, n - 1, -1]:
            want = _contract(str(snap.root[row]), snap.expiry[row].item(), float(snap.strike[row]),
                             bool(snap.is_call[row]))
            assert snap.contract(row) is want and fresh(snap).contract(row) is want
            assert snap.contract(row).occ_symbol == snap.occ_symbol(int(row) % n)
