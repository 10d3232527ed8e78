"""Built-in context providers: intraday features strategies read from ``ctx.features``.

Each provider computes a whole session's feature arrays once, at the session's
start, from ``market.bars(symbol)`` (vectorized, causal: every value at bar ``i``
is a cumulative or trailing-window quantity over bars ``0..i`` of the session),
so reading a bar's values is an index. A value not available yet is ``nan``.

============== =========================================== ==========================================
provider       features                                    available from
============== =========================================== ==========================================
opening_range  ``or_high``, ``or_low``, ``or_width``       bar ``minutes - 1`` (09:44 for 15 minutes,
                                                           whose close is 09:45)
vwap           ``vwap``                                    bar ``window_minutes - 1`` (09:59 for the
                                                           default 30, whose close is 10:00), or
                                                           the first bar when anchored
atr            ``atr``                                     bar ``bars - 1``
momentum       ``mom_5``, ``mom_15`` (one per lookback)    bar ``lookback``
vix            ``vix``, ``vix9d``, ``vix9d_vix_ratio``     the first bar (nan when the market has
                                                           no VIX / VIX9D bars)
============== =========================================== ==========================================

Bars are labelled by their start and read as of their close: at the bar labelled
10:00 the features include that bar's high, low, close and volume.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import Field

from strikebench.api import ContextProvider, PluginParams
from strikebench.errors import DataError
from strikebench.hookspecs import hookimpl

__all__ = ["SessionFeatures", "OpeningRange", "Vwap", "Atr", "Momentum", "VixLevels", "session_bars"]

_COLUMNS = ("open", "high", "low", "close", "volume")


def session_bars(market, symbol: str, minutes: pd.DatetimeIndex, cache: dict | None = None) -> dict[str, np.ndarray] | None:
    """``symbol``'s bars as of each of ``minutes`` (the last bar labelled at or before each), as arrays.

    Returns None when the market has no bars for ``symbol``. Bars before the session's first
    minute are never used: a minute with no bar of its own in the session yet gets nan.
    ``cache`` (a dict kept by the caller) holds the symbol's full arrays between sessions.
    """
    key = (id(market), symbol)
    full = cache.get(key) if cache is not None else None
    if full is None:
        try:
            bars = market.bars(symbol)
        except KeyError:
            full = False
        else:
            full = {"ns": bars.index.asi8}
            full.update({c: bars[c].to_numpy(dtype=float) for c in _COLUMNS if c in bars.columns})
        if cache is not None:
            cache[key] = full
    if full is False:
        return None
    ns = full["ns"]
    m_ns = minutes.asi8
    j = np.searchsorted(ns, m_ns, side="right") - 1
    first = np.searchsorted(ns, m_ns[0], side="left") if len(m_ns) else 0
    ok = (j >= first) & (j >= 0)
    jj = np.where(ok, j, 0)
    out = {}
    for c in _COLUMNS:
        if c in full:
            col = full[c][jj] if len(full[c]) else np.full(len(m_ns), np.nan)
            out[c] = np.where(ok, col, np.nan)
    return out


class SessionFeatures(ContextProvider):
    """Base of the built-in providers: compute ``{name: array}`` per session, read row ``i`` per bar.

    A subclass sets ``names`` and implements :meth:`compute` (causal arrays, one value per
    bar of the session); the base turns them into one table so :meth:`values` is one row read.
    """

    names: tuple[str, ...] = ()

    def __init__(self, params=None):
        super().__init__(params)
        self._cache: dict = {}
        self._table = np.empty((0, len(self.feature_names())))
        self._nan = {n: math.nan for n in self.feature_names()}

    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.names)

    @property
    def symbol(self) -> str:
        """The symbol whose bars :meth:`compute` gets (``params.symbol``, default SPX)."""
        return getattr(self.params, "symbol", None) or "SPX"

    def compute(self, bars: dict[str, np.ndarray] | None, day: dt.date, market,
                minutes: pd.DatetimeIndex) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def on_session_start(self, day, market, minutes) -> None:
        bars = session_bars(market, self.symbol, minutes, self._cache)
        if bars is None:  # a configured symbol the market lacks is a mistake, not a feature that is never known
            raise DataError(f"feature provider '{self.name}': the market has no minute bars for "
                            f"params.symbol '{self.symbol}'")
        arrays = self.compute(bars, day, market, minutes)
        names = self.feature_names()
        self._table = np.column_stack([np.asarray(arrays[n], dtype=float) for n in names]) if names else \
            np.empty((len(minutes), 0))

    def values(self, i: int) -> dict[str, float]:
        if i >= len(self._table):
            return dict(self._nan)
        return dict(zip(self.feature_names(), self._table[i].tolist()))


class _SymbolParams(PluginParams):
    symbol: str = Field("SPX", description="whose minute bars are read (SPX, XSP...)")


# ------------------------------------------------------------------ opening range
class OpeningRangeParams(_SymbolParams):
    minutes: int = Field(15, ge=1, le=390, description="length of the opening range after 09:30, minutes")


class OpeningRange(SessionFeatures):
    """High, low and width of the first `minutes` of the session (or_high, or_low, or_width), once complete."""

    name = "opening_range"
    Params = OpeningRangeParams
    names = ("or_high", "or_low", "or_width")

    def compute(self, bars, day, market, minutes):
        n, k = len(minutes), self.params.minutes
        out = {name: np.full(n, np.nan) for name in self.names}
        if bars is None or n < k:
            return out
        high, low = np.nanmax(bars["high"][:k]), np.nanmin(bars["low"][:k])
        out["or_high"][k - 1:] = high
        out["or_low"][k - 1:] = low
        out["or_width"][k - 1:] = high - low
        return out


# --------------------------------------------------------------------------- VWAP
class VwapParams(_SymbolParams):
    window_minutes: int | None = Field(
        30, ge=1, le=390,
        description="rolling window, minutes: the bars labelled in the last this-many minutes up to and including "
                    "the current one (seed 000: a 30-minute VWAP); null = anchored at the session's open")


class Vwap(SessionFeatures):
    """Volume-weighted average of the typical price (high + low + close) / 3 over the last
    `window_minutes` minutes (default 30, seed 000), or anchored at the session's open (vwap).

    At minute ``t`` the rolling value uses the session's bars labelled in ``(t - window, t]``,
    read as of their close, and is known once the session has run a whole window (the bar labelled
    09:59, whose close is 10:00, for 30 minutes). A minute missing from the bars is not counted
    twice: the window is cut on the bars' own timestamps, not on the minute grid.
    """

    name = "vwap"
    Params = VwapParams
    names = ("vwap",)

    def on_session_start(self, day, market, minutes) -> None:
        full = self._cache.get(("raw", id(market)))
        if full is None:
            try:
                bars = market.bars(self.symbol)
            except KeyError:
                raise DataError(f"feature provider '{self.name}': the market has no minute bars for "
                                f"params.symbol '{self.symbol}'") from None
            typical = (bars["high"].to_numpy(float) + bars["low"].to_numpy(float) + bars["close"].to_numpy(float)) / 3
            vol = np.nan_to_num(bars["volume"].to_numpy(float))
            full = {"ns": bars.index.as_unit("ns").asi8, "pv": np.nan_to_num(typical * vol), "v": vol}
            self._cache[("raw", id(market))] = full
        self._table = self.compute_from(full, minutes)[:, None]

    def compute_from(self, full: dict, minutes: pd.DatetimeIndex) -> np.ndarray:
        """VWAP at each of ``minutes`` from the symbol's bars (``ns`` labels, ``pv`` price x volume, ``v``)."""
        n = len(minutes)
        if n == 0:
            return np.empty(0)
        ns, m_ns = full["ns"], minutes.as_unit("ns").asi8
        first = int(np.searchsorted(ns, m_ns[0], side="left"))  # the session's first bar
        stop = int(np.searchsorted(ns, m_ns[-1], side="right"))
        # sums over this session's bars only (exact, and nothing from another day)
        pv = np.r_[0.0, np.cumsum(full["pv"][first:stop])]
        v = np.r_[0.0, np.cumsum(full["v"][first:stop])]
        end = np.searchsorted(ns[first:stop], m_ns, side="right")  # bars labelled <= t: [start, end)
        w = self.params.window_minutes
        if w is None:
            start = np.zeros(n, dtype=np.int64)
        else:
            start = np.searchsorted(ns[first:stop], m_ns - w * 60_000_000_000, side="right")
        num, den = pv[end] - pv[start], v[end] - v[start]
        with np.errstate(invalid="ignore", divide="ignore"):
            vwap = np.where((end > start) & (den > 0), num / np.where(den > 0, den, 1.0), np.nan)
        if w is not None:  # known once a whole window of the session has passed
            vwap[m_ns - m_ns[0] < (w - 1) * 60_000_000_000] = np.nan
        return vwap


