"""The engine: one run's clock, strategies, portfolio, broker and events, driven bar by bar.

Backtrader drives :meth:`Engine.on_bar` (see :mod:`strikebench.engine.adapter`);
tests and the replay clock can drive it directly. Everything per bar is an
index lookup into arrays computed once per run (session boundaries, decision
minutes) or once per session (leg quotes, marks).

Time convention: a minute bar is labelled by its start (09:30 ... 15:59); "at
10:00" means the bar labelled 10:00, with quotes as of its close.
"""

from __future__ import annotations

import datetime as dt
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from strikebench.api import RunInfo, Veto
from strikebench.calendar import NY, MarketCalendar
from strikebench.engine.broker import OptionsBroker, OrderTransition, QuoteBook
from strikebench.engine.context import RiskGate, StrategyContext
from strikebench.engine.hooks import fire
from strikebench.options.chain import ChainSnapshot
from strikebench.options.contracts import SettlementStyle
from strikebench.options.orders import Fill, Order, OrderStatus, TradeRecord
from strikebench.portfolio import Portfolio

__all__ = ["Engine", "Timeline"]


class _NullHook:
    """Stands in for ``pm.hook`` when an engine runs without a plugin manager."""

    def __getattr__(self, name):
        return lambda **kwargs: []


class Timeline:
    """Per-bar arrays of one run: label, session day, position in session, minute of day."""

    def __init__(self, index: pd.DatetimeIndex):
        if index.tz is None:
            raise ValueError("bar index must be timezone-aware")
        local = index.tz_convert(NY)
        self.index = local
        self.stamps = list(local)  # Timestamps made once: indexing a DatetimeIndex per bar costs ~20 us
        self.ns = local.asi8
        self.minute_of_day = (local.hour * 60 + local.minute).to_numpy()
        days = local.normalize()
        self.day_codes, uniques = pd.factorize(days)
        self.days = [d.date() for d in uniques]
        new_day = np.r_[True, self.day_codes[1:] != self.day_codes[:-1]]
        self.first = new_day
        self.last = np.r_[new_day[1:], True]
        starts = np.flatnonzero(new_day)
        self.in_session = np.arange(len(index)) - np.repeat(starts, np.diff(np.r_[starts, len(index)]))
        #: one past each session's last bar, by day code (a session's end without scanning the bars left)
        self.session_ends = (np.flatnonzero(self.last) + 1).tolist()

    def __len__(self) -> int:
        return len(self.ns)


def _check_feature_names(providers) -> None:
    seen: dict[str, str] = {}
    for provider in providers:
        for name in provider.feature_names():
            if name in seen:
                raise ValueError(f"feature '{name}' comes from two providers: {seen[name]} and "
                                 f"{getattr(provider, 'name', '') or type(provider).__name__}")
            seen[name] = getattr(provider, "name", "") or type(provider).__name__


