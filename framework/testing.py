"""Test kit for strategy and plugin authors: small markets whose numbers you can check by hand.

* :func:`make_chain` -- one hand-built chain snapshot (flat IV, Black-Scholes prices,
  quotes = model price -/+ a half spread, tick-rounded).
* :class:`ModelMarket` -- a tiny deterministic market (implements
  :class:`~strikebench.options.source.MarketData`): the underlying follows a path
  you give (or stays flat), chains are priced from a flat IV, and any contract's
  quotes can be pinned to exact bid/ask values, per minute if you like.
* :func:`run_strategy` -- run one strategy on a market and get the engine back
  (orders, trades, decisions, portfolio) to assert on; :func:`orders_of`,
  :func:`trades_of`, :func:`decisions_of` and :func:`vetoes_of` read it back in time order.
* :class:`Clock` -- a New York clock over real XNYS sessions, for pinned quotes that
  change at given minutes and for hand-built risk checks.
* :class:`ScriptedStrategy` -- opens given legs at a given minute (and optionally
  closes them), to exercise a fill model, a risk manager or a feed without writing a strategy.
* :func:`order_request` and :func:`portfolio_view` -- what a risk manager's ``check``
  receives, built by hand.
* :func:`plugin_registry` -- the built-ins plus your plugin module, without installing it, to
  validate a YAML config that names your components (``load_config(path, registry=...)``).
"""

from __future__ import annotations

import datetime as dt
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from strikebench.api import Strategy
from strikebench.calendar import NY, MarketCalendar, years_between
from strikebench.options.chain import ChainSnapshot, LegQuotes
from strikebench.options.contracts import OptionContract, settlement_time
from strikebench.options.ticks import round_to_tick
from strikebench.pricing import bsm

__all__ = [
    "make_chain", "ModelMarket", "run_strategy", "strike_grid", "Clock", "ScriptedStrategy",
    "orders_of", "trades_of", "decisions_of", "vetoes_of", "order_request", "portfolio_view", "plugin_registry",
]

RATE = 0.045
DIV_YIELD = 0.015


def strike_grid(spot: float, width: float = 400.0, step: float = 5.0) -> np.ndarray:
    """Strikes every ``step`` points within ``width`` of ``spot``."""
    center = round(spot / step) * step
    return np.arange(center - width, center + width + step / 2, step)


def _as_ts(at) -> pd.Timestamp:
    ts = pd.Timestamp(at)
    return ts.tz_localize(NY) if ts.tzinfo is None else ts.tz_convert(NY)


def _price_rows(root: str, spot: float, at: pd.Timestamp, expiries: Sequence[dt.date],
                strikes: np.ndarray, iv: float | Callable, half_spread: float, rate: float, div: float):
    """Arrays of every (expiry, strike, right) row priced with BSM."""
    exp_rows, strike_rows, call_rows, years_rows = [], [], [], []
    for expiry in expiries:
        probe = OptionContract(root=root, expiry=expiry, strike=float(strikes[0]), right="C")
        years = float(years_between(at.value, settlement_time(probe).value))
        for is_call in (False, True):
            exp_rows.append(np.full(strikes.size, np.datetime64(expiry, "D")))
            strike_rows.append(strikes)
            call_rows.append(np.full(strikes.size, is_call))
            years_rows.append(np.full(strikes.size, years))
    expiry = np.concatenate(exp_rows)
    strike = np.concatenate(strike_rows).astype(float)
    is_call = np.concatenate(call_rows)
    years = np.maximum(np.concatenate(years_rows), 0.0)
    vol = iv(strike, years) if callable(iv) else np.full(strike.size, float(iv))
    g = bsm(is_call, spot, strike, years, rate, div, vol)
    mid = np.asarray(g.price)
    bid = np.maximum(round_to_tick(np.maximum(mid - half_spread, 0.0), root, direction="down"), 0.0)
    ask = round_to_tick(mid + half_spread, root, direction="up")
    bid = np.where(mid - half_spread >= 0.05, np.maximum(bid, 0.05), bid)
    ask = np.maximum(ask, bid + 0.05)
    return dict(root=np.full(strike.size, root), expiry=expiry, strike=strike, is_call=is_call, bid=bid, ask=ask,
                last=np.round(mid, 2), iv=vol, delta=g.delta, gamma=g.gamma, theta=g.theta, vega=g.vega)


