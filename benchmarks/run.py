"""strikebench benchmarks: figures and ratios against the bare Backtrader loop on the same bars.

    python benchmarks/run.py              # full run (a few minutes on 2 cores)
    python benchmarks/run.py --size tiny  # smoke run (seconds)

Prints a rich table and writes benchmarks/results/latest.json. Every ratio is
measured in this one process run, on the same bars, so a noisy machine shifts
both sides of a ratio together. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SIZES = {
    # months of the year run, naive contract counts, naive days, pricing n, scaling months, chain sizes
    "tiny": dict(months=1, naive=(20,), naive_days=1, pricing_n=20_000, scaling=(1,), chains=("small",),
                 memory=False),
    "full": dict(months=12, naive=(100, 400), naive_days=5, pricing_n=1_000_000, scaling=(1, 3, 12),
                 chains=("small", "two weeks", "default", "huge"), memory=True),
}


def _timed(fn, repeats=1):
    best = float("inf")
    out = None
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _end_of(start: dt.date, months: int) -> dt.date:
    return (pd.Timestamp(start) + pd.DateOffset(months=months) - pd.Timedelta(days=1)).date()


#: listing specs for the chain-size scaling figure (contracts per SPX snapshot ~500, ~1,300, ~8,600, ~43,000)
CHAIN_SPECS = {
    "small": dict(spxw_max_dte=8, spx_monthly_max_dte=0, put_wing_sigmas=2.0, call_wing_sigmas=1.5,
                  fine_sigmas=1.0, min_fine_points=50),
    "two weeks": dict(spxw_max_dte=14, spx_monthly_max_dte=0),
    "default": dict(),
    "huge": dict(spxw_max_dte=120, spx_monthly_max_dte=400, put_wing_sigmas=6, call_wing_sigmas=4),
}


def market_for(months: int, seed: int = 42, chains: dict | None = None):
    from strikebench.feeds.synthetic import SyntheticMarket, load_scenario
    from strikebench.feeds.synthetic.scenario import ChainSpec

    start = dt.date(2023, 1, 3)
    scenario = load_scenario("default")
    if chains:
        scenario = scenario.model_copy(update={"chains": ChainSpec(**chains)})
    return SyntheticMarket(seed=seed, start=start, end=_end_of(start, months), scenario=scenario)


def bare_loop(bars: pd.DataFrame) -> float:
    """Bars per second of cerebro.run() over these bars with a strategy that does nothing."""
    from strikebench.engine.runner import bars_feed

    def run():
        cerebro = bt.Cerebro(stdstats=False, preload=True, runonce=False)
        cerebro.adddata(bars_feed(bars))
        cerebro.addstrategy(bt.Strategy)
        cerebro.run()

    seconds, _ = _timed(run)
    return len(bars) / seconds


def strikebench_year(market, chain_strikes: int | None = None) -> dict:
    """Bars per second of the credit_vertical backtest under cerebro (full chains, marks every bar)."""
    from strikebench.api import RunInfo
    from strikebench.engine.core import Engine
    from strikebench.engine.runner import run_cerebro
    from strikebench.plugins.commissions import CboeRetail
    from strikebench.plugins.fill_models import MidSlippageFill
    from strikebench.plugins.risk_managers import MaxNewTradesPerDay, MaxOpenTrades, NoEntryAfterStop
    from strikebench.strategies.credit_vertical import CreditVertical

    def run():
        engine = Engine(market=market, strategies=[("credit_vertical", CreditVertical())],
                        fill_model=MidSlippageFill(), commission=CboeRetail(),
                        risk_managers=[MaxOpenTrades(), MaxNewTradesPerDay(), NoEntryAfterStop()],
                        run=RunInfo(run_id="bench", name="bench", mode="backtest"))
        run_cerebro(engine)
        return engine

    seconds, engine = _timed(run)
    snap = market.snapshot("SPX", engine.timeline.index[30])
    return {"bars_per_s": len(engine.timeline) / seconds, "seconds": seconds, "bars": len(engine.timeline),
            "trades": len(engine.portfolio.closed_trades()), "contracts_per_snapshot": len(snap)}


class _ReadAll(bt.Strategy):
    def next(self):
        total = 0.0
        for d in self.datas:
            total += d.close[0]
        self.total = total


def naive(bars: pd.DataFrame, contracts: int, days: int) -> dict:
    """Backtrader's way: one PandasData feed per option contract, a strategy reading every close."""
    minutes = bars.index[: 390 * days]
    rng = np.random.default_rng(0)
    idx = minutes.tz_convert("America/New_York").tz_localize(None)
    feeds = []
    for _ in range(contracts):
        close = np.abs(5 + rng.standard_normal(len(idx)).cumsum() * 0.05)
        df = pd.DataFrame({"open": close, "high": close, "low": close, "close": close, "volume": 1.0}, index=idx)
        feeds.append(bt.feeds.PandasData(dataname=df, timeframe=bt.TimeFrame.Minutes))

    def run():
        cerebro = bt.Cerebro(stdstats=False, preload=True, runonce=False)
        for f in feeds:
            cerebro.adddata(f)
        cerebro.addstrategy(_ReadAll)
        cerebro.run()

    seconds, _ = _timed(run)
    return {"contracts": contracts, "bars": len(idx), "bars_per_s": len(idx) / seconds, "seconds": seconds}


