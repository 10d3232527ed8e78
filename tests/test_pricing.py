"""Tests for :mod:`strikebench.pricing` (correctness only; no timing assertions).

Reference values come from QuantLib:

* BSM: ``AnalyticEuropeanEngine`` + ``BlackScholesMertonProcess``.  QuantLib (as
  installed) has no intraday dates, so an option of ``T`` years is priced as an
  exactly equivalent option of ``T' = 1`` year (365 days, Actual/365 Fixed) with
  ``r' = r T``, ``q' = q T`` and ``sigma' = sigma sqrt(T)``: the BSM value depends only on
  ``(S, K, rT, qT, sigma^2 T)``.  The greeks map back exactly as
  ``vega = vega' sqrt(T)``, ``rho = rho' T`` and ``theta = theta' / T``.  A separate test
  checks whole-day maturities with real dates and no rescaling.
* Black-76: ``BlackCalculator(payoff, F, sigma sqrt(T), e^{-rT})`` with
  ``deltaForward``, ``gammaForward``, ``theta(F, T)``, ``vega(T)`` and
  ``rho(T) + dividendRho(T)`` (= -T V, the rho with the forward held fixed).

Units being checked: theta per calendar day (annual / 365), vega per vol point
(/100), rho per 1 % of rate (/100).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from strikebench import pricing as pr

ql = pytest.importorskip("QuantLib")

# every test here fails on any warning (RuntimeWarning from numpy in particular)
pytestmark = pytest.mark.filterwarnings("error")

MINUTE = 1.0 / (365 * 24 * 60)
GRID_T = [MINUTE, 60 * MINUTE, 1 / 365, 7 / 365, 30 / 365, 0.25, 0.5, 1.0, 2.0]
GRID_M = [0.3, 0.5, 0.7, 0.9, 0.97, 1.0, 1.03, 1.1, 1.3, 1.5, 2.0, 3.0]  # strike / spot
GRID_V = [0.05, 0.1, 0.2, 0.5, 1.0, 2.0]
ABS_TOL = 1e-6  # vs QuantLib, price and every greek


# ---------------------------------------------------------------------------
# QuantLib references
# ---------------------------------------------------------------------------

_TODAY = ql.Date(15, 1, 2024)
_DC = ql.Actual365Fixed()


def _ql_option(is_call, S, K, T_days, r, q, v):
    ql.Settings.instance().evaluationDate = _TODAY
    rts = ql.YieldTermStructureHandle(ql.FlatForward(_TODAY, r, _DC, ql.Continuous))
    qts = ql.YieldTermStructureHandle(ql.FlatForward(_TODAY, q, _DC, ql.Continuous))
    vts = ql.BlackVolTermStructureHandle(ql.BlackConstantVol(_TODAY, ql.NullCalendar(), v, _DC))
    process = ql.BlackScholesMertonProcess(ql.QuoteHandle(ql.SimpleQuote(S)), qts, rts, vts)
    payoff = ql.PlainVanillaPayoff(ql.Option.Call if is_call else ql.Option.Put, K)
    option = ql.VanillaOption(payoff, ql.EuropeanExercise(_TODAY + T_days))
    option.setPricingEngine(ql.AnalyticEuropeanEngine(process))
    return option


def ql_bsm(is_call, S, K, T, r, q, v):
    """QuantLib BSM price and greeks in this module's units, for any T (rescaled to 1y)."""
    o = _ql_option(is_call, S, K, 365, r * T, q * T, v * math.sqrt(T))
    return (
        o.NPV(),
        o.delta(),
        o.gamma(),
        o.theta() / T / 365.0,
        o.vega() * math.sqrt(T) / 100.0,
        o.rho() * T / 100.0,
    )


def ql_bsm_dates(is_call, S, K, days, r, q, v):
    """QuantLib BSM with a real whole-day maturity (no rescaling)."""
    o = _ql_option(is_call, S, K, days, r, q, v)
    return (o.NPV(), o.delta(), o.gamma(), o.theta() / 365.0, o.vega() / 100.0, o.rho() / 100.0)


