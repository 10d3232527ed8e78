"""Chain files without IV and greeks: computed from the quote mid with the configured rate and dividend
yield (a constant or a file of daily values), checked against Black-Scholes-Merton written here."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy.stats import norm

from strikebench.errors import DataError
from strikebench.feeds.files import FileMarket, chain_file
from strikebench.feeds.synthetic import SyntheticMarket, export

DAY = dt.date(2023, 1, 4)
GREEKS = ["iv", "delta", "gamma", "theta", "vega"]


@pytest.fixture(scope="module")
def stripped(tmp_path_factory):
    """Two sessions every 30 minutes, SPX within 10 DTE and 6 %: IV and greeks dropped from the files
    (the Parquet chain loses the columns, the CSV chain keeps empty cells)."""
    m = SyntheticMarket(seed=11, start="2023-01-03", end="2023-01-04")
    out = {}
    for fmt in ("parquet", "csv"):
        d = tmp_path_factory.mktemp("nogreeks-" + fmt)
        export(m, d, interval_minutes=30, underlyings=("SPX",), symbols=("SPX",), format=fmt, max_dte=10,
               strike_range_pct=6.0)
        for day in ("2023-01-03", "2023-01-04"):
            p = chain_file(d, "SPX", pd.Timestamp(day).date(), fmt)
            if fmt == "parquet":
                pq.write_table(pq.read_table(p).drop_columns(GREEKS), p)
            else:
                df = pd.read_csv(p, dtype=str, keep_default_na=False)
                df[GREEKS] = ""
                df.to_csv(p, index=False)
        out[fmt] = d
    return m, out


def _bsm(is_call, S, K, T, r, q, v):
    """Price, delta, gamma, theta/day, vega/point: the textbook formulas, independent of strikebench.pricing."""
    d1 = (math.log(S / K) + (r - q + 0.5 * v * v) * T) / (v * math.sqrt(T))
    d2 = d1 - v * math.sqrt(T)
    dq, dr = math.exp(-q * T), math.exp(-r * T)
    if is_call:
        price = S * dq * norm.cdf(d1) - K * dr * norm.cdf(d2)
        delta = dq * norm.cdf(d1)
        theta = -S * dq * norm.pdf(d1) * v / (2 * math.sqrt(T)) - r * K * dr * norm.cdf(d2) + q * S * dq * norm.cdf(d1)
    else:
        price = K * dr * norm.cdf(-d2) - S * dq * norm.cdf(-d1)
        delta = -dq * norm.cdf(-d1)
        theta = -S * dq * norm.pdf(d1) * v / (2 * math.sqrt(T)) + r * K * dr * norm.cdf(-d2) - q * S * dq * norm.cdf(-d1)
    gamma = dq * norm.pdf(d1) / (S * v * math.sqrt(T))
    vega = S * dq * norm.pdf(d1) * math.sqrt(T) / 100
    return price, delta, gamma, theta / 365, vega


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_iv_and_greeks_are_computed_from_the_mid_where_the_files_lack_them(stripped, fmt):
    market, dirs = stripped
    r, q = 0.05, 0.012
    f = FileMarket(dirs[fmt], fmt, rate=r, dividend_yield=q)
    at = pd.Timestamp("2023-01-04 11:00", tz="America/New_York")
    s = f.snapshot("SPX", at)
    assert len(s) > 100
    quoted = (s.bid > 0) & (s.ask >= s.bid)
    assert np.isnan(s.iv[~quoted]).all() and np.isnan(s.delta[~quoted]).all()  # no mid, no IV
    ok = quoted & np.isfinite(s.iv)
    assert ok.sum() >= 0.9 * quoted.sum()
    t_quote = at + pd.Timedelta(minutes=1)  # quotes are as of the bar's close
    checked = 0
    for i in np.flatnonzero(ok)[::7]:
        exp = pd.Timestamp(s.expiry[i]).date()
        settle = pd.Timestamp(exp).tz_localize("America/New_York") + (
            pd.Timedelta(hours=9, minutes=30) if s.root[i] == "SPX" else pd.Timedelta(hours=16))
        T = (settle - t_quote).total_seconds() / (365 * 86400)
        mid = 0.5 * (s.bid[i] + s.ask[i])
        price, delta, gamma, theta, vega = _bsm(bool(s.is_call[i]), s.underlying_price, s.strike[i], T, r, q, s.iv[i])
        assert abs(price - mid) < 1e-6 * max(1.0, mid), (i, price, mid)
        assert abs(delta - s.delta[i]) < 1e-9 and abs(gamma - s.gamma[i]) < 1e-12
        assert abs(theta - s.theta[i]) < 1e-8 and abs(vega - s.vega[i]) < 1e-9
        checked += 1
    assert checked >= 15
    # near the money the computed delta is the synthetic market's own delta to within the quote's rounding
    m = market.snapshot("SPX", at)
    mm = pd.DataFrame({"d": m.delta}, index=pd.MultiIndex.from_arrays([m.expiry, m.strike, m.is_call]))
    got = pd.Series(s.delta, index=pd.MultiIndex.from_arrays([s.expiry, s.strike, s.is_call]))
    near = (np.abs(got) > 0.2) & (np.abs(got) < 0.8)
    g = FileMarket(dirs[fmt], fmt, rate=0.045, dividend_yield=0.015).snapshot("SPX", at)  # the scenario's r, q
    got = pd.Series(g.delta, index=got.index)[near]
    assert np.abs(got.to_numpy() - mm.loc[got.index, "d"].to_numpy()).max() < 0.01


def test_rate_and_dividend_from_a_file_of_daily_values(stripped, tmp_path):
    _, dirs = stripped
    at = pd.Timestamp("2023-01-04 11:00", tz="America/New_York")
    rates = tmp_path / "rates.csv"
    # 2023-01-04 uses the latest date at or before it: 2023-01-02's 0.052
    rates.write_text("date,value\n2022-12-30,0.040\n2023-01-02,0.052\n2023-01-05,0.090\n")
    divs = tmp_path / "divs.parquet"
    pd.DataFrame({"date": ["2023-01-01"], "value": [0.013]}).to_parquet(divs)
    a = FileMarket(dirs["parquet"], rate=str(rates), dividend_yield=str(divs)).snapshot("SPX", at)
    b = FileMarket(dirs["parquet"], rate=0.052, dividend_yield=0.013).snapshot("SPX", at)
    c = FileMarket(dirs["parquet"], rate=0.090, dividend_yield=0.013).snapshot("SPX", at)
    np.testing.assert_array_equal(a.iv, b.iv)
    np.testing.assert_array_equal(a.delta, b.delta)
    both = np.isfinite(a.iv) & np.isfinite(c.iv)
    assert both.sum() > 100 and np.abs(a.iv[both] - c.iv[both]).min() > 1e-6  # the rate moved every IV
    # a session before the file's first date, and a bad value: one line naming the file
    late = tmp_path / "late.csv"
    late.write_text("date,value\n2023-01-04,0.05\n")
    with pytest.raises(DataError, match=r"late.csv: no data.rate on or before 2023-01-03 \(the file starts 2023-01-04\)"):
        FileMarket(dirs["parquet"], rate=str(late)).snapshot("SPX", pd.Timestamp("2023-01-03 10:00", tz="America/New_York"))
    bad = tmp_path / "bad.csv"
    bad.write_text("date,value\n2023-01-02,0.05\n2023-01-03,4.5%\n")
    with pytest.raises(DataError, match=r"bad.csv: line 3: field 'value' is '4.5%', not a decimal rate"):
        FileMarket(dirs["parquet"], rate=str(bad))


def test_a_backtest_runs_on_files_without_greeks_and_picks_strikes_by_the_computed_delta(stripped, tmp_path):
    from strikebench.api import RunInfo
    from strikebench.engine.runner import build_engine, run_cerebro
    from strikebench.plugin_manager import get_plugin_manager
    from strikebench.report import load_config_text

    _, dirs = stripped
    cfg = f"""