# ---------------------------------------------------------------------------- ATR
class AtrParams(_SymbolParams):
    bars: int = Field(20, ge=1, le=390, description="number of 1-minute bars averaged")


class Atr(SessionFeatures):
    """Average true range of 1-minute bars over the last `bars` bars of the session, index points (atr)."""

    name = "atr"
    Params = AtrParams
    names = ("atr",)

    def compute(self, bars, day, market, minutes):
        n, k = len(minutes), self.params.bars
        out = np.full(n, np.nan)
        if bars is None or n < k:
            return {"atr": out}
        high, low, close = bars["high"], bars["low"], bars["close"]
        prev = np.r_[bars["open"][:1], close[:-1]]  # the session's first bar: its own open
        tr = np.maximum(high - low, np.maximum(np.abs(high - prev), np.abs(low - prev)))
        c = np.r_[0.0, np.cumsum(tr)]
        out[k - 1:] = (c[k:] - c[:-k]) / k
        return {"atr": out}


# ----------------------------------------------------------------------- momentum
class MomentumParams(_SymbolParams):
    lookbacks: list[Annotated[int, Field(ge=1, le=389)]] = Field(
        default_factory=lambda: [5, 15], min_length=1, description="minutes back: mom_N = close / close N bars ago - 1")


class Momentum(SessionFeatures):
    """Returns over the last 5 and 15 minutes (mom_5, mom_15: close / close N bars earlier - 1)."""

    name = "momentum"
    Params = MomentumParams

    def feature_names(self):
        return tuple(f"mom_{k}" for k in self.params.lookbacks)

    def compute(self, bars, day, market, minutes):
        n = len(minutes)
        out = {}
        for k in self.params.lookbacks:
            mom = np.full(n, np.nan)
            if bars is not None and n > k:
                close = bars["close"]
                mom[k:] = close[k:] / close[:-k] - 1.0
            out[f"mom_{k}"] = mom
        return out


# ---------------------------------------------------------------------------- VIX
class VixLevelsParams(PluginParams):
    pass


class VixLevels(SessionFeatures):
    """VIX and VIX9D levels (vix, vix9d, vix9d_vix_ratio) from the market's VIX / VIX9D bars; nan without them."""

    name = "vix"
    Params = VixLevelsParams
    names = ("vix", "vix9d", "vix9d_vix_ratio")

    def on_session_start(self, day, market, minutes) -> None:
        n = len(minutes)
        vix = session_bars(market, "VIX", minutes, self._cache)
        vix9d = session_bars(market, "VIX9D", minutes, self._cache)
        a = vix["close"] if vix is not None else np.full(n, np.nan)
        b = vix9d["close"] if vix9d is not None else np.full(n, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = b / a
        self._table = np.column_stack([a, b, ratio])


@hookimpl
def register_context_providers(register):
    for cls in (OpeningRange, Vwap, Atr, Momentum, VixLevels):
        register(cls)
    from strikebench.plugins.market_context import PROVIDERS  # IV rank, term structure, regime, RV/IV, GEX

    for cls in PROVIDERS:
        register(cls)
