"""SIGKILL fuzzing of the account: `strikebench trade` killed at random moments (during sessions, between
sessions, during start-up) and the paper broker service killed and restarted at random moments, while the
broker runs with latency, partial fills, rejections and lost replies. Checked over the broker's own SQLite and
the account's journal: no client id sent twice, no lost or doubled fill, statuses equal, and at every session
end and at the end journal cash = broker cash to the cent and journal positions = broker positions.

``SB_ACCOUNT_SIGKILL_SECONDS`` (default 40) is how long kills go on (then the account runs to the end of the span),
``SB_ACCOUNT_SIGKILL_SESSIONS`` (default 3) sets the span, ``SB_ACCOUNT_SIGKILL_SPEED`` the service's replay speed
(default 1500: a session in about 16 s, so a trader that starts in a few seconds trades most sessions; a slower
trader start-up makes the service run on alone and sessions are missed), ``SB_ACCOUNT_SIGKILL_SEED`` the seed."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from strikebench.calendar import MarketCalendar

STRIKEBENCH = str(Path(sys.executable).with_name("strikebench"))

CONFIG = """\
name: acctkill
data: {source: synthetic, seed: 42, start: 2023-03-13, end: 2023-04-28, scenario: default}
broker:
  name: paper
  params: {initial_cash: 100000, latency_seconds: 3, partial_fill_probability: 0.5,
           rejection_probability: 0.1, timeout_probability: 0.15, seed: 5}
  fill_model: {name: mid_slippage, params: {k: 0.30}}
  commission: {name: cboe_retail}
strategies:
  - name: credit_vertical
    params:
      dte_targets: [1, 2, 3]
      entry_times: ["09:45", "10:15", "10:45", "11:30", "12:30", "13:30", "14:30"]
      short_deltas: [0.10, 0.20]
      width: 25
      take_profit_pct: 0.10
      stop_multiple: 1.2
      contracts: 3
risk:
  - name: max_open_trades
    params: {limit: 2}
