"""``strikebench new-plugin``: write a ready-to-install plugin package from templates.

``write_plugin("strategy", "my_strat", "sb-my-strat")`` writes::

    sb-my-strat/
      pyproject.toml                  distribution sb-my-strat, entry point my_strat = "sb_my_strat"
      README.md
      my_strat.yaml                   a backtest config on the synthetic market
      src/sb_my_strat/__init__.py     the register_strategies hook
      src/sb_my_strat/strategy.py     MyStrat(Strategy) and its typed MyStratParams
      tests/test_my_strat.py          tests on strikebench.testing's hand-built chains and model market

``pip install -e "sb-my-strat[test]"`` and the strategy is listed by ``strikebench plugins``;
``pytest`` in the folder runs its tests. The generated strategy is small but real
(a put credit spread by DTE and delta, with a take profit and a stop) so the tests
have something to check; the tutorial in docs/writing-a-strategy.md turns it into
an iron condor.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from strikebench.errors import StrikebenchError

__all__ = ["KINDS", "PluginNames", "plugin_names", "write_plugin", "ScaffoldError"]


class ScaffoldError(StrikebenchError):
    """A name or folder ``new-plugin`` cannot use (exit code 2, like a config error)."""

    exit_code = 2


@dataclass(frozen=True)
class PluginNames:
    """Every name derived from the plugin name the user chose."""

    name: str  # my_strat: the YAML name and the entry-point name
    distribution: str  # sb-my-strat
    package: str  # sb_my_strat
    cls: str  # MyStrat

    def substitutions(self) -> dict[str, str]:
        return {"name": self.name, "distribution": self.distribution, "package": self.package, "cls": self.cls}


_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")


def plugin_names(name: str) -> PluginNames:
    """``my_strat`` -> distribution ``sb-my-strat``, package ``sb_my_strat``, class ``MyStrat``.

    :raises ScaffoldError: the name is not lower_snake_case or is a Python keyword.
    """
    if not _NAME_RE.fullmatch(name) or name.endswith("_") or "__" in name:
        raise ScaffoldError(
            f"plugin name {name!r} is not allowed: use lower_snake_case letters and digits, "
            f"starting with a letter (e.g. iron_condor)"
        )
    if keyword.iskeyword(name):
        raise ScaffoldError(f"plugin name {name!r} is a Python keyword; pick another")
    stem = name[3:] if name.startswith("sb_") else name
    return PluginNames(
        name=name,
        distribution="sb-" + stem.replace("_", "-"),
        package="sb_" + stem,
        cls="".join(part.capitalize() for part in name.split("_")),
    )


# ------------------------------------------------------------------ templates
_PYPROJECT = '''\
[build-system]
requires = ["setuptools>=64", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "$distribution"
version = "0.1.0"
description = "strikebench strategy plugin: $name"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["strikebench>=0.1"]

[project.optional-dependencies]
test = ["pytest>=8"]

# How strikebench finds the plugin: entry-point group "strikebench",
# entry-point name = plugin name, value = the module holding the hooks.
[project.entry-points.strikebench]
$name = "$package"

[tool.pytest.ini_options]
testpaths = ["tests"]
addopts = "-q"
'''

_README = '''\
# $distribution

A strikebench strategy plugin: strategy `$name` (class `$cls` in `src/$package/strategy.py`).

```bash
pip install -e ".[test]"               # registers it under the `strikebench` entry point; pytest
strikebench plugins --kind strategy    # lists $name, from $distribution
strikebench plugins --params $name     # its parameters
pytest                                 # its tests
strikebench backtest $name.yaml        # a backtest on the synthetic market
```

Edit `$cls.Params` for your parameters, `choose()` for the selection and `manage()` for the
exits. If strikebench will not start because this plugin raises, start without it:
`STRIKEBENCH_LOAD_PLUGINS= strikebench plugins` (empty: no external plugins) or list the ones you
want, e.g. `STRIKEBENCH_LOAD_PLUGINS=sb-other-plugin`.
'''

_INIT = '''\
"""$distribution: the $name strategy plugin for strikebench.

strikebench imports this module through the entry point in pyproject.toml and calls
its ``register_strategies`` hook once at start-up.
"""

from strikebench.hookspecs import hookimpl

from $package.strategy import $cls, ${cls}Params, choose

__all__ = ["$cls", "${cls}Params", "choose"]


@hookimpl
def register_strategies(register):
    register($cls)
'''

_STRATEGY = '''\
"""$name: sell a put credit spread near a target DTE and delta; take profit or stop.

