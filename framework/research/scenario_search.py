"""``strikebench scenario search``: the markets that hurt a strategy most, under a plausibility bound.

The sweep machinery (:class:`~strikebench.research.sweep.Sweep`: an Optuna study, resume, the progress
bar, local processes or Ray) runs over the synthetic market's *scenario* instead of plugin params. A
trial is:

1. the base scenario with the trial's values set (archetype probabilities act as weights and are rescaled
   to sum to 1), validated by the Scenario model, written as a self-contained scenario YAML named by its
   content (``scenarios/sc-HASH.yaml`` in the search folder);
2. the config's backtest with ``data.scenario`` set to that file: the same ``Backtest`` as
   ``strikebench backtest`` (journal, every risk manager);
3. before the backtest, the generated market's facts over the data span (realized vol, VIX mean, min
   and max, the largest daily move and gap, VIX minus realized, corr(dVIX, return)) are checked against
   ``scenario_search.plausible``; a market outside the bounds is an *infeasible* trial: recorded as
   failed with its reason (``infeasible`` attribute, ``trials.csv``), no backtest, never a result.

The most harmful feasible trials are written to ``worst/worst-NN-trial-IIIII.yaml``: the trial's
scenario file whole (not an ``extends:`` of a shipped scenario that a later version may change), so
``strikebench backtest CONFIG --set data.scenario=worst/worst-01-....yaml`` reruns the trial exactly.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import yaml

from strikebench.errors import ConfigError
from strikebench.research.sweep import Sweep, _show

__all__ = ["ScenarioSearch", "apply_values", "market_facts", "implausibility", "check_search_section",
           "search_folder", "FACTS"]

#: the facts checked against ``scenario_search.plausible`` (their bounds are documented on Plausibility)
FACTS = ("realized_vol_pct", "vix_mean", "vix_min", "vix_max", "max_daily_move_pct", "max_gap_pct",
         "vix_minus_realized", "corr_dvix_return")
#: sessions a statistic needs before it is checked (fewer: not computed, not checked): a realized vol of a
#: few daily returns, or a correlation of a few, says nothing about the market
MIN_SESSIONS_FOR_VOL = 10
MIN_SESSIONS_FOR_CORR = 20


# ----------------------------------------------------------------- scenarios
def base_scenario(cfg):
    """The Scenario a search starts from: ``scenario_search.base`` or the config's ``data.scenario``."""
    from strikebench.feeds.synthetic import load_scenario

    return load_scenario(cfg.scenario_search.base or cfg.data.params.get("scenario", "default"))


def _set(node: Any, loc: tuple, value: Any, path: str) -> None:
    from strikebench.config import format_path

    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise ConfigError(f"{format_path(loc[:i + 1])} does not exist in the base scenario"
                                  + (" (give the base scenario that list item)" if isinstance(node, list) else ""))
        else:
            if not isinstance(node, dict) or part not in node:
                where = format_path(loc[:i]) if i else "the scenario"
                allowed = ", ".join(sorted(node)) if isinstance(node, dict) else "nothing (not a mapping)"
                raise ConfigError(f"{path}: {where} has no '{part}' (allowed: {allowed})")
        if last:
            node[part] = value
        else:
            node = node[part]


def apply_values(base, values: dict[str, Any], name: str | None = None, description: str | None = None):
    """``base`` (a Scenario) with ``values`` (scenario path -> value) set; archetype probabilities rescaled.

    Raises :class:`ConfigError` (one line) for a path the scenario does not have or a value it refuses."""
    from pydantic import ValidationError

    from strikebench.config import parse_path
    from strikebench.feeds.synthetic import ARCHETYPES, Scenario

    data = base.model_dump(mode="json")
    data["extends"] = None  # self-contained: every field is written
    for path, value in values.items():
        _set(data, parse_path(path), copy.deepcopy(value), path)
    if any(p.startswith("archetypes.") and p.endswith(".probability") for p in values):
        weights = [float(data["archetypes"][a]["probability"]) for a in ARCHETYPES]
        total = sum(weights)
        if not total > 0:
            raise ConfigError("archetype probabilities (weights) are all zero")
        for a, w in zip(ARCHETYPES, weights):
            data["archetypes"][a]["probability"] = w / total
    if name is not None:
        data["name"] = name
    if description is not None:
        data["description"] = description
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        from strikebench.config import format_path

        where = format_path(err.get("loc", ()))
        raise ConfigError(f"{where}: {err.get('msg', 'invalid')}".replace("Value error, ", "")) from None


