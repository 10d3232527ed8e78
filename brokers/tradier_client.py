"""Tradier's REST API behind :class:`~strikebench.live.broker_api.LiveBroker`.

**The HTTP client.** The owners named ``tradier-python``; its 0.1.3 release cannot carry orders under pydantic 2
(its typed models raise ``ValidationError`` on real replies *after* the order is placed), sends POST parameters in
the query string and sets no timeout. Of it strikebench keeps only the authenticated ``requests.Session`` its
``TradierAPI`` builds (Bearer token and JSON ``Accept`` headers) and its endpoint constants; every request goes
through :meth:`TradierAPI.request` here: form-encoded bodies, a timeout on every call, tolerant parsing (a
one-element collection is a bare object, an empty one ``null`` or ``"null"``), and these rules:

* a timeout, a dropped connection, a 5xx or an unparsable reply -> :class:`BrokerUnavailable`. After a POST the
  outcome is UNKNOWN: the order is looked up by its tag before anything is sent again, never resent blindly
  (requests itself never retries: its adapters have ``max_retries=0``);
* 429, or a reply whose ``X-Ratelimit-Available`` is 0 -> wait until ``X-Ratelimit-Expiry`` (epoch ms; bounded by
  ``max_rate_wait``), then go on; a 429 was refused unprocessed, so the same request is sent again;
* 401 / 403 -> :class:`TradierAuthError`, one line naming the environment variable to fix;
* the token appears in no message, log line, journal row or report (every text taken from a reply is scrubbed).

**Orders.** Every order is tagged ``sb-<run hash>-<client id>-<hash>`` (Tradier tags take letters, digits and
dashes); the tag is written to the local state file *before* the POST, so after any doubt the order is found
by it in ``GET /orders?includeTags=true``. Fills are read from the legs' cumulative ``exec_quantity`` and
``avg_fill_price``: each observed increase becomes one fill with id ``tradier-<order id>-<cumulative qty>`` (the
same id whoever observes it, a running trader or a restarted one), its per-leg prices the increments' averages.

**Events.** Polling, not the account-events WebSocket: the WebSocket is not offered on the sandbox, delivers
nothing while the trader is down (a restart must poll the order list anyway), and one ``GET /orders`` per poll
carries every working order's full state; the runtime polls every bar. The observations become events in the
local state file (``tradier_state.sqlite`` in the account folder) with a cursor, which is what
:meth:`events` serves.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import sqlite3
import time
from pathlib import Path

import pandas as pd

from strikebench.calendar import NY
from strikebench.errors import StrikebenchError
from strikebench.live.broker_api import (
    EVENT_LOG_SCHEMA,
    BrokerAck,
    BrokerEvent,
    BrokerFill,
    BrokerOrder,
    BrokerUnavailable,
    LiveBroker,
    write_transaction,
)
from strikebench.options.contracts import OptionContract
from strikebench.options.orders import Leg, Order, OrderType, TimeInForce

__all__ = ["TradierAPI", "TradierAccount", "TradierAuthError", "TradierRefused", "as_list", "num", "order_form",
           "order_tag", "check_rows", "STATUS_MAP"]

ENDPOINTS = {"sandbox": "https://sandbox.tradier.com", "live": "https://api.tradier.com"}
try:  # the owners' named client: its endpoint constants, when it imports
    from tradier_python.models import BROKERAGE_ENDPOINT, SANDBOX_ENDPOINT

    ENDPOINTS = {"sandbox": SANDBOX_ENDPOINT.rstrip("/"), "live": BROKERAGE_ENDPOINT.rstrip("/")}
except Exception:  # noqa: BLE001 - a broken install of it costs nothing here
    pass

#: Tradier order status -> strikebench's (BROKER_STATUSES); unknown ones read as "submitted" (still in flight)
STATUS_MAP = {"pending": "submitted", "calculated": "submitted", "held": "submitted", "received": "submitted",
              "open": "accepted", "accepted_for_bidding": "accepted", "pending_cancel": "accepted",
              "pending_replace": "accepted", "partially_filled": "partially_filled", "filled": "filled",
              "canceled": "cancelled", "cancelled": "cancelled", "expired": "expired", "rejected": "rejected",
              "error": "rejected", "done_for_day": "expired"}
FINAL = ("filled", "cancelled", "rejected", "expired")


class TradierAuthError(StrikebenchError):
    """Tradier refused the credentials (401/403): the one line names the environment variable to fix."""

    exit_code = 6


class TradierRefused(StrikebenchError):
    """Tradier answered 400 (bad parameters) or an ``errors`` body: nothing was placed."""


# ------------------------------------------------------------------ parsing
def as_list(x) -> list:
    """Tradier's collections: a list, a bare object for one element, ``null``/``"null"``/missing for none."""
    if x is None or x == "null" or x == "":
        return []
    if isinstance(x, list):
        return x
    return [x]


