"""Built-in data feeds: the synthetic market (the embedded default)."""

from __future__ import annotations

import datetime as dt

from pydantic import Field, field_validator, model_validator

from strikebench.api import DataFeed, PluginParams
from strikebench.hookspecs import hookimpl

__all__ = ["SyntheticFeed", "SyntheticParams"]


#: The synthetic market builds its timeline EXTENSION_DAYS (400) calendar days past ``end``, capped at
#: 2050-12-01, and prices VIX futures to the month after the timeline's last month, which must stay inside
#: the exchange calendar (to 2050-12-30): the last ``end`` that works is 2050-12-01 - 401 days.
LAST_SYNTHETIC_END = dt.date(2049, 10, 26)


class SyntheticParams(PluginParams):
    seed: int = Field(42, ge=0, le=2**63 - 1, description="random seed: the same seed gives bit-identical bars and chains")
    start: dt.date = Field(dt.date(2023, 1, 3), description="first session (inclusive)")
    end: dt.date = Field(dt.date(2023, 12, 29), description="last session (inclusive)")
    scenario: str = Field("default", description="scenario name (default, calm, grind_up, crash, vol_spike, crisis) or a YAML file path")

    @field_validator("scenario")
    @classmethod
    def _scenario_loads(cls, v: str) -> str:
        from strikebench.feeds.synthetic import ScenarioError, load_scenario

        try:
            load_scenario(v)
        except ScenarioError as exc:
            raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _ordered(self):
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        from strikebench.calendar import default_calendar

        cal = default_calendar()
        first = cal.first_session.date()
        if self.start < first:
            raise ValueError(f"start {self.start} is before {first}, the first session the market calendar covers")
        if self.end > LAST_SYNTHETIC_END:
            raise ValueError(f"end {self.end} is after {LAST_SYNTHETIC_END}, the last day the synthetic market can "
                             f"simulate (it lists expiries about 400 days past the end, and the market calendar ends "
                             f"{cal.last_session.date()})")
        if len(cal.sessions(self.start, self.end)) == 0:
            raise ValueError(f"no trading sessions from {self.start} to {self.end} (weekends and exchange holidays "
                             f"only); widen the range")
        return self


class SyntheticFeed(DataFeed):
    """Synthetic SPX/XSP/VIX market with full option chains, deterministic from a seed (no data needed)."""

    name = "synthetic"
    Params = SyntheticParams

    def open(self):
        """Build the market (bars now, chains lazily)."""
        from strikebench.feeds.synthetic import SyntheticMarket

        p = self.params
        return SyntheticMarket(seed=p.seed, start=p.start, end=p.end, scenario=p.scenario)


@hookimpl
def register_feeds(register):
    register(SyntheticFeed)
