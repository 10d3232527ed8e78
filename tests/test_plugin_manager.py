"""The pluggy host: built-ins and third-party plugins, found through real entry points.

The third-party plugins are tiny fake distributions in ``tests/plugin_fixtures/<folder>``
(a module plus a ``.dist-info`` with ``entry_points.txt``); a test puts only the folders
it needs on ``sys.path`` (or ``PYTHONPATH`` for the CLI), so discovery goes through
``importlib.metadata`` exactly as for a pip-installed plugin.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from types import SimpleNamespace

import pytest

from strikebench.api import Strategy, Veto
from strikebench.errors import PluginError
from strikebench.hookspecs import hookimpl
from strikebench.plugin_manager import BUILTIN_PLUGINS, ENTRY_POINT_GROUP, LOAD_ENV, get_plugin_manager

FIXTURES = Path(__file__).parent / "plugin_fixtures"
FIXTURE_MODULES = ("sb_demo_plugin", "sb_collide_plugin", "sb_typo_plugin", "sb_broken_plugin")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
VERSION = md.version("strikebench")

BROKEN_ERROR = (
    "plugin 'broken' (distribution sb-broken-plugin 0.0.1) failed to load: ImportError: No module named "
    "'sb_missing_dependency'; start without it by setting STRIKEBENCH_LOAD_PLUGINS to the plugins you want "
    "(empty for none)"
)
COLLISION_ERROR = (
    f"strategy name 'credit_vertical' is claimed twice: by plugin 'strikebench.strategies.builtin' "
    f"(distribution strikebench {VERSION}) and by plugin 'collide' (distribution sb-collide-plugin 0.3.0); "
    f"uninstall one or exclude it with STRIKEBENCH_LOAD_PLUGINS"
)
TYPO_ERROR = (
    "plugin 'typo' (distribution sb-typo-plugin 0.1.0) implements unknown hook 'register_stratgies'; "
    "did you mean 'register_strategies'?"
)


DISTRIBUTIONS = {"demo": "sb-demo-plugin", "collide": "sb-collide-plugin", "typo": "sb-typo-plugin",
                 "broken": "sb-broken-plugin"}


@pytest.fixture
def installed(monkeypatch):
    """Install fixture distributions (by folder name) for this test and select exactly them with
    STRIKEBENCH_LOAD_PLUGINS, so other plugins installed in the environment stay out of the way."""

    def install(*folders: str) -> None:
        for folder in folders:
            monkeypatch.syspath_prepend(str(FIXTURES / folder))
        monkeypatch.setenv(LOAD_ENV, ",".join(DISTRIBUTIONS[f] for f in folders))

    yield install
    for name in FIXTURE_MODULES:
        sys.modules.pop(name, None)


def cli(*args: str, fixtures: tuple[str, ...] = (), load: str | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``strikebench ARGS`` in a subprocess with the given fixture distributions installed.

    ``load`` is STRIKEBENCH_LOAD_PLUGINS (None: unset, so every installed plugin loads).
    """
    env = {k: v for k, v in os.environ.items() if k not in (LOAD_ENV, "PYTHONPATH")}
    env.update({"COLUMNS": "500", "NO_COLOR": "1", "TERM": "dumb"})
    if fixtures:
        env["PYTHONPATH"] = os.pathsep.join(str(FIXTURES / f) for f in fixtures)
    if load is not None:
        env[LOAD_ENV] = load
    result = subprocess.run([sys.executable, "-m", "strikebench.cli", *args], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def table_rows(stdout: str) -> list[list[str]]:
    """The body rows of every rich table printed (a terminal of 500 columns: one line per row)."""
    return [[cell.strip() for cell in line.strip().strip("│").split("│")]
            for line in ANSI.sub("", stdout).splitlines() if line.startswith("│")]


def one_line_error(result: subprocess.CompletedProcess) -> str:
    stderr = ANSI.sub("", result.stderr)
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    return stderr[len("error: "):-1]


# ----------------------------------------------------------------- in-process
def test_builtins_register_through_the_same_hooks(monkeypatch):
    monkeypatch.delenv(LOAD_ENV, raising=False)
    pm = get_plugin_manager(load_entry_points=False)
    for module_name in BUILTIN_PLUGINS:
        assert pm.has_plugin(module_name)
        assert pm.distributions[module_name] == ("strikebench", VERSION)
    entry = pm.registry.get("strategy", "credit_vertical")
    assert (entry.plugin, entry.distribution, entry.version) == ("strikebench.strategies.builtin", "strikebench",
                                                                 VERSION)
    assert pm.registry.get("fill_model", "mid_slippage").params_model().k == 0.30


def test_demo_plugin_is_found_through_its_entry_point(installed):
    installed("demo")
    (ep,) = [ep for ep in md.entry_points(group=ENTRY_POINT_GROUP) if ep.name == "demo"]
    assert (ep.value, ep.dist.name, ep.dist.version) == ("sb_demo_plugin", "sb-demo-plugin", "1.2.0")

    registry = get_plugin_manager().registry
    hold = registry.get("strategy", "demo_hold")
    assert (hold.plugin, hold.distribution, hold.version) == ("demo", "sb-demo-plugin", "1.2.0")
    assert issubclass(hold.cls, Strategy)
    assert hold.summary == "Demo: sell one put spread and hold it for hold_days (test fixture)."
    assert registry.get("strategy", "credit_vertical").distribution == "strikebench"

    limit = registry.get("risk_manager", "demo_max_contracts")
    rule = limit.build(limit.params_model(max_contracts=5))
    assert rule.check(SimpleNamespace(quantity=6), portfolio=None) == Veto("6 spreads > max 5",
                                                                           rule="demo_max_contracts")
    assert rule.check(SimpleNamespace(quantity=5), portfolio=None) is None


@pytest.mark.parametrize("load, loads_demo", [
    (None, True),  # unset: every installed plugin
    ("", False),  # empty: none
    (" , ", False),
    ("sb-demo-plugin", True),  # by distribution name...
    ("SB_Demo.Plugin", True),  # ...in any spelling PEP 503 treats as the same
    ("demo", True),  # by entry-point name
    ("sb-other-plugin, demo", True),
    ("sb-other-plugin", False),
])
def test_load_plugins_variable_selects_external_plugins(installed, monkeypatch, load, loads_demo):
    installed("demo")
    if load is None:
        monkeypatch.delenv(LOAD_ENV)
    else:
        monkeypatch.setenv(LOAD_ENV, load)
    pm = get_plugin_manager()
    assert (pm.registry.get("strategy", "demo_hold") is not None) is loads_demo
    assert pm.has_plugin("demo") is loads_demo
    assert pm.registry.get("strategy", "credit_vertical") is not None  # built-ins always load


def test_broken_plugin_stops_start_up_with_the_way_out(installed, monkeypatch):
    installed("demo", "broken")
    with pytest.raises(PluginError) as err:
        get_plugin_manager()
    assert str(err.value) == BROKEN_ERROR
    monkeypatch.setenv(LOAD_ENV, "sb-demo-plugin")
    assert get_plugin_manager().registry.get("strategy", "demo_hold") is not None


def test_two_plugins_claiming_one_name_is_an_error_naming_both(installed):
    installed("collide")
    with pytest.raises(PluginError) as err:
        get_plugin_manager()
    assert str(err.value) == COLLISION_ERROR


def test_misspelled_hook_name_is_caught(installed):
    installed("typo")
    with pytest.raises(PluginError) as err:
        get_plugin_manager()
    assert str(err.value) == TYPO_ERROR


def _module_plugin(monkeypatch, name: str, **hooks) -> str:
    """A plugin module made in memory, registered the way built-ins are (by module name)."""
    module = types.ModuleType(name)
    for hook_name, function in hooks.items():
        function.__name__ = hook_name
        setattr(module, hook_name, hookimpl(function))
    monkeypatch.setitem(sys.modules, name, module)
    return name


class _NotAStrategy:
    """Not a subclass of strikebench.api.Strategy."""

    name = "not_a_strategy"


class _Nameless(Strategy):
    """A strategy that forgot its name."""


@pytest.mark.parametrize("hooks, message", [
    ({"register_strategies": lambda register, extra: None},
     "plugin 'sb_inline' (distribution strikebench {v}) cannot be registered: hookimpl definition: "
     "register_strategies(register, extra); Argument(s) {{'extra'}} are declared in the hookimpl but can not be "
     "found in the hookspec"),
    ({"register_strategies": lambda register: register(_NotAStrategy)},
     "plugin 'sb_inline' (distribution strikebench {v}) registered <class 'test_plugin_manager._NotAStrategy'> as "
     "a strategy, but it is not a subclass of strikebench.api.Strategy"),
    ({"register_strategies": lambda register: register(_Nameless)},
     "plugin 'sb_inline' (distribution strikebench {v}) registered _Nameless without a name (set the class "
     "attribute `name`)"),
    ({"register_feeds": lambda register: 1 / 0},
     "plugin 'sb_inline' (distribution strikebench {v}) raised in register_feeds: ZeroDivisionError: "
     "division by zero; start without it by setting STRIKEBENCH_LOAD_PLUGINS to the plugins you want (empty for none)"),
], ids=["unknown-argument", "not-a-subclass", "no-name", "raises"])
def test_a_faulty_registration_names_the_plugin(monkeypatch, hooks, message):
    module = _module_plugin(monkeypatch, "sb_inline", **hooks)
    with pytest.raises(PluginError) as err:
        get_plugin_manager(builtins=(*BUILTIN_PLUGINS, module), load_entry_points=False)
    assert str(err.value) == message.format(v=VERSION)


def test_a_registration_hook_may_ignore_its_arguments(monkeypatch):
    """pluggy lets an implementation name fewer arguments than its hook; so does the registry."""
    module = _module_plugin(monkeypatch, "sb_inline", register_context_providers=lambda: None)
    get_plugin_manager(builtins=(*BUILTIN_PLUGINS, module), load_entry_points=False)


# ------------------------------------------------------------------- the CLI
def test_plugins_lists_third_party_next_to_built_ins():
    result = cli("plugins", fixtures=("demo",))
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    assert ["demo_hold", "sb-demo-plugin", "1.2.0",
            "Demo: sell one put spread and hold it for hold_days (test fixture)."] in rows
    assert ["demo_max_contracts", "sb-demo-plugin", "1.2.0",
            "Demo: veto opening orders larger than max_contracts (test fixture)."] in rows
    assert ["credit_vertical", "strikebench", VERSION,
            "SPX credit verticals at 3/5/7 DTE: short leg by delta, long leg by width, 50% take profit, 2x stop."] in rows
    for title in ("Strategies", "Data feeds", "Fill models", "Risk managers", "Brokers", "Commission schedules",
                  "Context / feature providers"):
        assert title in result.stdout


def test_plugins_params_of_a_third_party_strategy():
    result = cli("plugins", "--params", "demo_hold", fixtures=("demo",), load="sb-demo-plugin")
    assert result.returncode == 0, result.stderr
    assert "strategy 'demo_hold' (sb-demo-plugin 1.2.0): Demo: sell one put spread" in result.stdout
    assert table_rows(result.stdout) == [
        ["underlying", "Literal['SPX','XSP']", "'SPX'", "", "index whose chain is traded"],
        ["entry_time", "time", "10:00", "", "decision time, America/New_York"],
        ["hold_days", "int", "3", ">= 1, <= 30", "calendar days to hold each position"],
        ["short_deltas", "list[float]", "[0.16]", "at least 1 item", "|delta| of the short leg"],
        ["max_loss", "float | None", "None", "> 0", "optional stop, dollars per spread"],
    ]


def test_plugins_params_reads_like_the_code():
    """Types as written, constraints as bounds, and markup-like defaults ([10:00, ...]) not swallowed."""
    result = cli("plugins", "--params", "credit_vertical", load="")
    assert result.returncode == 0, result.stderr
    rows = {row[0]: row[1:4] for row in table_rows(result.stdout)}
    assert rows["entry_times"] == ["list[time]", "[10:00, 11:00, 12:00]", "at least 1 item"]
    assert rows["short_deltas"] == ["list[float]", "[0.1, 0.2]", "at least 1 item; each > 0, < 1"]
    assert rows["side"] == ["Literal['put','call','both']", "'put'", ""]
    assert rows["width"] == ["float | None", "25", "> 0"]
    assert rows["stop_multiple"] == ["float", "2", "> 1"]
    assert rows["contracts"] == ["int", "1", ">= 1, <= 1000"]


def test_validate_accepts_third_party_names_in_yaml(tmp_path):
    (tmp_path / "demo.yaml").write_text(textwrap.dedent("""\
        name: demo_run
        strategies:
          - name: demo_hold
            params: {hold_days: 5, entry_time: "10:30", short_deltas: [0.10]}
          - name: credit_vertical
        risk:
          - name: demo_max_contracts
            params: {max_contracts: 4}
        """))
    result = cli("validate", "demo.yaml", fixtures=("demo",), load="demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    assert ["strategies[0]", "demo_hold", "sb-demo-plugin 1.2.0"] in rows
    assert ["strategies[1]", "credit_vertical", f"strikebench {VERSION}"] in rows
    assert ["risk[0]", "demo_max_contracts", "sb-demo-plugin 1.2.0"] in rows


def test_validate_checks_third_party_params_with_their_model(tmp_path):
    (tmp_path / "demo.yaml").write_text("name: demo_run\nstrategies:\n  - name: demo_hold\n    params: {hold_days: 0}\n")
    result = cli("validate", "demo.yaml", fixtures=("demo",), load="demo", cwd=tmp_path)
    assert result.returncode == 2
    assert one_line_error(result) == ("demo.yaml:4: strategies[0].params.hold_days: 0 is not allowed: "
                                      "Input should be greater than or equal to 1")


def test_cli_broken_plugin_and_the_way_out():
    broken = cli("plugins", fixtures=("demo", "broken"), load="sb-demo-plugin,sb-broken-plugin")
    assert broken.returncode == 3
    assert one_line_error(broken) == BROKEN_ERROR

    only_demo = cli("plugins", "--kind", "strategy", fixtures=("demo", "broken"), load="sb-demo-plugin")
    assert only_demo.returncode == 0, only_demo.stderr
    rows = table_rows(only_demo.stdout)
    assert [row[0] for row in rows if row[1] != "strikebench"] == ["demo_hold"]
    assert "credit_vertical" in [row[0] for row in rows]

    none = cli("plugins", "--kind", "strategy", fixtures=("demo", "broken"), load="")
    assert none.returncode == 0, none.stderr
    rows = table_rows(none.stdout)
    assert "credit_vertical" in [row[0] for row in rows] and {row[1] for row in rows} == {"strikebench"}


@pytest.mark.parametrize("fixture, message", [("collide", COLLISION_ERROR), ("typo", TYPO_ERROR)])
def test_cli_plugin_errors_are_one_line(fixture, message):
    result = cli("plugins", fixtures=(fixture,), load=DISTRIBUTIONS[fixture])
    assert result.returncode == 3
    assert one_line_error(result) == message


def test_nothing_loads_at_import_time():
    """Importing strikebench (CLI included) imports no plugin module, built-in or external."""
    code = ("import json, sys; import strikebench, strikebench.cli, strikebench.config, strikebench.plugin_manager, "
            "strikebench.hookspecs, strikebench.api; print(json.dumps(sorted(sys.modules)))")
    env = {k: v for k, v in os.environ.items() if k != LOAD_ENV}
    env["PYTHONPATH"] = str(FIXTURES / "demo")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert "strikebench.plugin_manager" in loaded
    plugin_modules = {*BUILTIN_PLUGINS, "sb_demo_plugin", "strikebench.strategies.credit_vertical"}
    assert not plugin_modules & loaded
    assert not {m for m in loaded if m.startswith(("strikebench.plugins.", "strikebench.strategies.",
                                                   "strikebench.feeds.", "strikebench.brokers."))}
