"""Market-context providers hand-checked on small markets: IV rank/percentile, term structure, regime,
realized vs implied volatility, and dealer GEX with its zero-gamma level on a 5-strike chain."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from strikebench.calendar import NY, MarketCalendar
from strikebench.errors import DataError
from strikebench.options.chain import ChainSnapshot
from strikebench.plugins import market_context as mc
from strikebench.testing import ModelMarket

CAL = MarketCalendar()
SESSIONS = [d.date() for d in CAL.sessions("2024-01-02", "2024-01-10")]  # 7 sessions
VIX_CLOSE = dict(zip(SESSIONS, [13.0, 17.0, 12.0, 20.0, 15.0, 14.0, 16.0]))
SPX_CLOSE = dict(zip(SESSIONS, [4800.0, 4848.0, 4799.52, 4823.0, 4750.0, 4760.0, 4700.0]))
TODAY = SESSIONS[-1]


def _by_day(closes, intraday=None):
    """Each session flat at its close; on TODAY the level is ``intraday(minute_of_session)`` when given."""
    def f(index):
        local = index.tz_convert(NY)
        out = np.array([closes[d] for d in local.date])
        if intraday is not None:
            today = local.date == TODAY
            out[today] = intraday(np.arange(today.sum()))
        return out
    return f


def _market(vix_today=None, vix9d=None, spx_today=None):
    return ModelMarket(SESSIONS[0], TODAY, spot=_by_day(SPX_CLOSE, spx_today),
                       other_bars={"VIX": _by_day(VIX_CLOSE, vix_today), **({"VIX9D": vix9d} if vix9d else {})})


def _start(provider, market, day=TODAY):
    provider.on_session_start(day, market, CAL.minutes(day))
    return provider


def test_iv_rank_and_percentile_against_the_past_sessions_closes():
    # today VIX 14.5 from 09:30, 19.0 from 10:00; the last 5 closes before today: 17, 12, 20, 15, 14
    m = _market(vix_today=lambda k: np.where(k < 30, 14.5, np.where(k < 200, 19.0, 15.0)))
    p = _start(mc.IvRank(mc.IvRank.Params(lookback=5)), m)
    past = [17.0, 12.0, 20.0, 15.0, 14.0]
    lo, hi = min(past), max(past)
    assert p.values(0)["iv_rank"] == pytest.approx(100 * (14.5 - lo) / (hi - lo), abs=1e-12)  # 31.25
    assert p.values(0)["iv_percentile"] == 100 * sum(x < 14.5 for x in past) / 5  # 12, 14 -> 40 %
    assert p.values(29)["iv_rank"] == pytest.approx(31.25, abs=1e-12)  # 09:59: still 14.5
    assert p.values(30)["iv_rank"] == pytest.approx(87.5, abs=1e-12)  # first bar at 19.0
    assert p.values(30)["iv_percentile"] == 80.0
    assert p.values(200)["iv_percentile"] == 40.0  # 15.0 equals a past close: only 12 and 14 are below it
    # not enough history: 6 closes before today, lookback 10 -> nan
    q = _start(mc.IvRank(mc.IvRank.Params(lookback=10)), m)
    assert math.isnan(q.values(100)["iv_rank"]) and math.isnan(q.values(100)["iv_percentile"])


def test_term_structure_and_regime_follow_vix9d_against_vix_bar_by_bar():
    # today VIX 16 -> 26 at 11:00; VIX9D 15 (17 from 10:30 to 10:59), 29 from 12:00
    vix = lambda k: np.where(k < 90, 16.0, 26.0)  # noqa: E731
    vix9d = _by_day({d: 12.0 for d in SESSIONS},
                    lambda k: np.where(k < 150, np.where((k >= 60) & (k < 90), 17.0, 15.0), 29.0))
    m = _market(vix_today=vix, vix9d=vix9d)
    ts = _start(mc.TermStructure(), m)
    assert ts.values(0)["term_slope"] == 1.0 and ts.values(0)["contango"] == 1.0
    assert math.isnan(ts.values(0)["term_slope_3m"])  # no VIX3M bars in this market
    assert ts.values(90)["term_slope"] == 11.0
    assert ts.values(150)["term_slope"] == -3.0 and ts.values(150)["contango"] == 0.0
    reg = _start(mc.VolRegime(mc.VolRegime.Params(calm_below=15, stressed_at=25)), m)
    assert ts.values(60)["contango"] == 0.0 and ts.values(60)["term_slope"] == -1.0
    # inverted at 10:30 but VIX 16 is not stressed: still normal; stressed and inverted from 12:00: crisis
    assert [reg.values(i)["vol_regime"] for i in (0, 60, 89, 90, 149, 150)] == [1.0, 1.0, 1.0, 2.0, 2.0, 3.0]
    with pytest.raises(DataError, match="no minute bars for 'VIX9D'"):
        _start(mc.TermStructure(), _market())


def test_realized_vol_uses_past_daily_returns_and_todays_move_to_the_bar():
    m = _market(spx_today=lambda k: np.where(k < 60, 4760.0, 4700.0))
    p = _start(mc.RealizedVsImplied(mc.RealizedVsImplied.Params(sessions=4)), m)
    closes = [SPX_CLOSE[d] for d in SESSIONS[:-1]][-4:]  # 4799.52, 4823, 4750, 4760
    past = [math.log(b / a) for a, b in zip(closes, closes[1:])]
    for i, px in ((0, 4760.0), (60, 4700.0)):
        r = math.log(px / closes[-1])
        rv = math.sqrt(252 / 4 * (sum(x * x for x in past) + r * r))
        got = p.values(i)
        assert got["rv"] == pytest.approx(rv, rel=1e-12) and got["iv"] == 0.16
        assert got["iv_rv_spread"] == pytest.approx(0.16 - rv, rel=1e-12)
        assert got["iv_rv_ratio"] == pytest.approx(0.16 / rv, rel=1e-12)
    assert p.values(0)["rv"] != p.values(60)["rv"]


# ------------------------------------------------------------------------------ GEX
SPOT = 4800.0
AT = pd.Timestamp("2024-01-10 10:00", tz=NY)
EXPIRY = dt.date(2024, 1, 19)
ROWS = [  # strike, call?, OI, gamma (as the chain quotes it), iv
    (4700.0, False, 3000, 0.0011, 0.19),
    (4750.0, False, 2000, 0.0016, 0.17),
    (4800.0, True, 1000, 0.0020, 0.15),
    (4850.0, True, 2500, 0.0017, 0.14),
    (4900.0, True, 1500, 0.0012, 0.13),
]


def _chain():
    s, c, oi, g, iv = (np.array(col) for col in zip(*ROWS))
    return ChainSnapshot.from_arrays("SPX", AT, SPOT, root="SPXW", expiry=np.array([EXPIRY] * 5, dtype="datetime64[D]"),
                                     strike=s, is_call=c, bid=np.full(5, 1.0), ask=np.full(5, 1.2),
                                     open_interest=oi, gamma=g, iv=iv)


class _ChainMarket:
    def listed_expiries(self, underlying, day):
        return [EXPIRY]

    def snapshot(self, underlying, at, expiries=None):
        return _chain()


def test_gex_on_a_five_strike_chain_by_hand():
    # dealers long calls, short puts: sum(sign x gamma x OI) x 100 x S^2 x 1 %
    by_hand = (-0.0011 * 3000 - 0.0016 * 2000 + 0.0020 * 1000 + 0.0017 * 2500 + 0.0012 * 1500) * 100 * 4800 ** 2 * 0.01
    assert round(by_hand, 2) == 35_712_000.00  # (-3.3 - 3.2 + 2.0 + 4.25 + 1.8) = 1.55; x 4800^2 x 100 x 1 %
    p = mc.GammaExposure(mc.GammaExposure.Params(every_minutes=60))
    p.on_session_start(TODAY, _ChainMarket(), CAL.minutes(TODAY))
    got = p.values(0)
    assert round(got["gex"], 2) == round(by_hand, 2)

    # zero gamma: the level where the same OI's gammas, recomputed at that level, sum to zero
    years = (pd.Timestamp(f"{EXPIRY} 16:00", tz=NY) - AT).total_seconds() / (365 * 86400)

    def gex_at(level):
        total = 0.0
        for k, call, oi, _, v in ROWS:
            d1 = (math.log(level / k) + (0.045 - 0.015 + v * v / 2) * years) / (v * math.sqrt(years))
            gamma = math.exp(-0.015 * years) * norm.pdf(d1) / (level * v * math.sqrt(years))
            total += (1 if call else -1) * gamma * oi
        return total * 100 * level ** 2 * 0.01

    assert gex_at(4700) < 0 < gex_at(4850)
    zero = brentq(gex_at, 4700, 4850, xtol=1e-9)
    assert round(got["zero_gamma"], 2) == round(zero, 2)
    assert round(got["gex_flip"], 2) == round(SPOT - zero, 2)
    assert p.values(59) == got and p.values(60) == got  # recomputed each hour from the open: same chain here


def test_gex_is_nan_without_open_interest():
    chain = _chain()
    empty = ChainSnapshot.from_arrays("SPX", AT, SPOT, **{n: getattr(chain, n) for n in
                                                          ("root", "expiry", "strike", "is_call", "bid", "ask", "gamma", "iv")})
    assert all(math.isnan(x) for x in mc.GammaExposure().figures(empty))


def test_providers_are_registered_and_read_by_a_strategy_through_features():
    from strikebench.plugin_manager import get_plugin_manager

    names = {e.name for e in get_plugin_manager().registry.entries() if e.kind == "context_provider"}
    assert {"iv_rank", "term_structure", "vol_regime", "realized_vol", "gex"} <= names
