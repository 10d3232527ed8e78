"""The ``sweep:`` and ``walk_forward:`` sections of a run config, as typed models.

They are validated with the rest of the config (:class:`strikebench.config.RunConfig`):
a misspelled key or a bad bound is the same one-line error naming file, line and
YAML path. ``strikebench backtest`` ignores both sections; ``strikebench sweep`` and
``strikebench walk-forward`` read them (see docs/research.md).
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["ParamSpace", "Objective", "SweepConfig", "WalkForwardConfig", "ScenarioSearchConfig", "Plausibility",
           "SUMMARY_OBJECTIVES"]

#: Figures of a run's summary an objective may name (``per_strategy.ID.FIELD`` names one strategy's).
SUMMARY_OBJECTIVES = (
    "return_pct", "final_equity", "realized_pnl", "max_drawdown", "max_drawdown_per_bar", "worst_day",
    "best_day", "sharpe", "win_rate", "trades", "fees", "open_trades", "decisions", "vetoed_entries",
    "vetoed_orders",
)
PER_STRATEGY_OBJECTIVES = ("trades", "wins", "win_rate", "realized_pnl", "fees", "avg_pnl", "worst_trade",
                           "best_trade", "avg_entry_credit")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Scalar = int | float | str | bool


class ParamSpace(_Strict):
    """One parameter's range: ``{low, high[, step][, log]}`` (int or float) or ``{choices: [...]}``."""

    type: Literal["int", "float", "choice"] | None = Field(
        default=None, description="int | float | choice (default: choice with `choices`, int when low, high "
                                  "and step are whole numbers, else float)")
    low: int | float | None = Field(default=None, description="lowest value (inclusive)")
    high: int | float | None = Field(default=None, description="highest value (inclusive)")
    step: int | float | None = Field(default=None, gt=0, description="spacing of the values from low")
    log: bool = Field(default=False, description="sample on a log scale (low > 0; not with step)")
    choices: list[Any] | None = Field(default=None, min_length=1, description="the values to choose from")

    @model_validator(mode="after")
    def _coherent(self) -> "ParamSpace":
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.step is not None or self.log:
                raise ValueError("give either choices or low/high[/step/log], not both")
            if self.type not in (None, "choice"):
                raise ValueError(f"type {self.type!r} does not take choices (use type: choice)")
            if len({repr(c) for c in self.choices}) != len(self.choices):
                raise ValueError(f"choices {self.choices!r} repeat a value")
            return self
        if self.type == "choice":
            raise ValueError("type: choice needs `choices: [...]`")
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or give choices: [...])")
        if isinstance(self.low, bool) or isinstance(self.high, bool):
            raise ValueError("low and high must be numbers")
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite numbers")
        if self.high < self.low:
            raise ValueError(f"high {self.high} is below low {self.low}")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined (Optuna samples a log range continuously)")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        if self.kind == "int":
            for k in ("low", "high", "step"):
                v = getattr(self, k)
                if v is not None and float(v) != int(v):
                    raise ValueError(f"an int range needs whole numbers; {k} is {v}")
        return self

    @property
    def kind(self) -> str:
        if self.choices is not None:
            return "choice"
        if self.type is not None:
            return self.type
        whole = all(isinstance(v, int) for v in (self.low, self.high)) and (
            self.step is None or isinstance(self.step, int))
        return "int" if whole else "float"

    def grid(self) -> list[Any] | None:
        """Every value of a grid over this space, or None when it is continuous (a float range without step)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            step = int(self.step or 1)
            return list(range(int(self.low), int(self.high) + 1, step))
        if self.step is None:
            return None
        low, step, high = Decimal(repr(float(self.low))), Decimal(repr(float(self.step))), Decimal(repr(float(self.high)))
        n = int((high - low) / step)
        return [float(low + i * step) for i in range(n + 1)]

    def distribution(self):
        """The Optuna distribution of this space."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution(self.choices)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        high = self.high
        if self.step is not None:  # Optuna wants high on the grid of low + k*step
            high = self.grid()[-1]
        return FloatDistribution(float(self.low), float(high), log=self.log,
                                 step=float(self.step) if self.step is not None else None)

    def edge_values(self) -> list[Any]:
        """Values checked when the sweep starts: both ends of a range, every choice."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]


class Objective(_Strict):
    """A figure of the run summary to optimize."""

    name: str = Field(description="a summary figure: " + ", ".join(SUMMARY_OBJECTIVES)
                                  + "; or per_strategy.ID.FIELD")
    direction: Literal["maximize", "minimize"] = Field(description="maximize | minimize")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v in SUMMARY_OBJECTIVES:
            return v
        parts = v.split(".")
        if len(parts) == 3 and parts[0] == "per_strategy" and parts[2] in PER_STRATEGY_OBJECTIVES:
            return v
        raise ValueError(f"not a summary figure; use one of {', '.join(SUMMARY_OBJECTIVES)}, or "
                         f"per_strategy.ID.FIELD with FIELD one of {', '.join(PER_STRATEGY_OBJECTIVES)}")

    def value(self, summary: dict) -> float | None:
        node: Any = summary
        for part in self.name.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, bool) or node is None:
            return None
        value = float(node)
        return value if math.isfinite(value) else None


class SweepConfig(_Strict):
    """A parameter sweep: spaces over plugin params by their ``--set`` path, a sampler, objectives, a budget."""

    sampler: Literal["grid", "random", "tpe", "nsga2"] = Field(
        default="tpe", description="grid (every combination) | random | tpe (Optuna TPE) | nsga2 (Optuna NSGA-II)")
    space: dict[str, ParamSpace] = Field(min_length=1, description="dotted path (as for --set) -> its range")
    objectives: list[Objective] = Field(min_length=1, description="summary figures to optimize, with direction")
    trials: int | None = Field(default=None, ge=1, le=1_000_000,
                               description="trial budget (default 100; grid: default and at most every combination)")
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="seed of the sampler (same seed, same trials)")
    batch: int | None = Field(default=None, ge=1, le=10_000,
                              description="tpe/nsga2: trials proposed together from the results before them "
                                          "(default 8; nsga2: the population, default 16). Fixed by the config, "
                                          "not by the cores, so results do not depend on the machine")
    startup_trials: int = Field(default=10, ge=1, description="tpe: random trials before the model starts")
    workers: int | None = Field(default=None, ge=1, le=100_000,
                                description="parallel trials (default: every core; ray: the cluster's CPUs)")
    executor: Literal["local", "ray"] = Field(default="local", description="local (processes) | ray")
    ray_address: str | None = Field(default=None, description="ray: auto | ray://HOST:PORT | HOST:PORT "
                                                              "(default: a local Ray started for the sweep)")
    storage: str | None = Field(default=None, description="Optuna storage URL (default: sqlite study.sqlite3 in "
                                                          "the sweep folder; a database URL for a cluster)")
    keep_runs: bool = Field(default=False, description="keep every trial's run folder (journal, trades)")
    best: int = Field(default=3, ge=1, le=1000, description="how many best configs to write as YAML")

    @field_validator("space")
    @classmethod
    def _paths(cls, v: dict[str, ParamSpace]) -> dict[str, ParamSpace]:
        for path in v:
            if path.split(".")[0].split("[")[0] in ("sweep", "walk_forward", "name", "output", "journal"):
                raise ValueError(f"{path!r} cannot be swept (only plugin params and data settings)")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> "SweepConfig":
        if self.sampler == "grid":
            for path, space in self.space.items():
                if space.grid() is None:
                    raise ValueError(f"the grid needs a finite space; {path} is a float range without step")
        return self

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the spaces (the first path varies slowest)."""
        import itertools

        names = list(self.space)
        return [dict(zip(names, combo)) for combo in itertools.product(*(self.space[n].grid() for n in names))]

    def budget(self) -> int:
        if self.sampler == "grid":
            size = math.prod(len(s.grid()) for s in self.space.values())
            return min(size, self.trials) if self.trials else size
        return self.trials or 100

    def batch_size(self) -> int:
        if self.batch:
            return self.batch
        return 16 if self.sampler == "nsga2" else 8


