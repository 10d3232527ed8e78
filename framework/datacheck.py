"""``strikebench data check PATH``: validate a folder of the files layout before a long run.

Reads every file once (one session at a time) and reports coverage per underlying (sessions,
snapshots, expiries per day, strikes per expiry, missing minutes, crossed / zero-bid / NaN quotes,
settlement prints) and every error as one line naming the file and the row or field. Errors:
a file that does not read as its schema (missing column, wrong type, a value that does not parse,
a stray header line in a CSV), unsorted or duplicate timestamps, a duplicate contract at one
timestamp, a chain on a day without underlying bars, a session without a chain, files of two
formats or two schemas in one folder, an expiry in the span without a settlement print when a
settlements file is given. Without a settlements file, settlement falls back to the open/close:
a warning. Read only: it writes nothing.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from strikebench.errors import DataError
from strikebench.feeds.files import (BAR_SCHEMA, CHAIN_OPTIONAL, CHAIN_SCHEMA, FORMATS, SETTLEMENT_SCHEMA, _arrow_message,
                                     check_bar_table, check_chain_table, read_table)

__all__ = ["check_dataset", "DatasetReport", "render"]


@dataclass
class DatasetReport:
    path: str
    fmt: str
    sessions: int = 0
    coverage: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")) if d.is_dir() else []


def _schema_of(path: Path, fmt: str) -> tuple | None:
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            s = pq.read_schema(path)
            return tuple((f.name, str(f.type)) for f in s)
        with open(path, "rb") as fh:
            return tuple(c.strip().strip('"') for c in fh.readline(64 * 1024).decode("utf-8", "replace").strip().split(","))
    except Exception:  # unreadable: read_table names it
        return None


def _schema_diff(a: tuple, b: tuple) -> str:
    da, db = dict(a) if a and isinstance(a[0], tuple) else {k: "" for k in a}, \
        dict(b) if b and isinstance(b[0], tuple) else {k: "" for k in b}
    for k in da:
        if k not in db:
            return f"column '{k}' is missing"
        if da[k] != db[k]:
            return f"column '{k}' is {db[k]} here, {da[k]} there"
    extra = [k for k in db if k not in da]
    if extra:
        return f"extra column '{extra[0]}'"
    return "columns in another order"


def _settlement_style(root: str) -> str:
    return "AM" if root in ("SPX", "VIX") else "PM"


def check_dataset(path, fmt: str | None = None, workers: int | None = None) -> DatasetReport:
    """Check a folder of the files layout; errors are collected, never raised (but a folder that
    cannot be read at all raises :class:`DataError`). ``workers``: processes reading chain files
    (default: one per core, at most 4; 1 = in this process)."""
    from strikebench.calendar import MarketCalendar
    from strikebench.userfiles import check_dir

    root = Path(path)
    check_dir(root, what="data folder", error=DataError)
    bars_dir, chains_dir = root / "bars", root / "chains"
    check_dir(bars_dir, what="bars folder", error=DataError)
    check_dir(chains_dir, what="chains folder", error=DataError)
    und_dirs = sorted(p for p in chains_dir.iterdir() if p.is_dir())
    all_files = _files(bars_dir) + [f for d in und_dirs for f in _files(d)]
    all_files += [p for p in _files(root) if p.stem == "settlements"]
    exts = {}
    for f in all_files:
        exts.setdefault(f.suffix.lstrip("."), f)
    data_exts = [e for e in exts if e in FORMATS]
    if fmt is None:
        fmt = max(data_exts, key=lambda e: sum(f.suffix == "." + e for f in all_files)) if data_exts else "parquet"
    rep = DatasetReport(path=os.fspath(root), fmt=fmt)
    for e, f in exts.items():
        if e != fmt:
            rep.errors.append(f"{f}: a .{e} file in a {fmt} dataset (one format per folder)")

    # ---- bars
    bars: dict[str, pd.DatetimeIndex] = {}
    ref_schema: dict[str, tuple] = {}
    for f in _files(bars_dir):
        if f.suffix != "." + fmt:
            continue
        sym = f.stem.upper()
        try:
            t = read_table(f, BAR_SCHEMA, fmt, what="bars file")
            check_bar_table(t, f, fmt)
        except DataError as exc:
            rep.errors.append(str(exc))
            continue
        bars[sym] = pd.DatetimeIndex(t.column("timestamp").to_numpy().astype("datetime64[ns]")).tz_localize(
            "UTC").tz_convert("America/New_York")
    if not bars:
        if not any(f.suffix == "." + fmt for f in _files(bars_dir)):
            rep.errors.append(f"{bars_dir}: no bars files '<SYMBOL>.{fmt}'")
        return rep
    primary = "SPX" if "SPX" in bars else sorted(bars)[0]
    days_of = {s: pd.Index(idx.tz_localize(None).normalize()) for s, idx in bars.items()}
    sessions = sorted(set(d.date() for d in days_of[primary].unique()))
    rep.sessions = len(sessions)
    cal = MarketCalendar()

    # ---- settlements
    settle = None
    sp = root / f"settlements.{fmt}"
    if sp.exists():
        try:
            t = read_table(sp, SETTLEMENT_SCHEMA, fmt, what="settlements file")
            settle = set(zip(t.column("underlying").to_pylist(), t.column("expiry").to_pylist(), t.column("style").to_pylist()))
        except DataError as exc:
            rep.errors.append(str(exc))

    # ---- chains: every file read and checked first (in parallel over the cores: ~3 M rows a real session)
    todo = []
    for d in und_dirs:
        for f in _files(d):
            if f.suffix == "." + fmt:
                try:
                    day = dt.date.fromisoformat(f.stem)
                except ValueError:
                    continue
                if day in sessions:
                    todo.append(f)
    facts = dict(zip(todo, _map_chain_facts(todo, fmt, workers)))
    for d in und_dirs:
        und = d.name.upper()
        files = [f for f in _files(d) if f.suffix == "." + fmt]
        row = {"underlying": und, "sessions": 0, "snapshots": [], "expiries": [], "strikes": [],
               "missing_bar_minutes": 0, "missing_chain_minutes": 0, "crossed": 0, "zero_bid": 0, "nan": 0,
               "quotes": 0, "settle_have": 0, "settle_need": 0}
        seen_days, needed = set(), {}
        for f in files:
            try:
                day = dt.date.fromisoformat(f.stem)
            except ValueError:
                rep.errors.append(f"{f}: the file name is not a session date YYYY-MM-DD")
                continue
            bar_sym = und if und in bars else primary
            if day not in sessions:
                rep.errors.append(f"{f}: a chain on {day}, a day with no {bar_sym} bars")
                continue
            res = facts.get(f)
            if "error" in res:
                rep.errors.append(res["error"])
                continue
            sch = _schema_of(f, fmt)
            if sch is not None:
                first = ref_schema.setdefault(und, (sch, f))
                if sch != first[0]:
                    rep.errors.append(f"{f}: schema differs from {first[1].name} ({_schema_diff(first[0], sch)}); "
                                      f"one schema per folder")
                    continue
            seen_days.add(day)
            row["sessions"] += 1
            times = res["times"]
            row["snapshots"].append(len(times))
            row["expiries"].append(res["expiries"])
            row["strikes"].extend(res["strikes"])
            for k in ("nan", "crossed", "zero_bid", "quotes"):
                row[k] += res[k]
            # minutes: the calendar's session against the bars, the bars against the snapshots
            b = bars.get(bar_sym)
            day_bars = b[days_of[bar_sym] == pd.Timestamp(day)]
            expected = cal.minutes(day)
            row["missing_bar_minutes"] += int(len(expected) - np.isin(expected.asi8, day_bars.asi8).sum())
            row["missing_chain_minutes"] += int((~np.isin(day_bars.asi8, times)).sum())
            for r, ed in res["root_expiries"]:
                if ed <= sessions[-1]:
                    needed[(und, ed, _settlement_style(str(r)))] = f
        gaps = [day for day in sessions if day not in seen_days
                and not (d / f"{day}.{fmt}").exists()]  # a file that exists but failed is reported above
        if gaps:
            more = f" and {len(gaps) - 1} more sessions up to {gaps[-1]}" if len(gaps) > 1 else ""
            rep.errors.append(f"{d}: no {und} chain for session {gaps[0]} (expected {gaps[0]}.{fmt}){more}")
        row["settle_need"] = len(needed)
        if settle is not None:
            missing = sorted(k for k in needed if k not in settle)
            row["settle_have"] = len(needed) - len(missing)
            for k in missing[:5]:
                rep.errors.append(f"{sp}: no {k[2]} settlement print for {k[0]} expiry {k[1]} "
                                  f"(listed in {needed[k].name})")
            if len(missing) > 5:
                rep.errors.append(f"{sp}: and {len(missing) - 5} more expiries without a settlement print")
        elif needed:
            rep.warnings.append(f"{root}: no settlements.{fmt}: {len(needed)} {und} expiries will settle on the "
                                f"underlying's open (AM) / close (PM), an approximation")
        rep.coverage.append(row)
    if not und_dirs:
        rep.errors.append(f"{chains_dir}: no underlying folders (chains/<UNDERLYING>/<YYYY-MM-DD>.{fmt})")
    return rep


def _chain_facts(path: str, fmt: str) -> dict:
    """Read and check one chain file (as the feed reads it) and compute its coverage facts, vectorized.

    Parquet: only the columns the checks read are decoded (timestamp, underlying, underlying_price, root and
    right as dictionary indices, expiry, strike, bid, ask; the others are checked by type from the footer).
    Every row passes the same checks as :func:`check_chain_table`; when a row fails one, the file is read
    again whole and :func:`check_chain_table` names the row (the fast pass only finds that one fails).
    Returns {"error": line} or the facts."""
    if fmt == "csv":
        try:
            t = read_table(path, CHAIN_SCHEMA, fmt, what="chain file", optional=CHAIN_OPTIONAL)
            check_chain_table(t, path, fmt)
        except DataError as exc:
            return {"error": str(exc)}
        ts = np.asarray(t.column("timestamp").to_numpy()).view(np.int64)
        key, rank_roots = _contract_keys(t)
        return _facts(ts, key, rank_roots, t)
    import pyarrow.parquet as pq

    try:
        from strikebench.feeds.files import _parquet_columns
        from strikebench.userfiles import check_file

        check_file(path, what="chain file", error=DataError)
        try:
            pf = pq.ParquetFile(path, memory_map=True, read_dictionary=["root", "right", "underlying"])
            _parquet_columns(pf.schema_arrow, CHAIN_SCHEMA, path, CHAIN_OPTIONAL)
            fast = _parquet_facts(pf)
            if fast is not None:
                return fast
            t = pf.read(columns=list(_CHECKED), use_threads=False)
            t = pa.table([t.column(c) if pa.types.is_dictionary(t.schema.field(c).type) else
                          t.column(c).cast(CHAIN_SCHEMA.field(c).type) for c in _CHECKED], names=list(_CHECKED))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as exc:
            raise DataError(f"{path}: {_arrow_message(exc)}") from None
        # not the layout's sort order, or a check fails: the whole file at once (hashing finds duplicates)
        ts = np.asarray(t.column("timestamp").to_numpy()).view(np.int64)
        ok = t.column("timestamp").null_count == 0 and (ts.size < 2 or bool(np.all(np.diff(ts) >= 0)))
        ok = ok and all(t.column(c).null_count == 0 for c in ("underlying", "root", "expiry", "right"))
        rights = {v for ch in t.column("right").chunks for v in ch.dictionary.to_pylist()} if ok else set()
        ok = ok and rights <= {"C", "P"}
        for c in ("strike", "underlying_price"):
            v = t.column(c).to_numpy()
            ok = ok and bool(np.all((v > 0) & (v < np.inf)))
        key, rank_roots = _contract_keys(t) if ok else (None, None)
        if ok and ts.size > 1:
            # duplicates: the layout's writer sorts each minute by contract, so a strictly increasing key
            # within each minute proves none; otherwise count (minute, contract) cells (hashing, O(n))
            same = np.diff(ts) == 0
            if not np.all(~same | (np.diff(key) > 0)):
                t_idx = np.r_[0, np.cumsum(~same)]
                kcodes, uniq = pd.factorize(key)
                cells = (int(t_idx[-1]) + 1) * len(uniq)
                ok = cells <= 200_000_000 and np.bincount(t_idx * len(uniq) + kcodes, minlength=cells).max() <= 1
        if not ok:  # name the row: the whole file, the feed's checks
            full = read_table(path, CHAIN_SCHEMA, fmt, what="chain file", optional=CHAIN_OPTIONAL)
            check_chain_table(full, path, fmt)
            raise DataError(f"{path}: a row fails a check")  # not reached: check_chain_table names it
    except DataError as exc:
        return {"error": str(exc)}
    return _facts(ts, key, rank_roots, t)


#: fewer chain files than this are checked in the calling process (starting workers costs ~1 s)
_PARALLEL_MIN_FILES = 4

#: the columns `data check` decodes of a Parquet chain file
_CHECKED = ("timestamp", "underlying", "underlying_price", "root", "expiry", "strike", "right", "bid", "ask")


def _codes(col) -> tuple[np.ndarray, list]:
    """Codes per row (small ints) of a dictionary or string column, numbered by the sorted distinct values."""
    if not pa.types.is_dictionary(col.type):
        col = col.dictionary_encode()
    if isinstance(col, pa.ChunkedArray):
        col = col.unify_dictionaries()
        dictionary = col.chunk(0).dictionary if col.num_chunks else pa.array([], pa.string())
        indices = (pa.chunked_array([c.indices for c in col.chunks], type=col.type.index_type).to_numpy()
                   if col.num_chunks else np.empty(0, np.int32))
    else:
        dictionary, indices = col.dictionary, col.indices.to_numpy(zero_copy_only=False)
    names = dictionary.to_pylist()
    values = sorted({v for v in names if v is not None})
    rank = np.array([values.index(v) if v is not None else 0 for v in names] or [0], dtype=np.int64)
    return rank[indices], values


def _contract_keys(t: pa.Table) -> tuple[np.ndarray, list]:
    """One int64 per row, ordered as the layout's writer sorts a minute: (root, expiry, right, strike).
    In place where it can (a real session is ~3 M rows)."""
    key, roots = _codes(t.column("root"))
    ccode, rights = _codes(t.column("right"))
    key <<= 55
    exp = t.column("expiry").cast(pa.int32()).to_numpy().astype(np.int64)
    exp <<= 38
    key |= exp
    del exp
    call = np.array([r == "C" for r in rights] or [False], dtype=np.int64)[ccode]
    call <<= 37
    key |= call
    del call
    strike = t.column("strike").to_numpy() * 1000.0
    np.rint(strike, out=strike)
    key |= strike.astype(np.int64)
    return key, roots


def _facts(ts: np.ndarray, key: np.ndarray, roots: list, t: pa.Table) -> dict:
    times = ts[np.r_[0, np.flatnonzero(np.diff(ts)) + 1]] if len(ts) else ts  # sorted (checked)
    bid = t.column("bid").to_numpy().astype(np.float64, copy=False)
    ask = t.column("ask").to_numpy().astype(np.float64, copy=False)
    nan = ~np.isfinite(bid) | ~np.isfinite(ask)
    with np.errstate(invalid="ignore"):
        crossed = int(((bid > ask) & ~nan).sum())
        zero = int((bid == 0).sum())
    return _coverage(times, pd.unique(key), roots, nan=int(nan.sum()), crossed=crossed, zero_bid=zero,
                     quotes=len(bid))


def _coverage(times: np.ndarray, contracts: np.ndarray, roots: list, **counts) -> dict:
    """Coverage facts from the snapshot times and the distinct contract keys (every contract once)."""
    exp = (contracts >> 38) & ((1 << 17) - 1)
    pairs = pd.unique((exp << 32) | (contracts & ((1 << 37) - 1)))
    ue, per = np.unique(pairs >> 32, return_counts=True)
    root_exp = pd.unique(((contracts >> 55) << 32) | exp)
    return {"times": times, "expiries": len(ue), "strikes": per.tolist(), **counts,
            "root_expiries": [(roots[int(k >> 32)], (np.datetime64(0, "D") + int(k & 0xFFFFFFFF)).item())
                              for k in root_exp]}


#: rows `data check` decodes at a time from a Parquet chain file (whole row groups): small enough for the
#: CPU caches, large enough that per-batch overhead is nothing
_BATCH_ROWS = 65_536


def _parquet_facts(pf) -> dict | None:
    """The facts of a Parquet chain file in the layout's sort order, read a few row groups at a time (only
    the checked columns; root and right as dictionary indices), or None when a check fails or the file is
    sorted otherwise (the caller reads it whole and names the row). Every row passes the checks of
    :func:`check_chain_table`: non-null fields, rights C/P, strike and underlying price > 0 and finite,
    timestamps sorted, and within each minute a strictly increasing contract key (root, expiry, right,
    strike), which proves no contract appears twice."""
    n = pf.metadata.num_rows
    if n == 0:
        return None
    # root names of the whole file first (a dictionary column: its indices only), so a root's rank, and
    # with it the contract key, is the same in every batch
    rootcol = pf.read(columns=["root"], use_threads=False).column(0)
    if rootcol.null_count or not pa.types.is_dictionary(rootcol.type):
        return None
    roots = sorted({v for ch in rootcol.chunks for v in ch.dictionary.to_pylist()})
    if None in roots or len(roots) > 255:
        return None
    rank = {r: i for i, r in enumerate(roots)}
    ng = pf.metadata.num_row_groups
    sizes = [pf.metadata.row_group(g).num_rows for g in range(ng)]
    batches, cur, rows = [], [], 0
    for g, k in enumerate(sizes):
        cur.append(g)
        rows += k
        if rows >= _BATCH_ROWS:
            batches.append(cur)
            cur, rows = [], 0
    if cur:
        batches.append(cur)
    # 'underlying' is only checked for nulls: the footer's null counts say so without decoding it
    iu = pf.schema_arrow.get_field_index("underlying")
    stats = [pf.metadata.row_group(g).column(iu).statistics for g in range(ng)]
    no_null = all(st is not None and st.has_null_count and st.null_count == 0 for st in stats)
    cols = [c for c in _CHECKED if c != "root" and not (c == "underlying" and no_null)]
    times, uniq = [], []
    nan = crossed = zero = 0
    last_ts, last_key, prev = None, None, None
    offset = 0
    for gs in batches:
        t = pf.read_row_groups(gs, columns=cols, use_threads=False)
        if not pa.types.is_dictionary(t.schema.field("right").type):
            return None
        t = pa.table([t.column(c) if pa.types.is_dictionary(t.schema.field(c).type) else
                      t.column(c).cast(CHAIN_SCHEMA.field(c).type) for c in cols], names=cols)
        m = len(t)
        if any(t.column(c).null_count for c in cols if c not in ("bid", "ask")):
            return None
        ts = np.asarray(t.column("timestamp").to_numpy()).view(np.int64)
        step = np.diff(ts)
        if np.any(step < 0) or (last_ts is not None and ts[0] < last_ts):
            return None
        for c in ("strike", "underlying_price"):
            v = t.column(c).to_numpy()
            if not np.all((v > 0) & (v < np.inf)):
                return None
        # the contract key, as the layout's writer sorts a minute: root rank, expiry, call, strike
        key = np.empty(m, np.int64)
        rc = rootcol.slice(offset, m)
        pos = 0
        for ch in rc.chunks:
            lut = np.array([rank[v] for v in ch.dictionary.to_pylist()] or [0], dtype=np.int64)
            key[pos: pos + len(ch)] = lut[ch.indices.to_numpy(zero_copy_only=False)]
            pos += len(ch)
        key <<= 55
        call = np.empty(m, np.int64)
        pos = 0
        for ch in t.column("right").chunks:
            names = ch.dictionary.to_pylist()
            if not set(names) <= {"C", "P"}:
                return None
            call[pos: pos + len(ch)] = np.array([v == "C" for v in names] or [False], dtype=np.int64)[
                ch.indices.to_numpy(zero_copy_only=False)]
            pos += len(ch)
        key |= call << 37
        key |= t.column("expiry").cast(pa.int32()).to_numpy().astype(np.int64) << 38
        key |= np.rint(t.column("strike").to_numpy() * 1000.0).astype(np.int64)
        same = step == 0
        if not np.all(~same | (np.diff(key) > 0)):
            return None
        if last_ts is not None and ts[0] == last_ts and key[0] <= last_key:
            return None
        starts = np.flatnonzero(np.r_[last_ts is None or ts[0] != last_ts, ~same])
        times.append(ts[starts])
        # the distinct contracts: a minute listing the same contracts as the one before adds none
        if not starts.size or starts[0] > 0:  # the end of a minute the batch before began
            uniq.append(key[: starts[0] if starts.size else m])
            prev = None
        for a, b in zip(starts, np.r_[starts[1:], m]):
            k = key[a:b]
            if prev is None or len(k) != len(prev) or not np.array_equal(k, prev):
                uniq.append(k)
            prev = k
        bid, ask = t.column("bid").to_numpy(), t.column("ask").to_numpy()
        bad = ~np.isfinite(bid) | ~np.isfinite(ask)
        nan += int(bad.sum())
        with np.errstate(invalid="ignore"):
            crossed += int(((bid > ask) & ~bad).sum())
            zero += int((bid == 0).sum())
        last_ts, last_key = int(ts[-1]), int(key[-1])
        offset += m
    return _coverage(np.concatenate(times), pd.unique(np.concatenate(uniq)), roots,
                     nan=nan, crossed=crossed, zero_bid=zero, quotes=n)


def _chain_facts_star(args) -> dict:
    return _chain_facts(*args)


def _map_chain_facts(files: list, fmt: str, workers: int | None) -> list:
    if workers is None:
        workers = min(os.cpu_count() or 1, 4)
    if workers <= 1 or len(files) < _PARALLEL_MIN_FILES:
        return [_chain_facts(os.fspath(f), fmt) for f in files]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(workers, len(files)), mp_context=mp.get_context("fork")) as ex:
        return list(ex.map(_chain_facts_star, [(os.fspath(f), fmt) for f in files], chunksize=1))


def _span(v: list) -> str:
    return "-" if not v else (f"{min(v)}" if min(v) == max(v) else f"{min(v)}-{max(v)}")


def render(rep: DatasetReport, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(f"{rep.path} ({rep.fmt}, {rep.sessions} sessions)"))
    for c in ("chain", "days", "snaps/day", "exp/day", "strikes/exp", "no bar min", "no chain min", "crossed",
              "0 bid", "NaN", "settle"):
        t.add_column(c, justify="left" if c == "chain" else "right")
    for r in rep.coverage:
        t.add_row(r["underlying"], str(r["sessions"]), _span(r["snapshots"]), _span(r["expiries"]),
                  f"{int(np.median(r['strikes']))}" if r["strikes"] else "-", str(r["missing_bar_minutes"]),
                  str(r["missing_chain_minutes"]), str(r["crossed"]), str(r["zero_bid"]), str(r["nan"]),
                  f"{r['settle_have']}/{r['settle_need']}")
    console.print(t)
    for w in rep.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    for e in rep.errors:
        console.print(f"[red]error:[/] {escape(e)}", highlight=False, soft_wrap=True)
