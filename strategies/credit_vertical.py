"""credit_vertical: SPX 3/5/7 DTE credit verticals (seed 002)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import Field, model_validator

from strikebench.api import PluginParams, Strategy

RULESET_VERSION = "credit_vertical/1"


class CreditVerticalParams(PluginParams):
    underlying: Literal["SPX", "XSP"] = Field("SPX", description="index whose chain is traded")
    root: str = Field("SPXW", description="option root (SPXW dailies, XSP)")
    dte_targets: list[Annotated[int, Field(ge=0, le=60)]] = Field(default_factory=lambda: [3, 5, 7], min_length=1,
                                   description="calendar-day DTE targets, one candidate expiry each")
    dte_tolerance: int = Field(1, ge=0, le=7, description="an expiry qualifies within this many days of a target")
    entry_times: list[dt.time] = Field(default_factory=lambda: [dt.time(10), dt.time(11), dt.time(12)], min_length=1,
                                       description="decision times, America/New_York")
    short_deltas: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: [0.10, 0.20], min_length=1, description="|delta| targets of the short leg, each in (0, 1)")
    side: Literal["put", "call", "both"] = Field("put", description="which verticals to sell")
    width: float | None = Field(25.0, gt=0, description="long leg this many points farther OTM (multiple of strike_grid)")
    long_delta_distance: float | None = Field(None, gt=0, lt=1,
                                              description="or: long leg this much |delta| farther OTM (instead of width)")
    strike_grid: float = Field(5.0, gt=0, description="strike spacing the width must be a multiple of")
    min_credit: float = Field(0.30, ge=0, description="minimum net credit per spread, index points")
    max_bid_ask_width: float = Field(1.00, gt=0, description="maximum combo bid/ask width, index points")
    take_profit_pct: float = Field(0.50, gt=0, lt=1, description="close when the spread costs <= (1 - this) x credit")
    stop_multiple: float = Field(2.0, gt=1, description="close when closing costs >= this x credit (loss = (m-1) x credit)")
    exit_time: dt.time | None = Field(None, description="optional session exit time on expiry day, America/New_York")
    contracts: int = Field(1, ge=1, le=1000, description="spreads per trade")

    @model_validator(mode="after")
    def _one_long_leg_rule(self):
        if (self.width is None) == (self.long_delta_distance is None):
            raise ValueError("set exactly one of width and long_delta_distance")
        if self.width is not None:
            ratio = self.width / self.strike_grid
            if abs(ratio - round(ratio)) > 1e-9:
                raise ValueError(f"width {self.width:g} is not a multiple of the {self.strike_grid:g}-point strike grid")
        return self


class CreditVertical(Strategy):
    """SPX credit verticals at 3/5/7 DTE: short leg by delta, long leg by width, 50% take profit, 2x stop."""

    name = "credit_vertical"
    Params = CreditVerticalParams
