"""The trader's side of the paper broker service: a :class:`LiveBroker` over HTTP+JSON, its clock, its launcher.

Every call has a timeout; any failure to get a well-formed answer (refused connection, timeout, a reply lost
mid-way, a 5xx, unparsable JSON) raises :class:`BrokerUnavailable` -- the outcome is unknown, and the runtime
looks the order up by its client id before anything is sent again (docs/live.md, "Idempotency").
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from strikebench.calendar import NY
from strikebench.errors import StrikebenchError
from strikebench.live.broker_api import (
    BrokerAck,
    BrokerEvent,
    BrokerFill,
    BrokerOrder,
    BrokerSettlement,
    BrokerUnavailable,
    LiveBroker,
)

__all__ = ["ServiceConnection", "PaperServiceBroker", "ServiceBrokerPlugin", "ServiceClock", "ensure_service",
           "STATE_FILE"]

STATE_FILE = "paper_broker.sqlite"


def _ts(text):
    return None if text is None else pd.Timestamp(text).tz_convert(NY).to_pydatetime()


class ServiceConnection:
    """One HTTP request per call to the service at ``host:port``, with a timeout."""

    def __init__(self, host: str, port: int, timeout: float = 5.0, addr_file: Path | None = None):
        self.host, self.port, self.timeout = host, int(port), float(timeout)
        self.addr_file = addr_file  # where a restarted service writes its new address

    def _readdress(self) -> bool:
        """After a failure: has the service restarted on another address? (FILE.addr) -> use it."""
        if self.addr_file is None:
            return False
        try:
            addr = json.loads(Path(self.addr_file).read_text())
        except (OSError, ValueError):
            return False
        if (addr.get("host"), int(addr.get("port", 0))) == (self.host, self.port):
            return False
        self.host, self.port = addr["host"], int(addr["port"])
        return True

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        try:
            return self._request(method, path, body)
        except BrokerUnavailable:
            if method == "GET" and self._readdress():  # only a read is retried at once; a POST's fate is unknown
                return self._request(method, path, body)
            raise

    def _request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            resp = conn.getresponse()
            raw = resp.read()
            status = resp.status
        except (OSError, http.client.HTTPException) as exc:
            raise BrokerUnavailable(f"paper broker service {self.url}: {method} {path}: "
                                    f"{type(exc).__name__} {exc}".rstrip()) from None
        finally:
            conn.close()
        if status >= 500:
            raise BrokerUnavailable(f"paper broker service {self.url}: {method} {path}: HTTP {status}")
        try:
            payload = json.loads(raw.decode() or "{}")
        except ValueError:
            raise BrokerUnavailable(f"paper broker service {self.url}: {method} {path}: reply is not JSON") from None
        if not isinstance(payload, dict):
            raise BrokerUnavailable(f"paper broker service {self.url}: {method} {path}: reply is not an object")
        if status == 400:
            raise StrikebenchError(f"paper broker service refused {method} {path}: {payload.get('error')}")
        return status, payload


def _fill(d: dict) -> BrokerFill:
    return BrokerFill(fill_id=d["fill_id"], client_id=d["client_id"], at=_ts(d["at"]), quantity=int(d["quantity"]),
                      net_price=float(d["net_price"]), leg_prices=tuple(float(x) for x in d["leg_prices"]),
                      fees=float(d["fees"]))


def _order(d: dict) -> BrokerOrder:
    return BrokerOrder(client_id=d["client_id"], broker_id=str(d["broker_id"]), status=d["status"],
                       quantity=int(d["quantity"]), filled_quantity=int(d["filled_quantity"]), reason=d["reason"],
                       fills=tuple(_fill(f) for f in d["fills"]), cancel_requested=bool(d["cancel_requested"]),
                       tag=d.get("tag", ""))


class PaperServiceBroker(LiveBroker):
    """A :class:`LiveBroker` talking to ``strikebench paper-broker serve`` over the wire."""

    name = "paper-service"

    def __init__(self, conn: ServiceConnection):
        self.conn = conn

    def _call(self, method, path, body=None, ok=(200,)):
        try:
            status, payload = self.conn.request(method, path, body)
        except KeyError as exc:  # a reply missing a field
            raise BrokerUnavailable(f"paper broker service: malformed reply to {path} ({exc})") from None
        if status not in ok:
            raise BrokerUnavailable(f"paper broker service: {method} {path}: HTTP {status} {payload.get('error', '')}")
        return status, payload

    def place(self, order, now, *, tag: str = "") -> BrokerAck:
        from strikebench.brokers.paper_service import order_to_wire

        _, p = self._call("POST", "/v1/orders", order_to_wire(order, tag))
        try:
            return BrokerAck(p["client_id"], str(p["broker_id"]), p["status"], duplicate=bool(p["duplicate"]),
                             reason=p.get("reason", ""))
        except KeyError as exc:
            raise BrokerUnavailable(f"paper broker service: malformed ack ({exc})") from None

    def lookup(self, client_id: str) -> BrokerOrder | None:
        status, p = self._call("GET", f"/v1/orders/{client_id}", ok=(200, 404))
        if status == 404:
            return None
        try:
            return _order(p)
        except (KeyError, TypeError, ValueError) as exc:
            raise BrokerUnavailable(f"paper broker service: malformed order {client_id} ({exc})") from None

    def orders(self, tag: str = "") -> list[BrokerOrder]:
        from urllib.parse import quote

        _, p = self._call("GET", f"/v1/orders?tag={quote(tag)}")
        return [_order(d) for d in p["orders"]]

    def cancel(self, client_id: str, now) -> bool:
        _, p = self._call("POST", f"/v1/orders/{client_id}/cancel", {})
        return bool(p.get("taken"))

    def events(self, since: int = 0) -> list[BrokerEvent]:
        out: list[BrokerEvent] = []
        while True:
            _, p = self._call("GET", f"/v1/events?since={int(since)}&limit=1000")
            batch = p["events"]
            for e in batch:
                out.append(BrokerEvent(seq=int(e["seq"]), event_id=e["event_id"], client_id=e["client_id"],
                                       kind=e["kind"], status=e.get("status", ""), at=_ts(e.get("at")),
                                       reason=e.get("reason", ""), fill=None if e.get("fill") is None
                                       else _fill(e["fill"])))
            if len(batch) < 1000:
                return out
            since = out[-1].seq

    def positions(self) -> dict[str, int] | None:
        _, p = self._call("GET", "/v1/positions")
        pos = p.get("positions")
        if not isinstance(pos, dict):
            return None  # a missing report is never "flat"
        return {str(k): int(v) for k, v in pos.items()}

    def balances(self) -> dict | None:
        _, p = self._call("GET", "/v1/balances")
        return None if p.get("cash") is None else {"cash": float(p["cash"])}

    def settlements(self) -> list[BrokerSettlement]:
        _, p = self._call("GET", "/v1/settlements")
        return [BrokerSettlement(occ=s["occ"], quantity=int(s["quantity"]), value=float(s["value"]),
                                 cash=float(s["cash"]), at=_ts(s["at"])) for s in p["settlements"]]

    def clock_info(self) -> dict:
        return self._call("GET", "/v1/clock")[1]

    def sync(self, now) -> None:
        """The service runs on its own clock: nothing to do."""


class ServiceBrokerPlugin:
    """Stands where a broker plugin's instance stands: ``connect(...)`` -> the service client."""

    def __init__(self, conn: ServiceConnection):
        self.conn = conn

    def connect(self, **_) -> PaperServiceBroker:
        return PaperServiceBroker(self.conn)


