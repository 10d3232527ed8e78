"""The live runtime: the backtest's Engine on a live clock, with a live broker behind an adapter.

One loop (:meth:`LiveRuntime.run`): wait on the clock for each minute bar's close, poll the
broker, step the engine (strategies manage trades and decide exactly as in a backtest),
poll again, checkpoint. Orders go through :class:`LiveBrokerAdapter` -- the engine's
broker in live mode -- whose router journals an order (status ``submitted``, with its
deterministic client id) *before* sending it, sends it, and after any doubt looks it up
at the broker by that id instead of sending again. Broker events are applied once
(fills by fill id, statuses only forward). At start-up a resumed run rebuilds its
portfolio and orders from the journal, reconciles them with the broker, and re-runs the
bar it was in when it stopped; see docs/live.md for every rule.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import sqlite3
from pathlib import Path

import pandas as pd

from strikebench.api import RunInfo
from strikebench.calendar import NY
from strikebench.engine.broker import OptionsBroker
from strikebench.journal import JOURNAL_FILE, Journal, iso_time
from strikebench.journal_schema import HEAD_REVISION, sqlite_ddl
from strikebench.live.broker_api import BrokerUnavailable, LiveBroker
from strikebench.live.guards import GuardConfig, Guards
from strikebench.options.contracts import OptionContract
from strikebench.options.orders import Fill, Leg, Order, OrderError, OrderStatus, OrderType, TimeInForce

__all__ = ["LiveRuntime", "LiveBrokerAdapter", "LiveState", "LIVE_FILE", "live_journal_url"]

LIVE_FILE = "live.json"  # launch arguments of a paper run (to resume / flatten it)
PID_FILE = "paper.pid"
KILL_FILE = "KILL"
FLATTEN_FILE = "FLATTEN"

_RANK = {OrderStatus.NEW: 0, OrderStatus.SUBMITTED: 1, OrderStatus.ACCEPTED: 2, OrderStatus.PARTIALLY_FILLED: 3}


class LiveState:
    """The runtime's own rows in the journal database: checkpoint, switches, and a log of what it did.

    ``url`` is the run's journal (the folder's ``journal.sqlite`` or the config's ``journal.url``, PostgreSQL
    included): the tables ``live_state`` and ``live_log`` are part of the journal's schema
    (strikebench.journal_schema, revision 0002). Every call is its own transaction."""

    def __init__(self, url, run_id: str):
        from strikebench.journal_db import POSTGRES, backend_of, connect, replace_sql, revision

        self.run_id = run_id
        text = os.fspath(url)
        self._db = connect(text)
        if backend_of(text) == POSTGRES:
            if revision(self._db) != HEAD_REVISION:  # the run's journal writer migrates first; a database made
                from strikebench.journal_admin import upgrade_postgres  # elsewhere is brought to head here

                upgrade_postgres(text)
        else:
            for stmt in sqlite_ddl(("live_state", "live_log", "account_sessions")):  # an older paper journal's
                self._db.execute(stmt)
        self._set_sql = replace_sql(self._db, "live_state", ("run_id", "key", "value"), ("run_id", "key"))

    def get(self, key: str, default=None):
        row = self._db.execute("SELECT value FROM live_state WHERE run_id = ? AND key = ?",
                               (self.run_id, key)).fetchone()
        return default if row is None else json.loads(row[0])

    def set(self, key: str, value) -> None:
        self._db.execute(self._set_sql, (self.run_id, key, json.dumps(value)))

    def log(self, at, kind: str, message: str) -> None:
        self._db.execute("INSERT INTO live_log(run_id, at, wall, kind, message) VALUES (?, ?, ?, ?, ?)",
                         (self.run_id, iso_time(at), dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                          kind, message))

    def logs(self, limit: int = 20) -> list[dict]:
        rows = self._db.execute("SELECT * FROM live_log WHERE run_id = ? ORDER BY log_id DESC LIMIT ?",
                                (self.run_id, limit)).fetchall()
        return [dict(r) for r in reversed(rows)]

    def query(self, sql, params=()):
        return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        self._db.close()


class _HookProxy:
    """The plugin hooks, made idempotent for the bar a resumed run re-runs (what it journaled stays once)."""

    def __init__(self, hook, runtime: "LiveRuntime"):
        self._hook, self._rt = hook, runtime

    def __getattr__(self, name):
        return getattr(self._hook, name)

    def on_decision(self, *, run, decision, snapshot):
        if self._rt.state.query("SELECT 1 FROM trade_decisions WHERE run_id = ? AND decision_id = ?",
                                (run.run_id, decision.decision_id)):
            return []
        return self._hook.on_decision(run=run, decision=decision, snapshot=snapshot)

    def on_order_event(self, *, run, order, event):
        if self._rt.rerun_bar and event is not None and self._rt.state.query(
                "SELECT 1 FROM order_events WHERE run_id = ? AND order_id = ? AND previous = ? AND status = ?"
                " AND reason = ?", (run.run_id, order.client_id, event.previous.value, event.status.value,
                                    event.reason or "")):
            return []
        return self._hook.on_order_event(run=run, order=order, event=event)

    def on_fill(self, *, run, order, fill):
        if self._rt.state.query("SELECT 1 FROM fills WHERE run_id = ? AND fill_id = ?", (run.run_id, fill.fill_id)):
            return []
        return self._hook.on_fill(run=run, order=order, fill=fill)


class LiveBrokerAdapter(OptionsBroker):
    """The engine's broker in live mode: marks and close prices as in a backtest; orders go to the live broker."""

    def __init__(self, portfolio, fill_model, commission, quotes, on_transition=None, on_fill=None, *, runtime):
        super().__init__(portfolio, fill_model, commission, quotes, on_transition=on_transition, on_fill=on_fill)
        self.runtime = runtime

    def on_bar(self, i: int, now) -> None:
        self._bar, self._now = i, now
        self.runtime.poll()
        self._revalue()

    def end_session(self, now) -> None:
        """DAY orders expire at the broker at the close; its events say so (nothing is decided here)."""

    def submit(self, order: Order, now) -> Order | None:
        return self.runtime.route(order, now)

    def settle(self, contracts, values, at):
        """Settle at the print, and keep the print: a later session restores the trade from it, not a market."""
        st = self.runtime.state
        if st is not None:
            for c in contracts:
                st.set(f"settle_value:{c.occ_compact}", float(values[c]))
        return super().settle(contracts, values, at)

    def cancel(self, client_id: str, now, reason: str = "cancelled by strategy") -> bool:
        return self.runtime.cancel(client_id, now, reason)

    def _revalue(self) -> None:
        self._value = self.portfolio.cash + float(self._position_value[min(self._bar, len(self._position_value) - 1)])

    def _try_fill(self, order):  # pragma: no cover - fills come from the live broker only
        raise AssertionError("the live adapter never fills by itself")


