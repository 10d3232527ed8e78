"""Paper runs and trading accounts on a PostgreSQL journal (tests/pgserver.py: a real server, never a mock).

A paper replay writing to PostgreSQL equals the same replay on SQLite row for row and to the cent; a paper run
killed (SIGKILL) right after it journaled an order resumes from the PostgreSQL journal without opening anything
twice; an account's cash, positions and orders carry across processes on PostgreSQL exactly as on SQLite; the
dashboard watches a PostgreSQL paper run live (server-sent events, only new rows read); a journal at schema
revision 0001 migrates. The password never reaches the screen, the run folder or the account folder."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from strikebench.cli import main
from strikebench.journal import open_read_only
from strikebench.journal_schema import BY_NAME, HEAD_REVISION
from test_dashboard import dashboard  # the real application under uvicorn on 127.0.0.1

PASSWORD = "s3cret-pw"  # tests/pgserver.py's
STRIKEBENCH = str(Path(sys.executable).with_name("strikebench"))
DAY = "2024-01-08"
CONFIG = {
    "name": "pgpaper",
    "data": {"source": "synthetic", "seed": 7, "start": "2024-01-08", "end": "2024-01-10"},
    "broker": {"name": "paper", "params": {"initial_cash": 100000, "latency_seconds": 0, "seed": 5},
               "fill_model": {"name": "mid_slippage", "params": {"k": 0.30}}, "commission": {"name": "cboe_retail"}},
    # three 0DTE put verticals a session, each closed at its take-profit the same day (3 trades, 6 fills a session)
    "strategies": [{"name": "credit_vertical", "params": {"dte_targets": [0], "dte_tolerance": 0,
                                                          "entry_times": ["10:00", "11:00", "13:00"],
                                                          "take_profit_pct": 0.3}}],
    "output": {"plots": False},
}
#: tables compared row for row between the two backends (keys each database assigns itself are left out)
COMPARED = ("trade_decisions", "orders", "order_events", "fills", "trades", "trade_legs", "equity")


def write_config(folder: Path, *, postgres: bool, **extra) -> Path:
    cfg = yaml.safe_load(yaml.safe_dump(CONFIG))
    cfg.update(extra)
    if postgres:  # the URL (password included) comes from the environment: never written anywhere
        cfg["journal"] = {"url": "${SB_TEST_JOURNAL_URL}"}
    path = folder / ("pg.yaml" if postgres else "lite.yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def dump(url, run_id: str) -> dict:
    """Every compared row of the run as the journal returns it (money as exact decimal text), sorted."""
    j = open_read_only(url)
    try:
        out = {}
        for table in COMPARED:
            cols = [c.name for c in BY_NAME[table].columns
                    if c.kind not in ("id", "rowid") and c.name not in ("snapshot_id", "context_id")]
            rows = j.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE run_id = ?", (run_id,))
            out[table] = sorted((tuple(r) for r in rows), key=repr)
        out["initial_cash"] = j.execute("SELECT initial_cash FROM runs WHERE run_id = ?", (run_id,))[0][0]
        return out
    finally:
        j.close()


def journal_cash(d: dict) -> Decimal:
    return Decimal(d["initial_cash"]) + sum((Decimal(f[COLS_FILLS.index("cash")]) for f in d["fills"]), Decimal(0))


COLS_FILLS = [c.name for c in BY_NAME["fills"].columns if c.kind not in ("id", "rowid")]


def broker_record(folder: Path) -> tuple[Decimal, dict]:
    """The paper broker's own record (its SQLite file in the folder): cash and open positions."""
    db = sqlite3.connect(folder / "paper_broker.sqlite")
    try:
        cash = Decimal(int(db.execute("SELECT value FROM meta WHERE key = 'cash_cents'").fetchone()[0])) / 100
        return cash, dict(db.execute("SELECT occ, quantity FROM positions WHERE quantity != 0").fetchall())
    finally:
        db.close()


def _broker_has_an_order(folder: Path) -> bool:
    """True once the paper broker's SQLite file (written by the running paper process) holds an order."""
    path = folder / "paper_broker.sqlite"
    if not path.exists():
        return False
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.05)
        try:
            return db.execute("SELECT 1 FROM orders LIMIT 1").fetchone() is not None
        finally:
            db.close()
    except sqlite3.Error:  # not created yet, or locked by the writer this instant
        return False


def no_password_in(folder: Path) -> None:
    for f in folder.rglob("*"):
        if f.is_file():
            assert PASSWORD.encode() not in f.read_bytes(), f