class Engine:
    """Runs configured strategies over a market's bars with an options broker."""

    def __init__(self, *, market, strategies: Sequence[tuple[str, object]], fill_model, commission,
                 risk_managers: Sequence = (), initial_cash: float = 100_000.0, run: RunInfo | None = None,
                 hook=None, calendar: MarketCalendar | None = None, underlying: str | None = None,
                 on_session_end: Callable[[dt.date, float], None] | None = None, broker_factory=None,
                 features: Sequence = (), blocked_decisions: str = "reason"):
        self.market = market
        self.run = run or RunInfo(run_id="adhoc", name="adhoc", mode="backtest")
        if blocked_decisions not in ("reason", "full"):
            raise ValueError(f"blocked_decisions must be 'reason' or 'full', got {blocked_decisions!r}")
        #: "reason": a decision every entry of which a risk rule blocks is a SKIP without chain or candidates
        #: (strategies ask ``ctx.entries_blocked()`` first); "full": evaluated and journaled like any other
        self.blocked_decisions = blocked_decisions
        self.hook = hook if hook is not None else _NullHook()
        self.calendar = calendar or MarketCalendar()
        self.strategies = list(strategies)
        self.underlying = underlying or (self.strategies[0][1].chain_underlying() if self.strategies else "SPX")
        self.bars = market.bars(self.underlying)
        self.timeline = Timeline(self.bars.index)
        self._close = self.bars["close"].to_numpy()
        self.portfolio = Portfolio(initial_cash)
        # broker_factory: a live runtime's adapter with OptionsBroker's signature and surface (strikebench.live)
        self.broker = (broker_factory or OptionsBroker)(self.portfolio, fill_model, commission, QuoteBook(market),
                                                        on_transition=self._on_transition, on_fill=self._on_fill)
        self.risk_gate = RiskGate(risk_managers, hook=hook, run=self.run)
        self.contexts = [StrategyContext(self, sid, strat) for sid, strat in self.strategies]
        self._context_of = {ctx.strategy_id: ctx for ctx in self.contexts}
        self._decision_bars = [
            np.isin(self.timeline.minute_of_day, [t.hour * 60 + t.minute for t in strat.decision_times()])
            for _, strat in self.strategies
        ]
        for ctx, bars in zip(self.contexts, self._decision_bars):
            ctx._decision_bars = bars
        # what on_bar reads every bar, as Python lists (a numpy scalar read costs several times a list's)
        self._bar_flags = (self.timeline.first.tolist(), self.timeline.last.tolist(),
                           self.timeline.in_session.tolist(),
                           [(ctx, sid, strat, bars.tolist())  # each strategy's context, id, plugin, decision bars
                            for ctx, (sid, strat), bars in zip(self.contexts, self.strategies, self._decision_bars)])
        self.feature_providers = list(features)  # ContextProviders: fill self.features before strategies run
        _check_feature_names(self.feature_providers)
        self._features: dict = {}
        self._features_bar = -1
        self.signals: dict = {}  # values strategies publish for one another (ctx.publish / ctx.signal)
        self.decisions: list = []
        self.vetoes: list[tuple[Order, list[Veto]]] = []
        #: trades settled on a value the market could only approximate (no settlement print)
        self.approximated_settlements = 0
        self.equity_by_day: list[tuple[dt.date, float]] = []
        self._on_session_end_cb = on_session_end
        self.equity_curve = np.full(len(self.timeline), np.nan)  # account value after each bar
        self.i = -1
        self._chains: dict[tuple, ChainSnapshot] = {}
        self._filters_rows: bool | None = None
        self._prefetched: dict[tuple, ChainSnapshot] = {}  # (request, bar) -> snapshot, this session only
        # (underlying, rows, asking strategy's decision bars) -> [decision bars that asked, decision bars that
        # could have asked] over past sessions (from each session's first ask on): whether a batch pays
        self._batch_use: dict[tuple, list[int]] = {}
        self._session_asks: dict[tuple, list[int]] = {}  # the same, this session
        self._batch_rows: dict[tuple, int] = {}  # the same key -> rows of its latest snapshot (what a minute costs)
        self._session_end = 0
        self._listed: dict[tuple, list[dt.date]] = {}
        self._chain_bar = -1
        self._other_prices: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.finished = False
        self._epoch = 0  # moves on every order event, fill, veto, settlement and session start
        self._can_idle = self.run.mode == "backtest"
        #: skip quiet bars (:meth:`_plan_quiet`); off when something reads the broker's value every bar
        #: (Backtrader's analyzers)
        self.quiet_bars = self._can_idle
        self._quiet_until = -1  # bars before this one are quiet
        self.quiet_bar_count = 0  # bars skipped as quiet (tests, benchmarks)
        n = len(self.timeline)
        self._next_decision = []  # per strategy: the first decision bar after each bar (n when none)
        for mask in self._decision_bars:
            at = np.flatnonzero(mask)
            self._next_decision.append(np.r_[at, n][np.searchsorted(at, np.arange(n), side="right")])
        #: what _plan_quiet reads per strategy: its context and its next decision bars (a list: Python ints)
        self._quiet_plan = [(ctx, after.tolist()) for ctx, after in zip(self.contexts, self._next_decision)]

    # ------------------------------------------------------------------ clock
    @property
    def now(self) -> pd.Timestamp:
        return self.timeline.stamps[self.i]

    @property
    def today(self) -> dt.date:
        return self.timeline.days[self.timeline.day_codes[self.i]]

    @property
    def bar_in_session(self) -> int:
        return int(self.timeline.in_session[self.i])

    # ------------------------------------------------------------------- data
    @property
    def features(self) -> dict:
        """Every provider's values at the current bar, computed when first read in a bar (usually only at
        decisions), never from later bars."""
        if self._features_bar != self.i:
            values: dict = {}
            j = int(self.timeline.in_session[self.i])
            for provider in self.feature_providers:
                values.update(provider.values(j))
            self._features, self._features_bar = values, self.i
        return self._features

    def chain(self, underlying: str, expiries: Sequence[dt.date] | None = None, *,
              decision_bars: np.ndarray | None = None, roots: Sequence[str] | str | None = None,
              right: str | None = None) -> ChainSnapshot:
        """The chain of ``underlying`` at this bar, all listed expiries or only ``expiries``, all rows or
        only those of ``roots`` / ``right`` (one snapshot per bar and request: strategies asking the same
        at the same minute share it)."""
        if self._chain_bar != self.i:
            self._chains.clear()
            self._chain_bar = self.i
        rows = _row_filter(roots, right)
        key = (underlying, None if expiries is None else tuple(sorted(set(expiries))), rows)
        snap = self._chains.get(key)
        if snap is None:
            if decision_bars is not None:
                use_key = (underlying, rows, id(decision_bars))
                seen = self._session_asks.get(use_key)
                if seen is None:  # first ask this session: the decision bars left are the ones it could ask at
                    left = int(np.count_nonzero(decision_bars[self.i:self._session_end]))
                    self._session_asks[use_key] = [1, left]
                else:
                    seen[0] += 1
            snap = self._prefetched.pop((key, self.i), None)
            if snap is None:
                if rows is not None and not self._source_filters_rows():
                    # a source without row filters: the whole request's snapshot (shared), then its rows
                    whole = self.chain(underlying, expiries, decision_bars=decision_bars)
                    snap = whole.subset(np.flatnonzero(_row_mask(whole, rows)))
                else:
                    snap = self._fetch_chain(key, decision_bars)
            self._chains[key] = snap
        return snap

    def _source_filters_rows(self) -> bool:
        """True when the chain source's ``snapshot`` takes ``roots=`` and ``is_call=`` (it then generates or
        reads only those rows; the synthetic market does)."""
        got = self._filters_rows
        if got is None:
            import inspect

            try:
                params = inspect.signature(self.market.snapshot).parameters
            except (TypeError, ValueError):
                params = {}
            got = self._filters_rows = "roots" in params and "is_call" in params
        return got

    def _fetch_chain(self, key, decision_bars) -> ChainSnapshot:
        """One snapshot, or, in a backtest at one of the asking strategy's decision bars, the snapshots of
        the same request at all its remaining decision bars of the session in one call of the source's
        ``snapshots`` (same quotes, priced together); later bars take theirs from the prefetch, never
        before their bar."""
        underlying, expiries, rows = key
        expiries = None if expiries is None else list(expiries)
        filters = {} if rows is None else {"roots": rows[0], "is_call": rows[1]}
        batch = getattr(self.market, "snapshots", None)
        if (decision_bars is None or not callable(batch) or self.run.mode != "backtest"
                or not decision_bars[self.i]):
            return self.market.snapshot(underlying, self.now, expiries, **filters)
        bars = self.i + np.flatnonzero(decision_bars[self.i:self._session_end])
        use_key = (underlying, rows, id(decision_bars))
        asked, offered = self._batch_use.get(use_key, (1, 1))
        if not _batch_pays(asked, offered, len(bars), self._batch_rows.get(use_key)):
            snap = self.market.snapshot(underlying, self.now, expiries, **filters)
            self._batch_rows[use_key] = len(snap)
            return snap
        snaps = batch(underlying, [self.timeline.stamps[b] for b in bars], expiries, **filters)
        self._batch_rows[use_key] = len(snaps[0])
        for b, snap in zip(bars[1:], snaps[1:]):
            if snap is not None:  # None: the source does not batch this one; asked again at its bar
                self._prefetched[(key, int(b))] = snap
        return snaps[0]

    def listed_expiries(self, underlying: str) -> list[dt.date]:
        """Expiries of ``underlying`` listed today, ascending (from the source's listing when it has one,
        else from the full chain)."""
        key = (underlying, self.today)
        got = self._listed.get(key)
        if got is None:
            lister = getattr(self.market, "listed_expiries", None)
            got = list(lister(underlying, self.today)) if callable(lister) else self.chain(underlying).expiries
            if len(self._listed) > 64:
                self._listed.clear()
            self._listed[key] = got
        return got

    def price(self, symbol: str) -> float:
        if symbol == self.underlying:
            return float(self._close[self.i])
        cached = self._other_prices.get(symbol)
        if cached is None:
            bars = self.market.bars(symbol)
            cached = (bars.index.asi8, bars["close"].to_numpy())
            self._other_prices[symbol] = cached
        ns, close = cached
        j = int(np.searchsorted(ns, self.timeline.ns[self.i], side="right")) - 1
        return float(close[max(j, 0)])

    # ------------------------------------------------------------------- loop
    def run_all(self) -> None:
        """Drive every bar without Backtrader (tests, replay)."""
        for i in range(len(self.timeline)):
            self.on_bar(i)
        self.finish()

    def on_bar(self, i: int) -> None:
        """Bar ``i``: session start when it opens one, the broker's fills and marks, each strategy's open
        trades and its decision when due, session end when it closes one, the account value after it."""
        self.i = i - 1
        self.step()

    def step(self) -> None:
        """The bar after the current one (:meth:`on_bar`'s body; Backtrader's ``next`` is this method, one
        call a bar)."""
        self.i = i = self.i + 1
        if i < self._quiet_until:  # nothing can happen at this bar; its equity was written with the stretch
            return
        first, last, pos, loop = self._bar_flags
        if first[i]:
            self._start_session()
        self.broker.on_bar(pos[i], self.timeline.stamps[i])
        for ctx, sid, strat, decides in loop:
            if ctx._idle_epoch != ctx._wake or i >= ctx._idle_until:
                self._manage(ctx, sid, strat, i)
            if decides[i]:
                strat.on_decision_time(ctx)
        if last[i]:
            self._end_session()
        self.equity_curve[i] = self.broker._value
        if self.quiet_bars and not self.broker._working and not last[i]:
            self._plan_quiet(i)

    def _plan_quiet(self, i: int) -> None:
        """After bar ``i`` of a backtest: the bars up to the next one at which anything can happen are quiet.

        A bar can act only through a working order (none now), a decision bar, a strategy's ``manage``
        (skipped until ``ctx._idle_until`` while its promise holds: every strategy here has promised that, or
        has no open trade) or the session's last bar (settlement, expiries). None of these changes during
        a quiet stretch (the epoch moves only through events, which happen on busy bars), so the stretch's
        account values are this bar's cash plus the open positions' precomputed value at each minute,
        written now in one slice: the same floats the broker computes bar by bar. A quiet bar then costs
        :meth:`step` one comparison."""
        nxt = self._session_end - 1  # the session's last bar
        for ctx, after in self._quiet_plan:
            if ctx._idle_epoch != ctx._wake:
                return  # this strategy manages its trades every bar
            until = ctx._idle_until
            if until < nxt:
                nxt = until
            until = after[i]
            if until < nxt:
                nxt = until
        if nxt <= i + 1:
            return
        pv = self.broker._position_value
        # the stretch's minutes are consecutive positions of one session: each one's position value is pv at it,
        # or pv's last minute past its end (a one-minute pv: no open position)
        p0 = self._bar_flags[2][i + 1]
        p1 = p0 + nxt - i - 1
        if p1 <= len(pv):
            np.add(pv[p0:p1], self.portfolio.cash, out=self.equity_curve[i + 1:nxt])
        else:
            pos = self.timeline.in_session[i + 1:nxt]
            self.equity_curve[i + 1:nxt] = self.portfolio.cash + pv[np.minimum(pos, len(pv) - 1)]
        self._quiet_until = nxt
        self.quiet_bar_count += nxt - i - 1

    def _manage(self, ctx, sid, strat, i: int) -> None:
        """``manage`` of each open trade of one strategy. In a backtest, when every trade promised
        (``ctx.idle_until``) that nothing happens before some bar, or the strategy has no open trade,
        the strategy is skipped until the earliest such bar or until something its promises depend on
        changes (:meth:`_changed`): anything in the run (order events, fills, vetoes, settlements, session
        starts), or only its own orders and trades and session starts when every promise said so
        (``own=True``: a strategy without open trades, whose trades only appear through its own fills).

        A trade whose promise is about itself alone (``own="trade"``: ``credit_exit``'s) is kept by bar in
        ``ctx._kept_naps`` until that bar, a session start or settlement, or an event of its own orders and
        fills: while it holds, the trade is not managed again when the strategy is (another of its trades'
        event or bar)."""
        trades = self.portfolio.open_trades(sid, exited=False)
        ctx._idle_own = False  # while manage runs, any change counts
        wake = ctx._wake
        kept = ctx._kept_naps
        if not trades:
            if kept:
                kept.clear()
            if self._can_idle:  # trades only appear through fills of the strategy's own orders
                ctx._idle_until, ctx._idle_epoch, ctx._idle_own = self._session_end, wake, True
            return
        if not self._can_idle:
            for trade in trades:
                strat.manage(ctx, trade)
            return
        ctx._naps = naps = {}
        ctx._naps_own = True
        wide = ctx._naps_wide
        wide.clear()
        start = i - self._bar_flags[2][i]
        until = self._session_end
        every = True  # every trade promised
        try:
            for trade in trades:
                tid = trade.trade_id
                nap = kept.get(tid)
                if nap is not None and i < nap:  # its own promise holds: nothing of its own happened since
                    if nap < until:
                        until = nap
                    continue
                before = ctx._wake
                strat.manage(ctx, trade)
                bar = naps.get(tid)
                if bar is None:
                    every = False
                    if nap is not None:  # an expired promise (unless an event during manage dropped it)
                        kept.pop(tid, None)
                    continue
                nap = start + bar
                if nap < until:
                    until = nap
                if ctx._wake == before and tid not in wide:
                    kept[tid] = nap
                else:  # an event during its manage (or a promise not about it alone): asked again when managed
                    kept.pop(tid, None)
        finally:
            ctx._naps = None
        if every and ctx._wake == wake:
            ctx._idle_until = until
            ctx._idle_epoch = wake
            ctx._idle_own = ctx._naps_own

    def _changed(self, strategy: str | None = None, trade_id: str | None = None) -> None:
        """Something a strategy's idle promise may depend on changed: the run's epoch moves, and every
        strategy's promise breaks, but for a promise about its own trades only (``own``) when ``strategy``
        (the strategy whose order or trade this is) is another one. None: every promise breaks. A promise
        about one trade alone (``own="trade"``) breaks only for that trade (``trade_id``: the trade the
        order or fill is of), a settlement or a session start."""
        self._epoch += 1
        for ctx in self.contexts:
            if strategy is None:
                ctx._wake += 1
                if ctx._kept_naps:
                    ctx._kept_naps.clear()
            elif ctx.strategy_id == strategy:
                ctx._wake += 1
                if trade_id in ctx._kept_naps:
                    del ctx._kept_naps[trade_id]
            elif not ctx._idle_own:
                ctx._wake += 1

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        summary = self.summary()
        self.hook.on_run_end(run=self.run, summary=summary)

    # ----------------------------------------------------------- sessions
    def _start_session(self) -> None:
        day = self.today
        self._changed()
        self._prefetched.clear()
        for key, (asks, offered) in self._session_asks.items():
            use = self._batch_use.setdefault(key, [0, 0])
            use[0] += asks
            use[1] += offered
        self._session_asks.clear()
        tl, i = self.timeline, self.i
        self._session_end = end = tl.session_ends[tl.day_codes[i]]
        self.broker.start_session(day)
        self._settle(SettlementStyle.AM, self.now.to_pydatetime())
        minutes = None  # the session's bar labels, sliced once for the providers and managers that ask
        for provider in self.feature_providers:
            if minutes is None:
                minutes = tl.index[i:end]
            provider.on_session_start(day, self.market, minutes)
        for rm in self.risk_gate.risk_managers:  # circuit breakers watch the session (strikebench.plugins.breakers)
            hook = getattr(rm, "on_session_start", None)
            if hook is not None:
                if minutes is None:
                    minutes = tl.index[i:end]
                hook(day, self.market, minutes)
        self.hook.on_session_start(run=self.run, day=day)
        for k, (sid, strat) in enumerate(self.strategies):
            strat.on_session_start(self.contexts[k])

    def _end_session(self) -> None:
        day = self.today
        close_time = self.now.to_pydatetime() + dt.timedelta(minutes=1)
        self.broker.end_session(close_time)
        self._settle(SettlementStyle.PM, close_time)
        for k, (sid, strat) in enumerate(self.strategies):
            strat.on_session_end(self.contexts[k])
        equity = self.broker.getvalue()
        self.equity_by_day.append((day, equity))
        view = None
        for rm in self.risk_gate.risk_managers:
            hook = getattr(rm, "on_session_end", None)
            if hook is not None:
                if view is None:
                    view = self.portfolio.view(day)
                hook(day, equity, view)
        self.risk_gate.flush()
        self.hook.on_session_end(run=self.run, day=day, equity=equity)
        if self._on_session_end_cb is not None:
            self._on_session_end_cb(day, equity)

    def _settle(self, style: SettlementStyle, at: dt.datetime) -> None:
        day = self.today
        expiring = {leg.contract for trade in self.portfolio.open_trades() for leg in trade.legs
                    if leg.contract.expiry == day and leg.contract.settlement_style == style}
        if not expiring:
            return
        self._changed()
        values = {c: float(self.market.settlement_value(c)) for c in expiring}
        # a market that had no real print for a contract says so (FileMarket: open/close approximation)
        note_of = getattr(self.market, "settlement_note", None)
        notes = {c: note_of(c) for c in expiring} if note_of is not None else {}
        for trade in self.broker.settle(sorted(expiring), values, at):
            said = [notes[leg.contract] for leg in trade.legs if notes.get(leg.contract)]
            if said:
                trade.settlement_note = "approximated: " + "; ".join(dict.fromkeys(said))
                self.approximated_settlements += 1
            self.hook.on_trade_closed(run=self.run, trade=trade)

    # ------------------------------------------------------------- events
    def record_decision(self, decision, snapshot: ChainSnapshot | None) -> None:
        self.decisions.append(decision)
        fire(self.hook.on_decision, run=self.run, decision=decision, snapshot=snapshot)

    def record_veto(self, order: Order, vetoes: list[Veto]) -> None:
        reason = "; ".join(f"{v.rule}: {v.reason}" if v.rule else v.reason for v in vetoes)
        self._changed(order.strategy, order.trade_id)
        previous = order.status
        order.status = OrderStatus.REJECTED
        order.status_reason = f"vetoed: {reason}"
        self.vetoes.append((order, vetoes))
        fire(self.hook.on_order_event, run=self.run, order=order.snapshot(),
             event=OrderTransition(order.client_id, previous, OrderStatus.REJECTED, self.now.to_pydatetime(),
                                   order.status_reason))

    def _on_transition(self, order: Order, transition: OrderTransition) -> None:
        self._changed(order.strategy, order.trade_id)
        fire(self.hook.on_order_event, run=self.run, order=order.snapshot(), event=transition)

    def _on_fill(self, order: Order, fill: Fill, trade: TradeRecord) -> None:
        self._changed(order.strategy, trade.trade_id)
        fire(self.hook.on_fill, run=self.run, order=order.snapshot(), fill=fill)
        if not trade.is_open:
            fire(self.hook.on_trade_closed, run=self.run, trade=trade)

    # ------------------------------------------------------------ summary
    def summary(self) -> dict:
        p = self.portfolio
        closed = p.closed_trades()
        pnl = [t.realized_pnl for t in closed]
        equity = np.array([e for _, e in self.equity_by_day]) if self.equity_by_day else np.array([p.cash])
        peak = np.maximum.accumulate(np.r_[p.initial_cash, equity])
        drawdown = float(np.max(peak - np.r_[p.initial_cash, equity]))
        curve = np.r_[p.initial_cash, self.equity_curve[: self.i + 1]]
        bar_drawdown = float(np.max(np.maximum.accumulate(curve) - curve))
        wins = [x for x in pnl if x > 0]
        return {
            "run_id": self.run.run_id,
            "completed": self.finished and self.i == len(self.timeline) - 1,
            "sessions": len(self.equity_by_day),
            "bars": self.i + 1,
            "initial_cash": p.initial_cash,
            "final_cash": p.cash,
            "final_equity": float(self.broker.getvalue()),
            "realized_pnl": round(sum(pnl), 2),
            "fees": p.fees_cents / 100.0,
            "trades": len(closed),
            "open_trades": len(p.open_trades()),
            "win_rate": (len(wins) / len(pnl)) if pnl else None,
            "max_drawdown": round(drawdown, 2),
            "max_drawdown_per_bar": round(bar_drawdown, 2),
            "decisions": len(self.decisions),
            "vetoed_entries": sum(1 for d in self.decisions
                                  if d.action == "SKIP" and str(d.reason).startswith("risk:")),
            "vetoed_orders": len(self.vetoes),
            "approximated_settlements": self.approximated_settlements,
        }


