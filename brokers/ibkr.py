"""The ``ibkr`` broker: trade the account through TWS or IB Gateway (ib_async), BAG combo orders.

``broker: {name: ibkr, host: 127.0.0.1, port: 7497, client_id: 17, account: ${IB_ACCOUNT}}``.

How it keeps the live-broker rules (strikebench.live.broker_api, docs/live.md "Interactive Brokers"):

* **One order per client id.** ``orderRef`` = strikebench's client id. Before sending, the order is written to
  the plugin's own SQLite file (``ibkr_orders.sqlite`` in the account folder) with the IB order id it will use;
  a second ``place`` of a client id IB already holds is answered ``duplicate`` and sends nothing, and a resend
  of a client id IB does not show reuses the same IB order id, which TWS treats as a modification of that
  order, never as a second one.
* **Events exactly once.** Everything IB says about our orders (order status, executions, commission reports,
  errors) is mirrored into that file, keyed by IB's ids (execId, order id), so a duplicated or replayed message
  (reqExecutions after a reconnect) changes nothing; each change becomes one event with a stable ``event_id``
  and a sequence number that survives restarts.
* **Fills.** A combo fills as one execution per leg plus one for the BAG, each with a commission report; a
  strikebench fill is made when the BAG execution, the leg executions covering it and their commission
  reports are all in (strikebench.brokers.ibkr_contracts.assemble_fills). A final status (Filled, Cancelled)
  is released only after the fills before it.
* **Connection.** Calls are synchronous (ib_async's event loop runs inside each call, in the caller's thread).
  A dropped socket (TWS's nightly restart, a network blip) is noticed on the next call; reconnecting is tried
  at once, then with a doubling back-off (1 s .. ``reconnect_max_seconds``), and a call made while it is down
  raises :class:`BrokerUnavailable` (the runtime looks orders up by client id before it would ever resend). On
  reconnect ib_async resyncs open orders, completed orders, executions and positions; the mirror takes them in.
* **Errors** come back as one line naming the code: 326 (client id in use), 502 (cannot connect to TWS),
  1100/1101/1102 (TWS lost / restored its own connection), 201 (order rejected), 202 (cancelled), 10147/10148.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import sqlite3
import time
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field

from strikebench.api import BrokerPlugin, PluginParams
from strikebench.brokers.ibkr_contracts import (
    LIVE_PORTS,
    MARKET_DATA_TYPES,
    ExecRecord,
    assemble_fills,
    combo_legs,
    map_status,
    occ_from_ib,
    option_fields,
    order_fields,
)
from strikebench.calendar import NY
from strikebench.errors import StrikebenchError
from strikebench.live.broker_api import (EVENT_LOG_SCHEMA, BrokerAck, BrokerEvent, BrokerFill, BrokerOrder,
                                         BrokerUnavailable, LiveBroker)

__all__ = ["IBKRBroker", "IBKRParams", "IBKRAccount", "ORDERS_FILE"]

ORDERS_FILE = "ibkr_orders.sqlite"
FINAL = ("filled", "cancelled", "rejected", "expired")
_log = logging.getLogger("strikebench.ibkr")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    client_id   TEXT PRIMARY KEY,
    order_id    INTEGER NOT NULL,
    perm_id     INTEGER NOT NULL DEFAULT 0,
    tag         TEXT NOT NULL DEFAULT '',
    legs        TEXT NOT NULL,             -- [[conId, signed ratio, occ], ...] in the order's leg order
    quantity    INTEGER NOT NULL,
    status      TEXT NOT NULL,             -- strikebench status, as last released
    ib_status   TEXT NOT NULL DEFAULT '',
    acked       INTEGER NOT NULL DEFAULT 0, -- IB has acknowledged it (openOrder / status / execution seen)
    reason      TEXT NOT NULL DEFAULT '',
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    placed_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS execs (
    exec_id    TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL,
    sec_type   TEXT NOT NULL,
    con_id     INTEGER NOT NULL,
    side       TEXT NOT NULL,
    shares     INTEGER NOT NULL,
    price      TEXT NOT NULL,
    at         TEXT NOT NULL,
    commission TEXT
);
CREATE TABLE IF NOT EXISTS contracts (occ TEXT PRIMARY KEY, con_id INTEGER NOT NULL);
""" + EVENT_LOG_SCHEMA


