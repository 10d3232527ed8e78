"""Write a synthetic market to Parquet in the documented schema the historical-file feed reads.

Layout under ``out_dir``::

    bars.parquet                    every minute bar of every symbol
    chains/<YYYY-MM-DD>.parquet     chain snapshots of one session (all underlyings)
    manifest.json                   seed, scenario, dates, row counts, schema version

Schemas (see docs/synthetic-market.md):

* bars: ``timestamp`` timestamp[ns, UTC] (bar START), ``symbol`` string, ``open``,
  ``high``, ``low``, ``close``, ``volume`` float64.
* chains: ``timestamp`` timestamp[ns, UTC] (bar START of the snapshot's minute; quotes
  are as of that bar's close), ``underlying`` string, ``underlying_price`` float64,
  ``root`` string, ``expiry`` date32, ``strike`` float64, ``right`` string 'C'/'P',
  ``bid``, ``ask``, ``last`` float64, ``volume``, ``open_interest`` int64, ``iv``,
  ``delta``, ``gamma``, ``theta``, ``vega`` float64 (theta per calendar day, vega per
  vol point).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .market import SYMBOLS

__all__ = ["export", "BAR_SCHEMA", "CHAIN_SCHEMA", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1

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


def _bars_table(market, symbols) -> pa.Table:
    parts = []
    for sym in symbols:
        b = market.bars(sym)
        ts = pa.array(b.index.tz_convert("UTC").as_unit("ns").asi8, pa.timestamp("ns", tz="UTC"))
        parts.append(pa.table([ts, pa.array([sym] * len(b), pa.string()),
                               *(pa.array(b[c].to_numpy(np.float64)) for c in ("open", "high", "low", "close", "volume"))],
                              schema=BAR_SCHEMA))
    return pa.concat_tables(parts)


def _snapshot_columns(snap) -> dict:
    n = len(snap)
    return {
        "timestamp": np.full(n, snap.timestamp.tz_convert("UTC").value, dtype=np.int64),
        "underlying": np.full(n, snap.underlying, dtype=object),
        "underlying_price": np.full(n, snap.underlying_price),
        "root": snap.root.astype(object),
        "expiry": snap.expiry.astype("datetime64[D]"),
        "strike": snap.strike,
        "right": np.where(snap.is_call, "C", "P").astype(object),
        **{c: getattr(snap, c) for c in ("bid", "ask", "last", "volume", "open_interest", "iv", "delta", "gamma", "theta", "vega")},
    }


def _chain_table(cols: list[dict]) -> pa.Table:
    data = {k: np.concatenate([c[k] for c in cols]) for k in cols[0]}
    arrays = []
    for field in CHAIN_SCHEMA:
        v = data[field.name]
        if field.name == "timestamp":
            arrays.append(pa.array(v, pa.timestamp("ns", tz="UTC")))
        elif field.name == "expiry":
            arrays.append(pa.array(v, pa.date32()))
        else:
            arrays.append(pa.array(v, field.type))
    return pa.Table.from_arrays(arrays, schema=CHAIN_SCHEMA)


def export(market, out_dir, days: Iterable | None = None, *, interval_minutes: int = 30,
           underlyings: Iterable[str] = ("SPX", "XSP", "VIX"), symbols: Iterable[str] = SYMBOLS,
           chains: bool = True) -> dict:
    """Write bars (all sessions) and chain snapshots (``days``; None = every session) to ``out_dir``.

    Snapshots are taken every ``interval_minutes`` from the open and at the last bar.
    Returns the manifest (paths and row counts). A full year of SPX chains every 30
    minutes is ~20 M rows (~1 GB); pass ``days`` for a sample.
    """
    if interval_minutes < 1:
        raise ValueError("interval_minutes must be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bars = _bars_table(market, tuple(symbols))
    pq.write_table(bars, out / "bars.parquet", compression="zstd")
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "source": "synthetic",
        "seed": market.seed,
        "scenario": market.scenario.name,
        "start": str(market.start),
        "end": str(market.end),
        "bars": {"path": "bars.parquet", "rows": bars.num_rows, "symbols": list(symbols)},
        "chains": [],
        "checksum": market.checksum(),
    }
    if chains:
        sessions = market.sessions()
        if days is None:
            chosen = list(sessions)
        else:
            chosen = [pd.Timestamp(d).normalize() for d in days]
            missing = [d.date() for d in chosen if d not in sessions]
            if missing:
                raise ValueError(f"not sessions of this market: {', '.join(map(str, missing[:5]))}")
        tl = market.path.timeline
        (out / "chains").mkdir(exist_ok=True)
        for day in chosen:
            d = tl.day_index(day)
            n = int(tl.n_minutes[d])
            picks = sorted(set(range(0, n, interval_minutes)) | {n - 1})
            cols = []
            for pos in picks:
                ns = int(tl.minute_ns[tl.day_first_minute[d] + pos])
                at = pd.Timestamp(ns, tz="UTC")
                for und in underlyings:
                    cols.append(_snapshot_columns(market.snapshot(und, at)))
            table = _chain_table(cols)
            name = f"chains/{day.date()}.parquet"
            pq.write_table(table, out / name, compression="zstd")
            manifest["chains"].append({"path": name, "rows": table.num_rows, "snapshots": len(picks)})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
