"""Synthetic option chains: listings, strike grid, no static arbitrage, quotes, leg quotes, speed."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from strikebench.feeds.synthetic import SyntheticMarket
from strikebench.options.ticks import is_on_tick

NY = "America/New_York"


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return SyntheticMarket(seed=42, start="2023-01-03", end="2023-12-29")


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=NY)


# A quiet morning, the open, a monthly-expiry close, an FOMC afternoon, the high-VIX week.
MOMENTS = ["2023-03-15 10:00", "2023-01-03 09:30", "2023-06-16 15:59", "2023-05-03 14:00", "2023-11-21 11:00"]


@pytest.fixture(scope="module")
def snapshots(market):
    return {m: market.snapshot("SPX", ts(m)) for m in MOMENTS}


# ------------------------------------------------------------------ listings
def test_full_spx_chain_lists_every_daily_to_45_dte_and_am_monthlies(market, snapshots):
    s = snapshots["2023-03-15 10:00"]
    assert len(s) >= 1000
    today = dt.date(2023, 3, 15)
    spxw = {e for e in s.expiries if (s.rows(e, root="SPXW", valid_only=False).size)}
    sessions = [d.date() for d in market.calendar.sessions(today, today + dt.timedelta(days=45))]
    assert spxw == set(sessions)
    am = {e for e in s.expiries if s.rows(e, root="SPX", valid_only=False).size}
    assert dt.date(2023, 3, 17) in am and dt.date(2023, 4, 21) in am
    # AM monthlies stop trading the business day before settlement
    expiry_day = market.snapshot("SPX", ts("2023-03-17 10:00"))
    assert expiry_day.rows(dt.date(2023, 3, 17), root="SPX", valid_only=False).size == 0
    assert expiry_day.rows(dt.date(2023, 3, 17), root="SPXW").size > 0


def test_strikes_sit_on_the_real_grid(snapshots):
    s = snapshots["2023-03-15 10:00"]
    assert np.all(s.strike % 5 == 0)
    near = np.abs(s.strike - s.underlying_price) < 50
    assert np.all(s.strike[near & (s.root == "SPXW")] % 5 == 0)
    # a week out: 5-point strikes near the money, 25 or 100 points apart far from it (the 5-point
    # band follows every open since the series was listed, so "far" is far from all of them)
    k = s.strike[s.rows(dt.date(2023, 3, 22), "P", valid_only=False)]
    dist = np.abs(k - s.underlying_price) / s.underlying_price
    assert np.all(np.diff(k[dist < 0.02]) == 5)
    gaps = np.diff(k)
    assert k[0] % 100 == 0 and gaps[0] == 100 and gaps[1] == 100          # the far wing: 100 points
    assert set(gaps.tolist()) <= {5.0, 25.0, 50.0, 75.0, 100.0} and 25 in gaps  # then 25, then 5
    assert np.all(np.diff(gaps[: np.argmax(gaps == 5)]) <= 0)               # never finer far out
    # 5-point strikes around the money of the 0DTE series
    r = s.rows(dt.date(2023, 3, 15), "C")
    k = s.strike[r]
    near_k = k[np.abs(k - s.underlying_price) < 60]
    assert np.all(np.diff(near_k) == 5)


def test_xsp_and_vix_chains(market):
    at = ts("2023-03-15 10:00")
    x = market.snapshot("XSP", at)
    spx = market.snapshot("SPX", at)
    assert x.underlying_price == pytest.approx(spx.underlying_price / 10, abs=1e-9)
    assert np.all(np.abs(x.strike - np.round(x.strike)) < 1e-9)
    assert is_on_tick(x.bid[x.valid], "XSP").all()
    # XSP is the same model at a tenth of the size: mids agree with SPX/10 within the spreads
    k = round(spx.underlying_price * 0.97 / 50.0) * 50.0  # a put 3 % out, on both grids
    r = spx.find("SPXW", dt.date(2023, 3, 22), False, k)
    rx = x.find("XSP", dt.date(2023, 3, 22), False, k / 10.0)
    assert r is not None and rx is not None
    assert abs(x.mid[rx] * 10 - spx.mid[r]) < (spx.ask[r] - spx.bid[r]) + 10 * (x.ask[rx] - x.bid[rx])
    v = market.snapshot("VIX", at)
    assert len(v) > 100
    assert all(e.weekday() == 2 for e in v.expiries)


def test_vix_options_price_off_the_future_not_spot(market):
    at = ts("2023-06-01 12:00")
    vals = market.model_values("VIX", at)
    curve = market.vix_futures(at)
    e = vals.expiry.iloc[0]
    g = vals[vals.expiry == e]
    fwd = curve[pd.Timestamp(e).date()]
    assert g.forward.iloc[0] == pytest.approx(fwd, abs=0.006)
    k = 20.0
    c = g[(g.strike == k) & g.is_call].iloc[0]
    p = g[(g.strike == k) & ~g.is_call].iloc[0]
    disc = np.exp(-market.scenario.underlying.rate * c.years)
    assert c.mid - p.mid == pytest.approx(disc * (c.forward - k), abs=1e-9)


# ----------------------------------------------------------- no static arbitrage
@pytest.mark.parametrize("moment", MOMENTS)
def test_quotes_are_sane_and_on_tick(snapshots, moment):
    s = snapshots[moment]
    assert np.all(s.bid <= s.ask)
    assert np.all(s.bid >= 0)
    assert is_on_tick(s.bid, "SPX").all() and is_on_tick(s.ask, "SPX").all()
    # zero bids only where the model value is below a tick: far out of the money
    assert s.dropped["crossed"] == 0 and s.dropped["nan"] == 0
    zero = s.bid == 0
    assert s.dropped["zero_bid"] == zero.sum()
    assert np.all(np.abs(s.delta[zero]) < 0.02) and np.all(s.ask[zero] <= 0.50)


@pytest.mark.parametrize("moment", MOMENTS)
def test_call_quotes_are_monotone_and_convex_in_strike(snapshots, moment):
    # Tolerance: mids built from a bid rounded down and an ask rounded up to the 0.10 tick are each
    # within half a tick of the model's; a second difference (1, -2, 1) of three of them is within
    # 4 half ticks = 0.20 (deep in the money, 25 points apart, the wing lists since the first day).
    s = snapshots[moment]
    for e in s.expiries:
        for root in ("SPXW", "SPX"):
            r = s.rows(e, "C", root=root, valid_only=False)
            if r.size < 3:
                continue
            k, mid = s.strike[r], (s.bid[r] + s.ask[r]) / 2
            assert np.all(np.diff(mid) <= 0.10 + 1e-9), (root, e)
            slope = np.diff(mid) / np.diff(k)
            gaps = np.diff(k)
            assert np.all(np.diff(slope) * np.minimum(gaps[1:], gaps[:-1]) >= -0.20 - 1e-9), (root, e)


@pytest.mark.parametrize("moment", MOMENTS)
def test_model_prices_have_no_butterfly_or_calendar_arbitrage(market, moment):
    v = market.model_values("SPX", ts(moment))
    v = v[v.years > 0]
    for (root, e), g in v[v.is_call].groupby(["root", "expiry"]):
        g = g.sort_values("strike")
        k, c = g.strike.to_numpy(), g.mid.to_numpy()
        assert np.all(np.diff(c) <= 1e-9)
        slope = np.diff(c) / np.diff(k)
        assert np.all(np.diff(slope) >= -1e-9 * np.abs(slope[1:]).max() - 1e-12)
    # total implied variance non-decreasing in settlement time at fixed forward moneyness
    grid = np.linspace(-0.08, 0.04, 13)
    rows = []
    for settle, g in v[v.is_call].groupby("settle_ns"):
        kk = np.log(g.strike / g.forward).to_numpy()
        w = (g.iv ** 2 * g.years).to_numpy()
        order = np.argsort(kk)
        inside = (grid >= kk[order][0]) & (grid <= kk[order][-1])
        rows.append(np.where(inside, np.interp(grid, kk[order], w[order]), np.nan))
    total = np.array(rows)
    diffs = np.diff(total, axis=0)
    assert np.all(diffs[np.isfinite(diffs)] >= -1e-9)


def test_put_skew(snapshots):
    s = snapshots["2023-03-15 10:00"]
    for dte in (7, 30):
        e = s.nearest_expiry(dte, tolerance=3, root="SPXW")
        put = s.closest_delta(e, "P", 0.25)
        call = s.closest_delta(e, "C", 0.25)
        assert s.iv[put] > s.iv[call] + 0.02  # several vol points (real: ~4-8)


def test_short_dated_smiles_are_steeper(snapshots):
    s = snapshots["2023-03-15 10:00"]
    def rr(e):
        return s.iv[s.closest_delta(e, "P", 0.25)] - s.iv[s.closest_delta(e, "C", 0.25)]
    assert rr(s.nearest_expiry(1, 1, root="SPXW")) > rr(s.nearest_expiry(30, 3, root="SPXW"))


def test_expiring_series_collapse_to_intrinsic_at_the_close(market):
    s = market.snapshot("SPX", ts("2023-06-16 15:59"))
    settle = market.bars("SPX").loc["2023-06-16"].close.iloc[-1]
    r = s.rows(dt.date(2023, 6, 16), root="SPXW", valid_only=False)
    intrinsic = np.where(s.is_call[r], np.maximum(settle - s.strike[r], 0), np.maximum(s.strike[r] - settle, 0))
    assert np.all(s.bid[r] <= intrinsic + 1e-9) and np.all(s.ask[r] >= intrinsic - 1e-9)


# -------------------------------------------------------------------- spreads
def test_spreads_widen_at_the_open_late_and_with_distance(market):
    s = market.snapshot("SPX", ts("2023-03-15 12:00"))
    e = dt.date(2023, 3, 22)
    atm = s.find("SPXW", e, True, round(s.underlying_price / 5) * 5)
    legs = [s.contract(atm)]
    q = market.leg_quotes(legs, e - dt.timedelta(days=7))
    width = (q.ask - q.bid)[:, 0] / q.mid[:, 0]
    midday = width[150:210].mean()
    assert width[0] > 1.3 * midday        # first minute
    assert width[-1] > 1.2 * midday       # last minute
    # relative spreads are wider out of the money
    r = s.rows(e, "P")
    rel = (s.ask[r] - s.bid[r]) / s.mid[r]
    far = s.delta[r] > -0.1
    near = np.abs(s.delta[r] + 0.5) < 0.1
    assert rel[far].mean() > rel[near].mean()


def test_spreads_widen_with_implied_vol(market):
    def rel_atm(moment):
        s = market.snapshot("SPX", ts(moment))
        e = s.nearest_expiry(7, 3, root="SPXW")
        r = s.closest_delta(e, "C", 0.5)
        return (s.ask[r] - s.bid[r]) / s.mid[r], s.iv[r]
    lo, iv_lo = rel_atm("2023-07-19 12:00")
    hi, iv_hi = rel_atm("2023-11-21 12:00")
    assert iv_hi > iv_lo
    assert hi > lo * 0.9  # wider in absolute terms too, relative to the higher premium


# --------------------------------------------------------------- volume and OI
def test_volume_and_open_interest_are_plausible(snapshots):
    s = snapshots["2023-03-15 10:00"]
    assert np.all(s.open_interest >= 0) and np.all(s.volume >= 0)
    near = np.abs(s.delta) > 0.3
    far = np.abs(s.delta) < 0.03
    assert s.open_interest[near].mean() > 3 * s.open_interest[far].mean()
    # near the money, short-dated series trade more than long-dated ones (their far wings, listed
    # since the series' first day, trade little)
    dte, atm = s.dte, (np.abs(s.delta) > 0.3) & (np.abs(s.delta) < 0.7)
    assert s.volume[atm & (dte <= 2)].mean() > 2 * s.volume[atm & (dte >= 30)].mean()


# -------------------------------------------------------------------- leg quotes
def test_leg_quotes_match_snapshots_exactly(market):
    at = ts("2023-03-15 10:00")
    s = market.snapshot("SPX", at)
    legs = [s.contract(s.closest_delta(dt.date(2023, 3, 22), "P", d)) for d in (0.2, 0.1)]
    legs.append(s.contract(s.closest_delta(dt.date(2023, 3, 17), "C", 0.3)))
    legs.append(s.contract(s.closest_delta(dt.date(2023, 4, 21), "P", 0.25, root="SPX")))
    q = market.leg_quotes(legs, at.date())
    assert q.bid.shape == (390, 4) and q.times.shape == (390,)
    for i in (0, 30, 201, 389):
        snap = market.snapshot("SPX", pd.Timestamp(int(q.times[i]), tz="UTC"))
        rows = [snap.find_contract(c, valid_only=False) for c in legs]
        assert np.array_equal(q.bid[i], snap.bid[rows]) and np.array_equal(q.ask[i], snap.ask[rows])


def _leg_quotes_general(market, contracts, day):
    """leg_quotes as it was before the session's shared columns: series_state and quote_block over
    (minutes x every leg) of each underlying, dead legs masked afterwards (the general path)."""
    from strikebench.feeds.synthetic.chains import quote_block, series_for_contracts, series_state, variance_table

    tl = market.path.timeline
    d = tl.day_index(day)
    n = int(tl.n_minutes[d])
    m = (tl.day_first_minute[d] + np.arange(n))[:, None]
    bid = np.full((n, len(contracts)), np.nan)
    ask = np.full((n, len(contracts)), np.nan)
    if contracts:
        mult, expiring, _ = market._day_mults(d)
        table = variance_table(market, m.ravel())  # the whole grid (leg quotes build the columns they read)
        rows = np.arange(n)[:, None]
        unds = np.array([c.underlying for c in contracts])
        for und in dict.fromkeys(unds):
            cols = np.flatnonzero(unds == und)
            legs = [contracts[i] for i in cols]
            s = series_for_contracts(market.path, legs)
            strike = np.array([c.strike for c in legs], dtype=np.float64)[None, :]
            is_call = np.array([c.is_call for c in legs], dtype=bool)[None, :]
            st = series_state(market, und, m, rows, table, s.settle_ns[None, :], s.c_settle[None, :], s.exp_day[None, :])
            q = quote_block(market, und, m, st, strike, is_call, mult[:, None], expiring[:, None], greeks=False)
            dead = (s.exp_day < d) | (s.is_am & (s.exp_day <= d))
            bid[:, cols] = np.where(dead[None, :], np.nan, q["bid"])
            ask[:, cols] = np.where(dead[None, :], np.nan, q["ask"])
    return tl.minute_ns[m.ravel()], bid, ask


def test_leg_quotes_from_the_sessions_shared_columns_equal_the_general_path():
    """leg_quotes prices each series' legs from columns built once a session (series state, SSVI's phi,
    discount factors, spread multiplier) and skips dead series: bit for bit the quotes of quote_block
    over (minutes x legs), for SPX/XSP/VIX, AM and PM, expiring today (the last minute at settlement),
    settled, expired, several series and underlyings in one call, the same leg twice, asked twice."""
    market = SyntheticMarket(seed=42, start="2023-01-03", end="2023-04-28")
    rng = np.random.default_rng(15)
    days = [dt.date(2023, 1, 3), dt.date(2023, 1, 18), dt.date(2023, 1, 20), dt.date(2023, 2, 15),
            dt.date(2023, 3, 17), dt.date(2023, 4, 6)]
    checked = 0
    for day in days:
        at = pd.Timestamp(f"{day} 10:00", tz=NY)
        pools = {}
        for und in ("SPX", "XSP", "VIX"):
            snap = market.snapshot(und, at, market.listed_expiries(und, day)[:4])
            pools[und] = [snap.contract(int(r)) for r in rng.choice(len(snap), 12, replace=False)]
        sets = [pools["SPX"][:1], pools["SPX"][1:5], pools["XSP"][:2], pools["VIX"][:3],
                pools["SPX"][5:7] + pools["VIX"][3:5] + pools["XSP"][2:4] + pools["SPX"][5:6], []]
        sets += [list(rng.choice(np.array(pools[u], dtype=object), 3)) for u in ("SPX", "XSP", "VIX")]
        later = day + dt.timedelta(days=7)
        while later.weekday() > 4 or later in (dt.date(2023, 4, 7),):
            later += dt.timedelta(days=1)
        for legs in sets:
            for qday in (day, later):
                for _ in range(2):  # the second call reads the session's cached columns
                    q = market.leg_quotes(legs, qday)
                    times, bid, ask = _leg_quotes_general(market, tuple(legs), qday)
                    assert np.array_equal(q.times, times)
                    assert q.bid.shape == bid.shape and q.bid.dtype == bid.dtype
                    assert np.array_equal(q.bid, bid, equal_nan=True) and np.array_equal(q.ask, ask, equal_nan=True)
                    assert np.array_equal(np.signbit(q.bid), np.signbit(bid))
                    checked += int(np.isfinite(bid).sum())
    assert checked > 100_000


def test_leg_quotes_are_nan_once_a_leg_is_settled(market):
    s = market.snapshot("SPX", ts("2023-03-15 10:00"))
    am = s.contract(s.closest_delta(dt.date(2023, 3, 17), "P", 0.2, root="SPX"))
    pm = s.contract(s.closest_delta(dt.date(2023, 3, 15), "P", 0.2, root="SPXW"))
    q = market.leg_quotes([am, pm], dt.date(2023, 3, 17))
    assert np.isnan(q.bid).all()


# ------------------------------------------------------- listings only grow
def _listing(m: SyntheticMarket, und: str, d: int) -> np.ndarray:
    """Every contract listed on session ``d`` as one integer: (root, expiry) series, right, strike."""
    dc = m.day_chain(und, d)
    root = np.searchsorted(np.array(["SPX", "SPXW", "VIX", "XSP"]), dc.root)
    series = root * 100_000 + dc.expiry.astype("datetime64[D]").astype(np.int64)
    return (series * 2 + dc.is_call) * 10**8 + np.round(dc.strike * 1000).astype(np.int64)


def _series(keys: np.ndarray) -> np.ndarray:
    return keys // 10**8 // 2


@pytest.mark.parametrize("und", ["SPX", "XSP", "VIX"])
def test_a_listed_strike_stays_listed_until_its_expiry_whatever_range_is_asked(und):
    """Real strikes stay listed to expiry: every contract of a series listed on one session is
    listed on every later session that still lists the series (a position's legs stay in the
    chain; files exported from this market hold them). A session's listing is the same in a market
    built for a later, shorter range (its look-back starts before that range)."""
    m = SyntheticMarket(seed=42, start="2023-03-01", end="2023-04-28")
    n = m.path.timeline.n_sim
    prev = _listing(m, und, 0)
    for d in range(1, n):
        cur = _listing(m, und, d)
        still = prev[np.isin(_series(prev), _series(cur))]   # series listed on both sessions
        gone = still[~np.isin(still, cur)]
        assert still.size and gone.size == 0, (und, m.path.timeline.dates[d], gone[:3])
        prev = cur
    late = SyntheticMarket(seed=42, start="2023-04-17", end="2023-04-21")
    d_late = late.path.timeline.day_index("2023-04-19")
    np.testing.assert_array_equal(_listing(late, und, d_late), _listing(m, und, m.path.timeline.day_index("2023-04-19")))


def _short_horizons():
    from strikebench.feeds.synthetic.scenario import load_scenario

    sc = load_scenario("default")
    return sc.model_copy(update={"chains": sc.chains.model_copy(
        update={"spxw_max_dte": 0, "spx_monthly_max_dte": 9, "xsp_max_dte": 2})})


@pytest.mark.parametrize("und", ["SPX", "XSP"])
@pytest.mark.parametrize("short", [False, True])
def test_a_listing_from_the_markets_listing_block_equals_the_whole_window(und, short):
    """A market lists SPX / XSP from a block of the next sessions' series, strike hulls (running min / max) and
    ATM levels, and keeps a series' strikes while its hull does not change: every listing equals the one from the
    whole look-back window of that day alone (a market without the kept block), bit for bit, whatever order the
    sessions are asked in (day after day across block ends, a gap, back in time, the same day twice), including
    new series, month-end monthlies, and horizons shorter than a block (0DTE-only dailies)."""
    from strikebench.feeds.synthetic.chains import day_listing

    scenario = _short_horizons() if short else "default"
    fast = SyntheticMarket(seed=11, start="2023-02-01", end="2023-05-31", scenario=scenario)
    whole = SyntheticMarket(seed=11, start="2023-02-01", end="2023-05-31", scenario=scenario)
    whole._strike_hulls = None  # no kept block: the whole window every time
    n = fast.path.timeline.n_sim
    order = list(range(0, 30)) + [45, 46, 44, 44, 70] + list(range(71, n)) + [3, 60, 23, 24, 47, 48]
    for d in order:
        a, b = day_listing(fast, und, d), day_listing(whole, und, d)
        assert len(a.strikes) > 0
        for f in ("strikes", "first", "n", "ranked", "base", "normals", "level"):
            x, y = getattr(a, f), getattr(b, f)
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), (und, d, f)
        for f in ("root", "expiry", "exp_day", "settle_ns", "c_settle", "is_am"):
            x, y = getattr(a.series, f), getattr(b.series, f)
            assert x.dtype == y.dtype and np.array_equal(x, y), (und, d, f)


def test_open_interest_normals_drawn_in_pieces_are_the_whole_draw():
    """ChainNormals draws a chain's normals only as far as its rows reach: in any pieces, the same stream as one
    draw of them all; a chain of a few expiries asked first (its normals partly drawn) has the whole chain's rows."""
    from strikebench.feeds.synthetic.chains import ChainNormals

    key = (42, (17, 19500, 0))
    whole = np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy=42, spawn_key=(17, 19500, 0)))
                                ).standard_normal(5000)
    rng = np.random.default_rng(0)
    for _ in range(20):
        cn = ChainNormals(key, 5000)
        for n in np.sort(rng.integers(0, 5001, 6)).tolist() + [1, 0, 5000, 7000]:
            got = cn.upto(n)
            assert len(got) >= min(n, 5000) and np.array_equal(got, whole[: len(got)])
        assert len(cn.upto(5000)) == 5000
    m1 = SyntheticMarket(seed=42, start="2023-03-01", end="2023-03-31")
    m2 = SyntheticMarket(seed=42, start="2023-03-01", end="2023-03-31")
    for d in (0, 7):
        for und in ("SPX", "XSP"):
            ex = np.unique(m2.day_chain(und, d).expiry)
            for want in (ex[:1], ex[3:5], ex[-1:]):
                part, full = m1.day_chain(und, d, want), m2.day_chain(und, d)
                keep = np.isin(full.expiry, want)
                assert np.array_equal(part.open_interest, full.open_interest[keep])
                assert np.array_equal(part.day_volume, full.day_volume[keep])


