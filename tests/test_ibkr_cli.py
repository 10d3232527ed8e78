"""`strikebench trade` with `broker: ibkr` as a user runs it (a real process) against the loopback TWS.

A replayed session sends its orders to TWS as BAGs under orderRef = client id; the same command again sends
nothing twice (the working orders are found, not resent)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

from fake_tws import FakeTWS
from test_account import BASE

STRIKEBENCH = str(Path(sys.executable).with_name("strikebench"))
DAY = "2023-03-13"


def _config(tmp_path, port) -> Path:
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    doc["broker"] = {"name": "ibkr", "params": {"port": port, "client_id": 17, "account": "DU1234567",
                                                "initial_cash": 100000, "timeout_seconds": 3}}
    path = tmp_path / "ibkr.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _trade(cfg, acct, cwd):
    return subprocess.run([STRIKEBENCH, "trade", str(cfg), "--account", str(acct), "--clock", "replay", "--from", DAY,
                           "--to", DAY, "--speed", "0"], cwd=cwd, capture_output=True, text=True, timeout=900)


def test_trade_a_session_through_tws_then_again_sends_nothing_twice(tmp_path):
    with FakeTWS() as tws:  # no exchange behind it: the orders stay working
        cfg, acct = _config(tmp_path, tws.port), tmp_path / "acct"
        p = _trade(cfg, acct, tmp_path)
        assert p.returncode == 0, p.stdout + p.stderr
        orders = tws.live_orders()
        assert orders, p.stdout
        o = orders[0]
        # the shipped strategy's put credit spread reached TWS as one BUY of a BAG at a negative (credit) limit
        assert o["action"] == "BUY" and o["contract"]["secType"] == "BAG" and o["lmt"] < 0
        assert sorted(leg["action"] for leg in o["legs"]) == ["BUY", "SELL"]
        db = sqlite3.connect(acct / "journal.sqlite")
        try:
            sent = {r[0] for r in db.execute("SELECT DISTINCT order_id FROM order_events WHERE status = 'submitted'")}
        finally:
            db.close()
        assert sent == {x["ref"] for x in orders}
        n = len(tws.received)
        again = _trade(cfg, acct, tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        assert len(tws.live_orders()) == len(orders)  # nothing sent twice
        assert not [f for f in tws.received[n:] if f[0] == "3"]  # no placeOrder at all
