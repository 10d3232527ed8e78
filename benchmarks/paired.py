"""Paired A/B of two checkouts: the loop of one config, both at the same time, each pinned to its own core.

    python benchmarks/paired.py /path/to/other-checkout [--config configs/all_strategies.yaml] [--months 12]
                                [--rounds 2]

On this 2-core machine the same run's CPU time moves by a fifth between idle runs minutes apart, so two
``benchmarks/run.py`` runs cannot resolve a change of a few per cent. Here each round starts the loop of
this checkout (B) and of the other one (A) together, each in its own process with its own venv
(``<checkout>/.venv/bin/python``; each child checks its ``strikebench`` is its checkout's) pinned to one core, so both meet the same machine
state. A second round swaps the cores. It prints each pair's CPU seconds of the loop (what
``benchmarks/run.py`` times as the job "as shipped": journal, every configured risk manager) and the median
ratio B / A. Two processes at once share the caches and memory bandwidth, so absolute figures run higher
than alone: read the ratio. Linux only (``os.sched_setaffinity``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# run inside each checkout (its benchmarks/run.py builds the job exactly as the CLI does)
_CHILD = r"""
import json, os, sys, tempfile
from pathlib import Path
os.sched_setaffinity(0, {int(sys.argv[1])})
sys.path.insert(0, str(Path.cwd() / "benchmarks"))
import run as B
import strikebench
if not Path(strikebench.__file__).resolve().is_relative_to(Path.cwd().resolve()):
    sys.exit(f"its strikebench is {strikebench.__file__}, not this checkout's")
months = int(sys.argv[3])
resolved, pm = B.resolve(Path(sys.argv[2]), None if months == 12 else months)
market = resolved.data.build().open()
j = B.as_shipped(resolved, pm, market, Path(tempfile.mkdtemp(prefix="sb-paired-")))
print(json.dumps({"loop_cpu_s": j["loop_cpu_s"], "bars": j["bars"], "trades": j["trades"]}))
"""


def _python(checkout: Path) -> str:
    venv = checkout / ".venv" / "bin" / "python"
    if not venv.is_file():
        raise SystemExit(f"paired: {checkout}: no .venv (python3 -m venv .venv && .venv/bin/pip install -e .)")
    return str(venv)


def _start(checkout: Path, core: int, config: str, months: int) -> subprocess.Popen:
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.Popen([_python(checkout), "-c", _CHILD, str(core), config, str(months)], cwd=checkout,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen, checkout: Path) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        last = (err.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"paired: {checkout}: the run failed ({last})")
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("other", help="the other checkout (A); this one is B")
    ap.add_argument("--config", default="configs/all_strategies.yaml")
    ap.add_argument("--months", type=int, default=12, help="months of the config's year (12: all of it)")
    ap.add_argument("--rounds", type=int, default=2, help="pairs of rounds (each pair swaps the cores)")
    a = ap.parse_args(argv)
    here, other = HERE.parent, Path(a.other).resolve()
    if not (other / "benchmarks" / "run.py").is_file():
        raise SystemExit(f"paired: {other}: not a strikebench checkout (no benchmarks/run.py)")
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("paired: needs two cores")
    cores = sorted(os.sched_getaffinity(0))[:2]
    _python(other), _python(here)  # both venvs there before anything runs
    ratios = []
    print(f"A = {other}\nB = {here}\n{a.config}, {a.months} month(s): CPU seconds of the loop")
    for r in range(2 * a.rounds):
        ca, cb = (cores[0], cores[1]) if r % 2 == 0 else (cores[1], cores[0])
        pa, pb = _start(other, ca, a.config, a.months), _start(here, cb, a.config, a.months)
        ra, rb = _result(pa, other), _result(pb, here)
        if ra["trades"] != rb["trades"]:
            print(f"  note: A made {ra['trades']} trades, B {rb['trades']}")
        ratios.append(rb["loop_cpu_s"] / ra["loop_cpu_s"])
        print(f"  round {r + 1} (A on core {ca}, B on core {cb}): A {ra['loop_cpu_s']:.2f} s, B {rb['loop_cpu_s']:.2f} s,"
              f" B/A {ratios[-1]:.3f}", flush=True)
    print(f"median B/A {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