def peak_rss_of_year_run(months: int) -> float:
    """Peak RSS (MB) of a child process that runs the year backtest."""
    code = (
        "import sys, resource; sys.path.insert(0, %r); import run as b; "
        "m = b.market_for(%d); b.strikebench_year(m); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)" % (str(HERE), months)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0


def machine() -> dict:
    versions = {}
    for pkg in ("strikebench", "backtrader", "numpy", "pandas", "scipy", "pluggy", "pyarrow"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "processor": platform.processor(), "versions": versions,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def main(argv=None) -> dict:
    from rich.console import Console
    from rich.table import Table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="full")
    ap.add_argument("--out", default=str(HERE / "results" / "latest.json"))
    args = ap.parse_args(argv)
    size = SIZES[args.size]
    console = Console()
    results: dict = {"size": args.size, "machine": machine()}
    rows = []

    with console.status("synthetic market..."):
        import synthetic_bench

        results["synthetic"] = synthetic_bench.run()
    syn = results["synthetic"]
    rows.append(("year of SPX minute bars (s)", f"{syn['year_of_minute_bars_s']:.2f}", "<= 2"))
    rows.append(("one day of full SPX chains, every minute (s)", f"{syn['day_of_full_chains_every_minute_s']:.2f}", "<= 0.2"))
    rows.append(("one day of full SPX chains, every 15 min (s)", f"{syn['day_of_full_chains_every_15_min_s']:.3f}", ""))
    rows.append(("  one SPX snapshot, median (ms)", f"{syn['spx_snapshot_median_ms']:.1f}", ""))

    with console.status("pricing..."):
        import pricing_bench

        results["pricing"] = pricing_bench.run(n=size["pricing_n"])
    rows.append(("price + greeks per s (1 core)", f"{results['pricing']['greeks_per_s']:,.0f}", ">= 5,000,000"))
    rows.append(("IVs per s (1 core)", f"{results['pricing']['iv_per_s']:,.0f}", ">= 1,000,000"))
    rows.append(("  scalar Python greeks per s", f"{results['pricing']['scalar_python_greeks_per_s']:,.0f}", ""))
    rows.append(("  scalar Python IVs per s", f"{results['pricing']['scalar_python_iv_per_s']:,.0f}", ""))

    with console.status("year backtest vs bare loop..."):
        market = market_for(size["months"])
        bars = market.bars("SPX")
        bare = bare_loop(bars)
        sb = strikebench_year(market)
    results["bare_loop_bars_per_s"] = bare
    results["strikebench"] = sb
    results["ratio_strikebench_to_bare"] = sb["bars_per_s"] / bare
    rows.append(("bare Backtrader loop (bars/s)", f"{bare:,.0f}", ""))
    rows.append((f"strikebench credit_vertical, {size['months']} mo (bars/s)", f"{sb['bars_per_s']:,.0f}", ""))
    rows.append(("  ratio to bare loop", f"{results['ratio_strikebench_to_bare']:.2f}", ">= 0.5"))
    rows.append(("  contracts per snapshot", f"{sb['contracts_per_snapshot']:,}", ">= 1,000"))

    results["naive"] = []
    for n in size["naive"]:
        with console.status(f"naive: {n} feeds..."):
            nv = naive(bars, n, size["naive_days"])
        nv["strikebench_over_naive"] = sb["bars_per_s"] / nv["bars_per_s"]
        results["naive"].append(nv)
        rows.append((f"one feed per contract, {n} contracts (bars/s)", f"{nv['bars_per_s']:,.0f}", ""))
        rows.append(("  strikebench is faster by", f"{nv['strikebench_over_naive']:.1f}x", ""))

    results["scaling_months"] = []
    for months in size["scaling"]:
        if months == size["months"]:
            figure, bare_m = sb, bare
        else:
            with console.status(f"scaling: {months} months..."):
                m = market_for(months)
                bare_m = bare_loop(m.bars("SPX"))
                figure = strikebench_year(m)
        results["scaling_months"].append({"months": months, "bars_per_s": figure["bars_per_s"],
                                          "seconds": figure["seconds"], "ratio": figure["bars_per_s"] / bare_m})
        rows.append((f"scaling: {months} mo, {figure['bars']:,} bars (bars/s)", f"{figure['bars_per_s']:,.0f}",
                     f"ratio {figure['bars_per_s'] / bare_m:.2f}"))

    results["scaling_chain_size"] = []
    for name in size["chains"]:
        with console.status(f"scaling: {name} chains..."):
            m = market_for(1, chains=CHAIN_SPECS[name])
            bare_m = bare_loop(m.bars("SPX"))
            figure = strikebench_year(m)
        results["scaling_chain_size"].append({"chains": name, "contracts_per_snapshot": figure["contracts_per_snapshot"],
                                              "bars_per_s": figure["bars_per_s"], "ratio": figure["bars_per_s"] / bare_m})
        rows.append((f"scaling: {figure['contracts_per_snapshot']:,} contracts/snapshot, 1 mo (bars/s)",
                     f"{figure['bars_per_s']:,.0f}", f"ratio {figure['bars_per_s'] / bare_m:.2f}"))

    if size["memory"]:
        with console.status("peak memory of the year run..."):
            results["peak_rss_mb"] = peak_rss_of_year_run(size["months"])
        rows.append(("peak RSS of the year backtest (MB)", f"{results['peak_rss_mb']:,.0f}", "<= 1,536"))

    table = Table(title="strikebench benchmarks", title_justify="left", header_style="bold")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("bar", justify="right")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float))
    console.print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