def ql_black76(is_call, F, K, T, r, v):
    payoff = ql.PlainVanillaPayoff(ql.Option.Call if is_call else ql.Option.Put, K)
    bc = ql.BlackCalculator(payoff, F, v * math.sqrt(T), math.exp(-r * T))
    return (
        bc.value(),
        bc.deltaForward(),
        bc.gammaForward(),
        bc.theta(F, T) / 365.0,
        bc.vega(T) / 100.0,
        (bc.rho(T) + bc.dividendRho(T)) / 100.0,
    )


def _assert_greeks_close(ours: pr.Greeks, ref: np.ndarray, inputs: np.ndarray, tol=ABS_TOL):
    for k, name in enumerate(pr.Greeks._fields):
        err = np.abs(np.asarray(ours[k]) - ref[:, k])
        i = int(np.argmax(err))
        assert err[i] <= tol, f"{name}: |diff|={err[i]:.3g} at inputs {inputs[i]} ours={ours[k][i]} ql={ref[i, k]}"


# ---------------------------------------------------------------------------
# textbook values
# ---------------------------------------------------------------------------


def test_hull_textbook_bsm():
    # Hull, Options Futures and Other Derivatives: S=42, K=40, r=10%, T=0.5, sigma=20%
    call = pr.bsm(True, 42.0, 40.0, 0.5, 0.10, 0.0, 0.20)
    put = pr.bsm(False, 42.0, 40.0, 0.5, 0.10, 0.0, 0.20)
    assert round(float(call.price), 2) == 4.76
    assert round(float(put.price), 2) == 0.81
    # d1 = 0.7693, d2 = 0.6278 -> N(d1) = 0.7791
    assert float(call.delta) == pytest.approx(0.7791, abs=1e-4)
    assert float(put.delta) == pytest.approx(0.7791 - 1.0, abs=1e-4)
    assert float(pr.bsm_price(True, 42.0, 40.0, 0.5, 0.10, 0.0, 0.20)) == pytest.approx(4.7594, abs=1e-4)


def test_hull_textbook_black76():
    # Hull: futures put, F=20, K=20, r=9%, T=4 months, sigma=25% -> 1.12 (call = put at the money)
    put = float(pr.black76_price(False, 20.0, 20.0, 4 / 12, 0.09, 0.25))
    call = float(pr.black76_price(True, 20.0, 20.0, 4 / 12, 0.09, 0.25))
    assert round(put, 2) == 1.12
    assert call == pytest.approx(put, abs=1e-12)


# ---------------------------------------------------------------------------
# QuantLib grids
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("spot", [100.0, 5000.0])
def test_bsm_matches_quantlib_grid(spot):
    rows, refs = [], []
    for T, m, v, r, q, c in itertools.product(GRID_T, GRID_M, GRID_V, [0.0, 0.05], [0.0, 0.03], [True, False]):
        rows.append((c, spot, spot * m, T, r, q, v))
        refs.append(ql_bsm(c, spot, spot * m, T, r, q, v))
    a, ref = np.array(rows, dtype=float), np.array(refs)
    ours = pr.bsm(a[:, 0].astype(bool), a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5], a[:, 6])
    _assert_greeks_close(ours, ref, a)
    price_only = pr.bsm_price(a[:, 0].astype(bool), a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5], a[:, 6])
    np.testing.assert_allclose(price_only, ours.price, rtol=1e-13, atol=1e-12)


def test_bsm_matches_quantlib_with_real_dates():
    rows, refs = [], []
    for days, m, v, c in itertools.product([1, 7, 30, 91, 365, 730], [0.5, 0.9, 1.0, 1.1, 1.5], [0.05, 0.3, 2.0], [True, False]):
        rows.append((c, 100.0, 100.0 * m, days / 365.0, 0.045, 0.015, v))
        refs.append(ql_bsm_dates(c, 100.0, 100.0 * m, days, 0.045, 0.015, v))
    a, ref = np.array(rows, dtype=float), np.array(refs)
    ours = pr.bsm(a[:, 0].astype(bool), a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5], a[:, 6])
    _assert_greeks_close(ours, ref, a)