class IBKRParams(PluginParams):
    host: str = Field("127.0.0.1", min_length=1, description="TWS / IB Gateway host")
    port: int = Field(7497, ge=1, le=65535, description="API port: 7497 TWS paper, 4002 Gateway paper; the live "
                                                        "ports 7496 / 4001 need `--live`")
    client_id: int = Field(17, ge=0, le=2**31 - 1, description="API client id (unique per connection to TWS)")
    account: str = Field("", description="account code (DU... for paper); empty: the only managed account")
    initial_cash: float = Field(100_000.0, gt=0, le=1e12, description="the journal's starting cash, dollars")
    market_data_type: Literal["live", "frozen", "delayed", "delayed_frozen"] = Field(
        "live", description="reqMarketDataType: live, frozen (last quotes after the close), delayed, delayed_frozen")
    timeout_seconds: float = Field(5.0, gt=0, le=120, description="connect and acknowledgement timeout")
    reconnect_max_seconds: float = Field(60.0, ge=1, le=3600, description="longest wait between reconnect tries")
    state_file: str = Field(ORDERS_FILE, description="the plugin's order mirror; relative paths are in the account "
                                                     "folder")


class IBKRBroker(BrokerPlugin):
    """Interactive Brokers through TWS or IB Gateway: BAG combo orders, fills per leg and per BAG, reconnects."""

    name = "ibkr"
    Params = IBKRParams
    live = True

    def trades_real_money(self) -> bool:
        return int(self.params.port) in LIVE_PORTS

    def connect(self, *, run_dir, market=None, fill_model=None, commission=None, underlying: str = "SPX"):
        path = Path(self.params.state_file)
        if not path.is_absolute():
            path = Path(run_dir) / path
        return IBKRAccount(self.params, path)

    def check(self, *, resolved=None, preview: bool = False):
        from strikebench.brokers.ibkr_check import check_rows

        return check_rows(self.params, resolved=resolved, preview=preview)


def _iso(t) -> str:
    return pd.Timestamp(t).tz_convert(NY).isoformat() if pd.Timestamp(t).tzinfo else \
        pd.Timestamp(t).tz_localize("UTC").tz_convert(NY).isoformat()


def _ts(text: str):
    return pd.Timestamp(text).tz_convert(NY).to_pydatetime()