name: nogreeks
data: {{source: files, path: '{dirs["csv"]}', format: csv, max_quote_age_minutes: 30, rate: 0.045}}
broker: {{name: backtest, params: {{initial_cash: 100000}}}}
strategies:
  - name: credit_vertical
    params: {{dte_targets: [1, 2], dte_tolerance: 1, entry_times: ["10:00"], short_deltas: [0.15], side: put, width: 25}}
"""
    pm = get_plugin_manager()
    resolved = load_config_text(cfg, registry=pm.registry)
    market = resolved.data.build().open()
    engine = build_engine(resolved, run=RunInfo(run_id="ng", name="ng", mode="backtest"), market=market)
    run_cerebro(engine)
    assert engine.portfolio.all_trades()
    trades = [d for d in engine.decisions if d.action == "TRADE"]
    assert trades
    for d in trades:
        chosen = d.candidates[d.chosen]
        short_strike = chosen.details["short_strike"]
        exp = np.datetime64(dt.date.fromisoformat(str(chosen.details["expiry"])), "D")
        s = market.snapshot("SPX", pd.Timestamp(d.decided_at))
        puts = ~s.is_call & (s.expiry == exp) & np.isfinite(s.delta) & (s.root == "SPXW")
        # the 0.15-delta put by the delta computed from the mid (checked against the textbook above)
        k = s.strike[puts][np.argmin(np.abs(np.abs(s.delta[puts]) - 0.15))]
        assert short_strike == k
