"""Columnar option-chain snapshots and the selection helpers strategies use.

A :class:`ChainSnapshot` holds every quote of one underlying at one instant as
numpy columns (one row per contract). Nothing here loops over contracts in
Python: selection is done with boolean masks and ``searchsorted`` so that a
strategy picking "the 0.20-delta put 7 days out" costs microseconds, not a scan.

Quotes that cannot be traded on -- a NaN bid or ask, a zero ask, a negative bid,
or a crossed market (bid > ask) -- are *flagged*, kept in the snapshot (so the
journal stores exactly what was seen) and never returned by the selection
helpers or used for fills or marks. ``snapshot.dropped`` says how many, and why.
A zero bid is flagged too (``zero_bid``, for information) but stays usable: a
0.00/0.05 wing can be bought at the ask, never sold (the fill rule refuses to
sell at a zero bid, see :mod:`strikebench.options.fills`).
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import hashlib
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "ChainSnapshot",
    "LegQuotes",
    "QUOTE_NAN",
    "QUOTE_ZERO_BID",
    "QUOTE_ZERO_ASK",
    "QUOTE_CROSSED",
    "QUOTE_NEGATIVE_BID",
    "QUOTE_UNUSABLE",
    "contract_keys",
    "usable_quotes",
]

# Bit flags of an unusable quote (a row may carry several).
QUOTE_NAN = 1
QUOTE_ZERO_BID = 2
QUOTE_ZERO_ASK = 4
QUOTE_CROSSED = 8
QUOTE_NEGATIVE_BID = 16
#: flags that make a quote unusable (a zero bid alone does not)
QUOTE_UNUSABLE = QUOTE_NAN | QUOTE_ZERO_ASK | QUOTE_CROSSED | QUOTE_NEGATIVE_BID
_FLAG_NAMES = {
    QUOTE_NAN: "nan",
    QUOTE_ZERO_BID: "zero_bid",
    QUOTE_ZERO_ASK: "zero_ask",
    QUOTE_CROSSED: "crossed",
    QUOTE_NEGATIVE_BID: "negative_bid",
}

_EPOCH = np.datetime64("1970-01-01", "D")
_EPOCH_DATE = dt.date(1970, 1, 1)

#: Columns every snapshot carries, with their dtypes.
COLUMNS: Mapping[str, str] = {
    "root": "U6",
    "expiry": "datetime64[D]",
    "strike": "float64",
    "is_call": "bool",
    "bid": "float64",
    "ask": "float64",
    "last": "float64",
    "volume": "int64",
    "open_interest": "int64",
    "iv": "float64",
    "delta": "float64",
    "gamma": "float64",
    "theta": "float64",
    "vega": "float64",
}

_COLUMN_NAMES = tuple((name, name.encode()) for name in COLUMNS)
#: the columns that name the contracts (with ``key``: what a snapshot's ``_static`` may be derived from), the others
_LISTING_COLUMNS = ("root", "expiry", "strike", "is_call")
_QUOTE_COLUMNS = tuple(name for name in COLUMNS if name not in _LISTING_COLUMNS)
_DTYPES = {name: np.dtype(dtype) for name, dtype in COLUMNS.items()}


def usable_quotes(bid, ask) -> np.ndarray:
    """Elementwise: bid and ask finite, ask positive, bid not negative, not crossed.

    The one definition of a quote fills, marks and selection may use. A zero bid is usable
    (a 0.00/0.05 wing can be bought at the ask and is marked at 0.025); *selling* at a zero
    bid is refused by the fill rule (:func:`strikebench.options.fills.tradeable`).
    """
    bid, ask = np.asarray(bid), np.asarray(ask)
    with np.errstate(invalid="ignore"):
        # four comparisons: an ask above 0 and below inf is finite, a bid at or above 0 and at or below a finite ask
        # is finite (a NaN fails every comparison)
        return (bid >= 0) & (bid <= ask) & (ask > 0) & (ask < np.inf)


def contract_keys(root_codes, expiry, is_call, strike) -> np.ndarray:
    """Pack (root code, expiry, right, strike) into one sortable int64 per contract.

    Layout: root code (8 bits) | days since 1970 (17 bits) | call bit | strike x 1000 (37 bits).
    """
    days = (np.asarray(expiry, dtype="datetime64[D]") - _EPOCH).astype(np.int64)
    milli = np.rint(np.asarray(strike, dtype=np.float64) * 1000.0).astype(np.int64)
    return (
        (np.asarray(root_codes, dtype=np.int64) << 55)
        | (days << 38)
        | (np.asarray(is_call, dtype=np.int64) << 37)
        | milli
    )


def _factorize_roots(root: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(sorted distinct roots, code per row). Roots come in long runs (a chain lists a root's
    series together), so runs are found with one comparison instead of sorting strings."""
    n = root.shape[0]
    if n == 0:
        return [], np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(root[1:] != root[:-1])
    if change.size == 0:  # one root (a decision's slice)
        return [str(root[0])], np.zeros(n, dtype=np.int64)
    if change.size >= 64:  # interleaved roots: sorting is cheaper than a Python loop over runs
        roots, codes = np.unique(root, return_inverse=True)
        return [str(r) for r in roots], codes
    starts = np.concatenate(([0], change + 1))
    run_roots = [str(r) for r in root[starts]]
    distinct = sorted(set(run_roots))
    code_of = {r: i for i, r in enumerate(distinct)}
    codes = np.repeat(np.array([code_of[r] for r in run_roots], dtype=np.int64), np.diff(np.append(starts, n)))
    return distinct, codes


