"""The paper broker as a service: its own process, clock, market data and SQLite state, over HTTP+JSON.

``strikebench paper-broker serve --state FILE --config CONFIG.yaml [--clock wall|replay --from D1 --to D2
--speed N] [--host 127.0.0.1 --port P]``. The order book, fills, positions, cash and settlements are a
:class:`~strikebench.brokers.paper.PaperAccount` in FILE, which is authoritative and survives the service's
own crash (every change is one SQLite transaction). The service's setup is stored in FILE too, so
``serve --state FILE`` alone restarts it where it stopped.

Clock. ``wall``: New York time. ``replay``: a virtual market clock over the sessions from D1 to D2 that moves
at ``speed`` x real time through the regular session and jumps over nights, weekends and holidays (the close
of one session to the open of the next); ``speed 0`` moves only as far as a connected trader asks. A trader may
*hold* the clock (``POST /v1/clock/hold``): the service does not pass the held time while the hold's lease
(real seconds) lasts, so a trader that keeps up trades every bar exactly; a trader that is down holds nothing
and the service runs on -- fills working orders, expires DAY orders at the close, settles expiries -- on its
own. The service owns market time; a trader follows it and can never move it back.

Wire protocol (version 1; every body is JSON; money and prices are decimal strings; times ISO 8601 with
offset) -- documented with examples in docs/live.md, "The paper broker service".
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pandas as pd

from strikebench.calendar import NY, MarketCalendar
from strikebench.errors import StrikebenchError
from strikebench.live.broker_api import BrokerUnavailable
from strikebench.options.contracts import OptionContract
from strikebench.options.orders import Leg, Order, OrderType, TimeInForce

__all__ = ["PaperService", "serve", "ADDR_SUFFIX", "PROTOCOL_VERSION", "order_to_wire", "order_from_wire"]

PROTOCOL_VERSION = 1
ADDR_SUFFIX = ".addr"  # FILE.addr: {"host", "port", "pid"} of the running service


def order_to_wire(order: Order, tag: str = "") -> dict:
    return {"client_id": order.client_id, "tag": tag,
            "legs": [[leg.contract.occ_compact, int(leg.ratio)] for leg in order.legs],
            "quantity": int(order.quantity), "order_type": order.order_type.value,
            "limit_price": None if order.limit_price is None else repr(float(order.limit_price)),
            "tif": order.tif.value, "opens": bool(order.opens)}


def order_from_wire(body: dict) -> tuple[Order, str]:
    try:
        cid = str(body["client_id"])
        if not cid or len(cid) > 120 or not all(ch.isalnum() or ch in "-_." for ch in cid):
            raise ValueError(f"bad client_id {cid!r}")
        legs = tuple(Leg(OptionContract.from_occ(str(occ)), int(r)) for occ, r in body["legs"])
        if not legs:
            raise ValueError("an order needs legs")
        qty = int(body["quantity"])
        if qty <= 0:
            raise ValueError("quantity must be positive")
        limit = body.get("limit_price")
        order = Order(client_id=cid, legs=legs, quantity=qty, order_type=OrderType(body["order_type"]),
                      limit_price=None if limit is None else float(limit), tif=TimeInForce(body["tif"]),
                      opens=bool(body.get("opens", True)))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"bad order: {exc}") from None
    return order, str(body.get("tag", ""))


def _fill_json(f) -> dict:
    return {"fill_id": f.fill_id, "client_id": f.client_id, "at": pd.Timestamp(f.at).isoformat(),
            "quantity": f.quantity, "net_price": repr(float(f.net_price)),
            "leg_prices": [repr(float(x)) for x in f.leg_prices], "fees": repr(float(f.fees))}


def _order_json(o) -> dict:
    return {"client_id": o.client_id, "broker_id": o.broker_id, "status": o.status, "quantity": o.quantity,
            "filled_quantity": o.filled_quantity, "reason": o.reason, "cancel_requested": o.cancel_requested,
            "tag": o.tag, "fills": [_fill_json(f) for f in o.fills]}


class PaperService:
    """The service's state: the paper account, its market and its clock (single-threaded; see :func:`serve`)."""

    def __init__(self, state: Path, *, config: str | None = None, overrides=(), clock: str | None = None,
                 start=None, end=None, speed: float | None = None, lease_seconds: float = 10.0,
                 hold_start: float = 0.0):
        import sqlite3

        self.state = Path(state)
        setup = None
        if self.state.exists():
            try:
                db = sqlite3.connect(str(self.state))
                row = db.execute("SELECT value FROM meta WHERE key = 'service'").fetchone()
                db.close()
                setup = json.loads(row[0]) if row else None
            except sqlite3.DatabaseError as exc:
                raise StrikebenchError(f"{self.state}: not a paper broker state file ({exc})") from None
        if setup is None:
            if config is None:
                raise StrikebenchError(f"{self.state}: no paper broker there yet; give --config CONFIG.yaml to "
                                       f"create one")
            setup = {"config": str(Path(config).resolve()), "overrides": list(overrides), "clock": clock or "wall",
                     "from": None if start is None else str(start), "to": None if end is None else str(end),
                     "speed": 60.0 if speed is None else float(speed)}
        elif speed is not None:
            setup["speed"] = float(speed)  # the one setting a restart may change
        self.setup = setup
        self.mode = setup["clock"]
        self.speed = float(setup["speed"])
        self.lease_seconds = lease_seconds
        self.calendar = MarketCalendar()
        from strikebench.config import load_config
        from strikebench.live.launch import live_broker_plugin
        from strikebench.plugin_manager import get_plugin_manager

        self.pm = get_plugin_manager()
        self._load_config = lambda extra=(): load_config(setup["config"], tuple(setup["overrides"]) + tuple(extra),
                                                         registry=self.pm.registry)
        resolved = self._load_config()
        plugin = live_broker_plugin(resolved, self.pm)
        if not hasattr(plugin, "params") or plugin.name != "paper":
            raise StrikebenchError(f"the paper broker service runs the `paper` broker; {setup['config']} names "
                                   f"'{resolved.broker.entry.name}'")
        self.params = plugin.params
        self.fill_model = resolved.fill_model.build()
        self.commission = resolved.commission.build()
        self.underlying = resolved.strategies[0].build().chain_underlying() if resolved.strategies else "SPX"
        if self.mode == "replay":
            if setup["from"] is None:
                setup["from"] = str(resolved.config.data.start)
                setup["to"] = str(resolved.config.data.end or resolved.config.data.start)
            days = [d.date() for d in self.calendar.sessions(setup["from"], setup["to"])]
            if not days:
                raise StrikebenchError(f"no trading session between {setup['from']} and {setup['to']}")
            self.days = days
            self.market_day = None
            self.market = self._market(days[0], days[-1])
        else:
            self.days = None
            self.market_day = dt.datetime.now(NY).date()
            self.market = self._market(self.market_day, self.market_day)
        from strikebench.brokers.paper import PaperAccount

        self.account = PaperAccount(self.state, market=self.market, fill_model=self.fill_model,
                                    commission=self.commission, params=self.params, underlying=self.underlying)
        db = self.account._db
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('service', ?)", (json.dumps(setup),))
        clock_now = self.account.clock()
        if clock_now is None:
            clock_now = self._open(self.days[0]) if self.mode == "replay" else pd.Timestamp.now(tz=NY)
            self.account.sync(clock_now)
        self.now = clock_now
        self.hold_until: pd.Timestamp | None = None
        self.hold_expires = 0.0
        if hold_start > 0 and self.mode == "replay":
            # the trader that started this service is still importing and building its market: a replay at
            # speed x real time would run past its first decisions (they would then be refused as stale)
            self.hold_until, self.hold_expires = self.now, time.monotonic() + float(hold_start)
        self._last_tick = time.monotonic()
        self.stopping = False

    # -------------------------------------------------------------- market
    def _market(self, start, end):
        resolved = self._load_config()
        if resolved.config.data.source == "synthetic":
            resolved = self._load_config((f"data.start={start}", f"data.end={end}"))
        return resolved.data.build().open()

    def _open(self, day) -> pd.Timestamp:
        return pd.Timestamp(self.calendar.session_open(day)).tz_convert(NY)

    def _close(self, day) -> pd.Timestamp:
        return pd.Timestamp(self.calendar.session_close(day)).tz_convert(NY)

    # --------------------------------------------------------------- clock
    def end(self) -> pd.Timestamp | None:
        return self._close(self.days[-1]) if self.mode == "replay" else None

    def tick(self) -> None:
        """Move the market clock (never backwards) and let the account catch up to it."""
        real = time.monotonic()
        elapsed, self._last_tick = real - self._last_tick, real
        held = self.hold_until if (self.hold_until is not None and real < self.hold_expires) else None
        if self.mode == "wall":
            target = pd.Timestamp.now(tz=NY)
            if target.date() != self.market_day:  # a new day: that day's market
                self.market_day = target.date()
                self.market = self._market(self.market_day, self.market_day)
                self.account.market = self.market
                self.account._quotes.clear()
                self.account._bar_index.clear()
        else:
            target = self._replay_target(elapsed, held)
        if target > self.now:
            self.account.sync(target)
            self.now = target

    def _replay_target(self, elapsed: float, held) -> pd.Timestamp:
        now = self.now
        day = now.date()
        if day not in self.days or now >= self._close(day):  # between sessions: jump to the next open
            later = [d for d in self.days if self._open(d) > now]
            if not later:
                return now  # the replay has ended
            if held is None and self.speed <= 0:
                return now
            if held is not None and held <= now:
                return now
            now = self._open(later[0])
            day = later[0]
        if self.speed > 0:
            target = now + pd.Timedelta(seconds=elapsed * self.speed)
        else:
            target = held if held is not None else now
        if held is not None:
            target = min(target, held)
        return max(min(target, self._close(day)), self.now)

    def hold(self, until: pd.Timestamp, lease: float | None) -> None:
        self.hold_until = until
        self.hold_expires = time.monotonic() + (self.lease_seconds if lease is None else min(float(lease), 60.0))

    # -------------------------------------------------------------- requests
    def handle(self, method: str, path: str, query: dict, body: dict | None):
        """(status, reply) for one request; raises ValueError for a bad request."""
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] != "v1":
            return 404, {"error": f"unknown path {path} (protocol /v1)"}
        parts = parts[1:]
        acct = self.account
        if method == "GET" and parts == ["health"]:
            return 200, {"ok": True, "protocol": PROTOCOL_VERSION, "pid": os.getpid(), "mode": self.mode,
                         "speed": self.speed, "from": self.setup.get("from"), "to": self.setup.get("to"),
                         "now": self.now.isoformat(), "config": self.setup["config"]}
        if method == "GET" and parts == ["clock"]:
            end = self.end()
            return 200, {"now": self.now.isoformat(), "end": None if end is None else end.isoformat(),
                         "ended": bool(end is not None and self.now >= end), "mode": self.mode, "speed": self.speed}
        if method == "POST" and parts == ["clock", "hold"]:
            until = pd.Timestamp(body["until"]).tz_convert(NY)
            self.hold(until, body.get("lease"))
            self.tick()
            return 200, {"now": self.now.isoformat(), "held_until": until.isoformat()}
        if method == "POST" and parts == ["orders"]:
            order, tag = order_from_wire(body or {})
            ack = acct.place(order, self.now, tag=tag)  # BrokerUnavailable: the simulated lost reply
            return 200, {"client_id": ack.client_id, "broker_id": ack.broker_id, "status": ack.status,
                         "duplicate": ack.duplicate, "reason": ack.reason}
        if method == "GET" and parts == ["orders"]:
            return 200, {"orders": [_order_json(o) for o in acct.orders(query.get("tag", [""])[0])]}
        if method == "GET" and len(parts) == 2 and parts[0] == "orders":
            found = acct.lookup(parts[1])
            return (404, {"error": f"no order {parts[1]}"}) if found is None else (200, _order_json(found))
        if method == "POST" and len(parts) == 3 and parts[0] == "orders" and parts[2] == "cancel":
            return 200, {"taken": bool(acct.cancel(parts[1], self.now))}
        if method == "GET" and parts == ["events"]:
            since = int(query.get("since", ["0"])[0])
            limit = int(query.get("limit", ["1000"])[0])
            out = []
            for ev in acct.events(since)[:limit]:
                out.append({"seq": ev.seq, "event_id": ev.event_id, "client_id": ev.client_id, "kind": ev.kind,
                            "status": ev.status, "at": None if ev.at is None else pd.Timestamp(ev.at).isoformat(),
                            "reason": ev.reason, "fill": None if ev.fill is None else _fill_json(ev.fill)})
            return 200, {"events": out}
        if method == "GET" and parts == ["positions"]:
            pos = acct.positions()
            return 200, {"positions": pos}
        if method == "GET" and parts == ["balances"]:
            cents = int(acct._meta(acct._db, "cash_cents", "0"))
            return 200, {"cash": f"{Decimal(cents) / 100:.2f}"}
        if method == "GET" and parts == ["settlements"]:
            return 200, {"settlements": [{"occ": s.occ, "quantity": s.quantity, "value": repr(s.value),
                                          "cash": f"{s.cash:.2f}", "at": pd.Timestamp(s.at).isoformat()}
                                         for s in acct.settlements()]}
        if method == "POST" and parts == ["shutdown"]:
            self.stopping = True
            return 200, {"stopping": True}
        return 404, {"error": f"unknown request {method} {path}"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: the single-threaded service never waits on a client
    timeout = 5.0
    wbufsize = 1 << 16  # the reply leaves in one write (no Nagle / delayed-ACK stall between headers and body)
    disable_nagle_algorithm = True
    service: PaperService = None  # set by serve()

    def log_message(self, fmt, *args):  # quiet: the service logs what it does, not every request
        pass

    def _reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _do(self, method: str) -> None:
        url = urlparse(self.path)
        body = None
        n = int(self.headers.get("Content-Length") or 0)
        try:
            if n:
                body = json.loads(self.rfile.read(n).decode())
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
            status, payload = self.service.handle(method, url.path, parse_qs(url.query), body)
        except BrokerUnavailable:
            # the simulated lost reply: the order is taken, the connection closes without an answer
            self.close_connection = True
            return
        except (ValueError, KeyError, TypeError) as exc:
            status, payload = 400, {"error": str(exc)}
        self._reply(status, payload)

    def do_GET(self):  # noqa: N802
        self._do("GET")

    def do_POST(self):  # noqa: N802
        self._do("POST")


class _Server(HTTPServer):
    allow_reuse_address = True

    def service_actions(self):
        self.service_obj.tick()
        if self.service_obj.stopping:
            raise KeyboardInterrupt


def serve(state, *, host: str = "127.0.0.1", port: int = 0, say=print, allow_remote: bool = False, **setup) -> None:
    """Run the service until SIGTERM/SIGINT; writes ``STATE.addr`` with its address."""
    from strikebench.brokers.paper_client import _alive

    if _alive(Path(str(state) + ADDR_SUFFIX)) is not None:
        raise StrikebenchError(f"{state}: a paper broker service already serves this state file "
                               f"({Path(str(state) + ADDR_SUFFIX).read_text().strip()})")
    if host not in ("127.0.0.1", "localhost", "::1") and not allow_remote:
        raise StrikebenchError(f"--host {host}: the paper broker service listens on loopback only unless "
                               f"--allow-remote is given (it has no authentication)")
    import fcntl

    from strikebench.userfiles import check_dir, check_file

    # the state file, if there, must be a readable regular file; its folder must exist (one line each)
    if os.path.lexists(state):
        check_file(state, what="paper broker state file", error=StrikebenchError)
    check_dir(Path(state).parent, error=StrikebenchError)
    lock_path = Path(str(state) + ".lock")
    made_lock = not lock_path.exists()
    try:
        lock = open(lock_path, "w")  # one service per state file (the kernel drops it if we die)
    except OSError as exc:
        raise StrikebenchError(f"{lock_path}: cannot create the service's lock file ({exc.strerror})") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise StrikebenchError(f"{state}: a paper broker service already serves this state file") from None
    try:
        service = PaperService(Path(state), **setup)
    except BaseException:  # a refused start leaves nothing behind: no lock file of ours
        lock.close()
        if made_lock:
            lock_path.unlink(missing_ok=True)
        raise
    handler = type("Handler", (_Handler,), {"service": service})
    server = _Server((host, port), handler)
    server.timeout = 0.01
    server.service_obj = service
    addr_file = Path(str(state) + ADDR_SUFFIX)
    addr = {"host": host, "port": server.server_address[1], "pid": os.getpid()}
    tmp = addr_file.with_suffix(addr_file.suffix + ".tmp")
    tmp.write_text(json.dumps(addr))
    os.replace(tmp, addr_file)
    say(f"paper broker service on http://{host}:{addr['port']} (pid {os.getpid()}); state {state}; clock "
        f"{service.mode}{' ' + service.setup['from'] + '..' + service.setup['to'] if service.mode == 'replay' else ''}"
        f" at {service.now:%Y-%m-%d %H:%M}, speed {service.speed:g}")
    sys.stdout.flush()

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.01)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        service.account.close()
        try:
            if json.loads(addr_file.read_text()).get("pid") == os.getpid():
                addr_file.unlink()
        except (OSError, ValueError):
            pass