def test_minute_multipliers_of_a_session_look_up_its_own_events():
    """minute_multipliers takes the session's events from the path's sorted event steps and keeps the result per
    (length, event positions): every session equals the multipliers from a scan of every event of the path."""
    from strikebench.feeds.synthetic import chains as C

    m = SyntheticMarket(seed=7, start="2022-09-01", end="2022-12-30")
    tl = m.path.timeline
    with_events = 0
    for d in range(tl.n_sim):
        g0 = int(tl.gap_step[d])
        g1 = int(tl.gap_step[d + 1]) if d + 1 < tl.n_sim else 1 << 62
        mine = [e.step - g0 for e in m.path.events if e.step >= 0 and g0 <= e.step < g1]
        with_events += bool(mine)
        want = C._minute_multipliers(m.scenario, int(tl.n_minutes[d]), mine)
        got = C.minute_multipliers(m, d)
        for x, y in zip(got, want):
            assert np.array_equal(x, y) and not x.flags.writeable, d
    assert with_events > 5


@pytest.mark.parametrize("und", ["SPX", "XSP", "VIX"])
def test_a_chain_of_some_expiries_is_exactly_those_rows_of_the_whole_chain(market, und):
    """A request for a few expiries builds only their rows: the same contracts, open interest (its noise is
    drawn over the whole listing) and volume, bit for bit, in the whole chain's order (contract-key order)."""
    from strikebench.options.chain import _factorize_roots, contract_keys

    m = market
    rng = np.random.default_rng(5)
    for d in (0, 41, 170):
        whole = m.day_chain(und, d)
        _, codes = _factorize_roots(whole.root)
        keys = contract_keys(codes, whole.expiry, whole.is_call, whole.strike)
        assert (np.diff(keys) > 0).all()  # contract-key order, no contract twice
        expiries = np.unique(whole.expiry)
        for want in (expiries[:1], expiries[-2:], expiries[rng.random(len(expiries)) < 0.3]):
            part = m.day_chain(und, d, want)
            keep = np.isin(whole.expiry, want)
            assert keep.sum() == len(part.strike) > 0 or len(want) == 0
            for f in ("root", "expiry", "strike", "is_call", "sidx", "open_interest", "day_volume"):
                a, b = getattr(whole, f)[keep], getattr(part, f)
                assert a.dtype == b.dtype and np.array_equal(a, b), (und, d, f)
        assert m.listed_expiries(und, m.path.timeline.dates[d].astype(object)) == [e.item() for e in expiries]


