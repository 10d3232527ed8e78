"""A loopback server speaking Tradier's REST API, for tests and replays (127.0.0.1 only, a port of its own).

It answers the documented paths with the documented shapes and quirks: form-encoded POST bodies (parameters
in a POST's query string are refused, as they would be lost on the real service), bearer-token auth (401 with
a plain-text body), one-element collections as bare objects, empty ones as ``"null"``, numbers as floats,
``X-Ratelimit-*`` headers on every reply and 429 past the window.

Orders are Tradier-shaped dicts. They fill either by hand (:meth:`TradierLoopback.fill`: a test states the
executions) or, with ``book=PaperAccount``, by strikebench's paper broker at the market's quotes at the
server's clock (``now()``): the server forwards each order to it and reads its fills and statuses back into
Tradier's per-leg ``exec_quantity`` / ``avg_fill_price``. Market data (clock, calendar, expirations, chains with
greeks, quotes, timesales, daily history) comes from a market object (the synthetic market) at ``now()``.

Faults are one-shot and queued per (method, path prefix): ``drop`` (the request is processed, then the
connection closes with no reply), ``slow`` (processed, the reply comes after ``delay`` seconds), ``500_after``
(processed, then HTTP 500), ``500`` (HTTP 500, not processed), ``garbled`` (processed, then a reply that is not
JSON), ``429`` (refused unprocessed, with the rate-limit headers), ``errors`` (HTTP 200 with an ``errors`` body,
nothing placed).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd

from strikebench.calendar import NY, MarketCalendar

__all__ = ["TradierLoopback"]


def _one_or_many(items: list, key: str):
    """Tradier's collection quirk: none -> "null", one -> a bare object, more -> a list."""
    if not items:
        return "null"
    return {key: items[0] if len(items) == 1 else items}


def _f(x) -> float | None:
    return None if x is None or (isinstance(x, float) and not np.isfinite(x)) else float(x)