_DAY = np.dtype("datetime64[D]")


class cached_property:
    """:func:`functools.cached_property` without its lock (Python 3.11 takes one lock per property, shared by every
    instance, at each first read: ~0.6 us of a ~1 us read; 3.12 dropped it): the value is computed at the first read
    and kept in the instance's ``__dict__``, which later reads find first. A snapshot never changes, so two threads
    computing one value at once compute the same one."""

    def __init__(self, func):
        self.func = func
        self.attrname = func.__name__
        self.__doc__ = func.__doc__
        self.__module__ = func.__module__

    def __set_name__(self, owner, name):
        self.attrname = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = instance.__dict__[self.attrname] = self.func(instance)
        return value


def _isoformat(ts) -> str:
    """``ts.isoformat()``: a pandas Timestamp without nanoseconds through its datetime (Timestamp.isoformat writes its
    datetime part with datetime.isoformat and adds nanoseconds only when there are any: the same text, at a third of
    the cost)."""
    if type(ts) is pd.Timestamp and not ts.nanosecond:
        return ts.to_pydatetime().isoformat()
    return ts.isoformat()


def _as_date(value) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, np.datetime64):
        if value.dtype == _DAY and not np.isnat(value):  # a snapshot's own expiry column: the date as is
            return value.item()
        return pd.Timestamp(value).date()
    return pd.Timestamp(value).date()


def quote_flags(bid, ask) -> np.ndarray:
    """The QUOTE_* bit flags (int8) of quotes ``bid`` / ``ask`` of any shape (a snapshot's ``flags``)."""
    with np.errstate(invalid="ignore"):  # each condition's bools as int8 0/1, shifted to its flag bit
        flags = (~(np.isfinite(bid) & np.isfinite(ask))).view(np.int8)  # QUOTE_NAN = 1
        flags |= (bid == 0).view(np.int8) << 1  # QUOTE_ZERO_BID
        flags |= (ask <= 0).view(np.int8) << 2  # QUOTE_ZERO_ASK
        flags |= (bid > ask).view(np.int8) << 3  # QUOTE_CROSSED
        flags |= (bid < 0).view(np.int8) << 4  # QUOTE_NEGATIVE_BID
    return flags


