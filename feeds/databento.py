"""The ``databento`` data feed: backtest on Databento OPRA files as downloaded (DBN, zstd or plain).

    data: {source: databento, path: data/opra/, max_quote_age_minutes: 15}

The folder holds (file names are free; each file's DBN metadata says what it is)::

    *.dbn.zst / *.dbn      definition   OPRA instrument definitions (raw_symbol = the OCC symbol)
    *.dbn.zst / *.dbn      cbbo-1m | tbbo | mbp-1   OPRA quotes (one of the three for the folder)
    *.dbn.zst / *.dbn      ohlcv-1m     the underlying's minute bars (one symbol per file), or
    bars/<SYMBOL>.parquet|csv           the underlying's bars in the files layout (docs/data-files.md)
    settlements.parquet|csv             optional settlement prints (as in the files layout)

Decoding: the DBN header and metadata with ``databento_dbn.Metadata``, the definitions with
``databento_dbn.DBNDecoder``; quote and bar records (fixed-size) are read as numpy structured
arrays over the decompressed bytes (zstd through pyarrow), millions of records a second.

Joining: a quote's ``instrument_id`` maps to the latest definition at or before the session's
close; root, expiry, right and strike come from parsing the definition's OCC ``raw_symbol``
(a symbol that does not parse is a one-line error naming the file and record).

Resampling to the engine's minute grid: each bar (labelled by its start ``t``) sees, for every
contract, the last quote with ``ts_recv <= t + 1 min`` (as of the bar's close). A contract whose
last quote is older than ``max_quote_age_minutes`` at the bar's close is *stale*: it is left out
of that minute's snapshot and its leg quote is NaN (the engine keeps the leg's last mark and
fills nothing on it); ``DatabentoMarket.stale_rows`` counts them per session. One-sided quotes
(no bid: ``UNDEF_PRICE``) keep bid 0; no ask is NaN. IV and greeks are computed from the mid
(:mod:`strikebench.feeds.greeks`) with ``rate`` / ``dividend_yield``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from strikebench.api import DataFeed
from strikebench.calendar import NY
from strikebench.errors import DataError
from strikebench.feeds.files import (_SESSION_CACHE, BAR_SCHEMA, CHAIN_SCHEMA, FORMATS, FileMarket, HistoricalFilesParams,
                                     _Session, bars_file, check_bar_table, read_table)
from strikebench.hookspecs import hookimpl

__all__ = ["DatabentoFeed", "DatabentoParams", "DatabentoMarket", "read_dbn", "dbn_schema",
           "QUOTE_SCHEMAS", "CBBO_DTYPE", "MBP1_DTYPE", "OHLCV_DTYPE", "read_definitions", "read_quotes",
           "read_ohlcv", "PRICE_SCALE"]

log = logging.getLogger(__name__)

PRICE_SCALE = 1_000_000_000  # DBN fixed-point prices: 1e-9 units
UNDEF_PRICE = np.iinfo(np.int64).max
_NS_MIN = 60_000_000_000
QUOTE_SCHEMAS = ("cbbo-1m", "tbbo", "mbp-1")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_HEADER = [("length", "u1"), ("rtype", "u1"), ("publisher_id", "<u2"), ("instrument_id", "<u4"), ("ts_event", "<u8")]
#: CbboMsg (cbbo-1m, cbbo-1s): 80 bytes
CBBO_DTYPE = np.dtype(_HEADER + [("price", "<i8"), ("size", "<u4"), ("flags", "u1"), ("side", "u1"), ("_r0", "u2"),
                                 ("ts_recv", "<u8"), ("_r1", "<u8"), ("bid_px", "<i8"), ("ask_px", "<i8"),
                                 ("bid_sz", "<u4"), ("ask_sz", "<u4"), ("bid_pb", "<u4"), ("ask_pb", "<u4")])
#: Mbp1Msg (mbp-1, tbbo): 80 bytes
MBP1_DTYPE = np.dtype(_HEADER + [("price", "<i8"), ("size", "<u4"), ("action", "u1"), ("side", "u1"), ("flags", "u1"),
                                 ("depth", "u1"), ("ts_recv", "<u8"), ("ts_in_delta", "<i4"), ("sequence", "<u4"),
                                 ("bid_px", "<i8"), ("ask_px", "<i8"), ("bid_sz", "<u4"), ("ask_sz", "<u4"),
                                 ("bid_ct", "<u4"), ("ask_ct", "<u4")])
#: OhlcvMsg (ohlcv-1m): 56 bytes
OHLCV_DTYPE = np.dtype(_HEADER + [("open", "<i8"), ("high", "<i8"), ("low", "<i8"), ("close", "<i8"),
                                  ("volume", "<u8")])
_LAYOUT = {"cbbo-1m": (CBBO_DTYPE, 0xC1), "tbbo": (MBP1_DTYPE, 0x01), "mbp-1": (MBP1_DTYPE, 0x01),
           "ohlcv-1m": (OHLCV_DTYPE, 0x21)}


# ------------------------------------------------------------------------------------------ DBN bytes
def _raw_bytes(path: Path, limit: int | None = None) -> bytes:
    """The file's DBN bytes: zstd decompressed (pyarrow's codec) when it starts with the zstd magic."""
    from strikebench.userfiles import check_file

    check_file(os.fspath(path), what="DBN file", error=DataError)
    with open(path, "rb") as fh:
        magic = fh.read(4)
    try:
        if magic == _ZSTD_MAGIC:
            with pa.CompressedInputStream(pa.OSFile(os.fspath(path)), "zstd") as s:
                return s.read(limit) if limit else s.read()
        with open(path, "rb") as fh:
            return fh.read(limit) if limit else fh.read()
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: not a readable zstd stream ({' '.join(str(exc).split())[:160]}): "
                        f"truncated or damaged download?") from None


def _metadata(path: Path, raw: bytes):
    import databento_dbn as dbn

    if len(raw) < 8 or raw[:3] != b"DBN":
        raise DataError(f"{path}: not a DBN file (no DBN header)")
    n = int.from_bytes(raw[4:8], "little")
    if len(raw) < 8 + n:
        raise DataError(f"{path}: truncated DBN metadata ({len(raw) - 8} of {n} bytes)")
    try:
        meta = dbn.Metadata.decode(bytes(raw[: 8 + n]))
    except Exception as exc:  # noqa: BLE001 - the decoder's own error, in one line
        raise DataError(f"{path}: bad DBN metadata ({' '.join(str(exc).split())[:160]})") from None
    return meta, 8 + n


def dbn_schema(path) -> str:
    """The schema a DBN file's metadata declares ('cbbo-1m', 'definition', ...), reading only its header."""
    p = Path(path)
    raw = _raw_bytes(p, 64 * 1024)
    meta, _ = _metadata(p, raw)
    return str(getattr(meta.schema, "value", meta.schema)) if meta.schema is not None else "mixed"