def make_chain(spot: float = 4800.0, expiries: Sequence = (), iv: float = 0.15, *, at="2024-01-08 10:00",
               root: str = "SPXW", strikes: Iterable[float] | None = None, half_spread: float = 0.10,
               underlying: str = "SPX", rate: float = RATE, div_yield: float = DIV_YIELD) -> ChainSnapshot:
    """A chain snapshot priced from a flat IV (Black-Scholes), quotes = model -/+ half_spread on the tick.

    ``make_chain(spot=4800, expiries=["2024-01-12"], iv=0.15)``: every 5-point strike
    within 400 points, puts and calls, at 10:00 New York time.
    """
    ts = _as_ts(at)
    exps = [pd.Timestamp(e).date() for e in expiries] or [ts.date()]
    k = np.asarray(list(strikes), dtype=float) if strikes is not None else strike_grid(spot)
    cols = _price_rows(root, spot, ts, exps, k, iv, half_spread, rate, div_yield)
    return ChainSnapshot.from_arrays(underlying, ts, spot, **cols)


class ModelMarket:
    """A small deterministic market for tests: a given underlying path, flat-IV chains, pinned quotes.

    :param start, end: first and last session (real XNYS sessions in between).
    :param spot: a constant level, or a callable ``f(minute_labels) -> levels`` for the path.
    :param iv: flat implied volatility for every option.
    :param expiries: listed expiries (default: every session from start to end + 10 days, SPXW).
    :param quotes: pinned quotes ``{contract: (bid, ask)}`` or ``{contract: callable(ts) -> (bid, ask)}``;
        pinned contracts ignore the model.
    :param settlement: ``{date: value}`` settlement prints (default: the path's close / open).
    :param other_bars: more symbols' minute closes on the same minutes, ``{"VIX": level or f(minute_labels)}``.
    """

    def __init__(self, start="2024-01-08", end="2024-01-12", *, spot: float | Callable = 4800.0,
                 iv: float = 0.15, root: str = "SPXW", underlying: str = "SPX",
                 expiries: Sequence | None = None, quotes: Mapping | None = None,
                 settlement: Mapping | None = None, half_spread: float = 0.10, strikes: Iterable[float] | None = None,
                 other_bars: Mapping | None = None):
        self.calendar = MarketCalendar()
        self._sessions = self.calendar.sessions(start, end)
        minutes = [self.calendar.minutes(d) for d in self._sessions]
        index = minutes[0].append(minutes[1:]) if len(minutes) > 1 else minutes[0]
        levels = spot(index) if callable(spot) else np.full(len(index), float(spot))
        levels = np.asarray(levels, dtype=float)
        self._bars = pd.DataFrame({"open": levels, "high": levels, "low": levels, "close": levels,
                                   "volume": np.full(len(index), 1000.0)}, index=index)
        self.iv, self.root, self.underlying, self.half_spread = iv, root, underlying, half_spread
        last = self._sessions[-1] + pd.Timedelta(days=10)
        self.expiries = ([pd.Timestamp(e).date() for e in expiries] if expiries is not None
                         else [d.date() for d in self.calendar.sessions(self._sessions[0], last)])
        self.quotes = dict(quotes or {})
        self.settlement = {pd.Timestamp(k).date(): float(v) for k, v in (settlement or {}).items()}
        self._strikes = np.asarray(list(strikes), dtype=float) if strikes is not None else None
        self._other = {}
        for sym, lv in (other_bars or {}).items():
            lv = np.asarray(lv(index) if callable(lv) else np.full(len(index), float(lv)), dtype=float)
            self._other[sym] = pd.DataFrame({"open": lv, "high": lv, "low": lv, "close": lv,
                                             "volume": np.zeros(len(index))}, index=index)

    # MarketData ----------------------------------------------------------
    def sessions(self) -> pd.DatetimeIndex:
        return self._sessions

    def bars(self, symbol: str) -> pd.DataFrame:
        if symbol in (self.underlying, "SPX"):
            return self._bars
        if symbol == "XSP":
            return self._bars / np.array([10, 10, 10, 10, 1.0])
        if symbol in self._other:
            return self._other[symbol]
        raise KeyError(f"ModelMarket has no bars for {symbol!r}")

    def _spot_at(self, ts: pd.Timestamp) -> float:
        i = int(np.searchsorted(self._bars.index.asi8, ts.value, side="right")) - 1
        return float(self._bars["close"].iloc[max(i, 0)])

    def listed_expiries(self, underlying: str, day) -> list[dt.date]:
        day = pd.Timestamp(day).date()
        return [e for e in self.expiries if e >= day]

    def snapshot(self, underlying: str, at, expiries=None) -> ChainSnapshot:
        ts = _as_ts(at)
        spot = self._spot_at(ts)
        listed = [e for e in (expiries or self.expiries) if e >= ts.date()]
        strikes = self._strikes if self._strikes is not None else strike_grid(spot)
        cols = _price_rows(self.root, spot, ts, listed, strikes, self.iv, self.half_spread, RATE, DIV_YIELD)
        if self.quotes:
            snap = ChainSnapshot.from_arrays(underlying, ts, spot, **cols)
            bid, ask = snap.bid.copy(), snap.ask.copy()
            for contract, q in self.quotes.items():
                row = snap.find_contract(contract, valid_only=False)
                if row is not None:
                    bid[row], ask[row] = q(ts) if callable(q) else q
            cols = {name: getattr(snap, name) for name in cols}
            cols["bid"], cols["ask"] = bid, ask
        return ChainSnapshot.from_arrays(underlying, ts, spot, **cols)

    def leg_quotes(self, contracts: Sequence[OptionContract], day) -> LegQuotes:
        minutes = self.calendar.minutes(day)
        n, m = len(minutes), len(contracts)
        bid = np.empty((n, m))
        ask = np.empty((n, m))
        spots = self._bars["close"].reindex(minutes).to_numpy()
        for j, c in enumerate(contracts):
            q = self.quotes.get(c)
            if q is not None:
                values = [q(ts) if callable(q) else q for ts in minutes]
                bid[:, j] = [v[0] for v in values]
                ask[:, j] = [v[1] for v in values]
                continue
            years = np.maximum(years_between(minutes.asi8, settlement_time(c).value), 0.0)
            mid = np.asarray(bsm(c.is_call, spots, c.strike, years, RATE, DIV_YIELD, self.iv).price)
            b = np.maximum(round_to_tick(np.maximum(mid - self.half_spread, 0.0), c.root, direction="down"), 0.0)
            b = np.where(mid - self.half_spread >= 0.05, np.maximum(b, 0.05), b)
            a = np.maximum(round_to_tick(mid + self.half_spread, c.root, direction="up"), b + 0.05)
            bid[:, j], ask[:, j] = b, a
        return LegQuotes(tuple(contracts), minutes.asi8, bid, ask)

    def settlement_value(self, contract: OptionContract) -> float:
        if contract.expiry in self.settlement:
            return self.settlement[contract.expiry]
        minutes = self.calendar.minutes(contract.expiry)
        day = self._bars.loc[minutes[0]:minutes[-1]]
        return float(day["open"].iloc[0] if contract.settlement_style == "AM" else day["close"].iloc[-1])


