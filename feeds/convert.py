"""``strikebench data convert SRC OUT``: Databento DBN files, a CSV layout or any Parquet layout -> the Parquet files layout, once.

* SRC with DBN files (the ``databento`` feed's folder): every session's quotes resampled to the
  minute grid exactly as the ``databento`` feed does it (last quote as of each bar's close, stale
  quotes dropped), joined to the definitions, written as ``chains/<UND>/<DATE>.parquet``; the
  underlying bars as ``bars/<SYMBOL>.parquet``; ``settlements.*`` as Parquet. IV and greeks are
  left empty, so a run on the Parquet computes them with its own ``data.rate`` / ``dividend_yield``.
* SRC in the files layout as CSV, or as Parquet written by another tool (or an older strikebench):
  every file read and checked as the ``files`` feed reads it, written as Parquet with the same names.
* Chain files are written by :func:`strikebench.feeds.files.write_chain_parquet`: row groups of whole
  snapshots, the snapshot index in the footer, and the contract-major ``marks/<UND>/<DATE>.parquet``
  copy of the quotes, so a backtest reads only what each decision needs.

Every file is validated before anything is published: the output is written to ``OUT.part-<pid>``
and renamed to OUT only when the whole conversion succeeded (a bad input leaves no OUT behind).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from strikebench.errors import DataError
from strikebench.feeds.files import (BAR_SCHEMA, CHAIN_OPTIONAL, CHAIN_SCHEMA, SCHEMA_VERSION, SETTLEMENT_SCHEMA,
                                     bars_file, chain_file, check_bar_table, check_chain_table, marks_file, read_table,
                                     settlements_file, write_chain_parquet)

__all__ = ["convert"]


def _write(table: pa.Table, path: Path, chain: bool = False, marks: Path | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if chain:  # row groups of whole snapshots, the snapshot index, the contract-major marks copy
        write_chain_parquet(table, path, marks=marks)
    else:
        pq.write_table(table, path, compression="zstd")


def _bars_table(sym: str, df) -> pa.Table:
    ts = pa.array(df.index.tz_convert("UTC").as_unit("ns").asi8, pa.timestamp("ns", tz="UTC"))
    return pa.table([ts, pa.array([sym] * len(df), pa.string()),
                     *(pa.array(df[c].to_numpy(np.float64)) for c in ("open", "high", "low", "close", "volume"))],
                    schema=BAR_SCHEMA)


def _from_dbn(src: Path, tmp: Path, progress=None) -> dict:
    from strikebench.feeds.databento import DatabentoMarket

    m = DatabentoMarket(src, max_quote_age_minutes=15)
    manifest = {"schema_version": SCHEMA_VERSION, "format": "parquet", "source": f"databento {m.quote_schema}",
                "bars": {}, "chains": [], "settlements": None}
    for sym in m.symbols:
        t = _bars_table(sym, m.bars(sym))
        _write(t, bars_file(tmp, sym, "parquet"))
        manifest["bars"][sym] = {"path": f"bars/{sym}.parquet", "rows": t.num_rows}
    days = [d.date() for d in m.sessions()]
    for k, day in enumerate(days):
        for und in m.underlyings:
            t = m._chain_table(und, day)
            p = chain_file(tmp, und, day, "parquet")
            _write(t, p, chain=True, marks=marks_file(tmp, und, day))
            manifest["chains"].append({"path": os.fspath(p.relative_to(tmp)), "rows": t.num_rows,
                                       "stale_contract_minutes": m.stale_rows.get((und, day), 0)})
        if progress:
            progress(k + 1, len(days))
    if m._settlements_path is not None:
        t = read_table(m._settlements_path, SETTLEMENT_SCHEMA, m._settlements_path.suffix[1:], what="settlements file")
        _write(t, settlements_file(tmp, "parquet"))
        manifest["settlements"] = {"path": "settlements.parquet", "rows": t.num_rows}
    return manifest


def _from_layout(src: Path, tmp: Path, progress=None) -> dict:
    """The files layout as CSV, or as Parquet written some other way (re-laid out for reading on demand)."""
    fmt = "csv" if any((src / "bars").glob("*.csv")) else "parquet"
    manifest = {"schema_version": SCHEMA_VERSION, "format": "parquet", "source": fmt, "bars": {}, "chains": [],
                "settlements": None}
    bars = sorted((src / "bars").glob(f"*.{fmt}"))
    if not bars:
        raise DataError(f"{src}: no bars/<SYMBOL>.csv or .parquet (and no DBN files): nothing to convert")
    for p in bars:
        t = read_table(p, BAR_SCHEMA, fmt, what="bars file")
        check_bar_table(t, p, fmt)
        _write(t, tmp / "bars" / f"{p.stem}.parquet")
        manifest["bars"][p.stem.upper()] = {"path": f"bars/{p.stem}.parquet", "rows": t.num_rows}
    chains = sorted((src / "chains").glob(f"*/*.{fmt}")) if (src / "chains").is_dir() else []
    for k, p in enumerate(chains):
        t = read_table(p, CHAIN_SCHEMA, fmt, what="chain file", optional=CHAIN_OPTIONAL)
        check_chain_table(t, p, fmt)
        out = tmp / "chains" / p.parent.name / f"{p.stem}.parquet"
        _write(t, out, chain=True, marks=tmp / "marks" / p.parent.name.upper() / f"{p.stem}.parquet")
        manifest["chains"].append({"path": os.fspath(out.relative_to(tmp)), "rows": t.num_rows})
        if progress:
            progress(k + 1, len(chains))
    sp = settlements_file(src, fmt)
    if sp.exists():
        t = read_table(sp, SETTLEMENT_SCHEMA, fmt, what="settlements file")
        _write(t, settlements_file(tmp, "parquet"))
        manifest["settlements"] = {"path": "settlements.parquet", "rows": t.num_rows}
    return manifest


def convert(src, out, progress=None) -> dict:
    """Convert SRC (DBN files, or the files layout as CSV) to the Parquet layout at OUT; returns the manifest."""
    from strikebench.userfiles import check_dir

    src, out = Path(src), Path(out)
    check_dir(src, what="source folder", key="SRC", error=DataError)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: exists and is not an empty folder (convert writes a new folder)")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise DataError(f"{out}: inside the source folder {src}")
    tmp = out.with_name(f"{out.name}.part-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        dbn = any(p.name.endswith((".dbn", ".dbn.zst")) for p in src.iterdir() if p.is_file())
        manifest = (_from_dbn if dbn else _from_layout)(src, tmp, progress)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest
