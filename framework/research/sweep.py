"""``strikebench sweep``: trials of a config's ``sweep:`` section, in parallel, into an Optuna study.

The driver (this module) is the only process that touches the study: it proposes each trial's
parameters, hands trials to an executor (local processes or Ray), and records every result (the
run's whole summary as the trial's ``summary`` attribute, the objectives as its values, a
failure's one-line error as ``error``).

Trials are numbered by an ``index`` (0 .. budget-1) whose parameters never depend on timing:

* grid: the index-th combination; random: drawn from a generator seeded by (seed, index);
* tpe / nsga2: proposed in batches of ``sweep.batch`` from the trials of the batches before, with
  the sampler reseeded per batch, so the same seed and batch give the same trials on any machine,
  any number of workers, local or Ray.

Interrupted (Ctrl-C, SIGTERM, SIGKILL, a lost machine), the same command resumes: finished trials
(complete or failed) are kept, trials that were running are run again with the same parameters.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import fcntl
import hashlib
import json
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from strikebench.errors import ConfigError, StrikebenchError

__all__ = ["Sweep", "SweepResult", "run_sweep", "sweep_folder", "study_storage"]

STUDY_FILE = "study.sqlite3"
_INDEX = "index"
_INTERRUPTED = "interrupted"


def sweep_folder(resolved, folder: str | None = None) -> Path:
    """The sweep's folder: ``--dir``, else ``OUTPUT_DIR/NAME-sweep`` (fixed, so the same command resumes)."""
    return Path(folder) if folder else Path(resolved.config.output.dir) / f"{resolved.config.name}-sweep"


def study_storage(spec, folder: Path) -> str:
    return spec.storage or f"sqlite:///{(folder / STUDY_FILE).resolve()}"


@dataclass
class SweepResult:
    folder: Path
    study_name: str
    storage: str
    budget: int
    complete: int
    failed: int
    interrupted: bool
    elapsed: float
    best: list[dict] = field(default_factory=list)  # [{"index", "number", "params", "values", "yaml"}]
    trials: list[dict] = field(default_factory=list)  # every finished trial, by index


