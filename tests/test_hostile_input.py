"""Hostile and broken input, each through the real CLI as a subprocess (issue 12).

Every case checks: the exit code, the exact first line on stderr, no "Traceback" anywhere,
a time limit on the subprocess, and that nothing on disk changed (the whole folder is hashed
before and after). Unreadable-file cases run the CLI without CAP_DAC_OVERRIDE /
CAP_DAC_READ_SEARCH when the suite runs as root (``setpriv --bounding-set=-all``), so
permissions bite as they do for an ordinary user.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from strikebench.plugin_manager import LOAD_ENV
from strikebench.safe_yaml import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_VALUES

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

VALID = """\
name: hostile
data: {source: synthetic, start: 2023-03-13, end: 2023-03-14}
strategies:
  - name: credit_vertical
    params: {short_deltas: [0.10, 0.20], width: 25}
"""

# ------------------------------------------------------------------ helpers
_SETPRIV = shutil.which("setpriv")
_IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _unprivileged_prefix() -> list[str]:
    """Run a command as root but without the capabilities that bypass file permissions."""
    if not _IS_ROOT:
        return []
    if _SETPRIV is None:
        pytest.skip("running as root and setpriv(1) is missing: cannot drop CAP_DAC_OVERRIDE to test permissions")
    return [_SETPRIV, "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--"]


# Runs argv[2:], writes that child's own peak RSS (KiB, from wait4) to argv[1], exits as the child did.
_RSS_WRAPPER = """
import os, signal, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str, seconds: float, max_rss_mib: float):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr
        self.seconds, self.max_rss_mib = seconds, max_rss_mib

    @property
    def first_line(self) -> str:
        lines = ANSI.sub("", self.stderr).splitlines()
        return lines[0] if lines else ""


