"""What a strategy sees: the context object, and the risk gate every order passes.

A strategy never touches Backtrader. It reads the clock, chains and its trades
from a :class:`StrategyContext`, records decisions, and asks the context to
open or close trades; the context runs the risk gate, builds the order with a
deterministic client id and hands it to the broker.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from strikebench.api import Candidate, Decision, OrderRequest, RiskManager, Veto
from strikebench.options.chain import ChainSnapshot
from strikebench.options.orders import Leg, Order, OrderType, TimeInForce, TradeRecord, max_loss_per_combo
from strikebench.portfolio import PortfolioView

if TYPE_CHECKING:  # pragma: no cover
    from strikebench.engine.core import Engine

__all__ = ["StrategyContext", "RiskGate"]


_UNTIL_CHANGED = RiskManager.UNTIL_CHANGED


class RiskGate:
    """Asks every configured risk manager and every ``check_order`` hook; any veto blocks."""

    def __init__(self, risk_managers: Sequence, hook=None, run=None):
        self.risk_managers = list(risk_managers)
        self.hook = hook
        self.run = run
        self.trips: list = []  # every BreakerTrip of the run, in the order journaled
        #: (strategy, time) -> {manager: note} of the last check: what a manager that scores orders (``ml_gate``)
        #: said about them, merged into the context of the decision recorded at that bar (:meth:`take_notes`)
        self._notes: dict[tuple, dict] = {}

    def _plan(self) -> list[tuple]:
        """Per manager, once: (manager, whether it can trip a breaker, its ``pop_note`` or None, whether it keeps
        :meth:`RiskManager.applies_to`). A manager that keeps :meth:`RiskManager.pop_trips` (nothing to hand out,
        ever) is not asked for trips after a check; one that keeps ``applies_to`` (entries only) is not asked
        about a closing order."""
        managers = self.risk_managers
        plan = self.__dict__.get("_plan_of")
        if plan is None or plan[0] is not managers or plan[1] != len(managers):
            steps = [(rm, getattr(getattr(rm, "pop_trips", None), "__func__", None) is not RiskManager.pop_trips,
                      getattr(rm, "pop_note", None),
                      getattr(getattr(rm, "applies_to", None), "__func__", None) is RiskManager.applies_to)
                     for rm in managers]
            plan = self._plan_of = (managers, len(managers), steps)
        return plan[2]

    def check(self, request: OrderRequest, portfolio: PortfolioView) -> list[Veto]:
        vetoes: list[Veto] = []
        for rm, trips, pop, entries_only in self._plan():
            if not (request.opens if entries_only else rm.applies_to(request)):
                continue
            veto = rm.check(request, portfolio)
            if trips:
                self.flush(rm, request.at)
            note = pop() if pop is not None else None
            if note:
                self._notes.setdefault((request.strategy, request.at), {})[rm.name] = note
            if veto is not None:
                vetoes.append(veto if veto.rule else Veto(veto.reason, rule=rm.name))
        if self.hook is not None:
            caller = self.hook.check_order
            # no plugin implements it (the usual run): what the call would answer is []; asked at every check,
            # so a plugin registered later is called
            if getattr(caller, "get_hookimpls", None) is None or caller.get_hookimpls():
                for veto in caller(run=self.run, request=request, portfolio=portfolio):
                    if veto is not None:
                        vetoes.append(veto)
        return vetoes


    def _entry_plan(self) -> list[tuple]:
        """Per manager :meth:`entries_blocked` asks, once: (manager, its ``blocks_entries`` or None when it keeps the
        default, which never blocks; its ``blocks_entries_until`` or None; whether it can trip a breaker)."""
        managers = self.risk_managers
        plan = self.__dict__.get("_entry_plan_of")
        if plan is None or plan[0] is not managers or plan[1] != len(managers):
            steps = []
            for rm in managers:
                ask = getattr(rm, "blocks_entries", None)
                if ask is None or getattr(type(rm), "applies_to", None) is not RiskManager.applies_to:
                    continue
                trips = getattr(getattr(rm, "pop_trips", None), "__func__", None) is not RiskManager.pop_trips
                if getattr(ask, "__func__", None) is RiskManager.blocks_entries:
                    if trips:  # never blocks, but its trips are handed out here as before
                        steps.append((rm, None, None, True))
                    continue
                until = getattr(rm, "blocks_entries_until", None)
                if getattr(until, "__func__", None) is RiskManager.blocks_entries_until:
                    until = None  # no promise: asked every time
                steps.append((rm, ask, until, trips))
            plan = self._entry_plan_of = (managers, len(managers), steps)
            self._entry_answers: dict[tuple, tuple] = {}
        return plan[2]

    def entries_blocked(self, strategy: str, at, portfolio: PortfolioView, *, version=None) -> list[Veto]:
        """The vetoes every opening order of ``strategy`` at ``at`` would meet whatever its legs (the managers'
        ``blocks_entries``; managers that narrow :meth:`RiskManager.applies_to` are not asked). Trips are
        handed to the journal as a check hands them.

        ``version`` (a backtest's count of account changes: order events, fills, settlements, sessions): a
        manager's answer is reused, without asking, for a later ``at`` of the same version before the time its
        ``blocks_entries_until`` gave with it (None: no reuse)."""
        vetoes: list[Veto] = []
        steps = self._entry_plan()
        answers = self._entry_answers if version is not None else None
        for k, (rm, ask, until_of, trips) in enumerate(steps):
            got = answers.get((strategy, k)) if answers is not None and until_of is not None else None
            if got is not None and got[0] == version and (got[1] is None or at < got[1]):
                veto = got[2]
            elif ask is not None:
                veto = ask(strategy, at, portfolio)
                if veto is not None and not veto.rule:
                    veto = Veto(veto.reason, rule=rm.name)
                if answers is not None and until_of is not None:
                    until = until_of(strategy, at, portfolio)
                    if until is not None:  # (None stands for UNTIL_CHANGED: comparing across time zones is slow)
                        answers[(strategy, k)] = (version, None if until is _UNTIL_CHANGED else until, veto)
                    elif got is not None:
                        del answers[(strategy, k)]
            else:
                veto = None
            if trips:
                self.flush(rm, at)
            if veto is not None:
                vetoes.append(veto)
        return vetoes

    def take_notes(self, strategy: str, at) -> dict:
        """The notes of ``strategy``'s checks at ``at`` (then forgotten, with every older one)."""
        if not self._notes:
            return {}
        got = self._notes.pop((strategy, at), {})
        self._notes.clear()
        return got

    def flush(self, rm=None, upto=None) -> list:
        """Hand the trips of ``rm`` (every manager when None) that happened by ``upto`` to ``on_breaker_trip``."""
        out = []
        for m in ([rm] if rm is not None else self.risk_managers):
            pop = getattr(m, "pop_trips", None)
            for trip in (pop(upto) if pop is not None else ()):
                out.append(trip)
                if self.hook is not None:
                    self.hook.on_breaker_trip(run=self.run, trip=trip)
        self.trips.extend(out)
        return out


class StrategyContext:
    """The strategy's window on the run: clock, chains, portfolio, orders, decisions."""

    def __init__(self, engine: "Engine", strategy_id: str, strategy):
        self._engine = engine
        self.strategy_id = strategy_id
        self.strategy = strategy
        self.last_vetoes: list[Veto] = []
        self._decision_bars = None  # the engine's per-bar decision mask of this strategy
        self._decisions = 0
        self._orders = 0
        self._naps: dict | None = None  # trade id -> bar_in_session promised by idle_until during manage
        self._idle_until = -1  # absolute bar before which manage is skipped, valid while _idle_epoch == _wake
        self._idle_epoch = -1
        self._wake = 0  # moved by the engine on every change the strategy's idle promise depends on
        self._idle_own = False  # the promise depends only on the strategy's own orders and trades
        self._naps_own = True  # every promise of this manage round said own=True
        self._naps_wide: set = set()  # trades of this manage round promised other than about themselves alone
        self._kept_naps: dict = {}  # trade id -> absolute bar: promises about that trade alone (own="trade")
        self._at_of: tuple = (None, None)  # (the engine's bar label, it as a plain datetime): see _at
        self._minute_of: tuple = (None, None)  # (the engine's bar label, its decision id text): see _minute_text
        self._dte_expiries: dict = {}  # (underlying, lo, hi) -> (day, expiries listed that day in the DTE window)

    # ------------------------------------------------------------------ clock
    @property
    def now(self) -> pd.Timestamp:
        """The current bar's label (tz-aware, America/New_York); quotes are as of its close."""
        return self._engine.now

    def _at(self) -> dt.datetime:
        """:attr:`now` as a plain datetime (the same fields), made once a bar: an entry asks for it ~6 times.
        Kept by the label's identity: the engine hands out the same Timestamp object for a bar."""
        ts = self._engine.now
        got = self._at_of
        if got[0] is not ts:
            got = self._at_of = (ts, ts.to_pydatetime())
        return got[1]

    def _minute_text(self) -> str:
        """:meth:`_at` as ``%Y%m%dT%H%M`` (a decision id's time), made once a bar."""
        ts = self._engine.now
        got = self._minute_of
        if got[0] is not ts:
            at = self._at()
            # strftime's text field by field (it costs ~1.5 us more); a Timestamp's year has four digits (1677-2262)
            got = self._minute_of = (ts, f"{at.year}{at.month:02d}{at.day:02d}T{at.hour:02d}{at.minute:02d}")
        return got[1]

    @property
    def today(self) -> dt.date:
        return self._engine.today

    @property
    def calendar(self):
        return self._engine.calendar

    # ------------------------------------------------------------------ data
    def chain(self, underlying: str | None = None, *, dte: tuple[int, int] | None = None,
              expiries: Sequence[dt.date] | None = None, roots: Sequence[str] | str | None = None,
              right: str | None = None) -> ChainSnapshot:
        """The option chain of ``underlying`` (default: the strategy's) at this bar.

        ``dte=(lo, hi)`` keeps only the expiries ``lo`` to ``hi`` calendar days away (inclusive);
        ``expiries`` names them; ``roots`` (e.g. ``["SPXW"]``) and ``right`` (``"C"`` or ``"P"``) keep
        only those rows. Only what is kept is generated or fetched, so a decision costs the same
        whatever the size of the full chain; the rows kept are exactly the full chain's.
        """
        underlying = underlying or self.strategy.chain_underlying()
        if dte is not None:
            lo, hi = dte
            today = self.today
            # the listed expiries in the window: once a session per request (a decision asks the same each time)
            memo_key = (underlying, lo, hi)
            got = self._dte_expiries.get(memo_key)
            if got is None or got[0] != today:
                got = self._dte_expiries[memo_key] = (
                    today, [e for e in self._engine.listed_expiries(underlying) if lo <= (e - today).days <= hi])
            wanted = got[1]
            expiries = list(wanted) if expiries is None else [e for e in expiries if e in set(wanted)]
        return self._engine.chain(underlying, expiries, decision_bars=self._decision_bars, roots=roots, right=right)

    def expiries(self, underlying: str | None = None) -> list[dt.date]:
        """Expiries of ``underlying`` (default: the strategy's) listed today, ascending."""
        return list(self._engine.listed_expiries(underlying or self.strategy.chain_underlying()))

    def underlying_price(self, symbol: str | None = None) -> float:
        return self._engine.price(symbol or self.strategy.chain_underlying())

    @property
    def slippage(self) -> float:
        """Fraction of a combo's bid/ask width the configured fill model gives up from the mid
        (mid_slippage: its k; natural: 0.5; mid: 0), for estimating what an entry will fill at."""
        return float(getattr(self._engine.broker.fill_model, "slippage_fraction", 0.30))

    @property
    def features(self) -> dict[str, Any]:
        return self._engine.features

    # ---------------------------------------------------------------- signals
    def publish(self, name: str, value: Any) -> None:
        """Publish ``value`` under ``name`` for every strategy of this run (replaces the last value).

        Visible at once: to strategies that run later in this bar, and to all of them from the next bar.
        """
        self._engine.signals[name] = value

    def signal(self, name: str, default: Any = None) -> Any:
        """The last value any strategy of this run published under ``name`` (``default`` if none yet)."""
        return self._engine.signals.get(name, default)

    # ------------------------------------------------------------- portfolio
    @property
    def portfolio(self) -> PortfolioView:
        return self._engine.portfolio.view(self.today)

    def open_trades(self) -> list[TradeRecord]:
        """This strategy's open trades whose exit is not done (a partly closed trade, whose no-bid long
        legs wait for expiry, is not: nothing is left to manage)."""
        return self._engine.portfolio.open_trades(self.strategy_id, exited=False)

    def close_price(self, trade: TradeRecord) -> float | None:
        """Signed net price the fill model would close ``trade`` at now (positive = debit)."""
        return self._engine.broker.close_price(trade)

    def close_price_outside(self, trade: TradeRecord, low: float, high: float) -> bool:
        """True when :meth:`close_price` now is <= ``low`` or >= ``high`` (False when unquotable).

        An exit rule checked every bar asks this first: the comparison is made once per session for
        every minute (vectorized), so the bars where nothing happens cost one array read.
        """
        return self._engine.broker.close_price_outside(trade, low, high)

    def mark(self, trade: TradeRecord) -> float:
        """Mid value of one combo of ``trade`` now (signed index points)."""
        return self._engine.broker.mark(trade)

    # -------------------------------------------------------------- decisions
    def decide(self, action: str, reason: str, *, candidates: Sequence[Candidate] = (),
               chosen: int | None = None, snapshot: ChainSnapshot | None = None,
               context: dict | None = None, ruleset_version: str = "") -> Decision:
        """Record a decision (TRADE, SKIP or EXIT) with what it saw; journaled via ``on_decision``."""
        self._decisions += 1
        at = self._at()  # the bar's time once (the same fields as the Timestamp's)
        notes = self._engine.risk_gate.take_notes(self.strategy_id, at)
        if notes:  # what a scoring risk manager said about this decision's entry (ml_gate: P(stop), model hash)
            context = {**(context or {}), "risk_notes": notes}
        decision = Decision(
            strategy=self.strategy_id, decided_at=at, action=action, reason=reason,
            candidates=tuple(candidates), chosen=chosen,
            snapshot_checksum=snapshot.checksum if snapshot is not None else None,
            context=dict(context or {}), ruleset_version=ruleset_version,
            decision_id=f"{self.strategy_id}-{self._minute_text()}-{self._decisions}",
        )
        self._engine.record_decision(decision, snapshot)
        return decision

    # ----------------------------------------------------------------- orders
    def open_trade(self, legs: Sequence[Leg], quantity: int, *, limit: float | None = None,
                   reason: str = "entry", decision: Decision | None = None,
                   tif: TimeInForce = TimeInForce.DAY) -> Order | None:
        """Send an order opening a new trade; None when a risk check vetoes it (see ``last_vetoes``)."""
        legs = tuple(legs)
        trade_id = self._client_id("T", legs, decision)
        return self._send(legs, quantity, limit, reason, trade_id, opens=True, decision=decision, tif=tif)

    def close_trade(self, trade: TradeRecord, reason: str, *, limit: float | None = None,
                    tif: TimeInForce = TimeInForce.DAY) -> Order | None:
        """Send an order closing all open combos of ``trade`` (its legs reversed).

        A long leg whose bid is zero now cannot be sold: when the other legs can trade, the order
        leaves it out (a one-leg close is a single-leg order) and it stays in the account until it
        settles at expiry; the trade is then partly closed (:attr:`TradeRecord.partly_closed_at`) and
        closes at that settlement. ``limit`` is per combo of the trade, the legs left out counted at
        their zero bid. A still-working opening order of the trade (a partial fill) is cancelled
        first, so its remainder cannot fill after the exit and leave a position the trade no longer
        owns. None when nothing is left to close (or a risk check vetoes)."""
        engine = self._engine
        for o in list(engine.broker.working_orders()):
            if o.trade_id == trade.trade_id and o.opens:
                engine.broker.cancel(o.client_id, self._at(), f"closing the trade ({reason})")
        held = engine.portfolio.legs_open(trade.trade_id)
        if not held or max(held) <= 0 or trade.partly_closed_at is not None:
            return None
        position = tuple(Leg(leg.contract, -leg.ratio * n) for leg, n in zip(trade.legs, held) if n)
        bid, ask = engine.broker.quotes.bid_ask([leg.contract for leg in position], engine.bar_in_session)
        from strikebench.engine.broker import closing_order_legs

        legs, qty, _ = closing_order_legs(position, bid, ask)
        if limit is not None and qty != max(held):
            limit = limit * max(held) / qty  # per combo of the order (its ratios are per its own combo)
        return self._send(legs, qty, limit, reason, trade.trade_id, opens=False, decision=None, tif=tif)

    def cancel(self, order: Order, reason: str = "cancelled by strategy") -> bool:
        return self._engine.broker.cancel(order.client_id, self._at(), reason)

    def _client_id(self, prefix: str, legs: Sequence[Leg], decision: Decision | None) -> str:
        """Deterministic id from (run, decision or time, leg set): the same intent gets the same id."""
        self._orders += 1
        basis = decision.decision_id if decision else f"{self.strategy_id}-{self.now:%Y%m%dT%H%M}-{self._orders}"
        legs_key = "|".join(f"{leg.contract.occ_symbol}x{leg.ratio}" for leg in legs)
        digest = hashlib.sha256(f"{self._engine.run.run_id}|{basis}|{legs_key}".encode()).hexdigest()[:10]
        return f"{prefix}-{basis}-{digest}"

    def would_veto(self, legs: Sequence[Leg], quantity: int, *, limit: float | None = None) -> list[Veto]:
        """The vetoes an opening order for ``legs`` x ``quantity`` would meet now (nothing is sent)."""
        order = Order(client_id="_probe", legs=tuple(legs), quantity=quantity,
                      order_type=OrderType.LIMIT if limit is not None else OrderType.MARKET, limit_price=limit,
                      strategy=self.strategy_id, trade_id="_probe", opens=True, created_at=self._at())
        return self._engine.risk_gate.check(self._request(order), self.portfolio)

    def entries_blocked(self) -> list[Veto]:
        """What blocks *every* new entry of this strategy now, whatever its legs: the risk rules that do not
        depend on the order (open-trade and daily limits, time windows, tripped breakers). Empty when an entry
        could pass; rules that depend on the order are still asked when it is sent (``would_veto``).

        A strategy asks this before building a chain: a decision that cannot be acted on is then recorded
        as a SKIP naming the rules, without a chain slice or candidates
        (:func:`strikebench.strategies.spreads.skip_if_blocked`), unless the run records blocked decisions
        in full (``journal.blocked_decisions: full``, :attr:`records_blocked_in_full`)."""
        engine = self._engine
        # a backtest's account changes only through the events that move the engine's epoch: managers' answers
        # are reused until one of them or a time they name (RiskManager.blocks_entries_until)
        return engine.risk_gate.entries_blocked(self.strategy_id, self._at(), self.portfolio,
                                                version=engine._epoch if engine._can_idle else None)

    @property
    def records_blocked_in_full(self) -> bool:
        """True when the run evaluates and journals decisions a risk rule blocks anyway (chain slice and
        candidates: what ``strikebench ml dataset`` learns counterfactuals from); ``journal.blocked_decisions``."""
        return self._engine.blocked_decisions == "full"

    def has_pending_exit(self, trade: TradeRecord) -> bool:
        """True while a closing order for ``trade`` is working."""
        return self._engine.broker.has_working_exit(trade.trade_id)

    def next_bar_outside(self, trade: TradeRecord, low: float, high: float) -> int:
        """The first later bar of this session (as ``bar_in_session``) at which :meth:`close_price_outside`
        will be True; a number past the session's end when none (from the same session-wide comparison)."""
        return self._engine.broker.next_bar_outside(trade, low, high)

    @property
    def bar_in_session(self) -> int:
        """This bar's position in the session (0 = the opening minute)."""
        return self._engine.bar_in_session

    def idle_until(self, trade: TradeRecord, bar: int, *, own: bool | str = False) -> None:
        """Tell the engine that :meth:`manage` has nothing to do for ``trade`` before bar ``bar`` of this
        session (``bar_in_session`` units) *unless something else changes*.

        A promise about the strategy's own rule: call it only when every exit rule of ``manage`` for
        this trade is known not to fire before then (``credit_exit(..., idle=True)`` does it from the
        session-wide comparison of :meth:`close_price_outside`). When every open trade of the strategy
        has such a promise, the engine skips ``manage`` until the earliest one, and calls it again at
        once after any order event, fill, veto or settlement in the run, and at every session start;
        with ``own=True`` (what ``manage`` does for this trade depends only on this strategy's own orders
        and trades and the session's quotes) only after an order event, fill, veto or settlement of this
        strategy's orders and trades, and at every session start (when every open trade's promise says
        so). ``own="trade"`` (what ``manage`` does for this trade depends only on this trade's own orders
        and fills and the session's quotes, as the credit rule's does): besides, the trade itself is not
        managed again before ``bar`` when the strategy is (for another trade's event or bar) unless an
        order event, fill or veto of its own orders, a settlement or a session start came since.
        Backtests only (a live run calls ``manage`` every bar)."""
        naps = self._naps
        if naps is not None:
            naps[trade.trade_id] = int(bar)
            if not own:
                self._naps_own = False
            if own != "trade":
                self._naps_wide.add(trade.trade_id)

    def _request(self, order: Order) -> OrderRequest:
        engine = self._engine
        est = order.limit_price
        if est is None:
            est = engine.broker.fill_price(order)  # this bar's quotes (the broker's bar is the engine's)
        loss = (max_loss_per_combo(order.legs, est) * order.multiplier * order.quantity
                if order.opens and est is not None else 0.0)
        return OrderRequest(order=order, at=self._at(), strategy=self.strategy_id, opens=order.opens,
                            quantity=order.quantity, est_price=est, worst_case_loss=float(loss))

    def _send(self, legs, quantity, limit, reason, trade_id, *, opens, decision, tif) -> Order | None:
        engine = self._engine
        order = Order(
            client_id=self._client_id("O", legs, decision) if opens else f"{trade_id}-X{self._orders + 1}",
            legs=legs, quantity=quantity,
            order_type=OrderType.LIMIT if limit is not None else OrderType.MARKET,
            limit_price=limit, tif=tif, strategy=self.strategy_id, trade_id=trade_id, opens=opens,
            reason=reason, created_at=self._at(),
        )
        if not opens:
            self._orders += 1
        vetoes = engine.risk_gate.check(self._request(order), self.portfolio)
        self.last_vetoes = vetoes
        if vetoes:
            engine.record_veto(order, vetoes)
            return None
        return engine.broker.submit(order, self._at())
