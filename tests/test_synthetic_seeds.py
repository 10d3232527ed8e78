"""The synthetic market for every seed and every range (issue 14).

* Range-stable: a day's minutes, vol indices and chains are the same whatever ``start``/``end``
  is asked for (compared exactly, bit for bit, on overlapping sessions).
* Every seed is a plausible year: the stylized facts of the default scenario's 2023 over 20
  seeds, with tolerances that real SPX/VIX years pass. The real-year figures (1999-2018 SPX
  daily closes, 2014-2018 VIX closes) and the per-seed table are in docs/synthetic-market.md.
* Realistic minutes: one-minute moves beyond 1 % are rare, beyond 2 % absent in the default
  scenario; violent injected events still move their minute.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from strikebench.feeds.synthetic import SyntheticMarket
from strikebench.feeds.synthetic.scenario import scenario_from_text
from strikebench.options.contracts import OptionContract

NY = "America/New_York"
SEEDS = range(1, 21)
YEAR = ("2023-01-03", "2023-12-29")


# ------------------------------------------------------------------ range-stable
def _same_bars(a: SyntheticMarket, b: SyntheticMarket, symbols=("SPX", "VIX", "VIX9D", "VX1", "VX2")) -> None:
    for sym in symbols:
        x, y = a.bars(sym), b.bars(sym)
        common = x.index.intersection(y.index)
        assert len(common) > 0
        xa, ya = x.loc[common].to_numpy(), y.loc[common].to_numpy()
        assert np.array_equal(xa, ya), (sym, int((xa != ya).any(axis=1).sum()), len(common))


@pytest.mark.parametrize("seed", [1, 42, 2024])
def test_overlapping_ranges_give_identical_minutes(seed):
    year = SyntheticMarket(seed=seed, start=YEAR[0], end=YEAR[1])
    for start, end in (("2023-01-03", "2023-01-31"), ("2023-03-01", "2023-05-31"),
                       ("2023-03-15", "2023-03-15"), ("2022-11-01", "2023-02-15"),
                       ("2023-12-01", "2024-03-28")):
        part = SyntheticMarket(seed=seed, start=start, end=end)
        _same_bars(year, part)
        assert part.daily().equals(year.daily().loc[part.sessions()[0]:part.sessions()[-1]]) or \
            part.sessions()[0] < year.sessions()[0] or part.sessions()[-1] > year.sessions()[-1]


def test_first_quarter_is_the_same_whatever_the_end():
    # the issue's own example: Q1 closes with data.end 2023-03-31 vs 2023-12-29
    q1 = SyntheticMarket(seed=42, start="2023-01-03", end="2023-03-31").bars("SPX").close
    full = SyntheticMarket(seed=42, start="2023-01-03", end="2023-12-29").bars("SPX").close
    assert np.array_equal(q1.to_numpy(), full.loc[q1.index].to_numpy())


def test_one_day_has_the_same_chains_and_leg_quotes_as_the_year():
    day = SyntheticMarket(seed=7, start="2023-06-14", end="2023-06-14")
    year = SyntheticMarket(seed=7, start=YEAR[0], end=YEAR[1])
    for hhmm in ("09:30", "14:00", "15:59"):
        at = pd.Timestamp(f"2023-06-14 {hhmm}", tz=NY)
        for und in ("SPX", "XSP", "VIX"):
            assert day.snapshot(und, at).checksum == year.snapshot(und, at).checksum, (und, hhmm)
    assert day.vix_futures(pd.Timestamp("2023-06-14 12:00", tz=NY)).equals(
        year.vix_futures(pd.Timestamp("2023-06-14 12:00", tz=NY)))
    legs = [OptionContract.make("SPXW", "2023-06-16", 4200, "P"), OptionContract.make("SPXW", "2023-06-16", 4300, "C"),
            OptionContract.make("SPX", "2023-07-21", 4000, "P"), OptionContract.make("VIX", "2023-07-19", 20, "C")]
    a, b = day.leg_quotes(legs, "2023-06-14"), year.leg_quotes(legs, "2023-06-14")
    assert np.array_equal(a.bid, b.bid, equal_nan=True) and np.array_equal(a.ask, b.ask, equal_nan=True)


def test_level_is_anchored_not_tied_to_the_first_requested_day():
    a = SyntheticMarket(seed=3, start="2023-01-03", end="2023-01-10")
    b = SyntheticMarket(seed=3, start="2022-06-01", end="2023-01-10")
    assert a.daily().spx_open.iloc[0] == 3850.0  # underlying.start_level at underlying.anchor_date
    assert b.daily().spx_open.loc["2023-01-03"] == 3850.0
    assert b.daily().spx_open.iloc[0] != 3850.0


def test_an_injected_event_changes_only_its_minute_onward():
    sc = scenario_from_text("extends: default\nevents: [{at: '2023-06-14 10:30', move_pct: -2.0, vol_jump: 6}]\n")
    base = SyntheticMarket(seed=5, start="2023-06-01", end="2023-06-30")
    hit = SyntheticMarket(seed=5, start="2023-06-01", end="2023-06-30", scenario=sc)
    cut = pd.Timestamp("2023-06-14 10:30", tz=NY)
    for sym in ("SPX", "VIX"):
        x, y = base.bars(sym), hit.bars(sym)
        assert x.loc[x.index < cut].equals(y.loc[y.index < cut]), sym
        assert not np.array_equal(x.loc[cut:].close.to_numpy(), y.loc[cut:].close.to_numpy()), sym
    # a market asked from after the event still sees the state it left (range-stable)
    later = SyntheticMarket(seed=5, start="2023-06-20", end="2023-06-30", scenario=sc)
    _same_bars(hit, later, ("SPX", "VIX"))


# ------------------------------------------------------------- plausible years
def _facts(m: SyntheticMarket) -> dict:
    d = m.daily()
    r = np.log(d.spx_close).diff().dropna().to_numpy()
    dev = r - r.mean()
    vix = d.vix.to_numpy()
    ar = np.abs(dev)
    rv_next = np.array([r[i:i + 21].std(ddof=1) * math.sqrt(252) * 100 for i in range(len(r) - 20)])
    minute = m.bars("SPX")
    mr = np.abs(np.log(minute.close / minute.open).to_numpy())
    return {
        "realized_vol": r.std(ddof=1) * math.sqrt(252) * 100,
        "excess_kurtosis": float(np.mean(dev ** 4) / np.mean(dev ** 2) ** 2 - 3.0),
        "abs_acf": float(np.mean([np.corrcoef(ar[:-k], ar[k:])[0, 1] for k in range(1, 11)])),
        "corr_dvix_r": float(np.corrcoef(np.diff(vix), r)[0, 1]),
        "vix_mean": float(vix.mean()), "vix_min": float(vix.min()), "vix_max": float(vix.max()),
        "vrp_share": float(np.mean(vix[:len(rv_next)] > rv_next)),
        "contango": float(np.mean(d.vx1 > d.vix)),
        "minute_std_pct": float(np.log(minute.close / minute.open).std() * 100),
        "minutes_over_1pct": int((mr > 0.01).sum()),
        "minutes_over_2pct": int((mr > 0.02).sum()),
    }


@pytest.fixture(scope="module")
def seed_facts() -> pd.DataFrame:
    return pd.DataFrame([_facts(SyntheticMarket(seed=s, start=YEAR[0], end=YEAR[1])) for s in SEEDS], index=list(SEEDS))


def test_every_seed_is_a_plausible_year(seed_facts):
    f = seed_facts
    # Each seed inside the span of real years (SPX 1999-2018: realized vol 6.7..41 %, excess
    # kurtosis -0.2..3.7 with 2020 higher; VIX yearly means 1991-2025: 11.1..32.7; corr -0.74..-0.86).
    assert f.realized_vol.between(6.0, 45.0).all(), f.realized_vol
    assert f.excess_kurtosis.between(-0.5, 12.0).all(), f.excess_kurtosis
    assert f.corr_dvix_r.between(-0.92, -0.6).all(), f.corr_dvix_r
    assert f.vix_mean.between(10.0, 33.0).all(), f.vix_mean
    assert (f.vix_min > 6.5).all() and (f.vix_max < 90).all()
    assert f.vrp_share.between(0.5, 1.0).all(), f.vrp_share
    assert (f.contango >= 0.45).all(), f.contango


def test_the_seeds_spread_like_real_years(seed_facts):
    med = seed_facts.median()
    # real medians: realized vol 16.5 % (1999-2018), excess kurtosis 1.4, |r| ACF(1..10) 0.12,
    # VIX mean 17.5 (1991-2025), corr -0.83 and VRP share 0.77 (2014-2018), contango ~80-85 %
    assert 12.0 <= med.realized_vol <= 19.0
    assert 0.5 <= med.excess_kurtosis <= 4.0
    assert 0.03 <= med.abs_acf <= 0.2
    assert -0.88 <= med.corr_dvix_r <= -0.72
    assert 15.0 <= med.vix_mean <= 21.0
    assert 0.7 <= med.vrp_share <= 0.92
    assert 0.72 <= med.contango <= 0.92
    # VIX above its mean realization: implied minus realized, a few points on average
    assert 1.0 <= (seed_facts.vix_mean - seed_facts.realized_vol).median() <= 6.0
    # not all alike: the calm and the stressed years are both there
    assert seed_facts.vix_mean.min() < 17.0 and seed_facts.vix_mean.max() > 21.0


def test_minute_moves_are_realistic(seed_facts):
    f = seed_facts
    # real one-minute SPX std is about 0.03-0.05 %; a 1 % minute is rare outside crashes and releases
    assert f.minute_std_pct.between(0.02, 0.08).all(), f.minute_std_pct
    assert f.minutes_over_1pct.median() <= 1
    assert (f.minutes_over_1pct[f.vix_max < 30] == 0).all()
    assert (f.minutes_over_2pct == 0).all(), f.minutes_over_2pct
    assert f.minutes_over_1pct.max() <= 15


def test_violent_scenarios_say_so():
    crash = SyntheticMarket(seed=42, start="2023-01-03", end="2023-06-30", scenario="crash")
    spx = crash.bars("SPX")
    mr = np.log(spx.close / spx.open)
    assert mr.min() < -0.01  # the scripted crash-day gap down is one -1.5 % minute


@pytest.mark.parametrize("seed,day", [(3, "2023-02-15"), (11, "2023-08-09"), (19, "2023-11-01")])
def test_sampled_chains_have_put_skew_and_no_static_arbitrage(seed, day):
    m = SyntheticMarket(seed=seed, start=day, end=day)
    at = pd.Timestamp(f"{day} 11:00", tz=NY)
    s = m.snapshot("SPX", at)
    exp = s.nearest_expiry(30, tolerance=5, root="SPXW")
    ivp = s.iv[s.closest_delta(exp, "P", 0.25)]
    ivc = s.iv[s.closest_delta(exp, "C", 0.25)]
    skew = 100 * (ivp - ivc)
    assert 2.0 < skew < 15.0, skew   # real: 25-delta put minus call, several vol points
    mv = m.model_values("SPX", at)
    calls = mv[mv.is_call & (mv.root == "SPXW")]
    for e, g in calls.groupby("expiry"):
        g = g.sort_values("strike")
        k, c = g.strike.to_numpy(), g.mid.to_numpy()
        assert (np.diff(c) <= 1e-9).all()                         # monotone in strike
        slope = np.diff(c) / np.diff(k)
        assert (np.diff(slope) >= -1e-9).all(), e                 # convex (butterflies >= 0)
    atm = calls.groupby("expiry").atm_total_variance.first().sort_index().to_numpy()
    assert (np.diff(atm) >= -1e-12).all()                          # calendar: total variance grows


def test_scenarios_span_a_calm_year_to_a_crisis_year():
    # real yearly VIX means: 2017 11.1, 2013-14 14.2, 2020 29.3, 2008 32.7 (Cboe via macrotrends)
    def med(name, key):
        vals = []
        for s in (1, 2, 3, 4, 5):
            m = SyntheticMarket(seed=s, start=YEAR[0], end=YEAR[1], scenario=name)
            d = m.daily()
            r = np.log(d.spx_close).diff().dropna()
            vals.append({"vix": d.vix.mean(), "rv": r.std() * math.sqrt(252) * 100,
                         "contango": float(np.mean(d.vx1 > d.vix))}[key])
        return float(np.median(vals))
    assert med("calm", "vix") < 14.5 and med("calm", "rv") < 12.0
    assert med("crisis", "vix") > 25.0 and med("crisis", "rv") > 25.0
    assert med("crisis", "contango") < 0.7   # backwardation is common in a crisis year
