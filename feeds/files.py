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
           "check_chain_table", "check_bar_table", "CHAIN_OPTIONAL", "ROW_GROUP_ROWS",
           "write_chain_parquet", "marks_file", "MARKS_SCHEMA"]

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
#: rows per Parquet row group the layout's writers aim at, cut at snapshot boundaries: a real SPX minute
#: (~8,000-12,500 rows) is a group of its own, so a snapshot decodes exactly its minute; small chains put a
#: few minutes in a group
ROW_GROUP_ROWS = 8_192
#: rows per row group of a marks file (contract-major): ~20 contracts of a session at one-minute quotes
MARKS_ROW_GROUP_ROWS = 8_192
#: float columns of a chain file written BYTE_STREAM_SPLIT (quotes and greeks: ~30 % smaller than
#: dictionary/plain under zstd, and as fast to decode); the others dictionary encoded
_SPLIT_FLOATS = ("bid", "ask", "last", "iv", "delta", "gamma", "theta", "vega")


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


# ------------------------------------------------------------------------------------------ writing
def marks_file(root, underlying: str, day: dt.date) -> Path:
    """The optional contract-major copy of a Parquet chain file's quotes (see :func:`write_chain_parquet`)."""
    return Path(root) / "marks" / underlying.upper() / f"{day:%Y-%m-%d}.parquet"


MARKS_SCHEMA = pa.schema([
    ("expiry", pa.date32()),
    ("strike", pa.float64()),
    ("right", pa.string()),
    ("root", pa.string()),
    ("timestamp", pa.timestamp("ns", tz="UTC")),
    ("bid", pa.float64()),
    ("ask", pa.float64()),
])


def _b64(a: np.ndarray) -> str:
    import base64

    return base64.b64encode(np.ascontiguousarray(a, dtype="<i8").tobytes()).decode("ascii")


def _unb64(s: bytes) -> np.ndarray:
    import base64

    return np.frombuffer(base64.b64decode(s), dtype="<i8").astype(np.int64)