class Sweep:
    """One sweep (or one walk-forward window's in-sample sweep) over a resolved config.

    A subclass (the scenario search) changes what a trial is through :meth:`make_task`,
    :meth:`record_extra`, :meth:`best_yaml` and the extra ``trials.csv`` columns."""

    kind = "sweep"
    best_dir = "best"
    best_prefix = "best"
    best_title = "best so far"

    def __init__(self, resolved, *, folder: str | Path | None = None, fresh: bool = False,
                 executor: str | None = None, address: str | None = None, workers: int | None = None,
                 trials: int | None = None, console: Console | None = None, progress: bool = True,
                 base_values: dict[str, Any] | None = None, study_name: str | None = None, pool=None,
                 outputs: bool = True, plots: bool = True, spec=None):
        if spec is None and resolved.config.sweep is None:
            raise ConfigError(f"{resolved.source_path}: no `sweep:` section; add one (see docs/research.md)")
        self.resolved = resolved
        self.spec = spec if spec is not None else resolved.config.sweep
        self.console = console or Console()
        self.show_progress = progress
        self.folder = Path(folder) if folder else sweep_folder(resolved)
        self.fresh = fresh
        self.executor_kind = executor or self.spec.executor
        self.address = address if address is not None else self.spec.ray_address
        self.workers = workers or self.spec.workers
        self.budget = trials or self.spec.budget()
        if self.spec.sampler == "grid":  # at most every combination once
            self.budget = min(self.budget, len(self.spec.grid_points()))
        self.base_values = dict(base_values or {})
        self.study_name = study_name or resolved.config.name
        self.storage = study_storage(self.spec, self.folder)
        self._pool = pool  # an executor shared by several sweeps (walk-forward windows)
        self.outputs = outputs
        self.plots = plots
        self.names = list(self.spec.space)
        self.objectives = list(self.spec.objectives)

    # ------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        """What makes two sweeps the same study: the run config, the spaces, sampler, seed, objectives."""
        from strikebench.config import RESEARCH_SECTIONS

        spec = self.spec.model_dump(mode="json", include={"sampler", "space", "objectives", "seed", "startup_trials"})
        run = self.resolved.config.model_dump(mode="json", exclude={*RESEARCH_SECTIONS, "output", "journal"})
        identity = {"run": run, "sweep": spec, "base": self.base_values}
        extra = self.fingerprint_extra()
        if extra:
            identity["extra"] = extra
        blob = json.dumps(identity, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def fingerprint_extra(self) -> dict:
        """What else makes the study (a subclass's own settings)."""
        return {}

    def make_task(self, index: int, params: dict) -> dict:
        """What a worker gets for trial ``index`` with ``params`` (plain data: it crosses to Ray nodes)."""
        return {"config": self.resolved.source_path, "overrides": list(self.resolved.overrides),
                "values": {**self.base_values, **params}, "index": index,
                "out_dir": str(self.folder / "trials"), "keep_run": self.spec.keep_runs}

    def record_extra(self, trial, result: dict) -> None:
        """A subclass's attributes of a finished trial (before its state is told)."""

    def csv_extra_columns(self) -> list[str]:
        return []

    def csv_extra(self, row: dict) -> list:
        return []

    # ------------------------------------------------------------ study
    def _open_study(self):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        directions = [o.direction for o in self.objectives]
        if self.fresh:
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=self.study_name, storage=self.storage)
        _wal_for_a_new_study_file(self.folder / STUDY_FILE if self.spec.storage is None else None)
        try:
            study = optuna.create_study(storage=self.storage, study_name=self.study_name, directions=directions,
                                        load_if_exists=True, sampler=optuna.samplers.RandomSampler(seed=self.spec.seed))
        except Exception as exc:  # a bad URL, a database that refuses, a foreign file
            raise ConfigError(f"sweep.storage: cannot open the study at {_safe_url(self.storage)}: "
                              f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                              ) from None
        attrs = study.user_attrs
        fp = self.fingerprint()
        if "strikebench_fingerprint" not in attrs:
            study.set_user_attr("strikebench_fingerprint", fp)
            study.set_user_attr("strikebench_batch", self._default_batch())
            study.set_user_attr("strikebench_created", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        elif attrs["strikebench_fingerprint"] != fp or [d.name.lower() for d in study.directions] != directions:
            raise ConfigError(
                f"{self.folder}: the study '{self.study_name}' there was made by a different config or sweep "
                f"section (spaces, sampler, seed, objectives or the run itself changed); run with --fresh to "
                f"start it over, or --dir for a new folder")
        self.batch = int(study.user_attrs.get("strikebench_batch") or self._default_batch())
        return study

    def _default_batch(self) -> int:
        if self.spec.batch:
            return self.spec.batch
        from strikebench.research.executors import cores

        workers = self.workers or cores()
        return max(self.spec.batch_size(), workers) if self.spec.sampler == "tpe" else self.spec.batch_size()

    def _sampler(self, batch_no: int):
        import optuna

        seed = (self.spec.seed * 1_000_003 + batch_no) % 2**32
        if self.spec.sampler == "tpe":
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.spec.startup_trials,
                                                  multivariate=True, constant_liar=True)
        if self.spec.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, self.batch))
        return optuna.samplers.RandomSampler(seed=seed)

    def _distributions(self) -> dict:
        return {n: self.spec.space[n].distribution() for n in self.names}

    # ------------------------------------------------------------ parameters by index
    def _params_for(self, index: int) -> dict[str, Any]:
        """grid and random: the parameters of trial ``index`` (independent of every other trial)."""
        if self.spec.sampler == "grid":
            return self._grid[index]
        import numpy as np

        rng = np.random.default_rng([self.spec.seed, index])
        out = {}
        for n in self.names:
            s = self.spec.space[n]
            grid = s.grid()
            if s.kind == "choice" or (grid is not None and not s.log):
                out[n] = grid[int(rng.integers(len(grid)))]
            elif s.log:
                v = math.exp(rng.uniform(math.log(s.low), math.log(s.high)))
                out[n] = min(max(int(round(v)), int(s.low)), int(s.high)) if s.kind == "int" else float(v)
            else:
                out[n] = float(rng.uniform(s.low, s.high))
        return out

    # ------------------------------------------------------------ run
    def run(self) -> SweepResult:
        from strikebench.userfiles import make_dir

        make_dir(self.folder, key="--dir", exist_ok=True)
        lock = _lock(self.folder)
        try:
            return self._run()
        finally:
            lock.close()

    def _run(self) -> SweepResult:
        import optuna
        from optuna.trial import TrialState

        study = self._open_study()
        if self.spec.sampler == "grid":
            self._grid = self.spec.grid_points()
        dists = self._distributions()
        finished: dict[int, Any] = {}
        redo: list[tuple[int, dict]] = []
        for t in study.get_trials(deepcopy=False):
            idx = t.user_attrs.get(_INDEX)
            if idx is None:
                continue
            if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and "error" in t.user_attrs):
                finished.setdefault(idx, t)
            elif t.state in (TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL):
                # a trial a driver never finished (it was stopped or killed): recorded as failed and
                # interrupted, and run again with the same parameters
                if t.state != TrialState.FAIL:  # (a failed trial without an error was already marked)
                    study._storage.set_trial_user_attr(t._trial_id, _INTERRUPTED, True)
                    # (a WAITING one was enqueued but never started; `tell` refuses it, the storage does not)
                    study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                redo.append((idx, dict(t.params)))
        # an interrupted trial may have been redone and finished since: drop those from the redo list
        redo = [(i, p) for i, p in sorted(redo, key=lambda x: x[0]) if i not in finished and i < self.budget]
        seen = set()
        redo = [(i, p) for i, p in redo if not (i in seen or seen.add(i))]

        started = time.perf_counter()
        pool = self._pool
        own_pool = pool is None
        queue: list[tuple[int, dict | None, Any]] = [(i, p, None) for i, p in redo]  # (index, params, asked trial)
        queued = {i for i, *_ in queue}
        next_index = 0
        running: dict[Any, tuple[int, Any, float]] = {}
        lost: set[int] = set()
        interrupted = False
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                            TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                            console=self.console, disable=not self.show_progress)
        task_id = progress.add_task(f"{self.kind} {self.study_name}", total=self.budget,
                                    completed=len([i for i in finished if i < self.budget]), status="")
        live = Live(Group(progress, self._best_table(finished)), console=self.console, refresh_per_second=4,
                    transient=False) if self.show_progress else contextlib.nullcontext()
        previous_term = _sigterm_as_interrupt()
        try:
            if pool is None:
                from strikebench.research.executors import make_executor

                pool = make_executor(self.executor_kind, self.workers, self.address)
            self.worker_count = pool.workers
            loop_cpu = time.process_time()
            with live:
                while True:
                    # fill free workers
                    while len(running) < pool.workers:
                        item = self._next(study, dists, queue, queued, finished, running)
                        if item is None:
                            break
                        index, params, trial = item
                        if trial is None:
                            study.enqueue_trial(params, user_attrs={_INDEX: index})
                            trial = study.ask(dists)
                        task = self.make_task(index, dict(trial.params))
                        running[pool.submit(task)] = (index, trial, time.perf_counter())
                    if not running:
                        break
                    for handle in pool.wait(list(running), timeout=0.5):
                        index, trial, t0 = running.pop(handle)
                        result = pool.result(handle)
                        if result.get("lost") and index not in lost:
                            # its worker died (maybe because of another trial): recorded as interrupted and
                            # run once more with the same parameters; lost twice, it is a failure
                            lost.add(index)
                            trial.set_user_attr(_INTERRUPTED, True)
                            trial.set_user_attr("lost", result["error"])
                            study.tell(trial, state=TrialState.FAIL)
                            queue.append((index, dict(trial.params), None))
                            continue
                        frozen = self._record(study, trial, index, result)
                        finished[index] = frozen
                        progress.update(task_id, completed=len([i for i in finished if i < self.budget]),
                                        status=self._status(finished))
                        if self.show_progress:
                            live.update(Group(progress, self._best_table(finished)))
            # the driver's own CPU while trials ran (proposing, recording, the display): per trial, it bounds
            # how many trials a second one driver can take (benchmarks/research_bench.py)
            self.loop_cpu_seconds = time.process_time() - loop_cpu
        except KeyboardInterrupt:
            interrupted = True
        finally:
            signal.signal(signal.SIGTERM, previous_term)
            if own_pool and pool is not None:
                pool.close(cancel=interrupted or bool(running))
        elapsed = time.perf_counter() - started
        result = self._result(study, finished, interrupted, elapsed)
        if self.outputs:
            self.write_outputs(study, result)
        if interrupted:
            self.console.print(f"[yellow]interrupted[/]: {result.complete + result.failed} of {result.budget} trials "
                               f"done; the same command resumes ({len(running)} running trial(s) will run again)")
        return result

    def _next(self, study, dists, queue, queued, finished, running):
        """The next trial to start: a redo, the next index, or (tpe/nsga2) a new batch when the last is done."""
        while queue:
            index, params, trial = queue.pop(0)
            if index not in finished:
                return index, params, trial
        active = {i for i, _, _ in running.values()}
        nxt = next((i for i in range(self.budget) if i not in finished and i not in active and i not in queued), None)
        if nxt is None:
            return None
        if self.spec.sampler in ("grid", "random"):
            queued.add(nxt)
            return nxt, self._params_for(nxt), None
        # tpe / nsga2: a batch is proposed when every trial before it is finished
        if running:
            return None
        batch_no = nxt // self.batch
        start = batch_no * self.batch
        if any(i not in finished for i in range(start)):
            return None  # cannot happen once nothing runs, kept as a guard
        study.sampler = self._sampler(batch_no)
        for i in range(start, min(start + self.batch, self.budget)):
            if i in finished or i in queued or i in active:
                continue
            trial = study.ask(dists)
            trial.set_user_attr(_INDEX, i)
            queue.append((i, dict(trial.params), trial))
            queued.add(i)
        if not queue:
            return None
        index, params, trial = queue.pop(0)
        return index, params, trial

    def _record(self, study, trial, index: int, result: dict):
        from optuna.trial import TrialState

        # the worker's figures in one attribute: each set_user_attr is a transaction of the study's database,
        # and the driver's time per trial bounds a sweep on many cores
        trial.set_user_attr("worker", {k: result[k] for k in _WORKER_FIGURES if k in result})
        self.record_extra(trial, result)
        values = None
        if "error" not in result:
            summary = result["summary"]
            trial.set_user_attr("summary", summary)
            if result.get("run_dir"):
                trial.set_user_attr("run_dir", result["run_dir"])
            values = [o.value(summary) for o in self.objectives]
            missing = [o.name for o, v in zip(self.objectives, values) if v is None]
            if missing:
                result["error"] = f"objective {', '.join(missing)} is undefined for this run " \
                                  f"(e.g. a win rate with no closed trade)"
        if "error" in result:
            trial.set_user_attr("error", result["error"])
            return study.tell(trial, state=TrialState.FAIL)
        return study.tell(trial, values)

    # ------------------------------------------------------------ views
    def _ranked(self, finished: dict) -> list:
        from optuna.trial import TrialState

        done = [t for t in finished.values() if t.state == TrialState.COMPLETE]
        if len(self.objectives) == 1:
            sign = -1 if self.objectives[0].direction == "maximize" else 1
            return sorted(done, key=lambda t: (sign * t.values[0], t.user_attrs[_INDEX]))
        front = _pareto(done, [o.direction for o in self.objectives])
        sign = -1 if self.objectives[0].direction == "maximize" else 1
        return sorted(front, key=lambda t: (sign * t.values[0], t.user_attrs[_INDEX]))

    def _status(self, finished: dict) -> str:
        from optuna.trial import TrialState

        failed = sum(1 for t in finished.values() if t.state == TrialState.FAIL and "infeasible" not in t.user_attrs)
        infeasible = sum(1 for t in finished.values() if "infeasible" in t.user_attrs)
        best = self._ranked(finished)
        text = "  ".join(x for x in (f"failed {failed}" if failed else "",
                                     f"infeasible {infeasible}" if infeasible else "") if x)
        if best:
            o = self.objectives[0]
            text += ("  " if text else "") + f"best {o.name} {best[0].values[0]:,.4g}"
        return text

    def _best_table(self, finished: dict, rows: int = 5) -> Table:
        multi = len(self.objectives) > 1
        title = "Pareto front (best first objective first)" if multi else self.best_title
        table = Table(title=title, title_justify="left", header_style="bold")
        table.add_column("trial", justify="right")
        for n in self.names:
            table.add_column(escape(n.split(".")[-1]), justify="right")
        for o in self.objectives:
            table.add_column(escape(f"{o.name} ({'max' if o.direction == 'maximize' else 'min'})"), justify="right")
        for t in self._ranked(finished)[:rows]:
            table.add_row(str(t.user_attrs[_INDEX]), *(escape(_show(t.params.get(n))) for n in self.names),
                          *(f"{v:,.4f}".rstrip("0").rstrip(".") for v in t.values))
        return table

    # ------------------------------------------------------------ results and files
    def _result(self, study, finished: dict, interrupted: bool, elapsed: float) -> SweepResult:
        from optuna.trial import TrialState

        rows = []
        for index in sorted(finished):
            t = finished[index]
            w = _worker_figures(t)
            rows.append({"index": index, "number": t.number, "state": t.state.name.lower(),
                         "params": {n: t.params.get(n) for n in self.names},
                         "values": list(t.values) if t.values else None, "error": t.user_attrs.get("error"),
                         **{k: w.get(k) for k in _WORKER_FIGURES},
                         "market_facts": t.user_attrs.get("market_facts"),
                         "infeasible": t.user_attrs.get("infeasible"),
                         "summary": t.user_attrs.get("summary")})
            if rows[-1]["infeasible"]:
                rows[-1]["state"] = "infeasible"
        best = [{"index": t.user_attrs[_INDEX], "number": t.number, "params": dict(t.params),
                 "values": list(t.values), "summary": t.user_attrs.get("summary"),
                 "market_facts": t.user_attrs.get("market_facts")}
                for t in self._ranked(finished)[: self.spec.best]]
        return SweepResult(self.folder, self.study_name, self.storage, self.budget,
                           sum(1 for t in finished.values() if t.state == TrialState.COMPLETE),
                           sum(1 for t in finished.values() if t.state == TrialState.FAIL),
                           interrupted, elapsed, best, rows)

    def best_yaml(self, entry: dict) -> str:
        """A best trial's config as a ready-to-run YAML (no sweep section): ``strikebench backtest`` it."""
        from strikebench.config import load_config

        resolved = load_config(self.resolved.source_path, self.resolved.overrides, registry=None,
                               values={**self.base_values, **entry["params"]})
        figures = ", ".join(f"{o.name} {v!r}" for o, v in zip(self.objectives, entry["values"]))
        head = (f"# trial {entry['index']} of sweep '{self.study_name}' ({self.folder}): {figures}\n"
                f"# reproduce: strikebench backtest THIS_FILE  (same summary figures, to the cent)\n"
                f"# parameters: " + ", ".join(f"{k}={_show(v)}" for k, v in entry["params"].items()) + "\n")
        return head + resolved.run_yaml()

    def write_outputs(self, study, result: SweepResult) -> None:
        from strikebench.userfiles import write_atomic

        folder = self.folder
        best_dir = folder / self.best_dir
        if best_dir.exists():
            shutil.rmtree(best_dir)
        best_dir.mkdir(parents=True)
        for rank, entry in enumerate(result.best, 1):
            path = best_dir / f"{self.best_prefix}-{rank:02d}-trial-{entry['index']:05d}.yaml"
            entry["yaml"] = str(path)
            write_atomic(path, self.best_yaml(entry))
        write_atomic(folder / "trials.csv", _trials_csv(result.trials, self.names, self.objectives,
                                                        self.csv_extra_columns(), self.csv_extra))
        write_atomic(folder / "sweep.json", json.dumps({
            "study": self.study_name, "storage": _safe_url(self.storage), "sampler": self.spec.sampler,
            "seed": self.spec.seed, "budget": result.budget, "complete": result.complete, "failed": result.failed,
            "interrupted": result.interrupted, "elapsed_seconds": round(result.elapsed, 3),
            "infeasible": sum(1 for r in result.trials if r["state"] == "infeasible"),
            "workers": getattr(self, "worker_count", None), "executor": self.executor_kind,
            "driver_loop_cpu_seconds": round(getattr(self, "loop_cpu_seconds", 0.0), 3),
            "objectives": [o.model_dump() for o in self.objectives],
            "best": [{k: v for k, v in b.items() if k not in ("summary", "market_facts")} for b in result.best],
        }, indent=2, default=str) + "\n")
        if not self.plots:
            return
        from strikebench.research.plots import importance_png, pareto_png

        complete = [r for r in result.trials if r["state"] == "complete"]
        write_atomic(folder / "pareto.png", pareto_png(complete, self.objectives, result.best))
        png = importance_png(study, self.objectives, self.names)
        if png is not None:
            write_atomic(folder / "importance.png", png)
        elif (folder / "importance.png").exists():
            (folder / "importance.png").unlink()


