"""The ``files`` data feed: backtest on option chains and bars stored as Parquet or CSV files.

    data: {source: files, path: data/spx/, format: parquet}      # or csv

The layout is the one ``strikebench market export`` writes (docs/data-files.md)::

    DIR/bars/<SYMBOL>.<ext>                     minute bars of one symbol (SPX, XSP, VIX, ...)
    DIR/chains/<UNDERLYING>/<YYYY-MM-DD>.<ext>  the chain snapshots of one underlying on one session
    DIR/settlements.<ext>                       optional: the prints that settle each expiry
    DIR/manifest.json                           optional: what wrote the files

Chains are partitioned by underlying and session and read lazily, one session at a time
(pyarrow datasets; a few sessions are cached), never the whole span. A session is held
columnar: a decision's snapshot is a slice of the session's arrays (the latest snapshot at or
before the bar, no older than ``max_quote_age_minutes``), and an open position's legs are read
once per session for every minute (quotes carried forward at most ``max_quote_age_minutes``,
NaN after that). Nothing is done per contract per bar.

Settlement: ``settlements.<ext>`` (underlying, expiry, style AM/PM, value) when it has the
expiry; otherwise the underlying's first open (AM) or last close (PM) of the expiry session,
recorded in :attr:`FileMarket.approximated_settlements` and logged as an approximation.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field, model_validator

from strikebench.api import DataFeed, PluginParams
from strikebench.calendar import NY
from strikebench.errors import DataError
from strikebench.hookspecs import hookimpl
from strikebench.options.chain import ChainSnapshot, LegQuotes

__all__ = ["FilesFeed", "FilesParams", "HistoricalFilesParams", "FileMarket", "BAR_SCHEMA", "CHAIN_SCHEMA", "SETTLEMENT_SCHEMA",
           "SCHEMA_VERSION", "FORMATS", "bars_file", "chain_file", "settlements_file", "read_table",
           "check_chain_table", "check_bar_table", "CHAIN_OPTIONAL"]

log = logging.getLogger(__name__)

#: Version 2: bars and chains partitioned by symbol / underlying and session, Parquet or CSV.
SCHEMA_VERSION = 2
FORMATS = ("parquet", "csv")

BAR_SCHEMA = pa.schema([
    ("timestamp", pa.timestamp("ns", tz="UTC")),
    ("symbol", pa.string()),
    ("open", pa.float64()),
    ("high", pa.float64()),
    ("low", pa.float64()),
    ("close", pa.float64()),
    ("volume", pa.float64()),
])

CHAIN_SCHEMA = pa.schema([
    ("timestamp", pa.timestamp("ns", tz="UTC")),
    ("underlying", pa.string()),
    ("underlying_price", pa.float64()),
    ("root", pa.string()),
    ("expiry", pa.date32()),
    ("strike", pa.float64()),
    ("right", pa.string()),
    ("bid", pa.float64()),
    ("ask", pa.float64()),
    ("last", pa.float64()),
    ("volume", pa.int64()),
    ("open_interest", pa.int64()),
    ("iv", pa.float64()),
    ("delta", pa.float64()),
    ("gamma", pa.float64()),
    ("theta", pa.float64()),
    ("vega", pa.float64()),
])

#: chain columns a file may leave out (real data often has bid/ask only): read as empty; an empty
#: ``iv`` is computed with its greeks from the quote mid (strikebench.feeds.greeks)
CHAIN_OPTIONAL = ("last", "volume", "open_interest", "iv", "delta", "gamma", "theta", "vega")

SETTLEMENT_SCHEMA = pa.schema([
    ("underlying", pa.string()),
    ("expiry", pa.date32()),
    ("style", pa.string()),
    ("value", pa.float64()),
])

_NS_MIN = 60_000_000_000
_SESSION_CACHE = 2


# ------------------------------------------------------------------------------------------ layout
def bars_file(root, symbol: str, fmt: str) -> Path:
    return Path(root) / "bars" / f"{symbol.upper()}.{fmt}"


def chain_file(root, underlying: str, day: dt.date, fmt: str) -> Path:
    return Path(root) / "chains" / underlying.upper() / f"{day:%Y-%m-%d}.{fmt}"


def settlements_file(root, fmt: str) -> Path:
    return Path(root) / f"settlements.{fmt}"


def _rel(path: Path, root) -> str:
    try:
        return os.fspath(Path(path).relative_to(root))
    except ValueError:
        return os.fspath(path)


# ------------------------------------------------------------------------------------------ reading
def read_table(path, schema: pa.Schema, fmt: str, *, what: str = "file", optional: Sequence[str] = ()) -> pa.Table:
    """Read one file of the layout into a table of exactly ``schema`` (column order and types).

    Columns named in ``optional`` may be absent: they are read as all-null.

    A missing column, a column of another type, a value that does not parse, an unreadable or
    truncated file: one-line :class:`DataError` naming the file (and the column / CSV row)."""
    import pyarrow.dataset as ds

    from strikebench.userfiles import check_file

    p = os.fspath(path)
    check_file(p, what=what, error=DataError)
    try:
        if fmt == "csv":
            import pyarrow.csv as pcsv

            # every column read as text first: the checks below name the column and row of a bad value
            header = _csv_header(p)
            missing = [f.name for f in schema if f.name not in header and f.name not in optional]
            if missing:
                raise DataError(f"{p}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                                f"(the file has {', '.join(header) or 'no header'})")
            present = [f.name for f in schema if f.name in header]
            opts = pcsv.ConvertOptions(column_types={f.name: f.type for f in schema if f.name in header},
                                       include_columns=present, strings_can_be_null=False)
            table = pcsv.read_csv(p, convert_options=opts)
        else:
            dataset = ds.dataset(p, format="parquet")
            have = dataset.schema
            missing = [f.name for f in schema if f.name not in have.names and f.name not in optional]
            if missing:
                raise DataError(f"{p}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                                f"(the file has {', '.join(have.names)})")
            present = [f.name for f in schema if f.name in have.names]
            for f in schema:
                if f.name not in have.names:
                    continue
                got = have.field(f.name).type
                if not _compatible(got, f.type):
                    raise DataError(f"{p}: column '{f.name}' is {got}, expected {f.type}")
            table = dataset.to_table(columns=present)
    except DataError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as exc:
        if fmt == "csv" and isinstance(exc, pa.ArrowInvalid):
            where = _csv_bad_value(p, schema, str(exc))
            if where:
                raise DataError(f"{p}: {where}") from None
        raise DataError(f"{p}: {_arrow_message(exc)}") from None
    if len(table.column_names) < len(schema):
        table = pa.table([table.column(f.name) if f.name in table.column_names else pa.nulls(len(table), f.type)
                          for f in schema], schema=pa.schema([f.with_type(table.schema.field(f.name).type)
                                                              if f.name in table.column_names else f for f in schema]))
    try:
        table = table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"{p}: {_arrow_message(exc)}") from None
    return table


def _compatible(got: pa.DataType, want: pa.DataType) -> bool:
    if got == want:
        return True
    if pa.types.is_timestamp(want):
        return pa.types.is_timestamp(got) and got.tz is not None
    if pa.types.is_string(want):
        return pa.types.is_string(got) or pa.types.is_large_string(got) or pa.types.is_dictionary(got)
    if pa.types.is_floating(want):
        return pa.types.is_floating(got) or pa.types.is_integer(got)
    if pa.types.is_integer(want):
        return pa.types.is_integer(got)
    if pa.types.is_date(want):
        return pa.types.is_date(got)
    return False


def _csv_header(path: str) -> list[str]:
    with open(path, "rb") as fh:
        first = fh.readline(64 * 1024)
    if b"\x00" in first:
        raise DataError(f"{path}: a binary file, expected CSV text")
    text = first.decode("utf-8-sig", errors="replace").strip()
    if not text:
        raise DataError(f"{path}: the file is empty")
    return [c.strip().strip('"') for c in text.split(",")]


def _csv_bad_value(path: str, schema: pa.Schema, message: str) -> str | None:
    """The line and field of the value pyarrow could not convert ("In CSV column #3: ... invalid value 'x'")."""
    import re

    import pyarrow.csv as pcsv

    m = re.search(r"CSV column #(\d+).*?error to (.+?): invalid value '(.*)'", message)
    if not m:
        return None
    header = _csv_header(path)
    k, typ, value = int(m.group(1)), m.group(2), m.group(3)
    if k >= len(header):
        return None
    name = header[k]
    try:
        text = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(
            column_types={h: pa.string() for h in header}, include_columns=[name]))
    except (pa.ArrowInvalid, OSError):
        return None
    col = text.column(name).to_numpy(zero_copy_only=False)
    hits = np.flatnonzero(col == value)
    if not hits.size:
        return None
    line = int(hits[0]) + 2
    if value == name:
        return f"line {line}: a header line in the middle of the file"
    return f"line {line}: field '{name}' is {value!r}, not a {typ}"


def _arrow_message(exc: Exception) -> str:
    msg = " ".join(str(exc).split())
    # pyarrow CSV: "In CSV column #3: Row #5: CSV conversion error to double: invalid value 'x'"
    return msg[:300]


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _row(i: int, fmt: str) -> str:
    """How a file row is named: CSV line numbers count the header (line 2 is the first row)."""
    return f"line {i + 2}" if fmt == "csv" else f"row {i}"


def _sorted_timestamps(table: pa.Table, path, fmt: str) -> np.ndarray:
    """The table's timestamps (int64 ns), refused in one line at the first row out of order."""
    ts = np.asarray(table.column("timestamp").to_numpy()).view(np.int64)
    if ts.size > 1 and np.any(np.diff(ts) < 0):
        i = _first_bad(np.diff(ts) < 0) + 1
        raise DataError(f"{path}: {_row(i, fmt)}: timestamps are not sorted ({pd.Timestamp(ts[i], tz='UTC')} "
                        f"after {pd.Timestamp(ts[i - 1], tz='UTC')})")
    return ts


