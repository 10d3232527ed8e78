"""Every hook strikebench calls, in one module.

Two kinds of hooks:

* **Registration hooks** (``register_*``) receive a ``register`` callable. A plugin
  calls ``register(SomeClass)`` once per component it provides; the component's
  name, parameter model and one-line summary come from the class
  (``name``, ``Params`` and the first line of its docstring; see
  :mod:`strikebench.api`). ``register(SomeClass, name="other")`` overrides the
  name. Built-in components register through these same hooks.
* **Event hooks** (``on_*``) are called for every plugin that implements them,
  in no guaranteed order, with the run's :class:`~strikebench.api.RunInfo` as
  first argument. Their return value is ignored. A journal, a report writer or
  a notifier hangs here.

One **decision hook**, :func:`check_order`, is asked before every order is sent to
any broker: all implementations are called and any non-None :class:`~strikebench.api.Veto`
blocks the order; every reason is kept in the journal.

Hooks evolve only by adding arguments, so a plugin written today keeps working:
pluggy passes each implementation only the arguments it names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:  # pragma: no cover - annotations only
    import datetime as dt

    from strikebench.api import Decision, OrderRequest, RunInfo, Veto
    from strikebench.engine.broker import OrderTransition
    from strikebench.options.chain import ChainSnapshot
    from strikebench.options.orders import Fill, Order, TradeRecord
    from strikebench.portfolio import PortfolioView

PROJECT = "strikebench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[..., None]


# --------------------------------------------------------------- registration
@hookspec
def register_strategies(register: Register) -> None:
    """Register strategy classes.

    :param register: call ``register(cls)`` for each :class:`~strikebench.api.Strategy`
        subclass this plugin provides; ``register(cls, name="...")`` overrides ``cls.name``.
    :return: nothing; registrations go through ``register``.

    Called once when the plugin manager is built. Two plugins registering the
    same name is an error naming both distributions.
    """


@hookspec
def register_feeds(register: Register) -> None:
    """Register data-feed classes (sources of bars and option chains).

    :param register: call ``register(cls)`` for each :class:`~strikebench.api.DataFeed`
        subclass; the config's ``data.source`` selects one by name.
    :return: nothing.

    Called once when the plugin manager is built.
    """


@hookspec
def register_fill_models(register: Register) -> None:
    """Register fill models (how a working order fills against a chain snapshot).

    :param register: call ``register(cls)`` for each :class:`~strikebench.api.FillModel`
        subclass; the config's ``broker.fill_model.name`` selects one.
    :return: nothing.

    Called once when the plugin manager is built.
    """


@hookspec
def register_risk_managers(register: Register) -> None:
    """Register risk managers (rules consulted before every order).

    :param register: call ``register(cls)`` for each :class:`~strikebench.api.RiskManager`
        subclass; each entry of the config's ``risk`` list selects one.
    :return: nothing.

    Called once when the plugin manager is built.
    """


@hookspec
def register_brokers(register: Register) -> None:
    """Register brokers (``backtest``, ``paper``, ``tradier``, ``ibkr``...).

    :param register: call ``register(cls)`` for each :class:`~strikebench.api.BrokerPlugin`
        subclass; the config's ``broker.name`` selects one.
    :return: nothing.

    Called once when the plugin manager is built.
    """


@hookspec
def register_commissions(register: Register) -> None:
    """Register commission and fee schedules.

    :param register: call ``register(cls)`` for each :class:`~strikebench.api.CommissionModel`
        subclass; the config's ``broker.commission.name`` selects one.
    :return: nothing.

    Called once when the plugin manager is built.
    """


@hookspec
def register_context_providers(register: Register) -> None:
    """Register context/feature providers (opening range, VWAP, sentiment...).

    :param register: call ``register(cls)`` for each :class:`~strikebench.api.ContextProvider`
        subclass; the config's ``features`` list selects them and strategies read
        their values from ``ctx.features``.
    :return: nothing.

    Called once when the plugin manager is built.
    """


# --------------------------------------------------------------------- events
@hookspec
def on_run_start(run: "RunInfo") -> None:
    """A run (backtest, replay or paper session) is about to start.

    :param run: the run's identity, mode, resolved config and output folder.
    :return: ignored.

    Called once per run, before the first bar.
    """


@hookspec
def on_session_start(run: "RunInfo", day: "dt.date") -> None:
    """A trading session begins.

    :param run: the run.
    :param day: the session's date (America/New_York).
    :return: ignored.

    Called before the session's first bar is processed.
    """


@hookspec
def on_decision(run: "RunInfo", decision: "Decision", snapshot: "ChainSnapshot | None") -> None:
    """A strategy reached a decision (TRADE, SKIP or EXIT).

    :param run: the run.
    :param decision: what was decided, why, the candidates considered and the
        checksum of the chain snapshot it saw.
    :param snapshot: the chain snapshot the decision saw (None when it read no
        chain); its ``checksum`` equals ``decision.snapshot_checksum``.
    :return: ignored.

    Called once per decision, before any resulting order is sent.
    """


@hookspec
def on_order_event(run: "RunInfo", order: "Order", event: "OrderTransition") -> None:
    """An order changed state (submitted, accepted, partially filled, filled,
    cancelled, rejected, expired) or was vetoed by a risk check.

    :param run: the run.
    :param order: the order after the transition.
    :param event: the transition: previous and new status, time and reason.
    :return: ignored.

    Called once per transition, in order, for every broker.
    """


@hookspec
def on_fill(run: "RunInfo", order: "Order", fill: "Fill") -> None:
    """An order (or part of it) filled.

    :param run: the run.
    :param order: the order that filled.
    :param fill: net price, quantity, per-leg prices, fees and time.
    :return: ignored.

    Called once per fill, after the portfolio has applied it.
    """


@hookspec
def on_trade_closed(run: "RunInfo", trade: "TradeRecord") -> None:
    """A strategy trade (all its legs) is closed: by an exit order or by settlement.

    :param run: the run.
    :param trade: entry and exit prices, fees, realized P&L and exit reason.
    :return: ignored.

    Called once per trade.
    """


@hookspec
def on_session_end(run: "RunInfo", day: "dt.date", equity: float) -> None:
    """A trading session ended and expiring positions were settled.

    :param run: the run.
    :param day: the session's date.
    :param equity: account value after settlement, in dollars.
    :return: ignored.

    Called after the session's last bar.
    """


@hookspec
def on_breaker_trip(run: "RunInfo", trip: "BreakerTrip") -> None:
    """A circuit breaker (a configured risk manager) tripped.

    :param run: the run.
    :param trip: a :class:`strikebench.api.BreakerTrip`: rule, scope, the bar it tripped on, reason,
        the figures compared, and how it resets.
    :return: ignored.

    Called once per trip, at the first order check after it or at the session's end, whichever comes first.
    """


@hookspec
def on_run_end(run: "RunInfo", summary: dict) -> None:
    """The run finished (or stopped on an error).

    :param run: the run.
    :param summary: final figures (equity, trades, P&L, drawdown) and ``completed``
        (False when the run stopped early).
    :return: ignored.

    Called once per run.
    """


# ------------------------------------------------------------------- decision
@hookspec
def check_order(run: "RunInfo", request: "OrderRequest", portfolio: "PortfolioView") -> "Veto | None":
    """Asked before every order is sent: return a Veto to block it, None to allow it.

    :param run: the run.
    :param request: the order about to be sent: legs, quantity, limit, whether it
        opens or closes risk, its worst-case loss and the time.
    :param portfolio: a read-only view of positions, open trades, cash and the
        day's realized P&L.
    :return: ``Veto(reason)`` to block the order, or None.

    Every implementation is called (not first-result); any veto blocks the order
    and all reasons are recorded. Configured risk managers are consulted through
    this same gate.
    """
