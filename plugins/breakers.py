"""Circuit breakers: risk managers that stop new risk after a bad day, a bad streak, a VIX jump, a
drawdown, or while the open book's historical VaR/CVaR is too large.

Each is a :class:`~strikebench.api.RiskManager` with typed params, listed under ``risk:`` like the
other rules; like them it blocks only orders that open risk (exits always pass). What a breaker adds:

* it watches the account and the market between orders (the engine calls ``on_session_start`` and
  ``on_session_end`` of every configured risk manager), so it trips on the bar where its rule is first
  met, not at the next order;
* every trip is a :class:`~strikebench.api.BreakerTrip` (rule, scope, the bar it tripped on, the figures
  compared, how it resets), journaled in the ``breaker_trips`` table through the ``on_breaker_trip``
  hook and listed by ``strikebench report``;
* ``scope: account`` (default) counts the whole account and blocks every strategy; ``scope: strategy``
  keeps one count per strategy and blocks only the strategy that tripped it (``vix_jump`` is a market
  rule: always account-wide).

Resets are automatic and documented per breaker (there is no manual override: a breaker that a
command could clear mid-session is not a breaker). The rules, in the words of docs/risk.md:

==================  ========================================================  ===============================
breaker             trips when                                                resets
==================  ========================================================  ===============================
daily_loss_pct      the session's realized loss reaches ``pct`` % of the       at the next session
                    account's equity at the session's start (on the closing
                    fill that reaches it)
losing_days         ``days`` sessions in a row closed lower (account: closing  after ``pause_sessions``
                    equity below the previous close; strategy: the session's   sessions without new risk;
                    realized P&L below zero), at the close of the last one     the count restarts at zero
vix_jump            VIX at a bar's close >= ``level``, or >= ``jump_pct`` %    at the next session (it trips
                    above the previous session's VIX close                     again at once if still met)
drawdown_breaker    closing equity (strategy: initial cash + the strategy's    after ``pause_sessions``
                    realized P&L) falls ``max_pct`` % below its high-water     sessions; the high-water mark
                    mark                                                       restarts at that equity
var_breaker         the 1-session historical VaR or CVaR of the open book      not latched: re-evaluated at
                    plus the new order exceeds the limit                       every opening order
==================  ========================================================  ===============================
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from strikebench.api import BreakerTrip, PluginParams, RiskManager, Veto
from strikebench.calendar import NY, years_between
from strikebench.errors import DataError
from strikebench.options.contracts import settlement_time
from strikebench.pricing import bsm_price

__all__ = ["CircuitBreaker", "DailyLossPct", "LosingDays", "VixJump", "DrawdownBreaker", "VarBreaker",
           "historical_var"]

Scope = Literal["account", "strategy"]


def _ny(at) -> dt.datetime:
    at = pd.Timestamp(at)
    return (at.tz_localize(NY) if at.tzinfo is None else at.tz_convert(NY)).to_pydatetime()


class _ScopeParams(PluginParams):
    scope: Scope = Field("account", description="account: one count for the whole account, blocks every "
                                                "strategy; strategy: one count per strategy, blocks only it")


class CircuitBreaker(RiskManager):
    """Base of the breakers: latched trips per scope key, handed to the journal once each."""

    resets = ""

    def __init__(self, params=None):
        super().__init__(params)
        self._pending: list[BreakerTrip] = []
        self.trips: list[BreakerTrip] = []  # every trip of the run, in time order

    def _key(self, strategy: str | None) -> str:
        return "account" if getattr(self.params, "scope", "account") == "account" or strategy is None \
            else f"strategy:{strategy}"

    def _trip(self, key: str, at, reason: str, figures: dict) -> BreakerTrip:
        trip = BreakerTrip(self.name, key, _ny(at), reason,
                           {k: (round(v, 6) if isinstance(v, float) else v) for k, v in figures.items()},
                           self.resets)
        self._pending.append(trip)
        self.trips.append(trip)
        return trip

    def pop_trips(self, upto=None) -> list[BreakerTrip]:
        if upto is None:
            out, self._pending = self._pending, []
            return out
        upto = _ny(upto)
        out = [t for t in self._pending if t.tripped_at <= upto]
        self._pending = [t for t in self._pending if t.tripped_at > upto]
        return out


# ------------------------------------------------------------------------- daily loss
class DailyLossPctParams(_ScopeParams):
    pct: float = Field(..., gt=0, le=100, description="realized loss of a session, % of the account's equity at "
                                                      "the session's start, that trips the breaker")


class DailyLossPct(CircuitBreaker):
    """No new risk for the rest of a session once its realized loss reaches `pct` % of the account."""

    name = "daily_loss_pct"
    Params = DailyLossPctParams
    resets = "next session"

    def __init__(self, params=None):
        super().__init__(params)
        self.day: dt.date | None = None
        self.start_equity: float | None = None  # None until a session ended: the initial cash then
        self._tripped: dict[str, BreakerTrip] = {}

    def on_session_start(self, day, market, minutes) -> None:
        self.day, self._tripped = day, {}

    def on_session_end(self, day, equity, portfolio) -> None:
        self._scan(portfolio)
        self.start_equity = equity

    def _scan(self, portfolio) -> None:
        """Trip each scope whose closing fills of today reach the limit, on the fill that reaches it."""
        today = portfolio.today
        base = self.start_equity if self.start_equity is not None else portfolio.initial_cash
        limit = self.params.pct / 100.0 * base
        closed = sorted((t for t in portfolio.closed_trades() if t.closed_at and t.closed_at.date() == today),
                        key=lambda t: t.closed_at)
        running: dict[str, float] = {}
        for t in closed:
            key = self._key(t.strategy)
            running[key] = running.get(key, 0.0) + t.realized_pnl
            if key not in self._tripped and -running[key] >= limit - 1e-9:
                self._tripped[key] = self._trip(
                    key, t.closed_at, f"realized loss {-running[key]:,.2f} today reached {self.params.pct:g}% "
                                      f"of the session's starting equity {base:,.2f} ({limit:,.2f})",
                    {"realized_today": round(running[key], 2), "start_equity": round(base, 2),
                     "pct": self.params.pct, "limit": round(limit, 2), "trade_id": t.trade_id})

    def check(self, request, portfolio):
        return self.blocks_entries(request.strategy, request.at, portfolio)

    def blocks_entries(self, strategy, at, portfolio):
        if self.day != portfolio.today:  # driven without on_session_start (a hand test): start the day here
            self.on_session_start(portfolio.today, None, None)
        self._scan(portfolio)
        trip = self._tripped.get(self._key(strategy))
        if trip is not None and trip.tripped_at <= _ny(at):
            return Veto(f"tripped at {trip.tripped_at:%H:%M}: {trip.reason}")
        return None


# -------------------------------------------------------------------- losing streak
class _PauseParams(_ScopeParams):
    pause_sessions: int = Field(1, ge=1, le=250, description="sessions without new risk after a trip")


class LosingDaysParams(_PauseParams):
    days: int = Field(3, ge=1, le=60, description="sessions in a row that closed lower")


class _Paused(CircuitBreaker):
    """Breakers evaluated at the close: a trip blocks the next `pause_sessions` sessions of its scope."""

    def __init__(self, params=None):
        super().__init__(params)
        self.paused: dict[str, int] = {}  # scope key -> sessions still blocked (counting the current one)
        self._trip_of: dict[str, BreakerTrip] = {}
        self._started = False

    def on_session_start(self, day, market, minutes) -> None:
        if self._started:  # a session that follows a close: count down the pauses
            self.paused = {k: n - 1 for k, n in self.paused.items() if n - 1 > 0}
        self._started = True

    def _pause(self, key: str, at, reason: str, figures: dict) -> None:
        self.paused[key] = self.params.pause_sessions + 1  # the +1 is the tripping session's remaining minute
        self._trip_of[key] = self._trip(key, at, reason, figures)

    def check(self, request, portfolio):
        return self.blocks_entries(request.strategy, request.at, portfolio)

    def blocks_entries(self, strategy, at, portfolio):
        key = self._key(strategy)
        if self.paused.get(key, 0) > 0:
            trip = self._trip_of[key]
            return Veto(f"tripped {trip.tripped_at:%Y-%m-%d %H:%M}: {trip.reason}; "
                        f"{self.paused[key]} session(s) of pause left, this one included")
        return None


def _session_close(day: dt.date, portfolio) -> dt.datetime:
    from strikebench.calendar import MarketCalendar

    return MarketCalendar().session_close(day)


class LosingDays(_Paused):
    """No new risk for `pause_sessions` sessions after `days` sessions in a row closed lower."""

    name = "losing_days"
    Params = LosingDaysParams
    resets = "after pause_sessions sessions; the count restarts"

    def __init__(self, params=None):
        super().__init__(params)
        self.streak: dict[str, int] = {}
        self.last_equity: float | None = None

    def on_session_end(self, day, equity, portfolio) -> None:
        changes: dict[str, float] = {}
        if self.params.scope == "account":
            prev = self.last_equity if self.last_equity is not None else portfolio.initial_cash
            changes["account"] = round(equity - prev, 2)
        else:
            for t in portfolio.closed_trades():
                if t.closed_at and t.closed_at.date() == day:
                    k = self._key(t.strategy)
                    changes[k] = round(changes.get(k, 0.0) + t.realized_pnl, 2)
            for k in self.streak:
                changes.setdefault(k, 0.0)
        self.last_equity = equity
        for key, change in changes.items():
            if self.paused.get(key, 0) > 0:
                continue  # a paused scope does not count
            self.streak[key] = self.streak.get(key, 0) + 1 if change < 0 else 0
            if self.streak[key] >= self.params.days:
                self._pause(key, _session_close(day, portfolio),
                            f"{self.streak[key]} losing session(s) in a row (last {change:,.2f})",
                            {"losing_sessions": self.streak[key], "last_change": change,
                             "pause_sessions": self.params.pause_sessions})
                self.streak[key] = 0


# ---------------------------------------------------------------------------- drawdown
class DrawdownParams(_PauseParams):
    max_pct: float = Field(..., gt=0, lt=100, description="drawdown from the high-water mark, % of the mark")
    pause_sessions: int = Field(5, ge=1, le=250, description="sessions without new risk after a trip")


class DrawdownBreaker(_Paused):
    """No new risk for `pause_sessions` sessions once closing equity is `max_pct` % below its high-water mark."""

    name = "drawdown_breaker"
    Params = DrawdownParams
    resets = "after pause_sessions sessions; the high-water mark restarts at that equity"

    def __init__(self, params=None):
        super().__init__(params)
        self.hwm: dict[str, float] = {}

    def on_session_end(self, day, equity, portfolio) -> None:
        values: dict[str, float] = {}
        if self.params.scope == "account":
            values["account"] = equity
        else:
            for t in portfolio.closed_trades():
                k = self._key(t.strategy)
                values[k] = values.get(k, portfolio.initial_cash) + t.realized_pnl
        for key, value in values.items():
            if self.paused.get(key, 0) > 0:
                self.hwm[key] = value  # re-based while paused: the mark restarts where the pause ends
                continue
            hwm = max(self.hwm.get(key, portfolio.initial_cash), value)
            self.hwm[key] = hwm
            dd = (hwm - value) / hwm * 100.0 if hwm > 0 else 0.0
            if dd >= self.params.max_pct - 1e-9:
                self._pause(key, _session_close(day, portfolio),
                            f"closing equity {value:,.2f} is {dd:.2f}% below the high-water mark {hwm:,.2f} "
                            f"(limit {self.params.max_pct:g}%)",
                            {"equity": round(value, 2), "high_water_mark": round(hwm, 2),
                             "drawdown_pct": round(dd, 4), "max_pct": self.params.max_pct})
                self.hwm[key] = value


# ---------------------------------------------------------------------------------- VIX
class VixJumpParams(PluginParams):
    level: float | None = Field(30.0, gt=0, description="VIX at or above this level trips (null: no level rule)")
    jump_pct: float | None = Field(20.0, gt=0, description="VIX at or above the previous session's VIX close "
                                                           "by this many % trips (null: no jump rule)")
    symbol: str = Field("VIX", description="the volatility index's bars")

    @model_validator(mode="after")
    def _one_rule(self):
        if self.level is None and self.jump_pct is None:
            raise ValueError("vix_jump needs level or jump_pct (or both)")
        return self


class VixJump(CircuitBreaker):
    """No new risk for the rest of a session from the bar where VIX reaches `level` or jumps `jump_pct` %."""

    name = "vix_jump"
    Params = VixJumpParams
    resets = "next session"

    def __init__(self, params=None):
        super().__init__(params)
        self.trip_today: BreakerTrip | None = None

    def on_session_start(self, day, market, minutes) -> None:
        self.trip_today = None
        try:
            bars = market.bars(self.params.symbol)
        except KeyError:
            raise DataError(f"risk manager 'vix_jump': the market has no minute bars for "
                            f"'{self.params.symbol}'") from None
        ns, close = bars.index.asi8, bars["close"].to_numpy(dtype=float)
        m_ns = minutes.asi8
        first = int(np.searchsorted(ns, m_ns[0], side="left"))
        prev_close = float(close[first - 1]) if first > 0 else math.nan
        j = np.searchsorted(ns, m_ns, side="right") - 1
        level = np.where(j >= first, close[np.maximum(j, 0)], np.nan)  # VIX as of each bar's close, today only
        p = self.params
        with np.errstate(invalid="ignore"):
            by_level = level >= p.level - 1e-9 if p.level is not None else np.zeros(len(level), bool)
            change = (level / prev_close - 1.0) * 100.0
            by_jump = change >= p.jump_pct - 1e-9 if p.jump_pct is not None else np.zeros(len(level), bool)
        hit = np.flatnonzero(by_level | by_jump)
        if hit.size:
            i = int(hit[0])
            what = (f"{p.symbol} {level[i]:.2f} >= level {p.level:g}" if by_level[i] else
                    f"{p.symbol} {level[i]:.2f} is {change[i]:.2f}% above the previous close {prev_close:.2f} "
                    f"(limit {p.jump_pct:g}%)")
            self.trip_today = self._trip("account", minutes[i], what,
                                         {"vix": float(level[i]), "previous_close": prev_close,
                                          "change_pct": round(float(change[i]), 4), "level": p.level,
                                          "jump_pct": p.jump_pct})

    def check(self, request, portfolio):
        return self.blocks_entries(request.strategy, request.at, portfolio)

    def blocks_entries(self, strategy, at, portfolio):
        trip = self.trip_today
        if trip is not None and trip.tripped_at.date() == portfolio.today and trip.tripped_at <= _ny(at):
            return Veto(f"tripped at {trip.tripped_at:%H:%M}: {trip.reason}")
        return None


# ---------------------------------------------------------------------------------- VaR
def historical_var(pnl: np.ndarray, confidence: float) -> tuple[float, float]:
    """(VaR, CVaR) in dollars as positive losses: VaR is minus the scenario P&L at the (1 - confidence)
    quantile (the lower one, no interpolation); CVaR minus the mean of the scenarios at or below it."""
    pnl = np.sort(np.asarray(pnl, dtype=float))
    k = int(math.floor((1.0 - confidence) * len(pnl)))
    k = min(max(k, 0), len(pnl) - 1)
    var = -pnl[k]
    cvar = -float(np.mean(pnl[: k + 1]))
    return float(var), cvar


class VarParams(_ScopeParams):
    confidence: float = Field(0.95, gt=0.5, lt=1, description="VaR confidence level")
    lookback: int = Field(250, ge=10, le=5000, description="past sessions whose close-to-close returns of the "
                                                           "underlying are the scenarios")
    max_var: float | None = Field(None, gt=0, description="dollars: the most the book's 1-session VaR may be")
    max_cvar: float | None = Field(None, gt=0, description="dollars: the most the book's 1-session CVaR may be")
    underlying: str = Field("SPX", description="the book's underlying: its bars give the scenarios, its chain the IVs")
    rate: float = Field(0.045, ge=-0.05, le=0.5, description="risk-free rate used to reprice the legs")
    div_yield: float = Field(0.015, ge=0, le=0.5, description="dividend yield used to reprice the legs")

    @model_validator(mode="after")
    def _one_limit(self):
        if self.max_var is None and self.max_cvar is None:
            raise ValueError("var_breaker needs max_var or max_cvar (or both)")
        return self


class VarBreaker(CircuitBreaker):
    """No opening order that would take the open book's 1-session historical VaR or CVaR past its limit."""

    name = "var_breaker"
    Params = VarParams
    resets = "not latched: re-evaluated at every opening order"

    def __init__(self, params=None):
        super().__init__(params)
        self.market = None
        self._daily = None
        self.returns = np.empty(0)

    def on_session_start(self, day, market, minutes) -> None:
        if market is not self.market or self._daily is None:  # each session's last close, once per market
            bars = market.bars(self.params.underlying)
            days = bars.index.tz_convert(NY).normalize().asi8
            last = np.r_[days[1:] != days[:-1], True]
            self._daily = (bars.index.asi8[last], bars["close"].to_numpy(dtype=float)[last])
        self.market = market
        ns, close = self._daily
        past = close[: int(np.searchsorted(ns, minutes.asi8[0], side="left"))]
        self.returns = (past[1:] / past[:-1] - 1.0)[-self.params.lookback:]

    def book_pnl(self, positions: dict, at) -> np.ndarray:
        """Scenario P&L (dollars) of ``positions`` ({contract: signed contracts}) one session from ``at``:
        each leg repriced (Black-Scholes-Merton at its chain IV) with spot moved by each past return."""
        contracts = sorted(positions, key=lambda c: (c.expiry, c.strike, c.right))
        expiries = sorted({c.expiry for c in contracts})
        snap = self.market.snapshot(self.params.underlying, pd.Timestamp(at), expiries)
        spot = float(snap.underlying_price)
        rows = [snap.find_contract(c, valid_only=False) for c in contracts]
        if any(r is None for r in rows):
            raise DataError(f"var_breaker: the chain at {at} lacks a leg of the book")
        iv = np.array([float(snap.iv[r]) for r in rows])
        is_call = np.array([c.is_call for c in contracts])
        strike = np.array([c.strike for c in contracts])
        qty = np.array([positions[c] * c.multiplier for c in contracts], dtype=float)
        at_ns = pd.Timestamp(at).value
        years = np.maximum(years_between(at_ns, np.array([settlement_time(c).value for c in contracts])), 0.0)
        later = np.maximum(years - 1.0 / 365.0, 0.0)
        now_v = bsm_price(is_call, spot, strike, years, self.params.rate, self.params.div_yield, iv)
        shocked = spot * (1.0 + self.returns[:, None])
        then_v = bsm_price(is_call, shocked, strike, later, self.params.rate, self.params.div_yield, iv)
        return ((then_v - now_v) * qty).sum(axis=1)

    def check(self, request, portfolio):
        if self.market is None or len(self.returns) < 10:
            return None  # fewer than 10 past sessions: no scenarios yet (documented)
        strategy = request.strategy if self.params.scope == "strategy" else None
        if strategy is None:
            positions = dict(portfolio.positions())
        else:
            positions = {}
            for t in portfolio.open_trades(strategy):
                for leg in t.legs:  # t.contracts: the trade's combos (strategies close a trade whole)
                    positions[leg.contract] = positions.get(leg.contract, 0) + leg.ratio * t.contracts
        for leg in request.order.legs:
            positions[leg.contract] = positions.get(leg.contract, 0) + leg.ratio * request.quantity
        positions = {c: q for c, q in positions.items() if q}
        if not positions:
            return None
        var, cvar = historical_var(self.book_pnl(positions, request.at), self.params.confidence)
        p = self.params
        over = []
        if p.max_var is not None and var > p.max_var + 1e-9:
            over.append(f"VaR {var:,.2f} > {p.max_var:,.2f}")
        if p.max_cvar is not None and cvar > p.max_cvar + 1e-9:
            over.append(f"CVaR {cvar:,.2f} > {p.max_cvar:,.2f}")
        if not over:
            return None
        reason = (f"book with this order: {' and '.join(over)} ({p.confidence:.0%}, 1 session, "
                  f"{len(self.returns)} past sessions)")
        self._trip(self._key(request.strategy), request.at, reason,
                   {"var": round(var, 2), "cvar": round(cvar, 2), "max_var": p.max_var, "max_cvar": p.max_cvar,
                    "confidence": p.confidence, "scenarios": len(self.returns), "order": request.order.client_id})
        return Veto(reason)


BREAKERS = (DailyLossPct, LosingDays, VixJump, DrawdownBreaker, VarBreaker)