def check_bar_table(table: pa.Table, path, fmt: str) -> None:
    """Timestamps strictly increasing (sorted, no duplicates), prices present."""
    ts = _sorted_timestamps(table, path, fmt)
    if ts.size > 1 and np.any(np.diff(ts) == 0):
        i = _first_bad(np.diff(ts) == 0) + 1
        raise DataError(f"{path}: {_row(i, fmt)}: duplicate bar at {pd.Timestamp(ts[i], tz='UTC')}")
    for c in ("open", "high", "low", "close"):
        v = table.column(c).to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(v)
        if np.any(bad):
            i = _first_bad(bad)
            raise DataError(f"{path}: {_row(i, fmt)}: field '{c}' is missing or not a number")


def check_chain_table(table: pa.Table, path, fmt: str) -> None:
    """Timestamps sorted; no contract twice at one timestamp; rights 'C'/'P'; strikes and expiries present."""
    ts = _sorted_timestamps(table, path, fmt)
    enc = table.column("right").combine_chunks().dictionary_encode()
    values = enc.dictionary.to_pylist()
    codes = enc.indices.to_numpy(zero_copy_only=False)
    bad_code = np.array([v not in ("C", "P") for v in values] + [True], dtype=bool)  # last: a null
    bad = bad_code[np.where(enc.indices.is_null().to_numpy(zero_copy_only=False), len(values), codes)] \
        if enc.null_count else bad_code[codes]
    if np.any(bad):
        i = _first_bad(bad)
        raise DataError(f"{path}: {_row(i, fmt)}: field 'right' is {table.column('right')[i].as_py()!r}, "
                        f"expected 'C' or 'P'")
    for c in ("strike", "underlying_price"):
        v = table.column(c).to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(v) | (v <= 0)
        if np.any(bad):
            i = _first_bad(bad)
            raise DataError(f"{path}: {_row(i, fmt)}: field '{c}' is missing, zero or not a number")
    for c in ("expiry", "root", "underlying"):
        if table.column(c).null_count:
            i = _first_bad(table.column(c).is_null().to_numpy(zero_copy_only=False))
            raise DataError(f"{path}: {_row(i, fmt)}: field '{c}' is empty")
    # duplicates: the same contract twice at one timestamp (rows are sorted by timestamp)
    if len(table) > 1:
        root = table.column("root").combine_chunks().dictionary_encode().indices.to_numpy(zero_copy_only=False)
        exp = table.column("expiry").to_numpy(zero_copy_only=False).astype("datetime64[D]", copy=False).view(np.int64)
        strike = np.rint(table.column("strike").to_numpy() * 1000).astype(np.int64)
        is_call = np.array([v == "C" for v in values], dtype=bool)[codes]
        key = (root.astype(np.int64) << 55) | (exp << 38) | (is_call.astype(np.int64) << 37) | strike
        # O(n): one cell per (timestamp, contract); a sort only to name the first duplicate when there is one
        t_idx = np.r_[0, np.cumsum(np.diff(ts) != 0)]
        kcodes, uniq = pd.factorize(key)
        cells = (int(t_idx[-1]) + 1) * len(uniq)
        if cells <= 200_000_000 and np.bincount(t_idx * len(uniq) + kcodes, minlength=cells).max() <= 1:
            return
        order = np.lexsort((key, ts))
        same = (np.diff(ts[order]) == 0) & (np.diff(key[order]) == 0)
        if np.any(same):
            i = int(order[_first_bad(same) + 1])
            raise DataError(f"{path}: {_row(i, fmt)}: duplicate row ({table.column('root')[i].as_py()} "
                            f"{table.column('expiry')[i].as_py()} {table.column('strike')[i].as_py():g}{values[codes[i]]} "
                            f"at {pd.Timestamp(ts[i], tz='UTC')})")