"""


def _pid_of_service(account: Path) -> int | None:
    try:
        return int(json.loads((account / "paper_broker.sqlite.addr").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def _kill(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False


def _start_service(account: Path) -> subprocess.Popen:
    return subprocess.Popen([STRIKEBENCH, "paper-broker", "serve", "--state", str(account / "paper_broker.sqlite")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def check_account(account: Path) -> dict:
    broker = sqlite3.connect(account / "paper_broker.sqlite")
    journal = sqlite3.connect(account / "journal.sqlite")
    rid = account.name
    calls = broker.execute("SELECT client_id, COUNT(*) FROM place_calls GROUP BY client_id").fetchall()
    dup = [c for c, n in calls if n > 1]
    assert not dup, f"client ids sent twice: {dup}"
    b_orders = dict(broker.execute("SELECT client_id, status FROM orders").fetchall())
    j_orders = dict(journal.execute("SELECT order_id, status FROM orders WHERE run_id = ?", (rid,)).fetchall())
    j_sent = {r[0] for r in journal.execute("SELECT DISTINCT order_id FROM order_events WHERE run_id = ? AND"
                                            " status = 'submitted'", (rid,))}
    assert set(b_orders) <= j_sent, f"orders at the broker unknown to the journal: {set(b_orders) - j_sent}"
    for cid in j_sent - set(b_orders):
        assert j_orders[cid] == "rejected", (cid, j_orders[cid])
    for cid, status in b_orders.items():
        assert j_orders[cid] == status, f"{cid}: journal {j_orders[cid]}, broker {status}"
    b_fills = {r[0]: (r[1], Decimal(r[2]).quantize(Decimal("0.01"))) for r in
               broker.execute("SELECT fill_id, quantity, net_price FROM fills")}
    j_fills = journal.execute("SELECT fill_id, quantity, price FROM fills WHERE run_id = ? AND kind = 'fill'",
                              (rid,)).fetchall()
    assert len(j_fills) == len({f[0] for f in j_fills}), "a fill journaled twice"
    assert {f[0]: (f[1], Decimal(f[2])) for f in j_fills} == b_fills, "journal fills differ from the broker's"
    # cash to the cent, positions equal
    init = Decimal(journal.execute("SELECT initial_cash FROM runs WHERE run_id = ?", (rid,)).fetchone()[0])
    j_cash = init + sum((Decimal(r[0]) for r in journal.execute("SELECT cash FROM fills WHERE run_id = ?", (rid,))),
                        Decimal(0))
    b_cash = Decimal(int(broker.execute("SELECT value FROM meta WHERE key = 'cash_cents'").fetchone()[0])) / 100
    assert j_cash == b_cash, (j_cash, b_cash)
    b_pos = dict(broker.execute("SELECT occ, quantity FROM positions WHERE quantity != 0").fetchall())
    j_pos: dict = {}
    for occ, ratio, contracts in journal.execute(
            "SELECT l.occ_symbol, l.ratio, t.contracts FROM trade_legs l JOIN trades t USING (run_id, trade_id)"
            " WHERE l.run_id = ? AND t.closed_at IS NULL", (rid,)):
        key = occ.replace(" ", "")
        j_pos[key] = j_pos.get(key, 0) + ratio * contracts
    assert {k: v for k, v in j_pos.items() if v} == b_pos
    sessions = journal.execute("SELECT day, completed, summary FROM account_sessions WHERE run_id = ? ORDER BY day",
                               (rid,)).fetchall()
    assert sessions and all(s[1] == 1 for s in sessions)
    checked = 0
    for day, _, summary in sessions:
        s = json.loads(summary or "{}")
        if "broker_cash" in s:  # a session the trader finished: broker and journal agreed at its end
            assert s["broker_cash"] == s["journal_cash"], (day, s)
            assert s["broker_positions"] == s["journal_positions"], (day, s)
            checked += 1
    # the one stop allowed: a position check that found the broker down (a missing report is never read as flat;
    # it clears when a later report agrees). Nothing else may have failed closed.
    fail = [m for (m,) in journal.execute("SELECT message FROM live_log WHERE run_id = ? AND kind = 'fail_closed'",
                                          (rid,)) if "did not report positions" not in m]
    assert not fail, fail
    stops = journal.execute("SELECT COUNT(*) FROM live_log WHERE run_id = ? AND kind = 'fail_closed'",
                            (rid,)).fetchone()[0]
    return {"orders": len(b_orders), "fills": len(b_fills), "sends": sum(n for _, n in calls),
            "sessions": len(sessions), "checked_sessions": checked,
            "missed": sum(1 for s in sessions if "missed" in (s[2] or "")), "stops": stops}


def test_account_sigkill_fuzz(tmp_path):
    n_sessions = int(os.environ.get("SB_ACCOUNT_SIGKILL_SESSIONS", "3"))
    rng = random.Random(int(os.environ.get("SB_ACCOUNT_SIGKILL_SEED", "16")))
    cal = MarketCalendar()
    days = [d.date() for d in cal.sessions("2023-03-13", "2023-04-28")][:n_sessions]
    cfg = tmp_path / "acctkill.yaml"
    cfg.write_text(CONFIG)
    account = tmp_path / "acct"
    cmd = [STRIKEBENCH, "trade", str(cfg), "--account", str(account), "--clock", "replay", "--from", str(days[0]),
           "--to", str(days[-1]), "--speed", os.environ.get("SB_ACCOUNT_SIGKILL_SPEED", "1500"), "--no-panel"]
    budget = float(os.environ.get("SB_ACCOUNT_SIGKILL_SECONDS", "40"))
    trader_kills = service_kills = starts = 0
    t0 = time.monotonic()
    services: list[subprocess.Popen] = []
    try:
        done = False
        while not done:
            starts += 1
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            while True:
                fuzzing = time.monotonic() - t0 < budget
                try:
                    out, _ = proc.communicate(timeout=rng.uniform(1.0, 15.0) if fuzzing else 1200)
                    assert proc.returncode == 0, out
                    done = True
                    break
                except subprocess.TimeoutExpired:
                    pass
                if rng.random() < 0.5 and _kill(_pid_of_service(account)):
                    service_kills += 1  # the broker dies under a running trader; it is restarted by hand
                    time.sleep(rng.uniform(0.0, 1.5))
                    services.append(_start_service(account))
                    continue
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                trader_kills += 1
                if rng.random() < 0.3:
                    time.sleep(rng.uniform(0.5, 4.0))  # down for a while: the service runs on alone
                break
        counts = check_account(account)
    finally:
        _kill(_pid_of_service(account))
        for p in services:
            if p.poll() is None:
                p.kill()
            p.wait()
    print(f"\naccount SIGKILL fuzz: {trader_kills} trader kills, {service_kills} broker-service kills, {starts} trader "
          f"starts, {counts['sessions']} sessions ({counts['missed']} missed while down, {counts['checked_sessions']} "
          f"checked at their end), {counts['orders']} orders, {counts['fills']} fills, {counts['sends']} sends; "
          f"0 duplicates, 0 lost or doubled fills, cash and positions equal; {counts['stops']} new-risk stops while the "
          f"broker was down (cleared when it answered); {time.monotonic() - t0:.0f} s")
    assert trader_kills >= 2 and trader_kills + service_kills >= 4
