"""kill -9 of `strikebench backtest` mid-run: the journal commits whole sessions (a quarter second of them at a
time), so what is left is every session the run finished up to its last commit, whole, and nothing of the one it
was in. The journal passes SQLite's integrity check,
the run reads as incomplete, and every trade it shows as closed is identical, to the cent, to the same trade of a
clean run of the same config. No timing is asserted: the test waits for a committed session, then kills."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from strikebench.cli import main

STRIKEBENCH = str(Path(sys.executable).with_name("strikebench"))
ROOT = Path(__file__).resolve().parents[1]
MAIN_CONFIG = ROOT / "configs" / "spx_credit_vertical.yaml"
#: the README's main job over its first two months (journal, all six risk managers, as shipped)
SETS = ["--set", "data.end=2023-02-28", "--set", "output.plots=false"]

TRADE_COLUMNS = ("strategy", "opened_at", "closed_at", "expiry", "contracts", "multiplier", "entry_price",
                 "entry_credit", "exit_price", "exit_debit", "fees", "realized_pnl", "max_loss", "exit_reason")


def _ro(db: Path) -> sqlite3.Connection:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30.0)
    con.row_factory = sqlite3.Row
    return con


def _committed_sessions(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = _ro(db)
        try:
            return con.execute("SELECT COUNT(*) FROM equity").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:  # the file exists before its tables do
        return 0


def _closed_trades(db: Path) -> dict[tuple, dict]:
    """Closed trades keyed by what identifies a trade across runs (trade ids carry the run id)."""
    con = _ro(db)
    try:
        out = {}
        for r in con.execute("SELECT * FROM trades WHERE closed_at IS NOT NULL"):
            legs = tuple(tuple(x) for x in con.execute(
                "SELECT occ_symbol, ratio, entry_price, exit_price FROM trade_legs WHERE run_id = ? AND trade_id = ?"
                " ORDER BY leg", (r["run_id"], r["trade_id"])))
            fills = tuple(tuple(x) for x in con.execute(
                "SELECT kind, opens, filled_at, price, quantity, fees, cash, leg_prices FROM fills"
                " WHERE run_id = ? AND trade_id = ? ORDER BY filled_at, kind", (r["run_id"], r["trade_id"])))
            out[(r["strategy"], r["opened_at"], legs[0][0])] = {
                **{c: r[c] for c in TRADE_COLUMNS}, "legs": legs, "fills": fills}
        return out
    finally:
        con.close()


def _signal_mid_session(out_dir: Path, sig: int, wait: float):
    """Run the main job into ``out_dir`` and send ``sig`` half a session after its 3rd committed session
    (a session lasts about that long here), so it lands inside the next session after some of its events
    were written. Returns the stopped process and its journal's path."""
    proc = subprocess.Popen([STRIKEBENCH, "backtest", str(MAIN_CONFIG), "--quiet", *SETS,
                             "--set", f"output.dir={out_dir}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={"PATH": str(Path(sys.executable).parent), "MPLBACKEND": "Agg"})
    try:
        db, first = None, None
        while proc.poll() is None:
            runs = list(out_dir.glob("*/journal.sqlite")) if out_dir.exists() else []
            db = runs[0] if runs else None
            n = _committed_sessions(db) if db is not None else 0
            now = time.monotonic()
            if n >= 1 and first is None:
                first = (n, now)
            if n >= 3:
                session = (now - first[1]) / (n - first[0]) if n > first[0] else 0.05
                time.sleep(session / 2)
                break
            time.sleep(0.005)
        assert proc.poll() is None, f"the run ended before it could be stopped: {proc.stderr.read()[-2000:]}"
        proc.send_signal(sig)
        proc.wait(timeout=wait)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc, db


def test_sigkill_mid_backtest_leaves_whole_sessions_and_the_clean_runs_trades(tmp_path):
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    proc, db = _signal_mid_session(killed_dir, signal.SIGKILL, wait=60)
    assert proc.returncode == -signal.SIGKILL

    con = _ro(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        (run,) = con.execute("SELECT completed, ended_at, summary FROM runs").fetchall()
        assert (run["completed"], run["ended_at"], run["summary"]) == (0, None, None)
        days = [r[0] for r in con.execute("SELECT day FROM equity ORDER BY day")]
        last = days[-1]
        # whole sessions only: nothing dated after the last committed session's end
        for table, column in (("trade_decisions", "decided_at"), ("fills", "filled_at"), ("order_events", "at")):
            later = con.execute(f"SELECT COUNT(*) FROM {table} WHERE substr({column}, 1, 10) > ?", (last,)).fetchone()
            assert later[0] == 0, (table, last)
        decided_days = sorted({r[0] for r in con.execute("SELECT substr(decided_at, 1, 10) FROM trade_decisions")})
        assert decided_days == days  # three decisions every session, none lost from a committed one
        per_day = con.execute("SELECT substr(decided_at, 1, 10) d, COUNT(*) FROM trade_decisions GROUP BY d").fetchall()
        assert {n for _, n in per_day} == {3}
    finally:
        con.close()

    # the clean run of the same config, to the end
    assert main(["backtest", str(MAIN_CONFIG), "--quiet", *SETS, "--set", f"output.dir={clean_dir}"]) == 0
    (clean_db,) = clean_dir.glob("*/journal.sqlite")
    killed_trades, clean_trades = _closed_trades(db), _closed_trades(clean_db)
    assert killed_trades, "no trade closed before the kill: kill later"
    for key, trade in killed_trades.items():
        assert trade == clean_trades[key], key
    # and the clean run closed no other trade by the killed run's last committed session
    assert {k for k, t in clean_trades.items() if t["closed_at"][:10] <= last} == set(killed_trades)
    con = _ro(clean_db)
    try:
        clean_equity = [tuple(r) for r in con.execute("SELECT day, equity FROM equity WHERE day <= ? ORDER BY day",
                                                       (last,))]
    finally:
        con.close()
    con = _ro(db)
    try:
        assert [tuple(r) for r in con.execute("SELECT day, equity FROM equity ORDER BY day")] == clean_equity
    finally:
        con.close()

    # the killed folder still reports, as an incomplete run
    assert main(["report", str(db.parent)]) == 0
    summary = json.loads((db.parent / "summary.json").read_text())
    assert summary["completed"] is False and summary["sessions"] == len(days)


def test_sigterm_mid_backtest_exits_143_and_commits_what_the_run_has(tmp_path):
    """SIGTERM is turned into a normal exit while the loop runs: the journal commits the events of the
    session it stopped in (as Ctrl-C does) and the run reads as incomplete."""
    out = tmp_path / "termed"
    proc, db = _signal_mid_session(out, signal.SIGTERM, wait=120)
    assert proc.returncode == 143, proc.stderr.read()[-2000:]
    con = _ro(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        (run,) = con.execute("SELECT completed FROM runs").fetchall()
        assert run["completed"] == 0
        days = [r[0] for r in con.execute("SELECT day FROM equity ORDER BY day")]
        assert len(days) >= 3
        # every finished session whole; what the stopped session had done is there too (committed at exit)
        per_day = dict(con.execute("SELECT substr(decided_at, 1, 10), COUNT(*) FROM trade_decisions GROUP BY 1"))
        assert all(per_day.get(d) == 3 for d in days)
        assert set(per_day) - set(days) <= {max(per_day)}
    finally:
        con.close()
    assert main(["report", str(db.parent)]) == 0