def num(x) -> float | None:
    """A numeric field that may be null, missing, a string or NaN -> float or None."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _errors(payload) -> list[str]:
    """The messages of an ``{"errors": {"error": "..." | [...]}}`` body."""
    if not isinstance(payload, dict) or "errors" not in payload:
        return []
    e = payload["errors"]
    if isinstance(e, dict):
        e = e.get("error")
    return [str(x) for x in as_list(e)] or ["(no reason given)"]


def _ts(text) -> dt.datetime | None:
    if not text or text == "null":
        return None
    try:
        t = pd.Timestamp(text)
    except (ValueError, TypeError):
        return None
    return (t.tz_localize("UTC") if t.tzinfo is None else t).tz_convert(NY).to_pydatetime()


# ---------------------------------------------------------------------- HTTP
class TradierAPI:
    """Tradier REST over ``requests`` with timeouts, rate limits and tolerant parsing (see the module doc)."""

    def __init__(self, token: str, account: str, *, environment: str = "sandbox", base_url: str | None = None,
                 timeout: float = 10.0, max_rate_wait: float = 65.0, sleep=time.sleep, session=None):
        self.account, self.environment = account, environment
        self.base = (base_url or ENDPOINTS[environment]).rstrip("/")
        self.timeout, self.max_rate_wait, self._sleep = float(timeout), float(max_rate_wait), sleep
        self._token = token
        self.session = session if session is not None else self._session(token)
        self.rate: dict = {}  # the last reply's X-Ratelimit-* headers
        self._blocked_until = 0.0  # epoch seconds: the rate-limit window is used up until then
        self.calls: list[tuple[str, str]] = []  # (method, path) of every request sent (checks and tests read it)

    @staticmethod
    def _session(token: str):
        """The authenticated session of tradier-python's TradierAPI (its session layer is all strikebench uses)."""
        try:
            from tradier_python import TradierAPI as _Lib

            return _Lib(token).session
        except Exception:  # noqa: BLE001 - without it: the same two headers on a plain session
            import requests

            s = requests.Session()
            s.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json"})
            return s

    def scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def _where(self, method: str, path: str) -> str:
        return f"Tradier {self.environment} {method} {path.split('?')[0]}"

    def _wait_for_window(self) -> None:
        wait = self._blocked_until - time.time()
        if wait > 0:
            self._sleep(min(wait, self.max_rate_wait))

    def _note_rate(self, headers) -> None:
        rate = {k.lower()[len("x-ratelimit-"):]: v for k, v in headers.items() if k.lower().startswith("x-ratelimit-")}
        if not rate:
            return
        self.rate = rate
        avail, expiry = num(rate.get("available")), num(rate.get("expiry"))
        if avail is not None and avail <= 0 and expiry is not None:
            self._blocked_until = expiry / 1000.0

    def request(self, method: str, path: str, *, params: dict | None = None, data: dict | None = None,
                ok404: bool = False) -> dict | None:
        """One call; returns the JSON object (None for a 404 when ``ok404``). See the module doc for errors."""
        import requests

        where = self._where(method, path)
        waited = 0.0
        backoff = 1.0
        while True:
            self._wait_for_window()
            self.calls.append((method, path))
            try:
                resp = self.session.request(method, self.base + path, params=params, data=data,
                                            timeout=(min(5.0, self.timeout), self.timeout), allow_redirects=False)
            except requests.exceptions.Timeout:
                raise BrokerUnavailable(f"{where}: no answer within {self.timeout:g} s"
                                        + (" (outcome unknown)" if method != "GET" else "")) from None
            except requests.exceptions.RequestException as exc:
                raise BrokerUnavailable(f"{where}: {type(exc).__name__}"
                                        + (" (outcome unknown)" if method != "GET" else "")) from None
            self._note_rate(resp.headers)
            status = resp.status_code
            if status == 429:
                expiry = num(self.rate.get("expiry"))
                wait = (expiry / 1000.0 - time.time()) if expiry is not None else backoff
                wait = max(wait, 0.05)
                backoff = min(backoff * 2, 30.0)
                if waited + wait > self.max_rate_wait:
                    raise BrokerUnavailable(f"{where}: rate limited (HTTP 429) for more than "
                                            f"{self.max_rate_wait:g} s")
                self._sleep(wait)
                waited += wait
                continue  # refused unprocessed: the same request again
            break
        if status == 401:
            from strikebench.brokers.tradier import TOKEN_ENV

            raise TradierAuthError(f"Tradier {self.environment} rejected the access token (HTTP 401): set {TOKEN_ENV} "
                                   f"to a valid {self.environment} token")
        if status == 403:
            from strikebench.brokers.tradier import ACCOUNT_ENV, TOKEN_ENV

            raise TradierAuthError(f"Tradier {self.environment} refused {method} {path.split('?')[0]} (HTTP 403): "
                                   f"set {ACCOUNT_ENV} to an account this token may use (and {TOKEN_ENV} to a "
                                   f"token with trading and market-data permissions)")
        if status == 404 and ok404:
            return None
        if status >= 500:
            raise BrokerUnavailable(f"{where}: HTTP {status}" + (" (outcome unknown)" if method != "GET" else ""))
        try:
            payload = resp.json()
        except ValueError:
            if status == 200:
                raise BrokerUnavailable(f"{where}: the reply is not JSON"
                                        + (" (outcome unknown)" if method != "GET" else "")) from None
            payload = None
        if status == 400 or (status >= 400 and status != 404):
            text = "; ".join(_errors(payload)) if payload is not None else resp.text.strip()[:200]
            raise TradierRefused(self.scrub(f"{where}: HTTP {status}: {text or resp.reason}".replace("\n", " ")))
        if status == 404:
            raise TradierRefused(f"{where}: HTTP 404 (not found)")
        if not isinstance(payload, dict):
            raise BrokerUnavailable(f"{where}: the reply is not a JSON object"
                                    + (" (outcome unknown)" if method != "GET" else ""))
        return payload

    def get(self, path: str, **params) -> dict:
        return self.request("GET", path, params=params or None)

    # ------------------------------------------------------------ accounts
    @property
    def acct(self) -> str:
        return f"/v1/accounts/{self.account}"

    def profile(self) -> dict:
        return self.get("/v1/user/profile")

    def balances(self) -> dict:
        return self.get(f"{self.acct}/balances")

    def positions_raw(self) -> dict:
        return self.get(f"{self.acct}/positions")

    def orders_raw(self) -> list[dict]:
        p = self.get(f"{self.acct}/orders", includeTags="true")
        if "orders" not in p:
            raise BrokerUnavailable(f"Tradier {self.environment} GET {self.acct}/orders: no 'orders' in the reply")
        o = p["orders"]
        return [x for x in as_list(o.get("order") if isinstance(o, dict) else o) if isinstance(x, dict)]

    def order_raw(self, broker_id: str) -> dict | None:
        p = self.request("GET", f"{self.acct}/orders/{broker_id}", params={"includeTags": "true"}, ok404=True)
        if p is None:
            return None
        o = p.get("order")
        if not isinstance(o, dict):
            raise BrokerUnavailable(f"Tradier {self.environment} GET order {broker_id}: no order in the reply")
        return o

    # ------------------------------------------------------------ markets
    def clock(self) -> dict:
        return self.get("/v1/markets/clock").get("clock") or {}

    def calendar(self, month: int, year: int) -> list[dict]:
        c = self.get("/v1/markets/calendar", month=month, year=year).get("calendar") or {}
        days = c.get("days") if isinstance(c, dict) else None
        return [d for d in as_list(days.get("day") if isinstance(days, dict) else days) if isinstance(d, dict)]

    def expirations(self, symbol: str) -> list[dt.date]:
        e = self.get("/v1/markets/options/expirations", symbol=symbol, includeAllRoots="true").get("expirations")
        dates = as_list(e.get("date") if isinstance(e, dict) else e)
        out = []
        for d in dates:
            try:
                out.append(dt.date.fromisoformat(str(d)))
            except ValueError:
                continue
        return sorted(set(out))

    def chain(self, symbol: str, expiration: dt.date) -> list[dict]:
        o = self.get("/v1/markets/options/chains", symbol=symbol, expiration=str(expiration),
                     greeks="true").get("options")
        return [x for x in as_list(o.get("option") if isinstance(o, dict) else o) if isinstance(x, dict)]

    def quotes(self, symbols) -> list[dict]:
        q = self.request("POST", "/v1/markets/quotes", data={"symbols": ",".join(symbols), "greeks": "false"})
        q = q.get("quotes")
        return [x for x in as_list(q.get("quote") if isinstance(q, dict) else q) if isinstance(x, dict)]

    def timesales(self, symbol: str, start: str, end: str, interval: str = "1min") -> list[dict]:
        s = self.get("/v1/markets/timesales", symbol=symbol, interval=interval, start=start, end=end,
                     session_filter="open").get("series")
        return [x for x in as_list(s.get("data") if isinstance(s, dict) else s) if isinstance(x, dict)]

    def history(self, symbol: str, start: dt.date, end: dt.date) -> list[dict]:
        h = self.get("/v1/markets/history", symbol=symbol, interval="daily", start=str(start), end=str(end))
        h = h.get("history")
        return [x for x in as_list(h.get("day") if isinstance(h, dict) else h) if isinstance(x, dict)]


