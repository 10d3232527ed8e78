"""A backtest journal's SQLite file: new journals use 16 KB pages (an existing one keeps its own), and under
``commit_per_session`` the WAL checkpoints run on the journal's checkpoint thread after each session commit, not in
the loop's commits: the committed sessions reach the database file itself while the run goes on, the WAL is
truncated at close, and the thread ends with the journal."""

from __future__ import annotations

import gc
import sqlite3
import threading
import time
from pathlib import Path

from strikebench import journal as J


def _file_only(path: Path, sql: str) -> list[tuple]:
    """What the database file holds without its WAL (``immutable=1``: SQLite reads the main file alone)."""
    con = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "strikebench-journal-checkpoint"]


def _session(journal: J.Journal, run_id: str, day: int) -> None:
    journal.record_equity(run_id, f"2023-01-{day:02d}", 100_000 + day)
    journal._last_commit = None  # (session_done commits at most every SESSION_COMMIT_INTERVAL seconds)
    journal.session_done()


def _backtest_journal(tmp_path: Path) -> tuple[Path, J.Journal]:
    """A journal with run "r" started, committing per session (as a backtest's)."""
    path = tmp_path / "journal.sqlite"
    journal = J.Journal(path)
    journal.start_run("r", name="bt", mode="backtest")
    journal.commit_per_session()
    return path, journal


def test_a_new_journal_has_16_kb_pages_and_an_old_one_keeps_its_own(tmp_path):
    new = tmp_path / "new.sqlite"
    J.Journal(new).close()
    (size,) = sqlite3.connect(new).execute("PRAGMA page_size").fetchone()
    assert size == 16384 == J.Journal.PAGE_SIZE

    old = tmp_path / "old.sqlite"
    con = sqlite3.connect(old)
    con.execute("PRAGMA page_size=4096")
    con.execute("CREATE TABLE t(x)")  # a file made before: its page size is fixed
    con.commit()
    con.close()
    with J.Journal(old) as journal:
        journal.start_run("r", name="old", mode="backtest")
    con = sqlite3.connect(old)
    assert con.execute("PRAGMA page_size").fetchone() == (4096,)
    assert con.execute("SELECT name FROM runs").fetchall() == [("old",)]
    con.close()


def test_session_commits_reach_the_database_file_through_the_checkpoint_thread(tmp_path):
    path, journal = _backtest_journal(tmp_path)
    try:
        assert tuple(journal._db.execute("PRAGMA wal_autocheckpoint").fetchone()) == (0,)  # the loop never checkpoints
        for day in (3, 4, 5):
            _session(journal, "r", day)
            assert journal._checkpointer.wait_idle(10)
            # the database file alone (no WAL) already holds every committed session
            assert _file_only(path, "SELECT day, equity FROM equity ORDER BY day") == [
                (f"2023-01-{d:02d}", f"{100_000 + d}.00") for d in range(3, day + 1)]
        assert journal._checkpointer.checkpoints >= 3
        # a session recorded but not committed stays out of both files (what a kill leaves)
        journal.record_equity("r", "2023-01-06", 1)
        assert _file_only(path, "SELECT COUNT(*) FROM equity") == [(3,)]
    finally:
        journal.close()
    assert not _threads()
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # close() checkpointed and truncated the WAL
    assert _file_only(path, "SELECT COUNT(*) FROM equity") == [(4,)]


def test_the_checkpoint_thread_ends_with_an_unclosed_journal(tmp_path, monkeypatch):
    monkeypatch.setattr(J._Checkpointer, "IDLE_CHECK", 0.05)
    journal = J.Journal(tmp_path / "journal.sqlite")
    journal.commit_per_session()
    thread = journal._checkpointer._thread
    assert thread.is_alive()
    db = journal._db
    del journal
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()
    db.close()


def test_a_removed_journal_file_is_not_made_again_by_its_checkpoint_thread(tmp_path):
    path, journal = _backtest_journal(tmp_path)
    _session(journal, "r", 3)
    journal._checkpointer.wait_idle(10)
    journal._checkpointer.stop()  # a fresh thread, as if the journal had been opened after the file went away
    journal._db.close()
    for p in tmp_path.iterdir():
        p.unlink()
    checkpointer = J._Checkpointer(journal)
    checkpointer.poke()
    deadline = time.monotonic() + 5
    while checkpointer._thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not checkpointer._thread.is_alive()  # it could not open the file: it ends
    assert list(tmp_path.iterdir()) == []
    journal._db = None
    journal._checkpointer = None
