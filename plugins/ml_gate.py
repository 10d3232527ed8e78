"""``ml_gate``: a risk manager that vetoes an entry whose learned chance of being stopped is not worth it.

For an opening vertical (one leg sold, one bought, same expiry) the gate scores the order with the model
file of `strikebench ml train` on the same features the dataset had (:mod:`strikebench.ml.features`: the
chain snapshot at the order's bar, the context providers fed every session) and vetoes it when

    P(stop) x expected loss  >  threshold x expected gain

with expected loss = ``loss_per_credit`` x credit x multiplier x quantity and expected gain =
``gain_per_credit`` x credit x multiplier x quantity, both ratios measured on the model's training labels
(the mean loss of a stopped trade and the mean gain of the others, per point of credit). The probability,
both amounts, the verdict and the model's hash go into the decision's context (``risk_notes.ml_gate``),
for every entry it scores, vetoed or not. The same plugin runs in a backtest, a replay and paper trading
(risk managers see the same market and orders there). Anything else (an exit, a combo that is not a
vertical) passes unscored.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from strikebench.api import PluginParams, RiskManager, Veto
from strikebench.hookspecs import hookimpl

__all__ = ["MLGate", "veto_rule"]


class MLGateParams(PluginParams):
    model: str = Field(description="the model file of `strikebench ml train` (model-<hash>.sbm)")
    threshold: float = Field(0.5, gt=0, description="veto when P(stop) x expected loss > threshold x expected gain")


def veto_rule(p_stop: float, expected_loss: float, expected_gain: float, threshold: float) -> bool:
    """True when ``p_stop x expected_loss > threshold x expected_gain`` (the gate's one rule)."""
    return p_stop * expected_loss > threshold * expected_gain


class MLGate(RiskManager):
    """Veto an entry when P(stop) x expected loss > threshold x expected gain (a model of `ml train`)."""

    name = "ml_gate"
    Params = MLGateParams

    def __init__(self, params=None):
        super().__init__(params)
        from strikebench.ml.features import ContextFeatures
        from strikebench.ml.model import load_model

        self.model = load_model(Path(self.params.model).expanduser())
        m = self.model.manifest
        self.loss_per_credit = float(m["loss_per_credit"])
        self.gain_per_credit = float(m["gain_per_credit"])
        self.context = ContextFeatures(tuple((n, p) for n, p in m["context_providers"]))
        self.market = None
        self._cache: dict = {}
        self._note: dict | None = None

    def on_session_start(self, day, market, minutes) -> None:
        self.market = market
        self._cache.clear()
        self.context.start_session(day, market, minutes)

    def pop_note(self) -> dict | None:
        """The last scored order's figures (handed once to the decision being recorded)."""
        note, self._note = self._note, None
        return note

    def score(self, request) -> dict | None:
        """The gate's figures for an opening order, or None when it does not score it."""
        from strikebench.ml.features import candidate_features

        order = request.order
        ratios = sorted(int(leg.ratio) for leg in order.legs)
        if len(order.legs) != 2 or ratios != [-1, 1] or self.market is None:
            return None
        if len({leg.contract.expiry for leg in order.legs}) != 1:
            return None
        short = next(leg.contract for leg in order.legs if leg.ratio < 0)
        long = next(leg.contract for leg in order.legs if leg.ratio > 0)
        price = order.limit_price if order.limit_price is not None else request.est_price
        if price is None or not math.isfinite(price) or price >= 0:  # not a credit
            return None
        key = (request.at, short, long, order.quantity, price)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        at = pd.Timestamp(request.at)
        if at.tzinfo is None:
            at = at.tz_localize("America/New_York")
        snap = self.market.snapshot(short.underlying, at, [short.expiry])
        feats = candidate_features(snap, short, long, at)
        if feats is None:
            return None
        feats.update(self.context.values_at(at))
        row = np.array([[feats.get(name, math.nan) for name in self.model.features]], dtype=np.float64)
        p = float(self.model.p_stop(row)[0])
        credit = -float(price)
        scale = credit * short.multiplier * order.quantity
        loss, gain = self.loss_per_credit * scale, self.gain_per_credit * scale
        vetoed = veto_rule(p, loss, gain, self.params.threshold)
        note = {"model": self.model.model_hash, "p_stop": round(p, 6), "expected_loss": round(loss, 2),
                "expected_gain": round(gain, 2), "threshold": self.params.threshold, "vetoed": vetoed,
                "reason": (f"P(stop) {p:.3f} x loss ${loss:,.2f} = ${p * loss:,.2f} "
                           f"{'>' if vetoed else '<='} {self.params.threshold:g} x gain ${gain:,.2f} = "
                           f"${self.params.threshold * gain:,.2f} (model {self.model.model_hash})")}
        self._cache[key] = note
        return note

    def check(self, request, portfolio):
        note = self.score(request)
        self._note = note
        if note is not None and note["vetoed"]:
            return Veto(note["reason"])
        return None


@hookimpl
def register_risk_managers(register):
    register(MLGate)