@pytest.mark.parametrize("forward", [20.0, 100.0])
def test_black76_matches_quantlib_grid(forward):
    rows, refs = [], []
    for T, m, v, r, c in itertools.product(GRID_T, GRID_M, GRID_V, [0.0, 0.05], [True, False]):
        rows.append((c, forward, forward * m, T, r, v))
        refs.append(ql_black76(c, forward, forward * m, T, r, v))
    a, ref = np.array(rows, dtype=float), np.array(refs)
    ours = pr.black76(a[:, 0].astype(bool), a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5])
    _assert_greeks_close(ours, ref, a)
    price_only = pr.black76_price(a[:, 0].astype(bool), a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5])
    np.testing.assert_allclose(price_only, ours.price, rtol=1e-13, atol=1e-12)


def test_greek_units_by_finite_differences():
    """Units sanity independent of QuantLib: theta/day, vega/vol point, rho/1 %."""
    S, K, T, r, q, v = 100.0, 105.0, 0.4, 0.03, 0.01, 0.25
    for c in (True, False):
        g = pr.bsm(c, S, K, T, r, q, v)
        f = lambda **kw: float(pr.bsm_price(c, kw.get("S", S), K, kw.get("T", T), kw.get("r", r), q, kw.get("v", v)))
        h = 1e-5
        assert float(g.delta) == pytest.approx((f(S=S + h) - f(S=S - h)) / (2 * h), abs=1e-7)
        assert float(g.gamma) == pytest.approx((f(S=S + 1e-3) - 2 * f() + f(S=S - 1e-3)) / 1e-6, abs=1e-5)
        one_day = 1 / 365
        assert float(g.theta) == pytest.approx(-(f(T=T + h) - f(T=T - h)) / (2 * h) * one_day, abs=1e-8)
        assert float(g.vega) == pytest.approx((f(v=v + h) - f(v=v - h)) / (2 * h) * 0.01, abs=1e-8)
        assert float(g.rho) == pytest.approx((f(r=r + h) - f(r=r - h)) / (2 * h) * 0.01, abs=1e-8)
    assert float(pr.bsm(True, S, K, T, r, q, v).theta) < 0.0  # long options decay


# ---------------------------------------------------------------------------
# parity
# ---------------------------------------------------------------------------


def _random_book(n, seed=0):
    rng = np.random.default_rng(seed)
    S = rng.choice([10.0, 100.0, 4500.0], n)
    K = S * np.exp(rng.uniform(-1.0, 1.0, n))  # moneyness ~0.37 .. 2.7
    T = np.exp(rng.uniform(math.log(MINUTE), math.log(2.0), n))
    v = np.exp(rng.uniform(math.log(0.05), math.log(2.0), n))
    r = rng.uniform(-0.01, 0.08, n)
    q = rng.uniform(0.0, 0.05, n)
    c = rng.random(n) < 0.5
    return c, S, K, T, r, q, v