A strategy never touches Backtrader: it reads the chain, its trades and the clock from
``ctx`` (a strikebench StrategyContext), records each decision with ``ctx.decide`` and
trades with ``ctx.open_trade`` / ``ctx.close_trade``. ``choose`` and ``evaluate`` are pure
functions of one chain snapshot, so tests call them on a hand-built chain and
``strikebench replay-decision`` re-runs any journaled decision.
"""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from strikebench.api import Candidate, PluginParams, Strategy
from strikebench.options.chain import ChainSnapshot
from strikebench.options.contracts import OptionContract
from strikebench.options.orders import Leg

RULESET_VERSION = "$name/1"  # change it when the rules change: journaled decisions record it


class ${cls}Params(PluginParams):
    """The YAML ``params`` of $name; unknown keys and out-of-range values are config errors."""

    root: str = Field("SPXW", description="option root (SPXW: PM-settled SPX dailies)")
    entry_time: dt.time = Field(dt.time(10, 0), description="daily decision time, America/New_York")
    target_dte: int = Field(7, ge=0, le=120, description="calendar days to expiry wanted")
    dte_tolerance: int = Field(2, ge=0, le=30, description="an expiry qualifies within this many days of target_dte")
    short_delta: float = Field(0.20, gt=0, lt=0.5, description="|delta| of the short put")
    width: float = Field(25.0, gt=0, description="long put this many points below the short")
    min_credit: float = Field(0.50, ge=0, description="skip when the spread's mid credit is below this, index points")
    take_profit_pct: float = Field(0.50, gt=0, lt=1, description="close when closing costs <= (1 - this) x credit")
    stop_multiple: float = Field(2.0, gt=1, description="close when closing costs >= this x credit")
    contracts: int = Field(1, ge=1, le=100, description="spreads per entry")


def choose(snapshot: ChainSnapshot, p: ${cls}Params) -> tuple[tuple[Leg, Leg], float] | str:
    """The spread to sell on this snapshot as (legs, mid credit), or the reason to skip."""
    expiry = snapshot.nearest_expiry(p.target_dte, p.dte_tolerance, root=p.root)
    if expiry is None:
        return f"no {p.root} expiry within {p.dte_tolerance}d of {p.target_dte} DTE"
    short = snapshot.closest_delta(expiry, "P", p.short_delta, root=p.root)
    if short is None:
        return f"no quotable {expiry} puts"
    long = snapshot.offset_row(short, p.width)
    if long is None:
        return f"no quotable put {p.width:g} points below {snapshot.strike[short]:g}"
    credit = float(snapshot.mid[short] - snapshot.mid[long])
    if credit < p.min_credit:
        return f"credit {credit:.2f} < min {p.min_credit:.2f}"
    return (Leg(snapshot.contract(short), -1), Leg(snapshot.contract(long), +1)), round(credit, 4)


class $cls(Strategy):
    """$name: put credit spread near a target DTE and delta, take profit and stop."""

    name = "$name"
    Params = ${cls}Params
    ruleset_version = RULESET_VERSION

    def decision_times(self) -> list[dt.time]:
        return [self.params.entry_time]

    def evaluate(self, snapshot: ChainSnapshot, context: dict) -> tuple[str, str, list[Candidate], int | None]:
        """The decision on one snapshot: (action, reason, candidates, chosen index); no ``ctx``."""
        choice = choose(snapshot, self.params)
        if isinstance(choice, str):
            return "SKIP", choice, [], None
        (short, long), credit = choice
        s, l = short.contract, long.contract
        what = f"{s.expiry} {s.strike:g}/{l.strike:g}P for {credit:.2f}"
        details = {"expiry": str(s.expiry), "dte": (s.expiry - snapshot.timestamp.date()).days, "right": "P",
                   "short_strike": s.strike, "long_strike": l.strike}
        return "TRADE", what, [Candidate(what, (s.occ_symbol, l.occ_symbol), credit=credit, details=details)], 0

    def on_decision_time(self, ctx) -> None:
        if ctx.open_trades():
            ctx.decide("SKIP", "a spread is already open")
            return
        snapshot = ctx.chain()
        action, reason, candidates, chosen = self.evaluate(snapshot, {})
        decision = ctx.decide(action, reason, candidates=candidates, chosen=chosen, snapshot=snapshot,
                              ruleset_version=self.ruleset_version)
        if action == "TRADE":
            short, long = (OptionContract.from_occ(symbol) for symbol in candidates[chosen].legs)
            ctx.open_trade([Leg(short, -1), Leg(long, +1)], self.params.contracts, decision=decision)

    def manage(self, ctx, trade) -> None:
        if ctx.has_pending_exit(trade):
            return
        cost = ctx.close_price(trade)  # buying the spread back now, index points
        if cost is None:
            return
        if cost <= (1.0 - self.params.take_profit_pct) * trade.entry_credit:
            ctx.close_trade(trade, "take_profit")
        elif cost >= self.params.stop_multiple * trade.entry_credit:
            ctx.close_trade(trade, "stop_loss")
'''

_TEST = '''\
"""$name on strikebench.testing's hand-built chains and tiny deterministic market."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from $package import $cls, ${cls}Params, choose
from strikebench.testing import ModelMarket, decisions_of, make_chain, orders_of, run_strategy, trades_of

