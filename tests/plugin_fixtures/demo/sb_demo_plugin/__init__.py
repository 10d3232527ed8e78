"""A complete third-party strikebench plugin: one strategy and one risk manager."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from strikebench.api import PluginParams, RiskManager, Strategy, Veto
from strikebench.hookspecs import hookimpl


class DemoHoldParams(PluginParams):
    underlying: Literal["SPX", "XSP"] = Field("SPX", description="index whose chain is traded")
    entry_time: dt.time = Field(dt.time(10, 0), description="decision time, America/New_York")
    hold_days: int = Field(3, ge=1, le=30, description="calendar days to hold each position")
    short_deltas: list[float] = Field(default_factory=lambda: [0.16], min_length=1,
                                      description="|delta| of the short leg")
    max_loss: float | None = Field(None, gt=0, description="optional stop, dollars per spread")


class DemoHold(Strategy):
    """Demo: sell one put spread and hold it for hold_days (test fixture)."""

    name = "demo_hold"
    Params = DemoHoldParams


class DemoMaxContractsParams(PluginParams):
    max_contracts: int = Field(10, ge=1, description="largest opening order, in spreads")


class DemoMaxContracts(RiskManager):
    """Demo: veto opening orders larger than max_contracts (test fixture)."""

    name = "demo_max_contracts"
    Params = DemoMaxContractsParams

    def check(self, request, portfolio):
        if request.quantity > self.params.max_contracts:
            return Veto(f"{request.quantity} spreads > max {self.params.max_contracts}", rule=self.name)
        return None


@hookimpl
def register_strategies(register):
    register(DemoHold)


@hookimpl
def register_risk_managers(register):
    register(DemoMaxContracts)