class ServiceClock:
    """The trader's clock in replay: the service's market time. ``sleep_until(t)`` holds the service at ``t``
    (it may not pass t while the hold's lease lasts) and waits until the service gets there."""

    kind = "replay"

    def __init__(self, conn: ServiceConnection, *, lease: float = 10.0, patience: float = 60.0):
        self.conn, self.lease, self.patience = conn, lease, patience
        info = self._ask("GET", "/v1/clock")
        self.speed = float(info.get("speed") or 0)
        self._set(info)

    def _set(self, info: dict) -> None:
        self._t = pd.Timestamp(info["now"]).tz_convert(NY)
        self._at = time.monotonic()
        self._pinned = False  # True: the service sits at our hold point and cannot pass it during the lease

    def _ask(self, method, path, body=None) -> dict:
        deadline = time.monotonic() + self.patience
        while True:
            try:
                return self.conn.request(method, path, body)[1]
            except BrokerUnavailable:
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(f"the paper broker service at {self.conn.url} has not answered for "
                                            f"{self.patience:.0f} s") from None
                time.sleep(0.2)

    def now(self) -> pd.Timestamp:
        age = time.monotonic() - self._at
        if (self._pinned and age < self.lease / 2) or (not self._pinned and age <= 0.05):
            return self._t
        self._set(self._ask("GET", "/v1/clock"))
        return self._t

    def sleep_until(self, t, *, max_wait: float | None = None) -> bool:
        t = pd.Timestamp(t)
        start = time.monotonic()
        while True:
            info = self._ask("POST", "/v1/clock/hold", {"until": t.isoformat(), "lease": self.lease})
            self._set(info)
            if self._t >= t:
                self._pinned = self._t == t
                return True
            if max_wait is not None and time.monotonic() - start >= max_wait:
                return False
            time.sleep(0.002 if self.speed <= 0 else 0.01)


