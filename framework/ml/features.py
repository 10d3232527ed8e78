"""The features of one vertical-spread candidate, computed the same way by the dataset and by ``ml_gate``.

Two halves, each from what was known at the decision's bar (quotes and bars as of its close):

* the candidate's own figures, from the chain snapshot the decision saw: short and long |delta|, width,
  mid credit, combo bid/ask width, credit/width, DTE (calendar days), the short leg's IV and distance
  from the money, minute of the day;
* the market context: the values of the built-in context providers in :data:`CONTEXT_PROVIDERS`
  (VIX levels, term structure, volatility regime, realized vs implied volatility, momentum, ATR)
  at that bar, each provider fed the session's minutes exactly as the engine feeds it.

The dataset reads the snapshot stored in the journal (checksum verified); the gate asks the market for
the same snapshot at the order's bar. One function, :func:`candidate_features`, turns either into the
feature dict, so the model sees at trading time what it was trained on.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from strikebench.errors import DataError

__all__ = ["CANDIDATE_FEATURES", "CONTEXT_PROVIDERS", "ContextFeatures", "candidate_features", "leg_rows"]

#: candidate features, in column order
CANDIDATE_FEATURES = ("dte", "short_delta", "long_delta", "width", "mid_credit", "ba_width", "credit_width",
                      "short_iv", "otm_pct", "minute_of_day", "is_call")

#: context providers whose values every row carries (name, params): built-ins that read bars only (cheap)
CONTEXT_PROVIDERS: tuple[tuple[str, dict], ...] = (
    ("vix", {}), ("term_structure", {}), ("vol_regime", {}), ("realized_vol", {}), ("momentum", {}), ("atr", {}),
)


def leg_rows(snapshot, short, long) -> tuple[int, int] | None:
    """Rows of the short and long contracts in ``snapshot`` (usable quotes only), or None."""
    s = snapshot.find_contract(short)
    lg = snapshot.find_contract(long)
    if s is None or lg is None:
        return None
    return int(s), int(lg)


def candidate_features(snapshot, short, long, at: pd.Timestamp) -> dict[str, float] | None:
    """The candidate features of a vertical (``short`` sold, ``long`` bought) on ``snapshot``; None when
    either leg has no usable quote in it."""
    rows = leg_rows(snapshot, short, long)
    if rows is None:
        return None
    s, lg = rows
    sb, sa, lb, la = (float(snapshot.bid[s]), float(snapshot.ask[s]), float(snapshot.bid[lg]), float(snapshot.ask[lg]))
    width = abs(float(snapshot.strike[s]) - float(snapshot.strike[lg]))
    mid_credit = (sb + sa) / 2 - (lb + la) / 2
    spot = float(snapshot.underlying_price)
    strike = float(snapshot.strike[s])
    is_call = bool(snapshot.is_call[s])
    at = pd.Timestamp(at)
    return {
        "dte": float((short.expiry - at.date()).days),
        "short_delta": abs(float(snapshot.delta[s])),
        "long_delta": abs(float(snapshot.delta[lg])),
        "width": width,
        "mid_credit": mid_credit,
        "ba_width": (sa - sb) + (la - lb),
        "credit_width": mid_credit / width if width > 0 else math.nan,
        "short_iv": float(snapshot.iv[s]),
        "otm_pct": 100.0 * ((strike - spot) if is_call else (spot - strike)) / spot,
        "minute_of_day": float(at.hour * 60 + at.minute),
        "is_call": float(is_call),
    }


def _build(name: str, params: dict):
    from strikebench.plugin_manager import get_plugin_manager

    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = get_plugin_manager(load_entry_points=False).registry
    entry = _REGISTRY.get("context_provider", name)
    if entry is None:
        raise DataError(f"context provider '{name}' is not installed")
    return entry.build(entry.params_model(**params))


_REGISTRY = None


class ContextFeatures:
    """The context providers of :data:`CONTEXT_PROVIDERS` (or ``providers``), fed session by session."""

    def __init__(self, providers=CONTEXT_PROVIDERS):
        self.specs = tuple((str(n), dict(p)) for n, p in providers)
        self.providers = [_build(n, p) for n, p in self.specs]
        self.names = tuple(name for p in self.providers for name in p.feature_names())
        self._day = None
        self._minutes: pd.DatetimeIndex | None = None

    def start_session(self, day, market, minutes: pd.DatetimeIndex) -> None:
        """The engine's ``on_session_start`` of each provider: ``minutes`` are the session's bar labels."""
        self._day, self._minutes = day, minutes
        for p in self.providers:
            p.on_session_start(day, market, minutes)

    def start_day(self, day, market, symbol: str = "SPX") -> None:
        """:meth:`start_session` with the session's minutes taken from ``market.bars(symbol)``."""
        if self._day == day:
            return
        bars = market.bars(symbol)
        local = bars.index
        sel = local[(local >= pd.Timestamp(day, tz=local.tz)) & (local < pd.Timestamp(day, tz=local.tz)
                                                                  + pd.Timedelta(days=1))]
        if not len(sel):
            raise DataError(f"the market has no {symbol} bars on {day}")
        self.start_session(day, market, sel)

    def values_at(self, at: pd.Timestamp) -> dict[str, float]:
        """Every provider's values at the bar labelled ``at`` (nan when not known yet)."""
        i = int(np.searchsorted(self._minutes.asi8, pd.Timestamp(at).value, side="right")) - 1
        out: dict[str, float] = {}
        for p in self.providers:
            out.update(p.values(max(i, 0)) if i >= 0 else {n: math.nan for n in p.feature_names()})
        return {k: float(v) for k, v in out.items()}