class IBSession:
    """One ib_async connection with the client id's rules: one-line errors, back-off reconnects, market data type."""

    def __init__(self, params: IBKRParams, *, on_connect=None):
        from ib_async import IB

        self.p = params
        # ib_async logs every TWS error itself; the plugin reports them as one line each (a user's own logging
        # configuration still sees ib_async's records: only Python's last-resort stderr printer is kept out)
        logging.getLogger("ib_async").addHandler(logging.NullHandler())
        self.ib = IB()
        self.ib.RequestTimeout = float(params.timeout_seconds)
        self.errors: list[tuple[int, int, str]] = []  # (reqId, code, text), newest last
        self.ib.errorEvent += self._on_error
        self.on_connect = on_connect
        self._next_try = 0.0
        self._backoff = 0.0
        self.connects = 0
        self.account = params.account
        self.offline: str | None = None  # set between IB 1100 and 1101/1102

    def _on_error(self, req_id, code, text, contract=None):
        self.errors.append((int(req_id), int(code), str(text)))
        del self.errors[:-200]
        if int(code) == 1100:  # TWS lost its own connection to IB's servers (the socket to TWS is fine)
            self.offline = f"IB {code}: {text}"
        elif int(code) in (1101, 1102):  # restored (1101: data lost, resubscribe; 1102: data kept)
            self.offline = None

    @property
    def where(self) -> str:
        return f"TWS/IB Gateway at {self.p.host}:{self.p.port} (client id {self.p.client_id})"

    def connect(self, *, first: bool = False) -> None:
        from ib_async.ib import StartupFetch

        self.errors.clear()
        self.offline = None
        fetch = StartupFetch.POSITIONS | StartupFetch.ORDERS_OPEN | StartupFetch.ORDERS_COMPLETE | \
            StartupFetch.EXECUTIONS
        try:
            self.ib.connect(self.p.host, int(self.p.port), clientId=int(self.p.client_id),
                            timeout=float(self.p.timeout_seconds), account=self.p.account, fetchFields=fetch,
                            raiseSyncErrors=True)  # a resync that timed out is no connection (positions unknown)
        except (ConnectionRefusedError, OSError, TimeoutError, asyncio.TimeoutError, ConnectionError) as exc:
            codes = {c for _, c, _ in self.errors}
            self._fail()
            if 326 in codes:
                msg = (f"{self.where}: client id {self.p.client_id} is already in use (IB error 326); another "
                       f"program or trader holds it: set broker.client_id to a free one")
                if first:
                    raise StrikebenchError(msg) from None
                raise BrokerUnavailable(msg) from None
            what = "refused the connection" if isinstance(exc, ConnectionRefusedError) else \
                f"did not answer ({type(exc).__name__} {exc})".replace(" )", ")")
            raise BrokerUnavailable(f"{self.where} {what}: is it running, logged in, with the API enabled on that "
                                    f"port?") from None
        accounts = self.ib.managedAccounts()
        if self.p.account and self.p.account not in accounts:
            self.ib.disconnect()
            raise StrikebenchError(f"{self.where}: account {self.p.account!r} is not managed by this login "
                                   f"(it manages {', '.join(accounts) or 'none'})")
        self.account = self.p.account or (accounts[0] if len(accounts) == 1 else "")
        self.ib.reqMarketDataType(MARKET_DATA_TYPES[self.p.market_data_type])
        self._backoff, self._next_try = 0.0, 0.0
        self.connects += 1
        if self.on_connect is not None:
            self.on_connect()

    def _fail(self) -> None:
        try:
            self.ib.disconnect()
        except Exception:  # noqa: BLE001
            pass
        self._backoff = min(max(1.0, self._backoff * 2), float(self.p.reconnect_max_seconds))
        self._next_try = time.monotonic() + self._backoff

    def ensure(self) -> None:
        """Connected, or raise BrokerUnavailable (reconnecting at once, then with the back-off)."""
        if self.ib.isConnected():
            return
        if time.monotonic() < self._next_try:
            raise BrokerUnavailable(f"{self.where}: disconnected; next reconnect try in "
                                    f"{self._next_try - time.monotonic():.0f} s")
        _log.warning("%s: disconnected; reconnecting", self.where)
        self.connect()

    def pump(self, seconds: float = 0.0) -> None:
        """Let ib_async read what TWS sent (its loop runs for ``seconds``)."""
        try:
            self.ib.sleep(seconds)
        except Exception as exc:  # noqa: BLE001 - a socket error inside the loop
            raise BrokerUnavailable(f"{self.where}: {type(exc).__name__} {exc}") from None
        if not self.ib.isConnected():  # the socket went: the next call reconnects at once
            try:
                self.ib.disconnect()
            except Exception:  # noqa: BLE001
                pass
            raise BrokerUnavailable(f"{self.where}: connection lost")

    def close(self) -> None:
        try:
            self.ib.disconnect()
        except Exception:  # noqa: BLE001
            pass