@dataclass(frozen=True, eq=False)
class ChainSnapshot:
    """All option quotes of one underlying at one instant, held columnar.

    Build one with :meth:`from_arrays`. Columns are read-only numpy arrays of
    equal length (see :data:`COLUMNS`); ``mid`` and ``valid`` are derived.
    ``timestamp`` is tz-aware (America/New_York); ``underlying_price`` is the
    index level the quotes were struck against.
    """

    underlying: str
    timestamp: pd.Timestamp
    underlying_price: float
    root: np.ndarray
    expiry: np.ndarray
    strike: np.ndarray
    is_call: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    last: np.ndarray
    volume: np.ndarray
    open_interest: np.ndarray
    iv: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    theta: np.ndarray
    vega: np.ndarray
    flags: np.ndarray
    key: np.ndarray

    # ------------------------------------------------------------------ build
    @classmethod
    def from_arrays(
        cls,
        underlying: str,
        timestamp,
        underlying_price: float,
        **columns,
    ) -> "ChainSnapshot":
        """Validate and freeze columns into a snapshot, sorted by contract key.

        Required columns: root, expiry, strike, is_call, bid, ask. Missing
        optional columns (last, volume, open_interest, iv and greeks) are
        filled with NaN / 0. Raises ``ValueError`` naming the offending column
        when lengths differ or a column is unknown.
        """
        unknown = set(columns) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown chain column(s): {', '.join(sorted(unknown))}")
        for required in ("root", "expiry", "strike", "is_call", "bid", "ask"):
            if required not in columns:
                raise ValueError(f"chain snapshot is missing column '{required}'")
        n = len(np.atleast_1d(columns["strike"]))
        arrays: dict[str, np.ndarray] = {}
        for name, dtype in COLUMNS.items():
            if name in columns:
                arr = np.asarray(columns[name])
                if arr.ndim == 0:
                    arr = np.full(n, arr.item())
                arr = arr.astype(dtype, copy=False)
            elif dtype == "int64":
                arr = np.zeros(n, dtype=np.int64)
            else:
                arr = np.full(n, np.nan)
            if arr.shape != (n,):
                raise ValueError(f"chain column '{name}' has length {arr.shape} but strike has {n}")
            arrays[name] = arr
        ts = pd.Timestamp(timestamp)
        if ts.tzinfo is None:
            raise ValueError("chain snapshot timestamp must be timezone-aware")

        roots, codes = _factorize_roots(arrays["root"])
        key = contract_keys(codes, arrays["expiry"], arrays["is_call"], arrays["strike"])
        order = np.argsort(key, kind="stable")
        if not np.all(order == np.arange(n)):
            arrays = {k: v[order] for k, v in arrays.items()}
            key = key[order]
        return cls._frozen(underlying, ts, underlying_price, arrays, key)

    @classmethod
    def layout(cls, root, expiry, is_call, strike) -> tuple[np.ndarray, np.ndarray]:
        """(order, key): the row order :meth:`from_arrays` sorts these contracts into, and their keys
        in that order. A source that quotes the same contracts many times (a session's listing) computes
        this once and hands it to :meth:`from_sorted`."""
        root = np.asarray(root).astype(COLUMNS["root"], copy=False)
        roots, codes = _factorize_roots(root)
        key = contract_keys(codes, np.asarray(expiry).astype("datetime64[D]", copy=False), np.asarray(is_call),
                            np.asarray(strike, dtype=np.float64))
        order = np.argsort(key, kind="stable")
        return order, key[order]

    @classmethod
    def from_sorted(cls, underlying: str, timestamp: pd.Timestamp, underlying_price: float, key: np.ndarray,
                    flags: np.ndarray | None = None, *, static: dict | None = None, **columns) -> "ChainSnapshot":
        """:meth:`from_arrays` for every column already in the order and with the keys of :meth:`layout`
        (the same snapshot, without factorizing, keying and sorting again). ``flags``, when given, must be
        :func:`quote_flags` of these ``bid`` and ``ask`` (a source pricing many minutes at once computes them
        over the whole block: the same elementwise flags).

        ``static``, when given, is a dict the source keeps for one listing on one day: every snapshot it is
        handed to must have the same ``key``, ``root``, ``expiry``, ``strike`` and ``is_call`` (the values) and
        the same date. What depends on those alone (contract groups, strike order, root masks, days to
        expiry, OCC symbols) is then computed once for all of them (:attr:`_static`); start it empty."""
        n = key.shape[0]
        arrays = {name: _column(name, columns[name], dtype, (n,), n) for name, dtype in _DTYPES.items()}
        if flags is not None and flags.shape != (n,):
            raise ValueError(f"chain flags have length {flags.shape} but the layout has {n}")
        snap = cls._frozen(underlying, timestamp, underlying_price, arrays, key, flags)
        if static is not None:
            snap.__dict__["_static"] = static  # (the cached property's slot: shared instead of this snapshot's own)
        return snap

    @classmethod
    def from_block(cls, underlying: str, timestamps: Sequence[pd.Timestamp], underlying_prices: Sequence[float],
                   key: np.ndarray, flags: np.ndarray, *, static: dict | None = None,
                   **columns) -> list["ChainSnapshot"]:
        """:meth:`from_sorted` at each of ``len(timestamps)`` minutes of one listing, from blocks: a column is
        either ``(n,)`` (the same at every minute: the listing's columns, open interest) or ``(minutes, n)`` (row
        ``j`` is minute ``j``'s); ``flags`` ``(minutes, n)``, :func:`quote_flags` of the bid and ask blocks. The
        same snapshots as :meth:`from_sorted` of each row (their columns are read-only views of the blocks), checked
        once for all of them."""
        k, n = len(timestamps), key.shape[0]
        if len(underlying_prices) != k:
            raise ValueError(f"{len(underlying_prices)} underlying prices for {k} timestamps")
        arrays = {name: _column(name, columns[name], dtype, ((n,), (k, n)), n) for name, dtype in _DTYPES.items()}
        if flags.shape != (k, n):
            raise ValueError(f"chain flags have shape {flags.shape} but the block is {(k, n)}")
        for arr in (*arrays.values(), flags, key):
            if arr.flags.writeable:  # (a row of a read-only block is a read-only view)
                arr.flags.writeable = False
        # the columns every minute shares (the listing's), and the others' rows minute by minute (iterating a block
        # gives its rows)
        shared = {name: arr for name, arr in arrays.items() if arr.ndim == 1}
        shared["key"] = key
        if static is not None:
            shared["_static"] = static
        names = [name for name, arr in arrays.items() if arr.ndim == 2]
        rows = zip(*[list(arrays[name]) for name in names], list(flags))
        names.append("flags")
        out = []
        for ts, px, row in zip(timestamps, underlying_prices, rows):
            snap = object.__new__(cls)
            d = snap.__dict__
            d.update(underlying=underlying, timestamp=ts, underlying_price=float(px))
            d.update(shared)
            d.update(zip(names, row))
            out.append(snap)
        return out

    @classmethod
    def _frozen(cls, underlying, ts, underlying_price, arrays: dict, key: np.ndarray,
                flags: np.ndarray | None = None) -> "ChainSnapshot":
        if flags is None:
            flags = quote_flags(arrays["bid"], arrays["ask"])
        for arr in (*arrays.values(), flags, key):
            if arr.flags.writeable:  # (a source's shared columns and views of read-only blocks already are not)
                arr.flags.writeable = False
        # the dataclass' __init__, field by field in its order (a frozen one sets each through object.__setattr__)
        snap = object.__new__(cls)
        snap.__dict__.update(underlying=underlying, timestamp=ts, underlying_price=float(underlying_price))
        snap.__dict__.update(arrays)
        snap.__dict__.update(flags=flags, key=key)
        return snap

    # --------------------------------------------------------------- columns
    def __len__(self) -> int:
        return int(self.strike.shape[0])

    @cached_property
    def mid(self) -> np.ndarray:
        """(bid + ask) / 2; NaN where the quote is flagged unusable."""
        with np.errstate(invalid="ignore"):
            m = np.where(self.valid, (self.bid + self.ask) * 0.5, np.nan)
        m.flags.writeable = False
        return m

    @cached_property
    def valid(self) -> np.ndarray:
        """True where the quote is usable: finite, ask positive, bid not negative, not crossed
        (the same rule as :func:`usable_quotes`; a zero bid is usable)."""
        v = (self.flags & QUOTE_UNUSABLE) == 0
        v.flags.writeable = False
        return v

    @cached_property
    def dropped(self) -> dict[str, int]:
        """How many quotes are unusable (``total``), and how many carry each flag (``zero_bid`` is
        counted for information: those quotes stay usable)."""
        flags = self.flags
        if flags.dtype.itemsize != 1:  # (flags built by quote_flags are int8)
            out = {"total": int(np.count_nonzero(flags & QUOTE_UNUSABLE))}
            for bit, name in _FLAG_NAMES.items():
                out[name] = int(np.count_nonzero(flags & bit))
            return out
        # how many rows carry each flag value (a few distinct ones: counted in the bytes), then each flag's rows
        data = flags.tobytes()
        seen = [(v, data.count(v)) for v in set(data)]
        out = {"total": sum(c for v, c in seen if v & QUOTE_UNUSABLE)}
        for bit, name in _FLAG_NAMES.items():
            out[name] = sum(c for v, c in seen if v & bit)
        return out

    @cached_property
    def dte(self) -> np.ndarray:
        """Calendar days from the snapshot's date to each row's expiry (read-only)."""
        day = self.timestamp.date()
        got = self._static.get(("dte", day))
        if got is None:
            got = self._static[("dte", day)] = (self.expiry - np.datetime64(day, "D")).astype(np.int64)
            got.flags.writeable = False
        return got

    @cached_property
    def checksum(self) -> str:
        """SHA-256 over the header and every column: what the decision saw, exactly."""
        h = hashlib.sha256(f"{self.underlying}|{_isoformat(self.timestamp)}|{self.underlying_price!r}".encode())
        update = h.update
        for name, encoded in _COLUMN_NAMES:
            arr = getattr(self, name)
            update(encoded)
            # the column's bytes as tobytes() gives them, read in place (a contiguous array's buffer is its bytes)
            update(arr if arr.flags.c_contiguous else np.ascontiguousarray(arr))
        return h.hexdigest()

    # ------------------------------------------------------------- selection
    @cached_property
    def expiries(self) -> list[dt.date]:
        """Distinct expiries (any root), ascending."""
        runs = self._runs()
        if runs is not None:  # every row is in a contract group
            return sorted({e for _, e, _ in runs[0]})
        days = np.unique(self.expiry)
        if days.size and np.isnat(days[-1]):  # NaT sorts last
            return [pd.Timestamp(d).date() for d in days]
        return days.tolist()  # datetime64[D] -> datetime.date

    def nearest_expiry(
        self, target_dte: int, tolerance: int = 0, *, root: str | None = None
    ) -> dt.date | None:
        """The expiry whose calendar-day DTE is closest to ``target_dte``.

        Only expiries within ``tolerance`` days qualify; ties go to the shorter
        expiry. Returns None when none qualifies (the caller SKIPs).
        """
        listed = self._memo.get(("expiries", root))
        if listed is None:  # (dte, expiry) of the usable rows' expiries, ascending: once per snapshot and root
            groups = self._groups
            if groups is not None:  # the expiries of the root's contract groups that hold a usable quote
                today = self.timestamp.date()
                listed = sorted({e for (r, e, _), (_, _, usable) in groups.items()
                                 if usable and (root is None or r == root)})
                listed = [(int((e - today).days), e) for e in listed]
            else:
                mask = self.valid if root is None else self.valid & self._root_mask(root)
                exp = np.unique(self.expiry[mask])
                today = np.datetime64(self.timestamp.date(), "D")
                listed = [(int(d), e.item()) for d, e in zip((exp - today).astype(np.int64), exp)]
            self._memo[("expiries", root)] = listed
        best = None  # the smallest (distance to the target, dte): expiries are distinct, so no ties
        for d, expiry in listed:
            if d >= 0 and abs(d - target_dte) <= tolerance:
                rank = (abs(d - target_dte), d)
                if best is None or rank < best[0]:
                    best = (rank, expiry)
        return None if best is None else best[1]

    def rows(self, expiry=None, right: str | None = None, *, root: str | None = None,
             valid_only: bool = True) -> np.ndarray:
        """Row indices matching expiry / right ('C' or 'P') / root, sorted by strike."""
        day = None if expiry is None else _as_date(expiry)
        return self._selection(day, None if right is None else _is_call(right), root, bool(valid_only)).copy()

    def _selection(self, day: dt.date | None, call: bool | None, root: str | None, valid_only: bool) -> np.ndarray:
        """:meth:`rows` (memoized, not a copy: read it only)."""
        memo_key = ("rows", day, call, root, valid_only)
        idx = self._memo.get(memo_key)
        if idx is None and day is not None and root is not None:
            order = self._static.get(("order",) + memo_key[1:4])
            if order is None and (runs := self._runs()) is not None:
                # contract groups (root, expiry, right): runs of the key-sorted rows, puts before calls, each in
                # strike order: their rows ascending are the mask's rows; every row of them in strike order (once
                # per listing: a stable sort, so the usable ones among them are in the order they sort into)
                parts = [runs[0].get((root, day, c)) for c in ((False, True) if call is None else (call,))]
                parts = [np.arange(g[0], g[1]) for g in parts if g is not None]
                order = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0, dtype=np.intp)
                order = order[np.argsort(self.strike[order], kind="stable")]  # (strikes a rounding step apart)
                order.flags.writeable = False
                self._static[("order",) + memo_key[1:4]] = order
            if order is not None:
                idx = order[self.valid[order]] if valid_only else order
                self._memo[memo_key] = idx
        if idx is None:  # a snapshot never changes: each selection is computed once (a copy is handed out)
            mask = self.valid.copy() if valid_only else np.ones(len(self), dtype=bool)
            if day is not None:
                mask &= self.expiry == np.datetime64(day, "D")
            if call is not None:
                mask &= self.is_call == call
            if root is not None:
                mask &= self._root_mask(root)
            idx = np.flatnonzero(mask)
            idx = idx[np.argsort(self.strike[idx], kind="stable")]
            self._memo[memo_key] = idx
        return idx

    def _runs(self) -> tuple[dict, np.ndarray] | None:
        """({(root, expiry date, is_call): (start, stop)}, starts) of the contract groups: the rows are sorted by
        contract key (root code, expiry, right, strike), so each group is one run of rows (in :attr:`_static`).
        None when the keys are not sorted or an expiry is NaT (selections then take the masks' path)."""
        got = self._static.get("runs", False)
        if got is False:
            got = None
            n = len(self)
            if n == 0:
                got = ({}, np.zeros(0, dtype=np.intp))
            else:
                step = np.diff(self.key >> 37)  # root code, expiry, right
                if not (np.any(step < 0) or np.isnat(self.expiry).any()):
                    starts = np.concatenate(([0], np.flatnonzero(step) + 1))
                    stops = starts[1:].tolist() + [n]
                    got = ({(r, e, c): (a, b) for r, e, c, a, b in
                            zip(self.root[starts].tolist(), self.expiry[starts].tolist(),
                                self.is_call[starts].tolist(), starts.tolist(), stops)}, starts)
            self._static["runs"] = got
        return got

    @cached_property
    def _groups(self) -> dict | None:
        """{(root, expiry date, is_call): (start, stop, any usable quote)} of the contract groups (:meth:`_runs`
        and this snapshot's quotes). None when the keys are not sorted or an expiry is NaT."""
        runs = self._runs()
        if runs is None or not runs[0]:
            return None if runs is None else {}
        usable = np.logical_or.reduceat(self.valid, runs[1]).tolist()
        return {g: (a, b, u) for (g, (a, b)), u in zip(runs[0].items(), usable)}

    @cached_property
    def _memo(self) -> dict:
        """Selections this snapshot already computed (its columns are read-only)."""
        return {}

    @cached_property
    def _static(self) -> dict:
        """Selections that depend only on the contracts listed (``key``, ``root``, ``expiry``, ``strike``,
        ``is_call``) and the snapshot's date: this snapshot's own, or one dict shared by every snapshot a
        source built from one listing (:meth:`from_sorted`'s ``static``)."""
        return {}

    def _root_mask(self, root: str) -> np.ndarray:
        mask = self._static.get(("root", root))
        if mask is None:
            mask = self.root == root
            mask.flags.writeable = False
            self._static[("root", root)] = mask
        return mask

    def closest_delta(self, expiry, right: str, target: float, *, root: str | None = None) -> int | None:
        """Row whose |delta| is closest to ``target`` (0 < target < 1); ties go farther OTM."""
        return self.closest_deltas(expiry, right, (target,), root=root)[0]

    def closest_deltas(self, expiry, right: str, targets: Sequence[float], *,
                       root: str | None = None) -> list[int | None]:
        """:meth:`closest_delta` of each target, from one sort of the side's rows by |delta| (a strategy's delta
        targets on one expiry and right): the row at the smallest ``abs(|delta| - target)``, ties to the smaller
        |delta| (farther OTM), then to the lower strike."""
        values, rows = self._delta_side(expiry, right, root)
        n = len(values)
        if n == 0:
            return [None] * len(targets)
        out = []
        xs = targets  # (a strategy's parameter, a list of Python floats, as it is: the values float64 gives)
        if type(xs) is list or type(xs) is tuple:
            for x in xs:
                if type(x) is not float:
                    xs = _floats(targets)
                    break
        else:
            xs = _floats(targets)
        for x in xs:
            # abs(v - x) (a float subtraction, rounded) never decreases as v moves away from x on either side: the
            # smallest is at the last value below x or the first at or above it. The one above wins only when
            # strictly nearer (it has the larger |delta|); below, values that round to the same distance lie
            # just under it: the smallest of them wins. Equal values are in strike order (a stable sort), so the
            # first of a run is the lower strike. (A NaN or infinite x: every distance alike, the first row.)
            j = bisect.bisect_left(values, x)
            if j == n or (j and abs(values[j - 1] - x) <= abs(values[j] - x)):
                j -= 1
                d = abs(values[j] - x)
                while j and abs(values[j - 1] - x) == d:
                    j -= 1
            out.append(rows[j])
        return out

    def _delta_side(self, expiry, right: str, root: str | None) -> tuple[list[float], list[int]]:
        """(|delta| of the usable rows of one expiry/right/root with a finite delta, ascending; those rows in the
        same order, equal values in strike order), as lists."""
        day = None if expiry is None else _as_date(expiry)
        memo_key = ("delta_side", day, _is_call(right), root)
        got = self._memo.get(memo_key)
        if got is None:
            idx = self._selection(day, _is_call(right), root, True)
            absd = np.abs(self.delta[idx])
            order = np.argsort(absd, kind="stable")  # (NaN sorts after inf, both after every finite value)
            values = absd[order].tolist()
            finite = bisect.bisect_left(values, math.inf)  # (a NaN is not below inf either)
            got = self._memo[memo_key] = (values[:finite], idx[order[:finite]].tolist())
        return got

    def offset_row(self, row: int, points: float) -> int | None:
        """Row of the same root/expiry/right whose strike is ``points`` farther OTM.

        Puts move down in strike, calls up. Exact strike match only; None if absent
        or unusable.
        """
        # which row is that contract depends on the listing alone: found once per listing (:attr:`_static`) for a
        # Python int row (a strategy's rows, asked again at every decision of a session), then only its quote read
        memo = self._static.get("offset_row")
        if memo is None:
            memo = self._static["offset_row"] = {}
        if type(row) is int:
            i = memo.get((row, points), -1)
            if i == -1:
                i = memo[(row, points)] = self._offset_key_row(row, points)
        else:
            i = self._offset_key_row(row, points)
        return None if i is None or not self.valid[i] else i

    def _offset_key_row(self, row, points: float) -> int | None:
        """The row of :meth:`offset_row`'s contract, usable or not (None when not listed)."""
        k = int(self.key[row])
        call = (k >> 37) & 1
        strike = float(self.strike[row]) + (points if call else -points)
        # :meth:`find`'s key of (this row's root, expiry, right, that strike): the row's key with the strike replaced
        # (round() of a float is numpy's rint: half to even)
        return self._key_row((k & _ABOVE_STRIKE) | round(strike * 1000.0))

    def _key_row(self, k: int) -> int | None:
        """The row whose contract key is ``k`` (a Python int), or None: a binary search of the keys (as a list, once
        per listing, up to a few thousand rows: a Python bisect costs a tenth of a numpy call on one value)."""
        keys = self._static.get("keys", False)
        if keys is False:
            keys = self._static["keys"] = self.key.tolist() if self.key.shape[0] <= _KEY_LIST_ROWS else None
        if keys is not None:
            i = bisect.bisect_left(keys, k)
            return i if i < len(keys) and keys[i] == k else None
        i = int(self.key.searchsorted(k))
        return i if i < self.key.shape[0] and self.key[i] == k else None

    def delta_offset_row(self, row: int, delta_distance: float) -> int | None:
        """Row of the same expiry/right whose |delta| is ``delta_distance`` smaller (farther OTM)."""
        target = abs(float(self.delta[row])) - delta_distance
        if target <= 0:
            return None
        idx = self.rows(self.expiry[row], "C" if self.is_call[row] else "P", root=str(self.root[row]))
        far = idx[np.abs(self.delta[idx]) < abs(float(self.delta[row]))]
        if far.size == 0:
            return None
        return int(far[np.argmin(np.abs(np.abs(self.delta[far]) - target))])

    @cached_property
    def _root_codes(self) -> dict[str, int]:
        got = self._static.get("root_codes")
        if got is None:
            roots, _ = _factorize_roots(self.root)
            got = self._static["root_codes"] = {str(r): i for i, r in enumerate(roots)}
        return got

    def find(self, root: str, expiry, is_call: bool, strike: float, *, valid_only: bool = True) -> int | None:
        """Row of one contract, or None when absent (or unusable with ``valid_only``)."""
        code = self._root_codes.get(root)
        if code is None:
            return None
        # the key of contract_keys, in Python integers (a one-element array call costs 20x more)
        if isinstance(expiry, np.datetime64):
            days = int(expiry.astype("datetime64[D]").astype(np.int64))
        else:
            days = (_as_date(expiry) - _EPOCH_DATE).days
        k = (code << 55) | (days << 38) | (int(bool(is_call)) << 37) | int(np.rint(float(strike) * 1000.0))
        i = self._key_row(k)
        if i is None or (valid_only and not self.valid[i]):
            return None
        return i

    def find_contract(self, contract, *, valid_only: bool = True) -> int | None:
        """Row of an :class:`~strikebench.options.contracts.OptionContract`, or None."""
        return self.find(contract.root, contract.expiry, contract.right == "C", contract.strike,
                         valid_only=valid_only)

    def contract(self, row: int):
        """The :class:`OptionContract` of one row (once per row of a listing: :attr:`_static`)."""
        memo = self._static.get("contracts")
        if memo is None:
            memo = self._static["contracts"] = {}
        got = memo.get(row)  # (rows as asked: ints and numpy ints hash alike)
        if got is None:
            got = memo[row] = _contract(str(self.root[row]), self.expiry[row].item(),  # datetime64[D] -> datetime.date
                                        float(self.strike[row]), bool(self.is_call[row]))
        return got

    def occ_symbol(self, row: int) -> str:
        """``contract(row).occ_symbol`` without building the contract (a decision lists it per candidate): from
        the row's contract key (root code, expiry, right and strike x 1000: the symbol's fields); once per row
        of a listing (:attr:`_static`)."""
        symbols = self._occ_symbols
        got = symbols.get(row)
        if got is None:
            k = int(self.key[row])
            names = self._root_names
            root = names.get(k >> 55)
            if root is None:  # this root code's name, from the first row of it asked
                root = names[k >> 55] = str(self.root[row])
            got = symbols[row] = _occ_of_key(root, k & _BELOW_ROOT)
        return got

    def listing_memo(self, name: str) -> dict:
        """A dict kept with the contracts this snapshot lists, for what a caller derives from them alone (``root``,
        ``expiry``, ``strike``, ``is_call``, ``key``, row numbers) and the snapshot's date -- never from quotes.

        Every snapshot a source builds from one listing on one day (a session's minutes of one chain request, and
        their subsets of the same rows) hands out the same dict for a ``name``; any other snapshot a new one. A
        strategy asked at every decision of a session keeps there what depends on the rows only (zero_dte: each
        (short, long) pair's description and OCC legs), computed at the first decision instead of each."""
        return self._static.setdefault(("listing_memo", name), {})

    @cached_property
    def _occ_symbols(self) -> dict:
        """OCC symbol of each row :meth:`occ_symbol` was asked (rows as asked: ints and numpy ints hash alike)."""
        return self._static.setdefault("occ", {})

    @cached_property
    def _root_names(self) -> dict[int, str]:
        """Root of each root code of :attr:`key` seen by :meth:`occ_symbol`."""
        return self._static.setdefault("root_names", {})

    def _one_root_code_zero(self) -> bool:
        """Every row's root code is 0 (one root: a subset of every row keeps the keys as they are)."""
        got = self._static.get("one_root_code_zero")
        if got is None:
            codes = self.key >> 55
            got = self._static["one_root_code_zero"] = bool(codes.size and codes.min() == codes.max() == 0)
        return got

    def _every_row(self) -> np.ndarray:
        """0, 1, ..., n - 1 (read-only)."""
        got = self._static.get("every_row")
        if got is None:
            got = self._static["every_row"] = np.arange(self.key.shape[0], dtype=np.int64)
            got.flags.writeable = False
        return got

    # ---------------------------------------------------------------- export
    def to_pandas(self) -> pd.DataFrame:
        """One row per contract with every column, plus mid and flags."""
        data = {name: getattr(self, name) for name in COLUMNS}
        data["mid"] = self.mid
        data["flags"] = self.flags
        df = pd.DataFrame(data)
        df.insert(0, "timestamp", self.timestamp)
        df.insert(1, "underlying", self.underlying)
        df.insert(2, "underlying_price", self.underlying_price)
        return df

    def subset(self, rows: Sequence[int] | np.ndarray) -> "ChainSnapshot":
        """A new snapshot with only ``rows`` (for storing what a decision looked at).

        The same snapshot :meth:`from_arrays` would build from those rows' columns, without
        validating again what this one validated: rows in key order, flags carried, keys
        re-coded for the roots the subset keeps.
        """
        rows = np.asarray(rows, dtype=np.int64)
        n = self.key.shape[0]
        if rows.size:
            if rows.size == n and rows.ndim == 1 and self._one_root_code_zero() and (rows == self._every_row()).all():
                return self  # every row in order, and the root codes would not change: this snapshot itself
            step = np.diff(rows)
            if np.any(step < 0):
                rows = rows[np.argsort(self.key[rows], kind="stable")]
        # the subset's listing (its contracts and keys) and what is derived from it alone: once for these rows of
        # this listing (a decision's slice of every snapshot of a session, in the listing's shared _static)
        static = self._static.setdefault(("subset", rows.tobytes()), {})
        listing = static.get("listing")
        if listing is None:
            listing = {name: getattr(self, name)[rows] for name in _LISTING_COLUMNS}
            key = self.key[rows]
            codes = key >> 55
            if codes.size and codes.min() == codes.max():  # one root (a decision's slice): code 0
                if codes[0] != 0:
                    key = key & ((1 << 55) - 1)
            else:
                kept = np.unique(codes)
                if kept.size and not np.array_equal(kept, np.arange(kept.size)):  # roots dropped: codes 0..k-1 again
                    key = (key & ((1 << 55) - 1)) | (np.searchsorted(kept, codes).astype(np.int64) << 55)
            listing["key"] = key
            for arr in listing.values():
                arr.flags.writeable = False
            static["listing"] = listing
        arrays = {name: getattr(self, name)[rows] for name in _QUOTE_COLUMNS}
        flags = self.flags[rows]
        for arr in (*arrays.values(), flags):
            arr.flags.writeable = False
        snap = ChainSnapshot(underlying=self.underlying, timestamp=self.timestamp,
                             underlying_price=self.underlying_price, flags=flags, **listing, **arrays)
        snap.__dict__["_static"] = static
        return snap


