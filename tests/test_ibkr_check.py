"""`strikebench broker check` with `broker: ibkr` (a real process) against the loopback TWS; live ports need --live."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fake_tws import FakeTWS
from strikebench.errors import StrikebenchError

STRIKEBENCH = str(Path(sys.executable).with_name("strikebench"))


def _quote(c):
    if c["symbol"] == "VIX":
        return None  # no VIX option data subscription: TWS answers 354
    k = c["strike"]
    return {"bid": 10.0, "ask": 10.4, "last": 10.1,
            "greeks": (0.15, 0.3 if c["right"] == "C" else -0.3, 10.2, 0.0, 0.002, 1.9, -1.2, k)}


def _expiries():
    """Two sessions a week and a fortnight ahead of today (the check asks for the nearest listed expiry)."""
    import pandas as pd

    from strikebench.calendar import MarketCalendar

    cal = MarketCalendar()
    today = pd.Timestamp.now(tz="America/New_York").date()
    near = pd.Timestamp(cal.next_session(today + pd.Timedelta(days=6))).strftime("%Y%m%d")
    far = pd.Timestamp(cal.next_session(today + pd.Timedelta(days=13))).strftime("%Y%m%d")
    return near, far


@pytest.fixture
def tws():
    near, far = _expiries()
    with FakeTWS(cash=123_456.78) as t:
        for und, px, k in (("SPX", 5000.0, [4975.0, 4990.0, 5000.0, 5010.0]), ("XSP", 500.0, [499.0, 500.0, 501.0]),
                           ("VIX", 15.0, [15.0])):
            t.quotes[t.index[und]] = {"last": px}
            cls = {"SPX": {"SPX": [far], "SPXW": [near]}, "XSP": {"XSP": [near]}, "VIX": {"VIX": [near]}}[und]
            t.chains[und] = {"classes": cls, "strikes": k}
        t.quote_fn = _quote
        yield t


def _config(tmp_path, port, **extra) -> Path:
    doc = {"name": "ib", "broker": {"name": "ibkr", "port": port, "client_id": 17, "account": "DU1234567", **extra},
           "strategies": [{"name": "credit_vertical"}]}
    path = tmp_path / "ib.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _rows(stdout) -> dict:
    """check -> (result, detail) from the printed table (a detail may wrap onto following lines)."""
    rows, last = {}, None
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) != 3:
            continue
        if cells[0]:
            last = cells[0]
            rows[last] = (cells[1], cells[2])
        elif last is not None:
            rows[last] = (rows[last][0], (rows[last][1] + " " + cells[2]).strip())
    return rows


def _check(cfg, *extra, cwd):
    return subprocess.run([STRIKEBENCH, "broker", "check", str(cfg), *extra], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={"COLUMNS": "250", "PATH": "/usr/bin:/bin"})


def test_broker_check_reads_and_previews(tws, tmp_path):
    p = _check(_config(tmp_path, tws.port), "--preview", cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr  # VIX option data is missing: one failed row
    rows = _rows(p.stdout)
    assert rows["connection"][0] == "ok" and "server version 157, client id 17" in rows["connection"][1]
    assert "(paper port)" in rows["connection"][1]
    assert rows["account"] == ("ok", "DU1234567 (managed: DU1234567)")
    # the fake TWS reports buying power as 0.9 x cash
    assert rows["option buying power"] == ("ok", "cash 123,456.78, net liquidation 123,456.78, buying power "
                                                 "111,111.10, available funds 111,111.10 USD")
    assert rows["market clock"][0] == "ok" and rows["market data type"][1].startswith("live")
    assert rows["data permissions SPX options"] == (
        "ok", "live quotes on 8 near-the-money SPX option(s) (index 5,000.00); model greeks missing on 0, recomputed")
    assert rows["data permissions XSP options"][0] == "ok"
    assert rows["data permissions VIX options"][0] == "FAILED"
    assert rows["data permissions VIX options"][1].startswith("no quotes for VIX options (IB 354)")
    # the whatIf of the sample spread: TWS's margin answer, nothing placed
    assert rows["preview"][0] == "ok" and "initial margin change 2,000.00" in rows["preview"][1]
    assert "nothing placed" in rows["preview"][1] and all(o["what_if"] for o in tws.orders.values())
    assert tws.live_orders() == []
    assert "1 check(s) failed: data permissions VIX options" in p.stderr
    assert not list(tmp_path.glob("accounts")) and not list(tmp_path.glob("*.sqlite"))  # wrote nothing


def test_broker_check_without_tws_is_one_failed_row(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = _check(_config(tmp_path, port, timeout_seconds=1), cwd=tmp_path)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "refused the connection" in " ".join(p.stdout.split())


def test_live_port_needs_live(tmp_path):
    from strikebench.config import load_config
    from strikebench.live.launch import live_broker_plugin
    from strikebench.plugin_manager import get_plugin_manager

    pm = get_plugin_manager()
    resolved = load_config(str(_config(tmp_path, 7496)), (), registry=pm.registry)
    with pytest.raises(StrikebenchError, match="real-money account .* --live"):
        live_broker_plugin(resolved, pm, live=False)
    assert live_broker_plugin(resolved, pm, live=True).params.port == 7496
    paper = load_config(str(_config(tmp_path, 7497)), (), registry=pm.registry)
    assert live_broker_plugin(paper, pm, live=False).params.port == 7497