class WalkForwardConfig(_Strict):
    """Walk-forward validation: optimize on in-sample sessions, trade the choice on the next out-of-sample ones."""

    mode: Literal["rolling", "anchored"] = Field(
        default="rolling", description="rolling (the in-sample window slides) | anchored (it grows from the start)")
    in_sample: int = Field(ge=2, le=20_000, description="in-sample window, trading sessions")
    out_of_sample: int = Field(ge=1, le=20_000, description="out-of-sample window, trading sessions "
                                                            "(windows follow each other without overlap)")
    select: str | None = Field(default=None, description="the objective that picks a window's parameters "
                                                         "(default: the first of sweep.objectives)")


#: The top-level parts of a scenario a search may vary (docs/synthetic-market.md describes each field).
SCENARIO_PARTS = ("underlying", "variance", "archetypes", "intraday", "vol_index", "surface", "quotes", "chains",
                  "events")

Bound = tuple[float | None, float | None]


class Plausibility(_Strict):
    """Bounds on the facts of a generated market (over the config's data span); ``[low, high]``, null = open.

    The defaults keep a market inside what SPX has done over a quarter or more outside the three worst
    crises (Oct 1987, Q4 2008, Mar 2020), after /work/shared/MARKET_FACTS.md: long-run realized vol 15-20 %,
    VIX mean 19-20 with spikes above 40 rare, VIX above the realized vol that follows (the variance risk
    premium), daily moves fat-tailed, VIX moving against the index (corr about -0.7). A market outside
    them is an infeasible trial (recorded with its reason, never one of the results)."""

    realized_vol_pct: Bound | None = Field(
        (5.0, 50.0), description="close-to-close realized vol over the span, annualized percent (SPX long run 15-20; "
                                 "its calmest quarters about 5-7, 2022 about 25, crisis quarters above 50; checked "
                                 "from 10 sessions on)")
    vix_mean: Bound | None = Field((10.0, 40.0), description="mean VIX close over the span (long run 19-20; a "
                                                             "quarter above 40 only in 2008 and 2020)")
    vix_min: Bound | None = Field((9.0, None), description="lowest VIX close (the record low is 9.14, Nov 2017)")
    vix_max: Bound | None = Field((None, 60.0), description="highest VIX close (above 60 only in Oct-Nov 2008 and "
                                                            "Mar 2020: 80.9 and 82.7)")
    max_daily_move_pct: Bound | None = Field(
        (None, 7.0), description="largest |close-to-close| SPX move, percent (beyond 7 % only in 1987, 2008, 2020)")
    max_gap_pct: Bound | None = Field(
        (None, 5.0), description="largest |open / previous close - 1| of SPX, percent (overnight and weekend gaps)")
    vix_minus_realized: Bound | None = Field(
        (-8.0, None), description="VIX mean minus realized vol, points: implied usually exceeds realized by a few "
                                  "points (a market where realized runs far above implied all span is a crisis; from 10 sessions on)")
    corr_dvix_return: Bound | None = Field(
        (None, -0.3), description="correlation of daily VIX changes with SPX returns (real about -0.7; checked "
                                  "from 20 sessions on)")

    @field_validator("*", mode="after")
    @classmethod
    def _ordered(cls, v):
        if v is not None:
            low, high = v
            for x in (low, high):
                if x is not None and not math.isfinite(x):
                    raise ValueError("bounds must be finite numbers or null")
            if low is not None and high is not None and high < low:
                raise ValueError(f"high {high} is below low {low}")
        return v