class IBKRAccount(LiveBroker):
    """:class:`LiveBroker` over TWS: the order mirror (SQLite) fed from ib_async's state after every call."""

    name = "ibkr"

    def __init__(self, params: IBKRParams, path: Path):
        self.p = params
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30)
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StrikebenchError(f"{self.path}: not the ibkr plugin's order file ({exc})") from None
        self.db.row_factory = sqlite3.Row
        self.conids: dict[str, int] = {r["occ"]: int(r["con_id"]) for r in self.db.execute("SELECT * FROM contracts")}
        self._clock = None
        self._seen: dict[str, bool] = {}  # execId -> its commission report was in, when mirrored
        self._n_err = 0
        self.s = IBSession(params, on_connect=self._on_connect)
        self.s.connect(first=True)

    # ------------------------------------------------------------------ plumbing
    def _now(self) -> pd.Timestamp:
        """The time stamped on status events: the runtime's clock as last given to sync(), else the wall clock."""
        return self._clock if self._clock is not None else pd.Timestamp.now(tz=NY)

    def sync(self, now) -> None:
        """A real broker runs on its own; the runtime's time is kept for the events' time stamps."""
        self._clock = pd.Timestamp(now)

    def _on_connect(self) -> None:
        if self.s.connects > 1:
            _log.warning("%s: reconnected; open orders, executions and positions resynced", self.s.where)
        self._ingest()

    def _sync(self, seconds: float = 0.0) -> None:
        self.s.ensure()
        self.s.pump(seconds)
        self._ingest()

    def _error_for(self, order_id: int) -> tuple[int, str] | None:
        for rid, code, text in reversed(self.s.errors):
            if rid == order_id and code not in (399, 2104, 2106, 2158):
                return code, text
        return None

    def _trades_by_ref(self) -> dict:
        """orderRef -> the ib_async Trade TWS has acknowledged (a client-side PendingSubmit copy is not TWS's)."""
        out = {}
        for t in self.s.ib.trades():
            ref = t.order.orderRef
            if ref and (t.order.permId or t.orderStatus.status not in ("PendingSubmit", "") or t.fills):
                # a live trade (with an order id) wins over its completed-order copy
                if ref not in out or (t.order.orderId and not out[ref].order.orderId):
                    out[ref] = t
        return out

    def _event(self, client_id, kind, at, *, status="", reason="", fill_id=None, key="") -> None:
        eid = f"{client_id}:{kind}:{key or status or fill_id}"
        self.db.execute("INSERT OR IGNORE INTO events(event_id, client_id, kind, status, at, reason, fill_id)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)", (eid, client_id, kind, status, _iso(at), reason, fill_id))

    def _ingest(self) -> None:
        """Mirror ib_async's trades and fills into the order file; make the events (each once)."""
        ib = self.s.ib
        rows = {r["client_id"]: r for r in self.db.execute("SELECT * FROM orders")}
        trades = self._trades_by_ref()
        now = self._now()
        n_err = len(self.s.errors)
        fresh = [f for f in ib.fills() if f.execution.orderRef in rows and self._seen.get(f.execution.execId) !=
                 (f.commissionReport is not None and f.commissionReport.execId == f.execution.execId)]
        todo = {cid for cid, row in rows.items() if cid in trades and (
            trades[cid].orderStatus.status != row["ib_status"] or not row["acked"]
            or (row["status"] not in FINAL and n_err != self._n_err))}
        todo |= {f.execution.orderRef for f in fresh}
        if not todo:
            return
        self._n_err = n_err
        with self.db:
            self.db.execute("BEGIN")
            for f in fresh:
                ex = f.execution
                cid = ex.orderRef
                rep = f.commissionReport
                known = rep is not None and rep.execId == ex.execId
                self._seen[ex.execId] = known
                t = ex.time if isinstance(ex.time, dt.datetime) else now
                self.db.execute(
                    "INSERT INTO execs(exec_id, client_id, sec_type, con_id, side, shares, price, at, commission)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(exec_id) DO UPDATE SET commission ="
                    " COALESCE(execs.commission, excluded.commission)",
                    (ex.execId, cid, f.contract.secType, int(f.contract.conId or 0), ex.side, int(round(ex.shares)),
                     repr(float(ex.price)), _iso(t), repr(float(rep.commission)) if known else None))
                if not rows[cid]["acked"]:
                    self.db.execute("UPDATE orders SET acked = 1 WHERE client_id = ?", (cid,))
            for cid in todo:
                row = self.db.execute("SELECT * FROM orders WHERE client_id = ?", (cid,)).fetchone()
                tr = trades.get(cid)
                legs = json.loads(row["legs"])
                execs = [ExecRecord(r["exec_id"], r["sec_type"], int(r["con_id"]), r["side"], int(r["shares"]),
                                    float(r["price"]), _ts(r["at"]),
                                    None if r["commission"] is None else float(r["commission"]))
                         for r in self.db.execute("SELECT * FROM execs WHERE client_id = ? ORDER BY rowid", (cid,))]
                have = {r[0] for r in self.db.execute("SELECT fill_id FROM fills WHERE client_id = ?", (cid,))}
                fills = assemble_fills([(int(c), int(r)) for c, r, _ in legs], execs) if execs else []
                for af in fills:
                    if af.fill_id in have:
                        continue
                    self.db.execute("INSERT INTO fills(fill_id, client_id, at, quantity, net_price, leg_prices, fees)"
                                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                                    (af.fill_id, cid, _iso(af.at), int(af.quantity), repr(af.net_price),
                                     json.dumps(list(af.leg_prices)), repr(af.fees)))
                    self._event(cid, "fill", af.at, fill_id=af.fill_id)
                filled = sum(af.quantity for af in fills)
                used = {x for af in fills for x in af.exec_ids}
                pending = any(e.exec_id not in used for e in execs)
                if tr is None:
                    continue
                err = self._error_for(int(row["order_id"])) if tr.order.orderId else None
                ib_status = tr.orderStatus.status
                acked = row["acked"] or ib_status not in ("PendingSubmit", "") or bool(tr.order.permId)
                try:
                    status = map_status(ib_status, filled=filled, quantity=int(row["quantity"]),
                                        error_code=err[0] if err else None)
                except ValueError:
                    status = row["status"]
                if ib_status == "Filled" and filled < int(row["quantity"]):
                    status = "partially_filled" if filled else row["status"]
                if status == "partially_filled" and not filled:
                    status = "accepted"
                if status == "cancelled" and err and err[0] != 202 and row["status"] == "submitted":
                    status = "rejected"  # ib_async marks an order TWS refused (110, 103, ...) Cancelled
                reason = ""
                if status in ("rejected", "cancelled") and err:
                    reason = f"IB {err[0]}: {err[1]}"
                if status in FINAL and pending:
                    status = row["status"]  # the fills first
                if row["status"] in FINAL or status == row["status"] or status == "submitted":
                    if acked != bool(row["acked"]) or ib_status != row["ib_status"]:
                        self.db.execute("UPDATE orders SET acked = ?, ib_status = ?, perm_id = ? WHERE client_id = ?",
                                        (int(bool(acked)), ib_status, int(tr.order.permId or 0), cid))
                    continue
                self.db.execute("UPDATE orders SET status = ?, ib_status = ?, acked = ?, reason = ?, perm_id = ?"
                                " WHERE client_id = ?", (status, ib_status, int(bool(acked)), reason,
                                                         int(tr.order.permId or 0), cid))
                self._event(cid, "status", now, status=status, reason=reason)

    # ------------------------------------------------------------------ contracts
    def qualify(self, contracts) -> dict:
        """OptionContract -> conId, asked of IB once per contract (cached in the order file)."""
        from ib_async import Contract

        todo = [c for c in contracts if c.occ_compact not in self.conids]
        if todo:
            self.s.ensure()
            ibcs = [Contract(**option_fields(c)) for c in todo]
            try:
                got = self.s.ib.qualifyContracts(*ibcs)
            except (ConnectionError, OSError, asyncio.TimeoutError, TimeoutError) as exc:
                raise BrokerUnavailable(f"{self.s.where}: qualifying contracts: {type(exc).__name__} {exc}") from None
            for c, ibc in zip(todo, ibcs):
                if not ibc.conId:
                    raise StrikebenchError(f"IB does not know {c.occ_compact} ({option_fields(c)['tradingClass']} "
                                           f"{c.expiry} {c.strike:g} {c.right}): not qualified")
                self.conids[c.occ_compact] = int(ibc.conId)
                self.db.execute("INSERT OR REPLACE INTO contracts(occ, con_id) VALUES (?, ?)",
                                (c.occ_compact, int(ibc.conId)))
            del got
        return {c: self.conids[c.occ_compact] for c in contracts}

    def ib_order(self, order):
        """(ib Contract, ib Order) for a strikebench order: a BAG of qualified legs, or the single option."""
        from ib_async import ComboLeg, Contract
        from ib_async import Order as IBOrder

        legs = combo_legs(order)
        ids = self.qualify([c for c, _, _ in legs])
        fields = order_fields(order, account=self.s.account)
        if len(legs) == 1:
            c = legs[0][0]
            contract = Contract(conId=ids[c], **option_fields(c))
        else:
            spec = option_fields(legs[0][0])
            contract = Contract(secType="BAG", symbol=spec["symbol"], exchange=spec["exchange"], currency="USD",
                                comboLegs=[ComboLeg(conId=ids[c], ratio=r, action=a, exchange=spec["exchange"])
                                           for c, a, r in legs])
        return contract, IBOrder(**fields)

    # ------------------------------------------------------------------ LiveBroker
    def place(self, order, now, *, tag: str = "") -> BrokerAck:
        self._sync()
        cid = order.client_id
        if self.s.offline and self.db.execute("SELECT 1 FROM orders WHERE client_id = ? AND acked = 1",
                                              (cid,)).fetchone() is None:
            raise BrokerUnavailable(f"{self.s.where}: TWS has lost its connection to IB ({self.s.offline}); "
                                    f"{cid} not sent")
        row = self.db.execute("SELECT * FROM orders WHERE client_id = ?", (cid,)).fetchone()
        tr = self._trades_by_ref().get(cid)
        if tr is not None or (row is not None and row["acked"]):
            b = self._order(self.db.execute("SELECT * FROM orders WHERE client_id = ?", (cid,)).fetchone()) \
                if row is not None else None
            return BrokerAck(cid, str(row["order_id"] if row is not None else tr.order.orderId),
                             b.status if b else "accepted", duplicate=True)
        contract, ib_order = self.ib_order(order)
        if row is None:
            order_id = int(self.s.ib.client.getReqId())
            legs = [[self.conids[leg.contract.occ_compact], int(leg.ratio), leg.contract.occ_compact]
                    for leg in order.legs]
            self.db.execute("INSERT INTO orders(client_id, order_id, tag, legs, quantity, status, placed_at)"
                            " VALUES (?, ?, ?, ?, ?, 'submitted', ?)",
                            (cid, order_id, tag, json.dumps(legs), int(order.quantity), _iso(now)))
            self._event(cid, "status", now, status="submitted")
        else:
            order_id = int(row["order_id"])  # resent under the same IB id: TWS can only modify, never duplicate
        ib_order.orderId = order_id
        try:
            trade = self.s.ib.placeOrder(contract, ib_order)
        except (ConnectionError, OSError) as exc:
            raise BrokerUnavailable(f"{self.s.where}: placing {cid}: {exc}") from None
        deadline = time.monotonic() + float(self.p.timeout_seconds)
        while trade.orderStatus.status in ("PendingSubmit", "") and self._error_for(order_id) is None:
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"{self.s.where}: no acknowledgement of {cid} (IB order {order_id}) within "
                                        f"{self.p.timeout_seconds:g} s; its fate is unknown until looked up")
            self.s.pump(0.02)
        self._ingest()
        b = self._order(self.db.execute("SELECT * FROM orders WHERE client_id = ?", (cid,)).fetchone())
        err = self._error_for(order_id)
        return BrokerAck(cid, str(order_id), b.status, duplicate=False,
                         reason=b.reason or (f"IB {err[0]}: {err[1]}" if err else ""))

    def modify(self, client_id: str, limit_price: float, now) -> bool:
        """A new limit for a working order: the same IB order id sent again (TWS modifies it in place)."""
        from strikebench.options.orders import Leg, Order, OrderType, TimeInForce
        from strikebench.options.contracts import OptionContract

        self._sync()
        row = self.db.execute("SELECT * FROM orders WHERE client_id = ?", (client_id,)).fetchone()
        tr = self._trades_by_ref().get(client_id)
        if row is None or tr is None or row["status"] in FINAL or not tr.order.orderId:
            return False
        legs = tuple(Leg(OptionContract.from_occ(occ), int(r)) for _, r, occ in json.loads(row["legs"]))
        order = Order(client_id=client_id, legs=legs, quantity=int(row["quantity"]), order_type=OrderType.LIMIT,
                      limit_price=float(limit_price), tif=TimeInForce(tr.order.tif.lower()) if tr.order.tif.lower()
                      in ("day", "gtc") else TimeInForce.DAY)
        contract, ib_order = self.ib_order(order)
        ib_order.orderId = int(row["order_id"])
        try:
            self.s.ib.placeOrder(contract, ib_order)
        except (ConnectionError, OSError) as exc:
            raise BrokerUnavailable(f"{self.s.where}: modifying {client_id}: {exc}") from None
        self.s.pump(0.0)
        self._ingest()
        return True

    def _order(self, row) -> BrokerOrder:
        fills = tuple(BrokerFill(fill_id=f["fill_id"], client_id=f["client_id"], at=_ts(f["at"]),
                                 quantity=int(f["quantity"]), net_price=float(f["net_price"]),
                                 leg_prices=tuple(float(x) for x in json.loads(f["leg_prices"])),
                                 fees=float(f["fees"]))
                      for f in self.db.execute("SELECT * FROM fills WHERE client_id = ? ORDER BY rowid",
                                               (row["client_id"],)))
        return BrokerOrder(client_id=row["client_id"], broker_id=str(row["order_id"]), status=row["status"],
                           quantity=int(row["quantity"]), filled_quantity=sum(f.quantity for f in fills),
                           reason=row["reason"], fills=fills, cancel_requested=bool(row["cancel_requested"]),
                           tag=row["tag"])

    def lookup(self, client_id: str) -> BrokerOrder | None:
        self._sync()
        row = self.db.execute("SELECT * FROM orders WHERE client_id = ?", (client_id,)).fetchone()
        if row is None:
            tr = self._trades_by_ref().get(client_id)
            if tr is None:
                return None
            return BrokerOrder(client_id=client_id, broker_id=str(tr.order.orderId or tr.order.permId),
                               status="accepted", quantity=int(tr.order.totalQuantity), filled_quantity=0)
        if not row["acked"]:
            return None  # written before sending, never seen by IB: it never arrived
        return self._order(row)

    def orders(self, tag: str = "") -> list[BrokerOrder]:
        self._sync()
        out = [self._order(r) for r in self.db.execute("SELECT * FROM orders WHERE tag = ? AND acked = 1 ORDER BY"
                                                        " rowid", (tag,))]
        known = {r[0] for r in self.db.execute("SELECT client_id FROM orders")}
        for ref, tr in self._trades_by_ref().items():  # our client id's orders the mirror never wrote (lost file)
            if ref not in known and tr.order.clientId == int(self.p.client_id):
                out.append(BrokerOrder(client_id=ref, broker_id=str(tr.order.orderId), status="accepted",
                                       quantity=int(tr.order.totalQuantity), filled_quantity=0, tag=tag))
        return out

    def cancel(self, client_id: str, now) -> bool:
        self._sync()
        row = self.db.execute("SELECT * FROM orders WHERE client_id = ?", (client_id,)).fetchone()
        tr = self._trades_by_ref().get(client_id)
        if row is None or tr is None or row["status"] in FINAL:
            return False
        if tr.orderStatus.status in ("Filled", "Cancelled", "ApiCancelled", "Inactive"):
            return False
        self.db.execute("UPDATE orders SET cancel_requested = 1 WHERE client_id = ?", (client_id,))
        try:
            if tr.order.orderId:
                self.s.ib.cancelOrder(tr.order)
            else:  # a working order from before a restart, known by permId only: cancel by its id at TWS
                return False
        except (ConnectionError, OSError) as exc:
            raise BrokerUnavailable(f"{self.s.where}: cancelling {client_id}: {exc}") from None
        self.s.pump(0.0)
        self._ingest()
        return True

    def events(self, since: int = 0) -> list[BrokerEvent]:
        self._sync()
        out = []
        for r in self.db.execute("SELECT e.*, f.at AS f_at, f.quantity, f.net_price, f.leg_prices, f.fees FROM "
                                 "events e LEFT JOIN fills f ON f.fill_id = e.fill_id WHERE e.seq > ? ORDER BY e.seq",
                                 (int(since),)):
            fill = None
            if r["kind"] == "fill":
                fill = BrokerFill(fill_id=r["fill_id"], client_id=r["client_id"], at=_ts(r["f_at"]),
                                  quantity=int(r["quantity"]), net_price=float(r["net_price"]),
                                  leg_prices=tuple(float(x) for x in json.loads(r["leg_prices"])),
                                  fees=float(r["fees"]))
            out.append(BrokerEvent(seq=int(r["seq"]), event_id=r["event_id"], client_id=r["client_id"],
                                   kind=r["kind"], status=r["status"], at=_ts(r["at"]), reason=r["reason"],
                                   fill=fill))
        return out

    def positions(self) -> dict[str, int] | None:
        self._sync()
        out: dict[str, int] = {}
        for pos in self.s.ib.positions(self.s.account):
            c = pos.contract
            oc = occ_from_ib(c.secType, c.symbol, c.lastTradeDateOrContractMonth, c.strike, c.right, c.tradingClass)
            if oc is not None and pos.position:
                out[oc.occ_compact] = out.get(oc.occ_compact, 0) + int(round(pos.position))
        return out

    def balances(self) -> dict | None:
        self.s.ensure()
        try:
            values = self.s.ib.accountSummary(self.s.account)
        except (ConnectionError, OSError, asyncio.TimeoutError, TimeoutError) as exc:
            raise BrokerUnavailable(f"{self.s.where}: account summary: {exc}") from None
        tags = {v.tag: v.value for v in values if v.currency in ("USD", "")}
        if "TotalCashValue" not in tags:
            return None
        out = {"cash": float(tags["TotalCashValue"])}
        for tag, key in (("NetLiquidation", "net_liquidation"), ("BuyingPower", "buying_power"),
                         ("AvailableFunds", "available_funds")):
            if tag in tags and math.isfinite(float(tags[tag])):
                out[key] = float(tags[tag])
        return out

    def close(self) -> None:
        self.s.close()
        try:
            self.db.close()
        except sqlite3.Error:
            pass
