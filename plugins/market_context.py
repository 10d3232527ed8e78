"""Market-context providers: implied-volatility rank, term structure, volatility regime, realized vs
implied volatility, and dealer gamma exposure (GEX) with its zero-gamma level.

Context providers like those of :mod:`strikebench.plugins.features` (``features:`` in YAML, read from
``ctx.features``): each computes a whole session's arrays at the session's start, vectorized, and
the value at bar ``i`` uses bars up to and including ``i`` only (quotes and bars as of a bar's
close), and whole sessions before today. ``nan`` means not known (yet).

============== ================================================ =============================================
provider       features                                         from
============== ================================================ =============================================
iv_rank        ``iv_rank``, ``iv_percentile`` (0-100)           VIX (SPX 30-day implied volatility) at the
                                                                bar against the last ``lookback`` sessions'
                                                                VIX closes
term_structure ``term_slope`` (VIX - VIX9D, vol points),        VIX, VIX9D and, when the market has it, VIX3M
               ``term_slope_3m`` (VIX3M - VIX), ``contango``     bars (the synthetic market has VIX and VIX9D:
               (1 when VIX9D < VIX, else 0)                     ``term_slope_3m`` is nan there)
vol_regime     ``vol_regime``: 0 calm, 1 normal, 2 stressed,    VIX level against ``calm_below`` /
               3 crisis                                         ``stressed_at``; stressed with an inverted
                                                                9-day/30-day structure (VIX9D > VIX) is crisis
realized_vol   ``rv`` (annualized), ``iv`` (VIX / 100),          the underlying's daily closes (today's close =
               ``iv_rv_spread`` (iv - rv), ``iv_rv_ratio``       the bar's price) and VIX
gex            ``gex`` (dollars per 1 % move), ``zero_gamma``    the option chain's open interest and gamma,
               (index level), ``gex_flip`` (spot - zero_gamma)   every ``every_minutes`` from the open
============== ================================================ =============================================
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from strikebench.api import PluginParams
from strikebench.calendar import NY, years_between
from strikebench.errors import DataError
from strikebench.options.contracts import OptionContract, settlement_time
from strikebench.plugins.features import SessionFeatures, session_bars

__all__ = ["IvRank", "TermStructure", "VolRegime", "RealizedVsImplied", "GammaExposure", "dealer_gex",
           "zero_gamma_level"]


def _daily_closes_before(market, symbol: str, minutes: pd.DatetimeIndex, cache: dict, name: str) -> np.ndarray:
    """The last bar's close of each session of ``symbol`` before this session (oldest first)."""
    key = ("daily", id(market), symbol)
    got = cache.get(key)
    if got is None:
        try:
            bars = market.bars(symbol)
        except KeyError:
            raise DataError(f"feature provider '{name}': the market has no minute bars for '{symbol}'") from None
        ns = bars.index.asi8
        days = bars.index.tz_convert(NY).normalize().asi8
        last = np.r_[days[1:] != days[:-1], True]
        got = (ns[last], bars["close"].to_numpy(dtype=float)[last])
        cache[key] = got
    ns, close = got
    return close[: int(np.searchsorted(ns, minutes.asi8[0], side="left"))]


def _bar_closes(market, symbol: str, minutes, cache: dict, name: str) -> np.ndarray:
    bars = session_bars(market, symbol, minutes, cache)
    if bars is None:
        raise DataError(f"feature provider '{name}': the market has no minute bars for '{symbol}'")
    return bars["close"]


# ------------------------------------------------------------------------- IV rank
class IvRankParams(PluginParams):
    symbol: str = Field("VIX", description="the implied-volatility index whose bars are read")
    lookback: int = Field(252, ge=2, le=5000, description="past sessions whose closes the current value is ranked against")