# ------------------------------------------------------------------------------------------ the market
class _Session:
    """One underlying's chain on one session, columnar; snapshots are slices of it."""

    __slots__ = ("times", "starts", "price", "cols", "cid", "expiries", "index", "greeks_computed", "_pending",
                 "_greeks_inputs")

    def __init__(self, table: pa.Table, rate: float | None = None, div_yield: float | None = None):
        # O(n) throughout (no sort of the session's rows: a real SPX session is ~3 M rows); no copy of a
        # column that is already float64
        ts = np.asarray(table.column("timestamp").to_numpy()).view(np.int64)
        n = len(ts)
        starts = np.flatnonzero(np.diff(ts)) + 1 if n else np.empty(0, np.int64)  # rows are sorted by timestamp
        starts = np.r_[0, starts] if n else starts
        self.times = ts[starts]
        self.starts = np.append(starts, n)
        spot = _f64(table.column("underlying_price"))
        self.price = spot[self.starts[:-1]] if n else np.empty(0)
        cols = {}
        root = table.column("root").combine_chunks().dictionary_encode()
        roots = np.array(root.dictionary.to_pylist(), dtype="U6")
        root_code = root.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        cols["root"] = roots[root_code] if n else np.empty(0, dtype="U6")
        right = table.column("right").combine_chunks().dictionary_encode()
        is_call_code = np.array([r == "C" for r in right.dictionary.to_pylist()], dtype=bool)
        cols["is_call"] = is_call_code[right.indices.to_numpy(zero_copy_only=False)] if n else np.empty(0, bool)
        cols["expiry"] = table.column("expiry").to_numpy(zero_copy_only=False).astype("datetime64[D]", copy=False)
        for name in ("strike", "bid", "ask", "last", "iv", "delta", "gamma", "theta", "vega"):
            cols[name] = _f64(table.column(name))
        for name in ("volume", "open_interest"):
            cols[name] = table.column(name).fill_null(0).to_numpy().astype(np.int64, copy=False)
        self.cols = cols
        #: rows whose IV and greeks the file lacked, computed so far (from the quote mid where it has one):
        #: a row's are computed when a snapshot first includes it (a decision reads a few thousand rows
        #: of a session's millions; leg quotes need no greeks)
        self.greeks_computed = 0
        self._pending = None
        if rate is not None and n:
            pending = ~np.isfinite(cols["iv"])
            if pending.any():
                self._pending = pending
                self._greeks_inputs = (ts, spot, rate, div_yield)
        # contract ids per row from one integer key: (root, expiry, right, strike in thousandths), hashed
        key = ((root_code << 55) | (cols["expiry"].view(np.int64) << 38) | (cols["is_call"].astype(np.int64) << 37)
               | np.rint(cols["strike"] * 1000).astype(np.int64))
        codes, ukeys = pd.factorize(key)
        self.cid = codes.astype(np.int64, copy=False)
        first = np.empty(len(ukeys), dtype=np.int64)
        first[self.cid[::-1]] = np.arange(n - 1, -1, -1)  # each contract's first row (the last write wins)
        self.index = {(str(cols["root"][i]), cols["expiry"][i].item(), int(np.rint(cols["strike"][i] * 1000)),
                       bool(cols["is_call"][i])): k for k, i in enumerate(first)}
        self.expiries = sorted({e.item() for e in pd.unique(cols["expiry"][first])})