def read_dbn(path):
    """(metadata, record bytes) of a DBN file, zstd or plain."""
    p = Path(path)
    raw = _raw_bytes(p)
    meta, off = _metadata(p, raw)
    return meta, memoryview(raw)[off:]


def _records(path: Path, body, schema: str) -> np.ndarray:
    dtype, rtype = _LAYOUT[schema]
    n, rest = divmod(len(body), dtype.itemsize)
    if rest:
        raise DataError(f"{path}: truncated DBN file: {rest} bytes after record {n - 1} (a record of {schema} "
                        f"is {dtype.itemsize} bytes)")
    rec = np.frombuffer(body, dtype=dtype, count=n)
    bad = (rec["length"] != dtype.itemsize // 4) | (rec["rtype"] != rtype)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: record {i}: rtype 0x{int(rec['rtype'][i]):02x} / {int(rec['length'][i]) * 4} bytes "
                        f"in a {schema} file (expected 0x{rtype:02x} / {dtype.itemsize} bytes)")
    ts = rec["ts_event"] if schema == "ohlcv-1m" else rec["ts_recv"]
    if n > 1 and np.any(np.diff(ts.astype(np.int64)) < 0):
        i = int(np.flatnonzero(np.diff(ts.astype(np.int64)) < 0)[0]) + 1
        raise DataError(f"{path}: record {i}: timestamps are not sorted ({pd.Timestamp(int(ts[i]), tz='UTC')} "
                        f"after {pd.Timestamp(int(ts[i - 1]), tz='UTC')})")
    return rec


def _prices(px: np.ndarray) -> np.ndarray:
    out = px.astype(np.float64) / PRICE_SCALE
    out[px == UNDEF_PRICE] = np.nan
    return out


