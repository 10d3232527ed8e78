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

from strikebench.errors import DataError
from strikebench.feeds.files import (BAR_SCHEMA, CHAIN_OPTIONAL, CHAIN_SCHEMA, FORMATS, SETTLEMENT_SCHEMA, check_bar_table,
                                     check_chain_table, read_table)

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


def check_dataset(path, fmt: str | None = None) -> DatasetReport:
    """Check a folder of the files layout; errors are collected, never raised (but a folder that
    cannot be read at all raises :class:`DataError`)."""
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

    # ---- chains
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
            try:
                t = read_table(f, CHAIN_SCHEMA, fmt, what="chain file", optional=CHAIN_OPTIONAL)
                check_chain_table(t, f, fmt)
            except DataError as exc:
                rep.errors.append(str(exc))
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
            # O(n) per file (hashing, no sort of the rows: a real SPX session is ~3 M rows)
            ts = np.asarray(t.column("timestamp").to_numpy()).view(np.int64)
            times = ts[np.r_[0, np.flatnonzero(np.diff(ts)) + 1]] if len(ts) else ts  # sorted (checked above)
            row["snapshots"].append(len(times))
            exp = t.column("expiry").to_numpy(zero_copy_only=False).astype("datetime64[D]", copy=False)
            strike = t.column("strike").to_numpy()
            pairs = pd.unique((exp.view(np.int64) << 32) | np.rint(strike * 1000).astype(np.int64))
            ue, per = np.unique(pairs >> 32, return_counts=True)
            row["expiries"].append(len(ue))
            row["strikes"].extend(per.tolist())
            bid = t.column("bid").to_numpy(zero_copy_only=False).astype(np.float64)
            ask = t.column("ask").to_numpy(zero_copy_only=False).astype(np.float64)
            nan = ~np.isfinite(bid) | ~np.isfinite(ask)
            row["nan"] += int(nan.sum())
            with np.errstate(invalid="ignore"):
                row["crossed"] += int(((bid > ask) & ~nan).sum())
                row["zero_bid"] += int((bid == 0).sum())
            row["quotes"] += len(bid)
            # minutes: the calendar's session against the bars, the bars against the snapshots
            b = bars.get(bar_sym)
            day_bars = b[days_of[bar_sym] == pd.Timestamp(day)]
            expected = cal.minutes(day)
            row["missing_bar_minutes"] += int(len(expected) - np.isin(expected.asi8, day_bars.asi8).sum())
            row["missing_chain_minutes"] += int((~np.isin(day_bars.asi8, times)).sum())
            root_enc = t.column("root").combine_chunks().dictionary_encode()
            root_names = root_enc.dictionary.to_pylist()
            codes = root_enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
            for k in pd.unique((codes << 32) | exp.view(np.int64)):
                r, e = root_names[int(k >> 32)], np.datetime64(int(k & 0xFFFFFFFF), "D")
                ed = e.item()
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