def write_chain_parquet(table: pa.Table, path, marks=None) -> None:
    """Write one chain file of the layout (rows sorted by timestamp) as Parquet, laid out for reading only
    what a decision needs (the ``files`` feed reads Parquet written any other way too, slower):

    * rows sorted by (timestamp, root, expiry, right, strike); row groups of whole snapshots of about
      :data:`ROW_GROUP_ROWS` rows, so a snapshot decodes one group of a few minutes, not the session;
    * the footer's key-value metadata holds the snapshot index (each timestamp and its row count) and the
      listed expiries, so opening a session reads no column;
    * ``marks``: a path for the contract-major copy of (expiry, strike, right, root, timestamp, bid, ask)
      (``marks/<UNDERLYING>/<DATE>.parquet``), row groups of a few dozen contracts, and in its footer the
      contract index (each contract's key and first row): the marks of a held contract read the one or
      two groups holding its rows. It names the chain file it was written with (an id, the rows and
      the byte size); the feed ignores a copy that does not match its chain file.
    """
    import uuid

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    n = len(table)
    ts = np.asarray(table.column("timestamp").to_numpy()).view(np.int64)
    if n:
        root = table.column("root").combine_chunks().dictionary_encode()
        rcode = np.argsort(np.argsort(np.array([r or "" for r in root.dictionary.to_pylist()], dtype=object)))[
            root.indices.to_numpy(zero_copy_only=False)]
        exp = table.column("expiry").to_numpy(zero_copy_only=False).astype("datetime64[D]").view(np.int64)
        right = table.column("right").combine_chunks().dictionary_encode()
        call = np.array([r == "C" for r in right.dictionary.to_pylist()] or [False], dtype=bool)[
            right.indices.to_numpy(zero_copy_only=False)]
        strike = table.column("strike").to_numpy(zero_copy_only=False)
        # rows already in the layout's order (the synthetic market's chains are) need no sort: checked on
        # one packed key per row (valid rows only; anything else takes the general sort)
        dts = np.diff(ts)
        in_order = bool(np.all(strike > 0) and np.all(strike < 1e9) and exp.min() >= 0 and np.all(dts >= 0))
        if in_order:
            key = (rcode.astype(np.int64) << 55) | (exp << 38) | (call.astype(np.int64) << 37) \
                | np.rint(strike * 1000).astype(np.int64)
            in_order = bool(np.all((dts > 0) | (np.diff(key) > 0)))
            del key
        if not in_order:
            order = np.lexsort((strike, call, exp, rcode, ts))
            table = table.take(pa.array(order))
            ts, rcode, exp, call, strike = ts[order], rcode[order], exp[order], call[order], strike[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ts)) + 1] if n else np.zeros(0, np.int64)
    times = ts[starts]
    expiries = sorted({str(e) for e in pc.unique(table.column("expiry")).to_pylist() if e is not None})
    write_id = uuid.uuid4().hex
    meta = dict(table.schema.metadata or {})
    meta.update({b"strikebench.write_id": write_id.encode(), b"strikebench.rows": str(n).encode(),
                 b"strikebench.snapshot_times": _b64(times).encode(),
                 b"strikebench.snapshot_rows": _b64(np.diff(np.r_[starts, n])).encode(),
                 b"strikebench.expiries": json.dumps(expiries).encode()})
    table = table.replace_schema_metadata(meta)
    cuts = starts[np.r_[0, np.flatnonzero(np.diff(starts // ROW_GROUP_ROWS)) + 1]] if n else np.zeros(1, np.int64)
    split = [f.name for f in table.schema if f.name in _SPLIT_FLOATS and pa.types.is_floating(f.type)]
    others = [f.name for f in table.schema if f.name not in split]
    with pq.ParquetWriter(path, table.schema, compression="zstd", use_byte_stream_split=split or False,
                          use_dictionary=others, write_statistics=others) as w:  # a smaller footer to open
        for a, b in zip(cuts, np.r_[cuts[1:], n]):
            w.write_table(table.slice(int(a), int(b - a)), row_group_size=max(int(b - a), 1))
    if marks is None:
        return
    # root and right dictionary encoded: reordering moves small integers, not strings (Parquet stores them
    # dictionary encoded either way; they read back as strings)
    m = pa.table([table.column(f.name).combine_chunks().dictionary_encode() if f.name in ("root", "right")
                  else table.column(f.name) for f in MARKS_SCHEMA], names=MARKS_SCHEMA.names)
    meta = {b"strikebench.chain_write_id": write_id.encode(), b"strikebench.chain_rows": str(n).encode(),
            b"strikebench.chain_bytes": str(os.path.getsize(path)).encode()}
    if n:  # contract-major: (expiry, strike, right, root), each contract's quotes in time order
        key = _marks_key(exp, strike, call, rcode)
        order = np.argsort(key, kind="stable")  # rows are in time order: each contract's stay so
        m = m.take(pa.array(order))
        # the contract index: one key per contract in the copy's order, and its first row
        key = key[order]
        first = np.r_[0, np.flatnonzero(np.diff(key)) + 1]
        roots = sorted({r or "" for r in root.dictionary.to_pylist()})
        meta.update({b"strikebench.marks_roots": json.dumps(roots).encode(),
                     b"strikebench.marks_keys": _b64(key[first]).encode(),
                     b"strikebench.marks_starts": _b64(np.r_[first, n]).encode()})
    Path(marks).parent.mkdir(parents=True, exist_ok=True)
    # the index is in the footer once (store_schema=False: not again inside the serialized Arrow schema)
    with pq.ParquetWriter(marks, m.schema, compression="zstd", store_schema=False, write_statistics=False,
                          use_dictionary=True) as w:
        w.write_table(m, row_group_size=MARKS_ROW_GROUP_ROWS)
        w.add_key_value_metadata(meta)


def _marks_key(exp_days, strike, call, root_rank) -> np.ndarray:
    """One int64 per contract, increasing in the marks copy's order (expiry, strike, right, root):
    expiry in days since 1970 (17 bits), strike in thousandths (40 bits), call (1 bit), root rank (6 bits)."""
    milli = np.rint(np.asarray(strike, dtype=np.float64) * 1000).astype(np.int64)
    return ((np.asarray(exp_days, dtype=np.int64) << 47) | (milli << 7)
            | (np.asarray(call, dtype=np.int64) << 6) | np.asarray(root_rank, dtype=np.int64))


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
            present = _parquet_columns(dataset.schema, schema, p, optional)
            table = dataset.to_table(columns=present)
    except DataError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as exc:
        if fmt == "csv" and isinstance(exc, pa.ArrowInvalid):
            where = _csv_bad_value(p, schema, str(exc))
            if where:
                raise DataError(f"{p}: {where}") from None
        raise DataError(f"{p}: {_arrow_message(exc)}") from None
    return _conform(table, schema, p)


def _conform(table: pa.Table, schema: pa.Schema, p: str) -> pa.Table:
    """``table`` (a subset of ``schema``'s columns, compatible types) as exactly ``schema``: absent
    columns all-null, every column cast."""
    names = [f.name for f in schema if f.name in table.column_names]
    if len(names) < len(schema):
        table = pa.table([table.column(f.name) if f.name in table.column_names else pa.nulls(len(table), f.type)
                          for f in schema], schema=pa.schema([f.with_type(table.schema.field(f.name).type)
                                                              if f.name in table.column_names else f for f in schema]))
    try:
        table = table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"{p}: {_arrow_message(exc)}") from None
    return table


def _parquet_columns(have: pa.Schema, schema: pa.Schema, p: str, optional: Sequence[str] = ()) -> list[str]:
    """The columns of ``schema`` a Parquet file with schema ``have`` holds; a missing required column or a
    column of an incompatible type is a one-line DataError."""
    missing = [f.name for f in schema if f.name not in have.names and f.name not in optional]
    if missing:
        raise DataError(f"{p}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                        f"(the file has {', '.join(have.names)})")
    for f in schema:
        if f.name in have.names and not _compatible(have.field(f.name).type, f.type):
            raise DataError(f"{p}: column '{f.name}' is {have.field(f.name).type}, expected {f.type}")
    return [f.name for f in schema if f.name in have.names]


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


def _sorted_timestamps(table: pa.Table, path, fmt: str, offset: int = 0) -> np.ndarray:
    """The table's timestamps (int64 ns), refused in one line at the first row out of order."""
    ts = np.asarray(table.column("timestamp").to_numpy()).view(np.int64)
    if ts.size > 1 and np.any(np.diff(ts) < 0):
        i = _first_bad(np.diff(ts) < 0) + 1
        raise DataError(f"{path}: {_row(i + offset, fmt)}: timestamps are not sorted ({pd.Timestamp(ts[i], tz='UTC')} "
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


def check_chain_table(table: pa.Table, path, fmt: str, offset: int = 0) -> None:
    """Timestamps sorted; no contract twice at one timestamp; rights 'C'/'P'; strikes and expiries present.

    ``offset``: the file row of the table's first row (a slice of a file), for the rows an error names."""
    ts = _sorted_timestamps(table, path, fmt, offset)
    enc = table.column("right").combine_chunks().dictionary_encode()
    values = enc.dictionary.to_pylist()
    codes = enc.indices.to_numpy(zero_copy_only=False)
    bad_code = np.array([v not in ("C", "P") for v in values] + [True], dtype=bool)  # last: a null
    bad = bad_code[np.where(enc.indices.is_null().to_numpy(zero_copy_only=False), len(values), codes)] \
        if enc.null_count else bad_code[codes]
    if np.any(bad):
        i = _first_bad(bad)
        raise DataError(f"{path}: {_row(i + offset, fmt)}: field 'right' is {table.column('right')[i].as_py()!r}, "
                        f"expected 'C' or 'P'")
    for c in ("strike", "underlying_price"):
        v = table.column(c).to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(v) | (v <= 0)
        if np.any(bad):
            i = _first_bad(bad)
            raise DataError(f"{path}: {_row(i + offset, fmt)}: field '{c}' is missing, zero or not a number")
    for c in ("expiry", "root", "underlying"):
        if table.column(c).null_count:
            i = _first_bad(table.column(c).is_null().to_numpy(zero_copy_only=False))
            raise DataError(f"{path}: {_row(i + offset, fmt)}: field '{c}' is empty")
    # duplicates: the same contract twice at one timestamp (rows are sorted by timestamp)
    if len(table) > 1:
        root = table.column("root").combine_chunks().dictionary_encode().indices.to_numpy(zero_copy_only=False)
        exp = table.column("expiry").to_numpy(zero_copy_only=False).astype("datetime64[D]", copy=False).view(np.int64)
        strike = np.rint(table.column("strike").to_numpy() * 1000).astype(np.int64)
        is_call = np.array([v == "C" for v in values], dtype=bool)[codes]
        key = (root.astype(np.int64) << 55) | (exp << 38) | (is_call.astype(np.int64) << 37) | strike
        same = np.diff(ts) == 0
        if np.all(~same | (np.diff(key) > 0)):  # the layout's order (by contract within a minute): none twice
            return
        # O(n): one cell per (timestamp, contract); a sort only to name the first duplicate when there is one
        t_idx = np.r_[0, np.cumsum(~same)]
        kcodes, uniq = pd.factorize(key)
        cells = (int(t_idx[-1]) + 1) * len(uniq)
        if cells <= 200_000_000 and np.bincount(t_idx * len(uniq) + kcodes, minlength=cells).max() <= 1:
            return
        order = np.lexsort((key, ts))
        same = (np.diff(ts[order]) == 0) & (np.diff(key[order]) == 0)
        if np.any(same):
            i = int(order[_first_bad(same) + 1])
            raise DataError(f"{path}: {_row(i + offset, fmt)}: duplicate row ({table.column('root')[i].as_py()} "
                            f"{table.column('expiry')[i].as_py()} {table.column('strike')[i].as_py():g}{values[codes[i]]} "
                            f"at {pd.Timestamp(ts[i], tz='UTC')})")


# ------------------------------------------------------------------------------------------ the market
_EMPTY_COLUMNS = {"root": np.empty(0, "U6"), "expiry": np.empty(0, "datetime64[D]"), "strike": np.empty(0),
                  "is_call": np.empty(0, bool), "bid": np.empty(0), "ask": np.empty(0), "last": np.empty(0),
                  "volume": np.empty(0, np.int64), "open_interest": np.empty(0, np.int64), "iv": np.empty(0),
                  "delta": np.empty(0), "gamma": np.empty(0), "theta": np.empty(0), "vega": np.empty(0)}
_SNAPSHOT_COLUMNS = ("root", "expiry", "strike", "is_call", "bid", "ask", "last", "volume", "open_interest",
                     "iv", "delta", "gamma", "theta", "vega")


def _columns(table: pa.Table) -> dict:
    """A chain table (CHAIN_SCHEMA) as the numpy columns a snapshot is built from."""
    n = len(table)
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
    return cols, root_code


def _key(contract) -> tuple:
    """How a session names a contract: (root, expiry, strike in thousandths, is_call)."""
    return (contract.root, contract.expiry, int(round(contract.strike * 1000)), bool(contract.is_call))


class _Session:
    """One underlying's chain on one session held whole, columnar (CSV files, Databento quotes);
    snapshots are slices of it."""

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
        cols, root_code = _columns(table)
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

    def snapshot_columns(self, k: int, want: np.ndarray | None) -> dict:
        """The columns of snapshot ``k`` (rows of expiries ``want`` only, when given), IV/greeks filled."""
        rows = np.arange(self.starts[k], self.starts[k + 1])
        if want is not None and rows.size:
            rows = rows[np.isin(self.cols["expiry"][rows], want)]
        _ensure_greeks(self, rows)
        c = self.cols
        return {name: c[name][rows] for name in _SNAPSHOT_COLUMNS}

    def quotes_of(self, keys: Sequence[tuple]) -> list:
        """For each contract key (see :func:`_key`): (timestamps, bid, ask) of its rows in time order, or None."""
        ids = np.array([self.index.get(k, -1) for k in keys], dtype=np.int64)
        out: list = [None] * len(keys)
        if np.all(ids < 0):
            return out
        sel = np.flatnonzero(np.isin(self.cid, ids[ids >= 0]))
        row_t = np.repeat(self.times, np.diff(self.starts))[sel] if sel.size else np.empty(0, np.int64)
        cid = self.cid[sel]
        for j, i in enumerate(ids):
            if i >= 0:
                mine = cid == i
                rows = sel[mine]
                out[j] = (row_t[mine], self.cols["bid"][rows], self.cols["ask"][rows])
        return out


class _ParquetSession:
    """One underlying's chain on one session in a Parquet file, read on demand (what a decision needs):

    * opening it reads the ``timestamp`` column only (run-length encoded in Arrow: the snapshot times and
      row ranges, checked sorted);
    * a snapshot decodes only the row groups holding its minute (every column; the layout's writers cut row
      groups at snapshot boundaries, :data:`ROW_GROUP_ROWS` rows, so that is one group of a few minutes);
    * the quotes of held contracts: the expiry and strike columns (numbers) find their rows, then root,
      right (dictionary indices, no strings), bid and ask are read once per session and taken at those rows;
    * the rows read are checked as the whole file was before (right, strike, price, empty fields, a
      contract twice at one timestamp), naming the file row; ``strikebench data check`` checks every row.
    """

    def __init__(self, path: Path, rate: float | None = None, div_yield: float | None = None, marks=None):
        import pyarrow.parquet as pq

        from strikebench.userfiles import check_file

        self.path = p = os.fspath(path)
        check_file(p, what="chain file", error=DataError)
        try:
            self.pf = pq.ParquetFile(p, memory_map=True)
            self.present = _parquet_columns(self.pf.schema_arrow, CHAIN_SCHEMA, p, CHAIN_OPTIONAL)
            meta = self.pf.metadata
            self.num_rows = meta.num_rows
            self.rg_starts = np.r_[0, np.cumsum([meta.row_group(i).num_rows for i in range(meta.num_row_groups)],
                                                 dtype=np.int64)]
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as exc:
            raise DataError(f"{p}: {_arrow_message(exc)}") from None
        self.rate, self.div_yield = rate, div_yield
        self.greeks_computed = 0
        self._price: dict[int, float] = {}
        self._groups: OrderedDict[int, pa.Table] = OrderedDict()  # decoded row groups, the last two
        self._exp = self._strike = self._legs = None  # the leg-quote columns, read once per session
        self._expiries = None
        self.marks_path, self._marks = marks, None
        # the snapshot index and the expiries from the footer (write_chain_parquet), when they are this file's
        md = self.pf.schema_arrow.metadata or {}
        self.write_id = None
        self.indexed = False
        if md.get(b"strikebench.rows") == str(self.num_rows).encode() and b"strikebench.snapshot_times" in md:
            times, counts = _unb64(md[b"strikebench.snapshot_times"]), _unb64(md[b"strikebench.snapshot_rows"])
            if (len(times) == len(counts) and int(counts.sum()) == self.num_rows and np.all(counts > 0)
                    and np.all(np.diff(times) > 0)):
                self.times, self.starts, self.indexed = times, np.r_[0, np.cumsum(counts)].astype(np.int64), True
                self.write_id = md.get(b"strikebench.write_id")
                try:
                    self._expiries = [dt.date.fromisoformat(e) for e in json.loads(md[b"strikebench.expiries"])]
                except (KeyError, ValueError, TypeError):
                    self._expiries = None
        if not self.indexed:
            self._index_from_column()

    def _index_from_column(self) -> None:
        """Snapshot times and row ranges from the timestamp column (run-length encoded), checked sorted."""
        import pyarrow.compute as pc

        p = self.path
        col = self._read("timestamp", lambda: self.pf.read(columns=["timestamp"], use_threads=False).column(0))
        col = self._read("timestamp", lambda: col.cast(CHAIN_SCHEMA.field("timestamp").type).combine_chunks())
        if col.null_count:
            i = _first_bad(col.is_null().to_numpy(zero_copy_only=False))
            raise DataError(f"{p}: {_row(i, 'parquet')}: field 'timestamp' is empty")
        if len(col):
            runs = pc.run_end_encode(col, run_end_type=pa.int64())
            times = np.asarray(runs.values.to_numpy()).view(np.int64)
            ends = runs.run_ends.to_numpy()
        else:
            times, ends = np.empty(0, np.int64), np.empty(0, np.int64)
        starts = np.r_[0, ends[:-1]].astype(np.int64) if len(ends) else ends
        if times.size > 1 and np.any(np.diff(times) < 0):  # a run per timestamp: sorted means increasing runs
            j = _first_bad(np.diff(times) < 0) + 1
            raise DataError(f"{p}: {_row(int(starts[j]), 'parquet')}: timestamps are not sorted "
                            f"({pd.Timestamp(int(times[j]), tz='UTC')} after {pd.Timestamp(int(times[j - 1]), tz='UTC')})")
        self.times = times
        self.starts = np.append(starts, len(col)).astype(np.int64)

    def _read(self, what: str, fn):
        try:
            return fn()
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as exc:
            raise DataError(f"{self.path}: {what}: {_arrow_message(exc)}") from None

    def _rows(self, a: int, b: int) -> pa.Table:
        """Rows [a, b) of the file, every column of CHAIN_SCHEMA."""
        g0 = int(np.searchsorted(self.rg_starts, a, side="right")) - 1
        g1 = int(np.searchsorted(self.rg_starts, b - 1, side="right")) - 1
        parts = []
        for g in range(g0, g1 + 1):
            t = self._groups.get(g)
            if t is None:
                t = self._read(f"row group {g}", lambda: self.pf.read_row_group(g, columns=self.present,
                                                                                 use_threads=False))
                t = _conform(t, CHAIN_SCHEMA, self.path)
                self._groups[g] = t
                while len(self._groups) > 2:
                    self._groups.popitem(last=False)
            else:
                self._groups.move_to_end(g)
            parts.append(t)
        t = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
        return t.slice(a - int(self.rg_starts[g0]), b - a)

    @property
    def price(self):
        """The underlying price of each snapshot, read from the snapshot's first row when asked."""
        return _LazyPrice(self)

    def _price_of(self, k: int) -> float:
        v = self._price.get(k)
        if v is None:
            a = int(self.starts[k])
            v = self._price[k] = float(_f64(self._rows(a, a + 1).column("underlying_price"))[0])
        return v

    def snapshot_columns(self, k: int, want: np.ndarray | None) -> dict:
        a, b = int(self.starts[k]), int(self.starts[k + 1])
        t = self._rows(a, b)
        check_chain_table(t, self.path, "parquet", offset=a)
        if self.indexed and len(t):
            got = np.asarray(t.column("timestamp").to_numpy()).view(np.int64)
            if got[0] != self.times[k] or got[-1] != self.times[k]:
                raise DataError(f"{self.path}: row {a}: the snapshot index in the file's metadata does not match "
                                f"its rows (the file was changed by another tool; rewrite it with "
                                f"`strikebench data convert`)")
        cols, _ = _columns(t)
        spot = _f64(t.column("underlying_price"))
        self._price[k] = float(spot[0])
        if want is not None and len(t):
            keep = np.isin(cols["expiry"], want)
            if not keep.all():
                cols = {name: v[keep] for name, v in cols.items()}
                spot = spot[keep]
        if self.rate is not None and not np.isfinite(cols["iv"]).all():
            from strikebench.feeds.greeks import fill_greeks

            self.greeks_computed += fill_greeks(cols, np.full(len(spot), self.times[k]), spot, self.rate,
                                                self.div_yield)
        return {name: cols[name] for name in _SNAPSHOT_COLUMNS}

    def _expiry_days(self) -> np.ndarray:
        if self._exp is None:
            col = self._read("expiry", lambda: self.pf.read(columns=["expiry"], use_threads=False)).column(0)
            if col.null_count:
                i = _first_bad(col.is_null().to_numpy(zero_copy_only=False))
                raise DataError(f"{self.path}: {_row(i, 'parquet')}: field 'expiry' is empty")
            self._exp = self._read("expiry", lambda: col.cast(pa.int32()).to_numpy())
        return self._exp

    @property
    def expiries(self) -> list[dt.date]:
        if self._expiries is None:
            days = pd.unique(self._expiry_days())
            self._expiries = [e.item() for e in np.sort(days).astype("datetime64[D]")]
        return self._expiries

    def _leg_table(self) -> pa.Table:
        """root, right (dictionary indices), bid, ask of every row: one read per session."""
        if self._legs is None:
            import pyarrow.parquet as pq

            def read():
                pf = pq.ParquetFile(self.path, memory_map=True, read_dictionary=["root", "right"])
                return pf.read(columns=["root", "right", "bid", "ask"], use_threads=False)

            self._legs = self._read("leg quotes", read)
        return self._legs

    def _marks_file(self):
        """This chain file's marks copy as (ParquetFile, contract index, first row of each row group), or False
        when there is none, it is not this file's (another write, rows or size) or it has no contract index
        (roots, keys, first rows: the footer's, written by :func:`write_chain_parquet`)."""
        if self._marks is None:
            self._marks = False
            mp = self.marks_path
            if mp is not None and self.write_id is not None and os.path.isfile(mp):
                import pyarrow.parquet as pq

                try:
                    pf = pq.ParquetFile(mp, memory_map=True)
                    md = pf.metadata.metadata or {}
                    ok = (md.get(b"strikebench.chain_write_id") == self.write_id
                          and md.get(b"strikebench.chain_rows") == str(self.num_rows).encode()
                          and md.get(b"strikebench.chain_bytes") == str(os.path.getsize(self.path)).encode()
                          and pf.metadata.num_rows == self.num_rows
                          and all(f.name in pf.schema_arrow.names for f in MARKS_SCHEMA))
                    if ok and b"strikebench.marks_keys" in md:
                        keys, starts = _unb64(md[b"strikebench.marks_keys"]), _unb64(md[b"strikebench.marks_starts"])
                        roots = json.loads(md[b"strikebench.marks_roots"])
                        if (len(starts) == len(keys) + 1 and starts[-1] == self.num_rows
                                and np.all(np.diff(keys) > 0) and np.all(np.diff(starts) > 0)):
                            ng = pf.metadata.num_row_groups
                            g_starts = np.r_[0, np.cumsum([pf.metadata.row_group(g).num_rows for g in range(ng)])]
                            self._marks = (pf, (keys, starts, {r: i for i, r in enumerate(roots)}), g_starts)
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError, TypeError,
                        ValueError) as exc:
                    log.warning("%s: not used (%s); reading the chain file", mp, _arrow_message(exc))
                    self._marks = False
        return self._marks

    def _quotes_from_marks(self, marks, keys: Sequence[tuple]) -> list | None:
        """The quotes of ``keys`` from the marks copy: each contract's rows found by the contract index, only
        the row groups holding them decoded, and checked to be that contract's. None when the chain file must
        be read instead (the copy unreadable, its index not matching its rows, or a contract twice at one
        time: the chain file's reading names that row)."""
        pf, (ikeys, istarts, rank), g_starts = marks
        out: list = [None] * len(keys)
        spans = []  # (key position, first row, end row) in the marks file
        for j, (r, e, m, call) in enumerate(keys):
            if r in rank:
                want = int(_marks_key((np.datetime64(e, "D") - np.datetime64(0, "D")).astype(np.int64), m / 1000,
                                      bool(call), rank[r]))
                i = int(np.searchsorted(ikeys, want))
                if i < len(ikeys) and ikeys[i] == want:
                    spans.append((j, int(istarts[i]), int(istarts[i + 1])))
        if not spans:
            return out
        groups = sorted({g for _, a, b in spans for g in range(int(np.searchsorted(g_starts, a, side="right")) - 1,
                                                                int(np.searchsorted(g_starts, b - 1, side="right")))})
        try:
            t = pf.read_row_groups(groups, use_threads=False)
            exp = t.column("expiry").cast(pa.int32()).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as exc:
            log.warning("%s: not used (%s); reading the chain file", self.marks_path, _arrow_message(exc))
            self._marks = False
            return None
        milli = np.rint(_f64(t.column("strike")) * 1000).astype(np.int64)
        ts = np.asarray(t.column("timestamp").to_numpy()).view(np.int64)
        bid, ask = _f64(t.column("bid")), _f64(t.column("ask"))
        root = np.asarray(t.column("root").to_numpy(zero_copy_only=False), dtype=object)
        right = np.asarray(t.column("right").to_numpy(zero_copy_only=False), dtype=object)
        # file row -> row of the table read (the groups read are consecutive runs of the file's groups)
        g_rows = np.diff(g_starts)[groups]
        row0 = dict(zip(groups, np.r_[0, np.cumsum(g_rows)[:-1]]))
        for j, a, b in spans:
            r, e, m, call = keys[j]
            g = int(np.searchsorted(g_starts, a, side="right")) - 1
            lo = int(row0[g] + a - g_starts[g])
            mine = slice(lo, lo + b - a)
            day = (np.datetime64(e, "D") - np.datetime64(0, "D")).astype(np.int64)
            if not (np.all(exp[mine] == day) and np.all(milli[mine] == m) and np.all(root[mine] == r)
                    and np.all(right[mine] == ("C" if call else "P"))):
                log.warning("%s: its contract index does not match its rows; reading the chain file", self.marks_path)
                self._marks = False
                return None
            if b - a > 1 and np.any(np.diff(ts[mine]) <= 0):
                return None  # a duplicate: the chain file's reading names its row
            out[j] = (ts[mine], bid[mine], ask[mine])
        return out

    def quotes_of(self, keys: Sequence[tuple]) -> list:
        marks = self._marks_file() if keys else False
        if marks:
            got = self._quotes_from_marks(marks, keys)
            if got is not None:
                return got
        out: list = [None] * len(keys)
        exp = self._expiry_days()
        want = np.array(sorted({(np.datetime64(k[1], "D") - np.datetime64(0, "D")).astype(np.int64) for k in keys}),
                        dtype=np.int32)
        cand = np.flatnonzero(np.isin(exp, want))
        if not cand.size:
            return out
        if self._strike is None:
            self._strike = _f64(self._read("strike", lambda: self.pf.read(columns=["strike"], use_threads=False)).column(0))
        strike = self._strike[cand]
        ok = np.isfinite(strike)
        milli = np.rint(np.where(ok, strike, 0) * 1000).astype(np.int64)
        hit = np.isin(milli, [k[2] for k in keys]) | ~ok
        cand, strike, milli = cand[hit], strike[hit], milli[hit]
        if not cand.size:
            return out
        sub = self._leg_table().take(pa.array(cand))
        # the checks of check_chain_table on the rows used (the others are data check's)
        root = np.asarray(sub.column("root").cast(pa.string()).to_numpy(zero_copy_only=False), dtype=object)
        right = np.asarray(sub.column("right").cast(pa.string()).to_numpy(zero_copy_only=False), dtype=object)
        bad_right, bad_root = ~np.isin(right, ["C", "P"]), np.array([r is None for r in root], dtype=bool)
        bad_strike = ~np.isfinite(strike) | (strike <= 0)
        if bad_right.any() or bad_root.any() or bad_strike.any():
            i = _first_bad(bad_right | bad_root | bad_strike)
            what = (f"field 'right' is {right[i]!r}, expected 'C' or 'P'" if bad_right[i]
                    else "field 'root' is empty" if bad_root[i] else "field 'strike' is missing, zero or not a number")
            raise DataError(f"{self.path}: {_row(int(cand[i]), 'parquet')}: {what}")
        sexp = exp[cand]
        row_t = self.times[np.searchsorted(self.starts, cand, side="right") - 1]
        bid, ask = _f64(sub.column("bid")), _f64(sub.column("ask"))
        for j, (r, e, m, call) in enumerate(keys):
            day = (np.datetime64(e, "D") - np.datetime64(0, "D")).astype(np.int64)
            mine = np.flatnonzero((root == r) & (sexp == day) & (milli == m) & (right == ("C" if call else "P")))
            if not mine.size:
                continue
            tt = row_t[mine]
            if tt.size > 1 and np.any(np.diff(tt) == 0):
                i = int(cand[mine[_first_bad(np.diff(tt) == 0) + 1]])
                raise DataError(f"{self.path}: {_row(i, 'parquet')}: duplicate row ({r} {e} {m / 1000:g}"
                                f"{'C' if call else 'P'} at {pd.Timestamp(int(self.times[np.searchsorted(self.starts, i, side='right') - 1]), tz='UTC')})")
            out[j] = (tt, bid[mine], ask[mine])
        return out

    @property
    def index(self) -> dict:
        """Every contract the file lists, as :func:`_key` (built on demand: the engine never needs it)."""
        t = self._leg_table()
        exp = self._expiry_days()
        if self._strike is None:
            self._strike = _f64(self.pf.read(columns=["strike"]).column(0))
        frame = pd.DataFrame({"root": t.column("root").cast(pa.string()).to_numpy(zero_copy_only=False),
                              "exp": exp.astype("datetime64[D]"), "m": np.rint(self._strike * 1000).astype(np.int64),
                              "right": t.column("right").cast(pa.string()).to_numpy(zero_copy_only=False)}
                             ).drop_duplicates()
        return {(str(r), pd.Timestamp(e).date(), int(m), ri == "C"): k
                for k, (r, e, m, ri) in enumerate(frame.itertuples(index=False))}


class _LazyPrice:
    """``session.price[k]`` of a :class:`_ParquetSession`: read from snapshot k's first row when asked."""

    __slots__ = ("s",)

    def __init__(self, s: _ParquetSession):
        self.s = s

    def __getitem__(self, k) -> float:
        return self.s._price_of(int(k))


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
            if self.fmt == "parquet":  # read on demand, what each snapshot / leg set needs
                s = _ParquetSession(p, self.rate.on(day), self.dividend_yield.on(day),
                                    marks=marks_file(self.root, underlying, day))
            else:  # CSV has no random access: the whole session, once
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
        want = None
        if expiries is not None:
            want = np.array([np.datetime64(pd.Timestamp(e).date(), "D") for e in expiries], dtype="datetime64[D]")
        if k < 0 or ns - s.times[k] > self.max_age_ns:
            cols = {name: v[:0] for name, v in _EMPTY_COLUMNS.items()}
            price = float("nan") if k < 0 else float(s.price[k])
            stamp = ts
        else:
            cols = s.snapshot_columns(k, want)
            price = float(s.price[k])
            stamp = pd.Timestamp(int(s.times[k]), tz="UTC").tz_convert(NY)
        return ChainSnapshot.from_arrays(und, stamp, price, **cols)

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
            for jj, got in zip(cols, s.quotes_of([_key(contracts[j]) for j in cols])):
                if got is None:
                    continue
                row_t, row_bid, row_ask = got
                p = np.searchsorted(times, row_t, side="right") - 1  # the bar whose start is at or before the row
                ok = p >= 0
                row_t, row_bid, row_ask, p = row_t[ok], row_bid[ok], row_ask[ok], p[ok]
                if row_t.size == 0:
                    continue
                last = np.full(n, -1, dtype=np.int64)
                last[p] = np.arange(row_t.size)
                last = np.maximum.accumulate(last)
                have = last >= 0
                r = np.where(have, last, 0)
                age = times - row_t[r]
                live = have & (age <= self._leg_carry_ns)
                bid[:, jj] = np.where(live, row_bid[r], np.nan)
                ask[:, jj] = np.where(live, row_ask[r], np.nan)
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