@pytest.fixture(scope="module")
def env_url(pg_server):
    """One database for the module's runs (a shared journal: runs of several folders in it); its URL in the
    environment variable the YAML names."""
    url = pg_server.create_database()
    old = os.environ.get("SB_TEST_JOURNAL_URL")
    os.environ["SB_TEST_JOURNAL_URL"] = url
    yield url
    if old is None:
        os.environ.pop("SB_TEST_JOURNAL_URL", None)
    else:
        os.environ["SB_TEST_JOURNAL_URL"] = old


@pytest.fixture(scope="module")
def replays(tmp_path_factory, env_url):
    """The same one-session paper replay (speed 0) to SQLite and to PostgreSQL, each in a folder named `paper`
    (so run, order and trade ids are the same)."""
    base = tmp_path_factory.mktemp("replays")
    out = {}
    for kind in ("sqlite", "pg"):
        (base / kind).mkdir()
        cfg = write_config(base / kind, postgres=kind == "pg")
        rd = base / kind / "paper"
        assert main(["paper", str(cfg), "--clock", "replay", "--speed", "0", "--day", DAY, "--no-panel",
                     "--run-dir", str(rd)]) == 0
        out[kind] = rd
    return out


def test_a_paper_replay_on_postgres_equals_sqlite_to_the_cent(replays, env_url, capsys):
    out = capsys.readouterr()
    assert PASSWORD not in out.out + out.err
    lite, pg = replays["sqlite"], replays["pg"]
    assert sorted(p.name for p in pg.iterdir()) == ["journal.url", "live.json", "paper_broker.sqlite"]
    assert (pg / "journal.url").read_text().strip() == "${SB_TEST_JOURNAL_URL}"  # the template, not the secret
    no_password_in(pg)
    a, b = dump(lite / "journal.sqlite", "paper"), dump(env_url, "paper")
    assert len(a["trades"]) == 3 and len(a["fills"]) == 6 and all(t[5] is not None for t in a["trades"])  # closed
    for table in COMPARED:
        assert a[table] == b[table], table
    # by hand: each trade's fills sum to its realized P&L and fees; the cash is the initial cash plus every fill's
    # cash; the session's equity row equals it (everything closed); the paper broker's own record agrees
    ti = [c.name for c in BY_NAME["trades"].columns].index
    for t in b["trades"]:
        fills = [f for f in b["fills"] if f[COLS_FILLS.index("trade_id")] == t[ti("trade_id")]]
        assert sum(Decimal(f[COLS_FILLS.index("cash")]) for f in fills) == Decimal(t[ti("realized_pnl")])
        assert sum(Decimal(f[COLS_FILLS.index("fees")]) for f in fills) == Decimal(t[ti("fees")])
    cash = journal_cash(b)
    assert cash == journal_cash(a) == Decimal("100000") + sum(Decimal(t[ti("realized_pnl")]) for t in b["trades"])
    assert b["equity"] == [("paper", DAY, f"{cash:.2f}")]
    assert broker_record(pg) == (cash, {})
    # money is NUMERIC on the server, and `status` on the folder reads the PostgreSQL journal
    j = open_read_only(env_url)
    try:
        assert {r[0] for r in j.execute("SELECT pg_typeof(cash)::text FROM fills")} == {"numeric"}
    finally:
        j.close()
    assert main(["status", str(pg)]) == 0
    text = capsys.readouterr().out
    assert "completed" in text and f"realized P&L {cash - 100000:+,.2f}" in text and PASSWORD not in text