@pytest.mark.parametrize("und", ["SPX", "XSP", "VIX"])
def test_a_chain_of_some_roots_and_one_right_is_exactly_those_rows_of_the_whole_chain(market, und):
    """A request naming roots and calls or puts (with or without expiries) builds only those rows: the same
    contracts and values as the whole chain's rows of them, in the same order."""
    m = market
    rng = np.random.default_rng(11)
    for d in (0, 41, 170):
        whole = m.day_chain(und, d)
        expiries = np.unique(whole.expiry)
        names = sorted(set(whole.root.tolist()))
        for want in (None, expiries[:1], expiries[-2:], expiries[rng.random(len(expiries)) < 0.4], expiries[:0]):
            for roots in (None, names[:1], names[-1:], names, "SPXW", ["NONE"], []):
                for is_call in (None, False, True):
                    if want is None and roots is None and is_call is None:
                        continue
                    part = m.day_chain(und, d, want, roots=roots, is_call=is_call)
                    keep = np.ones(len(whole.strike), dtype=bool)
                    if want is not None:
                        keep &= np.isin(whole.expiry, want)
                    if roots is not None:
                        keep &= np.isin(whole.root, [roots] if isinstance(roots, str) else list(roots))
                    if is_call is not None:
                        keep &= whole.is_call == is_call
                    assert keep.sum() == len(part.strike)
                    for f in ("root", "expiry", "strike", "is_call", "sidx", "open_interest", "day_volume"):
                        a, b = getattr(whole, f)[keep], getattr(part, f)
                        assert a.dtype == b.dtype and np.array_equal(a, b), (und, d, f, roots, is_call)