def scenario_yaml(scenario, header: str = "") -> str:
    body = yaml.safe_dump(scenario.model_dump(mode="json", exclude={"extends"}), sort_keys=False,
                          default_flow_style=False)
    return header + body


def write_trial_scenario(scenario, folder: str | os.PathLike) -> Path:
    """The scenario as a YAML file named by its content (the same scenario, the same file: a resumed or
    repeated trial, or a worker's market cache, sees the same path)."""
    from strikebench.userfiles import write_atomic

    text = scenario_yaml(scenario)
    path = Path(folder) / f"sc-{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
    return path.resolve()


# ----------------------------------------------------------------- plausibility
def market_facts(market) -> dict[str, float | None]:
    """The facts of a generated market over its span that the plausibility bounds look at."""
    import numpy as np

    from strikebench.feeds.synthetic.describe import summary_stats

    st = summary_stats(market)
    d = market.daily()
    close = d.spx_close.to_numpy(dtype=float)
    opens = d.spx_open.to_numpy(dtype=float)
    moves = np.abs(close[1:] / close[:-1] - 1.0) * 100 if len(close) > 1 else np.array([])
    gaps = np.abs(opens[1:] / close[:-1] - 1.0) * 100 if len(close) > 1 else np.array([])

    def num(x):
        return None if x is None or not math.isfinite(float(x)) else round(float(x), 6)

    n = int(st["sessions"])
    corr = st["corr_dvix_return"] if n >= MIN_SESSIONS_FOR_CORR else None
    vol = st["realized_vol_pct"] if n >= MIN_SESSIONS_FOR_VOL else None
    return {
        "sessions": n,
        "realized_vol_pct": num(vol),
        "vix_mean": num(st["vix_mean"]), "vix_min": num(st["vix_min"]), "vix_max": num(st["vix_max"]),
        "max_daily_move_pct": num(moves.max()) if len(moves) else None,
        "max_gap_pct": num(gaps.max()) if len(gaps) else None,
        "vix_minus_realized": num(st["vix_mean"] - vol) if vol is not None else None,
        "corr_dvix_return": num(corr) if corr is not None else None,
        "spx_return_pct": num(st["spx_return_pct"]),
    }


def implausibility(facts: dict, bounds: dict) -> list[str]:
    """Each fact outside its bound, as ``'vix_max 71.2 > 60'``; empty when the market is plausible.
    A fact that cannot be computed on this span (a correlation of a few sessions) is not checked."""
    out = []
    for name in FACTS:
        bound = bounds.get(name)
        value = facts.get(name)
        if bound is None or value is None:
            continue
        low, high = bound
        if low is not None and value < low:
            out.append(f"{name} {value:.4g} < {low:g}")
        if high is not None and value > high:
            out.append(f"{name} {value:.4g} > {high:g}")
    return out


def plausibility_line(market) -> str:
    """One line for ``strikebench market describe``: the market against the default bounds."""
    from strikebench.research.spec import Plausibility

    problems = implausibility(market_facts(market), Plausibility().model_dump(mode="json"))
    return ("plausible under the default bounds of scenario_search.plausible (docs/research.md): "
            + ("yes" if not problems else "no: " + "; ".join(problems)))


# ----------------------------------------------------------------- the worker's part
def prepare_trial(task: dict) -> dict:
    """In the worker, before ``load_config``: the trial's scenario file, set as ``data.scenario``.

    ``task["scenario"]`` = {"base": the base scenario's dump, "values": scenario path -> value, "dir": folder
    of the scenario files, "name": its name}; returns the values for ``load_config``."""
    from strikebench.feeds.synthetic import Scenario

    spec = task["scenario"]
    base = Scenario.model_validate(spec["base"])
    scenario = apply_values(base, spec["values"], name=spec.get("name"), description=spec.get("description"))
    path = write_trial_scenario(scenario, spec["dir"])
    return {**task["values"], "data.scenario": str(path)}