class LiveRuntime:
    """One paper/live run of a resolved config over one session, resumable from its run folder."""

    def __init__(self, resolved, *, run_dir, broker_plugin, clock, day: dt.date, pm=None, market=None,
                 guards: GuardConfig | None = None, poll_seconds: float = 15.0, panel=None, mode: str = "paper",
                 run_id: str | None = None, account: bool = False, final: bool = True):  # noqa: E501
        if pm is None:
            raise ValueError("the live runtime needs the plugin manager (its journal plugin is the run's state)")
        self.resolved = resolved
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.day = day
        self.poll_seconds = poll_seconds
        self.panel = panel
        # account mode (strikebench.live.account): one journal run for the account's whole life, one session of it
        # per runtime; per-session checkpoints are keyed by day, and the run ends only when ``final``
        self.account, self.final = account, final
        run_id = run_id or self.run_dir.name
        # the run's journal: the folder's journal.sqlite, or the config's journal.url (a PostgreSQL database, which
        # may hold many runs: there the run is this folder's only when its runs row names this folder)
        self.journal_url = live_journal_url(resolved, self.run_dir)
        shared = self.journal_url != str(self.run_dir / JOURNAL_FILE)
        self.runinfo = RunInfo(run_id=run_id, name=resolved.config.name, mode=mode, config=resolved,
                               output_dir=str(self.run_dir.resolve() if shared else self.run_dir),
                               seed=resolved.data.params.model_dump().get("seed"))
        self.market = market if market is not None else resolved.data.build().open()
        self.resumed = _has_run(self.journal_url, run_id, self.run_dir if shared else None)
        self.state = LiveState(self.journal_url, run_id) if self.resumed or _journal_exists(self.journal_url) \
            else None
        self.hook = pm.hook if pm is not None else None
        if self.resumed and pm is not None:
            # the journal plugin opens a run's journal on its first event and refuses a run it already holds:
            # hand it the open journal of the run being resumed
            from strikebench.plugins import journal as journal_plugin

            journal_plugin._journals.setdefault(run_id, Journal(self.journal_url))
        self.engine = _build_engine(resolved, self.runinfo, self.market, functools.partial(LiveBrokerAdapter, runtime=self))
        self.adapter: LiveBrokerAdapter = self.engine.broker
        self.tl = self.engine.timeline
        self.bars = [i for i in range(len(self.tl)) if self.tl.days[self.tl.day_codes[i]] == day]
        if not self.bars:
            raise _error(f"{day} is not a session of the configured market")
        first = self.tl.stamps[self.bars[0]]
        self.session_open = first
        self.session_close = self.tl.stamps[self.bars[-1]] + pd.Timedelta(minutes=1)
        self.guards = Guards(guards or GuardConfig())
        if self.guards.config.kill_file is None:
            self.guards.config.kill_file = str(self.run_dir / KILL_FILE)
        self.broker: LiveBroker = broker_plugin.connect(run_dir=self.run_dir, market=self.market,
                                                        fill_model=self.engine.broker.fill_model,
                                                        commission=self.engine.broker.commission,
                                                        underlying=self.engine.underlying)
        self.cursor = 0
        self.applied_fills: set[str] = set()
        self.rerun_bar = False
        self.resume_i: int | None = None
        self.reconciled: list[str] = []
        self._position_mismatch = 0
        self._flatten_done = False
        self.stopped_reason: str | None = None
        self._dirty, self._polled_at = True, None

    # ------------------------------------------------------------ helpers
    def _leg_greeks(self, snap) -> None:
        """Each open leg's per-contract greeks and the underlying's price, from the scheduled snapshot."""
        if snap is None:
            return
        greeks = getattr(self, "_greeks", {})
        for trade in self.engine.portfolio.open_trades():
            for leg in trade.legs:
                row = snap.find_contract(leg.contract, valid_only=False)
                if row is not None:
                    greeks[leg.contract.occ_compact] = tuple(
                        float(x) for x in (snap.delta[row], snap.gamma[row], snap.theta[row], snap.vega[row]))
        self._greeks, self._spot = greeks, float(snap.underlying_price)

    def _publish_positions(self, at) -> None:
        """The open positions as the runtime marks them at this bar (``positions`` in live_state): per leg its
        mid mark and the greeks of the last scheduled snapshot, for the dashboard; one row rewritten per bar."""
        greeks, rows = getattr(self, "_greeks", {}), []
        for trade in self.engine.portfolio.open_trades():
            qty = self.engine.portfolio.open_contracts(trade.trade_id)
            held = self.engine.portfolio.legs_open(trade.trade_id)
            try:
                marks = self.adapter._leg_marks([leg.contract for leg in trade.legs])
                leg_marks = marks[min(self.adapter._bar, len(marks) - 1)]
            except Exception:  # noqa: BLE001 - no quotes for this session (yet): the position shows unmarked
                leg_marks = [float("nan")] * len(trade.legs)
            rows.append({"trade_id": trade.trade_id, "strategy": trade.strategy, "contracts": int(qty),
                         "legs": [{"occ": leg.contract.occ_compact, "ratio": int(leg.ratio),
                                   "multiplier": int(leg.contract.multiplier),
                                   "mark": None if m != m else round(float(m), 4),
                                   "greeks": greeks.get(leg.contract.occ_compact)}
                                  for leg, m, n in zip(trade.legs, leg_marks, held) if n]})
        ladders = []  # a strategy's risk ladder (bwb_vix_hedge's RiskLadder): its notch and the limit there
        for sid, strat in self.engine.strategies:
            ladder = getattr(strat, "ladder", None)
            if ladder is not None and hasattr(ladder, "notch") and hasattr(ladder, "limits"):
                ladders.append({"strategy": sid, "notch": int(ladder.notch), "of": len(ladder.limits),
                                "limit": float(ladder.limits[ladder.notch])})
        self.state.set("positions", {"at": iso_time(at), "spot": getattr(self, "_spot", None), "trades": rows,
                                     "ladders": ladders})

    def _sk(self, name: str) -> str:
        """The live_state key of a per-session value (prefixed by the day in account mode)."""
        return f"{self.day}:{name}" if self.account else name

    def log(self, kind: str, message: str) -> None:
        if self.state is not None:
            self.state.log(self.clock.now(), kind, message)
        if kind in ("reconcile", "fail_closed", "kill_switch", "flatten", "resume"):
            self.reconciled.append(message)
            self.reconciled = self.reconciled[-12:]

    def fail_closed(self, reason: str) -> None:
        if self.guards.fail_closed_reason != reason:
            self.guards.fail_closed_reason = reason
            self.state.set("fail_closed", reason)
            self.log("fail_closed", f"new risk stopped: {reason}")

    def _clear_fail_closed(self, prefix: str) -> None:
        if self.guards.fail_closed_reason and self.guards.fail_closed_reason.startswith(prefix):
            self.log("reconcile", f"cleared: {self.guards.fail_closed_reason}")
            self.guards.fail_closed_reason = None
            self.state.set("fail_closed", None)

    def today_pnl(self) -> float:
        start = self.state.get(self._sk("day_start_equity")) if self.state else None
        return float(self.adapter.getvalue()) - float(start if start is not None else self.engine.portfolio.initial_cash)

    # ------------------------------------------------------------ routing
    def route(self, order: Order, now) -> Order | None:
        engine, adapter = self.engine, self.adapter
        known = adapter.orders.get(order.client_id)
        if known is not None:  # the same intent again (a re-run bar): never send twice
            self.log("idempotent", f"{order.client_id} already sent (status {known.status.value}); not sent again")
            return known
        clock_now = self.clock.now()
        bar_time = engine.now
        veto = self.guards.check(order, now=clock_now, quote_time=bar_time + pd.Timedelta(minutes=1),
                                 session_open=self.session_open, session_close=self.session_close, bar_time=bar_time)
        if veto is not None:
            engine.record_veto(order, [veto])
            self.log("guard", f"{order.client_id} refused by {veto.rule}: {veto.reason}")
            return None
        adapter.orders[order.client_id] = order
        adapter._working.append(order)
        adapter._transition(order, OrderStatus.SUBMITTED, "", now)  # journaled before it is sent
        self.guards.sent(clock_now)
        self._dirty = True
        self._send(order, clock_now)
        self.poll()
        return order

    def _send(self, order: Order, at) -> None:
        for attempt in (1, 2):
            try:
                ack = self.broker.place(order, at, tag=self.runinfo.run_id)
                order.broker_id = ack.broker_id
                return
            except Exception as exc:  # noqa: BLE001 - any failure leaves the outcome unknown
                self.log("send", f"{order.client_id}: place failed ({exc}); looking it up by client id")
                found = self._lookup(order.client_id)
                if found is not None:
                    order.broker_id = found.broker_id
                    self.log("send", f"{order.client_id}: the broker has it (id {found.broker_id}); not resent")
                    return
                if attempt == 2:
                    self.adapter._transition(order, OrderStatus.REJECTED,
                                             f"not sent: place failed twice and the broker has no order "
                                             f"{order.client_id} ({exc})", at)

    def _lookup(self, client_id: str):
        for _ in range(3):
            try:
                return self.broker.lookup(client_id)
            except BrokerUnavailable:
                continue
        raise BrokerUnavailable(f"cannot look up {client_id} at the broker")

    def cancel(self, client_id: str, now, reason: str) -> bool:
        order = self.adapter.orders.get(client_id)
        if order is None or not order.is_working:
            return False
        self.log("cancel", f"{client_id}: cancel requested ({reason})")
        self.state.set(f"cancel:{client_id}", reason)
        self._dirty = True
        try:
            return self.broker.cancel(client_id, self.clock.now())
        except BrokerUnavailable as exc:
            self.log("cancel", f"{client_id}: cancel not confirmed ({exc}); checked again on the next poll")
            return False

    # ------------------------------------------------------------ events
    def poll(self, *, force: bool = False) -> None:
        """Let the broker catch up to the clock, then apply its new events once each.

        Skipped when neither the clock moved nor an order was sent or cancelled since the last poll (nothing
        can have happened at the broker: a replay service pinned at a bar's close makes no event by itself)."""
        now = self.clock.now()
        if not force and not self._dirty and now == self._polled_at:
            return
        self._dirty, self._polled_at = False, now
        try:
            self.broker.sync(now)
            events = self.broker.events(self.cursor)
        except BrokerUnavailable as exc:
            self.log("poll", f"broker unavailable: {exc}")
            return
        for ev in events:
            try:
                self._apply_event(ev)
            except BrokerUnavailable as exc:  # a look-up inside failed: the rest waits for the next poll
                self.log("poll", f"broker unavailable while applying {ev.event_id}: {exc}")
                break
            self.cursor = ev.seq
        if events and self.state is not None:
            self.state.set("cursor", self.cursor)

    def _apply_event(self, ev) -> None:
        order = self.adapter.orders.get(ev.client_id)
        if order is None:
            found = self.broker.lookup(ev.client_id)
            if found is not None and found.tag == self.runinfo.run_id:
                self.fail_closed(f"the broker reports order {ev.client_id}, which the journal does not know")
            return
        if ev.kind == "fill" and ev.fill is not None:
            self._apply_fill(order, ev.fill)
        elif ev.kind == "status":
            self._apply_status(order, ev.status, ev.reason, ev.at)

    def _apply_status(self, order: Order, status: str, reason: str, at) -> None:
        new = OrderStatus(status)
        if order.status.is_final:
            return
        if new in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED):
            return  # fills drive these
        if new.is_final or _RANK.get(new, 0) > _RANK.get(order.status, 0):
            self.adapter._transition(order, new, reason, at)

    def _apply_fill(self, order: Order, bf) -> None:
        if bf.fill_id in self.applied_fills:
            return
        if order.filled_quantity + bf.quantity > order.quantity:
            self.fail_closed(f"fill {bf.fill_id} would overfill order {order.client_id}")
            return
        fill = Fill(fill_id=bf.fill_id, client_id=order.client_id, filled_at=bf.at, quantity=int(bf.quantity),
                    net_price=float(bf.net_price), leg_prices=tuple(bf.leg_prices), fees=float(bf.fees))
        try:
            trade = self.engine.portfolio.apply_fill(order, fill)
        except OrderError as exc:
            self.fail_closed(f"fill {bf.fill_id} cannot be booked: {exc}")
            return
        self.applied_fills.add(bf.fill_id)
        prev_qty = order.filled_quantity
        order.fills.append(fill)
        order.filled_quantity += fill.quantity
        order.avg_fill_price = ((order.avg_fill_price or 0.0) * prev_qty + fill.net_price * fill.quantity) \
            / order.filled_quantity
        adapter = self.adapter
        status = OrderStatus.FILLED if order.filled_quantity >= order.quantity else OrderStatus.PARTIALLY_FILLED
        adapter._transition(order, status, "", bf.at)
        adapter._remark()
        adapter._revalue()
        adapter._on_fill(order, fill, trade)

    # --------------------------------------------------------- restore
    def _restore(self) -> None:
        """Portfolio, orders and counters from the journal; then converge on the broker's records."""
        st, rid, engine = self.state, self.runinfo.run_id, self.engine
        sent = {r[0] for r in st.query("SELECT DISTINCT order_id FROM order_events WHERE run_id = ? AND status = ?",
                                       (rid, OrderStatus.SUBMITTED.value))}
        orders: dict[str, Order] = {}
        for r in st.query("SELECT * FROM orders WHERE run_id = ? ORDER BY created_at, order_id", (rid,)):
            if r["order_id"] not in sent:
                continue
            legs = tuple(Leg(OptionContract.from_occ(x["occ_symbol"]), int(x["ratio"])) for x in json.loads(r["legs"]))
            o = Order(client_id=r["order_id"], legs=legs, quantity=int(r["quantity"]),
                      order_type=OrderType(r["order_type"]),
                      limit_price=None if r["limit_price"] is None else float(r["limit_price"]),
                      tif=TimeInForce(r["tif"]), strategy=r["strategy"], trade_id=r["trade_id"], opens=bool(r["opens"]),
                      reason=r["reason"], created_at=pd.Timestamp(r["created_at"]).tz_convert(NY).to_pydatetime())
            o.status = OrderStatus(r["status"])
            o.status_reason = r["status_reason"]
            orders[o.client_id] = o
        portfolio = engine.portfolio
        for r in st.query("SELECT * FROM fills WHERE run_id = ? ORDER BY rowid", (rid,)):
            at = pd.Timestamp(r["filled_at"]).tz_convert(NY).to_pydatetime()
            if r["kind"] == "settlement":
                trade = portfolio.trade(r["trade_id"])
                if trade is not None and trade.is_open:
                    contracts = [leg.contract for leg in trade.legs]
                    values = {}
                    for c in contracts:
                        v = st.get(f"settle_value:{c.occ_compact}")
                        values[c] = float(v) if v is not None else float(self.market.settlement_value(c))
                    portfolio.settle(contracts, values, at)
                continue
            o = orders.get(r["order_id"])
            if o is None:
                self.fail_closed(f"journal fill {r['fill_id']} names order {r['order_id']}, which was never sent")
                continue
            fill = Fill(fill_id=r["fill_id"], client_id=o.client_id, filled_at=at, quantity=int(r["quantity"]),
                        net_price=float(r["price"]), leg_prices=tuple(float(x) for x in json.loads(r["leg_prices"])),
                        fees=float(r["fees"]))
            portfolio.apply_fill(o, fill)
            o.fills.append(fill)
            self.applied_fills.add(fill.fill_id)
        for o in orders.values():
            o.filled_quantity = sum(f.quantity for f in o.fills)
            if o.fills:
                o.avg_fill_price = sum(f.net_price * f.quantity for f in o.fills) / o.filled_quantity
            self.adapter.orders[o.client_id] = o
            if not o.status.is_final:
                self.adapter._working.append(o)
        self.log("resume", f"restored from the journal: {len(orders)} order(s), {len(self.applied_fills)} fill(s), "
                           f"{len(portfolio.open_trades())} open trade(s), cash {portfolio.cash:,.2f}")
        # counters behind the deterministic ids, as they stood before the bar being re-run
        label = iso_time(self.tl.stamps[self.resume_i])
        for ctx in engine.contexts:
            sid = ctx.strategy_id
            ctx._decisions = st.query("SELECT COUNT(*) FROM trade_decisions WHERE run_id = ? AND strategy = ?"
                                      " AND decided_at < ?", (rid, sid, label))[0][0]
            opens, closes = st.query("SELECT COALESCE(SUM(opens), 0), COALESCE(SUM(1 - opens), 0) FROM orders"
                                     " WHERE run_id = ? AND strategy = ? AND created_at < ?", (rid, sid, label))[0]
            ctx._orders = 2 * int(opens) + int(closes)
        self.guards.kill_reason = st.get(self._sk("kill_reason"))
        self.guards.fail_closed_reason = st.get("fail_closed") or self.guards.fail_closed_reason

    def reconcile(self, *, at_start: bool = False) -> None:
        """Converge on the broker: orders in flight, fills, unknown orders, positions."""
        now = self.clock.now()
        self.broker.sync(now)
        for o in list(self.adapter.orders.values()):
            if o.status.is_final and len(o.fills) == o.filled_quantity and not at_start:
                continue
            found = self._lookup(o.client_id)
            if found is None:
                if o.status == OrderStatus.SUBMITTED:
                    self.adapter._transition(o, OrderStatus.REJECTED,
                                             "never reached the broker (looked up by client id after a restart: "
                                             "not found); not resent", now)
                    self.log("reconcile", f"{o.client_id}: journaled but never reached the broker: not resent")
                elif not o.status.is_final:
                    self.fail_closed(f"order {o.client_id} is {o.status.value} in the journal but unknown to the broker")
                continue
            o.broker_id = found.broker_id
            missing = [f for f in found.fills if f.fill_id not in self.applied_fills]
            for f in missing:
                self._apply_fill(o, f)
                self.log("reconcile", f"{o.client_id}: fill {f.fill_id} ({f.quantity} @ {f.net_price:.2f}) applied "
                                      f"from the broker's records")
            before = o.status
            self._apply_status(o, found.status, found.reason, now)
            if o.status != before:
                self.log("reconcile", f"{o.client_id}: {before.value} -> {o.status.value} per the broker")
            if at_start and o.is_working and self.state.get(f"cancel:{o.client_id}") and not found.cancel_requested:
                self.broker.cancel(o.client_id, now)  # a cancel requested but never confirmed: ask again
                self.log("reconcile", f"{o.client_id}: cancel re-requested")
        for bo in self.broker.orders(self.runinfo.run_id):
            if bo.client_id not in self.adapter.orders:
                self.fail_closed(f"the broker holds order {bo.client_id} of this run, which the journal does not know")
        events = self.broker.events(self.cursor)
        if events:
            self.cursor = events[-1].seq
        self.check_positions(strict=at_start)

    def check_positions(self, *, strict: bool = False) -> None:
        try:
            theirs = self.broker.positions()
        except BrokerUnavailable:
            theirs = None
        if theirs is None:
            self.fail_closed("positions: the broker did not report positions (not read as flat)")
            return
        mine = {c.occ_compact: q for c, q in self.engine.portfolio.positions().items()}
        now = self.clock.now()
        theirs = {k: v for k, v in theirs.items() if v and now < _settles(k)}
        mine = {k: v for k, v in mine.items() if v and now < _settles(k)}
        if mine != theirs:
            self._position_mismatch += 1
            if strict or self._position_mismatch >= 2:
                diff = sorted(set(mine.items()) ^ set(theirs.items()))
                self.fail_closed(f"positions: journal {mine} vs broker {theirs} (differ in {diff[:4]})")
        else:
            self._position_mismatch = 0
            self._clear_fail_closed("positions:")

    # ------------------------------------------------------------ flatten
    def flatten(self, reason: str = "flatten") -> int:
        """Cancel working opening orders and close every open trade at market; trips the kill switch."""
        now = self.clock.now()
        if self.guards.kill_reason is None:
            self.guards.kill_reason = reason
            self.state.set(self._sk("kill_reason"), reason)
        n = 0
        for o in list(self.adapter.working_orders()):
            if o.opens:
                self.cancel(o.client_id, now, reason)
        for k, ctx in enumerate(self.engine.contexts):
            for trade in self.engine.portfolio.open_trades(ctx.strategy_id, exited=False):
                if not ctx.has_pending_exit(trade):
                    if ctx.close_trade(trade, reason) is not None:
                        n += 1
        self.log("flatten", f"{reason}: {n} closing order(s) sent")
        return n

    # --------------------------------------------------------------- run
    def run(self, *, stop_after_bars: int | None = None, flatten_first: bool = False, exit_when_flat: bool = False) -> dict:
        """Run (or resume) the session; returns the engine's summary (``completed`` once the day is done)."""
        engine, tl, adapter = self.engine, self.tl, self.adapter
        (self.run_dir / PID_FILE).write_text(str(os.getpid()))
        if self.hook is not None:
            engine.hook = _HookProxy(self.hook, self)
            engine.risk_gate.hook = engine.hook
        if not self.resumed and self.hook is not None:
            self.hook.on_run_start(run=self.runinfo)
        if self.state is None:
            self.state = LiveState(self.journal_url, self.runinfo.run_id)
        done = self._bar_done()
        if self.state.get(self._sk("completed")):
            # what the journal holds (open trades, cash), not a fresh engine's empty book
            self.resume_i = self.bars[-1]
            if self.resumed:
                self._restore()
                self._value_at_close()
            self.stopped_reason = f"the session of {self.day} had already completed"
            return self._summary()
        start_i = self.bars[0] if done is None else done + 1
        self.resume_i = min(start_i, self.bars[-1])
        if self.resumed:
            self._restore()
            if self.account:  # events before the cursor were applied (an optimisation: every order is looked up)
                self.cursor = int(self.state.get("cursor") or 0)
        if start_i > self.bars[-1]:
            return self._finish()
        self.rerun_bar = self.resumed
        if self.resumed and done is not None:
            engine.i = start_i
            self.log("resume", f"resuming at bar {tl.stamps[start_i]:%H:%M} (the bar in progress is re-run; "
                               f"what it already sent is looked up, not resent)")
            adapter.start_session(self.day)
            for k, (sid, strat) in enumerate(engine.strategies):
                strat.on_session_start(engine.contexts[k])
        if hasattr(self.clock, "_now") and self.clock.now() < tl.stamps[start_i]:
            self.clock._now = tl.stamps[start_i]
        self.reconcile(at_start=True)  # before any new decision
        self._settle_overdue()
        steps = 0
        for i in range(start_i, self.bars[-1] + 1):
            close_t = tl.stamps[i] + pd.Timedelta(minutes=1)
            while not self.clock.sleep_until(close_t, max_wait=self._wait_chunk()):
                self.poll()
                self._control()
                self._paint()
            bar_closed = getattr(self.market, "bar_closed", None)
            if callable(bar_closed):  # a live market (data: {source: tradier}) reads the bar that just closed;
                bar_closed(close_t)  # the session-wide exit curves and marks computed from its quotes are stale now
                adapter.quotes_filled_in()
            if tl.first[i] or self.state.get(self._sk("day_start_equity")) is None:
                self.state.set(self._sk("day_start_equity"), float(adapter.getvalue()))
            engine.on_bar(i)
            self.rerun_bar = False
            self.poll()
            if tl.minute_of_day[i] % 5 == 0:
                snap = engine.chain(engine.underlying)  # the scheduled snapshot (decision times take their own)
                self.state.set("last_snapshot_at", iso_time(tl.stamps[i] + pd.Timedelta(minutes=1)))
                self._leg_greeks(snap)
            if i % 5 == 0:
                self.check_positions()
            killed = self.guards.check_loss(self.today_pnl()) or self.guards.killed()
            if killed and self.state.get(self._sk("kill_reason")) is None:
                self.state.set(self._sk("kill_reason"), killed)
                self.log("kill_switch", f"kill switch tripped: {killed}")
            if (flatten_first or (self.run_dir / FLATTEN_FILE).exists()) and not self._flatten_done and not tl.last[i]:
                self._flatten_done = True
                self.flatten("flatten requested")
                (self.run_dir / FLATTEN_FILE).unlink(missing_ok=True)
            self.state.set(self._sk("bar_done"), i)
            self.state.set(self._sk("bar_done_at"), iso_time(tl.stamps[i]))
            self._publish_positions(tl.stamps[i])
            self._paint()
            steps += 1
            # flat: every trade exited (long legs left with no bid wait for expiry: nothing can sell them)
            if exit_when_flat and self._flatten_done and not engine.portfolio.open_trades(exited=False) \
                    and not adapter.working_orders():
                self.stopped_reason = "flat"
                return self._summary()
            if stop_after_bars is not None and steps >= stop_after_bars:
                self.stopped_reason = f"stopped after {steps} bar(s)"
                return self._summary()
        return self._finish()

    def _finish(self) -> dict:
        self.poll(force=True)
        self.engine.i = self.bars[-1]
        self.state.set(self._sk("completed"), True)
        if self.final:
            self.engine.finish()
        self._paint()
        if not self.account:
            (self.run_dir / PID_FILE).unlink(missing_ok=True)
        return self._summary()

    def _value_at_close(self) -> None:
        """The account's value as the completed session left it: its end-of-day equity row in the journal (a
        re-run does no bar, so the adapter still held its starting value, the initial cash, and the session's
        quotes are not loaded to mark what stays open)."""
        from strikebench.journal import open_read_only

        j = open_read_only(self.journal_url)
        try:
            eq = j.equity(self.runinfo.run_id)
        finally:
            j.close()
        row = eq[eq["day"].astype(str) == str(self.day)]
        if len(row):
            self.adapter._value = float(row["equity"].iloc[-1])

    def _summary(self) -> dict:
        out = self.engine.summary()
        if self.account:  # one session of the account: completed = this session is done
            out["completed"] = bool(self.state.get(self._sk("completed")))
        return out

    def _bar_done(self) -> int | None:
        """The last bar of this session checkpointed (by time, so a market built over another span agrees)."""
        at = self.state.get(self._sk("bar_done_at"))
        if at is None:
            return self.state.get(self._sk("bar_done"))
        t = pd.Timestamp(at)
        done = [i for i in self.bars if self.tl.stamps[i] <= t]
        return done[-1] if done else None

    def _settle_overdue(self) -> None:
        """Open trades whose legs settled before today (the trader was down): settle them as the broker did.

        The broker's settlement record (``LiveBroker.settlements()``) gives the print; a broker without one
        falls back on the market's settlement value; neither -> fail closed (never guessed)."""
        portfolio = self.engine.portfolio
        overdue = sorted({leg.contract for t in portfolio.open_trades() for leg in t.legs
                          if leg.contract.expiry < self.day}, key=lambda c: c.occ_compact)
        if not overdue:
            return
        try:
            prints = {s.occ: s for s in (self.broker.settlements() or ())}
        except BrokerUnavailable:
            prints = {}
        values, at = {}, None
        for c in overdue:
            rec = prints.get(c.occ_compact)
            if rec is not None:
                values[c] = float(rec.value)
                at = max(at, pd.Timestamp(rec.at)) if at is not None else pd.Timestamp(rec.at)
                continue
            try:
                values[c] = float(self.market.settlement_value(c))
            except Exception:  # noqa: BLE001 - no print anywhere: never guess
                self.fail_closed(f"{c.occ_compact} expired on {c.expiry} but neither the broker nor the market "
                                 f"gives its settlement")
                return
        from strikebench.options.contracts import settlement_time

        at = at or max(settlement_time(c) for c in overdue)
        for trade in self.adapter.settle(overdue, values, pd.Timestamp(at).to_pydatetime()):
            self.engine.hook.on_trade_closed(run=self.runinfo, trade=trade)
            self.log("reconcile", f"{trade.trade_id}: settled while the trader was down "
                                  f"(realized {trade.realized_pnl:+,.2f})")
        self.check_positions(strict=True)

    def _wait_chunk(self) -> float | None:
        speed = getattr(self.clock, "speed", 1.0) or 0
        if speed <= 0:
            return None
        return max(self.poll_seconds / speed, 0.0005)

    def _control(self) -> None:
        """Between bars: the kill file takes effect at once (a flatten request waits for the next bar's quotes)."""
        killed = self.guards.killed()
        if killed and self.state.get(self._sk("kill_reason")) is None:
            self.state.set(self._sk("kill_reason"), killed)
            self.log("kill_switch", f"kill switch tripped: {killed}")

    def _paint(self) -> None:
        if self.panel is not None:
            self.panel.update(self)

    def close(self) -> None:
        try:
            self.broker.close()
        finally:
            if self.state is not None:
                self.state.close()
            # the journal plugin keeps a run's journal open by run id for the process's life; a session that ends
            # without ending the run (an account's session, a stop) must not leave it there: another run of the
            # same id in this process (another account folder of the same name) would write into this one's file
            from strikebench.plugins import journal as journal_plugin

            journal_plugin.discard(self.runinfo.run_id)