class TradierLoopback:
    def __init__(self, *, token: str = "loopback-token", account: str = "VA000001", market=None, book=None,
                 now=None, rate_allowed: int = 10_000, rate_window: float = 60.0, cash: float = 100_000.0,
                 fill_model=None, underlying_symbols=("SPX",)):
        self.token, self.account = token, account
        self.market, self.book, self.fill_model = market, book, fill_model
        self._now = now or (lambda: pd.Timestamp.now(tz=NY))
        self.rate_allowed, self.rate_window = rate_allowed, rate_window
        self._window_start, self._used = time.time(), 0
        self.cash = cash
        self.orders: dict[int, dict] = {}
        self.positions: dict[str, int] = {}
        self.position_changes: dict[str, int] = {}
        self.calendar_overrides: dict[str, str] = {}  # date -> "closed" / "open": Tradier's calendar disagrees
        self.greeks_mode = ""  # "" | "stale" (updated 3 h before the quotes) | "missing" (every 3rd row null)
        self.faults: list[tuple[str, str, str, float]] = []
        self.requests: list[tuple[str, str, str, dict]] = []  # (method, path, query, form) as received
        self.posted_orders = 0  # orders placed (not previews)
        self._ids = itertools.count(1000)
        self._lock = threading.RLock()
        self.calendar = MarketCalendar()
        self._client_of: dict[int, str] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16  # headers and body leave in one segment (no Nagle / delayed-ACK stall per reply)

            def setup(self):
                import socket

                super().setup()
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *a):  # quiet
                pass

            def _any(self):
                server._handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # ------------------------------------------------------------- control
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def attach_book(self, book) -> None:
        """Fill orders with ``book`` (a :class:`strikebench.brokers.paper.PaperAccount`); its SQLite connection is
        reopened for use from the server's request threads (every use is under the server's lock)."""
        import sqlite3

        book._db.close()
        book._db = sqlite3.connect(str(book.path), isolation_level=None, timeout=30.0, check_same_thread=False)
        book._db.row_factory = sqlite3.Row
        book._db.execute("PRAGMA journal_mode=WAL")
        self.book = book

    def fault(self, method: str, path_prefix: str, kind: str, delay: float = 0.0) -> None:
        with self._lock:
            self.faults.append((method, path_prefix, kind, delay))

    def now(self) -> pd.Timestamp:
        return pd.Timestamp(self._now())

    def fill(self, order_id: int, quantity: int, leg_prices, *, at=None) -> None:
        """A hand fill: ``quantity`` more combos of ``order_id`` execute, leg i at ``leg_prices[i]``."""
        with self._lock:
            o = self.orders[order_id]
            legs = o.get("leg") or [o]
            for leg, px in zip(legs, leg_prices):
                ratio = int(leg["quantity"]) // int(o["quantity"]) if o.get("leg") else 1
                n = quantity * ratio
                old_q, old_avg = leg["exec_quantity"], leg["avg_fill_price"] or 0.0
                leg["exec_quantity"] = old_q + n
                leg["avg_fill_price"] = (old_avg * old_q + px * n) / (old_q + n)
                leg["last_fill_price"], leg["last_fill_quantity"] = px, float(n)
                leg["remaining_quantity"] = leg["quantity"] - leg["exec_quantity"]
                sign = 1 if leg["side"].startswith("buy") else -1
                sym = leg["option_symbol"]
                self.positions[sym] = self.positions.get(sym, 0) + sign * n
                self.cash -= sign * n * px * 100
                if not self.positions[sym]:
                    del self.positions[sym]
            done = min(int(leg["exec_quantity"]) * int(o["quantity"]) // int(leg["quantity"]) for leg in legs) \
                if o.get("leg") else int(o["exec_quantity"])
            o["exec_quantity"] = float(done)
            o["remaining_quantity"] = float(o["quantity"] - done)
            st = "filled" if done >= o["quantity"] else "partially_filled"
            o["status"] = st
            for leg in o.get("leg") or ():
                leg["status"] = st
            o["transaction_date"] = _utc(at or self.now())

    def set_status(self, order_id: int, status: str, reason: str = "") -> None:
        with self._lock:
            o = self.orders[order_id]
            o["status"] = status
            for leg in o.get("leg") or ():
                leg["status"] = status
            if reason:
                o["reason_description"] = reason
            o["transaction_date"] = _utc(self.now())

    # ------------------------------------------------------------ protocol
    def _rate_headers(self) -> dict:
        t = time.time()
        if t - self._window_start >= self.rate_window:
            self._window_start, self._used = t, 0
        expiry = int((self._window_start + self.rate_window) * 1000)
        return {"X-Ratelimit-Allowed": str(self.rate_allowed), "X-Ratelimit-Used": str(self._used),
                "X-Ratelimit-Available": str(max(self.rate_allowed - self._used, 0)),
                "X-Ratelimit-Expiry": str(expiry)}

    def _reply(self, h, status: int, body, *, ctype="application/json", headers=None) -> None:
        data = body if isinstance(body, bytes) else (json.dumps(body) if ctype == "application/json" else
                                                      str(body)).encode()
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        try:
            h.wfile.write(data)
            h.wfile.flush()
        except OSError:  # the client gave up (a timeout it was meant to meet)
            h.close_connection = True

    def _take_fault(self, method: str, path: str):
        with self._lock:
            for i, (m, prefix, kind, delay) in enumerate(self.faults):
                if m == method and path.startswith(prefix):
                    del self.faults[i]
                    return kind, delay
        return None, 0.0

    def _handle(self, h) -> None:
        parts = urlsplit(h.path)
        path, query = parts.path, parse_qs(parts.query)
        n = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(n) if n else b""
        form = {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        q = {k: v[-1] for k, v in query.items()}
        method = h.command
        with self._lock:
            self.requests.append((method, path, parts.query, form))
            self._used += 1
            headers = self._rate_headers()
            over = self._used > self.rate_allowed
        if h.headers.get("Authorization") != f"Bearer {self.token}":
            return self._reply(h, 401, "Invalid Access Token", ctype="text/plain", headers=headers)
        kind, delay = self._take_fault(method, path)
        if over or kind == "429":
            return self._reply(h, 429, "Rate limit exceeded", ctype="text/plain", headers=headers)
        if kind == "500":
            return self._reply(h, 500, {"fault": "internal"}, headers=headers)
        if method in ("POST", "PUT") and parts.query:
            return self._reply(h, 400, {"errors": {"error": "parameters must be form-encoded in the body"}},
                               headers=headers)
        try:
            with self._lock:
                self._sync()
                status, body = self._route(method, path, q, form, kind)
        except KeyError as exc:
            status, body = 400, {"errors": {"error": f"missing or bad parameter {exc}"}}
        if kind == "drop":
            h.close_connection = True
            try:
                h.connection.shutdown(2)
            except OSError:
                pass
            return
        if kind == "slow":
            time.sleep(delay)
        if kind == "500_after":
            return self._reply(h, 500, {"fault": "internal"}, headers=headers)
        if kind == "garbled":
            return self._reply(h, 200, b'{"order": {"id": 12', headers=headers)
        if status == 404:
            return self._reply(h, 404, "Not Found", ctype="text/plain", headers=headers)
        self._reply(h, status, body, headers=headers)

    def _route(self, method, path, q, form, kind):
        acct = f"/v1/accounts/{self.account}"
        if path == "/v1/user/profile":
            return 200, {"profile": {"id": "id-sb", "name": "Loopback", "account": {
                "account_number": self.account, "classification": "individual", "day_trader": False,
                "option_level": 6, "status": "active", "type": "margin"}}}
        if path.startswith("/v1/accounts/") and not path.startswith(acct):
            return 403, {"errors": {"error": "Unauthorized account"}}
        if path == f"{acct}/balances":
            cash = self.book.balances()["cash"] if self.book is not None else self.cash
            return 200, {"balances": {"account_number": self.account, "account_type": "margin", "total_cash": cash,
                                      "total_equity": cash, "option_short_value": 0.0, "pending_orders_count": 0,
                                      "margin": {"option_buying_power": cash / 2, "stock_buying_power": cash,
                                                 "fed_call": 0, "maintenance_call": 0}}}
        if path == f"{acct}/positions":
            pos = dict(self.book.positions() if self.book is not None else self.positions)
            pos.update(self.position_changes)  # a position changed at the broker behind the trader's back
            items = [{"cost_basis": 0.0, "date_acquired": "2023-01-03T15:00:00.000Z", "id": i + 1,
                      "quantity": float(qty), "symbol": sym} for i, (sym, qty) in enumerate(sorted(pos.items())) if qty]
            return 200, {"positions": _one_or_many(items, "position")}
        if path == f"{acct}/orders" and method == "GET":
            items = [self._public(o) for o in self.orders.values()]
            return 200, {"orders": _one_or_many(items, "order")}
        if path == f"{acct}/orders" and method == "POST":
            return self._place(form, kind)
        if path.startswith(f"{acct}/orders/"):
            try:
                oid = int(path.rsplit("/", 1)[1])
            except ValueError:
                return 404, None
            o = self.orders.get(oid)
            if o is None:
                return 404, None
            if method == "GET":
                return 200, {"order": self._public(o)}
            if method == "DELETE":
                if o["status"] not in ("open", "partially_filled", "pending"):
                    return 400, {"errors": {"error": f"order {oid} is {o['status']}"}}
                if self.book is not None:
                    self.book.cancel(self._client_of[oid], self.now())
                else:
                    self.set_status(oid, "canceled")
                return 200, {"order": {"id": oid, "status": "ok"}}
            if method == "PUT":
                if o["status"] not in ("open", "partially_filled", "pending"):
                    return 400, {"errors": {"error": f"order {oid} is {o['status']}"}}
                if "price" in form:
                    o["price"] = float(form["price"])
                if "type" in form:
                    o["type"] = form["type"]
                if "duration" in form:
                    o["duration"] = form["duration"]
                return 200, {"order": {"id": oid, "status": "ok"}}
        if path == "/v1/markets/clock":
            return 200, {"clock": self._clock()}
        if path == "/v1/markets/calendar":
            return 200, {"calendar": self._calendar(int(q["month"]), int(q["year"]))}
        if path == "/v1/markets/options/expirations":
            exps = self._expiries(q["symbol"])
            return 200, {"expirations": "null" if not exps else {"date": exps[0] if len(exps) == 1 else exps}}
        if path == "/v1/markets/options/chains":
            rows = self._chain(q["symbol"], dt.date.fromisoformat(q["expiration"]), q.get("greeks") == "true")
            return 200, {"options": _one_or_many(rows, "option")}
        if path == "/v1/markets/quotes":
            syms = (form.get("symbols") or q.get("symbols") or "").split(",")
            rows = [self._quote(s) for s in syms if s]
            return 200, {"quotes": _one_or_many([r for r in rows if r], "quote")}
        if path == "/v1/markets/timesales":
            return 200, {"series": _one_or_many(self._timesales(q["symbol"], q["start"], q["end"]), "data")}
        if path == "/v1/markets/history":
            return 200, {"history": _one_or_many(self._history(q["symbol"], q["start"], q["end"]), "day")}
        return 404, None

    # --------------------------------------------------------------- orders
    def _place(self, form: dict, kind):
        cls = form["class"]
        if kind == "errors":
            return 200, {"errors": {"error": ["Backoffice rejected override of the order.", "Insufficient buying "
                                              "power"]}}
        if cls == "multileg":
            legs = []
            i = 0
            while f"option_symbol[{i}]" in form:
                legs.append((form[f"option_symbol[{i}]"], form[f"side[{i}]"], int(form[f"quantity[{i}]"])))
                i += 1
            if not 2 <= len(legs) <= 4:
                return 400, {"errors": {"error": "a multileg order has 2 to 4 legs"}}
        elif cls == "option":
            legs = [(form["option_symbol"], form["side"], int(form["quantity"]))]
        else:
            return 400, {"errors": {"error": f"class {cls} not supported here"}}
        typ = form["type"]
        if typ not in ("market", "debit", "credit", "even", "limit"):
            return 400, {"errors": {"error": f"bad type {typ}"}}
        if typ in ("debit", "credit", "limit") and "price" not in form:
            return 400, {"errors": {"error": "price required"}}
        for _, side, _ in legs:
            if side not in ("buy_to_open", "buy_to_close", "sell_to_open", "sell_to_close"):
                return 400, {"errors": {"error": f"bad side {side}"}}
        tag = form.get("tag", "")
        if tag and (len(tag) > 255 or not all(c.isalnum() or c == "-" for c in tag)):
            return 400, {"errors": {"error": "tag: letters, digits and dashes only"}}
        if form.get("preview") == "true":
            return 200, {"order": {"status": "ok", "commission": 0.0, "cost": -float(form.get("price", 0)) * 100,
                                   "fees": 0.0, "symbol": form["symbol"], "type": typ, "duration": form["duration"],
                                   "result": True, "order_cost": 0.0, "margin_change": 500.0, "class": cls,
                                   "strategy": "spread", "request_date": _utc(self.now())}}
        oid = next(self._ids)
        g = 0
        for _, _, n in legs:
            g = n if g == 0 else int(np.gcd(g, n))
        combo = g if cls == "multileg" else legs[0][2]
        now = _utc(self.now())
        o = {"id": oid, "type": typ, "symbol": form["symbol"], "side": legs[0][1] if cls == "option" else "buy",
             "quantity": float(combo), "status": "pending", "duration": form["duration"],
             "avg_fill_price": 0.0, "exec_quantity": 0.0, "last_fill_price": 0.0, "last_fill_quantity": 0.0,
             "remaining_quantity": float(combo), "create_date": now, "transaction_date": now, "class": cls,
             "tag": tag}
        if typ != "market":
            o["price"] = float(form.get("price", 0.0))
        if cls == "multileg":
            o["num_legs"] = len(legs)
            o["strategy"] = "spread" if len(legs) == 2 else "condor" if len(legs) == 4 else "freeform"
            o["leg"] = [{"id": oid * 10 + k, "type": typ, "symbol": form["symbol"], "side": side,
                         "quantity": float(n), "status": "pending", "duration": form["duration"],
                         "avg_fill_price": 0.0, "exec_quantity": 0.0, "last_fill_price": 0.0,
                         "last_fill_quantity": 0.0, "remaining_quantity": float(n), "create_date": now,
                         "transaction_date": now, "class": "option", "option_symbol": sym}
                        for k, (sym, side, n) in enumerate(legs)]
        else:
            o["option_symbol"] = legs[0][0]
        self.orders[oid] = o
        self.posted_orders += 1
        if self.book is not None:
            self._to_book(oid, o, form, legs, combo)
        else:
            o["status"] = "open"
            for leg in o.get("leg") or ():
                leg["status"] = "open"
        return 200, {"order": {"id": oid, "status": "ok", "partner_id": "sb-loopback"}}

    def _to_book(self, oid, o, form, legs, combo) -> None:
        from strikebench.options.contracts import OptionContract
        from strikebench.options.orders import Leg, Order, OrderType, TimeInForce

        lg = tuple(Leg(OptionContract.from_occ(sym), (1 if side.startswith("buy") else -1) * (n // combo))
                   for sym, side, n in legs)
        typ = form["type"]
        price = float(form.get("price", 0.0))
        limit = None if typ == "market" else price if typ == "debit" else -price if typ == "credit" else 0.0
        if typ == "limit":
            limit = price if lg[0].ratio > 0 else -price
        cid = f"tr{oid}"
        self._client_of[oid] = cid
        order = Order(client_id=cid, legs=lg, quantity=int(combo),
                      order_type=OrderType.MARKET if typ == "market" else OrderType.LIMIT, limit_price=limit,
                      tif=TimeInForce.GTC if form["duration"] == "gtc" else TimeInForce.DAY,
                      opens=legs[0][1].endswith("open"))
        self.book.place(order, self.now(), tag="loopback")
        self._mirror(oid)

    def _sync(self) -> None:
        if self.book is None:
            return
        self.book.sync(self.now())
        for oid, o in self.orders.items():
            if o["status"] not in ("filled", "canceled", "rejected", "expired"):
                self._mirror(oid)

    _BOOK_STATUS = {"submitted": "pending", "accepted": "open", "partially_filled": "partially_filled",
                    "filled": "filled", "cancelled": "canceled", "rejected": "rejected", "expired": "expired"}

    def _mirror(self, oid) -> None:
        """The paper book's view of an order, in Tradier's shape (per-leg cumulative executions and averages)."""
        o = self.orders[oid]
        b = self.book.lookup(self._client_of[oid])
        if b is None:
            return
        st = self._BOOK_STATUS[b.status]
        legs = o.get("leg") or [o]
        for k, leg in enumerate(legs):
            ratio = int(leg["quantity"]) // int(o["quantity"]) if o.get("leg") else 1
            q = sum(f.quantity * ratio for f in b.fills)
            v = sum(f.quantity * ratio * f.leg_prices[k] for f in b.fills)
            leg["exec_quantity"] = float(q)
            leg["avg_fill_price"] = (v / q) if q else 0.0
            leg["remaining_quantity"] = leg["quantity"] - q
            leg["status"] = st
        o["exec_quantity"] = float(b.filled_quantity)
        o["remaining_quantity"] = float(o["quantity"] - b.filled_quantity)
        if b.fills:
            o["avg_fill_price"] = abs(sum(f.net_price * f.quantity for f in b.fills) / b.filled_quantity)
            o["transaction_date"] = _utc(b.fills[-1].at)
        if st != o["status"]:
            o["status"] = st
            if st == "rejected":
                o["reason_description"] = b.reason or "rejected"
            if not b.fills or st != "filled":
                o["transaction_date"] = _utc(self.now())

    @staticmethod
    def _public(o: dict) -> dict:
        out = dict(o)
        if "leg" in out:
            out["leg"] = [dict(x) for x in out["leg"]]
        return out

    # --------------------------------------------------------------- markets
    def _clock(self) -> dict:
        now = self.now()
        day = now.date()
        if not self.calendar.is_session(day):
            return {"date": str(day), "description": "Market is closed", "state": "closed",
                    "timestamp": int(now.timestamp()), "next_state": "premarket", "next_change": "08:00"}
        o = pd.Timestamp(self.calendar.session_open(day)).tz_convert(NY)
        c = pd.Timestamp(self.calendar.session_close(day)).tz_convert(NY)
        state = "open" if o <= now < c else ("premarket" if now < o else "postmarket")
        return {"date": str(day), "description": f"Market is open from {o:%H:%M} to {c:%H:%M}", "state": state,
                "timestamp": int(now.timestamp()), "next_state": "postmarket" if state == "open" else "open",
                "next_change": f"{c:%H:%M}" if state == "open" else f"{o:%H:%M}"}

    def _calendar(self, month: int, year: int) -> dict:
        first = dt.date(year, month, 1)
        last = (pd.Timestamp(first) + pd.offsets.MonthEnd(0)).date()
        days = []
        d = first
        while d <= last:
            forced = self.calendar_overrides.get(str(d))
            if forced == "closed":
                days.append({"date": str(d), "status": "closed", "description": "Market is closed"})
            elif self.calendar.is_session(d):
                o = pd.Timestamp(self.calendar.session_open(d)).tz_convert(NY)
                c = pd.Timestamp(self.calendar.session_close(d)).tz_convert(NY)
                days.append({"date": str(d), "status": "open", "description": "Market is open",
                             "open": {"start": f"{o:%H:%M}", "end": f"{c:%H:%M}"}})
            else:
                days.append({"date": str(d), "status": "closed", "description": "Market is closed"})
            d += dt.timedelta(days=1)
        return {"month": month, "year": year, "days": {"day": days}}

    def _minute(self) -> pd.Timestamp:
        """The last completed minute bar's label at the server's clock (quotes are that bar's close)."""
        return self.now().floor("min") - pd.Timedelta(minutes=1)

    def _expiries(self, symbol: str) -> list[str]:
        if self.market is None:
            return []
        return [str(d) for d in self.market.listed_expiries(symbol, self.now().date())]

    def _snapshot(self, symbol: str, expiries=None):
        at = self._minute()
        open_ = pd.Timestamp(self.calendar.session_open(at.date())).tz_convert(NY) \
            if self.calendar.is_session(at.date()) else None
        if open_ is None or at < open_:
            return None
        return self.market.snapshot(symbol, at, expiries)

    def _chain(self, symbol: str, expiry: dt.date, greeks: bool) -> list[dict]:
        if self.market is None:
            return []
        snap = self._snapshot(symbol, [expiry])
        if snap is None:
            return []
        rows = []
        for i in range(len(snap)):
            sym = _occ(str(snap.root[i]), snap.expiry[i], bool(snap.is_call[i]), float(snap.strike[i]))
            row = {"symbol": sym, "description": sym, "exch": "C", "type": "option", "last": _f(snap.last[i]),
                   "change": None, "volume": int(snap.volume[i]), "open": None, "high": None, "low": None,
                   "close": None, "bid": _f(snap.bid[i]), "ask": _f(snap.ask[i]), "underlying": symbol,
                   "strike": float(snap.strike[i]), "change_percentage": None, "average_volume": 0,
                   "last_volume": 0, "trade_date": 0, "prevclose": None, "week_52_high": 0.0, "week_52_low": 0.0,
                   "bidsize": 10, "bidexch": "C", "bid_date": int(snap.timestamp.timestamp() * 1000), "asksize": 10,
                   "askexch": "C", "ask_date": int(snap.timestamp.timestamp() * 1000),
                   "open_interest": int(snap.open_interest[i]), "contract_size": 100,
                   "expiration_date": str(pd.Timestamp(snap.expiry[i]).date()),
                   "expiration_type": "weeklys" if str(snap.root[i]).endswith("W") else "standard",
                   "option_type": "call" if bool(snap.is_call[i]) else "put", "root_symbol": str(snap.root[i])}
            if greeks and self.greeks_mode == "missing" and i % 3 == 0:
                row["greeks"] = None
            elif greeks:
                row["greeks"] = {"delta": _f(snap.delta[i]), "gamma": _f(snap.gamma[i]), "theta": _f(snap.theta[i]),
                                 "vega": _f(snap.vega[i]), "rho": 0.0, "phi": 0.0, "bid_iv": _f(snap.iv[i]),
                                 "mid_iv": _f(snap.iv[i]), "ask_iv": _f(snap.iv[i]), "smv_vol": _f(snap.iv[i]),
                                 "updated_at": f"{self._greeks_time(snap.timestamp, i):%Y-%m-%d %H:%M:%S}"}
            rows.append(row)
        return rows

    def _greeks_time(self, t, i: int):
        t = t.tz_convert("UTC")
        return t - pd.Timedelta(hours=3) if self.greeks_mode == "stale" and i % 2 == 0 else t

    def _underlying_last(self, symbol: str) -> float | None:
        if self.market is None:
            return None
        bars = self.market.bars(symbol)
        at = self._minute()
        i = int(bars.index.searchsorted(at, side="right")) - 1
        return None if i < 0 else float(bars["close"].iloc[i])

    def _quote(self, symbol: str) -> dict | None:
        if len(symbol) > 6:
            return self._option_quote(symbol)
        last = self._underlying_last(symbol)
        if last is None:
            return None
        return {"symbol": symbol, "description": symbol, "exch": "C", "type": "index", "last": last, "change": None,
                "volume": 0, "open": None, "high": None, "low": None, "close": None, "bid": None, "ask": None,
                "trade_date": int(self._minute().timestamp() * 1000)}

    def _option_quote(self, symbol: str) -> dict | None:
        from strikebench.options.contracts import OptionContract

        if self.market is None:
            return None
        try:
            c = OptionContract.from_occ(symbol)
        except Exception:  # noqa: BLE001 - unmatched symbol
            return None
        at = self._minute()
        q = self.market.leg_quotes([c], at.date())
        i = int(np.searchsorted(q.times, at.value, side="right")) - 1
        if i < 0:
            return None
        return {"symbol": symbol, "description": symbol, "exch": "C", "type": "option", "last": None,
                "bid": _f(q.bid[i, 0]), "ask": _f(q.ask[i, 0]), "underlying": c.underlying,
                "strike": c.strike, "root_symbol": c.root, "option_type": "call" if c.right.value == "C" else "put",
                "expiration_date": str(c.expiry), "contract_size": 100,
                "bid_date": int(at.timestamp() * 1000), "ask_date": int(at.timestamp() * 1000)}

    def _timesales(self, symbol: str, start: str, end: str) -> list[dict]:
        bars = self.market.bars(symbol) if self.market is not None else None
        if bars is None:
            return []
        lo = pd.Timestamp(start).tz_localize(NY) if pd.Timestamp(start).tzinfo is None else pd.Timestamp(start)
        hi = pd.Timestamp(end).tz_localize(NY) if pd.Timestamp(end).tzinfo is None else pd.Timestamp(end)
        hi = min(hi, self._minute())
        sel = bars.loc[(bars.index >= lo) & (bars.index <= hi)]
        return [{"time": f"{t:%Y-%m-%dT%H:%M:%S}", "timestamp": int(t.timestamp()), "price": float(r.close),
                 "open": float(r.open), "high": float(r.high), "low": float(r.low), "close": float(r.close),
                 "volume": int(r.volume), "vwap": float(r.close)} for t, r in sel.iterrows()]

    def _history(self, symbol: str, start: str, end: str) -> list[dict]:
        bars = self.market.bars(symbol) if self.market is not None else None
        if bars is None:
            return []
        today = self.now().date()
        out = []
        for day, g in bars.groupby(bars.index.date):
            if not (dt.date.fromisoformat(start) <= day <= dt.date.fromisoformat(end)) or day >= today:
                continue
            out.append({"date": str(day), "open": float(g["open"].iloc[0]), "high": float(g["high"].max()),
                        "low": float(g["low"].min()), "close": float(g["close"].iloc[-1]), "volume": 0})
        return out


def _utc(t) -> str:
    t = pd.Timestamp(t)
    t = t.tz_localize(NY) if t.tzinfo is None else t
    return t.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _occ(root: str, expiry, is_call: bool, strike: float) -> str:
    e = pd.Timestamp(expiry)
    return f"{root}{e:%y%m%d}{'C' if is_call else 'P'}{int(round(strike * 1000)):08d}"