# ----------------------------------------------------------------- checks at load
def check_search_section(src, cfg) -> None:
    """At load (and ``strikebench validate``): the data is synthetic, the base scenario loads, and each
    space's path and edge values (both ends, every choice) make a valid scenario."""
    from strikebench.config import parse_path

    search = cfg.scenario_search
    if cfg.data.source != "synthetic":
        raise ConfigError(f"{src.where(('scenario_search',))}: scenario_search needs data.source: synthetic "
                          f"(it searches the synthetic market's scenario); data.source is '{cfg.data.source}'")
    try:
        base = base_scenario(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{src.where(('scenario_search', 'base'))}: scenario_search.base: {exc}") from None
    for key, space in search.space.items():
        where = src.where(("scenario_search", "space", key))
        if not parse_path(key):
            raise ConfigError(f"{where}: scenario_search.space: empty path")
        for value in space.edge_values():
            try:
                apply_values(base, {key: value})
            except ConfigError as exc:
                raise ConfigError(f"{where}: scenario_search.space.{key}: with {value!r}: {exc}") from None


def search_folder(resolved, folder: str | None = None) -> Path:
    return Path(folder) if folder else Path(resolved.config.output.dir) / f"{resolved.config.name}-scenario-search"


# ----------------------------------------------------------------- the driver
class ScenarioSearch(Sweep):
    """A sweep over the scenario; infeasible markets recorded, the worst scenarios written as files."""

    kind = "scenario search"
    best_dir = "worst"
    best_prefix = "worst"
    best_title = "most harmful so far"

    def __init__(self, resolved, *, folder=None, **kwargs):
        if resolved.config.scenario_search is None:
            raise ConfigError(f"{resolved.source_path}: no `scenario_search:` section; add one "
                              f"(see docs/research.md)")
        super().__init__(resolved, folder=folder or search_folder(resolved), spec=resolved.config.scenario_search,
                         **kwargs)
        self.base = base_scenario(resolved.config)
        self.bounds = self.spec.plausible.model_dump(mode="json")

    def fingerprint_extra(self) -> dict:
        return {"plausible": self.bounds, "base": self.base.model_dump(mode="json")}

    def _scenario_name(self) -> str:
        return f"{self.resolved.config.name}-adverse"

    def _description(self, params: dict) -> str:
        return (f"found by `strikebench scenario search` of {self.resolved.config.name} from the scenario "
                f"'{self.base.name}': " + ", ".join(f"{k}={_show(v)}" for k, v in params.items()))

    def make_task(self, index: int, params: dict) -> dict:
        task = super().make_task(index, params)
        task["values"] = dict(self.base_values)
        task["scenario"] = {"base": self.base.model_dump(mode="json"), "values": dict(params),
                            "dir": str((self.folder / "scenarios").resolve()), "name": self._scenario_name(),
                            "description": self._description(params)}
        task["plausible"] = self.bounds
        return task

    def record_extra(self, trial, result: dict) -> None:
        if "market_facts" in result:
            trial.set_user_attr("market_facts", result["market_facts"])
        if "scenario_file" in result:
            trial.set_user_attr("scenario_file", result["scenario_file"])
        if result.get("infeasible"):
            trial.set_user_attr("infeasible", result["infeasible"])

    def best_yaml(self, entry: dict) -> str:
        scenario = apply_values(self.base, entry["params"], name=self._scenario_name(),
                                description=self._description(entry["params"]))
        figures = ", ".join(f"{o.name} {v!r}" for o, v in zip(self.objectives, entry["values"]))
        facts = entry.get("market_facts") or {}
        shown = ", ".join(f"{k} {facts[k]:.4g}" for k in FACTS if facts.get(k) is not None)
        cfg = self.resolved.source_path
        head = (f"# trial {entry['index']} of the scenario search '{self.study_name}' ({self.folder}): {figures}\n"
                f"# market ({facts.get('sessions', '?')} sessions): {shown}\n"
                f"# searched: " + ", ".join(f"{k}={_show(v)}" for k, v in entry["params"].items()) + "\n"
                f"# rerun exactly: strikebench backtest {cfg} --set data.scenario=THIS_FILE\n")
        return scenario_yaml(scenario, head)

    def csv_extra_columns(self) -> list[str]:
        return [*FACTS, "infeasible"]

    def csv_extra(self, row: dict) -> list:
        facts = row.get("market_facts") or {}
        return [*(facts.get(k) for k in FACTS), row.get("infeasible") or ""]



def run_search(resolved, **kwargs):
    return ScenarioSearch(resolved, **kwargs).run()
