"""The trading account (`strikebench trade`): sessions carry positions, cash and orders; it agrees with a backtest.

Every run here is a real `strikebench` process. The reference numbers come from `strikebench backtest` of the
same span and seed (a separate engine path: the backtest broker fills in-process), never from the account."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
import yaml

STRIKEBENCH = str(Path(sys.executable).with_name("strikebench"))
SPAN = ("2023-03-13", "2023-03-17")

BASE = {
    "name": "acct",
    "data": {"source": "synthetic", "seed": 42, "start": SPAN[0], "end": SPAN[1], "scenario": "default"},
    "broker": {"name": "backtest", "params": {"initial_cash": 100000},
               "fill_model": {"name": "mid_slippage", "params": {"k": 0.30}}, "commission": {"name": "cboe_retail"}},
    "strategies": [{"name": "credit_vertical", "params": {
        "dte_targets": [3, 5, 7], "dte_tolerance": 1, "entry_times": ["10:00", "11:00", "12:00"],
        "short_deltas": [0.10, 0.20], "side": "put", "width": 25, "take_profit_pct": 0.5, "stop_multiple": 2.0,
        "contracts": 1}}],
    "risk": [{"name": "max_open_trades", "params": {"limit": 1}}, {"name": "max_new_trades_per_day",
                                                                   "params": {"limit": 1}}],
}


def sb(*args, cwd, check=True) -> subprocess.CompletedProcess:
    p = subprocess.run([STRIKEBENCH, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=900)
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


def write_config(tmp_path, broker=None) -> Path:
    cfg = yaml.safe_load(yaml.safe_dump(BASE))
    if broker is not None:
        cfg["broker"] = broker
    path = tmp_path / "acct.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


PAPER_EXACT = {"name": "paper", "params": {"initial_cash": 100000, "latency_seconds": 0, "seed": 5},
               "fill_model": {"name": "mid_slippage", "params": {"k": 0.30}}, "commission": {"name": "cboe_retail"}}


def trades(journal: Path) -> list[tuple]:
    db = sqlite3.connect(journal)
    try:
        return db.execute("SELECT opened_at, closed_at, contracts, entry_price, exit_price, fees, realized_pnl,"
                          " exit_reason FROM trades ORDER BY opened_at").fetchall()
    finally:
        db.close()


def cash(journal: Path) -> Decimal:
    db = sqlite3.connect(journal)
    try:
        init = Decimal(db.execute("SELECT initial_cash FROM runs").fetchone()[0])
        return init + sum((Decimal(r[0]) for r in db.execute("SELECT cash FROM fills")), Decimal(0))
    finally:
        db.close()


def backtest(tmp_path, cfg) -> Path:
    sb("backtest", cfg, "--set", f"output.dir={tmp_path / 'bt'}", "--set", "output.plots=false", cwd=tmp_path)
    return next((tmp_path / "bt").glob("*/journal.sqlite"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """`strikebench backtest` of the span (the backtest broker: the same YAML with broker `backtest`)."""
    d = tmp_path_factory.mktemp("reference")
    return backtest(d, write_config(d))


def broker_cash(account: Path) -> Decimal:
    db = sqlite3.connect(account / "paper_broker.sqlite")
    try:
        return Decimal(int(db.execute("SELECT value FROM meta WHERE key = 'cash_cents'").fetchone()[0])) / 100
    finally:
        db.close()


def broker_positions(account: Path) -> dict:
    db = sqlite3.connect(account / "paper_broker.sqlite")
    try:
        return dict(db.execute("SELECT occ, quantity FROM positions WHERE quantity != 0").fetchall())
    finally:
        db.close()


def assert_same_as_backtest(account_journal: Path, bt_journal: Path) -> None:
    live, ref = trades(account_journal), trades(bt_journal)
    assert len(ref) >= 3, ref  # the span has trades that open on one day and close on another
    assert any(r[1] is None or r[0][:10] != r[1][:10] for r in ref)
    assert len(live) == len(ref)
    for a, b in zip(live, ref):
        # the one legitimate difference: a live fill is stamped at the bar's close (label + 1 min, the moment
        # its quotes exist), the backtest stamps the bar's label; prices, fees and P&L are the same to the cent
        assert pd.Timestamp(a[0]) == pd.Timestamp(b[0]) + pd.Timedelta(minutes=1), (a, b)
        if b[1] is not None and b[7] != "settlement":
            assert pd.Timestamp(a[1]) == pd.Timestamp(b[1]) + pd.Timedelta(minutes=1), (a, b)
        assert a[2:] == b[2:], (a, b)
    assert cash(account_journal) == cash(bt_journal)


def test_replay_account_equals_backtest_and_resumes_between_sessions(tmp_path, reference):
    cfg = write_config(tmp_path, PAPER_EXACT)
    ref = reference
    acct = tmp_path / "accounts" / "a1"
    # two sessions, stop; then the same command finishes the span (positions and cash carried across processes)
    out = sb("trade", cfg, "--account", acct, "--clock", "replay", "--from", SPAN[0], "--to", SPAN[1], "--speed", 0,
             "--no-panel", "--sessions", 2, cwd=tmp_path).stdout
    assert "session 2023-03-14: completed" in out and "2023-03-15" not in out
    out = sb("trade", cfg, "--account", acct, "--clock", "replay", "--from", SPAN[0], "--to", SPAN[1], "--speed", 0,
             "--no-panel", cwd=tmp_path).stdout
    assert "session 2023-03-13" not in out and "session 2023-03-17: completed" in out
    assert_same_as_backtest(acct / "journal.sqlite", ref)
    assert broker_cash(acct) == cash(acct / "journal.sqlite")
    # ONE journal, ONE run for the account; a session row per day
    db = sqlite3.connect(acct / "journal.sqlite")
    assert db.execute("SELECT run_id, completed FROM runs").fetchall() == [("a1", 1)]
    assert [r[0] for r in db.execute("SELECT day FROM account_sessions WHERE completed = 1")] == \
        ["2023-03-13", "2023-03-14", "2023-03-15", "2023-03-16", "2023-03-17"]
    # status on the account reads the journal: cash and open trades as journaled
    st = sb("status", acct, cwd=tmp_path).stdout
    open_n = len([t for t in trades(acct / "journal.sqlite") if t[1] is None])
    assert f"open trades {open_n}" in st and f"cash {cash(acct / 'journal.sqlite'):,.2f}" in st
    # again: nothing left to do, nothing changes
    sb("trade", cfg, "--account", acct, "--clock", "replay", "--from", SPAN[0], "--to", SPAN[1], "--speed", 0,
       "--no-panel", cwd=tmp_path)
    assert_same_as_backtest(acct / "journal.sqlite", ref)


def test_restart_in_the_middle_of_a_session_equals_backtest(tmp_path, reference):
    """The trader stops twice in the middle of the first session (real processes that exit there); the same
    command finishes the span. At speed 0 the service's clock waits for it, so the result is the backtest's."""
    cfg = write_config(tmp_path, PAPER_EXACT)
    ref = reference
    acct = tmp_path / "accounts" / "mid"
    code = ("from strikebench.live.account import run_account; import sys; "
            f"s = run_account({str(cfg)!r}, account={str(acct)!r}, clock='replay', start='{SPAN[0]}', "
            f"end='{SPAN[1]}', speed=0, stop_after_bars=150, stop_after_sessions=None, say=print)")
    # the first call completes nothing past 150 bars of the first session; a second one the same in the next
    for _ in range(2):
        p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, p.stdout + p.stderr
    sessions = sqlite3.connect(acct / "journal.sqlite").execute(
        "SELECT day, completed FROM account_sessions ORDER BY day").fetchall()
    assert sessions[0] == ("2023-03-13", 0)  # stopped twice in the middle of the first session
    out = sb("trade", cfg, "--account", acct, "--clock", "replay", "--from", SPAN[0], "--to", SPAN[1], "--speed", 0,
             "--no-panel", cwd=tmp_path).stdout
    assert "resuming at bar" in (out + "".join(r[0] for r in sqlite3.connect(acct / "journal.sqlite").execute(
        "SELECT message FROM live_log WHERE kind = 'resume'")))
    assert_same_as_backtest(acct / "journal.sqlite", ref)
    assert broker_cash(acct) == cash(acct / "journal.sqlite")


def test_account_refuses_another_configuration(tmp_path):
    cfg = write_config(tmp_path, PAPER_EXACT)
    acct = tmp_path / "a2"
    sb("trade", cfg, "--account", acct, "--clock", "replay", "--from", SPAN[0], "--to", SPAN[0], "--speed", 0,
       "--no-panel", cwd=tmp_path)
    p = sb("trade", cfg, "--account", acct, "--set", "strategies.0.params.contracts=2", "--clock", "replay",
           "--from", SPAN[0], "--to", SPAN[0], "--speed", 0, "--no-panel", cwd=tmp_path, check=False)
    assert p.returncode != 0 and "another configuration" in p.stderr and "Traceback" not in p.stderr


def test_paper_run_folder_refuses_another_day_and_reports_its_open_trade(tmp_path):
    """The reported bug: the same --run-dir with the next day answered 'already completed ... open 0'."""
    cfg = write_config(tmp_path, PAPER_EXACT)
    rd = tmp_path / "p"
    sb("paper", cfg, "--clock", "replay", "--speed", 0, "--day", "2023-03-13", "--run-dir", rd, "--no-panel",
       cwd=tmp_path)
    open_n = len([t for t in trades(rd / "journal.sqlite") if t[1] is None])
    assert open_n == 1  # the day ends with its spread open
    p = sb("paper", cfg, "--clock", "replay", "--speed", 0, "--day", "2023-03-14", "--run-dir", rd, "--no-panel",
           cwd=tmp_path, check=False)
    assert p.returncode != 0 and "holds the paper run of 2023-03-13" in p.stderr and "strikebench trade" in p.stderr
    again = sb("paper", cfg, "--clock", "replay", "--speed", 0, "--day", "2023-03-13", "--run-dir", rd, "--no-panel",
               cwd=tmp_path).stdout
    assert "open 1" in again and "already completed" in again
    # the equity it reports is the session's end-of-day row in the journal (it said the initial cash)
    (eod,) = sqlite3.connect(rd / "journal.sqlite").execute(
        "SELECT equity FROM equity WHERE day = '2023-03-13'").fetchone()
    assert f"equity {Decimal(eod):,.2f}" in again and Decimal(eod) != Decimal("100000.00")