# --------------------------------------------------------------------- orders
_TAG_OK = re.compile(r"[^A-Za-z0-9-]")


def _h(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def run_prefix(run_tag: str) -> str:
    return f"sb-{_h(run_tag, 6)}-"


def order_tag(client_id: str, run_tag: str) -> str:
    """The Tradier tag of ``client_id`` (letters, digits, dashes, <= 255): ``sb-<run>-<id>-<hash of the id>``."""
    body = _TAG_OK.sub("-", client_id)[:200]
    return f"{run_prefix(run_tag)}{body}-{_h(client_id, 8)}"


def tag_suffix(client_id: str) -> str:
    return f"-{_TAG_OK.sub('-', client_id)[:200]}-{_h(client_id, 8)}"


def _price(x: float) -> str:
    return f"{abs(x):.2f}"


def order_form(order: Order, tag: str, *, duration: str | None = None, preview: bool = False) -> dict:
    """The form fields of a Tradier order for ``order`` (strikebench's sign: limit > 0 debit, < 0 credit)."""
    und = order.legs[0].contract.underlying
    form: dict = {"class": "multileg" if len(order.legs) > 1 else "option", "symbol": und,
                  "duration": duration or order.tif.value, "tag": tag}
    if order.order_type == OrderType.MARKET:
        form["type"] = "market"
    else:
        lim = round(float(order.limit_price), 2)
        if len(order.legs) == 1:  # a single option: a limit price per contract, the side says buy or sell
            form["type"] = "limit"
            form["price"] = _price(lim)
        elif lim > 0:
            form["type"], form["price"] = "debit", _price(lim)
        elif lim < 0:
            form["type"], form["price"] = "credit", _price(lim)
        else:
            form["type"] = "even"
    opens = "open" if order.opens else "close"
    if len(order.legs) == 1:
        leg = order.legs[0]
        form["option_symbol"] = leg.contract.occ_compact
        form["side"] = f"{'buy' if leg.ratio > 0 else 'sell'}_to_{opens}"
        form["quantity"] = str(abs(int(leg.ratio)) * int(order.quantity))
    else:
        for i, leg in enumerate(order.legs):
            form[f"option_symbol[{i}]"] = leg.contract.occ_compact
            form[f"side[{i}]"] = f"{'buy' if leg.ratio > 0 else 'sell'}_to_{opens}"
            form[f"quantity[{i}]"] = str(abs(int(leg.ratio)) * int(order.quantity))
    if preview:
        form["preview"] = "true"
    return form


_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    client_id  TEXT PRIMARY KEY,
    tag        TEXT NOT NULL UNIQUE,
    run_tag    TEXT NOT NULL,
    broker_id  TEXT,
    payload    TEXT NOT NULL,
    quantity   INTEGER NOT NULL,
    status     TEXT NOT NULL DEFAULT 'submitted',
    reason     TEXT NOT NULL DEFAULT '',
    legs_seen  TEXT NOT NULL DEFAULT '{}',
    filled     INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    placed_at  TEXT NOT NULL,
    posts      INTEGER NOT NULL DEFAULT 0
);
""" + EVENT_LOG_SCHEMA


def _iso(t) -> str:
    return pd.Timestamp(t).tz_convert(NY).isoformat() if pd.Timestamp(t).tzinfo else \
        pd.Timestamp(t).tz_localize(NY).isoformat()


class TradierAccount(LiveBroker):
    """A Tradier account as a :class:`LiveBroker`; its observations live in ``state_path`` (see the module doc)."""

    name = "tradier"

    def __init__(self, api: TradierAPI, *, state_path, commission=None, underlying: str = "SPX",
                 duration: str | None = None):
        self.api, self.commission, self.underlying, self.duration = api, commission, underlying, duration
        self.path = Path(state_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        for stmt in filter(str.strip, _SCHEMA.split(";")):
            self._db.execute(stmt)

    # ------------------------------------------------------------ plumbing
    def _tx(self):
        return write_transaction(self._db)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _row(self, client_id: str):
        return self._db.execute("SELECT * FROM orders WHERE client_id = ?", (client_id,)).fetchone()

    @staticmethod
    def _event(db, client_id, kind, at, *, status="", reason="", fill_id=None) -> None:
        event_id = f"{client_id}:{kind}:{status or fill_id}"
        db.execute("INSERT OR IGNORE INTO events(event_id, client_id, kind, status, at, reason, fill_id)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?)", (event_id, client_id, kind, status, _iso(at), reason, fill_id))

    @staticmethod
    def _order_of(row) -> Order:
        p = json.loads(row["payload"])
        return Order(client_id=row["client_id"], legs=tuple(Leg(OptionContract.from_occ(o), int(r))
                                                            for o, r in p["legs"]),
                     quantity=int(row["quantity"]), order_type=OrderType(p["order_type"]),
                     limit_price=p["limit_price"], tif=TimeInForce(p["tif"]), opens=bool(p["opens"]))

    # ------------------------------------------------------------- placing
    def place(self, order: Order, now, *, tag: str = "") -> BrokerAck:
        run_tag = tag or "default"
        row = self._row(order.client_id)
        if row is not None:
            found = self.lookup(order.client_id)  # known here: never sent twice without asking the broker first
            if found is not None:
                return BrokerAck(order.client_id, found.broker_id, found.status, duplicate=True, reason=found.reason)
        else:
            payload = {"legs": [[leg.contract.occ_compact, int(leg.ratio)] for leg in order.legs],
                       "order_type": order.order_type.value, "limit_price": order.limit_price,
                       "tif": order.tif.value, "opens": bool(order.opens)}
            with self._tx() as db:  # the tag is stored before the POST: after any doubt the order is found by it
                db.execute("INSERT INTO orders(client_id, tag, run_tag, payload, quantity, placed_at) VALUES"
                           " (?, ?, ?, ?, ?, ?)", (order.client_id, order_tag(order.client_id, run_tag), run_tag,
                                                   json.dumps(payload), int(order.quantity), _iso(now)))
            row = self._row(order.client_id)
        form = order_form(order, row["tag"], duration=self.duration)
        self._db.execute("UPDATE orders SET posts = posts + 1 WHERE client_id = ?", (order.client_id,))
        try:
            reply = self.api.request("POST", f"{self.api.acct}/orders", data=form)
        except TradierRefused as exc:
            return self._rejected(order.client_id, str(exc), now)
        errs = _errors(reply)
        o = reply.get("order") if isinstance(reply.get("order"), dict) else None
        if errs and (o is None or o.get("id") is None):
            return self._rejected(order.client_id, self.api.scrub("; ".join(errs)), now)
        if o is None or o.get("id") is None:
            raise BrokerUnavailable(f"Tradier {self.api.environment} POST order: no order id in the reply "
                                    f"(outcome unknown)")
        broker_id = str(o["id"]).split(".")[0]
        with self._tx() as db:
            db.execute("UPDATE orders SET broker_id = ? WHERE client_id = ?", (broker_id, order.client_id))
        if errs:  # an id and errors: placed, then refused (it reads back as rejected)
            self._observe(order.client_id, {"id": broker_id, "status": "rejected",
                                            "reason_description": "; ".join(errs)}, now)
        return BrokerAck(order.client_id, broker_id, "submitted")

    def _rejected(self, client_id: str, reason: str, at) -> BrokerAck:
        with self._tx() as db:
            db.execute("UPDATE orders SET status = 'rejected', reason = ? WHERE client_id = ?", (reason, client_id))
            self._event(db, client_id, "status", at, status="rejected", reason=reason)
        return BrokerAck(client_id, "", "rejected", reason=reason)

    def preview(self, order: Order, *, tag: str = "preview") -> dict:
        """``preview=true``: Tradier's cost, margin change and fees for ``order``; nothing is placed."""
        return preview_at(self.api, order, tag=tag, duration=self.duration)

    def modify(self, client_id: str, *, limit_price: float | None = None, duration: str | None = None) -> bool:
        """``PUT`` a working order's price (strikebench's sign) or duration; True when Tradier took it."""
        row = self._row(client_id)
        if row is None or not row["broker_id"] or row["status"] in FINAL:
            return False
        data: dict = {}
        if limit_price is not None:
            data["type"] = "debit" if limit_price > 0 else ("credit" if limit_price < 0 else "even")
            if limit_price:
                data["price"] = _price(limit_price)
        if duration is not None:
            data["duration"] = duration
        try:
            reply = self.api.request("PUT", f"{self.api.acct}/orders/{row['broker_id']}", data=data)
        except TradierRefused:
            return False
        return not _errors(reply)

    def cancel(self, client_id: str, now) -> bool:
        row = self._row(client_id)
        if row is None:
            return False
        if not row["broker_id"]:
            if self.lookup(client_id) is None:
                return False
            row = self._row(client_id)
        if row["status"] in FINAL:
            return False
        try:
            reply = self.api.request("DELETE", f"{self.api.acct}/orders/{row['broker_id']}")
        except TradierRefused:
            self.lookup(client_id)  # an order that finished meanwhile: its final state comes as events
            return False
        if _errors(reply):
            return False
        self._db.execute("UPDATE orders SET cancel_requested = 1 WHERE client_id = ?", (client_id,))
        return True

    # ----------------------------------------------------------- observing
    def _find_by_tag(self, row, orders: list[dict] | None = None) -> dict | None:
        orders = self.api.orders_raw() if orders is None else orders
        for o in orders:
            if o.get("tag") == row["tag"]:
                return o
        return None

    def lookup(self, client_id: str) -> BrokerOrder | None:
        row = self._row(client_id)
        if row is None:  # the local state was lost: find the order by the tag's client-id part
            suffix = tag_suffix(client_id)
            hit = next((o for o in self.api.orders_raw() if str(o.get("tag", "")).endswith(suffix)), None)
            if hit is None:
                return None
            self._adopt(client_id, hit)
            row = self._row(client_id)
        if row["broker_id"]:
            o = self.api.order_raw(row["broker_id"])
            if o is None:
                return None if row["status"] != "rejected" else self._broker_order(self._row(client_id))
        else:
            o = self._find_by_tag(row)
            if o is None:
                if row["status"] == "rejected":  # refused at the POST: the broker has no order, we have its answer
                    return self._broker_order(row)
                return None
            with self._tx() as db:
                db.execute("UPDATE orders SET broker_id = ? WHERE client_id = ?", (str(o.get("id")).split(".")[0],
                                                                                  client_id))
        self._observe(client_id, o, dt.datetime.now(dt.timezone.utc))
        return self._broker_order(self._row(client_id))

    def _adopt(self, client_id: str, o: dict) -> None:
        """A tagged order the local state does not know (the state file was lost): rebuild its row from Tradier."""
        legs = as_list(o.get("leg")) or [o]
        qty = int(num(o.get("quantity")) or 0)
        pairs = []
        for leg in legs:
            q = int(num(leg.get("quantity")) or 0)
            sign = 1 if str(leg.get("side", "")).startswith("buy") else -1
            pairs.append([str(leg.get("option_symbol")), sign * max(q // max(qty, 1), 1)])
        combo_qty = qty if len(legs) > 1 else 1
        typ = str(o.get("type", "market"))
        price = num(o.get("price"))
        limit = None if typ == "market" else (price if typ == "debit" else -(price or 0.0) if typ == "credit"
                                              else 0.0)
        side = str(legs[0].get("side", ""))
        payload = {"legs": pairs, "order_type": "market" if typ == "market" else "limit", "limit_price": limit,
                   "tif": "gtc" if o.get("duration") == "gtc" else "day", "opens": side.endswith("open")}
        tag = str(o.get("tag"))
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO orders(client_id, tag, run_tag, broker_id, payload, quantity,"
                       " placed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (client_id, tag, "", str(o.get("id")).split(".")[0], json.dumps(payload),
                        combo_qty if len(legs) > 1 else qty, _iso(dt.datetime.now(dt.timezone.utc))))

    def _observe(self, client_id: str, o: dict, now) -> None:
        """Turn Tradier's view of one order into fills and status events (idempotent)."""
        row = self._row(client_id)
        order = self._order_of(row)
        status = STATUS_MAP.get(str(o.get("status", "")).lower(), "submitted")
        reason = self.api.scrub(str(o.get("reason_description") or "")) if status == "rejected" else ""
        at = _ts(o.get("transaction_date")) or pd.Timestamp(now).tz_convert(NY).to_pydatetime()
        tr_legs = as_list(o.get("leg")) if len(order.legs) > 1 else [o]
        by_symbol = {str(x.get("option_symbol")): x for x in tr_legs if isinstance(x, dict)}
        seen = json.loads(row["legs_seen"])
        cum, avg = [], []
        for leg in order.legs:
            x = by_symbol.get(leg.contract.occ_compact, {})
            cum.append(int(round(num(x.get("exec_quantity")) or 0)))
            avg.append(num(x.get("avg_fill_price")) or 0.0)
        filled = min(c // abs(int(leg.ratio)) for c, leg in zip(cum, order.legs))
        filled = min(filled, int(row["quantity"]))
        with self._tx() as db:
            prev = int(db.execute("SELECT filled FROM orders WHERE client_id = ?", (client_id,)).fetchone()[0])
            if filled > prev:
                delta = filled - prev
                legs_px = []
                for k, leg in enumerate(order.legs):
                    sym = leg.contract.occ_compact
                    c0, a0 = seen.get(sym, [0, 0.0])
                    c1 = filled * abs(int(leg.ratio))  # the contracts of whole combos
                    v1 = avg[k] * cum[k] - (cum[k] - c1) * avg[k]  # value of c1 contracts at the average
                    inc = (v1 - a0 * c0) / (c1 - c0) if c1 > c0 else avg[k]
                    legs_px.append(round(inc, 4))
                    seen[sym] = [c1, (v1 / c1) if c1 else 0.0]
                net = round(sum(float(leg.ratio) * px for leg, px in zip(order.legs, legs_px)), 2)
                fees = float(self.commission.fees(order, delta)) if self.commission is not None else 0.0
                fill_id = f"tradier-{row['broker_id']}-{filled}"
                db.execute("INSERT OR IGNORE INTO fills(fill_id, client_id, at, quantity, net_price, leg_prices,"
                           " fees) VALUES (?, ?, ?, ?, ?, ?, ?)", (fill_id, client_id, _iso(at), delta, repr(net),
                                                                    json.dumps(legs_px), repr(fees)))
                self._event(db, client_id, "fill", at, fill_id=fill_id)
                db.execute("UPDATE orders SET filled = ?, legs_seen = ? WHERE client_id = ?",
                           (filled, json.dumps(seen), client_id))
            if status == "filled" and filled < int(row["quantity"]):
                status = "partially_filled"  # the legs say otherwise: trust the executions, look again later
            cancel_req = int(row["cancel_requested"]) or int(str(o.get("status")) == "pending_cancel")
            if status != row["status"] or reason != row["reason"]:
                if row["status"] not in FINAL:
                    db.execute("UPDATE orders SET status = ?, reason = ?, cancel_requested = ? WHERE client_id = ?",
                               (status, reason, cancel_req, client_id))
                    if status not in ("submitted", "partially_filled", "filled"):
                        self._event(db, client_id, "status", at, status=status, reason=reason)
                    elif status == "filled":
                        self._event(db, client_id, "status", at, status="filled")

    def _broker_order(self, row) -> BrokerOrder:
        fills = tuple(self._fill(r) for r in self._db.execute(
            "SELECT * FROM fills WHERE client_id = ? ORDER BY quantity, at", (row["client_id"],)))
        fills = tuple(sorted(fills, key=lambda f: int(f.fill_id.rsplit("-", 1)[1])))
        return BrokerOrder(client_id=row["client_id"], broker_id=row["broker_id"] or "", status=row["status"],
                           quantity=int(row["quantity"]), filled_quantity=sum(f.quantity for f in fills),
                           reason=row["reason"], fills=fills, cancel_requested=bool(row["cancel_requested"]),
                           tag=row["run_tag"])

    @staticmethod
    def _fill(r) -> BrokerFill:
        return BrokerFill(fill_id=r["fill_id"], client_id=r["client_id"],
                          at=pd.Timestamp(r["at"]).tz_convert(NY).to_pydatetime(), quantity=int(r["quantity"]),
                          net_price=float(r["net_price"]), leg_prices=tuple(float(x) for x in json.loads(r["leg_prices"])),
                          fees=float(r["fees"]))

    def poll(self) -> None:
        """One ``GET /orders``: every order of ours it lists is observed; working ones it omits are read one by one."""
        now = dt.datetime.now(dt.timezone.utc)
        working = self._db.execute("SELECT COUNT(*) FROM orders WHERE status NOT IN ('filled', 'cancelled',"
                                   " 'rejected', 'expired')").fetchone()[0]
        if not working:  # nothing of ours can change at the broker: no request (orders the journal does not know
            return       # are found by the runtime's reconciliation through orders(), at every start)
        listed = self.api.orders_raw()
        by_tag = {str(o.get("tag")): o for o in listed if o.get("tag")}
        for row in self._db.execute("SELECT * FROM orders WHERE status NOT IN ('filled', 'cancelled', 'rejected',"
                                    " 'expired')").fetchall():
            o = by_tag.get(row["tag"])
            if o is None and row["broker_id"]:
                o = self.api.order_raw(row["broker_id"])
            if o is None:
                continue
            if not row["broker_id"]:
                self._db.execute("UPDATE orders SET broker_id = ? WHERE client_id = ?",
                                 (str(o.get("id")).split(".")[0], row["client_id"]))
            self._observe(row["client_id"], o, now)

    def events(self, since: int = 0) -> list[BrokerEvent]:
        self.poll()
        out = []
        for r in self._db.execute("SELECT * FROM events WHERE seq > ? ORDER BY seq", (int(since),)).fetchall():
            fill = None
            if r["fill_id"]:
                fill = self._fill(self._db.execute("SELECT * FROM fills WHERE fill_id = ?", (r["fill_id"],)).fetchone())
            out.append(BrokerEvent(seq=r["seq"], event_id=r["event_id"], client_id=r["client_id"], kind=r["kind"],
                                   status=r["status"], at=pd.Timestamp(r["at"]).tz_convert(NY).to_pydatetime(),
                                   reason=r["reason"], fill=fill))
        return out

    def orders(self, tag: str = "") -> list[BrokerOrder]:
        """Every order at Tradier tagged for run ``tag`` (an order the local state does not know keeps its tag as
        client id: the runtime then refuses new risk, as for any order the journal does not know)."""
        prefix = run_prefix(tag or "default")
        out = []
        for o in self.api.orders_raw():
            t = str(o.get("tag") or "")
            if not t.startswith(prefix):
                continue
            row = self._db.execute("SELECT * FROM orders WHERE tag = ?", (t,)).fetchone()
            if row is None:
                out.append(BrokerOrder(client_id=t, broker_id=str(o.get("id")), tag=tag,
                                       status=STATUS_MAP.get(str(o.get("status")), "submitted"),
                                       quantity=int(num(o.get("quantity")) or 0),
                                       filled_quantity=int(num(o.get("exec_quantity")) or 0)))
            else:
                out.append(self._broker_order(row))
        return out

    def positions(self) -> dict[str, int] | None:
        p = self.api.positions_raw()
        if "positions" not in p:
            return None  # not reported is never flat
        pos = p["positions"]
        out: dict[str, int] = {}
        for x in as_list(pos.get("position") if isinstance(pos, dict) else pos):
            if not isinstance(x, dict) or x.get("symbol") is None:
                continue
            q = num(x.get("quantity"))
            if q is None:
                return None  # a position without a quantity: not a report to reconcile against
            out[str(x["symbol"])] = out.get(str(x["symbol"]), 0) + int(round(q))
        return out

    def balances(self) -> dict | None:
        return balances(self.api)


def preview_at(api: TradierAPI, order: Order, *, tag: str = "preview", duration: str | None = None) -> dict:
    """``preview=true``: Tradier's cost, margin change and fees for ``order``; nothing is placed."""
    reply = api.request("POST", f"{api.acct}/orders",
                        data=order_form(order, order_tag(order.client_id, tag), duration=duration, preview=True))
    errs = _errors(reply)
    o = reply.get("order") if isinstance(reply.get("order"), dict) else {}
    return {"ok": not errs and o.get("status", "ok") == "ok", "errors": errs, **o}


def balances(api: TradierAPI) -> dict | None:
    """Cash, equity and option buying power (under exactly one of ``margin``, ``cash``, ``pdt``), or None."""
    b = api.balances().get("balances")
    if not isinstance(b, dict):
        return None
    cash = num(b.get("total_cash"))
    if cash is None:
        return None
    out = {"cash": cash, "equity": num(b.get("total_equity")), "account_type": b.get("account_type")}
    for kind in ("margin", "cash", "pdt"):
        sub = b.get(kind)
        if isinstance(sub, dict):
            bp = num(sub.get("option_buying_power"))
            if bp is None:
                bp = num(sub.get("cash_available"))
            out["option_buying_power"] = bp
    return out


# ---------------------------------------------------------------------- check
def check_rows(plugin, resolved, *, preview: bool = False) -> list:
    """``strikebench broker check`` for Tradier: reads only (a preview order only with ``preview``)."""
    from strikebench.api import CheckRow
    from strikebench.brokers.tradier import ACCOUNT_ENV, TOKEN_ENV
    from strikebench.calendar import MarketCalendar

    p = plugin.params
    api = plugin.api()
    env = p.environment + (" (REAL MONEY)" if p.environment == "live" else "")
    rows = []

    def fail(item, exc, fix=""):
        rows.append(CheckRow(item, False, api.scrub(str(exc)), fix))

    try:
        prof = api.profile().get("profile") or {}
        accts = [a for a in as_list(prof.get("account")) if isinstance(a, dict)]
        rows.append(CheckRow("credentials", True, f"token accepted by Tradier {env} ({api.base})"))
        numbers = [str(a.get("account_number")) for a in accts]
        if p.account in numbers:
            a = accts[numbers.index(p.account)]
            rows.append(CheckRow("account", True, f"{p.account}: {a.get('type', '?')} account, status "
                                                  f"{a.get('status', '?')}, option level {a.get('option_level', '?')}"))
        else:
            rows.append(CheckRow("account", False, f"{p.account} is not an account of this token "
                                                   f"(it has {', '.join(numbers) or 'none'})", f"set {ACCOUNT_ENV}"))
    except TradierAuthError as exc:
        return [CheckRow("credentials", False, str(exc), f"set {TOKEN_ENV}")]
    except (BrokerUnavailable, TradierRefused) as exc:
        return [CheckRow("credentials", False, str(exc), f"check the network and {TOKEN_ENV}")]
    try:  # (a check writes nothing: no state file)
        bal = balances(api)
        bp = None if bal is None else bal.get("option_buying_power")
        rows.append(CheckRow("option buying power", bp is not None and bp > 0,
                             "not reported" if bp is None else f"{bp:,.2f} ({bal.get('account_type')} account, "
                                                               f"cash {bal['cash']:,.2f})"))
    except (BrokerUnavailable, TradierRefused, TradierAuthError) as exc:
        fail("option buying power", exc)
    try:
        c = api.clock()
        cal = MarketCalendar()
        day = dt.date.fromisoformat(str(c.get("date")))
        ours = cal.is_session(day)
        theirs = str(c.get("state")) != "closed" or "closed" not in str(c.get("description", "")).lower()
        agree = True
        tr_days = {d.get("date"): d.get("status") for d in api.calendar(day.month, day.year)}
        diff = [d for d, st in tr_days.items() if d and (st == "open") != cal.is_session(dt.date.fromisoformat(d))]
        agree = not diff
        rows.append(CheckRow("market clock", agree, f"{day}: {c.get('state')} ({c.get('description', '')}); the "
                                                    f"exchange calendar says {'a session' if ours else 'no session'}"
                             + ("" if agree else f"; Tradier's calendar differs on {', '.join(diff[:3])}")))
        del theirs
    except (BrokerUnavailable, TradierRefused, ValueError) as exc:
        fail("market clock", exc)
    und = _underlying(resolved)
    snap_rows = None
    try:
        exps = api.expirations(und)
        if not exps:
            rows.append(CheckRow("data permissions", False, f"no {und} option expirations returned"))
        else:
            snap_rows = api.chain(und, exps[0])
            greeks = sum(1 for x in snap_rows if isinstance(x.get("greeks"), dict))
            rows.append(CheckRow("data permissions", bool(snap_rows),
                                 f"{und}: {len(exps)} expirations; {exps[0]} chain {len(snap_rows)} options, "
                                 f"{greeks} with greeks"))
    except (BrokerUnavailable, TradierRefused, TradierAuthError) as exc:
        fail("data permissions", exc)
    if not preview:
        rows.append(CheckRow("preview", None, "not asked (--preview previews a multileg order; nothing is placed)"))
    elif not snap_rows:
        rows.append(CheckRow("preview", False, "no chain to build a preview order from"))
    else:
        try:
            order = _preview_order(snap_rows)
            r = preview_at(api, order)
            legs = " / ".join(f"{'+' if leg.ratio > 0 else ''}{leg.ratio} {leg.contract.occ_compact}"
                              for leg in order.legs)
            rows.append(CheckRow("preview", bool(r["ok"]),
                                 f"{legs} credit {abs(order.limit_price):.2f}: "
                                 + ("; ".join(r["errors"]) if r["errors"] else
                                    f"cost {r.get('cost')}, margin change {r.get('margin_change')}, fees "
                                    f"{r.get('fees')}, commission {r.get('commission')} (not placed)")))
        except (BrokerUnavailable, TradierRefused, TradierAuthError, ValueError) as exc:
            fail("preview", exc)
    return rows


def _preview_order(chain: list[dict]) -> Order:
    """A 1-lot put credit vertical about 5 % out of the money from a chain's rows (for a preview only)."""
    puts = []
    for x in chain:
        if str(x.get("option_type")) != "put":
            continue
        try:
            c = OptionContract.from_occ(str(x.get("symbol")))
        except Exception:  # noqa: BLE001
            continue
        puts.append(c)
    if len(puts) < 2:
        raise ValueError("the chain has fewer than two puts")
    puts.sort(key=lambda c: c.strike)
    mid = puts[len(puts) // 2].strike
    k = max(1, min(range(len(puts)), key=lambda j: abs(puts[j].strike - 0.97 * mid)))
    short, long = puts[k], puts[k - 1]
    return Order(client_id="preview", legs=(Leg(short, -1), Leg(long, 1)), quantity=1, order_type=OrderType.LIMIT,
                 limit_price=-0.05, tif=TimeInForce.DAY, opens=True)


def _underlying(resolved) -> str:
    from strikebench.brokers.paper import _underlying as u

    return u(resolved)
