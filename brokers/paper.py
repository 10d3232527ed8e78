"""The ``paper`` broker: the backtest fill models behind the live order life-cycle.

It keeps its whole state (orders by client id, fills, events with ids, positions, cash,
its own clock) in its own SQLite file, outside the trader's journal, as a real broker
keeps its state outside the trading process: a trader killed and restarted meets a
broker that remembers every order it received and every fill it made.

The broker is simulated, so it has no thread of its own: it advances to a time when the
runtime asks (:meth:`PaperAccount.sync`, called by every ``place``/``cancel`` and before
``events``), never backwards. At time ``t`` it sees the legs' quotes of the last
completed minute bar (the bar labelled ``t - 2 min`` .. ``t - 1 min`` closes at ``t - 1
min`` ... i.e. the same quotes the engine used for the bar it has just processed).

Life-cycle: ``place`` -> submitted; after ``latency_seconds`` -> accepted, or rejected
with probability ``rejection_probability`` (a rejection after the acknowledgement, as
real brokers do); while working, once per quote minute the configured fill model is
asked for a price; a fill takes all the remaining quantity, or with probability
``partial_fill_probability`` part of it; a cancel takes effect after the latency;
DAY orders expire at the session's close. Random choices are a hash of (seed, client
id, step), so they are the same after a restart.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from strikebench.api import BrokerPlugin, PluginParams
from strikebench.calendar import NY, MarketCalendar
from strikebench.live.broker_api import (
    EVENT_LOG_SCHEMA,
    BrokerAck,
    BrokerEvent,
    BrokerFill,
    BrokerOrder,
    BrokerSettlement,
    BrokerUnavailable,
    LiveBroker,
    write_transaction,
)
from strikebench.options.contracts import OptionContract, last_trade_time, settlement_time
from strikebench.options.fills import allocate_legs
from strikebench.options.orders import Leg, Order, OrderType, TimeInForce

__all__ = ["PaperBroker", "PaperParams", "PaperAccount"]

WORKING = ("submitted", "accepted", "partially_filled")
FINAL = ("filled", "cancelled", "rejected", "expired")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    broker_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id       TEXT NOT NULL UNIQUE,
    tag             TEXT NOT NULL DEFAULT '',
    payload         TEXT NOT NULL,
    quantity        INTEGER NOT NULL,
    status          TEXT NOT NULL,
    filled_quantity INTEGER NOT NULL DEFAULT 0,
    reason          TEXT NOT NULL DEFAULT '',
    placed_at       TEXT NOT NULL,
    active_at       TEXT NOT NULL,
    cancel_at       TEXT,
    last_try        TEXT
);
CREATE TABLE IF NOT EXISTS place_calls (
    call_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL,
    at        TEXT NOT NULL,
    pid       INTEGER NOT NULL,
    duplicate INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (occ TEXT PRIMARY KEY, quantity INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS settlements (
    occ      TEXT NOT NULL,
    at       TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    value    TEXT NOT NULL,
    cash     TEXT NOT NULL,
    PRIMARY KEY (occ, at)
);
""" + EVENT_LOG_SCHEMA


class PaperParams(PluginParams):
    initial_cash: float = Field(100_000.0, gt=0, le=1e12, description="starting cash, dollars (at most a trillion)")
    state_file: str = Field("paper_broker.sqlite",
                            description="the broker's own SQLite state; relative paths are in the run folder")
    latency_seconds: float = Field(1.0, ge=0, le=600, description="delay before an order (or a cancel) takes effect")
    partial_fill_probability: float = Field(0.0, ge=0, le=1,
                                            description="chance a fill takes only part of the remaining quantity")
    rejection_probability: float = Field(0.0, ge=0, le=1, description="chance an order is rejected after its ack")
    timeout_probability: float = Field(0.0, ge=0, le=1,
                                       description="chance a place() call raises after the broker took the order "
                                                   "(tests the look-up-before-resend path)")
    report_positions: bool = Field(True, description="False: positions() answers None (a broker that did not report)")
    seed: int = Field(7, description="seed of the broker's random choices")


