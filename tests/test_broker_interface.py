"""The generic live-broker parts every broker plugin shares (issue 17): flat ``broker:`` keys validated by the
plugin's typed params, ``strikebench broker check`` asking the plugin for its rows, and ``--live`` for a broker
configured for real money. The Tradier specifics are in test_tradier_*.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from strikebench.config import load_config
from strikebench.errors import ConfigError, StrikebenchError
from strikebench.plugin_manager import get_plugin_manager

STRIKEBENCH = shutil.which("strikebench") or str(Path(sys.executable).with_name("strikebench"))
TOKEN = "sb-test-token-5f3a9c1e77"

BASE = {"name": "brk", "data": {"source": "synthetic", "seed": 42, "start": "2023-01-03", "end": "2023-01-06"},
        "strategies": [{"name": "credit_vertical"}]}


def cfg(tmp_path, broker, name="c.yaml") -> Path:
    d = dict(BASE, broker=broker)
    p = tmp_path / name
    p.write_text(yaml.safe_dump(d))
    return p


def sb(*args, cwd, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([STRIKEBENCH, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "COLUMNS": "250", **(env or {})})


def test_flat_broker_keys_are_the_plugins_typed_params(tmp_path, monkeypatch):
    monkeypatch.setenv("TRADIER_TOKEN", TOKEN)
    monkeypatch.setenv("TRADIER_ACCOUNT", "VA12345678")
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(BASE) + "broker: {name: tradier, account: '${TRADIER_ACCOUNT}', "
                                           "token: '${TRADIER_TOKEN}', environment: sandbox}\n")
    r = load_config(path)
    p = r.broker.params
    assert (p.account, p.environment, p.token.get_secret_value()) == ("VA12345678", "sandbox", TOKEN)
    assert TOKEN not in repr(p) and TOKEN not in r.resolved_text and TOKEN not in p.model_dump_json()
    # a token rotation keeps the configuration (an account folder keeps its hash); another account does not
    h = r.config_hash
    monkeypatch.setenv("TRADIER_TOKEN", TOKEN + "x")
    assert load_config(path).config_hash == h
    monkeypatch.setenv("TRADIER_ACCOUNT", "VA12345679")
    assert load_config(path).config_hash != h
    # the same keys under params: work the same way; paper takes flat keys too
    r2 = load_config(cfg(tmp_path, {"name": "paper", "initial_cash": 5000, "latency_seconds": 0}))
    assert (r2.broker.params.initial_cash, r2.broker.params.latency_seconds) == (5000, 0)


@pytest.mark.parametrize("broker, expected", [
    ({"name": "paper", "initial_cash": 5000, "params": {"seed": 3}}, "both under `params:` and beside `name`"),
    ({"name": "paper", "inital_cash": 5000}, "broker: unknown key 'inital_cash' (allowed: "),
    ({"name": "tradier", "account": "VA-1", "token": "x"}, "broker.account: 'VA-1' is not allowed"),
    ({"name": "tradier", "account": "VA12345", "token": "x", "environment": "prod"}, "broker.environment"),
    ({"name": "tradier", "account": "VA12345"}, "missing required key 'token'"),
])
def test_bad_broker_keys_are_one_line(tmp_path, broker, expected):
    with pytest.raises(ConfigError) as e:
        load_config(cfg(tmp_path, broker))
    msg = str(e.value)
    assert expected in msg and "\n" not in msg and msg.startswith(str(tmp_path / "c.yaml") + ":")


def test_token_never_in_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TRADIER_TOKEN", "has spaces in it " + TOKEN)
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(BASE) + "broker: {name: tradier, account: VA1234567, token: '${TRADIER_TOKEN}'}\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "${TRADIER_TOKEN}" in str(e.value) and TOKEN not in str(e.value) and "TRADIER_TOKEN" in str(e.value)


def test_live_environment_needs_live_flag(tmp_path):
    from strikebench.live.launch import live_broker_plugin

    pm = get_plugin_manager()
    live = load_config(cfg(tmp_path, {"name": "tradier", "account": "VA1234567", "token": TOKEN,
                                      "environment": "live"}), registry=pm.registry)
    with pytest.raises(StrikebenchError, match=r"real-money account .*--live"):
        live_broker_plugin(live, pm, live=False)
    assert live_broker_plugin(live, pm, live=True).trades_real_money()
    sandbox = load_config(cfg(tmp_path, {"name": "tradier", "account": "VA1234567", "token": TOKEN}, "s.yaml"),
                          registry=pm.registry)
    assert not live_broker_plugin(sandbox, pm, live=False).trades_real_money()
    # the command refuses before it makes anything, in one line, and never shows the token
    p = sb("trade", tmp_path / "c.yaml", "--account", tmp_path / "acct", "--no-panel", cwd=tmp_path)
    assert p.returncode == 1 and "--live" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert TOKEN not in p.stdout + p.stderr and not (tmp_path / "acct").exists()


def check_cli(*args, cwd):
    """``strikebench broker check`` in this process (click's runner; the subprocess form is tested above)."""
    from click.testing import CliRunner

    from strikebench.cli import cli

    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, ["broker", "check", *map(str, args)], env={"COLUMNS": "250"})
    finally:
        os.chdir(old)


def test_broker_check_paper_rows(tmp_path):
    """The paper broker answers the generic check: no credentials, simulated cash, the market cross-checked."""
    from strikebench.live.launch import broker_check

    path = cfg(tmp_path, {"name": "paper", "initial_cash": 25000})
    p = check_cli(path, cwd=tmp_path)
    assert p.exit_code == 0 and "broker check: paper" in p.output, p.output
    name, rows = broker_check(str(path))
    got = {r.item: r for r in rows}
    assert list(got) == ["credentials", "account", "option buying power", "market clock", "data permissions",
                         "preview"]
    assert got["option buying power"].detail == "25,000.00 (simulated cash)"
    assert got["market clock"].ok and "4 session(s) 2023-01-03 .. 2023-01-06" in got["market clock"].detail
    assert sorted(x.name for x in tmp_path.iterdir()) == ["c.yaml"]  # read-only: nothing written
    # the backtest broker's YAML checks as the paper broker that stands in for it
    p = check_cli(cfg(tmp_path, {"name": "backtest"}, "b.yaml"), "--preview", cwd=tmp_path)
    assert p.exit_code == 0 and "broker check: paper" in p.output, p.output
