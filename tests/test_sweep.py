"""Sweeps: the grid covers exactly the product of the spaces, a best config's YAML reproduces its trial
under `strikebench backtest`, a failing trial is recorded and the sweep goes on, a killed sweep resumes
without redoing a finished trial, and the same seed gives the same trials on local processes and Ray.

Spans are two or three sessions and budgets four to eight trials, so the file stays within seconds of
trial time; `SB_SWEEP_TRIALS=20` runs the local-vs-Ray comparison with more trials.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from strikebench.cli import main
from strikebench.config import load_config

BASE = {
    "name": "sw",
    "data": {"source": "synthetic", "seed": 42, "start": "2023-03-08", "end": "2023-03-10"},
    "broker": {"name": "backtest", "params": {"initial_cash": 100000},
               "fill_model": {"name": "mid_slippage", "params": {"k": 0.3}}},
    "strategies": [{"name": "credit_vertical",
                    "params": {"dte_targets": [3, 5], "entry_times": ["10:00", "11:00"], "short_deltas": [0.1, 0.2],
                               "width": 25}}],
    "risk": [{"name": "max_open_trades", "params": {"limit": 2}}],
    "output": {"plots": False},
}

#: figures of a run that a trial and its rerun must share exactly
FIGURES = ("final_equity", "final_cash", "realized_pnl", "fees", "trades", "open_trades", "win_rate", "max_drawdown",
           "max_drawdown_per_bar", "return_pct", "worst_day", "best_day", "sharpe", "decisions", "sessions",
           "config_hash")


def write_config(tmp_path: Path, sweep: dict, name: str = "sw.yaml", **changes) -> Path:
    cfg = json.loads(json.dumps(BASE))
    cfg["output"]["dir"] = str(tmp_path / "runs")
    for key, value in changes.items():
        cfg[key] = value
    cfg["sweep"] = sweep
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _sweep(path: Path, folder: Path, **kwargs):
    from strikebench.research.sweep import Sweep

    return Sweep(load_config(path), folder=folder, progress=False, **kwargs).run()


GRID = {
    "sampler": "grid",
    "space": {"data.start": {"choices": ["2023-03-08", "2023-03-09"]},
              "data.end": {"choices": ["2023-03-08", "2023-03-10"]}},
    "objectives": [{"name": "return_pct", "direction": "maximize"},
                   {"name": "max_drawdown", "direction": "minimize"}],
    "best": 2,
}


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    path = write_config(tmp, GRID)
    return path, _sweep(path, tmp / "sweep", workers=2)


def test_grid_covers_exactly_the_product_and_a_bad_combination_is_a_recorded_failure(grid_sweep):
    path, result = grid_sweep
    product = list(itertools.product(["2023-03-08", "2023-03-09"], ["2023-03-08", "2023-03-10"]))
    seen = [(str(r["params"]["data.start"]), str(r["params"]["data.end"])) for r in result.trials]
    assert sorted(seen) == sorted(product) and len(seen) == len(set(seen)) == 4
    # start 03-09 with end 03-08 is an invalid span: that trial fails with the config's own message,
    # and every other trial of the sweep still completes
    failed = {(s, r["error"]) for s, r in zip(seen, result.trials) if r["state"] == "fail"}
    assert {s for s, _ in failed} == {("2023-03-09", "2023-03-08")}
    assert all("end 2023-03-08 is before start 2023-03-09" in e for _, e in failed)
    assert result.complete == 3 and result.failed == 1
    # one, two or three sessions: the span each trial ran is the one it asked for
    for s, r in zip(seen, result.trials):
        if r["state"] == "complete":
            start, end = dt_date(s[0]), dt_date(s[1])
            assert r["summary"]["sessions"] == sum(1 for d in (8, 9, 10) if start.day <= d <= end.day)
    folder = result.folder
    assert (folder / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "trials.csv").read_text().count("\n") == 5
    # the study is a real Optuna SQLite file holding every trial's summary
    import optuna

    study = optuna.load_study(study_name="sw", storage=f"sqlite:///{folder / 'study.sqlite3'}")
    assert len(study.trials) == 4 and all("summary" in t.user_attrs for t in study.trials if t.values)


def dt_date(s):
    import datetime as dt

    return dt.date.fromisoformat(str(s))


def test_best_yaml_rerun_with_backtest_gives_the_trials_figures_exactly(grid_sweep, tmp_path, capsys):
    path, result = grid_sweep
    # the written best are the Pareto front (at most `best: 2`), best return first: checked by hand
    done = [r for r in result.trials if r["state"] == "complete"]
    front = [r for r in done if not any(o["values"][0] >= r["values"][0] and o["values"][1] <= r["values"][1]
                                        and o["values"] != r["values"] for o in done)]
    front.sort(key=lambda r: (-r["values"][0], r["index"]))
    assert [b["index"] for b in result.best] == [r["index"] for r in front[:2]]
    for best in result.best:
        text = Path(best["yaml"]).read_text()
        assert "sweep" not in yaml.safe_load(text)
        runs = path.parent / "runs"
        before = set(runs.iterdir()) if runs.exists() else set()
        assert main(["backtest", best["yaml"], "--quiet"]) == 0  # the file as written, untouched
        (run_dir,) = set(runs.iterdir()) - before
        rerun = json.loads((run_dir / "summary.json").read_text())
        trial = best["summary"]
        assert {k: rerun[k] for k in FIGURES} == {k: trial[k] for k in FIGURES}
        assert [rerun["return_pct"], rerun["max_drawdown"]] == best["values"]
        # a trader's check of the figures themselves, from the rerun's trades.csv (cents)
        import csv

        rows = list(csv.DictReader((run_dir / "trades.csv").open()))
        pnl_c = sum(round(float(r["realized_pnl"]) * 100) for r in rows if r["realized_pnl"])
        assert pnl_c == round(trial["realized_pnl"] * 100)
        if trial["open_trades"] == 0:
            assert round(trial["final_equity"] * 100) == 100000 * 100 + pnl_c
            assert trial["return_pct"] == round(pnl_c / 100000, 6)  # percent of 100,000.00


def _complete_rows(storage: Path) -> list[tuple]:
    if not storage.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{storage}?mode=ro", uri=True)
    except sqlite3.Error:
        return []
    try:
        return db.execute("SELECT t.number, a.value_json, t.datetime_complete FROM trials t JOIN trial_user_attributes a "
                          "ON a.trial_id = t.trial_id AND a.key = 'index' WHERE t.state = 'COMPLETE'").fetchall()
    except sqlite3.Error:
        return []
    finally:
        db.close()


def test_a_killed_sweep_resumes_without_redoing_a_finished_trial(tmp_path):
    path = write_config(tmp_path, {"sampler": "grid", "space": {"strategies[0].params.width": {"choices": [10, 15, 20]}},
                                   "objectives": [{"name": "final_equity", "direction": "maximize"}]})
    folder = tmp_path / "sweep"
    exe = Path(sys.executable).with_name("strikebench")
    proc = subprocess.Popen([str(exe), "sweep", str(path), "--dir", str(folder), "--workers", "1", "--quiet"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    storage = folder / "study.sqlite3"
    deadline = time.monotonic() + 120
    try:
        while not _complete_rows(storage) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-sweep
        proc.wait()
    first = _complete_rows(storage)
    assert 1 <= len(first) < 3, proc.stderr.read().decode()[-2000:]
    first_idx = {int(json.loads(v)) for _, v, _ in first}
    max_number = max(n for n, _, _ in first)

    result = _sweep(path, folder, workers=2)  # the same sweep again: it resumes
    assert result.complete == 3 and result.failed == 0 and not result.interrupted
    after = _complete_rows(storage)
    assert set(first) <= set(after)  # the finished trials are kept as they were (number, time)
    indices = [int(json.loads(v)) for _, v, _ in after]
    assert sorted(indices) == [0, 1, 2]  # each grid point completed exactly once
    redone = {int(json.loads(v)) for n, v, _ in after if n > max_number}
    assert redone == {0, 1, 2} - first_idx  # only what had not finished ran again
    # a trial that was running when the driver died is recorded as interrupted, not as a result
    import optuna

    study = optuna.load_study(study_name="sw", storage=f"sqlite:///{storage}")
    for t in study.trials:
        if t.state.name == "FAIL":
            assert t.user_attrs.get("interrupted") is True and "summary" not in t.user_attrs
            assert int(t.user_attrs["index"]) not in first_idx


TPE = {
    "sampler": "tpe", "trials": 4, "batch": 2, "startup_trials": 2, "seed": 11,
    "space": {"strategies[0].params.width": {"low": 10, "high": 30, "step": 5},
              "strategies[0].params.take_profit_pct": {"low": 0.3, "high": 0.8, "step": 0.1}},
    "objectives": [{"name": "return_pct", "direction": "maximize"}],
}


def _rows(result):
    return [(r["index"], r["params"], r["values"], {k: (r["summary"] or {}).get(k) for k in FIGURES})
            for r in result.trials]


def test_same_seed_same_trials_on_local_processes_and_on_ray(tmp_path, monkeypatch):
    """TPE trials proposed one at a time (batch 1: the second comes from the first's result) on two
    local workers, then on a local Ray started here with one: the same trials."""
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    n = int(os.environ.get("SB_SWEEP_TRIALS", "2"))
    sweep = dict(TPE, trials=n, batch=1, startup_trials=1)
    path = write_config(tmp_path, sweep, data=dict(BASE["data"], start="2023-03-09"))
    local = _sweep(path, tmp_path / "local", workers=2)
    on_ray = _sweep(path, tmp_path / "ray", workers=1, executor="ray")
    assert local.complete == on_ray.complete == n
    assert _rows(local) == _rows(on_ray)
    assert any(r[3]["trades"] or r[3]["open_trades"] for r in _rows(local))  # real trading was compared


@pytest.mark.parametrize("sweep, expected", [
    ({**TPE, "samplr": "tpe"}, "sw.yaml:{samplr}: sweep: unknown key 'samplr' (allowed: "),
    ({**TPE, "space": {"strategies[0].params.widht": {"low": 10, "high": 30}}},
     "sweep.space.strategies[0].params.widht: with 10: strategies[0].params: unknown key 'widht'"),
    ({**TPE, "space": {"strategies[0].params.width": {"low": -5, "high": 30}}},
     "sweep.space.strategies[0].params.width: with -5: strategies[0].params.width: -5 is not allowed"),
    ({**TPE, "objectives": [{"name": "retrun_pct", "direction": "maximize"}]},
     "sweep.objectives[0].name: 'retrun_pct' is not allowed: not a summary figure"),
    ({**TPE, "sampler": "grid", "space": {"broker.fill_model.params.k": {"low": 0.1, "high": 0.5}}},
     "sweep: the grid needs a finite space; broker.fill_model.params.k is a float range without step"),
    ({**TPE, "space": {"strategies[0].params.side": {"choices": ["put", "sideways"]}}},
     "sweep.space.strategies[0].params.side: with 'sideways':"),
])
def test_a_bad_sweep_section_is_one_line_and_exit_2(tmp_path, capsys, sweep, expected):
    path = write_config(tmp_path, sweep)
    lines = path.read_text().splitlines()
    if "{samplr}" in expected:
        expected = expected.replace("{samplr}", str(lines.index("  samplr: tpe") + 1))  # the misspelled key's line
    assert main(["sweep", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert expected in " ".join(err.split()), err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing written


def _dies_on(task):  # runs in a forked worker: trial 1 kills its worker once, trial 2 every time
    from strikebench.research import trial as trial_module

    marker = Path(task["out_dir"]).parent / f"died-{task['index']}"
    if task["index"] == 2 or (task["index"] == 1 and not marker.exists()):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        os._exit(9)
    return trial_module._real_run_trial(task)


def test_a_worker_that_dies_fails_only_its_trial_and_the_sweep_goes_on(tmp_path, monkeypatch):
    from strikebench.research import trial as trial_module

    monkeypatch.setattr(trial_module, "_real_run_trial", trial_module.run_trial, raising=False)
    monkeypatch.setattr(trial_module, "run_trial", _dies_on)
    path = write_config(tmp_path, {"sampler": "grid", "space": {"strategies[0].params.width": {"choices": [10, 15, 20]}},
                                   "objectives": [{"name": "final_equity", "direction": "maximize"}]},
                        data=dict(BASE["data"], start="2023-03-10"))
    result = _sweep(path, tmp_path / "sweep", workers=1)
    states = {r["index"]: (r["state"], r["error"]) for r in result.trials}
    assert states[0] == ("complete", None) and states[1] == ("complete", None)  # lost once, run again
    assert states[2][0] == "fail" and states[2][1].startswith("worker lost: BrokenProcessPool")


def _signal_then_sleep(event):
    event.set()
    time.sleep(30)


def test_a_forked_worker_does_not_keep_a_dead_drivers_folder_locked(tmp_path):
    """The driver dies (its lock file closed without an unlock, as the kernel does on SIGKILL) while a forked worker
    still runs: the folder can be locked again at once (the worker closed its inherited copy when it was forked)."""
    import multiprocessing

    from strikebench.research.sweep import _lock

    lock = _lock(tmp_path)
    ctx = multiprocessing.get_context("fork")
    running = ctx.Event()
    child = ctx.Process(target=_signal_then_sleep, args=(running,))
    child.start()
    try:
        assert running.wait(30)  # the worker runs (its at-fork handlers are done)
        lock.fh.close()  # the driver's death: its descriptor closed, never unlocked
        _lock(tmp_path).close()  # refused ("another sweep is running") if the worker still held the lock
    finally:
        child.kill()
        child.join()