def run_strategy(strategy, market, *, params=None, fill_model=None, commission=None, risk_managers=(),
                 initial_cash: float = 100_000.0, strategy_id: str | None = None):
    """Run one strategy (an instance or a class) over ``market``; return the finished engine."""
    from strikebench.engine.core import Engine
    from strikebench.plugins.commissions import ZeroCommission
    from strikebench.plugins.fill_models import MidSlippageFill

    if isinstance(strategy, type):
        strategy = strategy(params if params is not None else strategy.Params())
    engine = Engine(market=market, strategies=[(strategy_id or strategy.name, strategy)],
                    fill_model=fill_model or MidSlippageFill(), commission=commission or ZeroCommission(),
                    risk_managers=risk_managers, initial_cash=initial_cash)
    engine.run_all()
    return engine


# ------------------------------------------------------------------ reading a run
def orders_of(engine, *, strategy: str | None = None, opens: bool | None = None) -> list:
    """Every order a run created, in creation order: sent ones and those a risk check vetoed.

    A vetoed order has status ``REJECTED`` and ``status_reason`` ``"vetoed: ..."``.
    ``strategy`` keeps one strategy's orders; ``opens=True`` only entries, ``False`` only exits.
    """
    orders = list(engine.broker.orders.values()) + [order for order, _ in engine.vetoes]
    orders.sort(key=lambda o: o.created_at or dt.datetime.min)
    return [o for o in orders
            if (strategy is None or o.strategy == strategy) and (opens is None or o.opens == opens)]