#: rows at which pricing one more minute of a batch costs about what one snapshot's fixed part does (the synthetic
#: market: a snapshot ~500 us + ~0.36 us a row, each further minute of a batch ~0.36 us a row)
_BATCH_FIXED_ROWS = 1400


def _batch_pays(asked: int, offered: int, k: int, rows: int | None) -> bool:
    """Whether one batch of ``k`` decision minutes is expected to cost less than a snapshot at each minute that
    asks, the share of minutes that ask being ``asked / offered`` (past sessions). A snapshot costs ``S``; the
    batch about ``S`` for its first minute and ``r S`` for each further one, ``r = rows / (rows + fixed)`` (its
    fixed part is paid once): it pays when ``asked / offered * k > 1 + r (k - 1)``. A request not priced yet
    counts ``r = 1/2``. A decision a risk rule blocks does not use its prefetched chain; whichever way it is
    fetched, a snapshot is the same."""
    share = 0.5 if rows is None else rows / (rows + _BATCH_FIXED_ROWS)
    return asked * k > offered * (1.0 + share * (k - 1))


def _row_filter(roots, right) -> tuple | None:
    """(sorted roots or None, is_call or None) of a chain request; None when it keeps every row."""
    if roots is None and right is None:
        return None
    if roots is not None:
        roots = tuple(sorted({roots} if isinstance(roots, str) else set(roots)))
    is_call = None
    if right is not None:
        r = str(getattr(right, "value", right)).upper()
        if r not in ("C", "P", "CALL", "PUT"):
            raise ValueError(f"right must be 'C' or 'P', got {right!r}")
        is_call = r in ("C", "CALL")
    return roots, is_call


def _row_mask(snapshot: ChainSnapshot, rows: tuple) -> np.ndarray:
    roots, is_call = rows
    mask = np.ones(len(snapshot), dtype=bool)
    if roots is not None:
        mask &= np.isin(snapshot.root, list(roots))
    if is_call is not None:
        mask &= snapshot.is_call == is_call
    return mask
