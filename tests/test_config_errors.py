"""Malformed run configs, each through the real CLI: one exact line on stderr, exit code 2, no traceback.

Every case writes ``bad.yaml`` into a fresh folder and runs ``strikebench validate bad.yaml``
there, so messages carry the short relative file name. External plugins are switched off
(``STRIKEBENCH_LOAD_PLUGINS=""``) so lists of known names are the built-ins only.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pydantic
import pytest

from strikebench.config import load_config
from strikebench.errors import ConfigError
from strikebench.plugin_manager import LOAD_ENV, get_plugin_manager

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SECRET = "sk-live-7f3a9c51e2"  # what ${SB_TEST_BROKER_TOKEN} holds; must never be printed

# A config that validates: the cases below change one thing each.
VALID = """\
name: spx_put_spreads
strategies:
  - name: credit_vertical
    params: {short_deltas: [0.10, 0.20], width: 25}
"""


@pytest.fixture(scope="module")
def builtin_registry():
    return get_plugin_manager(load_entry_points=False).registry


def known(kind: str) -> str:
    return ", ".join(get_plugin_manager(load_entry_points=False).registry.names(kind))


def validate(folder: Path, text: str | None, *args: str, env: dict[str, str] | None = None,
             file: str = "bad.yaml") -> subprocess.CompletedProcess:
    """``strikebench validate FILE ARGS`` in ``folder`` with a wide, colourless terminal."""
    if text is not None:
        (folder / file).write_text(text, encoding="utf-8")
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("SB_TEST_")}
    run_env.update({"COLUMNS": "500", "NO_COLOR": "1", "TERM": "dumb", LOAD_ENV: ""})
    run_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "strikebench.cli", "validate", file, *args],
                          cwd=folder, env=run_env, capture_output=True, text=True, timeout=60)


def assert_one_line_error(result: subprocess.CompletedProcess, expected: str) -> None:
    stderr = ANSI.sub("", result.stderr)
    assert "Traceback" not in stderr + result.stdout
    assert stderr == f"error: {expected}\n", stderr
    assert result.returncode == 2


# (id, YAML text, extra CLI arguments, extra environment, expected message after "error: ")
CASES = [
    ("yaml-syntax-unclosed-list", """\