class PaperBroker(BrokerPlugin):
    """Simulated live broker: fill model behind the live life-cycle, latency, partial fills, rejections; own SQLite state."""

    name = "paper"
    Params = PaperParams
    live = True

    def check(self, *, resolved, preview: bool = False) -> list:
        """The rows of ``strikebench broker check`` for the simulated broker: no credentials, the simulated cash,
        and the configured market's sessions and chains cross-checked with the exchange calendar."""
        from strikebench.api import CheckRow

        p = self.params
        rows = [CheckRow("credentials", None, "none needed: the paper broker is simulated by strikebench"),
                CheckRow("account", True, f"paper account with its own state ({p.state_file} in the account folder);"
                                          f" latency {p.latency_seconds:g} s, partial fills "
                                          f"{p.partial_fill_probability:.0%}, rejections {p.rejection_probability:.0%}"),
                CheckRow("option buying power", True, f"{p.initial_cash:,.2f} (simulated cash)")]
        rows += market_check_rows(resolved)
        rows.append(CheckRow("preview", None, "paper fills are simulated by the configured fill model; nothing to "
                                              "preview" if preview else "not asked (--preview)"))
        return rows

    def connect(self, *, run_dir, market, fill_model, commission, underlying: str = "SPX") -> "PaperAccount":
        path = Path(self.params.state_file)
        if not path.is_absolute():
            path = Path(run_dir) / path
        return PaperAccount(path, market=market, fill_model=fill_model, commission=commission,
                            params=self.params, underlying=underlying)


def market_check_rows(resolved) -> list:
    """``broker check`` rows of the configured market: its sessions against the exchange calendar, and a chain."""
    from strikebench.api import CheckRow
    from strikebench.errors import StrikebenchError

    source = resolved.config.data.source
    try:
        market = resolved.data.build().open()
        sessions = market.sessions()
    except StrikebenchError as exc:
        return [CheckRow("market clock", False, f"data source {source}: {exc}")]
    if not len(sessions):
        return [CheckRow("market clock", False, f"data source {source}: no sessions")]
    cal = MarketCalendar()
    first, last = sessions[0].date(), sessions[-1].date()
    exch = {d.date() for d in cal.sessions(first, last)}
    extra = sorted({d.date() for d in sessions} - exch)
    rows = [CheckRow("market clock", not extra, f"data source {source}: {len(sessions)} session(s) {first} .. {last}"
                     + (f"; not exchange sessions: {', '.join(map(str, extra[:3]))}" if extra else
                        "; each one a session of the exchange calendar"))]
    und = _underlying(resolved)
    try:
        at = pd.Timestamp(cal.session_open(first)).tz_convert(NY) + pd.Timedelta(minutes=30)
        snap = market.snapshot(und, at)
        n = len(snap.expiries) if hasattr(snap, "expiries") else 0
        rows.append(CheckRow("data permissions", n > 0, f"{und} chain at {at:%Y-%m-%d %H:%M}: {n} expiries"))
    except Exception as exc:  # noqa: BLE001 - a market that cannot answer is what the check reports
        rows.append(CheckRow("data permissions", False, f"{und} chain: {type(exc).__name__}: {exc}"))
    return rows


def _underlying(resolved) -> str:
    for sp in resolved.strategies:
        u = getattr(sp.params, "underlying", None)
        if isinstance(u, str) and u:
            return u
    return "SPX"


