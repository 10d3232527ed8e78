"""Real-data benchmark: the README's main job on files at real SPX chain size, against the same job on
the synthetic market the files were exported from.

    nice -n 10 python benchmarks/real_data.py --days 62 --data /tmp/sb-q1 --synthetic-year   # a quarter, ~11 GB
    nice -n 10 python benchmarks/real_data.py --days 252 --data /big/disk/sb-year             # the issue's year, ~44 GB
    python benchmarks/real_data.py --days 3 --data /tmp/sb-real                              # a sample (minutes)

Steps, each in a child process (so a peak RSS is that step's own, and the parent stays small):

1. export: the default scenario (seed 42) from 2023-01-03, DAYS sessions, every minute, SPX, every
   listed expiry within 45 days and every listed strike (``--max-dte 45``, no strike band): the real
   chain size (about 12,500 contracts, 4.9 M rows per session, ~175 MB with its marks copy). Parquet
   (``--workers`` processes), then DBN (``--dbn``). Skipped when DATA already holds that export (its
   manifest says so); an interrupted export resumes (chain files already written are kept).
2. ``strikebench data check DATA/parquet``: wall and CPU seconds (its worker processes included).
3. ``strikebench backtest`` of configs/spx_credit_vertical.yaml as shipped (journal, risk managers,
   report files) on the synthetic market, on the Parquet files (``source: files``) and on the DBN files
   (``source: databento``, with ``--dbn``), over the first 1, N/SPANS, 2N/SPANS ... N sessions, the
   sources alternating: the CPU of each added stretch of sessions is the per-session cost, flat or not,
   and the one-session run less one session is the fixed cost (imports, journal, report). A year is the
   fixed cost + 251 x the per-session cost over all N sessions. ``--synthetic-year`` also runs the
   synthetic main job over its whole year (it needs no files), so the year ratio has a measured side.

Prints a table (wall, CPU, peak RSS, the load average after each step) and the ratios (synthetic CPU s /
files CPU s: 1.0 = as fast) and writes benchmarks/results/real_data-<timestamp>.json. On a shared
machine read the CPU figures: wall times grow with the load, CPU times much less.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = ROOT / "configs" / "spx_credit_vertical.yaml"
START = dt.date(2023, 1, 3)

_CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
rc = 0
try:
{body}
except SystemExit as exc:
    rc = exc.code or 0
ru = resource.getrusage(resource.RUSAGE_SELF)
kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # data check's worker processes
print("RESULT " + json.dumps({{"seconds": time.perf_counter() - t0, "rc": rc,
                              "cpu_seconds": ru.ru_utime + ru.ru_stime + kids.ru_utime + kids.ru_stime,
                              "peak_rss_mb": max(ru.ru_maxrss, kids.ru_maxrss) / 1024.0}}))
"""


