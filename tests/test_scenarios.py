"""Scenario files: shipped ones load and behave as described; malformed ones give one-line errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from strikebench.errors import ConfigError
from strikebench.feeds.synthetic import Scenario, ScenarioError, SyntheticMarket, load_scenario, shipped_scenarios
from strikebench.feeds.synthetic.scenario import scenario_from_text

NY = "America/New_York"


def test_the_five_scenarios_ship():
    assert set(shipped_scenarios()) >= {"default", "calm", "crash", "vol_spike", "grind_up"}


@pytest.mark.parametrize("name", ["default", "calm", "crash", "vol_spike", "grind_up"])
def test_each_shipped_scenario_loads_and_runs(name):
    sc = load_scenario(name)
    assert isinstance(sc, Scenario) and sc.name == name
    m = SyntheticMarket(seed=1, start="2023-02-01", end="2023-02-28", scenario=name)
    assert len(m.bars("SPX")) > 7000
    assert m.snapshot("SPX", pd.Timestamp("2023-02-15 10:00", tz=NY)).valid.sum() > 1000


def test_scenario_by_path_and_inheritance(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("extends: calm\nunderlying: {start_level: 4500}\n")
    sc = load_scenario(f)
    assert sc.name == "mine" and sc.underlying.start_level == 4500
    assert sc.variance.long_run_vol == load_scenario("calm").variance.long_run_vol


def test_crash_scenario_falls_seven_percent_in_a_week():
    m = SyntheticMarket(seed=42, start="2023-01-03", end="2023-06-30", scenario="crash")
    d = m.daily()
    week = d.iloc[60:65]
    assert week.spx_close.iloc[-1] / week.spx_open.iloc[0] - 1 == pytest.approx(-0.07, abs=1e-4)
    assert week.vix.max() > d.vix.iloc[59] + 10


def test_calm_and_grind_up_are_quieter_than_default():
    def vix_mean(name):
        return SyntheticMarket(seed=5, start="2023-01-03", end="2023-06-30", scenario=name).daily().vix.mean()
    base = vix_mean("default")
    assert vix_mean("calm") < base - 3
    assert vix_mean("grind_up") < base - 3


def test_injected_event_moves_spx_and_vix_at_its_minute():
    sc = scenario_from_text(
        "extends: default\nevents: [{at: '2023-03-14 10:30', move_pct: -2.5, vol_jump: 8}]\n", "inline.yaml")
    m = SyntheticMarket(seed=42, start="2023-03-01", end="2023-03-31", scenario=sc)
    bar = m.bars("SPX").loc[pd.Timestamp("2023-03-14 10:30", tz=NY)]
    assert math.log(bar.close / bar.open) == pytest.approx(math.log(0.975), abs=0.004)
    vix = m.bars("VIX")
    jump = vix.loc[pd.Timestamp("2023-03-14 10:30", tz=NY)].close - vix.loc[pd.Timestamp("2023-03-14 10:29", tz=NY)].close
    assert 6.0 < jump < 10.0
    ev = m.events()
    assert ((ev.kind == "injected") & (ev.label == "injected")).sum() == 1


def test_event_before_the_open_moves_the_gap():
    sc = scenario_from_text("events: [{at: '2023-03-14 08:00', move_pct: 3.0}]\n")
    base = SyntheticMarket(seed=42, start="2023-03-01", end="2023-03-31")
    m = SyntheticMarket(seed=42, start="2023-03-01", end="2023-03-31", scenario=sc)
    d0, d1 = base.daily(), m.daily()
    g0 = math.log(d0.spx_open.loc["2023-03-14"] / d0.spx_close.loc["2023-03-13"])
    g1 = math.log(d1.spx_open.loc["2023-03-14"] / d1.spx_close.loc["2023-03-13"])
    assert g1 - g0 == pytest.approx(math.log(1.03), abs=1e-3)


# --------------------------------------------------------------------- errors
def _error(tmp_path, text: str) -> str:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(f)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(f) in msg
    return msg


def test_bad_value_names_file_yaml_path_value_and_what_is_allowed(tmp_path):
    msg = _error(tmp_path, "archetypes:\n  trend_up:\n    probability: -0.2\n")
    assert "archetypes.trend_up.probability" in msg
    assert "-0.2" in msg and "greater than or equal to 0" in msg
    assert ":3:" in msg  # the line of the bad value


def test_probabilities_must_sum_to_one(tmp_path):
    msg = _error(tmp_path, "archetypes:\n  calm_range: {probability: 0.9}\n")
    assert "archetypes" in msg and "sum to 1" in msg


def test_unknown_key_lists_allowed_keys(tmp_path):
    msg = _error(tmp_path, "variance:\n  long_run_volatility: 0.2\n")
    assert "unknown key 'long_run_volatility'" in msg and "long_run_vol" in msg


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    msg = _error(tmp_path, "variance:\n  long_run_vol: [0.2\n")
    assert "YAML syntax error" in msg
    assert msg.split(": YAML")[0].count(":") >= 2  # file:line:col


def test_arbitrageable_surface_is_refused(tmp_path):
    msg = _error(tmp_path, "surface: {rho: -0.9, eta: 1.5}\n")
    assert "surface" in msg and "eta*(1+|rho|)" in msg


def test_injected_event_needs_a_moment(tmp_path):
    msg = _error(tmp_path, "events: [{move_pct: -2}]\n")
    assert "events.injected[0]" in msg and "exactly one of 'at'" in msg


def test_unknown_scenario_name_lists_the_shipped_ones():
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'.*default"):
        load_scenario("nope")


def test_missing_file_and_error_types(tmp_path):
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario(tmp_path / "missing.yaml")
    err = ScenarioError("x")
    assert isinstance(err, ValueError) and isinstance(err, ConfigError) and err.exit_code == 2


def test_every_field_is_documented():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            ann = field.annotation
            for t in (ann, *getattr(ann, "__args__", ())):
                if isinstance(t, type) and hasattr(t, "model_fields"):
                    walk(t)
    walk(Scenario)
    assert Scenario.model_config["extra"] == "forbid" and Scenario.model_config["frozen"]


def test_scenarios_are_frozen():
    sc = load_scenario("default")
    with pytest.raises(Exception):
        sc.name = "x"  # type: ignore[misc]
    assert np.isclose(sum(getattr(sc.archetypes, a).probability for a in
                          ("calm_range", "trend_up", "trend_down", "fakeout", "event_spike_fade")), 1.0)


def test_a_malformed_scenario_fails_validate_and_backtest_with_exit_2_and_no_run_folder(tmp_path):
    import subprocess
    import sys

    scenario = tmp_path / "bad_scenario.yaml"
    scenario.write_text("extends: default\narchetypes:\n  trend_up:\n    probability: -0.2\n")
    config = tmp_path / "cfg.yaml"
    config.write_text(f"name: x\ndata: {{source: synthetic, scenario: {scenario}}}\n"
                      f"strategies: [{{name: credit_vertical}}]\noutput: {{dir: {tmp_path / 'runs'}}}\n")
    # the bad value (the path) is shown shortened past 80 characters; the scenario's own error in full
    head = f"error: {config}:2: data.scenario: '"
    tail = (f" is not allowed: {scenario}:4: "
            "archetypes.trend_up.probability: -0.2 is not allowed: Input should be greater than or equal to 0")
    for command in ("validate", "backtest"):
        proc = subprocess.run([sys.executable, "-m", "strikebench.cli", command, str(config)], capture_output=True,
                              text=True, env={"COLUMNS": "500", "NO_COLOR": "1", "PATH": "", "TERM": "dumb"})
        assert proc.returncode == 2, command
        message = proc.stderr.strip()
        assert message.startswith(head) and message.endswith(tail) and "\n" not in message
        assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "runs").exists()