def _u(seed: int, *parts) -> float:
    """A uniform number in [0, 1) from (seed, parts): the same after any restart."""
    h = hashlib.sha256("|".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0 ** 64


def _ts(text: str | None) -> pd.Timestamp | None:
    return None if text is None else pd.Timestamp(text).tz_convert(NY)


def _iso(t) -> str:
    ts = pd.Timestamp(t)
    return (ts.tz_localize(NY) if ts.tzinfo is None else ts.tz_convert(NY)).isoformat()


def _order_from_payload(client_id: str, payload: dict) -> Order:
    legs = tuple(Leg(OptionContract.from_occ(occ), int(r)) for occ, r in payload["legs"])
    return Order(client_id=client_id, legs=legs, quantity=int(payload["quantity"]),
                 order_type=OrderType(payload["order_type"]), limit_price=payload["limit_price"],
                 tif=TimeInForce(payload["tif"]), opens=bool(payload["opens"]))


class PaperAccount(LiveBroker):
    """One paper account in one SQLite file (see the module doc)."""

    name = "paper"

    def __init__(self, path, *, market, fill_model, commission, params: PaperParams, underlying: str = "SPX"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.market, self.fill_model, self.commission, self.params = market, fill_model, commission, params
        self.underlying = underlying
        self.calendar = MarketCalendar()
        self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._tx() as db:
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                db.execute(stmt)
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('cash_cents', ?)",
                       (str(int(round(params.initial_cash * 100))),))
        self._quotes: dict = {}
        self._bar_index: dict = {}

    # -------------------------------------------------------------- plumbing
    def _tx(self):
        return write_transaction(self._db)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _meta(self, db, key, default=None):
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def _set_meta(self, db, key, value) -> None:
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, str(value)))

    def _event(self, db, client_id, kind, at, *, status="", reason="", fill_id=None, key="") -> None:
        event_id = f"{client_id}:{kind}:{status or fill_id}{key}"
        db.execute("INSERT OR IGNORE INTO events(event_id, client_id, kind, status, at, reason, fill_id)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?)", (event_id, client_id, kind, status, _iso(at), reason, fill_id))

    def clock(self) -> pd.Timestamp | None:
        return _ts(self._meta(self._db, "clock"))

    # ------------------------------------------------------------ interface
    def place(self, order: Order, now, *, tag: str = "") -> BrokerAck:
        now = pd.Timestamp(now)
        payload = {"legs": [[leg.contract.occ_compact, int(leg.ratio)] for leg in order.legs],
                   "quantity": int(order.quantity), "order_type": order.order_type.value,
                   "limit_price": order.limit_price, "tif": order.tif.value, "opens": bool(order.opens)}
        with self._tx() as db:
            row = db.execute("SELECT broker_id, status, reason FROM orders WHERE client_id = ?",
                             (order.client_id,)).fetchone()
            db.execute("INSERT INTO place_calls(client_id, at, pid, duplicate) VALUES (?, ?, ?, ?)",
                       (order.client_id, _iso(now), os.getpid(), int(row is not None)))
            if row is not None:
                return BrokerAck(order.client_id, str(row["broker_id"]), row["status"], duplicate=True,
                                 reason=row["reason"])
            active = now + pd.Timedelta(seconds=self.params.latency_seconds)
            cur = db.execute("INSERT INTO orders(client_id, tag, payload, quantity, status, placed_at, active_at)"
                             " VALUES (?, ?, ?, ?, 'submitted', ?, ?)",
                             (order.client_id, tag, json.dumps(payload), int(order.quantity), _iso(now),
                              _iso(active)))
            broker_id = str(cur.lastrowid)
        if self.params.timeout_probability and _u(self.params.seed, order.client_id, "timeout") < \
                self.params.timeout_probability:
            raise BrokerUnavailable(f"paper broker: no answer to place({order.client_id}) (simulated timeout)")
        self.sync(now)
        found = self.lookup(order.client_id)
        return BrokerAck(order.client_id, broker_id, found.status if found else "submitted")

    def lookup(self, client_id: str) -> BrokerOrder | None:
        row = self._db.execute("SELECT * FROM orders WHERE client_id = ?", (client_id,)).fetchone()
        if row is None:
            return None
        return self._broker_order(row)

    def _broker_order(self, row) -> BrokerOrder:
        fills = tuple(self._fill(r) for r in self._db.execute(
            "SELECT * FROM fills WHERE client_id = ? ORDER BY at, fill_id", (row["client_id"],)))
        return BrokerOrder(client_id=row["client_id"], broker_id=str(row["broker_id"]), status=row["status"],
                           quantity=row["quantity"], filled_quantity=row["filled_quantity"], reason=row["reason"],
                           fills=fills, cancel_requested=row["cancel_at"] is not None, tag=row["tag"])

    @staticmethod
    def _fill(r) -> BrokerFill:
        return BrokerFill(fill_id=r["fill_id"], client_id=r["client_id"], at=_ts(r["at"]).to_pydatetime(),
                          quantity=int(r["quantity"]), net_price=float(r["net_price"]),
                          leg_prices=tuple(float(x) for x in json.loads(r["leg_prices"])), fees=float(r["fees"]))

    def orders(self, tag: str = "") -> list[BrokerOrder]:
        rows = self._db.execute("SELECT * FROM orders WHERE tag = ? ORDER BY broker_id", (tag,)).fetchall()
        return [self._broker_order(r) for r in rows]

    def cancel(self, client_id: str, now) -> bool:
        now = pd.Timestamp(now)
        with self._tx() as db:
            row = db.execute("SELECT status, cancel_at FROM orders WHERE client_id = ?", (client_id,)).fetchone()
            if row is None or row["status"] not in WORKING:
                return False
            if row["cancel_at"] is None:
                db.execute("UPDATE orders SET cancel_at = ? WHERE client_id = ?",
                           (_iso(now + pd.Timedelta(seconds=self.params.latency_seconds)), client_id))
        self.sync(now)
        return True

    def events(self, since: int = 0) -> list[BrokerEvent]:
        out = []
        for r in self._db.execute("SELECT * FROM events WHERE seq > ? ORDER BY seq", (int(since),)):
            fill = None
            if r["fill_id"]:
                f = self._db.execute("SELECT * FROM fills WHERE fill_id = ?", (r["fill_id"],)).fetchone()
                fill = self._fill(f)
            out.append(BrokerEvent(seq=r["seq"], event_id=r["event_id"], client_id=r["client_id"], kind=r["kind"],
                                   status=r["status"], at=_ts(r["at"]).to_pydatetime(), reason=r["reason"],
                                   fill=fill))
        return out

    def positions(self) -> dict[str, int] | None:
        if not self.params.report_positions:
            return None
        return {r["occ"]: int(r["quantity"]) for r in self._db.execute("SELECT * FROM positions WHERE quantity != 0")}

    def balances(self) -> dict | None:
        cents = int(self._meta(self._db, "cash_cents", "0"))
        return {"cash": cents / 100.0}

    def settlements(self) -> list[BrokerSettlement]:
        return [BrokerSettlement(occ=r["occ"], quantity=int(r["quantity"]), value=float(r["value"]),
                                 cash=int(r["cash"]) / 100.0, at=_ts(r["at"]).to_pydatetime())
                for r in self._db.execute("SELECT * FROM settlements ORDER BY at, occ")]

    def place_calls(self) -> list[dict]:
        return [dict(r) for r in self._db.execute("SELECT * FROM place_calls ORDER BY call_id")]

    # ---------------------------------------------------------------- time
    def sync(self, now) -> None:
        """Advance the simulated broker to ``now`` (never backwards): acks, rejections, cancels, fills, expiry."""
        now = pd.Timestamp(now)
        now = now.tz_localize(NY) if now.tzinfo is None else now.tz_convert(NY)
        with self._tx() as db:
            clock = _ts(self._meta(db, "clock"))
            if clock is not None and now < clock:
                now = clock
            rows = db.execute("SELECT * FROM orders WHERE status IN ('submitted', 'accepted', 'partially_filled')"
                              " ORDER BY broker_id").fetchall()
            for row in rows:
                self._advance_order(db, row, now)
            self._settle_positions(db, now)
            self._set_meta(db, "clock", now.isoformat())

    def _advance_order(self, db, row, now: pd.Timestamp) -> None:
        cid = row["client_id"]
        payload = json.loads(row["payload"])
        order = _order_from_payload(cid, payload)
        placed = _ts(row["placed_at"])
        status = row["status"]

        def set_status(new, reason="", at=now):
            db.execute("UPDATE orders SET status = ?, reason = ? WHERE client_id = ?", (new, reason, cid))
            self._event(db, cid, "status", at, status=new, reason=reason)

        active = _ts(row["active_at"])
        if status == "submitted":
            if now < active:
                return
            for leg in order.legs:
                if active >= last_trade_time(leg.contract):
                    return set_status("rejected", f"{leg.contract.occ_compact} no longer trades", active)
            if self.params.rejection_probability and _u(self.params.seed, cid, "reject") < \
                    self.params.rejection_probability:
                return set_status("rejected", "rejected by the paper broker (simulated: rejection_probability)",
                                  active)
            set_status("accepted", "", active)
            status = "accepted"
        close = self._session_close(placed)
        cancel_at = _ts(row["cancel_at"])
        # fill chances, minute by minute, up to now (before a cancel or the close takes effect)
        stop = min(t for t in (now, cancel_at, close) if t is not None)
        filled = row["filled_quantity"]
        after = None if row["last_try"] is None else int(row["last_try"])
        for minute, i in self._quote_minutes(placed, active, after, stop):
            if filled >= order.quantity:
                break
            db.execute("UPDATE orders SET last_try = ? WHERE client_id = ?", (str(i), cid))
            bid, ask = self._bid_ask(order, placed, i)
            price = self.fill_model.fill_price(order, bid, ask)
            if price is None:
                continue
            remaining = order.quantity - filled
            n_fill = db.execute("SELECT COUNT(*) FROM fills WHERE client_id = ?", (cid,)).fetchone()[0]
            qty = remaining
            if remaining > 1 and self.params.partial_fill_probability and \
                    _u(self.params.seed, cid, "partial", n_fill) < self.params.partial_fill_probability:
                qty = 1 + int(_u(self.params.seed, cid, "size", n_fill) * (remaining - 1))
            at = minute
            self._book_fill(db, order, f"{cid}-P{n_fill + 1}", at, qty, float(price), bid, ask)
            filled += qty
            db.execute("UPDATE orders SET filled_quantity = ? WHERE client_id = ?", (filled, cid))
            if filled >= order.quantity:
                set_status("filled", "", at)
            elif status != "partially_filled":
                set_status("partially_filled", "", at)
                status = "partially_filled"
        if filled >= order.quantity:
            return
        if cancel_at is not None and now >= cancel_at:
            return set_status("cancelled", "cancelled on request", cancel_at)
        if order.tif == TimeInForce.DAY and close is not None and now >= close:
            return set_status("expired", "day order not filled by the close", close)

    def _book_fill(self, db, order: Order, fill_id, at, qty, price, bid, ask) -> None:
        fees = float(self.commission.fees(order, qty))
        legs = allocate_legs(order.legs, bid, ask, price, as_of=at)  # inside each leg's quote, exact sum (docs/fills.md)
        db.execute("INSERT INTO fills(fill_id, client_id, at, quantity, net_price, leg_prices, fees)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (fill_id, order.client_id, _iso(at), int(qty), repr(float(price)),
                    json.dumps([float(x) for x in legs]), repr(fees)))
        self._event(db, order.client_id, "fill", at, fill_id=fill_id)
        for leg in order.legs:
            occ = leg.contract.occ_compact
            db.execute("INSERT INTO positions(occ, quantity) VALUES (?, ?) ON CONFLICT(occ) DO UPDATE SET"
                       " quantity = quantity + excluded.quantity", (occ, int(leg.ratio) * int(qty)))
        cash = int(self._meta(db, "cash_cents", "0"))
        cash += -int(round(price * 100)) * order.multiplier * int(qty) - int(round(fees * 100))
        self._set_meta(db, "cash_cents", cash)

    def _settle_positions(self, db, now: pd.Timestamp) -> None:
        for r in db.execute("SELECT occ, quantity FROM positions WHERE quantity != 0").fetchall():
            c = OptionContract.from_occ(r["occ"])
            if now < settlement_time(c):
                continue
            try:
                value = float(self.market.settlement_value(c))
            except Exception:  # the market cannot settle it (yet): keep the position
                continue
            intrinsic = max(value - c.strike, 0.0) if c.is_call else max(c.strike - value, 0.0)
            # exact to the cent on prints finer than a cent (XSP = SPX / 10: 0.004 x 100 = $0.40, not 0)
            booked = int(round(intrinsic * c.multiplier * r["quantity"] * 100))
            cash = int(self._meta(db, "cash_cents", "0")) + booked
            self._set_meta(db, "cash_cents", cash)
            db.execute("INSERT OR REPLACE INTO settlements(occ, at, quantity, value, cash) VALUES (?, ?, ?, ?, ?)",
                       (r["occ"], _iso(settlement_time(c)), int(r["quantity"]), repr(value), str(booked)))
            db.execute("UPDATE positions SET quantity = 0 WHERE occ = ?", (r["occ"],))

    # -------------------------------------------------------------- quotes
    def _day_index(self, day: dt.date) -> pd.DatetimeIndex:
        idx = self._bar_index.get(day)
        if idx is None:
            bars = self.market.bars(self.underlying).index.tz_convert(NY)
            idx = bars[bars.normalize().date == day] if len(bars) else bars
            self._bar_index[day] = idx
        return idx

    def _session_close(self, placed: pd.Timestamp) -> pd.Timestamp | None:
        idx = self._day_index(placed.date())
        return idx[-1] + pd.Timedelta(minutes=1) if len(idx) else None

    def _quote_minutes(self, placed: pd.Timestamp, active: pd.Timestamp, after: int | None, stop: pd.Timestamp):
        """(time, bar index) of each fill chance: the bar in force at ``active`` (bar i's quotes are in force from
        its close, label + 1 min), then each later bar closing by ``stop``; bars up to ``after`` were tried."""
        idx = self._day_index(placed.date())
        if not len(idx) or stop < active:
            return []
        closes = (idx + pd.Timedelta(minutes=1)).asi8
        first = int(np.searchsorted(closes, active.value, side="right")) - 1
        last = int(np.searchsorted(closes, stop.value, side="right")) - 1
        lo = max(first, -1 if after is None else after + 1, 0)
        return [(max(pd.Timestamp(closes[i], tz="UTC").tz_convert(NY), active), i) for i in range(lo, last + 1)]

    def _bid_ask(self, order: Order, placed: pd.Timestamp, i: int):
        contracts = tuple(leg.contract for leg in order.legs)
        key = (contracts, placed.date())
        q = self._quotes.get(key)
        if q is None:
            q = self.market.leg_quotes(list(contracts), placed.date())
            self._quotes[key] = q
        i = min(i, len(q.times) - 1)
        return q.bid[i], q.ask[i]

