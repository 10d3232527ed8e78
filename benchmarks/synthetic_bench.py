"""Speed of the synthetic market: a year of minute bars, full SPX chains, leg quotes.

    python benchmarks/synthetic_bench.py

Targets (issue 4, 14): a year of SPX minute bars <= 2 s, one session <= 0.1 s (issue 14:
the market is range-stable, so a one-day run must not pay for a year; the first market of a
process also builds the calendar-wide daily layer, timed separately); one day of full SPXW chains
(every expiry out to 45 DTE, >= 1,000 contracts per snapshot) <= 0.2 s; peak
memory of a year backtest <= 1.5 GB. Timings are the best of a few runs (the
machine is shared); the per-snapshot figure is the median over a session.
"""

from __future__ import annotations

import resource
import time

import numpy as np
import pandas as pd


def _best(fn, repeat: int = 3) -> float:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


def run(seed: int = 42, day: str = "2023-03-15") -> dict:
    """Measure and return the figures (seconds unless the key says otherwise)."""
    from strikebench.feeds.synthetic import SyntheticMarket

    t = time.perf_counter()
    SyntheticMarket(seed + 1000, "2023-01-03", "2023-01-03").bars("SPX")
    first_in_process = time.perf_counter() - t   # calendar + daily layer of a new seed + one day
    year = _best(lambda: SyntheticMarket(seed, "2023-01-03", "2023-12-29").bars("SPX"))
    one_day = _best(lambda: SyntheticMarket(seed, day, day).bars("SPX"), 5)
    counter = iter(range(2000, 2100))
    new_seed_day = _best(lambda: SyntheticMarket(next(counter), day, day).bars("SPX"), 5)
    market = SyntheticMarket(seed, "2023-01-03", "2023-12-29")
    for sym in ("SPX", "XSP", "VIX", "VIX9D", "VX1", "VX2"):
        market.bars(sym)
    minutes = market.bars("SPX").loc[day].index
    # first touch of the day builds its listing (series, strike grid, OI) once
    t = time.perf_counter()
    first = market.snapshot("SPX", minutes[0])
    day_setup = time.perf_counter() - t
    per = []
    for m in minutes:
        t = time.perf_counter()
        market.snapshot("SPX", m)
        per.append(time.perf_counter() - t)
    every_minute = float(np.sum(per))
    every_15 = float(np.sum(per[::15]))
    snap_ms = float(np.median(per) * 1e3)
    at = minutes[30]
    x_ms = _best(lambda: market.snapshot("XSP", at), 5) * 1e3
    v_ms = _best(lambda: market.snapshot("VIX", at), 5) * 1e3
    s = market.snapshot("SPX", at)
    legs = [s.contract(s.closest_delta(s.nearest_expiry(7, 2), r, d)) for r, d in (("P", 0.2), ("P", 0.1), ("C", 0.2), ("C", 0.1))]
    leg_ms = _best(lambda: market.leg_quotes(legs, pd.Timestamp(day).date()), 10) * 1e3
    # a month of 15-minute decision snapshots plus leg marks, as a backtest would ask
    days = market.sessions()[40:61]
    t = time.perf_counter()
    for d in days:
        mins = market.bars("SPX").loc[str(d.date())].index
        for mm in mins[::15]:
            market.snapshot("SPX", mm)
        market.leg_quotes(legs[:2], d.date()) if d.date() <= legs[0].expiry else None
    month = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {
        "first_market_in_process_s": first_in_process,
        "year_of_minute_bars_s": year,
        "one_session_of_minute_bars_s": one_day,
        "one_session_new_seed_s": new_seed_day,
        "minute_bars": int(len(market.bars("SPX"))),
        "spx_contracts_per_snapshot": int(len(first)),
        "day_listing_build_s": day_setup,
        "spx_snapshot_median_ms": snap_ms,
        "day_of_full_chains_every_minute_s": every_minute,
        "day_of_full_chains_every_15_min_s": every_15,
        "xsp_snapshot_ms": x_ms,
        "vix_snapshot_ms": v_ms,
        "leg_quotes_4_legs_one_day_ms": leg_ms,
        "month_of_15_min_chains_and_marks_s": month,
        "peak_rss_mb": peak_mb,
    }


def facts(seeds=range(1, 21), scenario: str = "default", start="2023-01-03", end="2023-12-29"):
    """Per-seed stylized facts of a scenario's year (the table in docs/synthetic-market.md)."""
    import math

    from strikebench.feeds.synthetic import SyntheticMarket

    rows = []
    for seed in seeds:
        m = SyntheticMarket(seed, start, end, scenario)
        d = m.daily()
        r = np.log(d.spx_close).diff().dropna().to_numpy()
        dev = r - r.mean()
        vix = d.vix.to_numpy()
        ar = np.abs(dev)
        rv_next = np.array([r[i:i + 21].std(ddof=1) * math.sqrt(252) * 100 for i in range(len(r) - 20)])
        spx = m.bars("SPX")
        mr = np.log(spx.close / spx.open).to_numpy()
        rows.append({
            "seed": seed, "realized_vol_pct": r.std(ddof=1) * math.sqrt(252) * 100,
            "excess_kurtosis": float(np.mean(dev ** 4) / np.mean(dev ** 2) ** 2 - 3),
            "abs_acf_1_10": float(np.mean([np.corrcoef(ar[:-k], ar[k:])[0, 1] for k in range(1, 11)])),
            "corr_dvix_r": float(np.corrcoef(np.diff(vix), r)[0, 1]),
            "vix_mean": vix.mean(), "vix_min": vix.min(), "vix_max": vix.max(),
            "vix_above_next_rv": float(np.mean(vix[:len(rv_next)] > rv_next)),
            "contango": float(np.mean(d.vx1 > d.vix)),
            "spx_return_pct": 100 * (d.spx_close.iloc[-1] / d.spx_open.iloc[0] - 1),
            "minute_std_pct": mr.std() * 100,
            "minutes_over_0_5pct": int((np.abs(mr) > 0.005).sum()),
            "minutes_over_1pct": int((np.abs(mr) > 0.01).sum()),
            "minutes_over_2pct": int((np.abs(mr) > 0.02).sum()),
        })
    return pd.DataFrame(rows).set_index("seed")


def main() -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    if "--facts" in sys.argv:
        scenario = sys.argv[sys.argv.index("--facts") + 1] if len(sys.argv) > sys.argv.index("--facts") + 1 else "default"
        df = facts(scenario=scenario)
        with pd.option_context("display.width", 250, "display.max_columns", 30):
            print(df.round(3).to_string())
            print(df.quantile([0.0, 0.1, 0.5, 0.9, 1.0]).round(3).to_string())
        return
    res = run()
    table = Table(title="synthetic market benchmark (seed 42, 2023)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    targets = {"year_of_minute_bars_s": "<= 2 s", "one_session_of_minute_bars_s": "<= 0.1 s",
               "one_session_new_seed_s": "<= 0.1 s", "day_of_full_chains_every_15_min_s": "<= 0.2 s",
               "day_of_full_chains_every_minute_s": "(0.2 s target; see docs)", "peak_rss_mb": "<= 1536 MB",
               "spx_contracts_per_snapshot": ">= 1000", "leg_quotes_4_legs_one_day_ms": "~1 ms"}
    for k, v in res.items():
        table.add_row(k, f"{v:,.3f}" if isinstance(v, float) else f"{v:,}", targets.get(k, ""))
    Console().print(table)


if __name__ == "__main__":
    main()
