"""The benchmark script runs on a tiny size and writes valid JSON (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_script_runs_tiny_and_writes_json(tmp_path):
    out = tmp_path / "latest.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--size", "tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, env={"COLUMNS": "150", "PATH": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["size"] == "tiny"
    for key in ("bare_loop_bars_per_s", "ratio_strikebench_to_bare", "ratio_main_job_to_bare", "pricing",
                "synthetic", "naive", "scaling_months", "scaling_chain_size", "machine", "bare_runonce_off",
                "bare_runonce_on", "bare_pandasdata_on", "main_job", "four_strategies", "stripped_engine"):
        assert key in data, key
    # the main job ran as the CLI runs it: journaled decisions and trades, the report timed apart
    main = data["main_job"]
    assert main["decisions"] > 0 and main["trades"] > 0 and main["journal_bytes"] > 0 and main["report_s"] > 0
    assert data["four_strategies"]["decisions"] > main["decisions"]
    for job in ("main_job", "four_strategies", "stripped_engine"):
        for bare in ("bare_runonce_off", "bare_runonce_on", "bare_pandasdata_on"):
            assert data[job]["ratio_to_" + bare] > 0, (job, bare)
    assert data["strikebench"]["bars"] > 5000 and data["strikebench"]["contracts_per_snapshot"] >= 1000
    assert data["ratio_strikebench_to_bare"] > 0
    assert data["machine"]["versions"]["backtrader"]
    assert "strikebench benchmarks" in proc.stdout
