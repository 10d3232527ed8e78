"""What a decision now computes once (issue 15, s10) reads as the general paths.

* zero_dte's and credit_vertical's ``relevant_rows`` are kept per listing (``listing_memo``), per parameter set:
  the same rows as computing them on a fresh snapshot.
* ``StrategyContext.chain(dte=...)`` keeps a request's expiries in the DTE window for the day: another day (or
  another window) asks the engine's listing again.
* ``ChainSnapshot.checksum`` hashes the columns' buffers: the SHA-256 of their ``tobytes()``, strided or not.
* ``ChainSnapshot``'s cached properties (lock-free): computed once, kept in the instance.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import types

import numpy as np
import pandas as pd
import pytest

from strikebench.engine.context import StrategyContext
from strikebench.options.chain import COLUMNS, ChainSnapshot, cached_property
from strikebench.strategies.credit_vertical import CreditVertical, CreditVerticalParams
from strikebench.strategies.zero_dte import ZeroDte, ZeroDteParams
from test_decision_cost import session
from test_listing_static import chain, fresh

NY = "America/New_York"


def zero_dte_rows_general(z, snap):
    """Today's expiry of the root, both sides, usable or not, in row order (the mask's rows)."""
    today = np.datetime64(snap.timestamp.date(), "D")
    return np.flatnonzero((snap.expiry == today) & (snap.root == z.params.root))


def credit_vertical_rows_general(c, snap):
    p = c.params
    dtes = (snap.expiry - np.datetime64(snap.timestamp.date(), "D")).astype(np.int64)
    window = np.zeros(len(snap), dtype=bool)
    for target in p.dte_targets:
        window |= np.abs(dtes - target) <= p.dte_tolerance
    mask = window & (dtes >= 0) & (snap.root == p.root)
    if p.side != "both":
        mask &= snap.is_call == (p.side == "call")
    return np.flatnonzero(mask)


@pytest.mark.parametrize("seed", range(3))
def test_relevant_rows_kept_per_listing_are_each_parameter_set_s_own(seed):
    """Strategies of other roots, sides and DTE windows asking on snapshots of one listing (and subsets of it)
    each get their own rows, equal to the general mask's on a fresh snapshot; the array is read-only."""
    zs = [ZeroDte(ZeroDteParams(root=root)) for root in ("XSP", "SPXW", "SPX")]
    cs = [CreditVertical(CreditVerticalParams(root=root, side=side, dte_targets=targets, dte_tolerance=tol))
          for root, side, targets, tol in (("SPXW", "put", [2], 0), ("SPXW", "call", [2], 0), ("SPXW", "call", [2, 4], 1),
                                           ("SPX", "both", [0], 1), ("SPXW", "both", [3], 0),
                                           ("SPXW", "put", [2], 1))]
    for kw in (dict(roots=("SPXW", "XSP"), n=12), dict(roots=("SPX", "SPXW"), n=8, n_exp=4)):
        snaps = session(seed, **kw)
        snaps += [s.subset(np.flatnonzero(~s.is_call)) for s in snaps[:2]]
        for _ in range(2):  # (the second time from the memo)
            for snap in snaps:
                for z in zs:
                    got = z.relevant_rows(snap)
                    assert np.array_equal(got, zero_dte_rows_general(z, fresh(snap))), z.params.root
                    assert not got.flags.writeable
                for c in cs:
                    got = c.relevant_rows(snap)
                    assert np.array_equal(got, credit_vertical_rows_general(c, fresh(snap))), c.params
                    assert not got.flags.writeable
        assert len(snaps[0].listing_memo("credit_vertical.relevant_rows")) == len(cs)


class FakeEngine:
    def __init__(self, listed):
        self.listed = listed  # day -> expiries
        self.today = None
        self.asked = []

    def listed_expiries(self, underlying):
        self.asked.append((underlying, self.today))
        return self.listed[self.today]

    def chain(self, underlying, expiries, **kw):
        return (underlying, expiries)  # (the list as handed to the engine)