def _column(name: str, arr, dtype: np.dtype, shapes, n: int) -> np.ndarray:
    """A snapshot column of ``dtype`` (converted when it is not one), of one of ``shapes`` (a shape or a tuple of
    them) else ValueError."""
    if type(arr) is not np.ndarray or arr.dtype != dtype:
        arr = np.asarray(arr).astype(dtype, copy=False)
    if arr.shape != shapes and (type(shapes[0]) is not tuple or arr.shape not in shapes):
        raise ValueError(f"chain column '{name}' has length {arr.shape} but the layout has {n}")
    return arr


assert (QUOTE_NAN, QUOTE_ZERO_BID, QUOTE_ZERO_ASK, QUOTE_CROSSED, QUOTE_NEGATIVE_BID) == (1, 2, 4, 8, 16)

#: key bits above the strike field (root code, expiry, right) and below the root code
_ABOVE_STRIKE = ~((1 << 37) - 1)
#: snapshots up to this many rows look contract keys up in a Python list of them (:meth:`ChainSnapshot._key_row`)
_KEY_LIST_ROWS = 4096
_BELOW_ROOT = (1 << 55) - 1


def _occ_of_key(root: str, low: int) -> str:
    """The OCC symbol of a root and a contract key without its root code (expiry, right, strike x 1000):
    ``OptionContract.occ_symbol``'s text, through the same (cached) formatter."""
    from strikebench.options.contracts import _ROOT_WIDTH, _occ_body

    expiry = _EPOCH_DATE + dt.timedelta(days=low >> 38)
    return f"{root:<{_ROOT_WIDTH}}{_occ_body(expiry, 'C' if (low >> 37) & 1 else 'P', (low & ((1 << 37) - 1)) / 1000.0)}"