def run_sweep(resolved, **kwargs) -> SweepResult:
    return Sweep(resolved, **kwargs).run()


# ---------------------------------------------------------------- helpers
#: what a worker reports about a trial besides its summary (the trial's ``worker`` attribute)
_WORKER_FIGURES = ("seconds", "backtest_seconds", "cpu_seconds", "backtest_cpu_seconds", "host", "pid", "market_built")


def _worker_figures(trial) -> dict:
    """A trial's worker figures (studies of the first version kept them as separate attributes)."""
    w = trial.user_attrs.get("worker")
    return dict(w) if isinstance(w, dict) else {k: trial.user_attrs.get(k) for k in _WORKER_FIGURES}


def _wal_for_a_new_study_file(path: Path | None) -> None:
    """A new SQLite study file in WAL mode (kept by the file): a commit writes the log once instead of the
    rollback journal and the database, so the driver records a trial in about half the time. A crash (even
    SIGKILL) loses nothing committed. Not for a study on a network file system: use a database URL there."""
    import sqlite3

    if path is None or path.exists():
        return
    with contextlib.suppress(sqlite3.Error, OSError):
        con = sqlite3.connect(path)
        try:
            con.execute("PRAGMA journal_mode=WAL")
        finally:
            con.close()


def _pareto(trials: list, directions: list[str]) -> list:
    signs = [1 if d == "minimize" else -1 for d in directions]
    keyed = [(t, [s * v for s, v in zip(signs, t.values)]) for t in trials]

    def dominated(a, b):  # b dominates a
        return all(y <= x for x, y in zip(a, b)) and any(y < x for x, y in zip(a, b))

    return [t for t, v in keyed if not any(dominated(v, w) for _, w in keyed)]


