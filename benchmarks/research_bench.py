"""Speed of sweeps: trial overhead, parallel efficiency, and a model of a 1,000-trial sweep at scale.

    python benchmarks/research_bench.py [--sessions 10] [--trials 8] [--year] [--ray] [--json FILE]

What is timed (the README's main job, credit_vertical with every configured risk manager and the
journal, on a span of ``--sessions`` sessions from 2023-01-03):

* ``t`` / ``t_cpu``: one backtest exactly as ``strikebench backtest`` runs it in-process (``Backtest``: market,
  engine, loop, journal, report files); run four times interleaved with the sweeps below (best wall, median
  CPU), after a warm-up;
* ``W1``, ``W2``: ``strikebench sweep``'s driver running N trials of that same config (the space is one
  value, so every trial costs the same) on 1 and 2 local workers, everything included (study in
  SQLite, pool start, plots and best YAML written at the end); a one-trial sweep gives the fixed cost S;
* inside each worker, each trial's wall and CPU seconds (``time.process_time``: it does not grow while a
  process waits for a core), its backtest's, its worker (pid), and how many trials built a market.

Figures robust to a loaded machine are in CPU seconds: the per-trial overhead o (worker CPU + the
driver's CPU per trial - one in-process backtest), S_cpu, k_cpu(2) (a trial's CPU with two workers / with
one: contention for caches and memory), and quiet(c) = S_cpu + the busiest worker's CPU: the wall the
sweep takes when each process has a core. Wall figures are printed too, with the load average.

Targets (issue 20): trial overhead <= 5 % of the backtest; N trials on c cores <= 1.15 x N t / c.
The model: ``wall(N, c) = S + max(ceil(N / c) * (t + o) * k(c), N * d)`` with d the driver's CPU per trial
(it alone records trials), checked against quiet(1) and quiet(2) here; it gives a 1,000-trial year sweep on
32 cores and on 10 such nodes (plus 10 s for Ray to schedule).
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


def one_backtest(path: Path, folder: Path) -> tuple[float, float]:
    """One backtest in-process as `strikebench backtest` runs it: (wall, CPU) seconds."""
    from rich.console import Console

    from strikebench.config import load_config
    from strikebench.engine.runner import Backtest
    from strikebench.plugin_manager import get_plugin_manager

    pm = get_plugin_manager()
    resolved = load_config(path, registry=pm.registry)
    t, c = time.perf_counter(), time.process_time()
    bt = Backtest(resolved, console=Console(file=io.StringIO()), progress=False, pm=pm, out_dir=str(folder / "one"))
    bt.loop()
    bt.report()
    return time.perf_counter() - t, time.process_time() - c


def sweep(path: Path, folder: Path, workers: int, executor: str = "local") -> dict:
    from rich.console import Console

    from strikebench.config import load_config
    from strikebench.research.sweep import Sweep

    t, c = time.perf_counter(), time.process_time()
    run = Sweep(load_config(path), folder=folder, workers=workers, executor=executor, progress=False,
                console=Console(file=io.StringIO()), fresh=True)
    result = run.run()
    wall, driver_cpu = time.perf_counter() - t, time.process_time() - c
    trials = result.trials
    inner = [r["seconds"] - r["backtest_seconds"] for r in trials if r.get("backtest_seconds")]
    per_worker_cpu: dict = {}
    per_worker_wall: dict = {}
    for r in trials:  # the study keeps each trial's worker (pid) and its CPU and wall seconds
        pid = r.get("pid") or r["index"]
        per_worker_cpu[pid] = per_worker_cpu.get(pid, 0.0) + (r.get("cpu_seconds") or 0.0)
        per_worker_wall[pid] = per_worker_wall.get(pid, 0.0) + (r.get("seconds") or 0.0)
    cpu = [r["cpu_seconds"] for r in trials if r.get("cpu_seconds") is not None]
    bcpu = [r["backtest_cpu_seconds"] for r in trials if r.get("backtest_cpu_seconds") is not None]
    return {"wall": wall, "driver_cpu": driver_cpu, "driver_loop_cpu": run.loop_cpu_seconds,
            "complete": result.complete, "failed": result.failed,
            "trial_seconds": sorted(r["seconds"] for r in trials),
            "in_worker_overhead_mean": sum(inner) / len(inner) if inner else None,
            "trial_cpu_mean": sum(cpu) / len(cpu) if cpu else None,
            "backtest_cpu_mean": sum(bcpu) / len(bcpu) if bcpu else None,
            "busiest_worker_cpu": max(per_worker_cpu.values()) if per_worker_cpu else None,
            "worker_busy_wall": sum(per_worker_wall.values()),
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
        # warm-up (imports, calendar, Optuna's storage, matplotlib), then the in-process backtest interleaved
        # with the sweeps, so a change of the machine's load falls on both; t is the best, t_cpu the median
        (tmp / "single").mkdir()
        single = _config(tmp / "single", args.sessions, 1)
        one_backtest(path, tmp)
        sweep(single, tmp / "warm", 1)
        runs = [one_backtest(path, tmp)]
        s0 = sweep(single, tmp / "s0", 1)
        runs.append(one_backtest(path, tmp))
        s1 = sweep(path, tmp / "s1", 1)
        runs.append(one_backtest(path, tmp))
        s2 = sweep(path, tmp / "s2", 2)
        runs.append(one_backtest(path, tmp))
        t = min(r[0] for r in runs)
        t_cpu = sorted(r[1] for r in runs)[len(runs) // 2 - 1: len(runs) // 2 + 1]
        t_cpu = sum(t_cpu) / len(t_cpu)
        sr = sweep(path, tmp / "sr", 2, "ray") if args.ray else None
        year = None
        if args.year:
            (tmp / "y").mkdir()
            year = one_backtest(_config(tmp / "y", 250, 1), tmp / "y")[1]
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
        "t_year_measured": year is not None,
    }
    # ---- figures robust to load: CPU seconds (a process's CPU time does not grow while it waits for a core)
    # t_cpu: one backtest in-process; a trial's CPU in its worker (trial_cpu) and its driver's CPU per trial;
    # S_cpu: the driver's CPU for a one-trial sweep (study, fork, outputs) beyond the trial; quiet(c): the
    # wall the sweep would take if each process had its own core = S_cpu + the busiest worker's CPU
    s_cpu = max(0.0, s0["driver_cpu"] + (s0["trial_cpu_mean"] or 0.0) - t_cpu)
    driver_per_trial = s1["driver_loop_cpu"] / n  # the driver's CPU while the trials ran, per trial
    figures.update({
        "t_cpu": t_cpu, "S_cpu": s_cpu, "driver_cpu_per_trial": driver_per_trial,
        "trial_cpu_mean_1": s1["trial_cpu_mean"], "trial_cpu_mean_2": s2["trial_cpu_mean"],
        "backtest_cpu_mean_1": s1["backtest_cpu_mean"],
        "o_cpu_per_trial": s1["trial_cpu_mean"] + driver_per_trial - t_cpu,
        "overhead_cpu_pct": 100 * (s1["trial_cpu_mean"] + driver_per_trial - t_cpu) / t_cpu,
        "overhead_cpu_in_worker_pct": 100 * (s1["trial_cpu_mean"] - s1["backtest_cpu_mean"]) / t_cpu,
        "k_cpu_2": s2["trial_cpu_mean"] / s1["trial_cpu_mean"],
        "utilization_2": s2["worker_busy_wall"] / (2 * s2["sweep_elapsed"]),
        "quiet_1": s_cpu + s1["busiest_worker_cpu"], "quiet_2": s_cpu + s2["busiest_worker_cpu"],
    })
    figures["efficiency_quiet_2"] = figures["quiet_2"] / (n * t_cpu / 2)
    figures["efficiency_quiet_2_beyond_S"] = s2["busiest_worker_cpu"] / (n * t_cpu / 2)
    o_cpu = s1["trial_cpu_mean"] + driver_per_trial - t_cpu
    figures["model_cpu_1"] = s_cpu + n * (t_cpu + o_cpu)
    figures["model_cpu_2"] = s_cpu + math.ceil(n / 2) * (t_cpu + o_cpu) * figures["k_cpu_2"]
    figures["n_for_1_15_on_32"] = _n_for(1.15, s_cpu, t_cpu, max(o_cpu, 0.0), 32)
    # the model at scale, in CPU seconds (what a quiet machine's wall is): a year's backtest measured (--year)
    # or scaled from the span; the overhead o as a fraction of the backtest; k from 2 workers here
    ty = year if year else t_cpu * 250 / args.sessions
    figures["t_year"] = ty
    o = max(o_cpu, 0.0)  # a trial's overhead is a fixed cost (config, run folder, summary, study), not per bar
    figures["n_for_1_15_on_32_year"] = _n_for(1.15, s_cpu, ty, o, 32)
    # the driver alone records trials: N x its CPU per trial bounds the wall however many workers there are
    d = max(driver_per_trial, 0.0)
    figures["driver_bound_trials_per_s"] = 1 / d if d else None
    figures["model_1000_year_32_cores_s"] = s_cpu + max(math.ceil(1000 / 32) * (ty + o) * figures["k_cpu_2"], 1000 * d)
    figures["model_1000_year_10x32_ray_s"] = s_cpu + 10 + max(math.ceil(1000 / 320) * (ty + o) * figures["k_cpu_2"],
                                                              1000 * d)
    for k, v in figures.items():
        print(f"{k:34s} {v:.3f}" if isinstance(v, float) else f"{k:34s} {v}")
    print(f"\nload average {figures['load_average'][0]:.1f} on {figures['cores']} cores "
          f"(wall figures include other processes' load; CPU figures do not)")
    print(f"trial overhead beyond the backtest (wall): {figures['overhead_per_trial_pct']:+.1f} % per trial "
          f"(target <= 5 %), {figures['overhead_in_worker_pct'] or 0:+.1f} % of it inside the worker; fixed per "
          f"sweep S = {start:.1f} s; all included at N = {n}: {figures['overhead_1_worker_pct']:+.1f} %")
    print(f"trial overhead beyond the backtest (CPU): {figures['overhead_cpu_pct']:+.1f} % (worker + driver per "
          f"trial vs one in-process backtest's {t_cpu:.2f} CPU s); inside the worker outside the loop "
          f"{figures['overhead_cpu_in_worker_pct']:+.1f} %; S_cpu {s_cpu:.1f} s")
    print(f"2 workers (wall): {s2['wall']:.1f} s for {n} trials = {figures['efficiency_2_workers']:.2f} x N t / 2, "
          f"{figures['efficiency_2_workers_beyond_S']:.2f} beyond S (target <= 1.15)")
    print(f"2 workers (CPU, each process on its own core): {figures['quiet_2']:.1f} s = "
          f"{figures['efficiency_quiet_2']:.2f} x N t_cpu / 2, {figures['efficiency_quiet_2_beyond_S']:.2f} beyond S; "
          f"k_cpu(2) {figures['k_cpu_2']:.2f}; workers busy {100 * figures['utilization_2']:.0f} % of the sweep")
    print(f"model wall(N, c) = S + ceil(N/c) (t + o) k(c), CPU units, vs the CPU projection: 1 core "
          f"{figures['model_cpu_1']:.1f} / {figures['quiet_1']:.1f} s, 2 cores {figures['model_cpu_2']:.1f} / "
          f"{figures['quiet_2']:.1f} s; wall model 1 core {figures['model_W1']:.1f} / measured {s1['wall']:.1f} s")
    print(f"per-trial overhead o = {o_cpu:+.3f} CPU s: {100 * o_cpu / t_cpu:+.1f} % of this span's backtest, "
          f"{100 * o_cpu / figures['t_year']:+.2f} % of a year's ({figures['t_year']:.1f} CPU s)")
    print(f"1.15 x N t / c with S included on 32 cores from N = {figures['n_for_1_15_on_32']} trials of this span, "
          f"N = {figures['n_for_1_15_on_32_year']} of a year")
    print(f"the driver records a trial in {d * 1000:.0f} CPU ms: at most {1 / d if d else float('inf'):.0f} trials/s "
          f"whatever the cores (a year trial every {ty / 320 if ty else 0:.3f} s on 320 cores)")
    print(f"1,000 trials of a year (t_year {ty:.1f} CPU s{'' if year else ', from the span'}): 32 cores "
          f"{figures['model_1000_year_32_cores_s'] / 60:.1f} min; 10 nodes x 32 cores on Ray "
          f"{figures['model_1000_year_10x32_ray_s'] / 60:.1f} min")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str) + "\n")


def _n_for(target: float, s: float, t: float, o: float, c: int) -> int | None:
    """The smallest N (a multiple of c) with S + (N / c)(t + o) <= target x N t / c."""
    if t * target <= t + o:
        return None
    n = math.ceil(s * c / (target * t - t - o))
    return max(c, math.ceil(n / c) * c)


if __name__ == "__main__":
    main()