def _strikebench_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("strikebench")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "strikebench.cli"]


def _alive(addr_file: Path, timeout: float = 2.0) -> tuple[ServiceConnection, dict] | None:
    try:
        addr = json.loads(addr_file.read_text())
        conn = ServiceConnection(addr["host"], addr["port"], timeout=timeout)
        _, health = conn.request("GET", "/v1/health")
        if health.get("pid") != addr.get("pid"):
            return None
        return ServiceConnection(addr["host"], addr["port"], addr_file=addr_file), health
    except (OSError, ValueError, KeyError, BrokerUnavailable):
        return None


def ensure_service(state: Path, *, config: str, overrides=(), clock: str = "replay", start=None, end=None,
                   speed: float = 60.0, say=None, wait: float = 120.0) -> ServiceConnection:
    """The running service of ``state`` (FILE.addr), or a new one started for it (its own process and session)."""
    from strikebench.brokers.paper_service import ADDR_SUFFIX

    say = say or (lambda m: None)
    addr_file = Path(str(state) + ADDR_SUFFIX)
    log = Path(str(state)).with_suffix(".log")
    proc = None
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        found = _alive(addr_file, timeout=5.0)
        if found is not None:
            conn, health = found
            _check_span(conn, health, clock, start, end)
            if proc is not None and health.get("pid") == proc.pid:
                say(f"started the paper broker service for the account: {conn.url} (pid {proc.pid}); log {log}")
            return conn
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            if "already serves" not in tail[0]:
                raise StrikebenchError(f"the paper broker service did not start: {tail[0]} (log {log})")
            proc = None  # another one holds the state: wait for it to answer
        if proc is None and not _locked(state):  # no service holds the state file: start one
            cmd = _strikebench_cmd() + ["paper-broker", "serve", "--state", str(state), "--config", str(config),
                                        "--clock", clock, "--speed", repr(float(speed)), "--port", "0",
                                        "--hold-start", "60"]
            for o in overrides:
                cmd += ["--set", o]
            if clock == "replay":
                cmd += ["--from", str(start), "--to", str(end)]
            with open(log, "ab") as out:
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        time.sleep(0.1)
    raise StrikebenchError(f"the paper broker service of {state} did not answer within {wait:.0f} s (log {log})")


def _locked(state) -> bool:
    """True while a service holds ``STATE.lock`` (it may be starting or busy; it is alive)."""
    import fcntl

    try:
        fd = open(str(state) + ".lock", "a")
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        fd.close()


def _check_span(conn, health, clock, start, end) -> None:
    if health.get("mode") != clock or (clock == "replay" and (health.get("from"), health.get("to")) !=
                                       (str(start), str(end))):
        raise StrikebenchError(
            f"the account's paper broker service ({conn.url}, pid {health.get('pid')}) runs a {health.get('mode')}"
            f" clock{' over ' + str(health.get('from')) + '..' + str(health.get('to')) if health.get('mode') == 'replay' else ''}"
            f", not {clock}{' over ' + str(start) + '..' + str(end) if clock == 'replay' else ''}: the service owns "
            f"market time; stop it (kill {health.get('pid')}) or trade the span it replays")