@functools.lru_cache(maxsize=1 << 14)
def _contract(root: str, expiry: dt.date, strike: float, call: bool):
    """One validated :class:`OptionContract` per contract (frozen: shared by every snapshot that lists it)."""
    from strikebench.options.contracts import OptionContract, Right

    return OptionContract(root=root, expiry=expiry, strike=strike, right=Right.CALL if call else Right.PUT)


def _floats(values) -> list[float]:
    """``values`` as a flat list of Python floats (float64 values: numbers, numpy scalars, nested sequences)."""
    return np.asarray(values, dtype=np.float64).reshape(-1).tolist()


def _is_call(right) -> bool:
    r = str(getattr(right, "value", right)).upper()
    if r in ("C", "CALL"):
        return True
    if r in ("P", "PUT"):
        return False
    raise ValueError(f"right must be 'C' or 'P', got {right!r}")


@dataclass(frozen=True, eq=False)
class LegQuotes:
    """Bid/ask of a few contracts for every minute of one session.

    ``times`` are the session's minute labels (int64 ns epochs, ascending);
    ``bid`` and ``ask`` have shape (len(times), len(contracts)). Marking an open
    position each bar is then an array lookup: ``mid[i]`` at bar ``i``.
    """

    contracts: tuple
    times: np.ndarray
    bid: np.ndarray
    ask: np.ndarray

    def __post_init__(self):
        # minute lookups compare these with Timestamp.value (ns): a microsecond index (pandas 3 gives one from
        # pd.date_range) would silently misread every minute, so it is refused here, where a source builds it
        if len(self.times):
            first = int(self.times[0])
            if not 10**17 < first < 10**19:  # ns epochs of 1973..2286
                raise ValueError(
                    f"LegQuotes.times must be int64 nanosecond epochs; the first minute is {first}, which is not "
                    "(microseconds? a pandas DatetimeIndex may be in 'us': pass index.as_unit('ns').asi8)")

    @cached_property
    def mid(self) -> np.ndarray:
        return (self.bid + self.ask) * 0.5

    def index_at(self, ts_ns: int) -> int:
        """Index of the last minute at or before ``ts_ns`` (clamped to the session)."""
        i = int(np.searchsorted(self.times, ts_ns, side="right")) - 1
        return min(max(i, 0), len(self.times) - 1)