def child(body: str) -> dict:
    code = _CHILD.format(body="\n".join("    " + line for line in body.strip().splitlines()))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "MPLBACKEND": "Agg", "COLUMNS": "160"})
    res = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not res:
        raise SystemExit(f"child failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return json.loads(res[-1][7:])


def export_step(data: Path, days: int, dbn: bool, workers: int = 2) -> dict:
    """Export DAYS sessions to DATA/parquet (resumable: chain files already there from an interrupted export
    of the same scenario are kept; bars and settlements are always rewritten for the DAYS sessions)."""
    manifest = data / "parquet" / "manifest.json"
    want = {"days": days, "max_dte": 45}
    figures = {}
    if manifest.exists() and json.loads(manifest.read_text()).get("benchmark") == want:
        figures["export"] = "reused"
    else:
        out = data / "parquet"
        figures["export"] = child(f"""
from strikebench.feeds.synthetic import SyntheticMarket, export
from strikebench.feeds.files import chain_file, marks_file
import json, pathlib
import pyarrow.parquet as pq
out = pathlib.Path("{out}")
m = SyntheticMarket(seed=42, start="{START}", end="{START + dt.timedelta(days=int(days * 1.6) + 10)}")
days = [d.date() for d in m.sessions()][:{days}]
todo = [d for d in days if not (chain_file(out, "SPX", d, "parquet").is_file() and marks_file(out, "SPX", d).is_file())]
print("EXPORTING", len(todo), "of", len(days))
if todo:
    export(m, out, days=todo, interval_minutes=1, underlyings=("SPX",), symbols=("SPX",), max_dte=45,
           workers={workers})
man = export(m, out, days=days, underlyings=("SPX",), symbols=("SPX",), chains=False)  # bars, settlements
man["chains"] = [{{"path": str(chain_file(out, "SPX", d, "parquet").relative_to(out)), "snapshots": 390,
                  "rows": pq.ParquetFile(chain_file(out, "SPX", d, "parquet")).metadata.num_rows}} for d in days]
man["benchmark"] = {want!r}
(out / "manifest.json").write_text(json.dumps(man, indent=2))
""")
    if dbn and not (data / "dbn" / "spx.ohlcv-1m.dbn.zst").exists():
        figures["export_dbn"] = child(f"""
from strikebench.feeds.dbn_write import files_to_dbn
files_to_dbn("{data / 'parquet'}", "{data / 'dbn'}")
""")
    m = json.loads(manifest.read_text())
    figures["sessions"] = len(m["chains"])
    figures["chain_rows"] = sum(c["rows"] for c in m["chains"])
    figures["parquet_bytes"] = sum(p.stat().st_size for p in (data / "parquet").rglob("*.parquet"))
    figures["marks_bytes"] = sum(p.stat().st_size for p in (data / "parquet" / "marks").rglob("*.parquet"))
    if (data / "dbn").exists():
        figures["dbn_bytes"] = sum(p.stat().st_size for p in (data / "dbn").glob("*.dbn.zst"))
    figures["days_list"] = [c["path"][-18:-8] for c in m["chains"]]
    figures["first_day"], figures["last_day"] = figures["days_list"][0], figures["days_list"][-1]
    return figures


def backtest(config_text: str, out: Path, name: str) -> dict:
    """One ``strikebench backtest`` in a child process; also the process CPU at the end of each session
    (``session_cpu``: seconds since the previous session ended, the first from the process start)."""
    cfg = out / f"{name}.yaml"
    cfg.write_text(config_text)
    stamps = out / f"{name}.stamps.json"
    r = child(f"""
import json, time
from strikebench.engine import core
_end, _stamps = core.Engine._end_session, []
def _timed(self):
    _end(self)
    _stamps.append(time.process_time())
core.Engine._end_session = _timed
from strikebench.cli import cli
try:
    cli(["backtest", "{cfg}", "--quiet", "--set", "output.dir={out / 'runs' / name}"])
finally:
    open("{stamps}", "w").write(json.dumps(_stamps))
""")
    t = json.loads(stamps.read_text())
    r["session_cpu"] = [round(b - a, 5) for a, b in zip(t, t[1:])]
    return r


def _load() -> str:
    la = os.getloadavg()
    return f"{la[0]:.1f}/{la[1]:.1f}/{la[2]:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=3, help="sessions exported (62: a quarter; 252: the issue's year)")
    ap.add_argument("--data", type=Path, default=Path("/tmp/strikebench-real-data"), help="where the files go")
    ap.add_argument("--dbn", action="store_true", help="also export to DBN and run the databento feed")
    ap.add_argument("--workers", type=int, default=2, help="processes exporting sessions")
    ap.add_argument("--spans", type=int, default=4,
                    help="each backtest also runs over the first 1, N/SPANS, 2N/SPANS, ... sessions: the CPU of "
                         "each added stretch of sessions shows whether the per-session cost is flat")
    ap.add_argument("--synthetic-year", action="store_true",
                    help="also run the main job over its whole year on the synthetic market (no files needed)")
    args = ap.parse_args()
    data = args.data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    import yaml

    figures = {"days": args.days, "data": str(data), "started": dt.datetime.now(dt.timezone.utc).isoformat(),
               "cores": os.cpu_count()}
    figures.update(export_step(data, args.days, args.dbn, args.workers))
    figures["load_before_check"] = _load()
    figures["data_check"] = child(f"""
from strikebench.cli import main
assert main(["data", "check", "{data / 'parquet'}"]) == 0
""")
    figures["data_check"]["load_after"] = _load()
    shipped = yaml.safe_load(CONFIG.read_text())
    n = figures["sessions"]
    days = figures["days_list"]
    runs = {"synthetic": dict(shipped["data"])}
    runs["files"] = {"source": "files", "path": str(data / "parquet"), "format": "parquet"}
    if args.dbn:
        runs["databento"] = {"source": "databento", "path": str(data / "dbn")}
    spans = sorted({1, *(max(1, round(n * i / args.spans)) for i in range(1, args.spans + 1))})
    out = data / "bench"
    out.mkdir(exist_ok=True)
    figures["spans"] = spans
    for k in spans:  # the sources alternate at each span, so a change of the machine's load hits both
        for name, block in runs.items():
            one = dict(block, start=days[0], end=days[k - 1])
            tag = f"{name}_{k}"
            r = backtest(yaml.safe_dump(dict(shipped, data=one), sort_keys=False), out, tag)
            r["load_after"] = _load()
            summary = sorted((out / "runs" / tag).glob("*/summary.json"))[-1]
            sm = json.loads(summary.read_text())
            r["trades"], r["final_equity"] = sm.get("trades"), sm.get("final_equity")
            figures[tag] = r
    if args.synthetic_year:
        r = backtest(yaml.safe_dump(shipped, sort_keys=False), out, "synthetic_year")
        r["load_after"] = _load()
        figures["synthetic_year"] = r
    for name in runs:
        cpu = [figures[f"{name}_{k}"]["cpu_seconds"] for k in spans]
        figures[f"{name}_cpu_per_session_by_stretch"] = [
            (f"{a + 1}-{b}", (cb - ca) / (b - a)) for a, b, ca, cb in zip(spans, spans[1:], cpu, cpu[1:])]
        slope = (cpu[-1] - cpu[0]) / max(n - 1, 1)
        figures[f"{name}_cpu_per_session"] = slope
        figures[f"{name}_fixed_cpu"] = cpu[0] - slope  # the first session's run less one session
        figures[f"{name}_cpu_year_estimate"] = cpu[0] + 251 * slope
    import statistics

    for name in runs:  # per-session CPU inside the N-session run (sessions 2..N), by quarter of the span
        per = figures[f"{name}_{n}"]["session_cpu"]
        q = max(1, -(-len(per) // 4))  # four stretches (the last may be shorter)
        figures[f"{name}_session_cpu_mean"] = statistics.fmean(per) if per else float("nan")
        figures[f"{name}_session_cpu_median_by_quarter"] = [
            (f"{2 + i}-{1 + min(i + q, len(per))}", statistics.median(per[i:i + q])) for i in range(0, len(per), q)]
        figures[f"{name}_session_cpu_mean_by_quarter"] = [
            (f"{2 + i}-{1 + min(i + q, len(per))}", statistics.fmean(per[i:i + q])) for i in range(0, len(per), q)]
    syn_year = figures["synthetic_year"]["cpu_seconds"] if args.synthetic_year else figures["synthetic_cpu_year_estimate"]
    figures["synthetic_cpu_year"] = syn_year
    for name in runs:
        if name != "synthetic":
            big = f"{name}_{n}"
            figures[f"{name}_cpu_ratio_{n}_sessions"] = figures[f"synthetic_{n}"]["cpu_seconds"] / figures[big]["cpu_seconds"]
            figures[f"{name}_wall_ratio_{n}_sessions"] = figures[f"synthetic_{n}"]["seconds"] / figures[big]["seconds"]
            figures[f"{name}_cpu_ratio_year"] = syn_year / figures[f"{name}_cpu_year_estimate"]
    dc = figures["data_check"]
    figures["data_check_cpu_per_session"] = dc["cpu_seconds"] / n
    figures["data_check_cpu_year_estimate"] = dc["cpu_seconds"] / n * 252
    figures["data_check_idle_wall_year_estimate"] = figures["data_check_cpu_year_estimate"] / min(os.cpu_count() or 1, 4)
    figures["finished"] = dt.datetime.now(dt.timezone.utc).isoformat()
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"real-data benchmark: {n} sessions, {figures['chain_rows']:,} chain rows "
                    f"({figures['parquet_bytes'] / 1e9:.2f} GB Parquet incl. {figures['marks_bytes'] / 1e9:.2f} GB marks)")
    for c in ("step", "seconds", "CPU s", "peak RSS MB", "load after", "note"):
        t.add_column(c)
    names = ["export", "export_dbn", "data_check", *(f"{r}_{k}" for k in spans for r in runs), "synthetic_year"]
    for name in names:
        f = figures.get(name)
        if isinstance(f, dict):
            note = ""
            if name == "data_check":
                note = (f"{figures['data_check_cpu_per_session']:.3f} CPU s/session -> a year "
                        f"{figures['data_check_cpu_year_estimate']:.0f} CPU s, "
                        f"~{figures['data_check_idle_wall_year_estimate']:.0f} s on {min(os.cpu_count() or 1, 4)} idle cores")
            elif "trades" in f:
                note = f"trades {f['trades']}, equity {f['final_equity']}"
            t.add_row(name, f"{f['seconds']:.1f}", f"{f['cpu_seconds']:.1f}", f"{f['peak_rss_mb']:.0f}",
                      f.get("load_after", ""), note)
    Console().print(t)
    for name in runs:
        print(f"{name}: CPU s per session inside the {n}-session run: mean {figures[f'{name}_session_cpu_mean']:.4f}; "
              "by quarter of the span (median / mean): "
              + ", ".join(f"{a}: {m:.4f} / {v:.4f}" for (a, m), (_, v) in zip(
                  figures[f"{name}_session_cpu_median_by_quarter"], figures[f"{name}_session_cpu_mean_by_quarter"])))
    for name in runs:
        stretches = ", ".join(f"{a}: {v:.3f}" for a, v in figures[f"{name}_cpu_per_session_by_stretch"])
        line = (f"{name}: CPU s per session by stretch of sessions [{stretches}]; fixed ~{figures[f'{name}_fixed_cpu']:.1f} "
                f"CPU s; a year ~{figures[f'{name}_cpu_year_estimate']:.1f} CPU s")
        if name != "synthetic":
            line += (f"; speed vs synthetic over {n} sessions: CPU {figures[f'{name}_cpu_ratio_{n}_sessions']:.2f}x "
                     f"(wall {figures[f'{name}_wall_ratio_{n}_sessions']:.2f}x), a year "
                     f"{figures[f'{name}_cpu_ratio_year']:.2f}x")
        print(line)
    if args.synthetic_year:
        print(f"synthetic year measured: {syn_year:.1f} CPU s (estimate from the spans: "
              f"{figures['synthetic_cpu_year_estimate']:.1f})")
    res = HERE / "results" / f"real_data-{time.strftime('%Y-%m-%dT%H%M')}.json"
    res.parent.mkdir(exist_ok=True)
    res.write_text(json.dumps(figures, indent=2, default=str))
    print(f"wrote {res}")


if __name__ == "__main__":
    main()