def _f64(col) -> np.ndarray:
    """A float64 numpy view of a column (nulls as NaN), copied only when the type or chunks need it."""
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)


def _ensure_greeks(s: _Session, rows: np.ndarray) -> None:
    """Compute the IV and greeks the file lacked for these rows of a session, once."""
    if s._pending is None or not rows.size:
        return
    todo = rows[s._pending[rows]]
    if todo.size:
        from strikebench.feeds.greeks import fill_greeks

        ts, spot, rate, div_yield = s._greeks_inputs
        s.greeks_computed += fill_greeks(s.cols, ts, spot, rate, div_yield, rows=todo)
        s._pending[todo] = False


class FileMarket:
    """A :class:`~strikebench.options.source.MarketData` over the files layout (see module docstring)."""

    def __init__(self, path, fmt: str = "parquet", max_quote_age_minutes: int = 15,
                 start: dt.date | None = None, end: dt.date | None = None, *, rate=0.045, dividend_yield=0.015):
        from strikebench.feeds.greeks import DailyValue
        from strikebench.userfiles import check_dir

        if fmt not in FORMATS:
            raise DataError(f"unknown data format '{fmt}' (use {' or '.join(FORMATS)})")
        self.root = Path(path)
        self.fmt = fmt
        self.max_age_ns = int(max_quote_age_minutes) * _NS_MIN
        #: how long leg_quotes carries a contract's last row forward (the databento feed's rows already carry)
        self._leg_carry_ns = self.max_age_ns
        self.start, self.end = start, end
        #: rate and dividend yield for the IV and greeks of rows that lack them (constant or daily file)
        self.rate = rate if isinstance(rate, DailyValue) else DailyValue(rate, key="data.rate")
        self.dividend_yield = (dividend_yield if isinstance(dividend_yield, DailyValue)
                               else DailyValue(dividend_yield, key="data.dividend_yield"))
        check_dir(self.root, what="data folder", key="data.path", error=DataError)
        self.manifest = self._read_manifest()
        bars_dir = self.root / "bars"
        check_dir(bars_dir, what="bars folder", error=DataError)
        self.symbols = sorted(p.name[: -len(fmt) - 1].upper() for p in bars_dir.iterdir()
                              if p.name.endswith("." + fmt) and p.is_file())
        if not self.symbols:
            others = sorted({p.suffix for p in bars_dir.iterdir() if p.is_file()})
            hint = f" (it has {', '.join(others)} files: is data.format right?)" if others else ""
            raise DataError(f"{bars_dir}: no bars files '<SYMBOL>.{fmt}'{hint}")
        chains_dir = self.root / "chains"
        check_dir(chains_dir, what="chains folder", error=DataError)
        self.underlyings = sorted(p.name.upper() for p in chains_dir.iterdir() if p.is_dir())
        self._bars: dict[str, pd.DataFrame] = {}
        self._sessions_cache: OrderedDict[tuple[str, dt.date], _Session] = OrderedDict()
        self._settlements: dict[tuple[str, dt.date, str], float] | None = None
        self._settlements_path: Path | None = settlements_file(self.root, fmt)
        #: contracts settled on an approximation (no settlement print in the files): contract -> description
        self.approximated_settlements: dict = {}
        primary = "SPX" if "SPX" in self.symbols else self.symbols[0]
        self._primary = primary
        self._session_days = pd.DatetimeIndex(np.unique(self.bars(primary).index.tz_localize(None).normalize()))
        if len(self._session_days) == 0:
            span = f" from {start or 'the first'} to {end or 'the last'} session" if start or end else ""
            raise DataError(f"{bars_file(self.root, primary, fmt)}: no bars{span}")
        # every session needs every underlying's chain file: a gap fails before a run starts, not midway
        for und in self.underlyings:
            for day in self._session_days:
                p = chain_file(self.root, und, day.date(), fmt)
                if not p.is_file():
                    raise DataError(f"{self.root}: no {und} chain for session {day.date()} "
                                    f"(expected {_rel(p, self.root)}; set data.start/data.end to the sessions "
                                    f"the files cover)")

    def __repr__(self) -> str:
        return f"FileMarket('{self.root}', format='{self.fmt}')"

    def _read_manifest(self) -> dict:
        p = self.root / "manifest.json"
        if not p.exists():
            return {}
        from strikebench.userfiles import read_text

        text = read_text(p, what="manifest", error=DataError)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{p}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
        if not isinstance(data, dict):
            raise DataError(f"{p}: expected a JSON object")
        version = data.get("schema_version")
        if version is not None and version != SCHEMA_VERSION:
            raise DataError(f"{p}: schema_version {version}; this strikebench reads version {SCHEMA_VERSION} "
                            f"(re-export with `strikebench market export`)")
        fmt = data.get("format")
        if fmt is not None and fmt != self.fmt:
            raise DataError(f"{p}: the files are {fmt}, but data.format is '{self.fmt}'")
        return data

    # ------------------------------------------------------------------ bars
    def sessions(self) -> pd.DatetimeIndex:
        """Sessions the primary symbol (SPX when present) has bars for (naive dates)."""
        return self._session_days

    def bars(self, symbol: str) -> pd.DataFrame:
        symbol = symbol.upper()
        got = self._bars.get(symbol)
        if got is None:
            p = bars_file(self.root, symbol, self.fmt)
            if not p.exists():
                raise DataError(f"{self.root}: no bars for '{symbol}' (expected {_rel(p, self.root)}; "
                                f"the folder has {', '.join(self.symbols)})")
            table = read_table(p, BAR_SCHEMA, self.fmt, what="bars file")
            check_bar_table(table, p, self.fmt)
            idx = pd.DatetimeIndex(table.column("timestamp").to_numpy().astype("datetime64[ns]")).tz_localize("UTC")
            got = pd.DataFrame({c: table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                                for c in ("open", "high", "low", "close", "volume")},
                               index=idx.tz_convert(NY))
            got.index.name = "timestamp"
            if self.start is not None or self.end is not None:
                days = got.index.tz_localize(None).normalize()
                keep = np.ones(len(got), dtype=bool)
                if self.start is not None:
                    keep &= days >= pd.Timestamp(self.start)
                if self.end is not None:
                    keep &= days <= pd.Timestamp(self.end)
                got = got[keep]
            self._bars[symbol] = got
        return got

    def _day_grid(self, symbol: str, day: dt.date) -> np.ndarray:
        b = self.bars(symbol)
        ns = b.index.asi8
        lo = pd.Timestamp(day).tz_localize(NY).value
        hi = pd.Timestamp(day + dt.timedelta(days=1)).tz_localize(NY).value
        i, j = np.searchsorted(ns, [lo, hi])
        return ns[i:j]

    # ------------------------------------------------------------------ chains
    def _session(self, underlying: str, day: dt.date) -> _Session:
        key = (underlying, day)
        s = self._sessions_cache.get(key)
        if s is None:
            p = chain_file(self.root, underlying, day, self.fmt)
            if not p.exists():
                raise DataError(f"{self.root}: no {underlying} chain for session {day} "
                                f"(expected {_rel(p, self.root)})")
            while len(self._sessions_cache) >= _SESSION_CACHE:  # evict before reading: a lower peak
                self._sessions_cache.popitem(last=False)
            table = read_table(p, CHAIN_SCHEMA, self.fmt, what="chain file", optional=CHAIN_OPTIONAL)
            check_chain_table(table, p, self.fmt)
            s = _Session(table, self.rate.on(day), self.dividend_yield.on(day))
            del table
            self._sessions_cache[key] = s
        else:
            self._sessions_cache.move_to_end(key)
        return s

    def _has_chain(self, underlying: str, day: dt.date) -> bool:
        return chain_file(self.root, underlying, day, self.fmt).exists()

    def listed_expiries(self, underlying: str, day) -> list[dt.date]:
        """The expiries the session's chain file lists."""
        return list(self._session(underlying.upper(), pd.Timestamp(day).date()).expiries)

    def snapshot(self, underlying: str, at, expiries: Sequence[dt.date] | None = None) -> ChainSnapshot:
        """The latest snapshot of ``underlying`` at or before the bar labelled ``at`` on that session
        (no older than ``max_quote_age_minutes``; empty if there is none)."""
        und = underlying.upper()
        ts = pd.Timestamp(at)
        if ts.tzinfo is None:
            ts = ts.tz_localize(NY)
        ts = ts.tz_convert(NY)
        ns = ts.value - ts.value % _NS_MIN
        s = self._session(und, ts.date())
        k = int(np.searchsorted(s.times, ns, side="right")) - 1
        if k < 0 or ns - s.times[k] > self.max_age_ns:
            rows = np.empty(0, dtype=np.int64)
            price = float("nan") if k < 0 else float(s.price[k])
            stamp = ts
        else:
            rows = np.arange(s.starts[k], s.starts[k + 1])
            price = float(s.price[k])
            stamp = pd.Timestamp(int(s.times[k]), tz="UTC").tz_convert(NY)
        c = s.cols
        if expiries is not None and rows.size:
            want = np.array([np.datetime64(pd.Timestamp(e).date(), "D") for e in expiries])
            rows = rows[np.isin(c["expiry"][rows], want)]
        _ensure_greeks(s, rows)
        c = s.cols
        return ChainSnapshot.from_arrays(
            und, stamp, price, **{name: c[name][rows] for name in (
                "root", "expiry", "strike", "is_call", "bid", "ask", "last", "volume", "open_interest",
                "iv", "delta", "gamma", "theta", "vega")})

    def leg_quotes(self, contracts: Sequence, day) -> LegQuotes:
        """Bid/ask of ``contracts`` at every bar of session ``day`` (the bars of the first contract's
        underlying): each minute's quote, or the latest one before it no older than
        ``max_quote_age_minutes``; NaN where there is none."""
        contracts = tuple(contracts)
        day = pd.Timestamp(day).date()
        grid_symbol = contracts[0].underlying if contracts else self._primary
        times = self._day_grid(grid_symbol, day)
        n = len(times)
        bid = np.full((n, len(contracts)), np.nan)
        ask = np.full((n, len(contracts)), np.nan)
        by_und: dict[str, list[int]] = {}
        for j, c in enumerate(contracts):
            by_und.setdefault(c.underlying, []).append(j)
        for und, cols in by_und.items():
            if not self._has_chain(und, day):
                continue  # nothing listed that day: NaN (the engine marks from the last quote it had)
            s = self._session(und, day)
            ids = np.array([s.index.get((contracts[j].root, contracts[j].expiry, int(round(contracts[j].strike * 1000)),
                                         bool(contracts[j].is_call)), -1) for j in cols], dtype=np.int64)
            if np.all(ids < 0):
                continue
            sel = np.flatnonzero(np.isin(s.cid, ids[ids >= 0]))
            row_t = np.repeat(s.times, np.diff(s.starts))[sel] if sel.size else np.empty(0, np.int64)
            pos = np.searchsorted(times, row_t, side="right") - 1  # the bar whose start is at or before the row
            for jj, cid in zip(cols, ids):
                if cid < 0:
                    continue
                mine = s.cid[sel] == cid
                rows, p = sel[mine], pos[mine]
                ok = p >= 0
                rows, p = rows[ok], p[ok]
                if rows.size == 0:
                    continue
                last = np.full(n, -1, dtype=np.int64)
                last[p] = np.arange(rows.size)
                last = np.maximum.accumulate(last)
                have = last >= 0
                r = rows[np.where(have, last, 0)]
                age = times - row_t[mine][ok][np.where(have, last, 0)]
                live = have & (age <= self._leg_carry_ns)
                bid[:, jj] = np.where(live, s.cols["bid"][r], np.nan)
                ask[:, jj] = np.where(live, s.cols["ask"][r], np.nan)
        return LegQuotes(contracts=contracts, times=times.copy(), bid=bid, ask=ask)

    # ------------------------------------------------------------------ settlement
    def _settlement_table(self) -> dict:
        if self._settlements is None:
            out: dict = {}
            p = self._settlements_path
            if p is not None and p.exists():
                t = read_table(p, SETTLEMENT_SCHEMA, self.fmt, what="settlements file")
                und = t.column("underlying").to_numpy(zero_copy_only=False)
                exp = t.column("expiry").to_pylist()
                style = t.column("style").to_numpy(zero_copy_only=False)
                val = t.column("value").to_numpy(zero_copy_only=False).astype(np.float64)
                for i in range(len(t)):
                    if style[i] not in ("AM", "PM"):
                        raise DataError(f"{p}: {_row(i, self.fmt)}: field 'style' is {style[i]!r}, expected AM or PM")
                    if not np.isfinite(val[i]) or val[i] <= 0:
                        raise DataError(f"{p}: {_row(i, self.fmt)}: field 'value' is missing, zero or not a number")
                    out[(str(und[i]).upper(), exp[i], style[i])] = float(val[i])
            self._settlements = out
        return self._settlements

    def settlement_note(self, contract) -> str | None:
        """Why ``contract``'s settlement value is not a real print (None when it is one); the engine
        writes it to the journal's ``trades.settlement_note``."""
        return self.approximated_settlements.get(contract)

    def settlement_value(self, contract) -> float:
        """The print that settles ``contract``: from settlements.<ext> when it lists the expiry, else
        the underlying's first open (AM) / last close (PM) of the expiry session (an approximation,
        recorded in :attr:`approximated_settlements`)."""
        style = str(getattr(contract.settlement_style, "value", contract.settlement_style))
        und = contract.underlying
        v = self._settlement_table().get((und, contract.expiry, style))
        if v is not None:
            return v
        b = self.bars(und)
        ns = self._day_grid(und, contract.expiry)
        if ns.size == 0:
            raise DataError(f"{self.root}: no settlement value for {contract} and no {und} bars on "
                            f"{contract.expiry} to approximate it from")
        i = int(np.searchsorted(b.index.asi8, ns[0]))
        value = float(b["open"].iloc[i]) if style == "AM" else float(b["close"].iloc[i + len(ns) - 1])
        what = "opening print" if style == "AM" else "closing print"
        self.approximated_settlements[contract] = f"{und} {what} {value:g} on {contract.expiry} (no settlement file entry)"
        log.warning("settlement of %s approximated by the %s %s %g", contract, und, what, value)
        return value