# Monday 8 January 2024 at 10:00 New York time; Monday 15th is a holiday (MLK day).
EXPIRIES = ["2024-01-12", "2024-01-16", "2024-01-19"]  # 4, 8 and 11 days out


def test_chooses_the_expiry_near_7_dte_and_the_put_nearest_20_delta():
    snap = make_chain(spot=4800, expiries=EXPIRIES, iv=0.15, at="2024-01-08 10:00")
    (short, long), credit = choose(snap, ${cls}Params())
    assert short.contract.expiry == dt.date(2024, 1, 16)
    puts = snap.rows("2024-01-16", "P")
    nearest = puts[np.argmin(np.abs(np.abs(snap.delta[puts]) - 0.20))]
    assert short.contract.strike == snap.strike[nearest]
    assert long.contract.strike == short.contract.strike - 25
    assert (short.ratio, long.ratio) == (-1, +1)
    assert credit > 0.50


def test_skips_without_an_expiry_in_range():
    snap = make_chain(spot=4800, expiries=["2024-01-31"], at="2024-01-08 10:00")
    assert choose(snap, ${cls}Params()) == "no SPXW expiry within 2d of 7 DTE"


def test_evaluate_is_the_decision_the_journal_replays():
    snap = make_chain(spot=4800, expiries=EXPIRIES, iv=0.15, at="2024-01-08 10:00")
    action, reason, (candidate,), chosen = $cls().evaluate(snap, {})
    assert (action, chosen) == ("TRADE", 0) and reason == candidate.description
    assert candidate.details["expiry"] == "2024-01-16" and candidate.legs[0].startswith("SPXW  240116P")


def test_one_spread_at_ten_on_a_quiet_week():
    market = ModelMarket("2024-01-08", "2024-01-12", spot=4800.0, iv=0.15, expiries=EXPIRIES)
    engine = run_strategy($cls, market)
    trades = trades_of(engine)
    assert trades and trades[0].opened_at.time() == dt.time(10, 0)
    assert decisions_of(engine)[0].action == "TRADE"
    entry = orders_of(engine, opens=True)[0]
    assert entry.avg_fill_price == -trades[0].entry_credit


def test_strikebench_finds_it_through_the_entry_point(monkeypatch):
    from strikebench.plugin_manager import get_plugin_manager

    monkeypatch.delenv("STRIKEBENCH_LOAD_PLUGINS", raising=False)
    entry = get_plugin_manager().registry.get("strategy", "$name")
    assert (entry.cls, entry.distribution) == ($cls, "$distribution")
'''

_YAML = '''\
# A month of $name on the synthetic market.  Run:  strikebench backtest $name.yaml
name: $name

data:
  source: synthetic        # the embedded market: no files, no account
  seed: 42
  start: 2023-01-03
  end: 2023-01-31

broker:
  name: backtest
  params: {initial_cash: 100000}
  fill_model: {name: mid_slippage, params: {k: 0.30}}
  commission: {name: cboe_retail}

strategies:
  - name: $name
    params:
      entry_time: "10:00"
      target_dte: 7
      short_delta: 0.20
      width: 25
      take_profit_pct: 0.50
      stop_multiple: 2.0

risk:
  - name: max_new_trades_per_day
    params: {limit: 1}
'''

#: kind -> [(path template, file template)]
KINDS: dict[str, list[tuple[str, str]]] = {
    "strategy": [
        ("pyproject.toml", _PYPROJECT),
        ("README.md", _README),
        ("$name.yaml", _YAML),
        ("src/$package/__init__.py", _INIT),
        ("src/$package/strategy.py", _STRATEGY),
        ("tests/test_$name.py", _TEST),
    ],
}


def write_plugin(kind: str, name: str, directory: str | Path | None = None) -> tuple[Path, list[Path]]:
    """Write a new ``kind`` plugin package called ``name`` into ``directory``.

    :param directory: the package folder to create (default ``./sb-<name>``); it may exist
        only if empty.
    :return: the folder and the files written (relative to it), in writing order.
    :raises ScaffoldError: unknown kind, bad name, or a non-empty folder.
    """
    if kind not in KINDS:
        raise ScaffoldError(f"unknown plugin kind {kind!r}; available: {', '.join(sorted(KINDS))}")
    names = plugin_names(name)
    root = Path(directory) if directory is not None else Path(names.distribution)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ScaffoldError(f"{root}: already exists and is not an empty folder; choose another --dir")
    subs = names.substitutions()
    written: list[Path] = []
    for path_template, text_template in KINDS[kind]:
        rel = Path(Template(path_template).substitute(subs))
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(Template(text_template).substitute(subs), encoding="utf-8")
        written.append(rel)
    return root, written