class IvRank(SessionFeatures):
    """IV rank and IV percentile of VIX against the last `lookback` sessions' closes (iv_rank, iv_percentile).

    ``iv_rank = 100 (x - min) / (max - min)`` and ``iv_percentile = 100 x (past closes below x) / n``, with x
    the index at the bar and min, max, n over the last ``lookback`` session closes before today (nan until
    ``lookback`` sessions have passed, or when max = min)."""

    name = "iv_rank"
    Params = IvRankParams
    names = ("iv_rank", "iv_percentile")

    def on_session_start(self, day, market, minutes) -> None:
        p = self.params
        x = _bar_closes(market, p.symbol, minutes, self._cache, self.name)
        past = _daily_closes_before(market, p.symbol, minutes, self._cache, self.name)[-p.lookback:]
        n = len(minutes)
        if len(past) < p.lookback:
            self._table = np.full((n, 2), np.nan)
            return
        lo, hi = past.min(), past.max()
        with np.errstate(invalid="ignore", divide="ignore"):
            rank = np.where(hi > lo, 100.0 * (x - lo) / (hi - lo), np.nan)
        srt = np.sort(past)
        pct = 100.0 * np.searchsorted(srt, x, side="left") / len(past)
        pct = np.where(np.isnan(x), np.nan, pct)
        self._table = np.column_stack([rank, pct])


# -------------------------------------------------------------------- term structure
class TermStructureParams(PluginParams):
    pass


class TermStructure(SessionFeatures):
    """Volatility term structure from VIX9D, VIX and VIX3M (term_slope, term_slope_3m, contango)."""

    name = "term_structure"
    Params = TermStructureParams
    names = ("term_slope", "term_slope_3m", "contango")

    def on_session_start(self, day, market, minutes) -> None:
        vix = _bar_closes(market, "VIX", minutes, self._cache, self.name)
        vix9d = _bar_closes(market, "VIX9D", minutes, self._cache, self.name)
        b3 = session_bars(market, "VIX3M", minutes, self._cache)
        vix3m = b3["close"] if b3 is not None else np.full(len(minutes), np.nan)
        slope = vix - vix9d
        contango = np.where(np.isnan(slope), np.nan, (vix9d < vix).astype(float))
        self._table = np.column_stack([slope, vix3m - vix, contango])


# ----------------------------------------------------------------------- vol regime
class VolRegimeParams(PluginParams):
    calm_below: float = Field(15.0, gt=0, description="VIX below this: regime 0 (calm)")
    stressed_at: float = Field(25.0, gt=0, description="VIX at or above this: regime 2 (stressed), 3 (crisis) "
                                                       "when VIX9D is above VIX")

    @model_validator(mode="after")
    def _ordered(self):
        if self.calm_below >= self.stressed_at:
            raise ValueError(f"calm_below {self.calm_below:g} must be below stressed_at {self.stressed_at:g}")
        return self


class VolRegime(SessionFeatures):
    """Volatility regime from the VIX level and the 9-day/30-day structure (vol_regime: 0 calm, 1 normal,
    2 stressed, 3 crisis)."""

    name = "vol_regime"
    Params = VolRegimeParams
    names = ("vol_regime",)

    def on_session_start(self, day, market, minutes) -> None:
        p = self.params
        vix = _bar_closes(market, "VIX", minutes, self._cache, self.name)
        vix9d = _bar_closes(market, "VIX9D", minutes, self._cache, self.name)
        regime = np.where(vix < p.calm_below, 0.0, np.where(vix < p.stressed_at, 1.0, 2.0))
        regime = np.where((regime == 2.0) & (vix9d > vix), 3.0, regime)
        self._table = np.where(np.isnan(vix), np.nan, regime)[:, None]


# ------------------------------------------------------------- realized vs implied
class RealizedVolParams(PluginParams):
    symbol: str = Field("SPX", description="the underlying whose daily closes give the realized volatility")
    vol_index: str = Field("VIX", description="the implied-volatility index (its level / 100 is the implied vol)")
    sessions: int = Field(20, ge=2, le=500, description="daily returns in the realized volatility")