# ------------------------------------------------------------------------------------------ the plugin
class HistoricalFilesParams(PluginParams):
    """What every feed of historical files takes (files, databento): the folder, quote age, span, rate inputs."""

    path: str = Field(..., min_length=1, description="folder of the market's files")
    max_quote_age_minutes: int = Field(15, ge=0, le=390,
                                       description="a quote older than this many minutes counts as missing")
    start: dt.date | None = Field(None, description="first session to run (default: the first the bars have)")
    end: dt.date | None = Field(None, description="last session to run (default: the last the bars have)")
    rate: float | str = Field(0.045, description="risk-free rate for IV/greeks the files lack: a decimal (0.045), "
                                                 "or a CSV/Parquet file of daily values (columns date, value)")
    dividend_yield: float | str = Field(0.015, description="dividend yield for IV/greeks the files lack: a decimal, "
                                                           "or a file of daily values (columns date, value)")

    @model_validator(mode="after")
    def _ordered(self):
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


class FilesParams(HistoricalFilesParams):
    path: str = Field(..., min_length=1, description="folder of the files layout (bars/, chains/, settlements.*)")
    format: Literal["parquet", "csv"] = Field("parquet", description="file format of the layout")


class FilesFeed(DataFeed):
    """Historical bars and option chains from Parquet or CSV files (the `market export` layout)."""

    name = "files"
    Params = FilesParams

    def open(self):
        p = self.params
        return FileMarket(p.path, p.format, p.max_quote_age_minutes, start=p.start, end=p.end,
                          rate=p.rate, dividend_yield=p.dividend_yield)


@hookimpl
def register_feeds(register):
    register(FilesFeed)