name: t
strategies:
  - name: credit_vertical
    params:
      short_deltas: [0.10, 0.20
      side: put
""", (), {}, "bad.yaml:6:11: YAML syntax error: expected ',' or ']', but got ':'"),
    ("yaml-syntax-indentation", """\
name: t
strategies:
  - name: credit_vertical
   params: {width: 25}
""", (), {}, "bad.yaml:4:4: YAML syntax error: expected <block end>, but found '<block mapping start>'"),
    ("yaml-duplicate-key", """\
name: t
strategies:
  - name: credit_vertical
    params: {width: 25, width: 50}
""", (), {}, "bad.yaml:4:25: strategies[0].params.width: duplicate key (first at line 4); keep one"),
    ("unknown-strategy", """\
name: t
strategies:
  - name: iron_fly
""", (), {}, "bad.yaml:3: strategies[0].name: unknown strategy 'iron_fly'; known: {strategy}"),
    ("name-of-another-kind", """\
name: t
strategies:
  - name: mid_slippage
""", (), {}, "bad.yaml:3: strategies[0].name: unknown strategy 'mid_slippage' ('mid_slippage' is a fill_model); "
             "known: {strategy}"),
    ("unknown-fill-model", """\
name: t
broker:
  fill_model: {name: mid_slipage}
strategies:
  - name: credit_vertical
""", (), {}, "bad.yaml:3: broker.fill_model.name: unknown fill model 'mid_slipage'; known: {fill_model}"),
    ("unknown-top-level-key", VALID + "riks: []\n", (), {},
     "bad.yaml:5: (top level): unknown key 'riks' "
     "(allowed: account, broker, data, features, journal, ml, name, output, risk, scenario_search, strategies, "
     "sweep, walk_forward)"),
    ("unknown-params-key", """\
name: t
broker:
  params: {initial_capital: 50000}
strategies:
  - name: credit_vertical
""", (), {}, "bad.yaml:3: broker.params: unknown key 'initial_capital' (allowed: initial_cash)"),
    ("unknown-data-key", """\
name: t
data: {source: synthetic, sed: 7}
strategies:
  - name: credit_vertical
""", (), {}, "bad.yaml:2: data: unknown key 'sed' (allowed: end, scenario, seed, source, start)"),
    ("wrong-type", """\
name: t
strategies:
  - name: credit_vertical
    params: {contracts: two}
""", (), {}, "bad.yaml:4: strategies[0].params.contracts: 'two' is not allowed: "
             "Input should be a valid integer, unable to parse string as an integer"),
    ("out-of-range-list-item", """\
name: t
strategies:
  - name: credit_vertical
    params:
      short_deltas: [0.10, 1.5]
""", (), {}, "bad.yaml:5: strategies[0].params.short_deltas[1]: 1.5 is not allowed: Input should be less than 1"),
    ("missing-required-key", """\
strategies:
  - name: credit_vertical
""", (), {}, "bad.yaml:1: (top level): missing required key 'name'"),
    ("missing-plugin-name", """\
name: t
strategies:
  - params: {width: 25}
""", (), {}, "bad.yaml:3: strategies[0]: missing required key 'name'"),
    ("undefined-env-var", """\
name: t
data:
  source: synthetic
  scenario: ${SB_TEST_SCENARIO}
strategies:
  - name: credit_vertical
""", (), {}, "bad.yaml:4: data.scenario: environment variable SB_TEST_SCENARIO is not set "
             "(set it, or write ${SB_TEST_SCENARIO:-default})"),
    ("env-default-is-used-and-typed", VALID.replace("width: 25}", 'width: 25, contracts: "${SB_TEST_CONTRACTS:-0}"}'),
     (), {}, "bad.yaml:4: strategies[0].params.contracts: '${SB_TEST_CONTRACTS:-0}' is not allowed: "
             "Input should be greater than or equal to 1"),
    ("secret-in-a-bad-value", """\
name: t
broker:
  params: {initial_cash: "${SB_TEST_BROKER_TOKEN}"}
strategies:
  - name: credit_vertical
""", (), {"SB_TEST_BROKER_TOKEN": SECRET}, "bad.yaml:3: broker.params.initial_cash: '${SB_TEST_BROKER_TOKEN}' "
                                           "is not allowed: Input should be a valid number, unable to parse "
                                           "string as a number"),
    ("secret-inside-a-bad-list", """\
name: t
broker: ["${SB_TEST_BROKER_TOKEN}"]
strategies:
  - name: credit_vertical
""", (), {"SB_TEST_BROKER_TOKEN": SECRET}, "bad.yaml:2: broker: ['${SB_TEST_BROKER_TOKEN}'] is not allowed: "
                                           "expected a mapping of keys, got a list"),
    ("secret-as-a-plugin-name", """\
name: t
strategies:
  - name: ${SB_TEST_BROKER_TOKEN}
""", (), {"SB_TEST_BROKER_TOKEN": SECRET}, "bad.yaml:3: strategies[0].name: unknown strategy "
                                           "'${SB_TEST_BROKER_TOKEN}'; known: {strategy}"),
    ("empty-file", "", (), {}, "bad.yaml: the config file is empty; expected a mapping of keys"),
    ("only-comments", "# spx_put_spreads: to be written\n", (), {},
     "bad.yaml: the config file is empty; expected a mapping of keys"),
    ("list-at-top-level", """\
- name: credit_vertical
  params: {width: 25}
""", (), {}, "bad.yaml:1: the config must be a mapping of keys at the top level, got a list"),
    ("list-where-broker-mapping-belongs", """\
name: t
broker:
  - backtest
strategies:
  - name: credit_vertical
""", (), {}, "bad.yaml:2: broker: ['backtest'] is not allowed: expected a mapping of keys, got a list"),
    ("mapping-where-strategy-list-belongs", """\
name: t
strategies:
  name: credit_vertical
""", (), {}, "bad.yaml:2: strategies: {'name': 'credit_vertical'} is not allowed: expected a list, got a mapping"),
    ("width-off-the-strike-grid", VALID.replace("width: 25", "width: 12"), (), {},
     "bad.yaml:4: strategies[0].params: width 12 is not a multiple of the 5-point strike grid"),
    ("duplicate-strategy-id", VALID + "  - name: credit_vertical\n    params: {width: 50}\n", (), {},
     "bad.yaml:5: strategies[1]: strategy id 'credit_vertical' is already used by strategies[0]; "
     "give one of them a distinct `id`"),
    ("set-override-is-applied", VALID, ("--set", "strategies[0].params.width=12"), {},
     "bad.yaml:4: strategies[0].params: width 12 is not a multiple of the 5-point strike grid"),
    ("set-override-on-a-missing-item", VALID, ("--set", "strategies[3].params.width=50"), {},
     "--set 'strategies[3].params.width=50': strategies[3] does not exist"),
    ("set-override-without-value", VALID, ("--set", "strategies[0].params.width"), {},
     "--set 'strategies[0].params.width': expected dotted.path=value"),
]


@pytest.mark.parametrize("text, args, env, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_config_is_one_line_exit_2(tmp_path, text, args, env, expected):
    expected = expected.replace("{strategy}", known("strategy")).replace("{fill_model}", known("fill_model"))
    result = validate(tmp_path, text, *args, env=env)
    assert_one_line_error(result, expected)
    assert SECRET not in result.stdout + result.stderr


def test_missing_file_is_one_line_exit_2(tmp_path):
    assert_one_line_error(validate(tmp_path, None, file="spx.yaml"), "spx.yaml: no such config file")


def test_env_value_and_valid_override_pass_validate(tmp_path):
    result = validate(tmp_path, VALID.replace("width: 25}", 'width: 25, contracts: "${SB_TEST_CONTRACTS:-0}"}'),
                      "--set", "strategies[0].params.width=50", env={"SB_TEST_CONTRACTS": "3"})
    assert result.returncode == 0, result.stderr
    assert "bad.yaml: valid" in result.stdout


# ------------------------------------------------------- in-process: resolved values
def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spx.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_env_substitution_and_override_values(tmp_path, monkeypatch, builtin_registry):
    monkeypatch.delenv("SB_TEST_CONTRACTS", raising=False)
    monkeypatch.setenv("SB_TEST_SCENARIO", "crash")
    path = write(tmp_path, """\
        name: spx_put_spreads
        data: {source: synthetic, scenario: "${SB_TEST_SCENARIO}", seed: "${SB_TEST_SEED:-7}"}
        strategies:
          - name: credit_vertical
            params: {width: 25, contracts: "${SB_TEST_CONTRACTS:-2}"}
        """)
    resolved = load_config(path, ["strategies[0].params.width=50", "broker.fill_model.params.k=0.5"],
                           registry=builtin_registry)
    assert resolved.data.params.scenario == "crash"
    assert resolved.data.params.seed == 7  # "${VAR:-7}" alone in a value is read as a number
    cv = resolved.strategies[0].params
    assert (cv.width, cv.contracts) == (50.0, 2)
    assert resolved.fill_model.entry.name == "mid_slippage" and resolved.fill_model.params.k == 0.5


def test_override_of_an_env_value_is_shown_as_written(tmp_path, monkeypatch, builtin_registry):
    """After --set replaced a ${VAR} value, an error shows the override, not the old template."""
    monkeypatch.setenv("SB_TEST_CONTRACTS", "3")
    path = write(tmp_path, VALID.replace("width: 25}", 'width: 25, contracts: "${SB_TEST_CONTRACTS}"}'))
    with pytest.raises(ConfigError) as err:
        load_config(path, ["strategies[0].params.contracts=0"], registry=builtin_registry)
    assert str(err.value) == ("{p}:4: strategies[0].params.contracts: 0 is not allowed: "
                              "Input should be greater than or equal to 1").format(p=path)


def test_resolved_config_is_frozen(tmp_path, builtin_registry):
    resolved = load_config(write(tmp_path, VALID), registry=builtin_registry)
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolved.broker = None
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        resolved.config.name = "other"
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        resolved.config.broker.fill_model.name = "mid"
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        resolved.strategies[0].params.width = 50.0
    assert isinstance(resolved.strategies, tuple)


@pytest.mark.parametrize("argv,message", [
    (["backtest", "configs/spx_credit_vertical.yaml", "--bogus"],
     "No such option '--bogus'. (see `strikebench backtest --help`)"),
    (["paper-broker", "serve", "--state", "{tmp}/svc.sqlite", "--hold-start", "-5"],
     "Invalid value for '--hold-start': -5.0 is not in the range 0<=x<=600. (see `strikebench paper-broker serve --help`)"),
    (["backtest"], "Missing argument 'CONFIG'. (see `strikebench backtest --help`)"),
])
def test_a_command_line_mistake_is_one_line_exit_2_and_writes_nothing(argv, message, tmp_path, capsys):
    from strikebench.cli import main

    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"error: {message}\n"
    assert list(tmp_path.iterdir()) == []