def _settles(occ: str) -> pd.Timestamp:
    from strikebench.options.contracts import settlement_time

    return settlement_time(OptionContract.from_occ(occ))


def live_journal_url(resolved, run_dir) -> str:
    """Where a paper run's or an account's journal is: the config's ``journal.url`` (SQLite file or PostgreSQL), else
    the folder's ``journal.sqlite``."""
    url = getattr(getattr(resolved.config, "journal", None), "url", None)
    return str(url) if url else str(Path(run_dir) / JOURNAL_FILE)


def _journal_exists(url: str) -> bool:
    from strikebench.journal_db import POSTGRES, backend_of, sqlite_path

    return backend_of(url) == POSTGRES or sqlite_path(url).exists()


def _has_run(url: str, run_id: str, run_dir: Path | None = None) -> bool:
    """The journal holds the run ``run_id`` (it is resumed, not started). A journal outside the folder (PostgreSQL, a
    shared file: ``run_dir`` given) may hold other folders' runs: a run of the same id written from another folder is
    refused, never taken over."""
    from strikebench.journal_db import POSTGRES, backend_of, connect, mask_url, sqlite_path, table_names

    if backend_of(url) != POSTGRES and not sqlite_path(url).exists():
        return False
    try:
        db = connect(url)
    except sqlite3.DatabaseError:
        return False
    try:
        if "runs" not in table_names(db):
            return False
        row = db.execute("SELECT output_dir FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    except sqlite3.DatabaseError:
        return False
    finally:
        db.close()
    if row is None:
        return False
    if run_dir is not None and row[0] and Path(row[0]).resolve() != Path(run_dir).resolve():
        raise _error(f"{mask_url(url)}: run '{run_id}' in this journal belongs to the folder {row[0]}, not "
                     f"{Path(run_dir).resolve()}; a journal keeps one run per id: give this folder another name "
                     f"(--run-dir / --account)")
    return True


def _build_engine(resolved, run, market, factory):
    from strikebench.engine.core import Engine

    strategies = [(rp.instance_id, rp.build()) for rp in resolved.strategies]
    return Engine(market=market, strategies=strategies, fill_model=resolved.fill_model.build(),
                  commission=resolved.commission.build(), risk_managers=[rp.build() for rp in resolved.risk],
                  initial_cash=resolved.broker.params.initial_cash, run=run, hook=None, broker_factory=factory,
                  features=[rp.build() for rp in resolved.features])


def _error(message: str):
    from strikebench.errors import StrikebenchError

    return StrikebenchError(message)