def read_quotes(path) -> dict:
    """instrument_id, ts_recv (ns), bid, ask of a cbbo-1m / tbbo / mbp-1 file (no bid: 0; no ask: NaN)."""
    p = Path(path)
    meta, body = read_dbn(p)
    schema = str(getattr(meta.schema, "value", meta.schema))
    if schema not in QUOTE_SCHEMAS:
        raise DataError(f"{p}: a {schema} file, expected quotes ({', '.join(QUOTE_SCHEMAS)})")
    rec = _records(p, body, schema)
    bid = _prices(rec["bid_px"])
    bid[np.isnan(bid)] = 0.0
    return {"instrument_id": rec["instrument_id"].astype(np.int64), "ts": rec["ts_recv"].astype(np.int64),
            "bid": bid, "ask": _prices(rec["ask_px"])}


def read_ohlcv(path) -> tuple[str, pd.DataFrame]:
    """(symbol, minute bars indexed by bar start in New York time) of an ohlcv-1m file of one symbol."""
    p = Path(path)
    meta, body = read_dbn(p)
    schema = str(getattr(meta.schema, "value", meta.schema))
    if schema != "ohlcv-1m":
        raise DataError(f"{p}: a {schema} file, expected ohlcv-1m")
    symbols = [s for s in (meta.symbols or []) if s]
    if len(symbols) != 1:
        raise DataError(f"{p}: an ohlcv-1m file must hold one symbol (its metadata lists {symbols or 'none'})")
    rec = _records(p, body, schema)
    if len(np.unique(rec["instrument_id"])) > 1:
        raise DataError(f"{p}: bars of {len(np.unique(rec['instrument_id']))} instruments; one symbol per file")
    ts = rec["ts_event"].astype(np.int64)
    if ts.size > 1 and np.any(np.diff(ts) == 0):
        i = int(np.flatnonzero(np.diff(ts) == 0)[0]) + 1
        raise DataError(f"{p}: record {i}: duplicate bar at {pd.Timestamp(ts[i], tz='UTC')}")
    idx = pd.DatetimeIndex(ts.astype("datetime64[ns]")).tz_localize("UTC").tz_convert(NY)
    df = pd.DataFrame({c: _prices(rec[c]) for c in ("open", "high", "low", "close")}, index=idx)
    df["volume"] = rec["volume"].astype(np.float64)
    df.index.name = "timestamp"
    return symbols[0].split(".")[0].upper(), df


