"""examples/iron-condor-plugin, the tutorial's result: installed, found, tested, and run from its YAML.

CI installs the example (``.ci/run``); anywhere else the ``example`` fixture pip-installs it
the same way the scaffold test does (editable, ``--no-deps --no-build-isolation``) and
removes it afterwards.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from strikebench.api import RunInfo
from strikebench.config import load_config
from strikebench.engine.runner import build_engine, run_cerebro
from strikebench.plugin_manager import LOAD_ENV, get_plugin_manager
from strikebench.testing import ModelMarket, decisions_of, orders_of, trades_of
from test_scaffold import pip, run, strikebench, table_rows

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "iron-condor-plugin"
YAML = EXAMPLE / "iron_condor.yaml"


@pytest.fixture(scope="module")
def example():
    """The example distribution, installed (editable) and importable in this process."""
    try:
        md.distribution("sb-iron-condor")
        installed_here = False
    except md.PackageNotFoundError:
        pip("install", "--no-deps", "--no-build-isolation", "--quiet", "-e", str(EXAMPLE))
        installed_here = True
    added = None
    if importlib.util.find_spec("sb_iron_condor") is None:  # an editable install's .pth is read at start-up only
        added = str(EXAMPLE / "src")
        sys.path.insert(0, added)
    yield EXAMPLE
    if added:
        sys.path.remove(added)
    if installed_here:
        pip("uninstall", "--yes", "sb-iron-condor")


def test_strikebench_lists_it_from_its_distribution(example):
    result = strikebench("plugins", "--kind", "strategy")
    assert result.returncode == 0, result.stderr
    assert ["iron_condor", "sb-iron-condor", "0.1.0",
            "Iron condor ~30 DTE: shorts at ~0.16 delta, fixed-width wings, 50% take profit, 2x stop."
            ] in table_rows(result.stdout)


def test_its_own_tests_pass(example):
    result = run(["-m", "pytest", "-p", "no:cacheprovider"], cwd=example)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10 passed" in result.stdout, result.stdout


def test_its_yaml_runs_through_the_engine_on_a_model_market(example, monkeypatch):
    """The YAML as written (strategy params, risk rules, fill model, fees), on a quiet
    4800 market whose numbers can be checked by hand; Backtrader drives the bars."""
    monkeypatch.delenv(LOAD_ENV, raising=False)
    resolved = load_config(YAML, registry=get_plugin_manager().registry)
    (strategy,) = resolved.strategies
    assert (strategy.entry.name, strategy.entry.distribution) == ("iron_condor", "sb-iron-condor")
    assert [rp.entry.name for rp in resolved.risk] == ["max_new_trades_per_day", "per_trade_max_loss"]

    fridays = [d.date() for d in pd.date_range("2024-02-02", "2024-03-08", freq="W-FRI")]
    market = ModelMarket("2024-01-08", "2024-01-24", spot=4800.0, iv=0.15, expiries=fridays)
    engine = build_engine(resolved, run=RunInfo(run_id="t", name="iron_condor", mode="backtest"), market=market)
    run_cerebro(engine)

    # Monday and Tuesday each open a condor (max_open: 2), then it waits while both are open
    actions = [(d.decided_at.date(), d.action, d.reason) for d in decisions_of(engine)]
    assert actions[0] == (dt.date(2024, 1, 8), "TRADE", "32DTE 4560/4610P 5035/5085C for 13.50")
    assert actions[1][:2] == (dt.date(2024, 1, 9), "TRADE")
    assert all(a == "SKIP" and r == "2 condor(s) open, max 2" for _, a, r in actions[2:11])

    first = trades_of(engine)[0]
    # mid 13.50 less 0.30 x the combo's bid/ask width, on the 0.05 complex tick: 13.10
    assert (first.entry_credit, first.exit_price, first.exit_reason) == (13.10, 6.50, "take_profit")
    assert first.closed_at == dt.datetime(2024, 1, 24, 9, 30, tzinfo=first.closed_at.tzinfo)
    # cboe_retail: 4 legs x (0.65 + 0.60 + 0.03) = 5.12 a side; (13.10 - 6.50) x 100 - 10.24 = 649.76
    assert first.fees == 10.24
    assert first.realized_pnl == 649.76
    assert len(orders_of(engine, opens=True)) == 3  # Wednesday the 24th re-enters after the take profit
    assert engine.summary()["completed"]


def test_strikebench_backtest_runs_its_yaml_on_the_synthetic_market(example, tmp_path):
    """The tutorial's command, on one week of the embedded synthetic market."""
    result = strikebench("backtest", str(YAML), "--quiet", "--set", "data.end=2023-01-09",
                         "--set", f"output.dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] and summary["sessions"] == 5 and summary["decisions"] == 5
    assert summary["trades"] + summary["open_trades"] >= 1