@pytest.mark.parametrize("und, as_of", [("SPX", None), ("XSP", None), ("VIX", None), ("VIX", dt.date(2022, 6, 1))])
def test_quotes_from_a_value_and_spread_equal_the_general_rounding(und, as_of):
    """_bid_ask (one-direction rounding on the rule looked up once, the rule's tick sizes, np.round written as
    multiply/rint/divide) gives the quotes of the general tick path (both directions, np.round, tick_sizes' own
    lookup): values at and around every tier boundary, zero, tiny, huge, NaN, minutes at settlement."""
    from strikebench.feeds.synthetic import chains as C
    from strikebench.options import ticks as T

    rng = np.random.default_rng(3)
    edges = np.array([0.0, 0.005, 0.01, 0.015, 0.025, 0.05, 0.075, 2.9, 2.95, 2.97, 2.99, 3.0, 3.01, 3.05, 3.1, 1e6, np.nan])
    mid = np.concatenate([rng.uniform(0, 8, 3000), np.round(rng.uniform(0, 8, 3000), 2), edges,
                          np.nextafter(edges, 9), np.nextafter(edges, -1)[1:]])
    mid = np.concatenate([mid, np.abs(mid)[::-1]])[: 2 * (len(mid) // 2)].reshape(2, -1)
    half = np.abs(rng.normal(0, 0.1, mid.shape)) * rng.choice([0.0, 1.0, 0.5], mid.shape)
    rule = T.tick_rule_for(C._TICK_ROOT[und], as_of)
    tick = 0.05 if as_of is not None else C._MIN_TICK[und]  # (VIX before 2022-10-03: nickels)

    def rnd(x, direction):
        with np.errstate(invalid="ignore"):
            return T._out(T._round_cents(rule, T._cents(x)[0], direction, False) / 100.0, False)

    # elementwise live flags, and a session's minutes x legs with whole minutes not live (leg quotes: those rows
    # only are collapsed): the last one, random ones, all, none
    cases = [(mid, half, np.ones(mid.shape, bool)), (mid, half, rng.random(mid.shape) < 0.8)]
    rows = mid.shape[1]
    # (a few settling rows are rounded price by price: the last row, and rows holding the edge values)
    odd = np.flatnonzero(np.isin(mid, edges).any(axis=0) | np.isnan(mid).any(axis=0))
    assert len(odd) > 8
    for dead in ([rows - 1], rng.random(rows) < 0.3, np.ones(rows, bool), [], odd[:4], odd[-8:], odd[:9]):
        live = np.ones((rows, 1), bool)
        live[dead, 0] = False
        cases.append((mid.T.copy(), half.T.copy(), live))
    for mid, half, live in cases:
        with np.errstate(invalid="ignore"):
            bid = rnd(np.maximum(mid - half, 0.0), "down")
            ask = rnd(mid + half, "up")
            bid = np.where((mid >= 1.5 * tick) & (bid < tick), tick, bid)
            _, step = T._tier(rule, np.abs(T._cents(bid)[0]))
            ask = np.maximum(ask, np.round(bid + np.round(step / 100.0, 2), 2))
            bid = np.where(live, bid, rnd(mid, "down"))
            ask = np.where(live, ask, np.maximum(rnd(mid, "up"), tick))
            got = C._bid_ask((C._TICK_ROOT[und], as_of, tick), mid, half.copy(), live, bool(live.all()))
        assert np.array_equal(got[0], bid, equal_nan=True) and np.array_equal(got[1], ask, equal_nan=True)
        assert np.array_equal(np.signbit(got[0]), np.signbit(bid))


@pytest.mark.parametrize("start, pre_2022", [("2022-09-26", True), ("2022-10-03", False)])
def test_vix_quotes_follow_the_tick_rule_in_force_that_day(start, pre_2022):
    """VIX options quoted in nickels below 3.00 and dimes above before 2022-10-03, pennies below 3.00 and nickels
    above since (the rule fills round with, by date): in a snapshot and in a session's leg quotes alike."""
    day = dt.date.fromisoformat(start)
    mk = SyntheticMarket(seed=7, start=day, end=day + dt.timedelta(days=6))
    bar = mk.bars("SPX").index[120]
    snap = mk.snapshot("VIX", bar)
    legs = [snap.contract(i) for i in range(0, len(snap), max(1, len(snap) // 8))]
    lq = mk.leg_quotes(legs, bar.date())
    for prices in (np.r_[snap.bid, snap.ask], np.r_[lq.bid.ravel(), lq.ask.ravel()]):
        prices = prices[np.isfinite(prices)]
        cents = np.round(prices * 100).astype(np.int64)
        low, high = cents[prices < 3.0], cents[prices >= 3.0]
        assert low.size > 50 and high.size > 50
        if pre_2022:
            assert (low % 5 == 0).all() and (high % 10 == 0).all()
        else:
            assert (low % 5 != 0).any() and (high % 5 == 0).all()  # pennies below 3.00 exist, nickels above