def trades_of(engine, *, strategy: str | None = None, closed: bool | None = None) -> list:
    """Every trade of a run in the order it opened (``closed=True``: only closed ones, ``False``: only open)."""
    trades = sorted(engine.portfolio.all_trades(), key=lambda t: t.opened_at)
    return [t for t in trades
            if (strategy is None or t.strategy == strategy) and (closed is None or (not t.is_open) == closed)]


def decisions_of(engine, *, action: str | None = None) -> list:
    """Every recorded decision, in time order (``action``: only TRADE, SKIP or EXIT)."""
    return [d for d in engine.decisions if action is None or d.action == action]


def vetoes_of(engine) -> list[tuple]:
    """``(order, [Veto, ...])`` for every order a risk check blocked, in time order."""
    return list(engine.vetoes)


# ------------------------------------------------------------------------- clock
class Clock:
    """A New York wall clock that steps over real XNYS sessions (minute resolution).

    ``Clock("2024-01-08 10:00")`` starts on Monday 8 January 2024 at 10:00;
    :meth:`advance` moves it by minutes, :meth:`next_session` to another trading day
    (skipping weekends and holidays). ``now`` is a tz-aware ``pd.Timestamp``, the same
    kind of value ``ctx.now`` gives a strategy.
    """

    def __init__(self, start="2024-01-08 09:30", calendar: MarketCalendar | None = None):
        self.calendar = calendar or MarketCalendar()
        self._now = _as_ts(start)

    @property
    def now(self) -> pd.Timestamp:
        return self._now

    @property
    def today(self) -> dt.date:
        return self._now.date()

    def advance(self, minutes: int = 0, *, hours: int = 0) -> pd.Timestamp:
        """Move forward (or back, with negative values) and return the new time."""
        self._now = self._now + pd.Timedelta(minutes=minutes + 60 * hours)
        return self._now

    def at(self, time) -> pd.Timestamp:
        """Same day, at ``time`` ("11:00" or a ``datetime.time``)."""
        t = pd.Timestamp(str(time)).time() if not isinstance(time, dt.time) else time
        self._now = _as_ts(dt.datetime.combine(self.today, t))
        return self._now

    def next_session(self, at="09:30", *, sessions: int = 1) -> pd.Timestamp:
        """Jump ``sessions`` trading days ahead, at time ``at``."""
        day = pd.Timestamp(self.today)
        for _ in range(sessions):
            day = self.calendar.next_session(day)
        self._now = _as_ts(dt.datetime.combine(day.date(), pd.Timestamp(str(at)).time()))
        return self._now

    def session_minutes(self) -> pd.DatetimeIndex:
        """Minute labels of today's session (09:30 ... 15:59, or to 12:59 on an early close)."""
        return self.calendar.minutes(self.today)

    def __repr__(self) -> str:
        return f"Clock({self._now:%Y-%m-%d %H:%M %Z})"


