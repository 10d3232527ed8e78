"""Suite-wide hygiene: no process a test started outlives the test run.

`strikebench trade` starts a paper-broker service when none runs, and the service is meant to outlive its trader
(it fills, expires and settles while the trader is down). A test that ends early (a failed assertion before its own
cleanup) would leave that service running forever at speed 0. At the end of each worker's session every
paper-broker service whose state file lies under this worker's temporary folder is stopped (SIGTERM, then SIGKILL).
At the start of each session, the PostgreSQL servers (tests/pgserver.py) of earlier sessions whose pytest process is
gone (SIGKILLed: their atexit never ran) are stopped and their folders removed.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest


def _services_under(folder: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"paper-broker" in args and b"serve" in args and b"--state" in args:
            state = args[args.index(b"--state") + 1].decode(errors="replace")
            try:
                state = os.path.join(os.readlink(entry / "cwd"), state)  # a relative --state is the service's cwd's
            except OSError:
                continue
            if os.path.abspath(state).startswith(str(folder) + os.sep):
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        return b"zombie" not in Path(f"/proc/{pid}/status").read_bytes().lower()
    except OSError:
        return False


@pytest.fixture(scope="session", autouse=True)
def _no_service_outlives_the_tests(tmp_path_factory):
    from pgserver import sweep_orphans

    sweep_orphans()  # PostgreSQL servers of test sessions that were killed (their atexit never ran)
    yield
    folder = tmp_path_factory.getbasetemp().resolve()
    pids = _services_under(folder)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _running(p)]
        time.sleep(0.1)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server (tests/pgserver.py), one per session or xdist worker, started on first use."""
    from pgserver import Server, available

    why = available()
    if why:
        pytest.skip(why)
    server = Server()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server):
    """The URL (password included) of a new database on the test server, its journal schema at head."""
    return pg_server.create_database()
