"""Built-in fill models: mid, mid_slippage, natural, limit.

A fill model answers one question for the broker: at what signed net price would
this combo order fill against these leg quotes right now (or not at all)?
Every order *buys the combo* as its signed leg ratios describe (see
:mod:`strikebench.options.orders`), so "worse for the trader" is always a
higher net price, and every fill price is rounded **up** to the order's tick
(complex orders on the complex grid, e.g. 0.05 for SPX spreads).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from strikebench.api import FillModel, PluginParams
from strikebench.hookspecs import hookimpl
from strikebench.options.chain import usable_quotes
from strikebench.options.orders import Order, OrderType, combo_mid, combo_natural, combo_width
from strikebench.options.ticks import round_to_tick

__all__ = ["MidFill", "MidSlippageFill", "NaturalFill", "LimitFill", "quote_usable"]


def quote_usable(bid: np.ndarray, ask: np.ndarray) -> bool:
    """True when every leg has a finite, positive, uncrossed quote."""
    return bool(usable_quotes(bid, ask).all())


class _PricedFill(FillModel):
    """Shared logic: model price -> tick rounding (worse for the trader) -> limit check."""

    #: fraction of a combo's bid/ask width a fill gives up from the mid (what strategies estimate credits with)
    slippage_fraction: float = 0.30

    def model_price(self, ratios: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> float:
        raise NotImplementedError

    def fill_price(self, order: Order, bid: np.ndarray, ask: np.ndarray) -> float | None:
        """Signed net fill price per combo, or None when the order does not fill now.

        ``bid``/``ask`` are the legs' quotes, in the order of ``order.legs``.
        Unusable quotes (NaN, zero, crossed) never fill.
        """
        if not quote_usable(bid, ask):
            return None
        raw = float(self.model_price(order.ratios, bid, ask))
        price = float(round_to_tick(raw, order.root, direction="up", complex_order=order.is_complex))
        if order.order_type == OrderType.LIMIT and price > order.limit_price + 1e-9:
            return None
        return price


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
    """Fills a limit order at its limit only when the limit is marketable against a reference price."""

    name = "limit"
    Params = LimitParams

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

    def fill_price(self, order, bid, ask):
        reference = super().fill_price(order, bid, ask)
        if reference is None or order.order_type == OrderType.MARKET:
            return reference
        return float(order.limit_price)


@hookimpl
def register_fill_models(register):
    for cls in (MidFill, MidSlippageFill, NaturalFill, LimitFill):
        register(cls)
