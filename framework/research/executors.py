"""Where trials run: local processes (every core) or a Ray cluster, behind one small interface.

The sweep driver only calls :meth:`submit`, :meth:`wait` and :meth:`close`; both executors run the
same :func:`strikebench.research.trial.run_trial`, so a sweep gives the same trials on either.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor
from concurrent.futures import wait as futures_wait
from typing import Any

from strikebench.errors import ConfigError, StrikebenchError

__all__ = ["LocalExecutor", "RayExecutor", "make_executor", "cores"]


def cores() -> int:
    """CPUs this process may use (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class LocalExecutor:
    """A pool of worker processes on this machine.

    On Linux the workers are forked from the driver once it has loaded the code, the plugins and the
    exchange calendar (a cold worker spends seconds on those), before any thread of the progress
    display starts; elsewhere they are spawned. A trial reads nothing else of the driver's state.
    """

    name = "local"

    def __init__(self, workers: int | None = None):
        from strikebench.research.trial import warm_up

        self.workers = workers or cores()
        self._method = "fork" if "fork" in multiprocessing.get_all_start_methods() and os.name == "posix" else "spawn"
        if self._method == "fork":
            warm_up()
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context(self._method))
        # start the workers now (fork: all at once, before any other thread of the driver exists)
        pool.submit(os.getpid).result()
        return pool

    def submit(self, task: dict) -> Any:
        from concurrent.futures.process import BrokenProcessPool

        from strikebench.research import trial

        try:
            return self._pool.submit(trial.run_trial, task)
        except BrokenProcessPool:  # a worker died (killed, out of memory, a crash in native code): a new pool
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start()
            return self._pool.submit(trial.run_trial, task)

    def wait(self, handles: list, timeout: float | None) -> list:
        """The handles that are done (at least one unless ``timeout`` passed first)."""
        done, _ = futures_wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return [h for h in handles if h in done]

    def result(self, handle) -> dict:
        try:
            return handle.result()
        except Exception as exc:  # a worker that died (killed, out of memory): the trial's worker was lost
            return {"lost": True, "error": f"worker lost: {type(exc).__name__}: "
                                           f"{str(exc).splitlines()[0] if str(exc) else ''}"}

    def close(self, cancel: bool = False) -> None:
        if cancel:  # stop now: running trials are abandoned (a resumed sweep runs them again)
            processes = list((getattr(self._pool, "_processes", None) or {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for p in processes:
                if p.is_alive():
                    p.terminate()
            for p in processes:
                p.join(timeout=5)
        else:
            self._pool.shutdown(wait=True)


class RayExecutor:
    """Trials as Ray tasks: a local Ray started for the sweep, or a running cluster at ``address``.

    On a cluster every node needs strikebench (and any plugin package the config names) installed;
    the config file is sent along with each task, so only the code must be there.
    """

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None):
        try:
            import ray
        except ImportError:
            raise StrikebenchError("the ray executor needs Ray: pip install 'strikebench[ray]'") from None
        self._ray = ray
        self._owns = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "logging_level": "ERROR", "configure_logging": True}
            if address:
                kwargs["address"] = address
            else:
                kwargs["num_cpus"] = workers or cores()
            try:
                ray.init(**kwargs)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                where = address or "a local Ray"
                raise ConfigError(f"sweep.ray_address: cannot start or reach {where}: "
                                  f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
                                  ) from None
            self._owns = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = min(workers, cpus) if workers else cpus
        from strikebench.research.trial import run_trial

        self._remote = ray.remote(num_cpus=1, max_retries=0)(run_trial)

    def submit(self, task: dict) -> Any:
        return self._remote.remote(task)

    def wait(self, handles: list, timeout: float | None) -> list:
        done, _ = self._ray.wait(handles, num_returns=1, timeout=timeout)
        if done:  # everything else that is ready too
            more, _ = self._ray.wait(handles, num_returns=len(handles), timeout=0)
            done = more or done
        return done

    def result(self, handle) -> dict:
        try:
            return self._ray.get(handle)
        except Exception as exc:  # noqa: BLE001 - a lost worker or node fails the trial, not the sweep
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return {"lost": True, "error": f"ray task lost: {type(exc).__name__}: {text}"}

    def close(self, cancel: bool = False) -> None:
        if self._owns:
            self._ray.shutdown()


def make_executor(kind: str, workers: int | None, address: str | None = None):
    if kind == "ray":
        return RayExecutor(workers, address)
    return LocalExecutor(workers)