def test_chain_by_dte_reads_each_day_s_listing():
    d1, d2 = dt.date(2024, 1, 8), dt.date(2024, 1, 9)
    listed = {d1: [d1 + dt.timedelta(days=k) for k in (0, 1, 2, 7, 30)],
              d2: [d2 + dt.timedelta(days=k) for k in (0, 1, 6, 29)]}
    engine = FakeEngine(listed)
    ctx = StrategyContext(engine, "s", strategy=types.SimpleNamespace(chain_underlying=lambda: "SPX"))

    def general(day, lo, hi):
        return [e for e in listed[day] if lo <= (e - day).days <= hi]

    for day in (d1, d1, d2, d1):
        engine.today = day
        for lo, hi in ((0, 0), (1, 7), (0, 60), (3, 5)):
            for und in ("SPX", "XSP"):
                assert ctx.chain(und, dte=(lo, hi)) == (und, general(day, lo, hi))
        assert ctx.chain(dte=(1, 7), expiries=[day + dt.timedelta(days=1), day]) == (
            "SPX", [day + dt.timedelta(days=1)])
    # once per (underlying, window) and day: a day asked again after another asks again
    assert len(engine.asked) == 3 * (4 * 2)
    got = ctx.chain("SPX", dte=(0, 60))[1]
    got.append("changed")  # (a caller's copy: the kept list is not the one handed out)
    assert ctx.chain("SPX", dte=(0, 60)) == ("SPX", general(d1, 0, 60))


def checksum_general(snap):
    h = hashlib.sha256(f"{snap.underlying}|{snap.timestamp.isoformat()}|{snap.underlying_price!r}".encode())
    for name in COLUMNS:
        h.update(name.encode())
        h.update(np.asarray(getattr(snap, name)).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("seed", range(3))
def test_checksum_is_the_sha256_of_the_columns_bytes_strided_or_not(seed):
    rng = np.random.default_rng(seed)
    snap = chain(rng, roots=("SPXW", "XSP"), n=9)
    snaps = [snap, snap.subset(np.flatnonzero(snap.is_call)), snap.subset(np.zeros(0, dtype=np.int64)),
             snap.subset([3])]
    # strided quote columns (a batch's minute is a row of a (minutes, rows) block) and a strided listing column
    m = len(snap)
    block = {name: np.repeat(getattr(snap, name)[None, :], 3, axis=0).T.copy().T for name in
             ("bid", "ask", "iv", "delta", "volume")}
    assert not block["bid"][1].flags.c_contiguous
    strided_strike = np.repeat(snap.strike, 2)[::2]
    cols = {f: getattr(snap, f) for f in snap.__dataclass_fields__}
    cols.update({name: b[1] for name, b in block.items()}, strike=strided_strike)
    snaps.append(ChainSnapshot(**cols))
    snaps.append(ChainSnapshot(**{**cols, "timestamp": pd.Timestamp("2024-01-08 11:00:00.000000001", tz=NY)}))
    assert m and all(not getattr(snaps[-1], n).flags.c_contiguous for n in ("bid", "strike"))
    for s in snaps:
        assert s.checksum == checksum_general(s) == fresh(s).checksum


def test_cached_properties_are_computed_once_and_kept():
    calls = []

    class Thing:
        @cached_property
        def value(self):
            """The doc."""
            calls.append(1)
            return [len(calls)]

    t = Thing()
    assert t.value is t.value and calls == [1] and t.__dict__["value"] == [1]
    assert Thing().value == [2]
    assert isinstance(Thing.value, cached_property) and Thing.value.__doc__ == "The doc."
    assert Thing.value.attrname == "value"
    snap = chain(np.random.default_rng(0), n=5)
    assert snap.valid is snap.valid and "valid" in snap.__dict__ and "checksum" not in snap.__dict__
    assert snap.checksum == snap.__dict__["checksum"]


@pytest.mark.parametrize("seed", range(3))
def test_closest_deltas_reads_targets_of_any_form_as_float64(seed):
    """A list or tuple of Python floats is read as it is; anything else (ints, numpy values, strings, nested, an
    array) as its float64 values: the same rows as the general path of each target."""
    from test_decision_paths import closest_delta_general

    rng = np.random.default_rng(seed)
    snap = chain(rng, roots=("SPXW",), n=25)
    forms = [[0.1, 0.15, 0.2], (0.2, 0.1), [0, 1], [np.float64(0.15), 0.3], np.array([0.1, 0.45]), ["0.1", 0.2],
             [[0.1, 0.2], [0.3, 0.05]], (np.float32(0.1),), [True, 0.5], [], [float("nan")]]
    for targets in forms:
        flat = np.asarray(targets, dtype=np.float64).reshape(-1).tolist()
        for expiry in snap.expiries:
            for right in ("P", "C"):
                want = [closest_delta_general(snap, expiry, right, t, "SPXW") for t in flat]
                assert fresh(snap).closest_deltas(expiry, right, targets, root="SPXW") == want, targets
