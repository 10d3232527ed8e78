"""Write a synthetic market to files in the documented layout the ``files`` data feed reads.

Layout under ``out_dir`` (``ext`` is ``parquet`` or ``csv``; docs/data-files.md)::

    bars/<SYMBOL>.<ext>                     every minute bar of one symbol
    chains/<UNDERLYING>/<YYYY-MM-DD>.<ext>  chain snapshots of one underlying on one session
    settlements.<ext>                       the prints that settle each session's expiries
    manifest.json                           seed, scenario, dates, format, row counts, schema version

Partitioned by underlying and session, so a backtest on the files reads one session at a time.
Schemas: :data:`strikebench.feeds.files.BAR_SCHEMA`, ``CHAIN_SCHEMA``, ``SETTLEMENT_SCHEMA``
(timestamps are bar STARTS in UTC; chain quotes are as of that bar's close).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

from strikebench.feeds.files import (BAR_SCHEMA, CHAIN_SCHEMA, FORMATS, SCHEMA_VERSION, SETTLEMENT_SCHEMA,
                                     bars_file, chain_file, marks_file, settlements_file, write_chain_parquet)

from .market import SYMBOLS

__all__ = ["export", "BAR_SCHEMA", "CHAIN_SCHEMA", "SETTLEMENT_SCHEMA", "SCHEMA_VERSION"]


def _write(table: pa.Table, path: Path, fmt: str, chain: bool = False, marks: Path | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    if fmt == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, tmp)
    elif chain:  # row groups of whole snapshots, the snapshot index, and the contract-major marks copy
        mtmp = None
        if marks is not None:
            marks.parent.mkdir(parents=True, exist_ok=True)
            mtmp = marks.with_name(marks.name + ".part")
        write_chain_parquet(table, tmp, marks=mtmp)
        if mtmp is not None:
            mtmp.replace(marks)
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)


def _bars_table(market, sym, days) -> pa.Table:
    b = market.bars(sym)
    b = b[np.isin(b.index.tz_localize(None).normalize().values, days)]
    ts = pa.array(b.index.tz_convert("UTC").as_unit("ns").asi8, pa.timestamp("ns", tz="UTC"))
    return pa.table([ts, pa.array([sym] * len(b), pa.string()),
                     *(pa.array(b[c].to_numpy(np.float64)) for c in ("open", "high", "low", "close", "volume"))],
                    schema=BAR_SCHEMA)


def _settlements_table(market, underlyings, days) -> pa.Table:
    """The print settling each session's AM and PM expiries of every underlying (VIX: AM, the SOQ)."""
    und, exp, style, value = [], [], [], []
    for day in pd.DatetimeIndex(days):
        d = day.date()
        for u in underlyings:
            for st in (("AM",) if u == "VIX" else ("AM", "PM")):
                c = SimpleNamespace(underlying=u, expiry=d, settlement_style=st)
                und.append(u), exp.append(d), style.append(st), value.append(market.settlement_value(c))
    return pa.table([pa.array(und, pa.string()), pa.array(exp, pa.date32()), pa.array(style, pa.string()),
                     pa.array(value, pa.float64())], schema=SETTLEMENT_SCHEMA)


def _snapshot_columns(snap) -> dict:
    from strikebench.options.chain import _factorize_roots

    n = len(snap)
    return {
        "timestamp": np.full(n, snap.timestamp.tz_convert("UTC").value, dtype=np.int64),
        "underlying": ([snap.underlying], np.zeros(n, dtype=np.int64)),  # (names, code per row)
        "underlying_price": np.full(n, snap.underlying_price),
        "root": _factorize_roots(snap.root),
        "expiry": snap.expiry.astype("datetime64[D]"),
        "strike": snap.strike,
        "right": (["P", "C"], snap.is_call.astype(np.int64)),
        **{c: getattr(snap, c) for c in ("bid", "ask", "last", "volume", "open_interest", "iv", "delta", "gamma", "theta", "vega")},
    }


def _chain_table(cols: list[dict]) -> pa.Table:
    arrays = []
    for field in CHAIN_SCHEMA:
        parts = [c[field.name] for c in cols]
        if isinstance(parts[0], tuple):  # strings as (names, codes): one dictionary, cast to strings in Arrow
            names = sorted({x for p in parts for x in p[0]})
            at = {x: i for i, x in enumerate(names)}
            codes = np.concatenate([np.array([at[x] for x in p[0]] or [0], dtype=np.int32)[p[1]] for p in parts])
            arrays.append(pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(names, pa.string()))
                          .cast(field.type))
            continue
        v = np.concatenate(parts)
        if field.name == "timestamp":
            arrays.append(pa.array(v, pa.timestamp("ns", tz="UTC")))
        elif field.name == "expiry":
            arrays.append(pa.array(v, pa.date32()))
        else:
            arrays.append(pa.array(v, field.type))
    return pa.Table.from_arrays(arrays, schema=CHAIN_SCHEMA)


#: the arguments of _export_session shared with forked workers (set only while they run)
_FORKED = None


