"""The public plugin API: base classes for every plugin kind and the records hooks receive.

A plugin author imports from here (and from :mod:`strikebench.options`), never
from Backtrader. Every plugin class has:

* ``name`` -- the name YAML selects it by (``strategies: [{name: credit_vertical}]``);
* ``Params`` -- a :class:`PluginParams` (pydantic) model of its YAML ``params``,
  declared next to the code; unknown keys are errors;
* a docstring whose first line is the one-line summary ``strikebench plugins`` shows.

The engine builds each configured plugin as ``cls(params)`` with a validated,
frozen ``Params`` instance.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

__all__ = [
    "PluginParams",
    "Plugin",
    "Strategy",
    "DataFeed",
    "FillModel",
    "RiskManager",
    "BreakerTrip",
    "BrokerPlugin",
    "CheckRow",
    "CommissionModel",
    "ContextProvider",
    "PLUGIN_KINDS",
    "RunInfo",
    "Veto",
    "Decision",
    "Candidate",
    "OrderRequest",
]


class PluginParams(BaseModel):
    """Base of every plugin's parameter model: frozen, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class Plugin:
    """Common shape of every plugin class."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[PluginParams]] = PluginParams
    kind: ClassVar[str] = ""

    def __init__(self, params: PluginParams | None = None):
        self.params = params if params is not None else self.Params()

    @classmethod
    def summary(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0].strip() if doc else ""


class Strategy(Plugin):
    """A trading strategy: decides at scheduled times through a context object.

    The engine calls, with a :class:`strikebench.engine.context.StrategyContext` ``ctx``:

    * ``on_session_start(ctx)`` before a session's first bar;
    * ``on_decision_time(ctx)`` at each of :meth:`decision_times` (America/New_York);
    * ``manage(ctx, trade)`` every bar for each of this strategy's open trades;
    * ``on_session_end(ctx)`` after the session's last bar.

    Every method is optional. ``underlying`` names the chain the strategy reads.
    """

    kind = "strategy"
    underlying: ClassVar[str] = "SPX"

    def decision_times(self) -> list[dt.time]:
        """Times of day the engine calls :meth:`on_decision_time` (default: ``params.entry_times``)."""
        return list(getattr(self.params, "entry_times", []) or [])

    def chain_underlying(self) -> str:
        return getattr(self.params, "underlying", None) or self.underlying

    def on_session_start(self, ctx) -> None:
        pass

    def on_decision_time(self, ctx) -> None:
        pass

    def manage(self, ctx, trade) -> None:
        pass

    def on_session_end(self, ctx) -> None:
        pass


class DataFeed(Plugin):
    """A source of underlying bars and option chains (see :class:`strikebench.options.source.MarketData`)."""

    kind = "feed"


class FillModel(Plugin):
    """Decides whether and at what net price a working order fills against the legs' quotes.

    Write :meth:`model_price` (where in the market the order trades, unrounded, vectorised over
    minutes); the inherited :meth:`fill_price` turns it into the fill by the one rule of
    :mod:`strikebench.options.fills` (tradeable quotes, tick, never worse than the natural,
    no-arbitrage range, limit). The backtest broker applies that rule to whatever ``fill_price``
    answers, so an overriding plugin cannot fill off the grid or beyond a combo's range.
    """

    kind = "fill_model"
    #: fill at the order's limit when marketable (never worse than the natural) instead of at the model price
    fills_at_limit: bool = False

    def model_price(self, ratios, bid, ask):
        raise NotImplementedError(f"fill model {type(self).__name__} defines neither model_price nor fill_price")

    def fill_price(self, order, bid, ask) -> "float | None":
        """Signed net fill price per combo, or None when the order does not fill now."""
        from strikebench.options.fills import combo_pricing, settle_fill_prices, tradeable

        pricing = combo_pricing(order.legs, as_of=order.created_at)
        ratios = pricing.ratios  # the order's ratios (float64, read-only: shared by every asker)
        if not tradeable(ratios, bid, ask):
            return None
        raw = float(self.model_price(ratios, bid, ask))
        limit = order.limit_price if order.order_type.value == "limit" else None
        price = settle_fill_prices(pricing, raw, bid, ask,
                                   limit=limit, at_limit=self.fills_at_limit and limit is not None)
        return None if price != price else price


class RiskManager(Plugin):
    """A rule consulted before every order; returns a :class:`Veto` to block it.

    Override :meth:`check`. By default a risk manager guards entries only:
    :meth:`applies_to` lets every closing order through, so an entry rule can
    never trap a position.
    """

    kind = "risk_manager"

    def applies_to(self, request: "OrderRequest") -> bool:
        return request.opens

    def check(self, request: "OrderRequest", portfolio) -> "Veto | None":
        return None

    def blocks_entries(self, strategy: str, at: dt.datetime, portfolio) -> "Veto | None":
        """Optional: the veto *every* opening order of ``strategy`` at ``at`` would meet now, whatever its legs
        and price (a limit on open trades, a time window, a tripped breaker); None when nothing blocks all
        entries or the rule depends on the order. Strategies ask it before they build a chain
        (``ctx.entries_blocked()``), so a decision that cannot be acted on costs no chain. A manager that
        answers it must veto every such order in :meth:`check` with the same veto (the built-in ones call
        this from ``check``). Only managers that keep the default :meth:`applies_to` are asked."""
        return None

    #: what :meth:`blocks_entries_until` returns for an answer that holds until the account changes
    UNTIL_CHANGED = dt.datetime.max.replace(tzinfo=dt.timezone.utc)

    def blocks_entries_until(self, strategy: str, at: dt.datetime, portfolio) -> "dt.datetime | None":
        """Optional, with :meth:`blocks_entries`: until when (exclusive) the answer it just gave for ``strategy`` at
        ``at`` stays the same, reason text included, while the account's trades and orders do not change (no
        order event, fill or settlement of any strategy, no new session). The engine then answers later
        decisions of a backtest before that time from the last answer without asking. ``UNTIL_CHANGED``: only
        such a change can alter it (a limit on open trades); a time (a window's next edge) also ends it;
        None (the default): no promise, asked at every decision (a rule that reads anything else: the market,
        its own clock, a reason naming the minute)."""
        return None

    # Optional: a rule that watches the market or the account between orders (circuit breakers,
    # strikebench.plugins.breakers) overrides these; the engine calls them for every configured manager.
    def on_session_start(self, day: dt.date, market, minutes) -> None:
        """A session begins: ``market`` is the run's MarketData, ``minutes`` the session's bar labels."""

    def on_session_end(self, day: dt.date, equity: float, portfolio) -> None:
        """A session ended (after settlement): ``equity`` the account's closing value, ``portfolio`` a view."""

    def pop_trips(self, upto: "dt.datetime | None" = None) -> "list[BreakerTrip]":
        """Breaker trips that happened at or before ``upto`` (all when None), each handed out once; the engine
        journals them through the ``on_breaker_trip`` hook."""
        return []


@dataclass(frozen=True)
class CheckRow:
    """One line of ``strikebench broker check``: what was checked, whether it passed, what the broker said.

    ``ok`` is True (passed), False (failed: the command exits non-zero) or None (information, or not checked).
    ``fix`` says what to do about a failure (the environment variable to set, the permission to ask for)."""

    item: str  # "credentials", "account", "option buying power", "market clock", "data permissions", "preview"...
    ok: bool | None
    detail: str
    fix: str = ""


class BrokerPlugin(Plugin):
    """A broker: simulated (backtest, paper) or live (tradier, ibkr).

    A live broker plugin has ``connect(*, run_dir, market, fill_model, commission, underlying)`` returning a
    :class:`strikebench.live.broker_api.LiveBroker`; it may also answer the two optional questions below."""

    kind = "broker"

    def trades_real_money(self) -> bool:
        """True when this configuration reaches a real-money account (Tradier ``environment: live``, an IBKR live
        port): ``strikebench trade`` / ``paper`` then refuse to start without ``--live``."""
        return False

    def check(self, *, resolved, preview: bool = False) -> "list[CheckRow]":
        """What ``strikebench broker check`` shows: credentials, account, option buying power, market clock, data
        permissions and, only with ``preview``, a multileg order previewed (never placed). Reads only: nothing
        is sent but read requests (and the preview, when asked). ``resolved`` is the whole ResolvedConfig (its
        market, strategies and underlying). A plugin without it answers NotImplementedError."""
        raise NotImplementedError


class CommissionModel(Plugin):
    """Commissions and exchange/regulatory fees per contract."""

    kind = "commission"


class ContextProvider(Plugin):
    """Computes features (opening range, VWAP, sentiment...) strategies read from ``ctx.features``.

    The engine calls, for each provider listed under ``features:`` in the YAML:

    * ``on_session_start(day, market, minutes)`` before a session's first bar, with the
      session's bar labels (tz-aware America/New_York, ``minutes[i]`` is bar ``i`` of the
      session); the preferred place to compute the whole session's feature arrays at once
      from ``market.bars(symbol)``;
    * ``values(i)`` at every bar ``i`` of the session (0 = 09:30), before any strategy
      runs: a dict of feature name -> float merged into ``ctx.features`` for that bar.

    **No look-ahead**: the values at bar ``i`` may use bars up to and including ``i``
    (quotes and bars are as of a bar's close) and nothing later. A value not available
    yet (the opening range before its window ends) is ``nan``. :meth:`feature_names`
    lists every name :meth:`values` returns; two providers of one run may not share a name.
    """

    kind = "context_provider"

    def feature_names(self) -> tuple[str, ...]:
        """Every name :meth:`values` returns (fixed for the run)."""
        return ()

    def on_session_start(self, day: dt.date, market, minutes) -> None:
        """A session begins: ``market`` is the run's :class:`~strikebench.options.source.MarketData`,
        ``minutes`` the session's bar labels (a tz-aware ``pd.DatetimeIndex``)."""

    def values(self, i: int) -> dict[str, float]:
        """Feature values at bar ``i`` of the current session, from bars ``0..i`` only."""
        return {}


#: hook name -> (kind, base class)
PLUGIN_KINDS: dict[str, tuple[str, type[Plugin]]] = {
    "register_strategies": ("strategy", Strategy),
    "register_feeds": ("feed", DataFeed),
    "register_fill_models": ("fill_model", FillModel),
    "register_risk_managers": ("risk_manager", RiskManager),
    "register_brokers": ("broker", BrokerPlugin),
    "register_commissions": ("commission", CommissionModel),
    "register_context_providers": ("context_provider", ContextProvider),
}


@dataclass(frozen=True)
class RunInfo:
    """Identity of one run, passed to every event hook."""

    run_id: str
    name: str
    mode: str  # "backtest" | "replay" | "paper"
    config: Any = None
    output_dir: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Veto:
    """A risk check's refusal; ``reason`` is kept in the journal."""

    reason: str
    rule: str = ""


@dataclass(frozen=True)
class BreakerTrip:
    """A circuit breaker tripped: no new risk in ``scope`` until ``resets`` says otherwise.

    ``tripped_at`` is the bar (New York) on which the rule was first met; ``figures`` the numbers the
    rule compared (journaled as JSON)."""

    rule: str
    scope: str  # "account" or "strategy:<id>"
    tripped_at: dt.datetime
    reason: str
    figures: dict = field(default_factory=dict)
    resets: str = ""


@dataclass(frozen=True)
class OrderRequest:
    """An order about to be sent, as risk checks see it."""

    order: Any  # strikebench.options.orders.Order
    at: dt.datetime
    strategy: str
    opens: bool
    quantity: int
    est_price: float | None  # signed net price per combo the order is expected to fill at
    worst_case_loss: float  # dollars, at est_price (inf when unbounded)


class _Factory:
    """The default of a field made by a factory (a new dict per object), in an ``__init__`` written out."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


@dataclass(frozen=True)
class Candidate:
    """One setup a strategy considered at a decision."""

    description: str
    legs: tuple = ()
    score: float | None = None
    credit: float | None = None
    details: dict = field(default_factory=dict)

    def __init__(self, description: str, legs: tuple = (), score: float | None = None, credit: float | None = None,
                 details: dict = _FACTORY):
        # the dataclass' __init__ (the same fields, defaults and order) setting the instance's dict at once: a frozen
        # dataclass' own sets each field through object.__setattr__ (~2x the cost; a decision makes a dozen)
        self.__dict__.update(description=description, legs=legs, score=score, credit=credit,
                             details={} if details is _FACTORY else details)


@dataclass(frozen=True)
class Decision:
    """A strategy's decision at one time: TRADE or SKIP, why, and what it saw."""

    strategy: str
    decided_at: dt.datetime
    action: str  # "TRADE" | "SKIP" | "EXIT"
    reason: str
    candidates: tuple[Candidate, ...] = ()
    chosen: int | None = None
    snapshot_checksum: str | None = None
    context: dict = field(default_factory=dict)
    ruleset_version: str = ""
    decision_id: str | None = None

    def __init__(self, strategy: str, decided_at: dt.datetime, action: str, reason: str,
                 candidates: tuple[Candidate, ...] = (), chosen: int | None = None, snapshot_checksum: str | None = None,
                 context: dict = _FACTORY, ruleset_version: str = "", decision_id: str | None = None):
        # (as Candidate's: the dataclass' __init__, the dict set at once)
        self.__dict__.update(strategy=strategy, decided_at=decided_at, action=action, reason=reason,
                             candidates=candidates, chosen=chosen, snapshot_checksum=snapshot_checksum,
                             context={} if context is _FACTORY else context, ruleset_version=ruleset_version,
                             decision_id=decision_id)
