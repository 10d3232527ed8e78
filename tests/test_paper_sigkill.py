"""SIGKILL fuzzing of `strikebench paper --clock replay`: kill the trader at random moments, restart it,
and check over the paper broker's own SQLite and the journal that no order was sent twice and no fill
was lost or doubled. ``SB_SIGKILL_SECONDS`` sets the time budget (default 45 s)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

CONFIG = """\
name: sigkill
data: {source: synthetic, seed: 42, start: 2023-03-14, end: 2023-03-14, scenario: default}
broker:
  name: paper
  params: {initial_cash: 100000, latency_seconds: 3, partial_fill_probability: 0.5,
           rejection_probability: 0.1, timeout_probability: 0.15, seed: 5}
  fill_model: {name: mid_slippage, params: {k: 0.30}}
  commission: {name: cboe_retail}
strategies:
  - name: credit_vertical
    params:
      dte_targets: [3, 5, 7]
      entry_times: ["09:45", "10:00", "10:15", "10:30", "10:45", "11:00", "11:30", "12:00", "12:30", "13:00",
                    "13:30", "14:00", "14:30"]
      short_deltas: [0.10, 0.20]
      width: 25
      take_profit_pct: 0.10
      stop_multiple: 1.2
      contracts: 3
risk:
  - name: max_open_trades
    params: {limit: 2}
output: {dir: runs}
"""

STRIKEBENCH = str(Path(sys.executable).with_name("strikebench"))


def _start(cfg: Path, run_dir: Path, speed: float) -> subprocess.Popen:
    return subprocess.Popen([STRIKEBENCH, "paper", str(cfg), "--clock", "replay", "--speed", str(speed),
                             "--run-dir", str(run_dir), "--no-panel"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def check_run(run_dir: Path) -> dict:
    """Assertions over the broker's own records and the journal of one finished run; returns counts."""
    broker = sqlite3.connect(run_dir / "paper_broker.sqlite")
    journal = sqlite3.connect(run_dir / "journal.sqlite")
    rid = run_dir.name
    calls = broker.execute("SELECT client_id, COUNT(*) FROM place_calls GROUP BY client_id").fetchall()
    dup_sends = [c for c, n in calls if n > 1]
    assert not dup_sends, f"client ids sent twice: {dup_sends}"
    b_orders = dict(broker.execute("SELECT client_id, status FROM orders").fetchall())
    j_sent = {r[0] for r in journal.execute("SELECT DISTINCT order_id FROM order_events WHERE run_id = ?"
                                            " AND status = 'submitted'", (rid,))}
    j_orders = dict(journal.execute("SELECT order_id, status FROM orders WHERE run_id = ?", (rid,)).fetchall())
    assert set(b_orders) <= j_sent, f"orders at the broker unknown to the journal: {set(b_orders) - j_sent}"
    for cid in j_sent - set(b_orders):  # journaled, never reached the broker: must be closed as such
        assert j_orders[cid] == "rejected", (cid, j_orders[cid])
    for cid, status in b_orders.items():
        assert j_orders[cid] == status, f"{cid}: journal {j_orders[cid]}, broker {status}"
    b_fills = {r[0]: (r[1], float(r[2])) for r in broker.execute("SELECT fill_id, quantity, net_price FROM fills")}
    j_fills = journal.execute("SELECT fill_id, quantity, price FROM fills WHERE run_id = ? AND kind = 'fill'",
                              (rid,)).fetchall()
    assert len(j_fills) == len({f[0] for f in j_fills})
    assert {f[0]: (f[1], float(f[2])) for f in j_fills} == b_fills, "journal fills differ from the broker's"
    dup_entries = journal.execute("SELECT decision_id, COUNT(*) FROM orders WHERE run_id = ? AND opens = 1 AND"
                                  " decision_id IS NOT NULL AND order_id IN (SELECT order_id FROM order_events WHERE"
                                  " run_id = ? AND status = 'submitted') GROUP BY decision_id HAVING COUNT(*) > 1",
                                  (rid, rid)).fetchall()
    assert not dup_entries, f"one decision sent two entries: {dup_entries}"
    positions = {k: v for k, v in broker.execute("SELECT occ, quantity FROM positions WHERE quantity != 0")}
    open_trades = journal.execute("SELECT COUNT(*) FROM trades WHERE run_id = ? AND closed_at IS NULL", (rid,)).fetchone()[0]
    assert (open_trades == 0) == (not positions), (open_trades, positions)
    completed = journal.execute("SELECT completed FROM runs WHERE run_id = ?", (rid,)).fetchone()[0]
    assert completed == 1
    fail = journal.execute("SELECT message FROM live_log WHERE run_id = ? AND kind = 'fail_closed'", (rid,)).fetchall()
    assert not fail, fail
    kinds = dict(journal.execute("SELECT kind, COUNT(*) FROM live_log WHERE run_id = ? GROUP BY kind", (rid,)).fetchall())
    return {"orders": len(b_orders), "fills": len(b_fills), "sends": sum(n for _, n in calls),
            "resumes": kinds.get("resume", 0) // 2, "reconciled": kinds.get("reconcile", 0),
            "idempotent": kinds.get("idempotent", 0)}


def test_sigkill_fuzz(tmp_path):
    budget = float(os.environ.get("SB_SIGKILL_SECONDS", "45"))
    rng = random.Random(int(os.environ.get("SB_SIGKILL_SEED", "20240611")))
    cfg = tmp_path / "sigkill.yaml"
    cfg.write_text(CONFIG)
    t_end = time.monotonic() + budget
    kills, runs = 0, []
    totals = {"orders": 0, "fills": 0, "sends": 0, "resumes": 0, "reconciled": 0, "idempotent": 0}
    run_no = 0
    while time.monotonic() < t_end or not runs:
        run_no += 1
        run_dir = tmp_path / f"run{run_no}"
        kills_here = 0
        while True:
            proc = _start(cfg, run_dir, speed=8000)
            try:
                out, _ = proc.communicate(timeout=rng.uniform(0.4, 4.5) if kills_here < 12 else 120)
                assert proc.returncode == 0, out
                break
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                kills += 1
                kills_here += 1
        counts = check_run(run_dir)
        runs.append((run_dir.name, kills_here, counts))
        for k in totals:
            totals[k] += counts[k]
    print(f"\nSIGKILL fuzz: {kills} kills over {len(runs)} replayed days; {totals['orders']} orders, "
          f"{totals['fills']} fills, {totals['sends']} sends; {totals['resumes']} mid-day resumes, "
          f"{totals['reconciled']} corrections from the broker's records, {totals['idempotent']} re-made orders not "
          f"resent; 0 duplicates, 0 lost fills")
    assert kills >= 5