def test_put_call_parity_bsm():
    _, S, K, T, r, q, v = _random_book(200_000, seed=1)
    call = pr.bsm_price(True, S, K, T, r, q, v)
    put = pr.bsm_price(False, S, K, T, r, q, v)
    parity = S * np.exp(-q * T) - K * np.exp(-r * T)
    assert np.max(np.abs(call - put - parity) / S) <= 1e-9
    gc, gp = pr.bsm(True, S, K, T, r, q, v), pr.bsm(False, S, K, T, r, q, v)
    assert np.max(np.abs(gc.delta - gp.delta - np.exp(-q * T))) <= 1e-9
    np.testing.assert_allclose(gc.gamma, gp.gamma, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(gc.vega, gp.vega, rtol=1e-12, atol=1e-15)


def test_put_call_parity_black76():
    _, F, K, T, r, _q, v = _random_book(100_000, seed=2)
    call = pr.black76_price(True, F, K, T, r, v)
    put = pr.black76_price(False, F, K, T, r, v)
    parity = np.exp(-r * T) * (F - K)
    assert np.max(np.abs(call - put - parity) / F) <= 1e-9


# ---------------------------------------------------------------------------
# implied volatility
# ---------------------------------------------------------------------------

# Round-trip rule: wherever vega per unit of vol (dV/dsigma) exceeds 1e-4 * spot, the
# price determines the vol to far better than 1e-8 in double precision, and the
# recovered vol must match the input within 1e-8 absolute.  Below that, the price
# only has to be reproduced (|repriced - price| <= 1e-9 * spot) when the reason is "ok".
IV_TOL = 1e-8
VEGA_FLOOR = 1e-4  # times spot, per unit vol


def _check_round_trip(model, c, S, K, T, r, q, v):
    if model == "bsm":
        g = pr.bsm(c, S, K, T, r, q, v)
        reprice = lambda vol: pr.bsm_price(c, S, K, T, r, q, vol)
    else:
        g = pr.black76(c, S, K, T, r, v)
        reprice = lambda vol: pr.black76_price(c, S, K, T, r, vol)
    iv = pr.implied_vol(g.price, c, S, K, T, r, q, model=model)
    reasons = pr.implied_vol_reasons(g.price, c, S, K, T, r, q, model=model)
    # NaN exactly where the reason is not "ok"
    np.testing.assert_array_equal(np.isnan(iv), reasons != "ok")
    sel = g.vega * 100.0 > VEGA_FLOOR * S
    assert sel.sum() > 0.2 * sel.size
    assert np.all(reasons[sel] == "ok")
    err = np.abs(iv[sel] - v[sel])
    assert err.max() <= IV_TOL, f"max vol error {err.max()}"
    ok = reasons == "ok"
    assert np.max(np.abs(reprice(iv)[ok] - g.price[ok]) / S[ok]) <= 1e-9
    assert np.all(iv[ok] > 0.0)


def test_iv_round_trip_bsm_random():
    _check_round_trip("bsm", *_random_book(300_000, seed=3))


def test_iv_round_trip_black76_random():
    _check_round_trip("black76", *_random_book(200_000, seed=4))


def test_iv_round_trip_bsm_grid():
    rows = np.array(list(itertools.product([True, False], [100.0], [m * 100 for m in GRID_M], GRID_T,
                                           [0.0, 0.05], [0.0, 0.03], GRID_V)), dtype=float)
    c, S, K, T, r, q, v = rows.T
    _check_round_trip("bsm", c.astype(bool), S, K, T, r, q, v)


def test_iv_high_vol_and_tiny_time_values():
    # very high vol (price close to the upper bound) and far OTM tiny prices
    S, T, r, q = 100.0, 1.0, 0.02, 0.0
    K = np.array([100.0, 50.0, 200.0, 400.0, 25.0])
    for v in (3.0, 5.0):
        price = pr.bsm_price(True, S, K, T, r, q, v)
        np.testing.assert_allclose(pr.implied_vol(price, True, S, K, T, r, q), v, rtol=1e-9)
    price = pr.bsm_price(True, S, 400.0, 0.05, 0.0, 0.0, 0.2)  # ~1e-70
    assert 0.0 < price < 1e-50
    assert float(pr.implied_vol(price, True, S, 400.0, 0.05, 0.0, 0.0)) == pytest.approx(0.2, rel=1e-9)


def test_iv_black76_ignores_div_yield():
    args = (3.1, True, 20.0, 22.0, 0.2, 0.04)
    a = pr.implied_vol(*args, 0.0, model="black76")
    b = pr.implied_vol(*args, 0.35, model="black76")
    assert float(a) == float(b)
    assert float(pr.black76_price(True, 20.0, 22.0, 0.2, 0.04, a)) == pytest.approx(3.1, abs=1e-12)


@pytest.mark.parametrize(
    "price, is_call, spot, strike, years, code",
    [
        (5.0, True, 100.0, 100.0, 0.5, "ok"),
        (3.0, False, 100.0, 100.0, 0.5, "ok"),
        (0.5, True, 100.0, 50.0, 0.5, "below_intrinsic"),  # intrinsic ~ 50
        (0.5, False, 50.0, 100.0, 0.5, "below_intrinsic"),
        (150.0, True, 100.0, 100.0, 0.5, "above_upper_bound"),  # call <= S e^{-qT}
        (99.9, False, 100.0, 100.0, 0.5, "above_upper_bound"),  # put <= K e^{-rT} ~ 97.5
        (5.0, True, 100.0, 100.0, 0.0, "expired"),
        (5.0, True, 100.0, 100.0, -0.01, "expired"),
        (0.0, True, 100.0, 100.0, 0.5, "nonpositive_price"),
        (-1.0, False, 100.0, 100.0, 0.5, "nonpositive_price"),
        (np.nan, True, 100.0, 100.0, 0.5, "nan_input"),
        (5.0, True, np.nan, 100.0, 0.5, "nan_input"),
        (5.0, True, 100.0, np.nan, 0.5, "nan_input"),
        (5.0, True, 100.0, 100.0, np.nan, "nan_input"),
        (5.0, True, 100.0, -100.0, 0.5, "nan_input"),  # non-positive strike counts as invalid input
        (5.0, True, np.inf, 100.0, 0.5, "nan_input"),
    ],
)
def test_iv_reasons(price, is_call, spot, strike, years, code):
    r, q = 0.05, 0.0
    reason = pr.implied_vol_reasons(price, is_call, spot, strike, years, r, q)
    assert isinstance(reason, np.ndarray) and reason.shape == ()
    assert str(reason) == code
    iv = pr.implied_vol(price, is_call, spot, strike, years, r, q)
    assert isinstance(iv, np.ndarray) and iv.shape == ()
    assert np.isnan(iv) == (code != "ok")


def test_iv_reasons_rate_and_div_nan():
    assert str(pr.implied_vol_reasons(5.0, True, 100.0, 100.0, 0.5, np.nan, 0.0)) == "nan_input"
    assert str(pr.implied_vol_reasons(5.0, True, 100.0, 100.0, 0.5, 0.0, np.nan)) == "nan_input"
    # Black-76 ignores div_yield entirely, even NaN
    assert str(pr.implied_vol_reasons(5.0, True, 100.0, 100.0, 0.5, 0.0, np.nan, model="black76")) == "ok"


def test_iv_reason_codes_are_documented_set_and_never_raise():
    rng = np.random.default_rng(5)
    n = 50_000
    junk = [np.nan, np.inf, -np.inf, 0.0, -1.0, 1e-300, 1e300]
    def col(lo, hi):
        a = rng.uniform(lo, hi, n)
        m = rng.random(n) < 0.05
        a[m] = rng.choice(junk, m.sum())
        return a
    price, S, K, T = col(0.0, 60.0), col(50.0, 150.0), col(50.0, 150.0), col(-0.1, 2.0)
    r, q, c = col(-0.02, 0.1), col(0.0, 0.05), rng.random(n) < 0.5
    reasons = pr.implied_vol_reasons(price, c, S, K, T, r, q)
    iv = pr.implied_vol(price, c, S, K, T, r, q)
    assert set(np.unique(reasons)) <= set(pr.REASON_CODES)
    assert len(set(np.unique(reasons))) == len(pr.REASON_CODES)  # every code occurs here
    np.testing.assert_array_equal(np.isnan(iv), reasons != "ok")
    assert np.all(iv[reasons == "ok"] > 0.0)
    with pytest.raises(ValueError):
        pr.implied_vol(1.0, True, 100.0, 100.0, 1.0, 0.0, 0.0, model="heston")


# ---------------------------------------------------------------------------
# shapes, scalars, inputs
# ---------------------------------------------------------------------------


def test_scalar_inputs_give_0d_arrays():
    g = pr.bsm(True, 100.0, 100.0, 0.5, 0.01, 0.0, 0.2)
    for x in g:
        assert isinstance(x, np.ndarray) and x.shape == () and x.dtype == np.float64
    for x in pr.black76(False, 100, 90, 1, 0.01, 0.3):
        assert isinstance(x, np.ndarray) and x.shape == ()
    assert pr.bsm_price(True, 100, 100, 0.5, 0.01, 0.0, 0.2).shape == ()
    assert pr.black76_price(True, 100, 100, 0.5, 0.01, 0.2).shape == ()
    assert isinstance(float(g.price), float)


def test_broadcasting_shapes():
    strikes = np.array([[90.0], [100.0], [110.0]])  # (3, 1)
    years = np.array([0.1, 0.5, 1.0, 2.0])  # (4,)
    is_call = np.array([True, False, True, False])  # (4,)
    g = pr.bsm(is_call, 100.0, strikes, years, 0.03, 0.01, 0.25)
    for x in g:
        assert x.shape == (3, 4)
    assert pr.bsm_price(is_call, 100.0, strikes, years, 0.03, 0.01, 0.25).shape == (3, 4)
    assert pr.black76(True, [100.0, 101.0], strikes, 0.5, 0.03, 0.25).price.shape == (3, 2)
    iv = pr.implied_vol(g.price, is_call, 100.0, strikes, years, 0.03, 0.01)
    assert iv.shape == (3, 4)
    np.testing.assert_allclose(iv, 0.25, atol=1e-10)
    assert pr.implied_vol_reasons(g.price, is_call, 100.0, strikes, years, 0.03, 0.01).shape == (3, 4)
    # element-wise equal to scalar calls
    for i, j in itertools.product(range(3), range(4)):
        gs = pr.bsm(bool(is_call[j]), 100.0, float(strikes[i, 0]), float(years[j]), 0.03, 0.01, 0.25)
        for k in range(6):
            assert g[k][i, j] == pytest.approx(float(gs[k]), rel=1e-13, abs=1e-15)
    # python lists and integer is_call are accepted
    lst = pr.bsm([1, 0], [100, 100], [95, 105], [0.5, 0.5], 0.0, 0.0, [0.2, 0.2])
    assert lst.price.shape == (2,) and lst.delta[0] > 0 > lst.delta[1]


def test_large_inputs_processed_in_blocks_match_small_ones():
    # larger than the internal block size, with partial broadcasting (2-D)
    rng = np.random.default_rng(6)
    K = rng.uniform(60, 140, (230, 1))
    T = rng.uniform(0.0, 1.5, (1, 170))  # includes a few expired-ish tiny values
    T[0, :5] = [0.0, -1.0, MINUTE, 1e-12, 2.0]
    v = rng.uniform(0.0, 1.0, (230, 170))
    v[:3] = 0.0
    c = rng.random((1, 170)) < 0.5
    g = pr.bsm(c, 100.0, K, T, 0.02, 0.01, v)
    assert g.price.shape == (230, 170)
    rows = [7, 0, 1, 2, 229]
    for i in rows:
        gi = pr.bsm(c[0], 100.0, K[i], T[0], 0.02, 0.01, v[i])  # small call, no blocking
        for k in range(6):
            np.testing.assert_array_equal(g[k][i], gi[k])
        iv_full = pr.implied_vol(g.price, c, 100.0, K, T, 0.02, 0.01)
        iv_row = pr.implied_vol(g.price[i], c[0], 100.0, K[i], T[0], 0.02, 0.01)
        np.testing.assert_array_equal(iv_full[i], iv_row)
    reasons = pr.implied_vol_reasons(g.price, c, 100.0, K, T, 0.02, 0.01)
    assert reasons.shape == (230, 170)
    np.testing.assert_array_equal(np.isnan(iv_full), reasons != "ok")


def test_inputs_are_not_modified():
    c, S, K, T, r, q, v = _random_book(40_000, seed=7)
    copies = [a.copy() for a in (c, S, K, T, r, q, v)]
    g = pr.bsm(c, S, K, T, r, q, v)
    pr.bsm_price(c, S, K, T, r, q, v)
    pr.black76(c, S, K, T, r, v)
    price = g.price.copy()
    pr.implied_vol(price, c, S, K, T, r, q)
    pr.implied_vol_reasons(price, c, S, K, T, r, q)
    for a, b in zip((c, S, K, T, r, q, v), copies):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(price, g.price)


def test_mixed_call_put_array_matches_separate_calls():
    c, S, K, T, r, q, v = _random_book(20_000, seed=8)
    g = pr.bsm(c, S, K, T, r, q, v)
    gc, gp = pr.bsm(True, S, K, T, r, q, v), pr.bsm(False, S, K, T, r, q, v)
    for k in range(6):
        np.testing.assert_array_equal(g[k], np.where(c, gc[k], gp[k]))


# ---------------------------------------------------------------------------
# edge cases
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("years", [0.0, -0.5])
def test_expired_options(years):
    S = 100.0
    K = np.array([80.0, 100.0, 120.0])
    for model in ("bsm", "black76"):
        if model == "bsm":
            gc = pr.bsm(True, S, K, years, 0.05, 0.02, 0.3)
            gp = pr.bsm(False, S, K, years, 0.05, 0.02, 0.3)
        else:
            gc = pr.black76(True, S, K, years, 0.05, 0.3)
            gp = pr.black76(False, S, K, years, 0.05, 0.3)
        np.testing.assert_array_equal(gc.price, [20.0, 0.0, 0.0])  # undiscounted intrinsic
        np.testing.assert_array_equal(gp.price, [0.0, 0.0, 20.0])
        np.testing.assert_array_equal(gc.delta, [1.0, 0.0, 0.0])
        np.testing.assert_array_equal(gp.delta, [0.0, 0.0, -1.0])
        for g in (gc, gp):
            for x in (g.gamma, g.theta, g.vega, g.rho):
                np.testing.assert_array_equal(x, 0.0)
    assert np.all(pr.bsm_price([True, False], S, 110.0, years, 0.05, 0.0, [0.3, np.inf]) == [0.0, 10.0])


def test_expired_with_nan_vol_is_still_intrinsic():
    g = pr.bsm(True, 100.0, 90.0, 0.0, 0.05, 0.0, np.nan)
    assert float(g.price) == 10.0 and float(g.delta) == 1.0 and float(g.vega) == 0.0


def test_one_minute_options_are_finite():
    K = np.linspace(50, 150, 201)
    g = pr.bsm(True, 100.0, K, MINUTE, 0.05, 0.01, 0.05)
    for x in g:
        assert np.all(np.isfinite(x))
    assert float(g.gamma[100]) > 10.0  # ATM gamma explodes near expiry (but stays finite)


def test_zero_vol_is_discounted_forward_intrinsic():
    S, T, r, q = 100.0, 0.5, 0.05, 0.02
    K = np.array([80.0, 120.0])
    fw, kd = S * math.exp(-q * T), K * math.exp(-r * T)
    for vol in (0.0, -0.1):
        gc = pr.bsm(True, S, K, T, r, q, vol)
        gp = pr.bsm(False, S, K, T, r, q, vol)
        np.testing.assert_allclose(gc.price, np.maximum(fw - kd, 0.0), rtol=1e-15)
        np.testing.assert_allclose(gp.price, np.maximum(kd - fw, 0.0), rtol=1e-15)
        np.testing.assert_allclose(gc.delta, [math.exp(-q * T), 0.0], rtol=1e-15)
        np.testing.assert_allclose(gp.delta, [0.0, -math.exp(-q * T)], rtol=1e-15)
        for g in (gc, gp):
            np.testing.assert_array_equal(g.gamma, 0.0)
            np.testing.assert_array_equal(g.vega, 0.0)
        # theta and rho are the continuous zero-vol limits of the analytic greeks
        tiny = pr.bsm([True, False], S, [80.0, 120.0], T, r, q, 1e-6)
        lim_c, lim_p = pr.bsm(True, S, 80.0, T, r, q, vol), pr.bsm(False, S, 120.0, T, r, q, vol)
        assert float(lim_c.theta) == pytest.approx(tiny.theta[0], abs=1e-12)
        assert float(lim_p.theta) == pytest.approx(tiny.theta[1], abs=1e-12)
        assert float(lim_c.rho) == pytest.approx(tiny.rho[0], abs=1e-12)
        assert float(lim_p.rho) == pytest.approx(tiny.rho[1], abs=1e-12)
    b = pr.black76(True, 100.0, 80.0, T, r, 0.0)
    assert float(b.price) == pytest.approx(math.exp(-r * T) * 20.0, rel=1e-15)
    assert float(b.rho) == pytest.approx(-T * float(b.price) / 100.0, rel=1e-15)
    assert float(b.theta) == pytest.approx(r * float(b.price) / 365.0, rel=1e-14)


def test_nan_inputs_propagate_without_warnings():
    g = pr.bsm([True, True], [100.0, np.nan], 100.0, 0.5, 0.0, 0.0, [np.nan, 0.2])
    for x in g:
        assert np.all(np.isnan(x))