# -------------------------------------------------------------- scripted orders
class ScriptedStrategy(Strategy):
    """Opens ``legs`` x ``quantity`` once at ``at`` on ``day`` (first session if None); optionally
    closes at ``close_at`` the same day. For testing fill models, risk managers and feeds.

    ``orders`` keeps what ``ctx.open_trade`` / ``ctx.close_trade`` returned (None = vetoed).
    """

    name = "scripted"

    def __init__(self, legs, *, at="10:00", quantity: int = 1, limit: float | None = None,
                 close_at=None, day=None, underlying: str | None = None):
        super().__init__()
        self.legs = tuple(legs)
        self.at = pd.Timestamp(str(at)).time()
        self.close_at = pd.Timestamp(str(close_at)).time() if close_at is not None else None
        self.quantity, self.limit = quantity, limit
        self.day = pd.Timestamp(day).date() if day is not None else None
        if underlying:
            self.underlying = underlying
        self.orders: list = []

    def decision_times(self) -> list[dt.time]:
        return [t for t in (self.at, self.close_at) if t is not None]

    def on_decision_time(self, ctx) -> None:
        if self.day is None:
            self.day = ctx.today
        if ctx.today != self.day:
            return
        if ctx.now.time() == self.at:
            self.orders.append(ctx.open_trade(self.legs, self.quantity, limit=self.limit, reason="scripted entry"))
        elif ctx.now.time() == self.close_at:
            for trade in ctx.open_trades():
                self.orders.append(ctx.close_trade(trade, "scripted exit"))


# ------------------------------------------------------------ risk-check inputs
def order_request(legs, quantity: int = 1, *, est_price: float | None = None, at="2024-01-08 10:00",
                  opens: bool = True, strategy: str = "test", limit: float | None = None):
    """The :class:`~strikebench.api.OrderRequest` a risk manager's ``check`` would receive.

    ``est_price`` is the signed net price per combo (negative = credit); the worst-case
    loss is computed from it as the engine does (dollars, for ``quantity`` combos).
    """
    from strikebench.api import OrderRequest
    from strikebench.options.orders import Order, OrderType, max_loss_per_combo

    legs = tuple(legs)
    when = _as_ts(at).to_pydatetime()
    order = Order(client_id="_test", legs=legs, quantity=quantity,
                  order_type=OrderType.LIMIT if limit is not None else OrderType.MARKET, limit_price=limit,
                  strategy=strategy, trade_id="_test", opens=opens, created_at=when)
    price = est_price if est_price is not None else limit
    loss = max_loss_per_combo(legs, price) * order.multiplier * quantity if opens and price is not None else 0.0
    return OrderRequest(order=order, at=when, strategy=strategy, opens=opens, quantity=quantity,
                        est_price=price, worst_case_loss=float(loss))


def portfolio_view(initial_cash: float = 100_000.0, today="2024-01-08"):
    """An empty account's read-only :class:`~strikebench.portfolio.PortfolioView` on ``today``."""
    from strikebench.portfolio import Portfolio

    return Portfolio(initial_cash).view(pd.Timestamp(today).date())


# ---------------------------------------------------------------------- registry
def plugin_registry(*plugins):
    """The component registry of the built-ins plus ``plugins`` (modules or module names),
    registered through their hooks exactly as an installed plugin's would be.

    No entry point is loaded, so the result does not depend on what else is installed (and the
    components are attributed to distribution ``strikebench``, as built-ins are).
    Raises :class:`~strikebench.errors.PluginError` as start-up would (unknown hook, name collision...).
    """
    import importlib
    import sys
    import types

    from strikebench.plugin_manager import BUILTIN_PLUGINS, get_plugin_manager

    names = []
    for plugin in plugins:
        if isinstance(plugin, types.ModuleType):
            sys.modules.setdefault(plugin.__name__, plugin)
            names.append(plugin.__name__)
        else:
            importlib.import_module(plugin)
            names.append(plugin)
    return get_plugin_manager(builtins=(*BUILTIN_PLUGINS, *names), load_entry_points=False).registry