def read_definitions(path) -> pd.DataFrame:
    """instrument_id, ts_recv, root, expiry, strike, is_call, underlying of an OPRA definition file
    (contract terms parsed from the OCC raw_symbol)."""
    import databento_dbn as dbn

    from strikebench.options.contracts import OCCSymbolError, OptionContract, UnknownRootError, root_spec

    p = Path(path)
    raw = _raw_bytes(p)
    meta, _ = _metadata(p, raw)
    dec = dbn.DBNDecoder()
    try:
        dec.write(raw)
        records = dec.decode()
    except Exception as exc:  # noqa: BLE001 - the decoder's own error, in one line
        raise DataError(f"{p}: cannot decode DBN records ({' '.join(str(exc).split())[:160]}): truncated?") from None
    rows = []
    k = -1
    for r in records:
        if not isinstance(r, (dbn.InstrumentDefMsg, dbn.InstrumentDefMsgV1, dbn.InstrumentDefMsgV2)):
            if isinstance(r, dbn.Metadata):
                continue
            k += 1
            raise DataError(f"{p}: record {k}: a {type(r).__name__} in a definition file")
        k += 1
        sym = str(r.raw_symbol)
        try:
            c = OptionContract.from_occ(sym)
            und = root_spec(c.root).underlying
        except (OCCSymbolError, UnknownRootError, ValueError) as exc:
            raise DataError(f"{p}: record {k}: raw_symbol {sym!r} is not an OCC option symbol of a known root "
                            f"({' '.join(str(exc).split())[:120]})") from None
        rows.append((int(r.instrument_id), int(r.ts_recv), c.root, c.expiry, float(c.strike), c.is_call, und))
    df = pd.DataFrame(rows, columns=["instrument_id", "ts", "root", "expiry", "strike", "is_call", "underlying"])
    return df.sort_values("ts", kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------------------------ the market
def _scan(root: Path) -> dict[str, list[Path]]:
    files = sorted(p for p in root.iterdir() if p.is_file() and (p.name.endswith(".dbn") or p.name.endswith(".dbn.zst")))
    if not files:
        raise DataError(f"{root}: no DBN files (*.dbn.zst or *.dbn)")
    by: dict[str, list[Path]] = {}
    for p in files:
        by.setdefault(dbn_schema(p), []).append(p)
    quotes = [s for s in by if s in QUOTE_SCHEMAS]
    if len(quotes) > 1:
        a, b = (by[s][0].name for s in quotes[:2])
        raise DataError(f"{root}: mixed quote schemas in one folder: {a} is {quotes[0]}, {b} is {quotes[1]} "
                        f"(keep one of {', '.join(QUOTE_SCHEMAS)})")
    other = [s for s in by if s not in QUOTE_SCHEMAS and s not in ("definition", "ohlcv-1m")]
    if other:
        raise DataError(f"{by[other[0]][0]}: a {other[0]} file; this folder takes definition, "
                        f"{'/'.join(QUOTE_SCHEMAS)} and ohlcv-1m files")
    if not quotes:
        raise DataError(f"{root}: no quote file ({', '.join(QUOTE_SCHEMAS)})")
    if "definition" not in by:
        raise DataError(f"{root}: no definition file (OPRA definitions map instrument ids to contracts)")
    return by


class DatabentoMarket(FileMarket):
    """A :class:`~strikebench.options.source.MarketData` over Databento OPRA files (see module docstring)."""

    def __init__(self, path, max_quote_age_minutes: int = 15, start: dt.date | None = None,
                 end: dt.date | None = None, *, rate=0.045, dividend_yield=0.015):
        from strikebench.feeds.greeks import DailyValue
        from strikebench.userfiles import check_dir

        self.root = Path(path)
        check_dir(self.root, what="data folder", key="data.path", error=DataError)
        self.max_age_ns = int(max_quote_age_minutes) * _NS_MIN
        self._leg_carry_ns = 0  # the minute rows are already carried forward (stale ones dropped)
        self.start, self.end = start, end
        self.rate = DailyValue(rate, key="data.rate")
        self.dividend_yield = DailyValue(dividend_yield, key="data.dividend_yield")
        self.manifest = {}
        by = _scan(self.root)
        self.quote_schema = next(s for s in by if s in QUOTE_SCHEMAS)
        self._quote_files = self._spans(by[self.quote_schema])
        self._def_files = by["definition"]
        self._defs: pd.DataFrame | None = None
        self._bars: dict[str, pd.DataFrame] = {}
        self._bar_files: dict[str, tuple[str, Path]] = {}
        for p in by.get("ohlcv-1m", []):
            sym, _ = self._ohlcv(p)  # read once: the symbol is in the metadata
        bars_dir = self.root / "bars"
        if bars_dir.is_dir():
            for fmt in FORMATS:
                for p in sorted(bars_dir.glob(f"*.{fmt}")):
                    self._bar_files.setdefault(p.name[: -len(fmt) - 1].upper(), (fmt, p))
        if not self._bar_files:
            raise DataError(f"{self.root}: no underlying bars (an ohlcv-1m DBN file, or bars/<SYMBOL>.parquet|csv)")
        self.symbols = sorted(self._bar_files)
        self.fmt = "parquet"
        self._settlements_path = next((p for p in (self.root / "settlements.parquet", self.root / "settlements.csv")
                                       if p.exists()), None)
        if self._settlements_path is not None:
            self.fmt = self._settlements_path.suffix[1:]
        self._settlements = None
        self.approximated_settlements = {}
        self._sessions_cache: OrderedDict = OrderedDict()
        self._quote_cache: OrderedDict = OrderedDict()
        #: per (underlying, session): contract-minutes left out because the last quote was stale
        self.stale_rows: dict = {}
        self._primary = "SPX" if "SPX" in self.symbols else self.symbols[0]
        self._session_days = pd.DatetimeIndex(np.unique(self.bars(self._primary).index.tz_localize(None).normalize()))
        if len(self._session_days) == 0:
            raise DataError(f"{self.root}: no {self._primary} bars in the span")
        self.underlyings = sorted(set(self._definitions()["underlying"]) & set(self.symbols)) or [self._primary]
        # a one-day quote file on a weekday inside the span without bars: the bars are missing a day
        first, last = self._session_days[0], self._session_days[-1]
        have = set(self._session_days.date)
        for s0, e0, p in self._quote_files:
            if e0 - s0 <= 25 * 3600 * 10**9:
                day = pd.Timestamp(s0, tz="UTC").tz_convert(NY).date()
                if first.date() <= day <= last.date() and day not in have:
                    raise DataError(f"{p}: quotes of {day} ({self.quote_schema}) but no {self._primary} bars that day")
        # every session needs quotes: a gap fails before the run starts
        for day in self._session_days:
            if not self._files_for(day.date()):
                raise DataError(f"{self.root}: no {self.quote_schema} file covers session {day.date()} "
                                f"(set data.start/data.end to the sessions the files cover)")

    def __repr__(self) -> str:
        return f"DatabentoMarket('{self.root}', quotes='{self.quote_schema}')"

    def _ohlcv(self, p: Path):
        sym, df = read_ohlcv(p)
        self._bar_files[sym] = ("dbn", p)
        self._bars.pop(sym, None)
        self._raw_bars = getattr(self, "_raw_bars", {})
        self._raw_bars.setdefault(sym, []).append(df)
        return sym, df

    @staticmethod
    def _spans(files: list[Path]) -> list[tuple[int, int, Path]]:
        out = []
        for p in files:
            meta, _ = _metadata(p, _raw_bytes(p, 64 * 1024))
            out.append((int(meta.start), int(meta.end) if meta.end is not None else np.iinfo(np.int64).max, p))
        return out

    def _files_for(self, day: dt.date) -> list[Path]:
        lo = pd.Timestamp(day).tz_localize(NY).value
        hi = pd.Timestamp(day + dt.timedelta(days=1)).tz_localize(NY).value
        return [p for s, e, p in self._quote_files if s < hi and e > lo]

    # ------------------------------------------------------------------ bars
    def bars(self, symbol: str) -> pd.DataFrame:
        symbol = symbol.upper()
        got = self._bars.get(symbol)
        if got is None:
            if symbol not in self._bar_files:
                raise DataError(f"{self.root}: no bars for '{symbol}' (have {', '.join(sorted(self._bar_files))})")
            fmt, p = self._bar_files[symbol]
            if fmt == "dbn":
                got = pd.concat(self._raw_bars[symbol]).sort_index()
                if got.index.has_duplicates:
                    raise DataError(f"{p}: duplicate {symbol} bar at {got.index[got.index.duplicated()][0]} across files")
            else:
                table = read_table(p, BAR_SCHEMA, fmt, what="bars file")
                check_bar_table(table, p, fmt)
                idx = pd.DatetimeIndex(table.column("timestamp").to_numpy().astype("datetime64[ns]")).tz_localize("UTC")
                got = pd.DataFrame({c: table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                                    for c in ("open", "high", "low", "close", "volume")}, index=idx.tz_convert(NY))
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

    # ------------------------------------------------------------------ chains
    def _definitions(self) -> pd.DataFrame:
        if self._defs is None:
            frames = [read_definitions(p) for p in self._def_files]
            self._defs = pd.concat(frames, ignore_index=True).sort_values("ts", kind="stable").reset_index(drop=True)
        return self._defs

    def _has_chain(self, underlying: str, day: dt.date) -> bool:
        return bool(self._files_for(day)) and underlying in self.underlyings

    def _quotes(self, p: Path) -> dict:
        q = self._quote_cache.get(p)
        if q is None:
            self._quote_cache.clear()  # one day's quotes in memory at a time
            q = read_quotes(p)
            self._quote_cache[p] = q
            if len(self._quote_cache) > 1:
                self._quote_cache.popitem(last=False)
        return q

    def _session(self, underlying: str, day: dt.date) -> _Session:
        key = (underlying, day)
        s = self._sessions_cache.get(key)
        if s is None:
            while len(self._sessions_cache) >= _SESSION_CACHE:  # evict before building: a lower peak
                self._sessions_cache.popitem(last=False)
            s = _Session(self._chain_table(underlying, day), self.rate.on(day), self.dividend_yield.on(day))
            self._sessions_cache[key] = s
        else:
            self._sessions_cache.move_to_end(key)
        return s

    def _chain_table(self, und: str, day: dt.date) -> pa.Table:
        """The session's quotes as minute snapshots in CHAIN_SCHEMA (as of each bar's close, stale dropped)."""
        grid = self._day_grid(und, day)  # bar starts (ns)
        if grid.size == 0:
            raise DataError(f"{self.root}: quotes on {day}, a day with no {und} bars")
        close = grid + _NS_MIN
        und_close = self.bars(und)["close"].to_numpy()[np.searchsorted(self.bars(und).index.asi8, grid)]
        defs = self._definitions()
        defs = defs[(defs["ts"] <= int(close[-1])) & (defs["underlying"] == und)]
        defs = defs.drop_duplicates("instrument_id", keep="last")
        defs = defs[defs["expiry"] >= day]
        ids = defs["instrument_id"].to_numpy(np.int64)
        order = np.argsort(ids)
        ids = ids[order]
        parts = [self._quotes(p) for p in self._files_for(day)]
        iid = np.concatenate([q["instrument_id"] for q in parts])
        ts = np.concatenate([q["ts"] for q in parts])
        bid = np.concatenate([q["bid"] for q in parts])
        ask = np.concatenate([q["ask"] for q in parts])
        keep = (ts > close[0] - 86_400 * 10**9) & (ts <= close[-1])  # this session (and a carried pre-open quote)
        pos = np.searchsorted(ids, iid)
        known = keep & (pos < ids.size)
        known[known] &= ids[pos[known]] == iid[known]
        iid, ts, bid, ask, col = iid[known], ts[known], bid[known], ask[known], pos[known]
        n, m = grid.size, ids.size
        bar = np.searchsorted(close, ts, side="left")  # the first bar whose close is at or after the quote
        # dense (bar, contract): the last quote of each contract arriving in each bar, then carried forward
        last = np.full((n, m), -1, dtype=np.int64)
        inside = bar < n
        last[bar[inside], col[inside]] = np.flatnonzero(inside)  # records are in time order: the last wins
        last = np.maximum.accumulate(last, axis=0)
        have = last >= 0
        age = np.where(have, close[:, None] - ts[np.maximum(last, 0)], np.iinfo(np.int64).max)
        live = have & (age <= self.max_age_ns)
        self.stale_rows[(und, day)] = int((have & ~live).sum())
        b, c = np.nonzero(live)  # bar-major: rows sorted by timestamp
        r = last[b, c]
        d = defs.iloc[order].iloc[c]
        nrows = b.size
        arrays = {
            "timestamp": pa.array(grid[b], pa.timestamp("ns", tz="UTC")),
            "underlying": pa.array(np.full(nrows, und, dtype=object), pa.string()),
            "underlying_price": pa.array(und_close[b], pa.float64()),
            "root": pa.array(d["root"].to_numpy(object), pa.string()),
            "expiry": pa.array(d["expiry"].to_numpy(object), pa.date32()),
            "strike": pa.array(d["strike"].to_numpy(np.float64)),
            "right": pa.array(np.where(d["is_call"].to_numpy(bool), "C", "P").astype(object), pa.string()),
            "bid": pa.array(bid[r]), "ask": pa.array(ask[r]),
        }
        cols = [arrays[f.name] if f.name in arrays else pa.nulls(nrows, f.type) for f in CHAIN_SCHEMA]
        table = pa.Table.from_arrays(cols, schema=CHAIN_SCHEMA)
        # within a minute, the files layout orders rows by (expiry, strike, right) like an export
        return table

    def listed_expiries(self, underlying: str, day) -> list[dt.date]:
        return list(self._session(underlying.upper(), pd.Timestamp(day).date()).expiries)


# ------------------------------------------------------------------------------------------ the plugin
class DatabentoParams(HistoricalFilesParams):
    path: str = Field(..., min_length=1, description="folder of Databento OPRA DBN files (definition + quotes) "
                                                     "and the underlying's ohlcv-1m DBN or bars/ files")
    max_quote_age_minutes: int = Field(15, ge=0, le=390,
                                       description="a contract's last quote older than this at a bar's close is stale")


class DatabentoFeed(DataFeed):
    """Historical option quotes from Databento OPRA DBN files (cbbo-1m, tbbo or mbp-1 with definitions)."""

    name = "databento"
    Params = DatabentoParams

    def open(self):
        p = self.params
        return DatabentoMarket(p.path, p.max_quote_age_minutes, start=p.start, end=p.end, rate=p.rate,
                               dividend_yield=p.dividend_yield)


@hookimpl
def register_feeds(register):
    register(DatabentoFeed)
