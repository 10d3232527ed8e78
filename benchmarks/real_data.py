"""Real-data benchmark: the README's main job on files at real SPX chain size, against the same job on
the synthetic market the files were exported from.

    nice -n 10 python benchmarks/real_data.py --days 252 --data /big/disk/sb-year   # the issue's year
    python benchmarks/real_data.py --days 3 --data /tmp/sb-real                    # a sample (minutes)

Steps, each in a child process (so a peak RSS is that step's own, and the parent stays small):

1. export: the default scenario (seed 42) from 2023-01-03, DAYS sessions, every minute, SPX, every
   listed expiry within 45 days and every listed strike (``--max-dte 45``, no strike band): the real
   chain size (about 7,900 contracts, 3.1 M rows per session). Parquet, then DBN (``--dbn``).
   Skipped when DATA already holds that export (its manifest says so).
2. ``strikebench data check DATA/parquet``: wall seconds.
3. ``strikebench backtest`` of configs/spx_credit_vertical.yaml as shipped (journal, risk managers,
   report files) over those sessions: on the synthetic market, on the Parquet files (``source:
   files``) and on the DBN files (``source: databento``, with ``--dbn``): wall seconds, peak RSS.

Each backtest runs again over its first session only: the difference is the CPU per session, which
extrapolates the run to a year (252 sessions) without exporting 27 GB. ``data check`` CPU includes its
worker processes.

Prints a table with the ratios (synthetic seconds / files seconds: 1.0 = as fast; wall and CPU, the CPU
ratio being the one a loaded machine disturbs least) and writes
benchmarks/results/real_data-<timestamp>.json. Timings on a shared machine are noisy: the
ratio of two runs taken back to back is the figure to read.
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


def export_step(data: Path, days: int, dbn: bool) -> dict:
    manifest = data / "parquet" / "manifest.json"
    want = {"days": days, "max_dte": 45}
    figures = {}
    if manifest.exists() and json.loads(manifest.read_text()).get("benchmark") == want:
        figures["export"] = "reused"
    else:
        figures["export"] = child(f"""
from strikebench.feeds.synthetic import SyntheticMarket, export
import json, pathlib
m = SyntheticMarket(seed=42, start="{START}", end="{START + dt.timedelta(days=int(days * 1.6) + 10)}")
days = [d.date() for d in m.sessions()][:{days}]
man = export(m, "{data / 'parquet'}", days=days, interval_minutes=1, underlyings=("SPX",), symbols=("SPX",),
             max_dte=45)
man["benchmark"] = {want!r}
pathlib.Path("{manifest}").write_text(json.dumps(man, indent=2))
print("ROWS", sum(c["rows"] for c in man["chains"]))
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
    if (data / "dbn").exists():
        figures["dbn_bytes"] = sum(p.stat().st_size for p in (data / "dbn").glob("*.dbn.zst"))
    figures["first_day"], figures["last_day"] = m["chains"][0]["path"][-18:-8], m["chains"][-1]["path"][-18:-8]
    return figures


