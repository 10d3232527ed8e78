"""The paper broker service: a real `strikebench paper-broker serve` process on 127.0.0.1, driven by the real
client over its HTTP+JSON protocol; its state survives SIGKILL; it works while no trader is connected."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from strikebench.brokers.paper_client import PaperServiceBroker, ServiceClock, ServiceConnection
from strikebench.calendar import NY
from strikebench.live.broker_api import BrokerUnavailable
from strikebench.options.contracts import OptionContract
from strikebench.options.orders import Leg, Order, OrderType, TimeInForce
from test_account import BASE, PAPER_EXACT, STRIKEBENCH, cash, sb, trades

SPAN = ("2023-03-13", "2023-03-17")


def start_service(state: Path, *args) -> tuple[subprocess.Popen, ServiceConnection]:
    addr = Path(str(state) + ".addr")
    addr.unlink(missing_ok=True)
    proc = subprocess.Popen([STRIKEBENCH, "paper-broker", "serve", "--state", str(state), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read())
        if addr.exists():
            try:
                a = json.loads(addr.read_text())
            except ValueError:
                continue
            if a["pid"] == proc.pid:
                return proc, ServiceConnection(a["host"], a["port"], addr_file=addr)
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("service did not start")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.fixture
def config(tmp_path) -> Path:
    cfg = yaml.safe_load(yaml.safe_dump(BASE))
    cfg["broker"] = PAPER_EXACT
    path = tmp_path / "svc.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _put_spread(day: str, expiry: str) -> tuple[Leg, Leg]:
    """A 25-wide put credit spread that exists in the synthetic chain (strikes off the 09:31 snapshot)."""
    from strikebench.config import load_config

    resolved = load_config(str(Path(__file__).resolve().parent.parent / "configs" / "spx_credit_vertical.yaml"),
                           (f"data.start={day}", f"data.end={day}"))
    market = resolved.data.build().open()
    snap = market.snapshot("SPX", pd.Timestamp(f"{day} 09:31", tz=NY))
    exp = np.datetime64(expiry)
    ok = (snap.expiry == exp) & ~snap.is_call
    strikes = np.sort(snap.strike[ok])
    spot = snap.underlying_price
    short = float(strikes[strikes < spot - 50][-1])
    roots = snap.root[ok]
    root = str(roots[0])
    sc = OptionContract.make(root, expiry, short, "P")
    lc = OptionContract.make(root, expiry, short - 25, "P")
    return Leg(sc, -1), Leg(lc, 1)


def test_wire_protocol_day_and_gtc_orders_and_crash(tmp_path, config):
    state = tmp_path / "broker.sqlite"
    proc, conn = start_service(state, "--config", config, "--clock", "replay", "--from", SPAN[0], "--to", SPAN[1],
                               "--speed", 0)
    try:
        broker = PaperServiceBroker(conn)
        clock = ServiceClock(conn)
        assert clock.now() == pd.Timestamp("2023-03-13 09:30", tz=NY)  # the service owns market time
        legs = _put_spread("2023-03-13", "2023-03-17")
        # a limit no market gives (a 25-wide spread for a 30.00 credit): it works until the close
        day = Order(client_id="DAY-1", legs=legs, quantity=1, order_type=OrderType.LIMIT, limit_price=-30.0,
                    tif=TimeInForce.DAY, opens=True)
        gtc = Order(client_id="GTC-1", legs=legs, quantity=1, order_type=OrderType.LIMIT, limit_price=-30.0,
                    tif=TimeInForce.GTC, opens=True)
        assert clock.sleep_until(pd.Timestamp("2023-03-13 10:00", tz=NY))
        ack = broker.place(day, clock.now(), tag="t")
        assert ack.status == "accepted" and not ack.duplicate  # zero latency: working at once
        again = broker.place(day, clock.now(), tag="t")  # the same client id again: nothing new is placed
        assert again.duplicate and again.broker_id == ack.broker_id
        broker.place(gtc, clock.now(), tag="t")
        assert broker.lookup("NOPE") is None
        assert {o.client_id for o in broker.orders("t")} == {"DAY-1", "GTC-1"}
        bad = subprocess.run([sys.executable, "-c", "import http.client,sys;c=http.client.HTTPConnection("
                              f"'{conn.host}',{conn.port},timeout=5);c.request('POST','/v1/orders',body=b'[1]');"
                              "r=c.getresponse();print(r.status, r.read().decode())"], capture_output=True, text=True)
        assert bad.stdout.startswith("400 ") and "JSON object" in bad.stdout
        # through the close: the DAY order expires at 16:00 (its event says so), the GTC one keeps working
        assert clock.sleep_until(pd.Timestamp("2023-03-14 09:31", tz=NY))
        d, g = broker.lookup("DAY-1"), broker.lookup("GTC-1")
        assert (d.status, d.reason) == ("expired", "day order not filled by the close")
        assert g.status == "accepted"
        ev = [e for e in broker.events(0) if e.client_id == "DAY-1" and e.status == "expired"]
        assert len(ev) == 1 and pd.Timestamp(ev[0].at) == pd.Timestamp("2023-03-13 16:00", tz=NY)
        assert broker.cancel("GTC-1", clock.now())
        assert broker.balances() == {"cash": 100000.0} and broker.positions() == {}
        # SIGKILL the service: its SQLite state is authoritative and comes back as it was
        stop(proc)
        with pytest.raises(BrokerUnavailable):
            broker.lookup("DAY-1")
        proc, conn2 = start_service(state)  # no --config: the state file knows its setup
        broker2 = PaperServiceBroker(conn2)
        assert broker2.lookup("DAY-1").status == "expired"
        assert broker2.lookup("GTC-1").status == "cancelled"  # the cancel took effect (zero latency)
        assert ServiceClock(conn2).now() == pd.Timestamp("2023-03-14 09:31", tz=NY)
        db = sqlite3.connect(state)
        assert db.execute("SELECT client_id, COUNT(*) FROM place_calls GROUP BY client_id").fetchall() == \
            [("DAY-1", 2), ("GTC-1", 1)]
        assert db.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 2
    finally:
        stop(proc)


def test_refuses_non_loopback_and_a_second_server(tmp_path, config):
    p = subprocess.run([STRIKEBENCH, "paper-broker", "serve", "--state", tmp_path / "b.sqlite", "--config", config,
                        "--host", "0.0.0.0"], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "loopback" in p.stderr and "Traceback" not in p.stderr
    proc, _ = start_service(tmp_path / "c.sqlite", "--config", config, "--clock", "replay", "--from", SPAN[0],
                            "--to", SPAN[1], "--speed", 0)
    try:
        p = subprocess.run([STRIKEBENCH, "paper-broker", "serve", "--state", tmp_path / "c.sqlite"],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode != 0 and "already serves" in p.stderr
    finally:
        stop(proc)


def test_expiry_settled_while_the_trader_was_down(tmp_path):
    """Monday's spread expires Wednesday; the trader stops after Monday; the service runs on alone, settles it at
    Wednesday's close; Thursday's trader reconciles: the settlement at the broker's print and cash, to the cent."""
    cfg = yaml.safe_load(yaml.safe_dump(BASE))
    cfg["broker"] = PAPER_EXACT
    cfg["strategies"][0]["params"].update({"dte_targets": [2], "dte_tolerance": 0, "take_profit_pct": 0.99,
                                           "stop_multiple": 50.0})
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    acct = tmp_path / "acct"
    out = sb("trade", path, "--account", acct, "--clock", "replay", "--from", SPAN[0], "--to", SPAN[1], "--speed",
             3000, "--no-panel", "--sessions", 1, cwd=tmp_path).stdout
    assert "started the paper broker service" in out and "session 2023-03-13: completed" in out
    (opened,) = [t for t in trades(acct / "journal.sqlite") if t[1] is None]
    addr = json.loads((acct / "paper_broker.sqlite.addr").read_text())
    conn = ServiceConnection(addr["host"], addr["port"])
    try:
        deadline = time.monotonic() + 180
        while pd.Timestamp(conn.request("GET", "/v1/clock")[1]["now"]) < pd.Timestamp("2023-03-16 09:35", tz=NY):
            assert time.monotonic() < deadline, "the service did not run on by itself"
            time.sleep(0.5)
        settled = conn.request("GET", "/v1/settlements")[1]["settlements"]
        assert settled and {s["at"][:10] for s in settled} == {"2023-03-15"}
        out = sb("trade", path, "--account", acct, "--clock", "replay", "--from", SPAN[0], "--to", SPAN[1],
                 "--speed", 3000, "--no-panel", "--sessions", 1, cwd=tmp_path).stdout
        assert "session 2023-03-14: missed" in out and "session 2023-03-15: missed" in out
        assert "settled while the trader was down" in out
        row = [t for t in trades(acct / "journal.sqlite") if t[0] == opened[0]][0]
        assert row[7] == "settlement"
        db = sqlite3.connect(acct / "journal.sqlite")
        settle_cash = Decimal(db.execute("SELECT cash FROM fills WHERE kind = 'settlement'").fetchone()[0])
        # the broker's settlement cash, leg by leg, is the journal's settlement fill; settled at the broker's print
        assert settle_cash == sum(Decimal(s["cash"]) for s in settled)
        used = {k.split(":", 1)[1]: json.loads(v) for k, v in db.execute(
            "SELECT key, value FROM live_state WHERE key LIKE 'settle_value:%'")}
        assert used == {s["occ"]: float(s["value"]) for s in settled}
        broker_cash = Decimal(conn.request("GET", "/v1/balances")[1]["cash"])
        pos = conn.request("GET", "/v1/positions")[1]["positions"]
        open_now = [t for t in trades(acct / "journal.sqlite") if t[1] is None]
        if not open_now:  # Thursday may have opened a new spread; then cash differs by nothing but its entry
            assert pos == {}
        assert cash(acct / "journal.sqlite") == broker_cash
    finally:
        try:
            os.kill(addr["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass
