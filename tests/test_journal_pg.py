"""The journal on a real PostgreSQL server (tests/pgserver.py: the Debian binaries, started by the tests):
one schema definition at the same head on both backends with money as NUMERIC, a backtest whose report equals
the SQLite one to the cent, `journal copy` both ways row for row, reading commands that take the URL and never
write (nor migrate), readers during a run that see whole sessions, and a kill -9 of the writer that leaves every
finished session whole. A password in the URL never reaches the screen, an error or the run folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from strikebench.cli import main
from strikebench.journal import Journal, JournalError, open_read_only
from strikebench.journal_schema import HEAD_REVISION, MONEY_COLUMNS, TABLES

PASSWORD = "s3cret-pw"  # tests/pgserver.py's
STRIKEBENCH = str(Path(sys.executable).with_name("strikebench"))
CONFIG = """\
name: pgjob
data: {source: synthetic, seed: 7, start: 2024-01-08, end: 2024-01-10}
broker:
  params: {initial_cash: 100000}
  fill_model: {name: mid_slippage, params: {k: 0.30}}
  commission: {name: cboe_retail}
strategies:
  - name: credit_vertical
    params: {dte_targets: [0, 2], dte_tolerance: 0, entry_times: ["10:00", "13:00"]}
output: {plots: false}
"""
#: columns compared between two runs of one config (ids carry the run id)
RUN_SPECIFIC = ("trade_id", "decision_id", "run_id", "order_id", "fill_id")


def _rows(url, sql, params=()):
    j = open_read_only(url)
    try:
        return [tuple(r) for r in j.execute(sql, params)]
    finally:
        j.close()


def _table_dump(url, run_id) -> dict:
    """Every row of a run, every table, as the journal returns it (money as decimal text), keys re-assigned
    by the target (snapshot/context/event/trip ids) replaced by what they point at."""
    out = {}
    j = open_read_only(url)
    try:
        for t in TABLES:
            if t.name in ("journal_meta", "chain_snapshots", "context_snapshots"):
                continue
            cols = [c.name for c in t.columns if c.kind not in ("id", "rowid")
                    and c.name not in ("snapshot_id", "context_id")]
            out[t.name] = sorted(tuple(r) for r in j.execute(
                f"SELECT {', '.join(cols)} FROM {t.name} WHERE run_id = ?", (run_id,)))
        out["snapshots"] = sorted(tuple(r) for r in j.execute(
            "SELECT d.decision_id, s.checksum, s.underlying_price, s.data, c.context FROM trade_decisions d"
            " LEFT JOIN chain_snapshots s ON s.snapshot_id = d.snapshot_id"
            " LEFT JOIN context_snapshots c ON c.context_id = d.context_id WHERE d.run_id = ?", (run_id,)))
    finally:
        j.close()
    return out


@pytest.fixture(scope="module")
def pg_runs(pg_server, tmp_path_factory):
    """The same 3-session backtest journaled to SQLite and to PostgreSQL (URL from an env var, as a secret is)."""
    root = tmp_path_factory.mktemp("pgruns")
    url = pg_server.create_database()
    cfg = root / "job.yaml"
    cfg.write_text(CONFIG + 'journal: {url: "${SB_TEST_JOURNAL_URL}"}\n')
    plain = root / "plain.yaml"
    plain.write_text(CONFIG)
    outs = {}
    os.environ["SB_TEST_JOURNAL_URL"] = url
    try:
        for name, path in (("pg", cfg), ("sqlite", plain)):  # in this process: the imports are paid once
            assert main(["backtest", str(path), "--set", f"output.dir={root / name}"]) == 0
            (folder,) = (root / name).iterdir()
            outs[name] = folder
    finally:
        del os.environ["SB_TEST_JOURNAL_URL"]
    return url, outs["pg"], outs["sqlite"]


def test_one_schema_at_head_on_both_backends_money_numeric_on_postgres(pg_server, tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from strikebench.journal_admin import _engine
    from strikebench.journal_schema import metadata

    pg_url = pg_server.create_database(empty=True)
    Journal(tmp_path / "j.sqlite").close()  # SQLite: the DDL rendered without SQLAlchemy
    Journal(pg_url).close()  # PostgreSQL: an empty database gets Alembic's revisions on the first write
    for url in (str(tmp_path / "j.sqlite"), pg_url):
        engine = _engine(url)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}),
                                    metadata(dialect=conn.dialect.name))
            assert diff == [], (url.split("://")[0], diff)
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == HEAD_REVISION
        engine.dispose()
    types = dict(((t, c), k) for t, c, k in _rows(pg_url, "SELECT table_name, column_name, data_type FROM"
                                                  " information_schema.columns WHERE table_schema = 'public'"))
    assert {types[tc] for tc in MONEY_COLUMNS} == {"numeric"} and len(MONEY_COLUMNS) == 17
    assert types[("trades", "exit_reason")] == "text" and types[("chain_snapshots", "data")] == "bytea"


def test_a_backtest_on_postgres_reports_what_sqlite_does_to_the_cent(pg_runs, capsys):
    url, pg_dir, lite_dir = pg_runs
    out = capsys.readouterr()
    assert PASSWORD not in out.out + out.err
    # the run folder names the database by the config's template, never by the secret
    assert (pg_dir / "journal.url").read_text() == "${SB_TEST_JOURNAL_URL}\n"
    assert not (pg_dir / "journal.sqlite").exists()
    for f in pg_dir.iterdir():
        assert PASSWORD.encode() not in f.read_bytes(), f.name
    pg_trades = pd.read_csv(pg_dir / "trades.csv", dtype=str)
    lite_trades = pd.read_csv(lite_dir / "trades.csv", dtype=str)
    keep = [c for c in lite_trades.columns if c not in RUN_SPECIFIC]
    assert len(lite_trades) >= 4 and pg_trades[keep].equals(lite_trades[keep])
    assert set(pg_trades["realized_pnl"].dropna()) and all(
        Decimal(x).as_tuple().exponent == -2 for x in pg_trades["realized_pnl"].dropna())
    pg_sum, lite_sum = (json.loads((d / "summary.json").read_text()) for d in (pg_dir, lite_dir))
    for key in ("run_id", "run_dir", "started_at", "ended_at", "name", "config_hash"):
        pg_sum.pop(key, None), lite_sum.pop(key, None)
    assert pg_sum == lite_sum
    # the money as PostgreSQL holds it: NUMERIC, the same digits as SQLite's text, to the cent
    lite_run = _rows(str(lite_dir / "journal.sqlite"), "SELECT run_id FROM runs")[0][0]
    pg_run = _rows(url, "SELECT run_id FROM runs")[0][0]
    q = "SELECT realized_pnl::text, fees::text FROM trades WHERE run_id = ? ORDER BY opened_at, strategy"
    assert _rows(url, q, (pg_run,)) == _rows(str(lite_dir / "journal.sqlite"), q.replace("::text", ""), (lite_run,))


def test_journal_copy_both_ways_row_for_row_and_never_over_a_journal_with_runs(pg_runs, pg_server, tmp_path,
                                                                                capsys):
    _, _, lite_dir = pg_runs
    src = lite_dir / "journal.sqlite"
    (run_id,) = (r[0] for r in _rows(str(src), "SELECT run_id FROM runs"))
    pg = pg_server.create_database()
    back = tmp_path / "back" / "journal.sqlite"
    assert main(["journal", "copy", str(src), pg]) == 0
    assert main(["journal", "copy", pg, str(back)]) == 0
    before = _table_dump(str(src), run_id)
    assert before["fills"] and before["snapshots"]
    assert _table_dump(pg, run_id) == before == _table_dump(str(back), run_id)
    assert main(["report", pg, "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "trades.csv").read_text() == (lite_dir / "trades.csv").read_text()
    capsys.readouterr()
    # a target that holds runs is refused, whole, one line; --force replaces that run and only it
    assert main(["journal", "copy", str(src), pg]) == 6
    err = capsys.readouterr().err
    assert "already holds 1 run(s)" in err and "--force" in err and PASSWORD not in err and len(err.splitlines()) == 1
    assert main(["journal", "copy", str(src), pg, "--force"]) == 0
    assert _table_dump(pg, run_id) == before
    assert _rows(pg, "SELECT COUNT(*) FROM chain_snapshots") == _rows(str(src), "SELECT COUNT(*) FROM chain_snapshots")


def test_reading_commands_take_the_url_never_write_and_never_migrate(pg_runs, pg_server, tmp_path, capsys,
                                                                     monkeypatch):
    url, pg_dir, _ = pg_runs
    (run_id, decision), = _rows(url, "SELECT run_id, MIN(decision_id) FROM trade_decisions GROUP BY run_id")
    counts = "SELECT (SELECT COUNT(*) FROM trades), (SELECT COUNT(*) FROM fills), (SELECT summary FROM runs)"
    before = _rows(url, counts)
    for argv in (["decisions", url], ["decisions", url, "--date", "2024-01-09"], ["replay-decision", url, decision],
                 ["status", url], ["report", url, "--run", run_id, "--out", str(tmp_path / "r")]):
        assert main(argv) == 0, argv
    out = capsys.readouterr()
    assert PASSWORD not in out.out + out.err and "TRADE" in out.out and "SAME" in out.out.upper()
    # the run folder's journal.url holds ${SB_TEST_JOURNAL_URL}: without the variable, one line naming it
    assert main(["decisions", str(pg_dir)]) == 6
    assert "needs environment variable SB_TEST_JOURNAL_URL" in capsys.readouterr().err
    monkeypatch.setenv("SB_TEST_JOURNAL_URL", url)
    assert main(["decisions", str(pg_dir)]) == 0
    assert _rows(url, counts) == before
    with pytest.raises(JournalError, match="opened read-only"):
        open_read_only(url).record_equity(run_id, "2024-01-11", 1)
    # a journal behind this version's schema: reading refuses with the command to run, and migrates nothing
    old = pg_server.create_database()
    assert main(["journal", "copy", url, old]) == 0
    _psql(old, "DELETE FROM alembic_version")
    capsys.readouterr()
    assert main(["report", old, "--out", str(tmp_path / "o")]) == 6
    err = capsys.readouterr().err.strip()
    assert f"run `strikebench journal migrate postgresql://sb:***@" in err and len(err.splitlines()) == 1
    assert _rows_raw(old, "SELECT COUNT(*) FROM alembic_version") == [(0,)]
    assert main(["journal", "migrate", old]) == 0
    assert f"migrated from no revision to schema revision {HEAD_REVISION}" in capsys.readouterr().out
    assert main(["journal", "migrate", old]) == 0 and "already at" in capsys.readouterr().out
    assert main(["report", old, "--out", str(tmp_path / "o")]) == 0


def _psql(url, sql):
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def _rows_raw(url, sql):
    import psycopg

    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(sql)]


def test_readers_during_a_run_see_whole_sessions_and_a_killed_writer_leaves_them_whole(pg_server, tmp_path):
    url = pg_server.create_database()
    cfg = tmp_path / "long.yaml"
    cfg.write_text(CONFIG.replace("end: 2024-01-10", "end: 2024-02-29") + f"journal: {{url: '{url}'}}\n")
    writer = subprocess.Popen([STRIKEBENCH, "backtest", str(cfg), "--quiet", "--set", f"output.dir={tmp_path}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and writer.poll() is None:
            try:
                j = open_read_only(url)
            except JournalError:  # the schema is not made yet
                time.sleep(0.2)
                continue
            try:  # one reader's snapshot: every decision's day is a session whose equity row is there
                days = {r[0] for r in j.execute("SELECT day FROM equity")}
                decided = {r[0] for r in j.execute("SELECT DISTINCT substr(decided_at, 1, 10) FROM trade_decisions")}
                _check_trades_whole(j)
            finally:
                j.close()
            assert decided <= days, decided - days
            seen.append(len(days))
            if len(days) >= 3:
                break
            time.sleep(0.1)
        assert writer.poll() is None, writer.communicate()[1]
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert seen == sorted(seen) and seen[-1] >= 3
    j = open_read_only(url)
    try:
        (run,) = j.runs()
        assert run["completed"] == 0
        days = {r[0] for r in j.execute("SELECT day FROM equity")}
        decided = {r[0] for r in j.execute("SELECT DISTINCT substr(decided_at, 1, 10) FROM trade_decisions")}
        assert decided == days and len(days) >= 3  # every finished session, whole; nothing of the one it was in
        _check_trades_whole(j)
    finally:
        j.close()
    # the killed connection left no lock behind: the database takes a new run at once
    with Journal(url) as w:
        w.start_run("after-kill", name="after", mode="backtest")


def _check_trades_whole(j):
    """Each trade has its legs and opening fill; each closed trade's fills sum to its P&L to the cent."""
    for trade_id, pnl, fees in j.execute("SELECT trade_id, realized_pnl, fees FROM trades"):
        fills = [tuple(r) for r in j.execute("SELECT cash, fees, opens FROM fills WHERE trade_id = ?", (trade_id,))]
        assert any(f[2] == 1 for f in fills), trade_id
        assert j.execute("SELECT COUNT(*) FROM trade_legs WHERE trade_id = ?", (trade_id,))[0][0] >= 2
        if pnl is not None:
            assert sum(Decimal(f[0]) for f in fills) == Decimal(pnl), trade_id
            assert sum(Decimal(f[1]) for f in fills) == Decimal(fees), trade_id


def test_the_dashboard_names_a_postgres_journal_without_its_password(pg_runs):
    pytest.importorskip("fastapi")
    from strikebench.dashboard.sources import open_source

    url = pg_runs[0]
    assert PASSWORD in url
    src = open_source(url)
    try:
        assert PASSWORD not in src.label and PASSWORD not in json.dumps(src.describe(), default=str)
        assert "***" in src.label
    finally:
        src.close()