def _export_forked(job) -> dict:
    return _export_session(*_FORKED, *job)


def _export_session(market, out, format, interval_minutes, max_dte, strike_range_pct, day, und) -> dict:
    """Write one underlying's chain file (and marks copy) of one session; its manifest entry."""
    tl = market.path.timeline
    d = tl.day_index(day)
    n = int(tl.n_minutes[d])
    picks = sorted(set(range(0, n, interval_minutes)) | {n - 1})
    cols = []
    keep_strikes = None
    keep_expiries = None
    for pos in picks:
        ns = int(tl.minute_ns[tl.day_first_minute[d] + pos])
        at = pd.Timestamp(ns, tz="UTC")
        if max_dte is not None and keep_expiries is None:
            listed = np.unique(market.snapshot(und, at).expiry.astype("datetime64[D]"))
            keep_expiries = [e.item() for e in listed if e <= np.datetime64(day.date(), "D") + max_dte]
        snap = market.snapshot(und, at, expiries=keep_expiries)
        c = _snapshot_columns(snap)
        mask = np.ones(len(snap), dtype=bool)
        if max_dte is not None:
            mask &= snap.expiry.astype("datetime64[D]") <= np.datetime64(day.date(), "D") + max_dte
        if strike_range_pct is not None:
            if keep_strikes is None:  # fixed for the session from its first snapshot
                keep_strikes = (snap.underlying_price * (1 - strike_range_pct / 100),
                                snap.underlying_price * (1 + strike_range_pct / 100))
            mask &= (snap.strike >= keep_strikes[0]) & (snap.strike <= keep_strikes[1])
        if not mask.all():
            c = {k: (v[0], v[1][mask]) if isinstance(v, tuple) else v[mask] for k, v in c.items()}
        cols.append(c)
    table = _chain_table(cols)
    path = chain_file(out, und, day.date(), format)
    _write(table, path, format, chain=True, marks=marks_file(out, und, day.date()))
    return {"path": str(path.relative_to(out)), "rows": table.num_rows, "snapshots": len(picks)}


def export(market, out_dir, days: Iterable | None = None, *, interval_minutes: int = 30,
           underlyings: Iterable[str] = ("SPX", "XSP", "VIX"), symbols: Iterable[str] = SYMBOLS,
           chains: bool = True, format: str = "parquet", max_dte: int | None = None,
           strike_range_pct: float | None = None, workers: int = 1) -> dict:
    """Write bars, settlement prints and chain snapshots of ``days`` (None = every session) to
    ``out_dir`` in ``format`` (parquet or csv).

    Snapshots are taken every ``interval_minutes`` from the open and at the last bar
    (``interval_minutes=1``: every bar, what a backtest equal to the market's own needs).
    ``max_dte`` keeps expiries at most that many calendar days out; ``strike_range_pct`` keeps
    strikes within that percentage of the session's first underlying price (smaller files).
    Returns the manifest. A full year of SPX chains every 30 minutes is ~20 M rows (~1 GB of
    Parquet); pass ``days`` for a sample. ``workers`` > 1 writes sessions in that many forked processes
    (the files are the same; a real-size session takes ~10 CPU s).
    """
    if interval_minutes < 1:
        raise ValueError("interval_minutes must be >= 1")
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    symbols, underlyings = tuple(symbols), tuple(u.upper() for u in underlyings)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "format": format,
        "source": "synthetic",
        "seed": market.seed,
        "scenario": market.scenario.name,
        "start": str(market.start),
        "end": str(market.end),
        "bars": {},
        "settlements": None,
        "chains": [],
        "checksum": market.checksum(),
    }
    sessions = market.sessions()
    if days is None:
        chosen = list(sessions)
    else:
        chosen = [pd.Timestamp(d).normalize() for d in days]
        missing = [d.date() for d in chosen if d not in sessions]
        if missing:
            raise ValueError(f"not sessions of this market: {', '.join(map(str, missing[:5]))}")
    keep_days = np.array(sorted(set(chosen)), dtype="datetime64[ns]")
    for sym in symbols:
        table = _bars_table(market, sym, keep_days)
        path = bars_file(out, sym, format)
        _write(table, path, format)
        manifest["bars"][sym] = {"path": str(path.relative_to(out)), "rows": table.num_rows}
    sett = _settlements_table(market, [u for u in underlyings], keep_days)
    _write(sett, settlements_file(out, format), format)
    manifest["settlements"] = {"path": settlements_file(out, format).name, "rows": sett.num_rows}
    if chains:
        jobs = [(day, und) for day in chosen for und in underlyings]
        args = (market, out, format, interval_minutes, max_dte, strike_range_pct)
        if workers > 1 and len(jobs) > 1:  # sessions are independent: one process per core, forked
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            global _FORKED
            _FORKED = args
            try:
                with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("fork")) as ex:
                    entries = list(ex.map(_export_forked, jobs, chunksize=1))
            finally:
                _FORKED = None
        else:
            entries = [_export_session(*args, day, und) for day, und in jobs]
        manifest["chains"].extend(entries)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