class RealizedVsImplied(SessionFeatures):
    """Realized volatility of the last `sessions` daily returns against implied (rv, iv, iv_rv_spread, iv_rv_ratio).

    ``rv = sqrt(252 / N x sum of the last N squared daily log returns)`` (zero mean), where the last return
    is today's, from the previous close to the bar's close; ``iv = VIX / 100``."""

    name = "realized_vol"
    Params = RealizedVolParams
    names = ("rv", "iv", "iv_rv_spread", "iv_rv_ratio")

    def on_session_start(self, day, market, minutes) -> None:
        p = self.params
        n = len(minutes)
        price = _bar_closes(market, p.symbol, minutes, self._cache, self.name)
        closes = _daily_closes_before(market, p.symbol, minutes, self._cache, self.name)
        iv = _bar_closes(market, p.vol_index, minutes, self._cache, self.name) / 100.0
        if len(closes) < p.sessions:  # N - 1 past returns need N past closes
            rv = np.full(n, np.nan)
        else:
            past = np.log(closes[-p.sessions:][1:] / closes[-p.sessions:][:-1])
            today = np.log(price / closes[-1])
            rv = np.sqrt(252.0 / p.sessions * (np.sum(past ** 2) + today ** 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = iv / rv
        self._table = np.column_stack([rv, iv, iv - rv, ratio])


# ---------------------------------------------------------------------------- GEX
def dealer_gex(spot: float, gamma: np.ndarray, open_interest: np.ndarray, is_call: np.ndarray,
               multiplier: float = 100.0) -> float:
    """Dealer gamma exposure in dollars per 1 % move of the underlying.

    Dealer-positioning assumption (the usual one for index options): customers are net buyers of puts
    and net sellers of calls, so dealers are **long the calls and short the puts** of the open interest.
    ``GEX = sum(sign x gamma x OI x multiplier x spot^2 x 0.01)``, sign +1 for calls, -1 for puts: the
    dollars of underlying dealers must buy (+) or sell (-) for each 1 % rise."""
    sign = np.where(is_call, 1.0, -1.0)
    g = np.nan_to_num(np.asarray(gamma, dtype=float))
    return float(np.sum(sign * g * np.asarray(open_interest, dtype=float)) * multiplier * spot * spot * 0.01)


def bsm_gamma(spot, strike, years, vol, rate: float, div_yield: float) -> np.ndarray:
    """Black-Scholes-Merton gamma ``exp(-qT) phi(d1) / (S sigma sqrt(T))`` (calls and puts alike), broadcast."""
    sq = vol * np.sqrt(years)
    d1 = (np.log(spot / strike) + (rate - div_yield + 0.5 * vol * vol) * years) / sq
    return np.exp(-div_yield * years - 0.5 * d1 * d1) / (math.sqrt(2 * math.pi) * spot * sq)


def zero_gamma_level(spot: float, strike, is_call, years, iv, open_interest, *, rate: float, div_yield: float,
                     multiplier: float = 100.0, span: float = 0.15, points: int = 61) -> float:
    """The underlying level at which dealer GEX (each option's gamma recomputed there, IVs and times held)
    crosses zero, nearest to ``spot`` within +/-``span``; nan when it does not change sign there."""
    strike, is_call, years, iv = (np.asarray(a) for a in (strike, is_call, years, iv))
    oi = np.asarray(open_interest, dtype=float)
    ok = (oi > 0) & np.isfinite(iv) & (iv > 0) & (years > 0)
    strike, is_call, years, iv, oi = strike[ok], is_call[ok], years[ok], iv[ok], oi[ok]
    if not len(oi):
        return math.nan
    sign = np.where(is_call, 1.0, -1.0)

    def gex(levels):
        levels = np.atleast_1d(np.asarray(levels, dtype=float))[:, None]
        return (bsm_gamma(levels, strike, years, iv, rate, div_yield) * sign * oi).sum(axis=1) \
            * multiplier * levels[:, 0] ** 2 * 0.01

    grid = np.linspace(spot * (1 - span), spot * (1 + span), points)
    vals = gex(grid)
    cross = np.flatnonzero(np.sign(vals[:-1]) * np.sign(vals[1:]) <= 0)
    if not cross.size:
        return math.nan
    mid = (grid[cross] + grid[cross + 1]) / 2
    k = int(cross[np.argmin(np.abs(mid - spot))])
    lo, hi, flo = grid[k], grid[k + 1], vals[k]
    if flo == 0:
        return float(lo)
    for _ in range(32):  # bisection: 2^-32 of a grid step, far under a cent of index
        m = (lo + hi) / 2
        fm = gex(m)[0]
        if np.sign(fm) == np.sign(flo):
            lo, flo = m, fm
        else:
            hi = m
    return float((lo + hi) / 2)


class GexParams(PluginParams):
    underlying: str = Field("SPX", description="whose option chain is read")
    max_dte: int = Field(45, ge=0, le=400, description="expiries up to this many calendar days out count")
    every_minutes: int = Field(60, ge=1, le=390, description="recomputed on the bar labelled 09:30 and every "
                                                              "this many minutes after; held in between")
    rate: float = Field(0.045, ge=-0.05, le=0.5, description="risk-free rate for the zero-gamma scan's gammas")
    div_yield: float = Field(0.015, ge=0, le=0.5, description="dividend yield for the zero-gamma scan's gammas")


class GammaExposure(SessionFeatures):
    """Dealer gamma exposure from the chain's open interest, dealers long calls and short puts (gex, dollars
    per 1 % move; zero_gamma, the level where it changes sign; gex_flip = spot - zero_gamma)."""

    name = "gex"
    Params = GexParams
    names = ("gex", "zero_gamma", "gex_flip")

    def on_session_start(self, day, market, minutes) -> None:
        p = self.params
        n = len(minutes)
        table = np.full((n, 3), np.nan)
        lister = getattr(market, "listed_expiries", None)
        for i in range(0, n, p.every_minutes):
            at = minutes[i]
            expiries = None
            if callable(lister):
                expiries = [e for e in lister(p.underlying, day) if (e - day).days <= p.max_dte]
                if not expiries:
                    continue
            snap = market.snapshot(p.underlying, at, expiries)
            keep = np.array([(pd.Timestamp(e).date() - day).days <= p.max_dte for e in snap.expiry]) \
                if len(snap.expiry) else np.zeros(0, bool)
            table[i:i + p.every_minutes] = self.figures(snap, keep)
        self._table = table

    def figures(self, snap, keep=None) -> tuple[float, float, float]:
        """(gex, zero_gamma, gex_flip) of one chain snapshot (rows ``keep`` only)."""
        keep = np.ones(len(snap.strike), bool) if keep is None else keep
        oi = snap.open_interest[keep]
        if not oi.any():
            return math.nan, math.nan, math.nan  # a chain without open interest says nothing about dealers
        spot = float(snap.underlying_price)
        mult = 100.0  # SPX, XSP and VIX options: 100 x the index
        gex = dealer_gex(spot, snap.gamma[keep], oi, snap.is_call[keep], mult)
        roots, expiries = snap.root[keep], snap.expiry[keep]
        pairs = {(str(r), e) for r, e in zip(roots, expiries)}
        at_of = {(r, e): settlement_time(OptionContract(r, pd.Timestamp(e).date(), 1.0, "C")).value for r, e in pairs}
        settle = np.array([at_of[(str(r), e)] for r, e in zip(roots, expiries)], dtype=np.int64)
        years = years_between(snap.timestamp.value, settle)
        z = zero_gamma_level(spot, snap.strike[keep], snap.is_call[keep], years, snap.iv[keep], oi,
                             rate=self.params.rate, div_yield=self.params.div_yield, multiplier=mult)
        return gex, z, spot - z


PROVIDERS = (IvRank, TermStructure, VolRegime, RealizedVsImplied, GammaExposure)
