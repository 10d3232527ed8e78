"""Walk-forward: the windows' arithmetic by hand, and an end-to-end run whose in-sample choice cannot
see the out-of-sample market: a crash injected on the first out-of-sample day changes the out-of-sample
result and nothing in-sample (a window that reached one session too far would see it)."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest
import yaml

from strikebench.config import load_config
from strikebench.research.walk_forward import run_walk_forward, windows

from test_sweep import BASE, FIGURES


def _days(n):
    d, out = dt.date(2023, 1, 2), []
    while len(out) < n:
        d += dt.timedelta(days=1)
        if d.weekday() < 5:
            out.append(d)
    return out


@pytest.mark.parametrize("mode", ["rolling", "anchored"])
def test_windows_are_contiguous_never_overlap_out_of_sample_and_end_in_sample_the_session_before(mode):
    days = _days(20)
    ws = windows(days, mode, 5, 3)
    # 15 sessions after the first in-sample: five out-of-sample windows of 3 (the last one whole)
    assert [(w.out_of_sample, w.out_sessions) for w in ws] == [((days[i], days[i + 2]), 3) for i in (5, 8, 11, 14, 17)]
    oos = [d for w in ws for d in days[days.index(w.out_of_sample[0]):days.index(w.out_of_sample[1]) + 1]]
    assert oos == days[5:]  # every later session exactly once, in order
    for w in ws:
        is_end = days.index(w.in_sample[1])
        assert days[is_end + 1] == w.out_of_sample[0]  # in-sample ends the session before out-of-sample
        start = 0 if mode == "anchored" else is_end - 4
        assert w.in_sample[0] == days[start] and w.in_sessions == is_end - start + 1
    # a last window shorter than out_of_sample is kept, and nothing beyond the span is asked for
    ws = windows(days[:12], mode, 5, 3)
    assert [(w.out_of_sample, w.out_sessions) for w in ws][-1] == ((days[11], days[11]), 1)
    assert windows(days[:5], mode, 5, 3) == []


def _config(tmp_path, name, scenario=None, end="2023-03-14"):
    cfg = json.loads(json.dumps(BASE))
    cfg["name"] = name
    cfg["data"] = dict(cfg["data"], start="2023-03-08", end=end)
    if scenario:
        cfg["data"]["scenario"] = str(scenario)
    cfg["output"]["dir"] = str(tmp_path / "runs")
    cfg["sweep"] = {"sampler": "grid", "space": {"strategies[0].params.width": {"choices": [10, 25]}},
                    "objectives": [{"name": "final_equity", "direction": "maximize"}]}
    cfg["walk_forward"] = {"mode": "rolling", "in_sample": 2, "out_of_sample": 2}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _in_sample(folder, window):
    import optuna

    storage = f"sqlite:///{folder / f'window-{window:02d}' / 'study.sqlite3'}"
    name = optuna.get_all_study_names(storage)[0]
    study = optuna.load_study(study_name=name, storage=storage)
    return {t.user_attrs["index"]: (t.params, {k: t.user_attrs["summary"][k] for k in FIGURES if k != "config_hash"})
            for t in study.trials}


def test_walk_forward_reports_out_of_sample_only_and_never_sees_it_in_sample(tmp_path):
    from rich.console import Console

    quiet = Console(file=open("/dev/null", "w"))
    # 2023-03-08 .. 03-14 is 5 sessions: window 0 = IS 03-08, 03-09 / OOS 03-10, 03-13; window 1 = IS 03-10,
    # 03-13 / OOS 03-14 (a last, shorter window)
    plain = run_walk_forward(load_config(_config(tmp_path, "plain")), folder=tmp_path / "plain", workers=2,
                             console=quiet, progress=False)
    w = plain.windows
    assert [(r["in_sample"], r["out_of_sample"]) for r in w] == [
        (["2023-03-08", "2023-03-09"], ["2023-03-10", "2023-03-13"]), (["2023-03-10", "2023-03-13"], ["2023-03-14", "2023-03-14"])]
    for k, r in enumerate(w):
        trials = _in_sample(tmp_path / "plain", k)
        assert all(s["sessions"] == 2 for _, s in trials.values())  # each in-sample trial ran its 2 sessions only
        # the chosen parameters are the in-sample best (final equity), checked here from every trial
        best = max(trials.values(), key=lambda t: t[1]["final_equity"])
        assert r["chosen_params"] == best[0] and r["in_sample_final_equity"] == best[1]["final_equity"]
        assert r["oos_summary"]["sessions"] == (2, 1)[k]
    # the stitched curve: the out-of-sample sessions once each, in order, each window's daily P&L added
    # to the previous window's end (each window starts at the configured 100,000.00)
    assert [d for d, _ in plain.curve] == ["2023-03-10", "2023-03-13", "2023-03-14"]
    total_c = sum(round(r["oos_pnl"] * 100) for r in w)
    assert round(plain.curve[-1][1] * 100) == 100000 * 100 + total_c
    assert plain.oos["pnl"] == total_c / 100
    assert round(plain.curve[1][1] * 100) == round(w[0]["oos_summary"]["final_equity"] * 100)

    # the same walk-forward on a market with a crash at 10:30 on 03-10, window 0's first out-of-sample day
    scenario = tmp_path / "crash.yaml"
    scenario.write_text("extends: default\nevents: [{at: '2023-03-10 10:30', move_pct: -6.0, vol_jump: 25}]\n")
    hit = run_walk_forward(load_config(_config(tmp_path, "hit", scenario, end="2023-03-13")), folder=tmp_path / "hit",
                           workers=2, console=quiet, progress=False)
    assert len(hit.windows) == 1
    # in-sample: every trial and the choice are the same figure for figure ...
    assert _in_sample(tmp_path / "hit", 0) == _in_sample(tmp_path / "plain", 0)
    assert hit.windows[0]["chosen_params"] == w[0]["chosen_params"]
    # ... while the out-of-sample run saw the crash
    assert hit.windows[0]["oos_summary"]["final_equity"] != w[0]["oos_summary"]["final_equity"] or \
        hit.windows[0]["oos_summary"]["max_drawdown_per_bar"] != w[0]["oos_summary"]["max_drawdown_per_bar"]
    assert (tmp_path / "plain" / "oos_equity.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "plain" / "oos" / "window-00.yaml").exists()