def cli(cwd: Path, *args: str, timeout: float = 60, unprivileged: bool = False, env: dict | None = None) -> Result:
    """``strikebench ARGS`` in ``cwd``; kills it after ``timeout`` s (a failure); reports its own peak RSS."""
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("SB_TEST_")}
    run_env.update({"COLUMNS": "500", "NO_COLOR": "1", "TERM": "dumb", LOAD_ENV: ""})
    run_env.update(env or {})
    cmd = (_unprivileged_prefix() if unprivileged else []) + [sys.executable, "-m", "strikebench.cli", *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        t0 = time.monotonic()
        # Measured through a small wrapper: Linux counts the parent's peak RSS at fork/exec time into a
        # direct child's ru_maxrss, so a child of this (large) test process would report pytest's size.
        proc = subprocess.Popen([sys.executable, "-c", _RSS_WRAPPER, rss.name, *cmd], cwd=cwd, env=run_env,
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                out.seek(0), err.seek(0)
                pytest.fail(f"strikebench {' '.join(args)} did not answer in {timeout} s; stderr: "
                            f"{err.read().decode(errors='replace')[-500:]}")
            time.sleep(0.02)
        seconds = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        peak_kib = int(rss.read().strip() or 0)
        return Result(proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                      seconds, peak_kib / 1024)


def tree_state(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: kind, mode and, for files, size and SHA-256 (symlinks not followed)."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            if stat.S_ISREG(st.st_mode):
                try:
                    digest = hashlib.sha256(p.read_bytes()).hexdigest()
                except PermissionError:
                    digest = "unreadable"
                state[rel] = ("file", st.st_mode, st.st_size, digest)
            elif stat.S_ISLNK(st.st_mode):
                state[rel] = ("link", os.readlink(p))
            else:
                state[rel] = ("other", st.st_mode)
    return state


def assert_refused(res: Result, code: int, first_line: str) -> None:
    assert "Traceback" not in res.stdout + res.stderr, res.stderr[-2000:]
    assert res.first_line == f"error: {first_line}", res.stderr
    assert res.returncode == code, (res.returncode, res.stderr)


# ------------------------------------------------------------ hostile YAML
def _laughs(levels: int, width: int, *, flow: bool = True) -> str:
    """Billion laughs: each level a list of ``width`` aliases of the level below."""
    lines = ["l0: &l0 lol"]
    for i in range(1, levels + 1):
        refs = ", ".join([f"*l{i - 1}"] * width)
        lines.append(f"l{i}: &l{i} [{refs}]" if flow else f"l{i}: &l{i}\n" + "".join(f"  - *l{i - 1}\n" for _ in range(width)).rstrip())
    return "\n".join(lines) + "\nname: x\n"


def _map_laughs(levels: int, width: int) -> str:
    lines = ["m0: &m0 {a: lol}"]
    for i in range(1, levels + 1):
        keys = ", ".join(f"k{j}: *m{i - 1}" for j in range(width))
        lines.append(f"m{i}: &m{i} {{{keys}}}")
    return "\n".join(lines) + "\n"


def _merge_laughs(levels: int, width: int) -> str:
    lines = ["b0: &b0 {x0: 1}"]
    for i in range(1, levels + 1):
        lines.append(f"b{i}: &b{i} {{<<: *b{i - 1}, " + ", ".join(f"k{j}: *b{i - 1}" for j in range(width)) + "}")
    return "\n".join(lines) + "\n"


BOMB = f"YAML refused: more than {MAX_YAML_VALUES:,} values once aliases are expanded (an alias bomb?); " \
       f"the limit is {MAX_YAML_VALUES:,}"
DEEP = f"YAML refused: nested more than {MAX_YAML_DEPTH} levels deep"

HOSTILE_YAML = [
    # alias cycles
    ("cycle-list", "name: x\nstrategies: &a [*a]\n", "2:17", "YAML refused: alias *a is inside its own anchor &a (a cycle)"),
    ("cycle-map", "a: &a\n  b: *a\n", "2:6", "YAML refused: alias *a is inside its own anchor &a (a cycle)"),
    ("cycle-deep", "name: x\nbroker: &top\n  params:\n    - {inner: [1, 2, *top]}\n", "4:22",
     "YAML refused: alias *top is inside its own anchor &top (a cycle)"),
    ("cycle-merge", "base: &b\n  x: 1\n  <<: *b\n", "3:7", "YAML refused: alias *b is inside its own anchor &b (a cycle)"),
    # alias bombs: ten levels of ten, and variants that never touch a list
    # l4 expands to 11,111 values, so the running count passes 50,000 at the 4th *l4 of line 6 (column 25)
    ("laughs-10x10", _laughs(10, 10), "6:25", BOMB),
    ("laughs-block", _laughs(9, 10, flow=False), None, BOMB),
    ("laughs-20x2", _laughs(20, 2), None, BOMB),
    ("laughs-map", _map_laughs(8, 10), None, BOMB),
    ("laughs-merge", _merge_laughs(8, 10), None, BOMB),
    ("wide-fanout", "big: &big [" + ", ".join(["1"] * 1000) + "]\nmany: [" + ", ".join(["*big"] * 60) + "]\n", None, BOMB),
    # very deep nesting, flow and block
    ("deep-flow", "name: x\nstrategies: " + "[" * 5000 + "]" * 5000 + "\n", f"2:{13 + MAX_YAML_DEPTH - 1}", DEEP),
    # a key sits one level below its mapping: level 51 is the key of the 49th "{" (column 4 + 4 * 48 + 1)
    ("deep-flow-map", "a: " + "{b: " * 200 + "1" + "}" * 200 + "\n", f"1:{4 + 4 * (MAX_YAML_DEPTH - 2) + 1}", DEEP),
    ("deep-block", "".join("  " * i + f"k{i}:\n" for i in range(80)) + "  " * 80 + "v\n", f"{MAX_YAML_DEPTH}:{2 * MAX_YAML_DEPTH - 1}", DEEP),
    # tags that ask for Python objects, and other non-standard tags
    ("python-apply", "name: !!python/object/apply:os.system ['echo pwned']\n", "1:7",
     "YAML refused: tag !!python/object/apply:os.system asks for a Python object; strikebench reads plain data only"),
    ("python-name", "strategies:\n  - name: !!python/name:os.system ''\n", "2:11",
     "YAML refused: tag !!python/name:os.system asks for a Python object; strikebench reads plain data only"),
    ("python-new", "x: !!python/object/new:subprocess.Popen [[touch, pwned]]\n", "1:4",
     "YAML refused: tag !!python/object/new:subprocess.Popen asks for a Python object; strikebench reads plain data only"),
    ("python-tuple", "data: !!python/tuple [1, 2]\n", "1:7",
     "YAML refused: tag !!python/tuple asks for a Python object; strikebench reads plain data only"),
    ("custom-tag", "name: !secret token\n", "1:7", "YAML refused: tag !secret is not a standard YAML type"),
]


@pytest.mark.parametrize("text,where,problem", [pytest.param(t, w, p, id=i) for i, t, w, p in HOSTILE_YAML])
def test_hostile_yaml_config_refused_fast_in_bounded_memory(tmp_path, text, where, problem):
    (tmp_path / "bad.yaml").write_text(text, encoding="utf-8")
    before = tree_state(tmp_path)
    res = cli(tmp_path, "validate", "bad.yaml", timeout=20)
    if where is None:  # position checked loosely: the message is the point
        assert re.fullmatch(rf"error: bad\.yaml:\d+:\d+: {re.escape(problem)}", res.first_line), res.stderr
        where = res.first_line.split(":")[2] + ":" + res.first_line.split(":")[3]
    assert_refused(res, 2, f"bad.yaml:{where}: {problem}")
    assert not (tmp_path / "pwned").exists()
    assert tree_state(tmp_path) == before
    # a plain `validate` of a good config peaks around 150-200 MiB (numpy, pandas, pydantic); a bomb
    # that expanded would need gigabytes
    assert res.max_rss_mib < 600, res.max_rss_mib


@pytest.mark.parametrize("command", ["backtest", "market describe", "paper"])
def test_hostile_yaml_refused_by_every_command_that_reads_a_config(tmp_path, command):
    (tmp_path / "bad.yaml").write_text(_laughs(10, 10), encoding="utf-8")
    before = tree_state(tmp_path)
    res = cli(tmp_path, *command.split(), "bad.yaml", timeout=20)
    assert_refused(res, 2, f"bad.yaml:6:25: {BOMB}")
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("text,problem", [
    pytest.param("name: x\nvolatility: &a [*a]\n", "2:17: YAML refused: alias *a is inside its own anchor &a (a cycle)", id="cycle"),
    pytest.param(_laughs(10, 10), f"6:25: {BOMB}", id="laughs"),
    pytest.param("underlying: " + "[" * 300 + "]" * 300 + "\n", f"1:{13 + MAX_YAML_DEPTH - 1}: {DEEP}", id="deep"),
    pytest.param("underlying: !!python/object/apply:os.system [id]\n", "1:13: YAML refused: tag "
                 "!!python/object/apply:os.system asks for a Python object; strikebench reads plain data only", id="tag"),
])
def test_hostile_scenario_file_refused(tmp_path, text, problem):
    (tmp_path / "evil.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "run.yaml").write_text(VALID.replace("end: 2023-03-14}", "end: 2023-03-14, scenario: evil.yaml}"))
    before = tree_state(tmp_path)
    res = cli(tmp_path, "validate", "run.yaml", timeout=20)
    assert_refused(res, 2, f"run.yaml:2: data.scenario: 'evil.yaml' is not allowed: evil.yaml:{problem}")
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("padding", ["comment", "scalar", "list"])
def test_yaml_over_the_size_limit_refused_before_parsing(tmp_path, padding):
    body = {"comment": "# " + "x" * MAX_YAML_BYTES + "\n" + VALID,
            "scalar": VALID + "note: '" + "y" * MAX_YAML_BYTES + "'\n",
            "list": VALID + "pad: [" + ", ".join(["1"] * (MAX_YAML_BYTES // 3 + 10)) + "]\n"}[padding]
    (tmp_path / "big.yaml").write_text(body)
    size = (tmp_path / "big.yaml").stat().st_size
    assert size > MAX_YAML_BYTES
    before = tree_state(tmp_path)
    res = cli(tmp_path, "validate", "big.yaml", timeout=20)
    shown = f"{size / 1024:.0f} KiB"
    assert_refused(res, 2, f"big.yaml: {shown} is over the {MAX_YAML_BYTES // 1024} KiB limit of a config file")
    assert tree_state(tmp_path) == before


def test_yaml_limits_leave_ordinary_anchors_and_merges_alone(tmp_path):
    """The limits refuse shapes, not features: a config sharing parameters through an anchor and a merge key loads."""
    (tmp_path / "ok.yaml").write_text("""\
name: anchors_ok
data: {source: synthetic, start: 2023-03-13, end: 2023-03-14}
strategies:
  - name: credit_vertical
    id: puts
    params: &common {short_deltas: [0.10, 0.20], width: 25, side: put}
  - name: credit_vertical
    id: calls
    params: {<<: *common, side: call}
""")
    res = cli(tmp_path, "validate", "ok.yaml", timeout=60)
    assert res.returncode == 0, res.stderr
    assert "credit_vertical (id calls)" in res.stdout


# ------------------------------------------------------- files and folders
def _write(p: Path, content) -> None:
    p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content, encoding="utf-8")


def _make_bad(tmp: Path, kind: str, name: str) -> str:
    """A bad input of ``kind`` at ``tmp/name``; returns the name to pass."""
    p = tmp / name
    if kind == "folder":
        p.mkdir()
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "binary":
        _write(p, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    elif kind == "latin1":
        _write(p, "date,time_et,event\n2023-03-14,08:30,cpi caf\xe9\n".encode("latin-1"))
    elif kind == "empty":
        _write(p, "")
    elif kind == "loop":
        os.symlink(name, p)
    elif kind == "dangling":
        os.symlink("gone.csv", p)
    elif kind == "unreadable":
        _write(p, "date,start,end,label\n")
        p.chmod(0)
    return name


FILE_PROBLEMS = {
    "folder": "is a folder, expected {a_what}",
    "fifo": "is a FIFO (named pipe), expected {a_what}",
    "binary": "a binary file (NUL byte at offset 8), expected a text {what}",
    "latin1": "not UTF-8 text (line 2, byte 43: 0xe9); save it as UTF-8",
    "empty": "the {what} is empty",
    "loop": "too many levels of symbolic links (a symlink loop)",
    "dangling": "a symbolic link to a missing {what}",
    "unreadable": "permission denied",
}


@pytest.mark.parametrize("kind", sorted(FILE_PROBLEMS))
def test_bad_blackout_calendar_is_one_line(tmp_path, kind):
    name = _make_bad(tmp_path, kind, "blackouts.csv")
    (tmp_path / "run.yaml").write_text(VALID + f"risk:\n  - name: event_blackout\n    params: {{calendar: {name}}}\n")
    before = tree_state(tmp_path)
    res = cli(tmp_path, "validate", "run.yaml", timeout=30, unprivileged=kind == "unreadable")
    problem = FILE_PROBLEMS[kind].format(what="blackout calendar (CSV)", a_what="a blackout calendar (CSV)")
    assert_refused(res, 2, f"run.yaml:8: risk[0].params.calendar: '{name}' is not allowed: {name}: {problem}")
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("kind", ["folder", "fifo", "latin1", "unreadable"])
def test_bad_events_calendar_is_one_line_before_any_run_folder(tmp_path, kind):
    """The scenario's events calendar is read when the market is generated: still one line, and no run folder."""
    name = _make_bad(tmp_path, kind, "events.csv")
    (tmp_path / "scn.yaml").write_text(f"extends: default\nevents:\n  calendar: ./{name}\n")
    (tmp_path / "run.yaml").write_text(VALID.replace("end: 2023-03-14}", "end: 2023-03-14, scenario: scn.yaml}"))
    before = tree_state(tmp_path)
    res = cli(tmp_path, "backtest", "run.yaml", "--quiet", timeout=60, unprivileged=kind == "unreadable")
    problem = FILE_PROBLEMS[kind].format(what="events calendar (CSV)", a_what="an events calendar (CSV)")
    assert_refused(res, 2, f"events.calendar './{name}': {problem}")
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("kind", ["folder", "fifo", "loop", "unreadable"])
def test_bad_config_file_is_one_line(tmp_path, kind):
    name = _make_bad(tmp_path, kind, "run.yaml")
    before = tree_state(tmp_path)
    res = cli(tmp_path, "backtest", name, "--quiet", timeout=30, unprivileged=kind == "unreadable")
    problem = FILE_PROBLEMS[kind].format(what="config file", a_what="a config file")
    assert_refused(res, 2, f"{name}: {problem}")
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("start,end,problem", [
    ("2023-01-07", "2023-01-08", "no trading sessions from 2023-01-07 to 2023-01-08 (weekends and exchange holidays "
                                 "only); widen the range"),
    ("2023-12-25", "2023-12-25", "no trading sessions from 2023-12-25 to 2023-12-25 (weekends and exchange holidays "
                                 "only); widen the range"),
    ("1999-06-01", "2000-01-05", "start 1999-06-01 is before 2000-01-03, the first session the market calendar covers"),
    ("2049-10-27", "2049-11-30", "end 2049-11-30 is after 2049-10-26, the last day the synthetic market can simulate "
                                 "(it lists expiries about 400 days past the end, and the market calendar ends "
                                 "2050-12-30)"),
    ("2070-01-02", "2070-01-09", "end 2070-01-09 is after 2049-10-26, the last day the synthetic market can simulate "
                                 "(it lists expiries about 400 days past the end, and the market calendar ends "
                                 "2050-12-30)"),
])
def test_date_range_without_sessions_or_outside_the_calendar(tmp_path, start, end, problem):
    (tmp_path / "run.yaml").write_text(VALID)
    before = tree_state(tmp_path)
    res = cli(tmp_path, "backtest", "run.yaml", "--quiet", "--set", f"data.start={start}", "--set", f"data.end={end}",
              timeout=60)
    assert_refused(res, 2, f"run.yaml:2: data: {problem}")
    assert tree_state(tmp_path) == before


@pytest.fixture
def out_cases(tmp_path):
    (tmp_path / "afile").write_text("not a folder\n")
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    (tmp_path / "jdir").mkdir()
    (tmp_path / "run.yaml").write_text(VALID)
    return tmp_path


@pytest.mark.parametrize("setting,first_line,unprivileged", [
    ("output.dir=afile", "output.dir 'afile': is a file, expected a folder", False),
    ("output.dir=afile/runs", "output.dir 'afile/runs': 'afile' is a file, expected a folder", False),
    ("output.dir=ro", "output.dir 'ro': folder is not writable (permission denied)", True),
    ("output.dir=ro/runs", "output.dir 'ro/runs': folder ('ro') is not writable (permission denied)", True),
    ("journal.url=sqlite:///jdir", "journal.url 'jdir': is a folder, expected a journal file", False),
    ("journal.url=sqlite:///afile", "afile: not a journal (not an SQLite database)", False),
    ("journal.url=sqlite:///afile/j.sqlite", "journal.url folder 'afile': is a file, expected a folder", False),
    ("journal.url=sqlite:///ro/j.sqlite", "journal.url folder 'ro': folder is not writable (permission denied)", True),
])
def test_unusable_output_or_journal_fails_before_anything_is_made(out_cases, setting, first_line, unprivileged):
    """A failed start leaves nothing behind: no run folder under runs/, no journal, the tree byte-identical."""
    before = tree_state(out_cases)
    res = cli(out_cases, "backtest", "run.yaml", "--quiet", "--set", setting, timeout=60, unprivileged=unprivileged)
    code = 6 if "journal" in first_line else 2  # a journal problem is a JournalError (exit 6), others config (2)
    assert_refused(res, code, first_line)
    assert tree_state(out_cases) == before
    assert not (out_cases / "runs").exists()


def test_paper_with_unusable_journal_leaves_no_run_folder(out_cases):
    before = tree_state(out_cases)
    res = cli(out_cases, "paper", "run.yaml", "--clock", "replay", "--speed", "0", "--day", "2023-03-14", "--no-panel",
              "--set", "journal.url=sqlite:///jdir", timeout=60)
    assert_refused(res, 6, "journal.url 'jdir': is a folder, expected a journal file")
    assert tree_state(out_cases) == before


@pytest.mark.parametrize("target,first_line", [
    ("afile", "OUT_DIR 'afile': is a file, expected a folder"),
    ("afile/x", "OUT_DIR 'afile/x': 'afile' is a file, expected a folder"),
])
def test_market_export_to_a_file_is_refused_before_generating(out_cases, target, first_line):
    before = tree_state(out_cases)
    res = cli(out_cases, "market", "export", "run.yaml", target, "--days", "1", timeout=60)
    assert_refused(res, 2, first_line)
    assert tree_state(out_cases) == before


# ------------------------------------------------- reading commands never write
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One real two-day backtest; tests copy its folder and damage the copy."""
    root = tmp_path_factory.mktemp("finished")
    (root / "run.yaml").write_text(VALID)
    res = cli(root, "backtest", "run.yaml", "--quiet", timeout=900)
    assert res.returncode == 0, res.stderr
    (run_dir,) = (root / "runs").iterdir()
    return run_dir


def _sql(path: Path, *statements: str) -> None:
    import sqlite3

    db = sqlite3.connect(str(path), isolation_level=None)
    for stmt in statements:
        db.execute(stmt)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def _damage(run: Path, how: str) -> None:
    j = run / "journal.sqlite"
    data = j.read_bytes()
    if how == "dropped-table":
        _sql(j, "DROP TABLE trades")
    elif how == "dropped-two":
        _sql(j, "DROP TABLE trade_decisions", "DROP TABLE fills")
    elif how == "truncated":
        j.write_bytes(data[: len(data) // 2])
    elif how == "header-only":
        j.write_bytes(data[:100])
    elif how == "foreign-sqlite":
        j.unlink()
        _sql(j, "CREATE TABLE notes(body TEXT)", "INSERT INTO notes VALUES ('mine')")
    elif how == "text":
        j.write_text("this is not a database\n")
    elif how == "empty":
        j.write_bytes(b"")
    elif how == "garbled-pages":
        b = bytearray(data)
        for i in range(4096, len(b), 997):
            b[i] ^= 0xFF
        j.write_bytes(bytes(b))
    elif how == "newer-schema":
        _sql(j, "UPDATE journal_meta SET value = '99' WHERE key = 'schema_version'")
    elif how == "no-schema-version":
        _sql(j, "DELETE FROM journal_meta")
    elif how == "folder":
        j.unlink()
        j.mkdir()
    elif how == "fifo":
        j.unlink()
        os.mkfifo(j)
    elif how == "unreadable":
        j.chmod(0)


DAMAGE = {
    "dropped-table": "damaged journal: table(s) trades missing; refusing to read it",
    "dropped-two": "damaged journal: table(s) trade_decisions, fills missing; refusing to read it",
    "truncated": "truncated journal ({size:,} bytes; its header says {full:,})",
    "header-only": "truncated journal (100 bytes; its header says {full:,})",
    "foreign-sqlite": "not a strikebench journal (an SQLite database without its tables)",
    "text": "not a journal (not an SQLite database)",
    "empty": "empty file, not a journal",
    "garbled-pages": None,  # SQLite's own words; checked by prefix
    "newer-schema": "journal schema 99 is newer than this strikebench understands (1); upgrade strikebench",
    "no-schema-version": "damaged journal: no schema version in journal_meta",
    "folder": "is a folder, expected a journal file",
    "fifo": "is a FIFO (named pipe), expected a journal file",
    "unreadable": "permission denied",
}


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_reading_commands_refuse_a_damaged_journal_and_write_nothing(finished_run, tmp_path, how):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    full = (run / "journal.sqlite").stat().st_size
    _damage(run, how)
    size = (run / "journal.sqlite").stat().st_size if (run / "journal.sqlite").is_file() else 0
    before = tree_state(tmp_path)
    expected = DAMAGE[how]
    # every damage through `report` (the command that writes); the three commonest through every reading command
    commands = [["report", "run"]]
    if how in ("dropped-table", "truncated", "foreign-sqlite"):
        commands += [["decisions", "run"], ["decisions", "run", "--date", "2023-03-14"], ["replay-decision", "run", "x"],
                     ["status", "run"]]
    for command in commands:
        res = cli(tmp_path, *command, timeout=30, unprivileged=how == "unreadable")
        if expected is None:
            assert res.first_line.startswith("error: run/journal.sqlite: damaged journal ("), res.stderr
            assert "Traceback" not in res.stdout + res.stderr and res.returncode == 6
        else:
            assert_refused(res, 6, f"run/journal.sqlite: {expected.format(size=size, full=full)}")
        assert tree_state(tmp_path) == before, command


def test_report_on_a_whole_journal_rewrites_its_files_atomically_and_the_same(finished_run, tmp_path):
    """`report` on a good journal: the same bytes again (rebuilt from the journal alone), no temporary files left."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    first = cli(tmp_path, "report", "run", timeout=120)  # summary.json names the folder as given: "run"
    assert first.returncode == 0, first.stderr
    before = tree_state(tmp_path)
    (run / "trades.csv").write_text("stale\n")
    (run / "summary.json").unlink()
    res = cli(tmp_path, "report", "run", timeout=120)
    assert res.returncode == 0, res.stderr
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("command,target,kind,first_line", [
    ("report", "nowhere", None, "nowhere: no such run folder"),
    ("decisions", "fifo", "fifo", "fifo: is a FIFO (named pipe), expected a run folder or journal file"),
    ("status", "emptydir", "dir", "emptydir: no journal in this folder (expected journal.sqlite); was the run made "
                                  "with the journal plugin disabled?"),
])
def test_reading_commands_on_a_path_that_is_no_run(tmp_path, command, target, kind, first_line):
    if kind == "fifo":
        os.mkfifo(tmp_path / target)
    elif kind == "dir":
        (tmp_path / target).mkdir()
    before = tree_state(tmp_path)
    res = cli(tmp_path, command, target, timeout=30)
    assert_refused(res, 6, first_line)
    assert tree_state(tmp_path) == before


# ----------------------------------------------------------- anything else
@pytest.mark.parametrize("setting,first_line", [
    ("broker.params.initial_cash=.inf", "run.yaml:1: broker.params.initial_cash: inf is not allowed: Input should be "
                                        "less than or equal to 1000000000000"),
    ("broker.params.initial_cash=1.0e+400", "run.yaml:1: broker.params.initial_cash: inf is not allowed: Input should "
                                           "be less than or equal to 1000000000000"),
    ("data.seed=18446744073709551616", "run.yaml:2: data.seed: 18446744073709551616 is not allowed: Input should be "
                                       "less than or equal to 9223372036854775807"),
])
def test_huge_numbers_are_one_line(tmp_path, setting, first_line):
    """Before: an infinite initial cash ended in OverflowError (cents), a 20-digit seed in SQLite's INTEGER overflow,
    after the run folder was made."""
    (tmp_path / "run.yaml").write_text(VALID)
    before = tree_state(tmp_path)
    res = cli(tmp_path, "backtest", "run.yaml", "--quiet", "--set", setting, timeout=60)
    assert_refused(res, 2, first_line)
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("args,code,first_line", [
    (["kill", "nowhere"], 1, "nowhere: no such run folder"),
    (["kill", "afile"], 1, "afile: is a file, expected a run folder"),
    (["flatten", "afile", "--yes"], 6, "afile: not a journal (not an SQLite database)"),
    (["market", "describe", "run.yaml", "--png", "jdir"], 2, "--png 'jdir': is a folder, expected a file to write"),
])
def test_switch_and_plot_targets_are_checked(out_cases, args, code, first_line):
    before = tree_state(out_cases)
    res = cli(out_cases, *args, timeout=60)
    assert_refused(res, code, first_line)
    assert tree_state(out_cases) == before


def test_a_start_that_fails_after_the_checks_removes_its_run_folder(tmp_path):
    """The checks pass (an empty, writable journal file) but SQLite cannot make its -wal in the read-only folder:
    the journal fails at on_run_start, after the run folder was made; the folder (and runs/) must go."""
    (tmp_path / "run.yaml").write_text(VALID)
    (tmp_path / "rj").mkdir()
    (tmp_path / "rj" / "j.sqlite").write_bytes(b"")
    (tmp_path / "rj" / "j.sqlite").chmod(0o666)
    (tmp_path / "rj").chmod(0o555)
    before = tree_state(tmp_path)
    res = cli(tmp_path, "backtest", "run.yaml", "--quiet", "--set", "journal.url=sqlite:///rj/j.sqlite", timeout=120,
              unprivileged=True)
    assert_refused(res, 6, "rj/j.sqlite: not a journal (attempt to write a readonly database)")
    assert tree_state(tmp_path) == before
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------ the paper broker's state file
def _foreign_sqlite(p: Path) -> None:
    import sqlite3
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()


@pytest.mark.parametrize("make,arg,first_line", [
    pytest.param(lambda d: (d / "adir").mkdir(), "adir", "adir: is a folder, expected a paper broker state file",
                 id="folder"),
    pytest.param(lambda d: (d / "bin.sqlite").write_bytes(bytes(range(256)) * 12), "bin.sqlite",
                 "bin.sqlite: not a paper broker state file (file is not a database)", id="binary"),
    pytest.param(lambda d: _foreign_sqlite(d / "other.sqlite"), "other.sqlite",
                 "other.sqlite: not a paper broker state file (no such table: meta)", id="foreign-sqlite"),
    pytest.param(lambda d: None, "nodir/state.sqlite", "nodir: no such folder", id="missing-folder"),
    pytest.param(lambda d: None, "new.sqlite",
                 "new.sqlite: no paper broker there yet; give --config CONFIG.yaml to create one", id="new-no-config"),
])
def test_paper_broker_state_that_cannot_be_served_is_one_line_and_leaves_nothing(tmp_path, make, arg, first_line):
    make(tmp_path)
    before = tree_state(tmp_path)
    res = cli(tmp_path, "paper-broker", "serve", "--state", arg, timeout=30)
    assert_refused(res, 1, first_line)
    assert tree_state(tmp_path) == before  # no lock, address or state file left behind
