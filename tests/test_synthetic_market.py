"""The synthetic market's bars, vol indices, events and settlement on a generated year (seed 42).

Stylized facts are checked on the default scenario's 2023 with the tolerances
stated in each test; the figures measured on seed 42 are in docs/synthetic-market.md.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from strikebench.api import Strategy
from strikebench.engine.core import Engine
from strikebench.feeds.synthetic import SyntheticMarket
from strikebench.feeds.synthetic.describe import summary_stats
from strikebench.options.chain import COLUMNS
from strikebench.options.contracts import OptionContract
from strikebench.options.source import MarketData
from strikebench.plugins.commissions import ZeroCommission
from strikebench.plugins.fill_models import MidSlippageFill
from strikebench.testing import ModelMarket

NY = "America/New_York"


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return SyntheticMarket(seed=42, start="2023-01-03", end="2023-12-29", scenario="default")


@pytest.fixture(scope="module")
def daily(market) -> pd.DataFrame:
    return market.daily()


@pytest.fixture(scope="module")
def stats(market) -> dict:
    return summary_stats(market)


# ------------------------------------------------------------------ interface
def test_market_implements_the_market_data_protocol(market):
    assert isinstance(market, MarketData)


# ------------------------------------------------------------------- sessions
def test_bars_follow_real_sessions_labelled_by_bar_start(market):
    spx = market.bars("SPX")
    assert str(spx.index.tz) == NY
    assert len(market.sessions()) == 250  # NYSE 2023
    assert pd.Timestamp("2023-07-04") not in market.sessions()  # Independence Day
    day = spx.loc["2023-03-15"]
    assert len(day) == 390
    assert day.index[0] == pd.Timestamp("2023-03-15 09:30", tz=NY)
    assert day.index[-1] == pd.Timestamp("2023-03-15 15:59", tz=NY)
    early = spx.loc["2023-11-24"]  # day after Thanksgiving closes at 13:00
    assert len(early) == 210 and early.index[-1] == pd.Timestamp("2023-11-24 12:59", tz=NY)
    assert list(spx.columns) == ["open", "high", "low", "close", "volume"]
    assert all(spx[c].dtype == np.float64 for c in spx.columns)


def test_ohlc_bars_are_consistent(market):
    spx = market.bars("SPX")
    assert (spx.high >= spx[["open", "close"]].max(axis=1)).all()
    assert (spx.low <= spx[["open", "close"]].min(axis=1)).all()
    # inside a session each bar opens at the previous close; the first bar opens after the gap
    same_day = spx.index[1:].date == spx.index[:-1].date
    assert np.array_equal(spx.open.to_numpy()[1:][same_day], spx.close.to_numpy()[:-1][same_day])


def test_xsp_is_spx_divided_by_ten_exactly(market):
    spx, xsp = market.bars("SPX"), market.bars("XSP")
    for col in ("open", "high", "low", "close"):
        assert np.allclose(xsp[col].to_numpy() * 10.0, spx[col].to_numpy(), rtol=0, atol=1e-9)


def test_vol_index_bars_exist_alongside(market):
    for sym in ("VIX", "VIX9D", "VX1", "VX2"):
        b = market.bars(sym)
        assert b.index.equals(market.bars("SPX").index)
        assert (b.close > 5).all() and (b.close < 150).all()


def test_intraday_volume_is_u_shaped(market):
    spx = market.bars("SPX")
    t = spx.index.hour * 60 + spx.index.minute
    full = spx.groupby(spx.index.date).size().reindex(spx.index.date).to_numpy() == 390
    v = spx.volume[full]
    t = t[full]
    open_v = v[t < 9 * 60 + 45].mean()
    mid_v = v[(t >= 12 * 60) & (t < 13 * 60)].mean()
    close_v = v[t >= 15 * 60 + 45].mean()
    assert open_v > 1.5 * mid_v and close_v > 1.5 * mid_v


# ----------------------------------------------------------------- determinism
def test_same_seed_gives_identical_bars_and_chains():
    a = SyntheticMarket(seed=11, start="2023-05-01", end="2023-06-30")
    b = SyntheticMarket(seed=11, start="2023-05-01", end="2023-06-30")
    assert a.checksum() == b.checksum()
    at = pd.Timestamp("2023-06-14 14:30", tz=NY)
    assert a.snapshot("SPX", at).checksum == b.snapshot("SPX", at).checksum
    assert a.snapshot("VIX", at).checksum == b.snapshot("VIX", at).checksum


def test_different_seeds_differ():
    a = SyntheticMarket(seed=11, start="2023-05-01", end="2023-06-30")
    c = SyntheticMarket(seed=12, start="2023-05-01", end="2023-06-30")
    assert a.checksum() != c.checksum()
    assert not np.array_equal(a.bars("SPX").close.to_numpy(), c.bars("SPX").close.to_numpy())


# --------------------------------------------------------------- stylized facts
def test_daily_returns_have_fat_tails(stats):
    # Pearson kurtosis above 3 (excess kurtosis above 0), the normal value.
    assert stats["kurtosis"] > 3.0


def test_volatility_clusters(stats):
    # Average autocorrelation of |daily returns| over lags 1..10 is positive (seed 42: ~+0.10).
    assert stats["abs_return_acf_1_10"] > 0.02


def test_vix_moves_against_spx(stats):
    # Target from 1990-2024 data: about -0.7. Tolerance: between -0.85 and -0.6.
    assert -0.85 < stats["corr_dvix_return"] < -0.6


def test_vix_level_is_realistic(stats):
    # Inside the span of real years (yearly VIX means 1991-2025: 11.1 .. 32.7; all-time closing low
    # 9.14); the distribution over seeds is tested in test_synthetic_seeds.py.
    assert 10.0 <= stats["vix_mean"] <= 33.0
    assert stats["vix_min"] > 6.5 and stats["vix_max"] < 90.0


def test_variance_risk_premium(stats):
    # VIX above the subsequently realized 30-day vol on most days (real: ~80-85%), but not always:
    # short premium must be neither free nor hopeless. Tolerance 65%..95%.
    assert 0.65 <= stats["vix_above_realized_30d"] <= 0.95
    assert 0.5 < stats["vix_mean"] - stats["realized_vol_pct"] < 6.0


def test_annualized_realized_vol_is_realistic(stats):
    assert 11.0 < stats["realized_vol_pct"] < 22.0


def test_vix9d_below_vix_when_calm_above_when_stressed(daily):
    calm = daily.vix < daily.vix.median()
    stressed = daily.vix > daily.vix.quantile(0.9)
    assert (daily.vix9d < daily.vix)[calm].mean() >= 0.8
    assert (daily.vix9d > daily.vix)[stressed].mean() >= 0.5


def test_vix_futures_in_contango_on_most_calm_days(daily):
    contango = daily.vx1 > daily.vix
    calm = daily.vix < 20
    assert contango[calm].mean() >= 0.8          # real: ~80-85% of all days
    assert contango.mean() >= 0.45  # real years: ~80-85 % on average, far fewer in 2008
    assert not contango[daily.vix > 25].mean() > 0.5  # backwardation is likely in stress


def test_vix_futures_curve_is_listed_by_expiry(market):
    curve = market.vix_futures(pd.Timestamp("2023-06-01 12:00", tz=NY))
    assert len(curve) >= 6
    assert all(e.weekday() == 2 for e in curve.index)  # Wednesdays (none of 2023's moved)
    assert curve.index.is_monotonic_increasing


def test_day_archetypes_follow_their_probabilities(stats, market):
    counts = stats["archetypes"]
    n = sum(counts.values())
    for name, c in counts.items():
        p = getattr(market.scenario.archetypes, name).probability
        assert abs(c / n - p) < 4 * np.sqrt(p * (1 - p) / n) + 0.01, (name, c, p)


# ---------------------------------------------------------------------- events
def test_fomc_moves_the_14_00_bar_and_crushes_short_dated_vol(market, daily):
    spx = market.bars("SPX")
    bar = spx.index.strftime("%H:%M") == "14:00"
    moves = (np.log(spx.close / spx.open))[bar]
    fomc = daily.index[daily.events.str.contains("fomc")]
    on = np.abs(moves[np.isin(moves.index.normalize().tz_localize(None), fomc)]).mean()
    off = np.abs(moves[~np.isin(moves.index.normalize().tz_localize(None), fomc)]).mean()
    assert on > 2 * off
    day = fomc[0].date()
    before = market.model_values("SPX", pd.Timestamp(f"{day} 13:58", tz=NY))
    after = market.model_values("SPX", pd.Timestamp(f"{day} 14:02", tz=NY))
    e0 = np.datetime64(day, "D")
    atm = lambda df: df[(df.expiry == e0) & df.is_call].atm_total_variance.iloc[0]  # noqa: E731
    assert atm(after) < 0.8 * atm(before)


def test_cpi_moves_the_opening_gap(market, daily):
    gaps = np.abs(np.log(daily.spx_open / daily.spx_close.shift()))
    cpi = daily.events.str.contains("cpi") | daily.events.str.contains("nfp")
    assert gaps[cpi].mean() > 1.3 * gaps[~cpi].mean()


# ------------------------------------------------------------------ settlement
def test_settlement_values(market):
    spx = market.bars("SPX")
    pm = OptionContract.make("SPXW", "2023-03-17", 3900, "C")
    am = OptionContract.make("SPX", "2023-03-17", 3900, "C")
    xsp = OptionContract.make("XSP", "2023-03-17", 390, "P")
    vix = OptionContract.make("VIX", "2023-03-22", 20, "C")
    assert market.settlement_value(pm) == spx.loc["2023-03-17"].close.iloc[-1]
    assert market.settlement_value(am) == spx.loc["2023-03-17"].open.iloc[0]
    assert market.settlement_value(xsp) == pytest.approx(market.settlement_value(pm) / 10, abs=1e-9)
    assert market.settlement_value(vix) == market.bars("VIX").loc["2023-03-22"].open.iloc[0]
    with pytest.raises(ValueError, match="outside the simulated sessions"):
        market.settlement_value(OptionContract.make("SPXW", "2024-03-15", 4000, "C"))


def test_vix_future_converges_to_the_settlement_quotation(market):
    # At its expiry open the futures formula equals the VIX formula (no premium, no convexity):
    p = market.path
    tl = p.timeline
    d = tl.day_index("2023-03-22")
    g = tl.gap_step[d]
    dC30 = tl.clock_after(d, 0.0, 30) - tl.c_open[d]
    ev = p.event_variance(tl.open_ns[d], tl.open_ns[d] + 30 * 86400 * 10**9)
    fut = p.model.vix_future(p.yf[g], p.ys[g], p.eps[g], 0.0, dC30, ev, 0.0)
    assert fut == pytest.approx(p.vix_step[g], rel=1e-12)


# ------------------------------------------------------------ chain requests by root and right
# ctx.chain(roots=..., right=...): only those rows are generated or fetched, and they are exactly the full
# chain's rows (every column, the checksum a decision stores), whether the chain source filters itself (the
# synthetic market) or the engine takes them from the whole snapshot (any other source).


def _rows_of(full, roots, is_call):
    mask = np.ones(len(full), dtype=bool)
    if roots is not None:
        mask &= np.isin(full.root, roots)
    if is_call is not None:
        mask &= full.is_call == is_call
    return full.subset(np.flatnonzero(mask))


def _same(a, b):
    assert len(a) == len(b) > 0
    for name in COLUMNS:
        x, y = getattr(a, name), getattr(b, name)
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name
    assert a.checksum == b.checksum
    assert np.array_equal(a.flags, b.flags)


@pytest.mark.parametrize("roots,is_call", [(["SPXW"], False), (["SPXW"], True), (["SPX"], None),
                                           (["SPX", "SPXW"], False), (None, True)])
def test_the_synthetic_market_lists_only_the_rows_asked_for_exactly_as_in_the_full_chain(market, roots, is_call):
    day = dt.date(2023, 1, 18)
    exps = [e for e in market.listed_expiries("SPX", day) if (e - day).days <= 31]  # SPXW dailies, SPX Feb 17 (AM)
    ats = [pd.Timestamp(f"{day} {t}", tz="America/New_York") for t in ("10:00", "11:00", "15:59")]
    batch = market.snapshots("SPX", ats, exps, roots=roots, is_call=is_call)
    for at, got in zip(ats, batch):
        want = _rows_of(market.snapshot("SPX", at, exps), roots, is_call)
        _same(market.snapshot("SPX", at, exps, roots=roots, is_call=is_call), want)
        _same(got, want)
        assert got.timestamp == want.timestamp and repr(got.timestamp) == repr(want.timestamp)
        assert type(got.underlying_price) is float and got.underlying_price == want.underlying_price
        if roots is not None:
            assert set(np.unique(got.root)) == set(roots)


class _Probe(Strategy):
    name = "chain_probe"

    def __init__(self):
        super().__init__()
        self.seen = []

    def decision_times(self):
        return [dt.time(10, 0)]

    def on_decision_time(self, ctx):
        exps = ctx.expiries()[:3]
        self.seen.append((ctx.chain(expiries=exps), ctx.chain(expiries=exps, roots=["SPXW"], right="P"),
                          ctx.chain(expiries=exps, roots="SPXW")))


@pytest.mark.parametrize("source", ["synthetic (filters itself)", "model market (the engine filters)"])
def test_a_strategy_gets_the_same_rows_whatever_the_source_can_filter(market, source):
    src = market if source.startswith("synthetic") else ModelMarket("2023-01-19", "2023-01-20")
    probe = _Probe()
    engine = Engine(market=src, strategies=[("probe", probe)], fill_model=MidSlippageFill(),
                    commission=ZeroCommission())
    assert engine._source_filters_rows() is source.startswith("synthetic")
    if src is market:  # the year's market: the first session up to its 10:00 decision
        for i in range(35):
            engine.on_bar(i)
    else:
        engine.run_all()
    assert len(probe.seen) >= 1
    for full, puts, spxw in probe.seen:
        _same(puts, _rows_of(full, ["SPXW"], False))
        _same(spxw, _rows_of(full, ["SPXW"], None))


def test_a_wrong_right_is_one_clear_error():
    engine = Engine(market=ModelMarket("2023-01-19", "2023-01-19"), strategies=[], fill_model=MidSlippageFill(),
                    commission=ZeroCommission())
    engine.i = 0
    with pytest.raises(ValueError, match="right must be 'C' or 'P', got 'X'"):
        engine.chain("SPX", None, right="X")


def test_a_many_state_integral_table_summed_grid_point_by_point_equals_cumsum(market):
    """integral_table of many states (a session's minutes) is built grid point by grid point over contiguous rows
    of states and handed back transposed: equal, bit for bit, to the row-by-row table (cumsum along the grid),
    table and E v, for random and extreme states (negative, large, NaN, inf), at and around the threshold, a
    half-day session, and the market's own session tables; every lookup the same."""
    from strikebench.feeds.synthetic import vol

    model = market.path.model
    rng = np.random.default_rng(9)
    cases = []
    for n in (vol._COLUMN_ROWS - 1, vol._COLUMN_ROWS, vol._COLUMN_ROWS + 1, 210, 390, 1000):
        cases.append((rng.normal(0.0, 0.8, n), rng.normal(0.0, 0.8, n)))
    yf, ys = rng.normal(0.0, 3.0, 390), rng.normal(0.0, 3.0, 390)
    yf[:6] = [np.nan, np.inf, -np.inf, 40.0, -40.0, -0.0]
    ys[6:10] = [np.nan, np.inf, -np.inf, 0.0]
    cases.append((yf, ys))
    tl, p = market.path.timeline, market.path
    for d in (0, 17, 123):  # the market's own states
        step = tl.minute_step[tl.day_first_minute[d] + np.arange(tl.n_minutes[d])]
        cases.append((p.yf[step], p.ys[step]))
    saved = vol._COLUMN_ROWS
    try:
        for yf, ys in cases:
            vol._COLUMN_ROWS = saved
            fast = model.integral_table(yf, ys)
            vol._COLUMN_ROWS = 10**9
            rows = model.integral_table(yf, ys)
            for a, b in zip(fast, rows):
                assert a.shape == b.shape == (len(yf), 112)
                assert np.array_equal(a, b, equal_nan=True) and np.array_equal(np.signbit(a), np.signbit(b))
            dC = rng.uniform(0.0, 60.0, (len(yf), 3))
            r = np.broadcast_to(np.arange(len(yf))[:, None], dC.shape)
            with np.errstate(all="ignore"):
                np.testing.assert_array_equal(model.integral_lookup(*fast, dC, r), model.integral_lookup(*rows, dC, r))
    finally:
        vol._COLUMN_ROWS = saved


def test_an_integral_table_of_the_first_grid_points_is_those_columns_of_the_whole_table(market):
    """integral_table(..., points) builds only the grid's first points (a session's leg quotes: as far as its
    farthest series reaches): its columns equal the whole table's, bit for bit, in both summing paths (few and
    many states), for random and extreme states; every lookup of a dC up to the bound lookup_points was given
    (random, on and next to grid points, 0, negative, the last cell, NaN) equals the whole table's lookup; a table
    carried on from one of fewer points (``prior``) equals the whole table's columns too."""
    from strikebench.feeds.synthetic import vol

    model = market.path.model
    rng = np.random.default_rng(21)
    G = len(vol._GRID)
    cases = [(rng.normal(0.0, 0.8, n), rng.normal(0.0, 0.8, n)) for n in (1, 5, vol._COLUMN_ROWS - 1, 390)]
    yf, ys = rng.normal(0.0, 3.0, 390), rng.normal(0.0, 3.0, 390)
    yf[:6] = [np.nan, np.inf, -np.inf, 40.0, -40.0, -0.0]
    ys[6:10] = [np.nan, np.inf, -np.inf, 0.0]
    cases.append((yf, ys))
    tl, p = market.path.timeline, market.path
    step = tl.minute_step[tl.day_first_minute[40] + np.arange(tl.n_minutes[40])]
    cases.append((p.yf[step], p.ys[step]))
    assert model.lookup_points(np.nan) == G and model.lookup_points(1e9) == G and model.lookup_points(-1.0) == 2
    for yf, ys in cases:
        saved, vol._COLUMN_ROWS = vol._COLUMN_ROWS, 10**9
        try:  # the whole table from the row-by-row path (cumsum along the grid)
            whole = model.integral_table(yf, ys)
        finally:
            vol._COLUMN_ROWS = saved
        for top in [0.0, -3.0, 1e-5, vol._GRID[1], vol._GRID[7], np.nextafter(vol._GRID[30], 0), vol._GRID[30],
                    0.8, 6.0, 45.0, vol._GRID[-2], vol._GRID[-1], 900.0] + list(rng.uniform(0, 100, 4)):
            k = model.lookup_points(top)
            part = model.integral_table(yf, ys, k)
            for a, b in zip(part, whole):
                assert a.shape == (len(yf), k)
                assert np.array_equal(a, b[:, :k], equal_nan=True) and np.array_equal(np.signbit(a), np.signbit(b[:, :k]))
            dC = np.concatenate([rng.uniform(0.0, max(top, 0.0), (len(yf), 3)), np.full((len(yf), 1), top),
                                 np.full((len(yf), 1), -1.0), np.full((len(yf), 1), min(top, vol._GRID[k - 2]))], axis=1)
            r = np.broadcast_to(np.arange(len(yf))[:, None], dC.shape)
            with np.errstate(all="ignore"):
                np.testing.assert_array_equal(model.integral_lookup(*part, dC, r), model.integral_lookup(*whole, dC, r))
            for more in (k, k + 1, (k + G) // 2, G):  # carried on from this table to more points
                cont = model.integral_table(yf, ys, more, part)
                for a, b in zip(cont, whole):
                    assert a.shape == (len(yf), min(max(more, 2), G))
                    assert np.array_equal(a, b[:, : a.shape[1]], equal_nan=True)
                    assert np.array_equal(np.signbit(a), np.signbit(b[:, : a.shape[1]]))


def test_a_session_is_found_by_its_date_however_the_day_is_given(market):
    """Timeline.day_index takes a datetime.date as the day itself (no Timestamp made): the index any other way of
    giving the day finds (string, datetime, Timestamp naive or in New York, numpy day); a day that is not a
    session raises KeyError alike."""
    tl = market.path.timeline
    for i in range(tl.n_sim):
        day = tl.dates[i].astype(dt.date)
        assert type(day) is dt.date
        assert tl.day_index(day) == i
        for other in (str(day), dt.datetime(day.year, day.month, day.day, 15, 59), pd.Timestamp(day),
                      pd.Timestamp(f"{day} 09:30", tz="America/New_York"), np.datetime64(day, "D")):
            assert tl.day_index(other) == i
    for day in (dt.date(2023, 1, 1), dt.date(2023, 1, 16), dt.date(1999, 1, 4), dt.date(2030, 1, 2)):
        with pytest.raises(KeyError, match=f"{day} is not a simulated session"):
            tl.day_index(day)
        with pytest.raises(KeyError, match=f"{day} is not a simulated session"):
            tl.day_index(str(day))


def _integral_lookup_by_clip(table, ev, dC, row=None):
    """VarianceModel.integral_lookup as written with np.clip (the reference of its dispatch-free bounds)."""
    from strikebench.feeds.synthetic.vol import _GRID

    dC = np.clip(np.asarray(dC, float), 0.0, _GRID[-1])
    i = np.clip(np.searchsorted(_GRID, dC, side="right") - 1, 0, len(_GRID) - 2)
    if row is None:
        t_i, e_i, e_j = table[..., i], ev[..., i], ev[..., i + 1]
    else:
        t_i, e_i, e_j = table[row, i], ev[row, i], ev[row, i + 1]
    g0 = _GRID[i]
    frac = (dC - g0) / (_GRID[i + 1] - g0)
    h = dC - g0
    return t_i + h * (e_i + 0.5 * frac * (e_j - e_i))


def test_integral_lookups_bound_dC_and_cells_as_np_clip_does(market):
    """integral_lookup and lookup_points bound dC and the grid cell with np.maximum / np.minimum (no np.clip
    dispatch): the same values as the np.clip formula, bit for bit (signs of zero too), for dC negative, -0.0, 0,
    on, next to and between grid points, past the last point, NaN, +-inf; a table of many states (rows per
    element), of one state (no rows, scalar and array dC), a scalar row, and tables holding -0.0, NaN and inf."""
    from strikebench.feeds.synthetic import vol

    model = market.path.model
    rng = np.random.default_rng(8)
    G = vol._GRID
    pts = np.concatenate([G, np.nextafter(G, np.inf), np.nextafter(G, -np.inf), G[:-1] + np.diff(G) / 3])
    dC = np.concatenate([pts, -pts[1:40], [0.0, -0.0, -1e-300, 5e-324, np.nan, np.inf, -np.inf, 400.0, 401.0, 1e300],
                         rng.uniform(0.0, 50.0, 300), rng.uniform(-1.0, 500.0, 300)])
    tl, p = market.path.timeline, market.path
    step = tl.minute_step[tl.day_first_minute[7] + np.arange(tl.n_minutes[7])]
    many = model.integral_table(p.yf[step], p.ys[step])
    one = model.integral_table(p.yf[step[:1]], p.ys[step[:1]])
    # a dC of -0.0 may be bounded to +0.0: the same integral on tables whose first column is +0.0, as every table is
    assert not np.signbit(many[0][:, 0]).any() and not np.signbit(one[0][:, 0]).any()
    odd = tuple(a.copy() for a in one)
    odd[1][0, 5] = np.nan  # a table of any other values: NaN and inf
    odd[0][0, 9] = np.inf
    odd[1][0, 1] = -0.0
    with np.errstate(all="ignore"):
        n = many[0].shape[0]
        d2 = rng.choice(dC, (n, 4))
        rows = np.broadcast_to(np.arange(n)[:, None], d2.shape)
        cases = [(many, d2, rows), (many, d2[:, :1], np.arange(n)[:, None]), (many, dC, 17), (one, dC, None),
                 (one, dC[:, None], None), (odd, dC, None), (odd, dC, 0)]
        cases += [(one, float(x), None) for x in dC[::25]] + [(many, float(x), 3) for x in dC[::40]]
        for (table, ev), d, r in cases:
            got = model.integral_lookup(table, ev, d, r)
            want = _integral_lookup_by_clip(table, ev, d, r)
            assert np.shape(got) == np.shape(want)
            assert np.array_equal(got, want, equal_nan=True) and np.array_equal(np.signbit(got), np.signbit(want))
        for x in dC:
            i = int(np.searchsorted(G, np.clip(float(x), 0.0, G[-1]), side="right")) - 1
            assert model.lookup_points(x) == min(max(i, 0), len(G) - 2) + 2
        # a session's lookups, row k for element k (integral_lookup_rows: gathered by flat position), on tables of
        # many states whole, of the first points and carried on to more (prior), a half day's (210 states), more
        # states than a session's, and (the general path) a table of few states and a dC of another shape
        half = p.yf[step[:210]], p.ys[step[:210]]
        tables = [many, model.integral_table(p.yf[step], p.ys[step], 64), model.integral_table(*half),
                  model.integral_table(p.yf[step], p.ys[step], 80, model.integral_table(p.yf[step], p.ys[step], 64)),
                  model.integral_table(np.tile(p.yf[step], 2), np.tile(p.ys[step], 2)),
                  model.integral_table(p.yf[step[:20]], p.ys[step[:20]])]
        for table, ev in tables:
            n = table.shape[0]
            k = table.shape[1]
            for d in (rng.choice(dC, (n, 1)), np.sort(rng.uniform(0.0, 9.0, n))[::-1, None], np.full((n, 1), np.nan)):
                if k < len(G):  # within the table's points (past them both raise IndexError)
                    d = np.where(np.isnan(d) | (d > G[k - 2]), G[k - 2], d)
                got = model.integral_lookup_rows(table, ev, d)
                want = _integral_lookup_by_clip(table, ev, d, np.arange(n)[:, None])
                assert got.shape == want.shape == (n, 1)
                assert np.array_equal(got, want, equal_nan=True) and np.array_equal(np.signbit(got), np.signbit(want))
            if k < len(G):
                with pytest.raises(IndexError):
                    model.integral_lookup_rows(table, ev, np.full((n, 1), G[k - 1] + 1.0))


def test_a_snapshot_is_stamped_with_its_bar_label_however_the_time_is_asked(market):
    """snapshot() takes the engine's own bar Timestamp as its time (New York, ns, on the minute) and makes one for
    any other way of asking (seconds into the bar, naive, UTC, a string, a datetime): the same stamp every time
    (value, zone, unit, repr)."""
    import datetime as dt

    from strikebench.calendar import NY

    label = pd.Timestamp("2023-03-15 10:00").tz_localize(NY)
    want = pd.Timestamp(label.value, tz="UTC").tz_convert(NY)
    asks = [label, label + pd.Timedelta(seconds=20), label.tz_convert("UTC"), pd.Timestamp("2023-03-15 10:00"),
            "2023-03-15 10:00:59", dt.datetime(2023, 3, 15, 10, 0, 30, tzinfo=NY),
            pd.Timestamp("2023-03-15 10:00", tz="America/New_York")]
    for at in asks:
        s = market.snapshot("XSP", at, market.listed_expiries("XSP", dt.date(2023, 3, 15))[:1])
        ts = s.timestamp
        assert ts == want and ts.value == want.value and ts.tzinfo is want.tzinfo and ts.unit == want.unit, at
        assert repr(ts) == repr(want), at


def test_the_grids_kept_decays_are_the_grids_own_whatever_asks_first(market):
    """VarianceModel keeps the fixed grid's decay terms (as a row and as a column) in two plain attributes, not
    keyed by the grid's id() (ids do not survive a pickle into a worker process): asked as a column first or as a
    row first, after a pickle round trip too, they are the terms computed afresh, bit for bit; E v on the grid is
    the same either way."""
    import pickle

    from strikebench.feeds.synthetic import vol

    fresh = market.path.model._decays_of(vol._GRID)
    for first in (vol._GRID_COL, vol._GRID):
        model = pickle.loads(pickle.dumps(market.path.model))
        model._grid_decays = None
        model._decays(first)
        row, col = model._decays(vol._GRID), model._decays(vol._GRID_COL)
        for a, b, c in zip(row, col, fresh):
            assert a.shape == c.shape and b.shape == c.shape + (1,)
            assert np.array_equal(a, c) and np.array_equal(b[:, 0], c)
        yf, ys = np.array([0.3, -1.2]), np.array([0.1, 0.7])
        assert np.array_equal(model.expected_variance(yf[:, None], ys[:, None], vol._GRID),
                              model.expected_variance(yf[:, None], ys[:, None], vol._GRID, fresh))


def test_minutes_of_a_batch_are_looked_up_as_minute_index_does(market):
    """snapshots() looks its minutes up at once when they are tz-aware Timestamps: the same indices as
    minute_index one by one (seconds into a bar, other zones and units, a bar's last nanosecond), and the same
    error for a time that is not a bar."""
    rng = np.random.default_rng(4)
    ns = market.path.timeline.minute_ns
    picks = ns[rng.integers(0, len(ns), 40)] + rng.integers(0, 60_000_000_000, 40)
    picks[:3] = [ns[0], ns[-1] + 59_999_999_999, ns[5]]
    stamps = [pd.Timestamp(int(v), tz="UTC") for v in picks]
    for ats in (stamps, [s.tz_convert("America/New_York") for s in stamps],
                [s.tz_convert("Asia/Tokyo").as_unit("us") for s in stamps[::3]],
                [s.tz_convert("America/New_York").floor("us").to_pydatetime() for s in stamps[:5]],
                [str(s.tz_convert("America/New_York").tz_localize(None)) for s in stamps[:5]], stamps[:1], []):
        got = market._minute_indices(ats)
        assert got.dtype == np.int64 and got.tolist() == [market.minute_index(a) for a in ats]
    for bad in (pd.Timestamp(int(ns[-1]) + 60_000_000_000, tz="UTC"), pd.Timestamp("2023-01-03 16:00", tz="America/New_York"),
                pd.Timestamp("2023-01-01 10:00", tz="America/New_York")):
        with pytest.raises(ValueError):
            market.minute_index(bad)
        with pytest.raises(ValueError):
            market._minute_indices(stamps[:2] + [bad])


def test_batched_snapshots_are_read_only_and_equal_single_ones(market):
    """Each snapshot of a batch is a read-only view of the batch's blocks and equals the snapshot of its minute."""
    ats = [pd.Timestamp(t, tz="America/New_York") for t in ("2023-03-08 10:00", "2023-03-08 10:15", "2023-03-08 14:59")]
    batch = market.snapshots("XSP", ats, roots=["XSP"])
    for at, b in zip(ats, batch):
        one = market.snapshot("XSP", at, roots=["XSP"])
        for name in (*COLUMNS, "flags", "key"):
            x, y = getattr(b, name), getattr(one, name)
            assert not x.flags.writeable and not y.flags.writeable
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name
        assert b.timestamp == one.timestamp and b.underlying_price == one.underlying_price


def test_snapshots_read_the_sessions_leg_quote_table_as_their_own():
    """A snapshot on a session whose leg quotes built the variance table (every minute, out to the series asked)
    looks its series up in that table when it reaches far enough, else in a table of its own minutes: the same
    quotes, greeks and values as on a market that never quoted a leg, single and batched, near and far expiries."""
    from strikebench.feeds.synthetic import market as M

    shared = SyntheticMarket(seed=42, start="2023-02-01", end="2023-04-28")
    fresh = SyntheticMarket(seed=42, start="2023-02-01", end="2023-04-28")
    taken = []
    chain_table = M.SyntheticMarket._chain_table

    def spy(self, *a):
        got = chain_table(self, *a)
        taken.append(got[0] is not None and self._legs_sessions.get(a[1]) is not None
                     and got[0] is self._legs_sessions[a[1]].table)
        return got

    M.SyntheticMarket._chain_table = spy
    try:
        for day, held_dte in (("2023-02-06", 4), ("2023-03-15", 9), ("2023-04-03", 1)):
            d = pd.Timestamp(day).date()
            expiries = shared.listed_expiries("SPX", d)
            held = [e for e in expiries if (e - d).days >= held_dte][0]
            px = float(shared.bars("SPX")["close"].loc[day].iloc[0])
            leg = OptionContract("SPXW", held, float(round(px / 25) * 25), "P")
            shared.leg_quotes([leg], d)  # the session's table, out to the held series
            ats = [pd.Timestamp(f"{day} {t}", tz="America/New_York") for t in ("09:30", "10:00", "12:31", "15:59")]
            for und, want, roots, is_call in (("SPX", [e for e in expiries if (e - d).days <= held_dte], ["SPXW"], False),
                                              ("SPX", [e for e in expiries if 20 <= (e - d).days <= 40], None, None),
                                              ("XSP", [d], ["XSP"], None), ("SPX", None, None, True)):
                for a, b in ((shared.snapshots(und, ats, want, roots=roots, is_call=is_call),
                              fresh.snapshots(und, ats, want, roots=roots, is_call=is_call)),
                             ([shared.snapshot(und, t, want, roots=roots, is_call=is_call) for t in ats[1:3]],
                              [fresh.snapshot(und, t, want, roots=roots, is_call=is_call) for t in ats[1:3]])):
                    for x, y in zip(a, b):
                        for name in (*COLUMNS, "flags", "key"):
                            u, v = getattr(x, name), getattr(y, name)
                            assert u.dtype == v.dtype and np.array_equal(u, v, equal_nan=u.dtype.kind == "f"), (day, und, name)
    finally:
        M.SyntheticMarket._chain_table = chain_table
    assert any(taken) and not all(taken)  # the shared table read, and a table of its own where it does not reach