class ScenarioSearchConfig(SweepConfig):
    """``strikebench scenario search``: the sweep machinery over the synthetic market's scenario.

    Space paths are paths into the scenario (``variance.long_run_vol``, ``archetypes.trend_down.probability``,
    ``events.cpi.jump_stdev_pct``, ``events.injected[0].move_pct``...), set on the ``base`` scenario; archetype
    probabilities act as weights (the five are rescaled to sum to 1). The objective says what hurts
    (default: the lowest ``return_pct``)."""

    base: str | None = Field(default=None, description="the scenario the search starts from (a name or a YAML "
                                                       "path; default: data.scenario)")
    objectives: list[Objective] = Field(default_factory=lambda: [Objective(name="return_pct", direction="minimize")],
                                        min_length=1, description="what hurts (default: return_pct, minimize)")
    plausible: Plausibility = Field(default_factory=Plausibility,
                                    description="bounds on the generated market's facts (infeasible outside)")
    best: int = Field(default=3, ge=1, le=1000, description="how many of the most harmful scenarios to write")

    @field_validator("space")
    @classmethod
    def _paths(cls, v: dict[str, ParamSpace]) -> dict[str, ParamSpace]:
        for path in v:
            head = path.split(".")[0].split("[")[0]
            if head not in SCENARIO_PARTS:
                raise ValueError(f"{path!r} is not a path into the scenario; it starts with one of "
                                 f"{', '.join(SCENARIO_PARTS)}")
        return v
