"""`strikebench scenario search`: the worst feasible scenarios, an implausible market recorded as infeasible
(never a result), the worst scenario file rerunning its trial exactly, and one-line errors for a bad section.

Three sessions, four trials of which two run a backtest: a few seconds of trial time.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from strikebench.cli import main
from strikebench.config import load_config
from strikebench.feeds.synthetic import ARCHETYPES, SyntheticMarket, load_scenario
from strikebench.research.scenario_search import FACTS

START, END = dt.date(2023, 3, 8), dt.date(2023, 3, 10)
BASE = {
    "name": "ss",
    "data": {"source": "synthetic", "seed": 42, "start": str(START), "end": str(END)},
    "broker": {"name": "backtest", "params": {"initial_cash": 100000},
               "fill_model": {"name": "mid_slippage", "params": {"k": 0.3}}},
    "strategies": [{"name": "credit_vertical",
                    "params": {"dte_targets": [3, 5], "entry_times": ["10:00", "11:00"], "short_deltas": [0.1, 0.2],
                               "width": 25}}],
    "risk": [{"name": "max_open_trades", "params": {"limit": 2}}],
    "output": {"plots": False},
}
VIX_MAX = 40.0
SEARCH = {
    "sampler": "grid",
    "space": {"variance.long_run_vol": {"choices": [0.10, 0.45]},          # 0.45: VIX near 70, implausible
              "archetypes.trend_down.probability": {"choices": [0.05, 0.6]}},  # weights: rescaled to sum to 1
    "objectives": [{"name": "return_pct", "direction": "minimize"}],
    # only VIX's maximum is bounded here (null: a fact is not checked), so the test knows the reason to expect
    "plausible": {**{fact: None for fact in FACTS}, "vix_max": [None, VIX_MAX]},
    "best": 2,
}
FIGURES = ("final_equity", "final_cash", "realized_pnl", "fees", "trades", "open_trades", "max_drawdown",
           "max_drawdown_per_bar", "return_pct", "worst_day", "best_day", "decisions", "sessions")


def write_config(tmp_path: Path, search: dict, **changes) -> Path:
    cfg = json.loads(json.dumps(BASE))
    cfg["output"]["dir"] = str(tmp_path / "runs")
    cfg.update(changes)
    cfg["scenario_search"] = search
    path = tmp_path / "ss.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    from strikebench.research.scenario_search import ScenarioSearch

    tmp = tmp_path_factory.mktemp("search")
    path = write_config(tmp, SEARCH)
    result = ScenarioSearch(load_config(path), folder=tmp / "search", progress=False, workers=2,
                            plots=False).run()
    return path, tmp / "search", result


def _hand_vix_max(scenario_file: str) -> float:
    market = SyntheticMarket(seed=42, start=START, end=END, scenario=scenario_file)
    return float(market.daily().vix.max())


def test_implausible_markets_are_infeasible_trials_and_the_worst_are_the_feasible_ones_by_hand(search):
    from optuna.trial import TrialState

    path, folder, result = search
    rows = {r["index"]: r for r in result.trials}
    assert sorted(rows) == [0, 1, 2, 3]
    base = load_scenario("default")
    feasible = []
    import optuna

    study = optuna.load_study(study_name="ss", storage=f"sqlite:///{folder / 'study.sqlite3'}")
    by_index = {t.user_attrs["index"]: t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.FAIL)}
    for index, r in rows.items():
        t = by_index[index]
        scenario_file = t.user_attrs["scenario_file"]
        sc = load_scenario(scenario_file)
        # the trial's scenario: the base with the searched values, archetype weights rescaled by hand
        assert sc.variance.long_run_vol == r["params"]["variance.long_run_vol"]
        w = r["params"]["archetypes.trend_down.probability"]
        others = sum(getattr(base.archetypes, a).probability for a in ARCHETYPES if a != "trend_down")
        assert sc.archetypes.trend_down.probability == pytest.approx(w / (w + others), rel=1e-12)
        assert sum(getattr(sc.archetypes, a).probability for a in ARCHETYPES) == pytest.approx(1.0, abs=1e-12)
        assert sc.surface == base.surface and sc.events == base.events
        # plausibility judged from the market rebuilt here from that file
        vix_max = _hand_vix_max(scenario_file)
        if vix_max > VIX_MAX:
            assert r["state"] == "infeasible" and t.state == TrialState.FAIL, (index, vix_max)
            assert r["infeasible"] == f"vix_max {vix_max:.4g} > {VIX_MAX:g}"
            assert r["error"].startswith("implausible market: vix_max")
            assert r["summary"] is None and r["values"] is None  # no backtest ran
        else:
            assert r["state"] == "complete", (index, vix_max, r["error"])
            assert r["market_facts"]["vix_max"] == pytest.approx(vix_max, abs=1e-6)
            feasible.append((r["values"][0], index))
    assert {i for _, i in feasible} == {0, 1} and result.failed == 2  # long_run_vol 0.45 is implausible both times
    worst = [i for _, i in sorted(feasible)]
    assert [b["index"] for b in result.best] == worst
    files = sorted((folder / "worst").iterdir())
    assert [f.name for f in files] == [f"worst-{k + 1:02d}-trial-{i:05d}.yaml" for k, i in enumerate(worst)]
    text = (folder / "trials.csv").read_text().splitlines()
    assert text[0].endswith(",infeasible") and sum(",infeasible," in line for line in text) == 2


def test_a_worst_scenario_file_reruns_its_trial_exactly_with_backtest(search, tmp_path, capsys):
    path, folder, result = search
    worst = result.best[0]
    file = Path(worst["yaml"])
    assert file.parent == folder / "worst"
    head = file.read_text().splitlines()[:4]
    assert head[-1] == f"# rerun exactly: strikebench backtest {path} --set data.scenario=THIS_FILE"
    out = tmp_path / "rerun"
    rc = main(["backtest", str(path), "--set", f"data.scenario={file}", "--set", f"output.dir={out}", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    trial = worst["summary"]
    for key in FIGURES:
        assert summary[key] == trial[key], key
    assert summary["return_pct"] == worst["values"][0]
    # a trader's check, in cents: each closed trade's P&L is (credit - debit) x 100 x contracts - fees,
    # and the run's realized P&L is their sum
    import csv

    with open(run_dir / "trades.csv") as fh:
        closed = [r for r in csv.DictReader(fh) if r["realized_pnl"]]
    assert closed
    for r in closed:
        by_hand = round(float(r["entry_credit"]) * 100) - round(float(r["exit_debit"]) * 100)
        by_hand = by_hand * int(r["multiplier"]) * int(r["contracts"]) - round(float(r["fees"]) * 100)
        assert round(float(r["realized_pnl"]) * 100) == by_hand, r
    assert round(summary["realized_pnl"] * 100) == sum(round(float(r["realized_pnl"]) * 100) for r in closed)


def test_the_same_command_resumes_and_a_changed_bound_is_refused(search, capsys):
    path, folder, result = search
    import optuna

    storage = f"sqlite:///{folder / 'study.sqlite3'}"
    before = [(t.number, t.datetime_complete) for t in optuna.load_study(study_name="ss", storage=storage).get_trials()]
    rc = main(["scenario", "search", str(path), "--dir", str(folder), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    after = [(t.number, t.datetime_complete) for t in optuna.load_study(study_name="ss", storage=storage).get_trials()]
    assert after == before  # every trial was finished: nothing ran again
    changed = path.parent / "changed.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["scenario_search"]["plausible"]["vix_max"] = [None, 90]
    changed.write_text(yaml.safe_dump(cfg, sort_keys=False))
    capsys.readouterr()
    rc = main(["scenario", "search", str(changed), "--dir", str(folder), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "different config" in err, err


BAD = {**SEARCH, "sampler": "random"}


@pytest.mark.parametrize("search, expected", [
    ({**BAD, "space": {"variance.long_run_voll": {"low": 0.1, "high": 0.2}}},
     "variance has no 'long_run_voll'"),
    ({**BAD, "space": {"variance.long_run_vol": {"low": 0.1, "high": 5.0}}},
     "scenario_search.space.variance.long_run_vol: with 5.0: variance.long_run_vol"),
    ({**BAD, "space": {"strategies[0].params.width": {"low": 10, "high": 20}}},
     "not a path into the scenario"),
    ({**BAD, "plausible": {"vix_max": [50, 20]}}, "high 20.0 is below low 50.0"),
    ({**BAD, "plausible": {"vix_maxx": [None, 20]}}, "vix_maxx"),
    ({**BAD, "space": {"events.injected[0].move_pct": {"low": -5, "high": 5}}},
     "events.injected[0] does not exist in the base scenario"),
])
def test_a_bad_search_section_is_one_line_and_exit_2(tmp_path, capsys, search, expected):
    path = write_config(tmp_path, search)
    rc = main(["scenario", "search", str(path), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and expected in err and str(path) in err, err
    assert not (tmp_path / "runs").exists()  # nothing written


def test_no_section_or_a_missing_file_is_one_line(tmp_path, capsys):
    cfg = json.loads(json.dumps(BASE))
    cfg["output"]["dir"] = str(tmp_path / "runs")
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rc = main(["scenario", "search", str(path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "no `scenario_search:` section" in err, err
    rc = main(["scenario", "search", str(tmp_path / "missing.yaml")])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and "missing.yaml" in err, err


def test_the_default_bounds_judge_a_market_by_its_daily_moves_and_gaps(tmp_path):
    """`strikebench market describe` prints this line (plausibility_line) under its tables."""
    from strikebench.research.scenario_search import plausibility_line

    scenario = tmp_path / "gap.yaml"  # a -9 % gap at the second session's open: beyond the default 7 % and 5 %
    scenario.write_text("extends: default\nevents: [{session: 1, time: '09:00', move_pct: -9.0, label: gap}]\n")
    market = SyntheticMarket(seed=42, start=START, end=END, scenario=str(scenario))
    d = market.daily()
    move = abs(d.spx_close.iloc[1] / d.spx_close.iloc[0] - 1) * 100
    gap = abs(d.spx_open.iloc[1] / d.spx_close.iloc[0] - 1) * 100
    assert move > 7 and gap > 5
    assert plausibility_line(market) == (f"plausible under the default bounds of scenario_search.plausible "
                                         f"(docs/research.md): no: max_daily_move_pct {move:.4g} > 7; "
                                         f"max_gap_pct {gap:.4g} > 5")
    calm = SyntheticMarket(seed=42, start=START, end=END, scenario="default")
    assert plausibility_line(calm).endswith(": yes")
