"""One trial of a sweep, as a worker runs it: the config with the trial's values, one backtest.

A trial is exactly ``strikebench backtest CONFIG --set PATH=VALUE ...``: the same config loading,
the same :class:`~strikebench.engine.runner.Backtest` with every configured plugin, risk manager
and the journal, the same summary (from the journal). That is why a best config's YAML, run with
``strikebench backtest``, reproduces the trial's figures exactly.

A worker process keeps the plugin manager and the market of the last data section it saw, so
trials that share a market (the same seed, span and scenario) build it once per worker. The
synthetic market is deterministic and read-only under a run, so sharing it changes nothing
(tested: a trial equals a fresh backtest of its YAML).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["run_trial", "TrialTask"]

TrialTask = dict  # {"config", "overrides", "values", "out_dir", "keep_run", "index"}

_state: dict[str, Any] = {}


def _worker_setup() -> None:
    """Once per worker process: Ctrl-C belongs to the driver, and a worker whose driver died exits."""
    import signal

    if _state.get("setup"):
        return
    _state["setup"] = True
    if threading.current_thread() is threading.main_thread():
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:
            pass
    parent = os.getppid()

    def _orphan_watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)

    if os.environ.get("STRIKEBENCH_TRIAL_WATCH_PARENT", "1") == "1" and parent != 1:
        threading.Thread(target=_orphan_watch, daemon=True, name="strikebench-orphan-watch").start()


def warm_up() -> None:
    """In the driver, before forking workers: load what every trial needs once (code, plugins)."""
    import strikebench.engine.runner  # noqa: F401 - backtrader, pandas, the engine
    import strikebench.report  # noqa: F401

    _plugin_manager()


def _plugin_manager():
    pm = _state.get("pm")
    if pm is None:
        from strikebench.plugin_manager import get_plugin_manager

        pm = _state["pm"] = get_plugin_manager()
    return pm


def _market(resolved):
    """The market of this data section: built once per worker while the section stays the same."""
    key = json.dumps([resolved.config.data.source, resolved.data.params.model_dump(mode="json")], sort_keys=True)
    cached = _state.get("market")
    if cached is not None and cached[0] == key:
        return cached[1], False
    market = resolved.data.build().open()
    _state["market"] = (key, market)
    return market, True


def run_trial(task: TrialTask) -> dict:
    """Run one trial; never raises: a failure comes back as ``{"error": "one line"}``."""
    from rich.console import Console

    from strikebench.config import load_config
    from strikebench.engine.runner import Backtest

    _worker_setup()
    started = time.perf_counter()
    cpu_started = time.process_time()
    out: dict[str, Any] = {"index": task["index"], "pid": os.getpid(), "host": os.uname().nodename}
    run_parent = None
    try:
        pm = _plugin_manager()
        values = task["values"]
        if task.get("scenario"):  # a scenario search: the trial's scenario file becomes data.scenario
            from strikebench.research.scenario_search import prepare_trial

            values = prepare_trial(task)
            out["scenario_file"] = values["data.scenario"]
        resolved = load_config(task["config"], task.get("overrides", ()), registry=pm.registry, values=values)
        market, out["market_built"] = _market(resolved)
        if task.get("plausible") is not None:  # the market's facts against the bounds, before any backtest
            from strikebench.research.scenario_search import implausibility, market_facts

            out["market_facts"] = market_facts(market)
            problems = implausibility(out["market_facts"], task["plausible"])
            if problems:
                out["infeasible"] = "; ".join(problems)
                out["error"] = f"implausible market: {out['infeasible']}"
                return _finish(out, started, cpu_started)
        Path(task["out_dir"]).mkdir(parents=True, exist_ok=True)
        run_parent = tempfile.mkdtemp(prefix=f"trial-{task['index']:05d}-", dir=task["out_dir"])
        t0 = time.perf_counter()
        c0 = time.process_time()
        bt = Backtest(resolved, console=Console(file=io.StringIO()), progress=False, pm=pm, out_dir=run_parent,
                      market=market)
        bt.loop()
        summary = bt.report()
        out["backtest_seconds"] = time.perf_counter() - t0
        out["backtest_cpu_seconds"] = time.process_time() - c0
        out["summary"] = json.loads(json.dumps(summary, default=str))
        if task.get("equity"):  # each session's closing equity, from the journal (walk-forward stitches them)
            from strikebench.report import open_run

            journal, run = open_run(bt.run_dir)
            try:
                eq = journal.equity(run["run_id"])
                out["equity"] = [[str(d), round(float(v), 2)] for d, v in zip(eq["day"], eq["equity"])]
            finally:
                journal.close()
        if task.get("keep_run"):
            out["run_dir"] = str(bt.run_dir)
    except Exception as exc:  # noqa: BLE001 - a trial's failure is its result
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        out["error"] = f"{type(exc).__name__}: {text}" if not _is_user_error(exc) else text
    finally:
        if run_parent is not None and not task.get("keep_run"):
            shutil.rmtree(run_parent, ignore_errors=True)
    return _finish(out, started, cpu_started)


def _finish(out: dict, started: float, cpu_started: float) -> dict:
    """A trial's wall and CPU seconds (this worker's process time: robust to other load on the machine)."""
    out["seconds"] = time.perf_counter() - started
    out["cpu_seconds"] = time.process_time() - cpu_started
    return out


def _is_user_error(exc: BaseException) -> bool:
    from strikebench.errors import StrikebenchError

    return isinstance(exc, StrikebenchError)