def _show(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _safe_url(url: str) -> str:
    """A storage URL without its password (it may carry one for a cluster database)."""
    import re

    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _trials_csv(rows: list[dict], names: list[str], objectives, extra_columns=(), extra=lambda row: []) -> str:
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["trial", "state", *names, *(o.name for o in objectives), "final_equity", "trades", "seconds", "error",
                *extra_columns])
    for r in rows:
        s = r.get("summary") or {}
        vals = r["values"] or [None] * len(objectives)
        w.writerow([r["index"], r["state"], *(r["params"].get(n) for n in names), *vals, s.get("final_equity"),
                    s.get("trades"), f"{r['seconds']:.3f}" if r.get("seconds") else "", r.get("error") or "",
                    *extra(r)])
    return buf.getvalue()


class _Lock:
    def __init__(self, fh):
        self.fh = fh

    def close(self):
        _HELD_LOCKS.discard(self.fh)
        with contextlib.suppress(OSError):
            fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


#: lock files this process holds; a forked worker closes its copies (see _forget_locks_in_child)
_HELD_LOCKS: set = set()


def _forget_locks_in_child() -> None:
    """In a forked worker: close the inherited lock files (never unlock: the lock belongs to the driver).

    An flock lives as long as any process holds the open file; a worker that inherited it would keep a
    killed driver's folder locked until the worker itself is gone, and an immediate resume would be refused."""
    for fh in list(_HELD_LOCKS):
        with contextlib.suppress(OSError):
            fh.close()
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_forget_locks_in_child)


def _lock(folder: Path) -> _Lock:
    fh = open(folder / ".sweep.lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise StrikebenchError(f"{folder}: another sweep is running in this folder (its lock is held); "
                               f"wait for it or use --dir") from None
    _HELD_LOCKS.add(fh)
    return _Lock(fh)


def _sigterm_as_interrupt():
    """SIGTERM (kill) stops the driver like Ctrl-C: results so far are written, the sweep resumes later."""
    def _raise(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread
        return signal.getsignal(signal.SIGTERM)