def backtest(config_text: str, out: Path, name: str) -> dict:
    cfg = out / f"{name}.yaml"
    cfg.write_text(config_text)
    return child(f"""
from strikebench.cli import cli
cli(["backtest", "{cfg}", "--quiet", "--set", "output.dir={out / 'runs' / name}"])
""")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=3, help="sessions (252: the issue's year)")
    ap.add_argument("--data", type=Path, default=Path("/tmp/strikebench-real-data"), help="where the files go")
    ap.add_argument("--dbn", action="store_true", help="also export to DBN and run the databento feed")
    args = ap.parse_args()
    data = args.data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    import yaml

    figures = {"days": args.days, "data": str(data), "started": dt.datetime.now(dt.timezone.utc).isoformat()}
    figures.update(export_step(data, args.days, args.dbn))
    figures["data_check"] = child(f"""
from strikebench.cli import main
assert main(["data", "check", "{data / 'parquet'}"]) == 0
""")
    shipped = yaml.safe_load(CONFIG.read_text())
    end = figures["last_day"]
    runs = {"synthetic": dict(shipped["data"], end=end)}
    runs["files"] = {"source": "files", "path": str(data / "parquet"), "format": "parquet"}
    if args.dbn:
        runs["databento"] = {"source": "databento", "path": str(data / "dbn")}
    out = data / "bench"
    out.mkdir(exist_ok=True)
    for name, block in runs.items():
        cfg = dict(shipped, data=block)
        figures[name] = backtest(yaml.safe_dump(cfg, sort_keys=False), out, name)
        summary = sorted((out / "runs" / name).glob("*/summary.json"))[-1]
        s = json.loads(summary.read_text())
        figures[name]["trades"], figures[name]["final_equity"] = s.get("trades"), s.get("final_equity")
        # the same job over the first session only: the fixed cost (imports, journal, report), so the
        # CPU per session (the slope) extrapolates to a year
        one = dict(block, start=figures["first_day"], end=figures["first_day"])
        figures[name + "_1"] = backtest(yaml.safe_dump(dict(shipped, data=one), sort_keys=False), out, name + "_1")
    n = figures["sessions"]
    for name in runs:
        slope = (figures[name]["cpu_seconds"] - figures[name + "_1"]["cpu_seconds"]) / max(n - 1, 1)
        figures[f"{name}_cpu_per_session"] = slope
        figures[f"{name}_cpu_year_estimate"] = figures[name + "_1"]["cpu_seconds"] + 251 * slope
    for name in runs:
        if name != "synthetic":
            figures[f"{name}_speed_ratio"] = figures["synthetic"]["seconds"] / figures[name]["seconds"]
            figures[f"{name}_cpu_ratio"] = figures["synthetic"]["cpu_seconds"] / figures[name]["cpu_seconds"]
            figures[f"{name}_cpu_ratio_year_estimate"] = (figures["synthetic_cpu_year_estimate"]
                                                          / figures[f"{name}_cpu_year_estimate"])
    figures["data_check_cpu_per_session"] = figures["data_check"]["cpu_seconds"] / n
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"real-data benchmark: {figures['sessions']} sessions, {figures['chain_rows']:,} chain rows "
                    f"({figures['parquet_bytes'] / 1e9:.2f} GB Parquet)")
    for c in ("step", "seconds", "CPU s", "peak RSS MB", "note"):
        t.add_column(c)
    for name in ("export", "export_dbn", "data_check", *runs, *(r + "_1" for r in runs)):
        f = figures.get(name)
        if isinstance(f, dict):
            note = ""
            if name == "data_check":
                note = f"{figures['data_check_cpu_per_session']:.2f} CPU s/session"
            if name in runs:
                note = (f"trades {f['trades']}, equity {f['final_equity']}; "
                        f"{figures[f'{name}_cpu_per_session']:.3f} CPU s/session, year ~"
                        f"{figures[f'{name}_cpu_year_estimate']:.0f} CPU s")
                if name != "synthetic":
                    note += (f", speed {figures[f'{name}_speed_ratio']:.2f}x synthetic (CPU "
                             f"{figures[f'{name}_cpu_ratio']:.2f}x; a year ~"
                             f"{figures[f'{name}_cpu_ratio_year_estimate']:.2f}x)")
            if name.endswith("_1"):
                note = "first session only (the fixed cost)"
            t.add_row(name, f"{f['seconds']:.1f}", f"{f['cpu_seconds']:.1f}", f"{f['peak_rss_mb']:.0f}", note)
    Console().print(t)
    res = HERE / "results" / f"real_data-{time.strftime('%Y-%m-%dT%H%M')}.json"
    res.parent.mkdir(exist_ok=True)
    res.write_text(json.dumps(figures, indent=2, default=str))
    print(f"wrote {res}")


if __name__ == "__main__":
    main()
