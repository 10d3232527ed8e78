"""Speed of sweeps: trial overhead, parallel efficiency, and a model of a 1,000-trial sweep at scale.

    python benchmarks/research_bench.py [--sessions 10] [--trials 8] [--year] [--ray]

What is timed (the README's main job, credit_vertical with every configured risk manager and the
journal, on a span of ``--sessions`` sessions from 2023-01-03):

* ``t``: one backtest exactly as ``strikebench backtest`` runs it in-process (``Backtest``: market,
  engine, loop, journal, report files), best of two;
* ``W1``, ``W2``: ``strikebench sweep``'s driver running N trials of that same config (the space is one
  value, so every trial costs the same) on 1 and 2 local workers, everything included (study in
  SQLite, pool start, plots and best YAML written at the end);
* the per-trial overhead inside a worker (trial seconds minus its backtest seconds) and how many
  trials built a market (once per worker, when trials share the data section).

Targets (issue 20): trial overhead <= 5 % of the backtest; N trials on c cores <= 1.15 x N t / c.
The model: ``wall(N, c) = S + ceil(N / c) * (t + o)`` with S the fixed start and end of a sweep (pool, study,
outputs: a one-trial sweep minus its backtest) and o the per-trial overhead (from W1); its prediction
for 2 cores is compared with W2 (the ratio is the slowdown k(2) of two trials running at once), and it
gives a 1,000-trial year sweep on 32 cores and on 10 such nodes (plus 10 s for Ray to schedule).
Timings on a shared machine: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MAIN_JOB = ROOT / "configs" / "spx_credit_vertical.yaml"


def _config(folder: Path, sessions: int, trials: int) -> Path:
    from strikebench.calendar import default_calendar

    days = default_calendar().sessions("2023-01-03", "2023-12-29")
    end = days[min(sessions, len(days)) - 1].date()
    cfg = yaml.safe_load(MAIN_JOB.read_text())
    cfg["data"]["end"] = end.isoformat()
    cfg["output"] = {"dir": str(folder / "runs"), "plots": False}
    cfg["sweep"] = {"sampler": "random", "trials": trials, "seed": 1,
                    "space": {"strategies[0].params.contracts": {"choices": [1]}},
                    "objectives": [{"name": "return_pct", "direction": "maximize"}]}
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def one_backtest(path: Path, folder: Path) -> float:
    from rich.console import Console

    from strikebench.config import load_config
    from strikebench.engine.runner import Backtest
    from strikebench.plugin_manager import get_plugin_manager

    pm = get_plugin_manager()
    resolved = load_config(path, registry=pm.registry)
    t = time.perf_counter()
    bt = Backtest(resolved, console=Console(file=io.StringIO()), progress=False, pm=pm, out_dir=str(folder / "one"))
    bt.loop()
    bt.report()
    return time.perf_counter() - t


def sweep(path: Path, folder: Path, workers: int, executor: str = "local") -> dict:
    from rich.console import Console

    from strikebench.config import load_config
    from strikebench.research.sweep import Sweep

    t = time.perf_counter()
    result = Sweep(load_config(path), folder=folder, workers=workers, executor=executor, progress=False,
                   console=Console(file=io.StringIO()), fresh=True).run()
    wall = time.perf_counter() - t
    trials = result.trials
    inner = [r["seconds"] - r["backtest_seconds"] for r in trials if r.get("backtest_seconds")]
    return {"wall": wall, "complete": result.complete, "failed": result.failed,
            "trial_seconds": sorted(r["seconds"] for r in trials),
            "in_worker_overhead_mean": sum(inner) / len(inner) if inner else None,
            "markets_built": sum(1 for r in trials if r.get("market_built")),
            "sweep_elapsed": result.elapsed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10, help="span of each trial (sessions from 2023-01-03)")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--year", action="store_true", help="also time one year backtest (for the model)")
    ap.add_argument("--ray", action="store_true", help="also run the sweep on a local Ray with 2 CPUs")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    tmp = Path(tempfile.mkdtemp(prefix="sb-research-bench-"))
    try:
        path = _config(tmp, args.sessions, args.trials)
        t = min(one_backtest(path, tmp) for _ in range(2))
        (tmp / "single").mkdir()
        s0 = sweep(_config(tmp / "single", args.sessions, 1), tmp / "s0", 1)
        s1 = sweep(path, tmp / "s1", 1)
        s2 = sweep(path, tmp / "s2", 2)
        sr = sweep(path, tmp / "sr", 2, "ray") if args.ray else None
        year = None
        if args.year:
            (tmp / "y").mkdir()
            year = one_backtest(_config(tmp / "y", 250, 1), tmp / "y")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = args.trials
    # S: a one-trial sweep beyond its backtest (pool, study, outputs); o: each further trial beyond its
    # backtest; k(2): the slowdown of a trial when two run at once
    start = max(0.0, s0["wall"] - t)
    per_trial = (s1["wall"] - s0["wall"]) / (n - 1) - t
    k2 = max(1.0, (s2["wall"] - start) / (math.ceil(n / 2) * (t + per_trial)))
    figures = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average": os.getloadavg(), "cores": len(os.sched_getaffinity(0)),
        "sessions": args.sessions, "trials": n, "t_backtest": t,
        "W1": s1["wall"], "W2": s2["wall"], "W2_ray": sr["wall"] if sr else None,
        "W1_one_trial": s0["wall"],
        "overhead_1_worker_pct": 100 * (s1["wall"] - n * t) / (n * t),
        "overhead_per_trial_pct": 100 * per_trial / t,
        "overhead_in_worker_pct": 100 * s1["in_worker_overhead_mean"] / t if s1["in_worker_overhead_mean"] else None,
        "efficiency_2_workers": s2["wall"] / (n * t / 2),
        "efficiency_2_workers_beyond_S": (s2["wall"] - start) / (n * t / 2),
        "markets_built_1_worker": s1["markets_built"], "markets_built_2_workers": s2["markets_built"],
        "model_S": start, "model_k2": k2,
        "model_W1": start + n * (t + per_trial), "model_W2_ideal": start + math.ceil(n / 2) * (t + per_trial),
        "t_year": year if year else t * 250 / args.sessions,
        "t_year_measured": year is not None,
    }
    ty = figures["t_year"]
    o = max(per_trial, 0.0)
    figures["model_1000_year_32_cores_s"] = start + math.ceil(1000 / 32) * (ty + o)
    figures["model_1000_year_10x32_ray_s"] = start + 10 + math.ceil(1000 / 320) * (ty + o)
    for k, v in figures.items():
        print(f"{k:34s} {v:.3f}" if isinstance(v, float) else f"{k:34s} {v}")
    print(f"\ntrial overhead beyond the backtest: {figures['overhead_per_trial_pct']:+.1f} % per trial (target <= 5 %), "
          f"{figures['overhead_in_worker_pct'] or 0:+.1f} % of it inside the worker; fixed per sweep S = {start:.1f} s; "
          f"all included at N = {n}: {figures['overhead_1_worker_pct']:+.1f} %")
    print(f"2 workers: {s2['wall']:.1f} s for {n} trials = {figures['efficiency_2_workers']:.2f} x N t / 2, "
          f"{figures['efficiency_2_workers_beyond_S']:.2f} beyond S (target <= 1.15)")
    print(f"model wall(N, c) = S + ceil(N/c) (t + o) vs measured: 1 core {figures['model_W1']:.1f} / {s1['wall']:.1f} s, "
          f"2 cores {figures['model_W2_ideal']:.1f} / {s2['wall']:.1f} s (slowdown k(2) = {k2:.2f})")
    print(f"1,000 trials of a year (t_year {ty:.1f} s{'' if year else ', from the span'}): 32 cores "
          f"{figures['model_1000_year_32_cores_s'] / 60:.1f} min; 10 nodes x 32 cores on Ray "
          f"{figures['model_1000_year_10x32_ray_s'] / 60:.1f} min")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
