"""A real PostgreSQL server for the tests: the Debian package's binaries, a throw-away cluster.

One server per test session (per xdist worker that asks for it), started on first use: ``initdb`` into a
temporary folder, ``postgres`` on a free loopback TCP port with its unix socket in that folder, password
authentication over TCP (so the tests see a URL with a password in it), stopped and removed at the end.
initdb refuses to run as root: as root the binaries run as the ``postgres`` user (``runuser``, else
``setpriv``). Without the binaries the PostgreSQL tests are skipped, saying why. The folder records its owner (pid
and start time): a server whose owner was killed (SIGKILL: no atexit) is stopped by the next session's
:func:`sweep_orphans`.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

PG_BIN = Path(os.environ.get("STRIKEBENCH_PG_BIN", "/usr/lib/postgresql/15/bin"))
USER, PASSWORD = "sb", "s3cret-pw"
PREFIX = "sb-pg-"
OWNER_FILE = "owner"  # "<pid> <start time>" of the process that started the server


def _identity(pid: int) -> str | None:
    """``"pid starttime"`` of a running process (the start time tells a reused pid apart); None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie is dead
        return None
    return f"{pid} {fields[19]}"


def sweep_orphans(tmp: str | None = None) -> list[Path]:
    """Stop and remove the servers (and their folders) whose owning process is gone: ``<tmp>/sb-pg-*`` whose owner
    file names a dead process (or another process under a reused pid). Returns the folders removed."""
    import signal
    import time

    removed = []
    for root in sorted(Path(tmp or tempfile.gettempdir()).glob(PREFIX + "*")):
        try:
            owner = (root / OWNER_FILE).read_text().strip()
        except OSError:
            continue  # being made right now (no owner yet), or not one of ours
        try:
            pid = int(owner.split()[0])
        except (ValueError, IndexError):
            continue
        if _identity(pid) == owner:
            continue  # its owner runs: its server is in use
        try:
            postmaster = int((root / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            postmaster = None
        if postmaster is not None and "postgres" in _cmdline(postmaster) and str(root) in _cmdline(postmaster):
            try:
                os.kill(postmaster, signal.SIGQUIT)  # immediate shutdown: the postmaster ends its backends
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 10
            while _identity(postmaster) is not None and time.monotonic() < deadline:
                time.sleep(0.05)
            if _identity(postmaster) is not None:
                os.kill(postmaster, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
        removed.append(root)
    return removed


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def available() -> str | None:
    """None when a server can be started here, else why not."""
    if not (PG_BIN / "initdb").exists():
        return f"no PostgreSQL binaries at {PG_BIN} (set STRIKEBENCH_PG_BIN)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[test]')"
    return None


class Server:
    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix=PREFIX))
        self.data, self.sock = self.root / "data", self.root / "sock"
        self.sock.mkdir()
        self._template = None
        self._as = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            os.chown(self.sock, pw.pw_uid, pw.pw_gid)
            self._as = (["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else
                        ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--"])
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        self._run(PG_BIN / "initdb", "-D", self.data, "-U", USER, f"--pwfile={pwfile}", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "--no-sync", "--locale=C.UTF-8", "--encoding=UTF8")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        opts = (f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=60")
        # the owner: a server whose owner died without stopping it (a SIGKILLed pytest: atexit does not run) is
        # stopped by the next test session's sweep (sweep_orphans, called from conftest.py)
        (self.root / OWNER_FILE).write_text(_identity(os.getpid()))
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-l", self.root / "log", "-w", "-t", "30", "-o", opts, "start")
        atexit.register(self.stop)

    def _run(self, *argv) -> None:
        proc = subprocess.run([*self._as, *map(str, argv)], capture_output=True, text=True, timeout=60)
        if proc.returncode:
            log = (self.root / "log").read_text(errors="replace")[-2000:] if (self.root / "log").exists() else ""
            raise RuntimeError(f"{argv[0]} failed: {proc.stdout}{proc.stderr}{log}")

    def url(self, db: str = "postgres", *, password: bool = True) -> str:
        auth = f"{USER}:{PASSWORD}" if password else USER
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{db}"

    def create_database(self, *, empty: bool = False) -> str:
        """A new database, its URL (with the password): by default a copy of one migrated to head once per
        server by the journal itself (Alembic runs once, not per test); ``empty`` for a bare one."""
        import psycopg

        if not empty and self._template is None:
            from strikebench.journal import Journal

            url = self.create_database(empty=True)
            Journal(url).close()  # the schema, through the journal's own first-write path
            self._template = url.rsplit("/", 1)[1]
        name = "j_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {'template0' if empty else self._template}")
        return self.url(name)

    def stop(self) -> None:
        if self.root is None:
            return
        try:
            subprocess.run([*self._as, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                            "stop"], capture_output=True, timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
