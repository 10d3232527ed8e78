"""Built-in fill models: mid, mid_slippage, natural, limit.

A fill model answers one question for the broker: where in the market would this
combo order trade against these leg quotes right now (its raw model price)? Every
order *buys the combo* as its signed leg ratios describe (see
:mod:`strikebench.options.orders`), so "worse for the trader" is always a higher
net price. The price the order then fills at -- on the tick grid (rounded up),
never worse than the natural, inside the combo's no-arbitrage range, never through
its limit -- is decided in one place, :mod:`strikebench.options.fills`, for every
model here and for the broker's exit curves.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from strikebench.api import FillModel, PluginParams
from strikebench.hookspecs import hookimpl
from strikebench.options.fills import tradeable
from strikebench.options.orders import combo_mid, combo_natural, combo_width

__all__ = ["MidFill", "MidSlippageFill", "NaturalFill", "LimitFill", "quote_usable"]


def quote_usable(bid: np.ndarray, ask: np.ndarray, ratios: np.ndarray | None = None) -> bool:
    """True when the combo can trade on these quotes: every leg finite, uncrossed, with a positive
    ask, and every leg sold (negative ratio) with a positive bid. Without ``ratios`` every leg
    counts as bought (a zero bid is fine)."""
    if ratios is None:
        ratios = np.ones(np.shape(bid)[-1])
    return bool(tradeable(ratios, bid, ask))


class _PricedFill(FillModel):
    """Built-in models: a model price; the fill itself comes from FillModel.fill_price (the one rule)."""

    #: fraction of a combo's bid/ask width a fill gives up from the mid (what strategies estimate credits with)
    slippage_fraction: float = 0.30


class MidFill(_PricedFill):
    """Fills at the combo mid (optimistic; for comparisons)."""

    name = "mid"
    slippage_fraction = 0.0

    def model_price(self, ratios, bid, ask):
        return combo_mid(ratios, bid, ask)


class MidSlippageParams(PluginParams):
    k: float = Field(0.30, ge=0.0, le=1.0,
                     description="fraction of the combo's bid/ask width given up from mid (0 = mid, 0.5 = natural for one leg)")


class MidSlippageFill(_PricedFill):
    """Fills at mid give or take k x (ask - bid) of the net spread: credit = mid - k x width, debit = mid + k x width."""

    name = "mid_slippage"
    Params = MidSlippageParams

    @property
    def slippage_fraction(self) -> float:
        return self.params.k

    def model_price(self, ratios, bid, ask):
        return combo_mid(ratios, bid, ask) + self.params.k * combo_width(ratios, bid, ask)


class NaturalFill(_PricedFill):
    """Fills at the natural: buys at the ask, sells at the bid (pessimistic)."""

    name = "natural"
    slippage_fraction = 0.5  # buying at the ask and selling at the bid is mid + half the width

    def model_price(self, ratios, bid, ask):
        return combo_natural(ratios, bid, ask)


class LimitParams(PluginParams):
    reference: Literal["natural", "mid", "mid_slippage"] = Field(
        "natural", description="price the limit must be marketable against")
    k: float = Field(0.30, ge=0.0, le=1.0, description="k of the mid_slippage reference")


class LimitFill(_PricedFill):
    """Fills a limit order at its limit (never worse than the natural) when the limit is marketable
    against a reference price; a market order fills at the reference."""

    name = "limit"
    Params = LimitParams
    fills_at_limit = True

    @property
    def slippage_fraction(self) -> float:
        return {"natural": 0.5, "mid": 0.0, "mid_slippage": self.params.k}[self.params.reference]

    def model_price(self, ratios, bid, ask):
        if self.params.reference == "natural":
            return combo_natural(ratios, bid, ask)
        mid = combo_mid(ratios, bid, ask)
        if self.params.reference == "mid":
            return mid
        return mid + self.params.k * combo_width(ratios, bid, ask)


@hookimpl
def register_fill_models(register):
    for cls in (MidFill, MidSlippageFill, NaturalFill, LimitFill):
        register(cls)
