"""tests/pgserver.py's own hygiene: a test server outliving its pytest (SIGKILL: no atexit) is stopped by the next
session's sweep, and a server whose owner still runs is left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def test_a_server_whose_owner_was_killed_is_swept_and_a_live_ones_is_not():
    from pgserver import available, sweep_orphans

    why = available()
    if why:
        pytest.skip(why)
    # the servers' folders in a folder of this test's own (the sweep sees only them); not under pytest's tmp_path,
    # which the `postgres` user may not enter
    tmp_path = Path(tempfile.mkdtemp(prefix="sb-pgsweep-"))
    tmp_path.chmod(0o755)
    code = (f"import sys, time; sys.path.insert(0, {str(HERE)!r}); import tempfile; tempfile.tempdir = "
            f"{str(tmp_path)!r}; from pgserver import Server; s = Server(); print(s.root, flush=True); "
            f"time.sleep(300)")
    owners = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        roots = [Path(p.stdout.readline().strip()) for p in owners]
        postmasters = [int((r / "data" / "postmaster.pid").read_text().split()[0]) for r in roots]
        os.kill(owners[0].pid, signal.SIGKILL)  # as a SIGKILLed pytest: its atexit never runs
        owners[0].wait(10)
        assert _alive(postmasters[0])  # left behind
        assert sweep_orphans(str(tmp_path)) == [roots[0]]
        assert not _alive(postmasters[0]) and not roots[0].exists()
        assert _alive(postmasters[1]) and roots[1].exists()  # its owner runs: untouched
    finally:
        for p in owners:
            if p.poll() is None:
                p.kill()
            p.wait(30)
        sweep_orphans(str(tmp_path))  # the second one's server too, now that its owner is gone
        assert not list(tmp_path.iterdir())
        tmp_path.rmdir()


def _alive(pid: int) -> bool:
    from pgserver import _identity

    return _identity(pid) is not None