def test_a_paper_run_killed_after_an_order_resumes_from_postgres_without_opening_twice(replays, env_url, pg_server,
                                                                                        tmp_path):
    """SIGKILL the paper process as soon as the PostgreSQL journal holds its first submitted order and the paper
    broker holds that order (the order was journaled before it was sent: the fill may or may not have come
    back); the same command resumes from the journal, looks the order up at the broker instead of sending it
    again, and ends where the uninterrupted replay ended, to the cent. (A kill between the journal's row and
    the broker's receipt is the other path: on resume that order is closed as never sent and not resent,
    tests/test_live_runtime.py and tests/test_paper_sigkill.py; waiting for the broker's row keeps this test
    on its own path on a loaded machine, where that window was once hit.)"""
    url = pg_server.create_database()  # its own database: the same run id `paper` as the reference replay
    env = dict(os.environ, SB_TEST_JOURNAL_URL=url)
    cfg = write_config(tmp_path, postgres=True)
    rd = tmp_path / "paper"
    cmd = [STRIKEBENCH, "paper", str(cfg), "--clock", "replay", "--speed", "1200", "--day", DAY, "--no-panel",
           "--run-dir", str(rd)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    import psycopg

    deadline = time.monotonic() + 120
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            while not (conn.execute("SELECT 1 FROM order_events WHERE status = 'submitted'").fetchone()
                       and _broker_has_an_order(rd)):
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "no order within 120 s"
                time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    j = open_read_only(url)
    try:
        assert j.execute("SELECT completed FROM runs")[0][0] == 0
        assert j.execute("SELECT COUNT(*) FROM orders WHERE opens = 1")[0][0] >= 1
        assert j.execute("SELECT COUNT(*) FROM trades")[0][0] <= 1
        # consistent as left: every trade has its legs and its opening fill, every fill its trade and order
        for (trade_id,) in j.execute("SELECT trade_id FROM trades"):
            assert j.execute("SELECT COUNT(*) FROM trade_legs WHERE trade_id = ?", (trade_id,))[0][0] == 2
            assert j.execute("SELECT COUNT(*) FROM fills WHERE trade_id = ? AND opens = 1", (trade_id,))[0][0] == 1
        assert j.execute("SELECT COUNT(*) FROM fills f WHERE NOT EXISTS (SELECT 1 FROM trades t WHERE t.trade_id ="
                         " f.trade_id) OR NOT EXISTS (SELECT 1 FROM orders o WHERE o.order_id = f.order_id)")[0][0] == 0
    finally:
        j.close()
    cmd[cmd.index("1200")] = "0"  # the same command resumes it (as fast as it goes)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert PASSWORD not in p.stdout + p.stderr
    got, ref = dump(url, "paper"), dump(env_url, "paper")
    for table in ("orders", "fills", "trades", "trade_legs", "equity"):
        assert got[table] == ref[table], table
    oi = [c.name for c in BY_NAME["order_events"].columns if c.kind != "id"].index
    submitted = [e[oi("order_id")] for e in got["order_events"] if e[oi("status")] == "submitted"]
    assert len(submitted) == len(set(submitted)) == 6  # every order sent once: 3 opening, 3 closing
    assert journal_cash(got) == journal_cash(ref)
    assert broker_record(rd) == (journal_cash(got), {})  # the broker saw each order once too
    j = open_read_only(url)
    try:
        log = [r[0] for r in j.execute("SELECT message FROM live_log WHERE kind = 'resume'")]
    finally:
        j.close()
    assert any("restored from the journal" in m for m in log), log


def test_an_account_on_postgres_carries_cash_and_positions_across_processes_like_a_backtest(env_url, tmp_path):
    """Two sessions of an account whose trades stay open overnight (2-day verticals), one session per process: the
    second restores cash, open trades and orders from the PostgreSQL journal. The reference is `strikebench
    backtest` of the same span (a separate engine path; tests/test_account.py holds an SQLite account to it the
    same way): same trades to the cent, fills stamped at the bar's close (label + 1 min), same cash; the paper
    broker's record agrees; `status` on the account folder reads PostgreSQL."""
    import pandas as pd

    extra = {"strategies": [{"name": "credit_vertical", "params": {"dte_targets": [2], "dte_tolerance": 0,
                                                                   "entry_times": ["10:00", "13:00"]}}]}
    bt = write_config(tmp_path, postgres=False, **dict(extra, broker=dict(CONFIG["broker"], name="backtest",
                                                                                  params={"initial_cash": 100000}),
                                                       data=dict(CONFIG["data"], end="2024-01-09")))
    assert main(["backtest", str(bt), "--quiet", "--set", f"output.dir={tmp_path / 'bt'}"]) == 0
    ref = next((tmp_path / "bt").glob("*/journal.sqlite"))
    ref_run = open_read_only(ref).runs()[0]["run_id"]
    cfg = write_config(tmp_path, postgres=True, **extra)
    acct = tmp_path / "acct"
    span = ["--clock", "replay", "--from", "2024-01-08", "--to", "2024-01-09", "--speed", "0", "--no-panel"]
    for more in (["--sessions", "1"], []):
        p = subprocess.run([STRIKEBENCH, "trade", str(cfg), "--account", str(acct), *span, *more],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert p.returncode == 0, p.stdout + p.stderr
        assert PASSWORD not in p.stdout + p.stderr
        assert ("session 2024-01-09" in p.stdout) == (not more)
    a, b = dump(ref, ref_run), dump(env_url, "acct")
    ti = [c.name for c in BY_NAME["trades"].columns].index
    money = [ti(k) for k in ("contracts", "entry_price", "entry_credit", "exit_price", "exit_debit", "fees",
                             "realized_pnl", "max_loss", "exit_reason")]
    assert len(b["trades"]) == len(a["trades"]) == 4
    assert [t[ti("opened_at")][:10] for t in b["trades"]] == ["2024-01-08"] * 2 + ["2024-01-09"] * 2
    for x, y in zip(sorted(a["trades"], key=lambda t: t[ti("opened_at")]),
                    sorted(b["trades"], key=lambda t: t[ti("opened_at")])):
        assert pd.Timestamp(y[ti("opened_at")]) == pd.Timestamp(x[ti("opened_at")]) + pd.Timedelta(minutes=1)
        assert [y[k] for k in money] == [x[k] for k in money], (x, y)
    assert journal_cash(a) == journal_cash(b)
    cash, positions = broker_record(acct)
    assert cash == journal_cash(b) and len(positions) == 8  # 4 open verticals, 2 legs each
    no_password_in(acct)
    j = open_read_only(env_url)
    try:
        sessions = [tuple(r) for r in j.execute("SELECT day, completed FROM account_sessions WHERE run_id = 'acct'"
                                                " ORDER BY day")]
        resumed = [r[0] for r in j.execute("SELECT message FROM live_log WHERE run_id = 'acct' AND kind = 'resume'")]
        opened = j.execute("SELECT COUNT(*) FROM orders WHERE run_id = 'acct' AND opens = 1")[0][0]
    finally:
        j.close()
    assert sessions == [("2024-01-08", 1), ("2024-01-09", 1)] and opened == 4
    assert any("restored from the journal" in m and "2 open trade(s)" in m for m in resumed), resumed
    p = subprocess.run([STRIKEBENCH, "status", str(acct)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 session(s) completed" in p.stdout and f"cash {journal_cash(b):,.2f}" in p.stdout


def test_the_dashboard_watches_a_postgres_paper_run_by_server_sent_events(replays, env_url):
    """`strikebench dashboard URL`: the paper run of the URL is a live source; its state equals the journal; a row
    another process commits reaches the event stream within 2 s, and the poll reads that one row only."""
    pytest.importorskip("fastapi")
    requests = pytest.importorskip("requests")
    from strikebench.live.runtime import LiveState

    with dashboard([env_url + "#paper"]) as (url, sources):
        listed = requests.get(url + "/api/sources", timeout=10)
        assert listed.status_code == 200 and PASSWORD not in listed.text
        src, = sources
        assert src.kind == "live" and src.postgres and src.folder == replays["pg"]
        view = requests.get(url + "/api/live/0/state", timeout=10).json()
        ref = dump(env_url, "paper")
        assert Decimal(str(view["cash"])) == journal_cash(ref) and view["closed_trades"] == 3 and view["open"] == []
        assert len(view["decisions"]) == len(ref["trade_decisions"])
        r = requests.get(url + "/api/live/0/stream", stream=True, timeout=10)
        events = r.iter_lines(decode_unicode=True)

        def next_state():
            for line in events:
                if line.startswith("data: "):
                    return json.loads(line[6:])
            raise AssertionError("stream ended")

        first = next_state()
        assert src.poll() is False  # nothing new since: nothing read
        before = src.rows_read
        st = LiveState(env_url, "paper")
        t0 = time.monotonic()
        st.log("2024-01-08T16:00:00-05:00", "note", "streamed from postgres")
        st.close()
        second = next_state()
        assert time.monotonic() - t0 < 2.0
        assert second["version"] > first["version"] and second["log"][-1]["message"] == "streamed from postgres"
        assert src.rows_read == before + 1
        # a state key written, then rewritten (an upsert): the row moves past the ids held each time, and only it
        # is read again
        for n, value in enumerate(("first", "second"), start=2):
            st = LiveState(env_url, "paper")
            st.set("fail_closed", value)
            st.close()
            deadline = time.monotonic() + 2
            while requests.get(url + "/api/live/0/state", timeout=10).json()["risk"]["fail_closed"] != value:
                assert time.monotonic() < deadline, f"the dashboard did not see fail_closed = {value}"
                time.sleep(0.05)
            assert src.rows_read == before + n
        r.close()


def test_a_postgres_journal_at_revision_0001_migrates_and_takes_a_paper_run(pg_server, tmp_path, capsys,
                                                                            monkeypatch):
    """A database at 0001 (Alembic stopped there) holding fills: `journal migrate` brings it to head (the live
    tables made, the fills numbered in table order); readers refused it before; a paper run then writes to it."""
    from alembic import command
    from alembic.config import Config

    from strikebench.journal_admin import _engine

    url = pg_server.create_database(empty=True)
    import strikebench.journal_admin as admin

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(admin.__file__).resolve().parent / "journal_migrations"))
    engine = _engine(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.exec_driver_sql("INSERT INTO runs(run_id, name, mode, started_at, code_version) VALUES "
                             "('old', 'old', 'backtest', '2024-01-01T00:00:00+00:00', 'x')")
        for k in (1, 2):
            conn.exec_driver_sql(
                "INSERT INTO fills(fill_id, run_id, kind, opens, filled_at, price, quantity, multiplier, fees, cash,"
                f" leg_prices) VALUES ('F{k}', 'old', 'fill', 1, '2024-01-02T10:00:00-05:00', 0.50, 1, 100, 1.28,"
                f" {k}.05, '[]')")
        tables = {r[0] for r in conn.exec_driver_sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    engine.dispose()
    assert "live_state" not in tables and "fills" in tables
    assert main(["decisions", url, "--run", "old"]) == 6  # a reader never migrates: it says what to run
    assert "journal migrate" in capsys.readouterr().err
    assert main(["journal", "migrate", url]) == 0
    assert f"migrated from 0001 to schema revision {HEAD_REVISION}" in capsys.readouterr().out
    j = open_read_only(url)
    try:
        assert [tuple(r) for r in j.execute("SELECT fill_id, rowid, cash FROM fills ORDER BY rowid")] == \
            [("F1", 1, "1.05"), ("F2", 2, "2.05")]
        assert j.execute("SELECT COUNT(*) FROM live_state")[0][0] == 0
    finally:
        j.close()
    monkeypatch.setenv("SB_TEST_JOURNAL_URL", url)
    rd = tmp_path / "after"
    assert main(["paper", str(write_config(tmp_path, postgres=True)), "--clock", "replay", "--speed", "0", "--day",
                 DAY, "--no-panel", "--run-dir", str(rd), "--set", "strategies.0.params.entry_times=[\"10:00\"]"]) == 0
    j = open_read_only(url)
    try:
        assert j.execute("SELECT COUNT(*) FROM trades WHERE run_id = 'after'")[0][0] == 1
        assert j.execute("SELECT version_num FROM alembic_version")[0][0] == HEAD_REVISION
    finally:
        j.close()


def test_an_sqlite_paper_journal_at_0001_is_brought_to_head_by_its_writer(tmp_path):
    """SQLite journals are migrated by their writer: a paper journal written at 0001 (the runtime's own live tables,
    no account_sessions) reopened for writing gets the missing table and revision 0002, its rows untouched."""
    from strikebench.journal import Journal

    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE account_sessions; UPDATE alembic_version SET version_num = '0001';"
                     "INSERT INTO live_state(run_id, key, value) VALUES ('r', 'bar_done', '5');")
    db.commit()
    db.close()
    Journal(path).close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD_REVISION,)]
    assert db.execute("SELECT COUNT(*) FROM account_sessions").fetchone() == (0,)
    assert db.execute("SELECT value FROM live_state").fetchall() == [("5",)]
    db.close()


def test_a_password_on_the_command_line_is_refused_for_paper_and_accounts(tmp_path, capsys, monkeypatch):
    """Paper runs and accounts store their options in their folder to resume: `--set journal.url=` with a password
    is one line (exit 2) naming where the password goes, and nothing is made."""
    cfg = write_config(tmp_path, postgres=False)
    monkeypatch.chdir(tmp_path)
    for command in (["paper", "--clock", "replay", "--day", DAY], ["trade", "--clock", "replay", "--from", DAY]):
        assert main([command[0], str(cfg), *command[1:], "--set",
                     f"journal.url=postgresql://sb:{PASSWORD}@127.0.0.1:1/x"]) == 2
        err = capsys.readouterr().err.strip()
        assert "PGPASSWORD" in err and "postgresql://sb:***@127.0.0.1:1/x" in err and PASSWORD not in err
        assert len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lite.yaml"]


def test_a_folder_of_the_same_name_elsewhere_never_takes_over_a_run_of_a_shared_journal(replays, env_url, tmp_path,
                                                                                        capsys):
    """Run ids are folder names; the shared database already holds `paper` (the replay fixture's folder). Another
    folder named `paper` is refused (one line naming both folders, password masked), never resumed into that run,
    and leaves nothing behind."""
    cfg = write_config(tmp_path, postgres=True)
    before = dump(env_url, "paper")
    assert main(["paper", str(cfg), "--clock", "replay", "--speed", "0", "--day", DAY, "--no-panel", "--run-dir",
                 str(tmp_path / "paper")]) != 0
    err = capsys.readouterr().err.strip()
    assert "run 'paper' in this journal belongs to the folder" in err and str(replays["pg"]) in err
    assert PASSWORD not in err and "***" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "paper").exists() and dump(env_url, "paper") == before
