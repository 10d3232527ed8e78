"""Option chains of the synthetic market: listed series, strike grids, quotes, volume and OI.

Per (underlying, session) a :class:`DayChain` is built once and cached: the
listed series (expiry, root, settlement moment and its variance clock), the
contracts on the real strike grid sorted in :class:`ChainSnapshot` key order,
open interest, the day's volume, and the minute-level spread multipliers
(open, last hour, events). A snapshot then only evaluates what moves with the
minute: the ATM term structure from the variance state, SSVI, one vectorized
pricing call, spreads and tick rounding.

:func:`quote_block` is the one pricing path: the snapshot calls it with one
minute x N contracts, ``leg_quotes`` with every minute x a few legs. Every
operation is elementwise, so both give bit-identical quotes for the same
contract and minute.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

import numpy as np

from strikebench.calendar import NS_PER_YEAR
from scipy.special import ndtr

from strikebench.options.ticks import (
    VIX_PENNY_TICKS_SINCE,
    round_down_up,
    round_on_rule,
    tick_rule_for,
    tick_sizes_on_rule,
)
from strikebench.pricing import _fix_edges, black76, black76_price, bsm, bsm_price

from .surface import ssvi_total_variance, vix_option_atm_variance
from .underlying import NS_MIN, UnderlyingPath

__all__ = ["DayChain", "SeriesSet", "quote_block", "build_day_chain", "UNDERLYINGS"]

UNDERLYINGS = ("SPX", "XSP", "VIX")
_TICK_ROOT = {"SPX": "SPX", "XSP": "XSP", "VIX": "VIX"}
_MIN_TICK = {"SPX": 0.05, "XSP": 0.01, "VIX": 0.01}
_IV_REF = {"SPX": 0.18, "XSP": 0.18, "VIX": 0.90}
_FAMILY = {"SPX": "spx", "XSP": "xsp", "VIX": "vix"}  # the quote parameters of each (scenario.quotes.<family>)
_THETA_FLOOR = 1e-12
_FEW = 16  # _bid_ask rounds at most this many settling prices one by one (numpy's per-call cost is above a scalar's)


def _tick_rule(market, und: str, d: int) -> tuple[str, dt.date | None, float]:
    """(root, as_of, minimum tick) of the tick rule the quotes of ``und`` follow on session ``d``: the one in force
    that day (VIX options moved to pennies below 3.00 on 2022-10-03; fills round with the same dated rule:
    ``ticks.tick_rule_for(root, as_of)``)."""
    if und == "VIX":
        day = market.path.timeline.dates[d]
        if day < np.datetime64(VIX_PENNY_TICKS_SINCE, "D"):
            return "VIX", day.astype(dt.date), 0.05
    return _TICK_ROOT[und], None, _MIN_TICK[und]


@dataclass
class SeriesSet:
    """Listed series of one underlying (one row per root x expiry)."""

    root: np.ndarray        # str
    expiry: np.ndarray      # datetime64[D]
    exp_day: np.ndarray     # index into the timeline's days
    settle_ns: np.ndarray   # UTC ns of the settlement print
    c_settle: np.ndarray    # variance clock at settlement
    is_am: np.ndarray       # bool


@dataclass
class DayChain:
    """Static part of one underlying's chain for one session (see module docstring)."""

    underlying: str
    day: int
    series: SeriesSet
    root: np.ndarray
    expiry: np.ndarray
    strike: np.ndarray
    is_call: np.ndarray
    sidx: np.ndarray            # series index of each contract
    open_interest: np.ndarray   # int64
    day_volume: np.ndarray      # float, traded by the close
    minute_mult: np.ndarray     # (n_minutes,) spread multiplier: open, last hour, events
    expiring_mult: np.ndarray   # (n_minutes,) extra multiplier for same-day expiries
    volume_cum: np.ndarray      # (n_minutes,) share of the day's volume traded by each bar's close


# ------------------------------------------------------------------ series
@functools.lru_cache(maxsize=4096)
def _rule_expiry(rule, year: int, month: int) -> np.datetime64:
    """A calendar's monthly expiry rule for (year, month), asked once (a calendar lookup is ~50 us)."""
    return np.datetime64(rule(year, month), "D")


def series_for_day(path: UnderlyingPath, und: str, d: int, scenario, calendar) -> SeriesSet:
    """Series listed on session ``d``: dailies (SPXW/XSP), SPX AM monthlies, VIX monthlies."""
    return series_for_days(path, und, d, d + 1, scenario, calendar)


def series_for_days(path: UnderlyingPath, und: str, d0: int, d1: int, scenario, calendar) -> SeriesSet:
    """Series listed on any session ``d0 <= d < d1`` (:func:`series_for_day` for ``d1 = d0 + 1``): dailies of
    every session from ``d0`` to the last one listed by ``d1 - 1``, monthlies expiring after ``d0``'s date and
    by ``d1 - 1``'s horizon. Dailies first, then monthlies, each by expiry."""
    tl = path.timeline
    today, last = tl.dates[d0], tl.dates[d1 - 1]
    ch = scenario.chains
    if und == "SPX":
        parts = [("SPXW", ch.spxw_max_dte, None), ("SPX", ch.spx_monthly_max_dte, calendar.monthly_expiry)]
    elif und == "XSP":
        parts = [("XSP", ch.xsp_max_dte, None)]
    elif und == "VIX":
        parts = [("VIX", ch.vix_max_dte, calendar.vix_expiry)]
    else:
        raise ValueError(f"unknown underlying '{und}' (synthetic market lists {', '.join(UNDERLYINGS)})")
    roots, days, am = [], [], []
    for root, max_dte, rule in parts:
        hi = last + np.timedelta64(int(max_dte), "D")
        if rule is None:  # dailies: every session from today's to the last one within the horizon
            j = np.arange(d0, int(np.searchsorted(tl.dates, hi, side="right")), dtype=np.int64)
        else:  # monthlies: the rule's expiry of each month from today's on, if a session in the window
            ym = int(today.astype("datetime64[M]").astype(np.int64))
            j = []
            for k in range(int((hi - today).astype(np.int64)) // 28 + 3):
                y, m = divmod(ym + k, 12)
                e = _rule_expiry(rule, 1970 + y, m + 1)
                if today < e <= hi:
                    i = int(np.searchsorted(tl.dates, e))
                    if i < len(tl.dates) and tl.dates[i] == e:
                        j.append(i)
            j = np.asarray(j, dtype=np.int64)
        roots.append(np.full(len(j), root, dtype="U6"))
        days.append(j)
        am.append(np.full(len(j), rule is not None))
    days = np.concatenate(days)
    am = np.concatenate(am)
    settle_ns = np.where(am, tl.open_ns[days], tl.close_ns[days])
    c_settle = np.where(am, tl.c_open[days], tl.c_close[days])
    return SeriesSet(np.concatenate(roots), tl.dates[days], days, settle_ns, c_settle, am)


def series_for_contracts(path: UnderlyingPath, contracts) -> SeriesSet:
    """Series of arbitrary contracts (for leg quotes); expiries must be sessions in the timeline."""
    tl = path.timeline
    roots = np.array([c.root for c in contracts], dtype="U6")
    exp = np.array([np.datetime64(c.expiry, "D") for c in contracts])
    j = np.searchsorted(tl.dates, exp)
    bad = (j >= len(tl.dates)) | (tl.dates[np.minimum(j, len(tl.dates) - 1)] != exp)
    if bad.any():
        c = contracts[int(np.flatnonzero(bad)[0])]
        raise ValueError(f"{c}: expiry {c.expiry} is not a session the synthetic market knows")
    am = np.array([str(c.settlement_style) == "AM" for c in contracts], dtype=bool)
    return SeriesSet(roots, exp, j, np.where(am, tl.open_ns[j], tl.close_ns[j]),
                     np.where(am, tl.c_open[j], tl.c_close[j]), am)


# ------------------------------------------------------------- quote block
def atm_total_variance(market, m, settle_ns, c_settle, rows=None, table=None):
    """ATM total implied variance of SPX at minute(s) ``m`` to settlement; broadcasts."""
    path, model = market.path, market.path.model
    tl = path.timeline
    t_q = tl.minute_ns[m] + NS_MIN
    step = tl.minute_step[m]
    dC = np.maximum(c_settle - tl.c_end[m], 0.0)
    tab, ev = table
    integral = model.integral_lookup(tab, ev, dC, rows)
    jumps = path.event_variance(t_q, settle_ns)
    theta = model.atm_ratio * (model.rn_scale(path.eps[step]) * integral + model.event_premium * jumps)
    return np.maximum(theta, _THETA_FLOOR)


def variance_table(market, m, c_settle=None):
    """Expected-variance integral table for the states at minutes ``m`` (1-D); with ``c_settle`` (the series'
    settlement clocks) only over the grid points their lookups read (the same columns as the whole table)."""
    path = market.path
    m = np.atleast_1d(m)
    step = path.timeline.minute_step[m]
    points = None
    if c_settle is not None and len(c_settle) and len(m):
        # the largest dC looked up (max c_settle - min c_end: subtraction is monotone, so the max of the differences)
        points = path.model.lookup_points(np.max(c_settle) - np.min(path.timeline.c_end[m]))
    return path.model.integral_table(path.yf[step], path.ys[step], points)


def series_state(market, und: str, m, rows, table, settle_ns, c_settle, exp_day):
    """What a series needs at minute(s) ``m``: years to settlement, ATM total variance
    (SPX/XSP) or the VIX future and VIX-option ATM variance. Broadcasts."""
    path = market.path
    tl = path.timeline
    sc = market.scenario
    t_q = tl.minute_ns[m] + NS_MIN
    years = np.maximum(settle_ns - t_q, 0) / NS_PER_YEAR
    live = years > 0.0
    safe_years = np.where(live, years, 1.0)
    if und == "VIX":
        fwd = market.vix_future_at(m, exp_day)
        vix_now = path.vix_step[tl.minute_step[m]]
        theta = vix_option_atm_variance(vix_now, safe_years, sc.vol_index.vvix, sc.vol_index.vvix_term_exponent)
    else:
        r, q = sc.underlying.rate, sc.underlying.dividend_yield
        spot = path.spx_close[m] * (0.1 if und == "XSP" else 1.0)
        theta = atm_total_variance(market, m, settle_ns, c_settle, rows, table)
        fwd = spot * np.exp((r - q) * years)
    expiring = exp_day == tl.minute_day[m]
    return {"years": years, "safe_years": safe_years, "live": live, "theta": theta, "fwd": fwd,
            "expiring": expiring}


def series_smile(market, und: str, st: dict) -> dict:
    """Adds to a :func:`series_state` ``st`` what the smile takes from the series alone: SSVI's ``phi``
    (:func:`~.surface.ssvi_total_variance`'s, from the ATM variance), ``theta / 2`` and ``sqrt(theta)``
    (the spread's distance). Computed per series before ``st`` is spread over its contracts, they are
    the values :func:`quote_block` would compute per contract (elementwise, the same floats)."""
    sc = market.scenario
    eta = sc.vol_index.vix_option_eta if und == "VIX" else sc.surface.eta
    gamma = sc.surface.gamma
    theta = np.asarray(st["theta"], dtype=np.float64)
    st["phi"] = eta / (theta ** gamma * (1.0 + theta) ** (1.0 - gamma))
    st["half_theta"] = 0.5 * theta
    st["sqrt_theta"] = np.sqrt(theta)
    return st


def quote_block(market, und: str, m, st: dict, strike, is_call, minute_mult, expiring_mult, greeks: bool):
    """Model values and quotes from a :func:`series_state` ``st`` (already broadcast to the
    contracts); every operation is elementwise. Returns mid, bid, ask, last, iv and (if
    ``greeks``) delta, gamma, theta, vega."""
    path = market.path
    sc = market.scenario
    r = sc.underlying.rate
    q = sc.underlying.dividend_yield
    years, safe_years, live, theta, fwd = st["years"], st["safe_years"], st["live"], st["theta"], st["fwd"]
    k = np.log(strike / fwd)
    phi = st.get("phi")
    if phi is not None:  # series_smile's parts: ssvi_total_variance step for step
        rho = sc.vol_index.vix_option_skew if und == "VIX" else sc.surface.rho
        pk = phi * k
        w = st["half_theta"] * (1.0 + rho * pk + np.sqrt((pk + rho) ** 2 + (1.0 - rho * rho)))
    elif und == "VIX":
        w = ssvi_total_variance(k, theta, sc.vol_index.vix_option_skew, sc.vol_index.vix_option_eta, sc.surface.gamma)
    else:
        w = ssvi_total_variance(k, theta, sc.surface.rho, sc.surface.eta, sc.surface.gamma)
    # without greeks (leg quotes, model values) only the price is computed: the same values as bsm()'s price
    if und == "VIX":
        iv = np.sqrt(w / safe_years)
        g = black76(is_call, fwd, strike, years, r, iv) if greeks else None
        mid = g.price if greeks else black76_price(is_call, fwd, strike, years, r, iv)
    else:
        iv = np.sqrt(w / safe_years)
        spot = path.spx_close[m] * (0.1 if und == "XSP" else 1.0)
        g = bsm(is_call, spot, strike, years, r, q, iv) if greeks else None
        mid = g.price if greeks else bsm_price(is_call, spot, strike, years, r, q, iv)
    qs = sc.quotes
    fam = {"SPX": qs.spx, "XSP": qs.xsp, "VIX": qs.vix}[und]
    z = np.minimum(np.abs(k) / (np.sqrt(theta) if phi is None else st["sqrt_theta"]), 6.0)
    ivr = np.where(live, iv, _IV_REF[und]) * (1.0 / _IV_REF[und])
    spread = (fam.base + fam.relative * mid) * ivr ** qs.iv_exponent
    spread *= 1.0 + qs.distance_slope * z
    spread *= np.where(st["expiring"], minute_mult * expiring_mult, minute_mult)
    np.minimum(spread, fam.max_spread, out=spread)
    rule = _tick_rule(market, und, int(path.timeline.minute_day[np.asarray(m).flat[0]]))  # (one session's minutes)
    bid, ask = _bid_ask(rule, mid, 0.5 * spread, live, bool(np.all(live)))
    # the last trade printed at whichever side is nearer the model value
    last = np.where(mid - bid <= ask - mid, bid, ask)
    out = {"mid": mid, "bid": bid, "ask": ask, "iv": np.where(live, iv, np.nan), "last": last}
    if greeks:
        out.update(delta=g.delta, gamma=g.gamma, theta=g.theta, vega=g.vega)
    return out


# ------------------------------------------------------------- leg quotes
class SessionLegs:
    """What every leg set quoted on session ``d`` shares (built once a session by the market): the
    session's minutes, spread multipliers, variance table and index level, and per series (underlying,
    expiry session, AM/PM) what its quotes need besides the strike: the :func:`series_state` columns and
    the parts of :func:`quote_block` that depend on the series only (SSVI's ``phi``, the Black-Scholes
    discount factors, the spread multiplier). A leg set then prices only its strikes
    (:func:`leg_block`): the same operations on the same values as :func:`quote_block`, so the same
    quotes, bit for bit."""

    def __init__(self, market, d: int):
        tl = market.path.timeline
        self.market = market
        self.d = d
        self.n = n = int(tl.n_minutes[d])
        self.m = (tl.day_first_minute[d] + np.arange(n))[:, None]
        self.rows = np.arange(n)[:, None]
        self.times = tl.minute_ns[self.m.ravel()]
        mult, expiring, _ = market._day_mults(d)
        self.mult = mult[:, None]
        self.expiring_mult = expiring[:, None]
        self.table = None
        self._minute = None
        self._spot: dict[str, np.ndarray] = {}
        self._series: dict[tuple, dict | None] = {}

    def _index_series_state(self, und: str, settle_ns, c_settle, j: int) -> dict:
        """:func:`series_state` of one SPX/XSP series (its ``atm_total_variance`` inlined) with the
        session's per-minute parts computed once: the same operations on the same values."""
        market = self.market
        path, model = market.path, market.path.model
        tl = path.timeline
        sc = market.scenario
        if self._minute is None:
            t_q = tl.minute_ns[self.m] + NS_MIN
            cum = np.concatenate([[0.0], path.event_cumvar])
            self._minute = (t_q, tl.c_end[self.m], model.rn_scale(path.eps[tl.minute_step[self.m]]), cum,
                            cum[np.searchsorted(path.event_R, t_q, side="right")])
        t_q, c_end, rn, cum, cum0 = self._minute
        years = np.maximum(settle_ns - t_q, 0) / NS_PER_YEAR
        live = years > 0.0
        safe_years = np.where(live, years, 1.0)
        r, q = sc.underlying.rate, sc.underlying.dividend_yield
        spot = self.spot(und)
        # atm_total_variance
        dC = np.maximum(c_settle - c_end, 0.0)
        tab, ev = self._table(dC)
        integral = model.integral_lookup_rows(tab, ev, dC)
        jumps = cum[path.event_R.searchsorted(settle_ns, side="right")] - cum0  # event_variance
        # atm_ratio (rn integral + event_premium jumps), floored: in place (products and sums only commuted)
        theta = np.multiply(rn, integral, out=integral)
        jumps *= model.event_premium
        theta += jumps
        theta *= model.atm_ratio
        np.maximum(theta, _THETA_FLOOR, out=theta)
        fwd = spot * np.exp((r - q) * years)
        expiring = np.full(self.m.shape, j == self.d)
        return {"years": years, "safe_years": safe_years, "live": live, "theta": theta, "fwd": fwd,
                "expiring": expiring}

    def _table(self, dC: np.ndarray):
        """The session's expected-variance integral table (every minute's state) over the grid points a lookup
        of ``dC`` reads: built once, out to the farthest series asked so far (the columns of the whole table)."""
        need = self.market.path.model.lookup_points(dC.max())
        if self.table is None or self.table[0].shape[1] < need:
            path = self.market.path
            step = path.timeline.minute_step[self.m.ravel()]
            self.table = path.model.integral_table(path.yf[step], path.ys[step], need, self.table)
        return self.table

    def spot(self, und: str) -> np.ndarray:
        got = self._spot.get(und)
        if got is None:
            got = self._spot[und] = self.market.path.spx_close[self.m] * (0.1 if und == "XSP" else 1.0)
        return got

    def series(self, und: str, j: int, am: bool) -> dict | None:
        """The columns (minutes x 1) of series (``und``, expiry session ``j``, ``am``); None when the
        series is not quoted this session (expired before it, or an AM series on its settlement day)."""
        key = (und, j, am)
        if key in self._series:
            return self._series[key]
        d = self.d
        if j < d or (am and j <= d):
            self._series[key] = None
            return None
        market = self.market
        tl = market.path.timeline
        sc = market.scenario
        jj = np.array([[j]], dtype=np.int64)
        settle_ns = (tl.open_ns if am else tl.close_ns)[jj]
        c_settle = (tl.c_open if am else tl.c_close)[jj]
        if und == "VIX":
            st = series_state(market, und, self.m, self.rows, None, settle_ns, c_settle, jj)  # no variance table
        else:
            st = self._index_series_state(und, settle_ns, c_settle, j)
        years = st["years"]
        r, q = sc.underlying.rate, sc.underlying.dividend_yield
        if und == "VIX":
            rho, under, q = sc.vol_index.vix_option_skew, st["fwd"], r
        else:
            rho, under = sc.surface.rho, self.spot(und)
        series_smile(market, und, st)
        with np.errstate(all="ignore"):
            # pricing.bsm_price's discounting (_disc): base * exp(-rate T), skipped for a zero rate
            fw = under if q == 0.0 else np.exp(np.multiply(years, -q)) * under
            edr = None if r == 0.0 else np.exp(np.multiply(years, -r))
            sqrt_t = np.sqrt(years)
        # the minutes at or past settlement (whole rows: years is minutes x 1, never NaN, so ``live`` is the rest)
        expired_rows = np.flatnonzero(years[:, 0] <= 0.0)
        st.update(
            rho=rho, fw=fw, edr=edr, sqrt_t=sqrt_t, all_live=not len(expired_rows), any_expired=bool(len(expired_rows)),
            expired_rows=expired_rows, mm=self.mult * self.expiring_mult if j == d else self.mult, under=under,
            tick_rule=_tick_rule(market, und, d),
        )
        self._series[key] = st
        return st


def leg_block(market, und: str, st: dict, strike: np.ndarray, sgn: np.ndarray):
    """(bid, ask) of legs of one series (``strike`` and ``sgn``, +1.0 for a call and -1.0 for a put, of shape
    (1, L)) at every minute of the session from :meth:`SessionLegs.series`: :func:`quote_block` (without greeks)
    step for step, in place on its own temporaries where quote_block allocated (the same floats: every step is
    elementwise)."""
    sc = market.scenario
    safe_years, fwd = st["safe_years"], st["fwd"]
    rho = st["rho"]
    with np.errstate(all="ignore"):
        k = np.log(strike / fwd)
        # ssvi_total_variance with the series' phi and theta / 2: 0.5 theta (1 + rho pk + sqrt((pk + rho)^2 + 1 - rho^2))
        pk = st["phi"] * k
        root = pk + rho
        np.square(root, out=root)  # (root ** 2)
        root += 1.0 - rho * rho
        np.sqrt(root, out=root)
        w = np.multiply(pk, rho, out=pk)
        w += 1.0
        w += root
        w *= st["half_theta"]
        w /= safe_years
        iv = np.sqrt(w, out=w)
        # pricing.bsm_price (_price_core + _fix_edges): Black-76 is bsm on the forward with q = r; d1 and d2 are
        # the halves of one array, signed and put through ndtr together
        vst = iv * st["sqrt_t"]
        fw = st["fw"]
        kd = strike if st["edr"] is None else st["edr"] * strike
        dd = np.empty((2,) + vst.shape)
        d1, d2 = dd
        np.divide(fw, kd, out=d1)
        np.log(d1, out=d1)
        np.divide(d1, vst, out=d1)
        vst *= 0.5
        np.subtract(d1, vst, out=d2)
        d1 += vst
        dd *= sgn
        ndtr(dd, out=dd)
        d1 *= fw  # a = N(w d1) fw
        d2 *= kd  # b = N(w d2) kd
        d1 -= d2
        d1 *= sgn
        d1 += 0.0
        mid = d1
        if (iv <= 0.0).any():
            r = sc.underlying.rate
            q = r if und == "VIX" else sc.underlying.dividend_yield
            _fix_edges([mid], "bsm", sgn, st["under"], strike, st["years"], np.float64(r), np.float64(q), iv,
                       mid.shape)
        elif st["any_expired"]:
            # _fix_edges of whole minutes at or past settlement (no zero vols): the intrinsic value of their rows
            rows = st["expired_rows"]
            mid[rows] = np.maximum(sgn * (st["under"][rows] - strike), 0.0)
    qs = sc.quotes
    fam = getattr(qs, _FAMILY[und])
    ref = _IV_REF[und]
    # spread = (base + relative mid) ivr^e (1 + slope z) multiplier, capped
    z = np.abs(k, out=k)
    z /= st["sqrt_theta"]
    np.minimum(z, 6.0, out=z)
    z *= qs.distance_slope
    z += 1.0
    ivr = iv * (1.0 / ref)
    if not st["all_live"]:  # np.where(live, iv, ref) * (1 / ref): the minutes not live (whole rows) at ref / ref
        ivr[st["expired_rows"]] = np.float64(ref) * (1.0 / ref)
    spread = fam.relative * mid
    spread += fam.base
    spread *= ivr ** qs.iv_exponent  # (** as quote_block: numpy's own fast powers for 0.5, 1, 2)
    spread *= z
    spread *= st["mm"]
    np.minimum(spread, fam.max_spread, out=spread)
    spread *= 0.5
    return _bid_ask(st["tick_rule"], mid, spread, st["live"], st["all_live"])


def _bid_ask(rule: tuple, mid: np.ndarray, half: np.ndarray, live, all_live: bool):
    """Bid and ask from the model value and half the spread: round_to_tick down / up on ``rule`` (the underlying's, as in force that session)
    (one-directional on arrays), a bid of at least one tick when the value is, the ask at least a tick above
    the bid; at the settlement moment (not ``live``) the quote collapses on the intrinsic value.
    The bids and asks are rounded in one pass (:func:`~strikebench.options.ticks.round_down_up`); ``bid`` and
    ``ask`` are the two halves of one (2, ...) array."""
    root, as_of, tick = rule
    tr = tick_rule_for(root, as_of)
    mid = np.asarray(mid, dtype=np.float64)
    shape = mid.shape if np.shape(half) == mid.shape else np.broadcast_shapes(mid.shape, np.shape(half))
    x = np.empty((2,) + shape)
    np.subtract(mid, half, out=x[0])
    np.maximum(x[0], 0.0, out=x[0])
    np.add(mid, half, out=x[1])
    bid, ask = round_down_up(x, tr)
    np.copyto(bid, tick, where=(mid >= 1.5 * tick) & (bid < tick))
    # np.round(bid + tick_sizes(bid), 2) as np.round computes it (multiply, rint, divide)
    floor = np.rint(np.multiply(tick_sizes_on_rule(bid, tr) + bid, 100.0))
    floor /= 100.0
    np.maximum(ask, floor, out=ask)
    if not all_live:
        live = np.asarray(live)
        if live.ndim == 2 and live.shape[1] == 1 and mid.ndim == 2 and live.shape[0] == mid.shape[0]:
            # a session's minutes x legs (leg quotes): whole minutes collapse (0DTE: the settlement minute), so
            # only their rows are rounded (elementwise: the same values as rounding every row)
            rows = np.flatnonzero(~live[:, 0])
            if len(rows) * mid.shape[1] <= _FEW:
                # a few prices (0DTE: the legs at the settlement minute): round_on_rule's Python-float path (the same
                # floats as on arrays), np.maximum(up, tick) as max(up, tick) (NaN stays NaN)
                for r in rows.tolist():
                    for c, v in enumerate(mid[r].tolist()):
                        bid[r, c] = round_on_rule(v, tr, "down")
                        ask[r, c] = max(round_on_rule(v, tr, "up"), tick)
            else:
                bid[rows], ask[rows] = _collapsed(mid[rows], tr, tick)
        else:
            down, up = _collapsed(mid, tr, tick)
            bid = np.where(live, bid, down)
            ask = np.where(live, ask, up)
    return bid, ask


def _collapsed(at: np.ndarray, tr, tick: float):
    """The settlement quote on the model value ``at``: (round down, max(round up, one tick)), both in one pass."""
    x = np.empty((2,) + at.shape)
    x[0] = at
    x[1] = at
    down, up = round_down_up(x, tr)
    return down, np.maximum(up, tick)


# ------------------------------------------------------------- day chains
def _grid(lo: float, hi: float, step: float) -> np.ndarray:
    a = np.ceil(lo / step) * step
    b = np.floor(hi / step) * step
    if b < a:
        return np.zeros(0)
    return np.arange(a, b + step * 0.5, step)


def _strike_steps(unit: float) -> tuple[float, float, float]:
    return (5.0, 25.0, 100.0) if unit == 1.0 else (1.0, 5.0, 10.0)


def _strike_index_bounds(ref, sd, ch, unit: float):
    """Grid index range ``(ceil(lo / step), floor(hi / step))`` of each of the three grids
    (fine near the money, medium, wide) for reference level(s) ``ref`` and price standard
    deviation(s) ``sd`` (broadcast), as integer multiples of each grid's step."""
    ref = np.asarray(ref, dtype=np.float64)
    fine = np.maximum(ch.fine_sigmas * sd, ch.min_fine_points * unit)
    lo = ref - np.maximum(ch.put_wing_sigmas * sd, 0.06 * ref)
    hi = ref + np.maximum(ch.call_wing_sigmas * sd, 0.03 * ref)
    far = ch.far_sigmas * sd
    bounds = [(ref - fine, ref + fine), (np.maximum(lo, ref - far), np.minimum(hi, ref + far)), (lo, hi)]
    return [(np.ceil(a / st), np.floor(b / st)) for (a, b), st in zip(bounds, _strike_steps(unit))]


def _strikes_from_index(idx, unit: float) -> tuple[np.ndarray, np.ndarray]:
    """(strikes, series index) from per-series grid index ranges (one (ia, ib) pair of arrays
    per grid, as :func:`_strike_index_bounds` gives): series after series, each ascending.

    Every grid point is a multiple of the finest step, so each series' union of the three grids
    is a mask over one shared grid (grid bounds compared as integer multiples, as ``_grid`` makes them);
    grid points are exact integers times the finest step, so a series' strikes depend on its bounds only
    (not on the other series asked with it).
    """
    E = len(idx[0][0])
    steps = _strike_steps(unit)
    base = steps[0]
    g_lo = min(float(np.min(ia * st / base)) for (ia, _), st in zip(idx, steps))
    g_hi = max(float(np.max(ib * st / base)) for (_, ib), st in zip(idx, steps))
    g = np.arange(g_lo, g_hi + 0.5)  # multiples of the finest step, as grid indices
    keep = np.zeros((E, g.size), dtype=bool)
    for (ia, ib), st in zip(idx, steps):
        r = st / base  # 1, 5, 20
        on = (g % r) == 0
        k = g / r
        keep |= on[None, :] & (k[None, :] >= ia[:, None]) & (k[None, :] <= ib[:, None])
    values = g * base
    keep &= (values > 0)[None, :]
    rows, cols = np.nonzero(keep)
    return values[cols], rows.astype(np.int64)


def listed_strike_sets(market, und: str, d: int, series: "SeriesSet", bounds=None) -> tuple[np.ndarray, np.ndarray]:
    """The strikes of every series of ``und`` listed on session ``d``: (strikes, series index).

    A listed strike stays listed until its expiry, as on the exchange: series ``j``'s listing on
    day ``d`` is every strike of the three grids that any session from the series' first listing
    day (expiry minus the root's listing horizon) to ``d`` would list around that session's open
    (the hull of their grid index ranges, as the exchange adds strikes when the index moves and
    fills the gaps). SPX, SPXW and XSP; VIX series list one fixed grid (:func:`vix_strikes`). The level and ATM variance of each of those sessions come from the
    calendar-wide daily layer (the open and the variance state at the previous close), so a day's
    listing is the same whatever range the market was built for, and it only ever grows.

    ``bounds`` (E, 6), the series' hulls from a :func:`_listing_block`, else computed from the whole window.
    With them the market keeps each series' strikes while its hull does not change (``market._strike_hulls``;
    a series' strikes depend on its bounds only).
    """
    E = len(series.root)
    if E == 0:
        return np.zeros(0), np.zeros(0, np.int64)
    unit = 0.1 if und == "XSP" else 1.0
    if bounds is None:  # the whole window of every series
        tl = market.path.timeline
        bounds = _hull_rows(market, series, _first_listed(market, und, series), tl.first + d, unit)
        return _strikes_from_index([(bounds[:, 2 * g], bounds[:, 2 * g + 1]) for g in range(3)], unit)
    kept = market._strike_hulls
    ids = 2 * series.exp_day + series.is_am  # a series of ``und``: its expiry session and AM / PM
    parts = [None] * E
    prev = kept.get((und, "parts"))
    if prev is not None:  # each series' strikes: kept from the last listing while its bounds are the same
        p_ids, p_sorter, p_bounds, p_parts = prev
        i = np.minimum(np.searchsorted(p_ids, ids, sorter=p_sorter), len(p_ids) - 1)
        had = p_sorter[i]
        same = (p_ids[had] == ids) & (p_bounds[had] == bounds).all(axis=1)
        for j in np.flatnonzero(same).tolist():
            parts[j] = p_parts[had[j]]
        new = np.flatnonzero(~same)
    else:
        new = np.arange(E)
    if new.size:
        values, rows = _strikes_from_index([(bounds[new, 2 * g], bounds[new, 2 * g + 1]) for g in range(3)], unit)
        cut = np.searchsorted(rows, np.arange(1, new.size))
        for j, part in zip(new.tolist(), np.split(values, cut)):
            parts[j] = part
    kept[(und, "parts")] = (ids, np.argsort(ids, kind="stable"), bounds, parts)
    n = np.fromiter((len(v) for v in parts), dtype=np.int64, count=E)
    return np.concatenate(parts), np.repeat(np.arange(E, dtype=np.int64), n)


#: sessions a listing block covers from the day that built it (:func:`_listing_block`)
_HULL_BLOCK = 24


def _first_listed(market, und: str, series: "SeriesSet") -> np.ndarray:
    """Epoch index of the first session listing each series (its expiry minus the root's listing horizon)."""
    ch = market.scenario.chains
    horizon = np.where(series.is_am, ch.spx_monthly_max_dte,
                       ch.xsp_max_dte if und == "XSP" else ch.spxw_max_dte).astype("timedelta64[D]")
    return np.searchsorted(market.path.epoch.dates, series.expiry - horizon, side="left")


def _listing_block(market, und: str, d0: int) -> dict:
    """What the SPX / XSP listings of sessions ``d0 <= d < d0 + _HULL_BLOCK`` are made of, in one vectorized pass
    over every series listed on any of them (``uni``, :func:`series_for_days`): the first session listing each
    (``first``, epoch index), the strike hulls at each session (``hull`` (rows, series, 6): row ``d - w0`` is each
    series' min ia / max ib per grid over the sessions from its first listing to ``d``, :func:`_hull_rows`'
    rows accumulated) and the ATM total variance to each at each session's open (``level`` (days, series)).
    Every value elementwise as a single day's listing computes it (min / max exact): the same listings."""
    path = market.path
    tl = path.timeline
    d1 = min(d0 + _HULL_BLOCK, tl.n_sim)
    unit = 0.1 if und == "XSP" else 1.0
    uni = series_for_days(path, und, d0, d1, market.scenario, market.calendar)
    first = _first_listed(market, und, uni)
    w0 = int(first.min())
    w = np.arange(w0, tl.first + d1)
    listed = w[:, None] >= first[None, :]
    hull = np.empty((len(w), len(first), 6))
    for g, (ia, ib) in enumerate(_bound_rows(market, uni, w, unit)):
        np.minimum.accumulate(np.where(listed, ia, np.inf), axis=0, out=hull[:, :, 2 * g])
        np.maximum.accumulate(np.where(listed, ib, -np.inf), axis=0, out=hull[:, :, 2 * g + 1])
    m0 = tl.day_first_minute[d0:d1]
    level = atm_total_variance(market, m0[:, None], uni.settle_ns[None, :], uni.c_settle[None, :],
                               np.arange(len(m0))[:, None], variance_table(market, m0))
    return {"d0": d0, "d1": d1, "uni": uni, "first": first - tl.first, "w0": w0 - tl.first, "hull": hull,
            "level": level}


def _listing_of_day(market, und: str, d: int):
    """(series, level, hulls) of ``und``'s listing on session ``d`` from the market's listing block (built when
    ``d`` is not in the one kept)."""
    kept = market._strike_hulls
    blk = kept.get(und)
    if blk is None or not blk["d0"] <= d < blk["d1"]:
        blk = kept[und] = _listing_block(market, und, d)
    uni = blk["uni"]
    # listed on d: from its first listing session to its expiry (an AM series not on its settlement day)
    cols = np.flatnonzero((blk["first"] <= d) & (uni.exp_day >= d + uni.is_am))
    series = SeriesSet(uni.root[cols], uni.expiry[cols], uni.exp_day[cols], uni.settle_ns[cols],
                       uni.c_settle[cols], uni.is_am[cols])
    return series, blk["level"][d - blk["d0"], cols], blk["hull"][d - blk["w0"], cols]


def _bound_rows(market, series: "SeriesSet", w: np.ndarray, unit: float):
    """Per grid, (ia, ib) of shape (W, E): each series' grid index range around the open of epoch sessions ``w``
    (their level and ATM variance to the series' settlement from the daily layer)."""
    path = market.path
    L, ep, model = path.daily, path.epoch, path.model
    ch = market.scenario.chains
    ref = np.exp(L.log_open[w]) * unit                                          # (W,)
    tab, ev = model.integral_table(L.S_f[w], L.S_s[w])                          # (W, G)
    dC = np.maximum(series.c_settle[None, :] - ep.c_open[w][:, None], 0.0)      # (W, E)
    rows = np.broadcast_to(np.arange(len(w))[:, None], dC.shape)
    integral = model.integral_lookup(tab, ev, dC, rows)
    cum = np.concatenate([[0.0], L.event_cumvar])
    i0 = np.searchsorted(L.event_R, ep.open_ns[w], side="right")[:, None]
    i1 = np.searchsorted(L.event_R, series.settle_ns, side="right")[None, :]
    jumps = np.maximum(cum[i1] - cum[i0], 0.0)
    theta = model.atm_ratio * (model.rn_scale(L.S_e[w])[:, None] * integral + model.event_premium * jumps)
    sd = ref[:, None] * np.sqrt(np.maximum(theta, 1e-6))
    return _strike_index_bounds(ref[:, None], sd, ch, unit)


def _hull_rows(market, series: "SeriesSet", start: np.ndarray, today: int, unit: float) -> np.ndarray:
    """(E, 6): per grid, min ia and max ib of each series' grid index ranges over the sessions ``w`` from
    ``start[j]`` to ``today`` (epoch session indices); +inf / -inf for a series with none."""
    w = np.arange(int(start.min()), today + 1)
    if len(w) == 0:
        return np.tile(np.array([np.inf, -np.inf]), (len(start), 3))
    listed = w[:, None] >= start[None, :]                                        # (W, E)
    out = np.empty((len(start), 6))
    for g, (ia, ib) in enumerate(_bound_rows(market, series, w, unit)):
        out[:, 2 * g] = np.where(listed, ia, np.inf).min(axis=0)
        out[:, 2 * g + 1] = np.where(listed, ib, -np.inf).max(axis=0)
    return out


def vix_strikes() -> np.ndarray:
    """VIX strikes of every series, from its listing to its expiry: 0.50 apart from 9 to 15, 1 point
    to 60, 5 points to 100 (the same every day, so a held strike never leaves the chain)."""
    k = np.concatenate([_grid(9.0, 15.0, 0.5), _grid(15.0, 60.0, 1.0), _grid(60.0, 100.0, 5.0)])
    return np.unique(k)


def _event_steps(path) -> np.ndarray:
    """The steps of the path's realized events, ascending (kept on the path: its events do not change)."""
    got = getattr(path, "_event_steps", None)
    if got is None:
        got = np.sort(np.array([e.step for e in path.events if e.step >= 0], dtype=np.int64))
        path._event_steps = got
    return got


def minute_multipliers(market, d: int):
    """(open/last-hour/event multiplier, same-day-expiry multiplier, cumulative volume share) per minute.

    They depend on the session's length and where its events fall only: kept (read-only) per such shape,
    most sessions share one."""
    path = market.path
    tl = path.timeline
    n = int(tl.n_minutes[d])
    g0 = int(tl.gap_step[d])
    g1 = int(tl.gap_step[d + 1]) if d + 1 < tl.n_sim else 1 << 62
    steps = _event_steps(path)
    at = steps[np.searchsorted(steps, g0):np.searchsorted(steps, g1)] - g0  # the session's events
    cache = path.__dict__.setdefault("_minute_mults", {})
    key = (n, at.tobytes())
    got = cache.get(key)
    if got is None:
        got = cache[key] = _minute_multipliers(market.scenario, n, at.tolist())
        for a in got:
            a.setflags(write=False)
    return got


def _minute_multipliers(scenario, n: int, events: list):
    """:func:`minute_multipliers` of a session of ``n`` minutes with events at ``events`` (steps after the
    session's gap step; 0: the gap itself)."""
    qs = scenario.quotes
    pos = np.arange(n, dtype=np.float64)
    mult = np.ones(n)
    if qs.open_minutes > 0:
        mult *= 1.0 + (qs.open_mult - 1.0) * np.clip(1.0 - pos / qs.open_minutes, 0.0, 1.0)
    to_close = n - 1 - pos
    late = np.clip(1.0 - to_close / 60.0, 0.0, 1.0)
    mult *= 1.0 + (qs.last_hour_mult - 1.0) * late
    expiring = 1.0 + (qs.expiring_late_mult - 1.0) * late
    ev = np.zeros(n, dtype=bool)
    win = qs.event_window_minutes
    for step in events:
        if step == 0:
            ev |= pos < win
        else:
            p = step - 1
            ev |= np.abs(pos - p) <= win
    mult = np.where(ev, mult * qs.event_mult, mult)
    sc = scenario.intraday
    prof = 1.0 + sc.volume_open_boost * np.exp(-pos / 15.0) + sc.volume_close_boost * np.exp(-(n - 1 - pos) / 20.0)
    vcum = np.cumsum(prof) / prof.sum()
    return mult, expiring, vcum


@dataclass
class DayListing:
    """What a session's listing of one underlying is made of, before any contract row: the series, each
    series' strikes and the draws that give every contract its open interest. Cheap next to the rows
    (a chain of 12,000+ SPX contracts is ~1,000 rows per decision's expiries), so a request for a few
    expiries builds only their rows (:func:`build_day_chain` with ``expiries``), the same values as in the
    whole chain.

    Rows of a day chain are in contract-key order: series by (root, expiry), then puts before calls, then
    strike. Row ``(series j, call c, strike rank r)`` is row ``base[j] + c * n[j] + r`` of the whole chain;
    the open-interest noise is drawn once over the whole chain in that order (``normals``)."""

    underlying: str
    day: int
    series: SeriesSet
    strikes: np.ndarray     # every series' strikes, series after series, each ascending
    first: np.ndarray       # (E,) offset of series j's strikes in ``strikes``
    n: np.ndarray           # (E,) strikes of series j
    ranked: np.ndarray      # series indices in row order (root, expiry)
    base: np.ndarray        # (E,) first row of series j in the whole chain
    noise: "ChainNormals"   # the whole chain's standard normals (2 * len(strikes)), rows in order, drawn as asked
    level: np.ndarray       # (E,) forward (VIX) or ATM variance to settlement (others) at the open
    open_px: float
    vix_level: float
    minute_mult: np.ndarray
    expiring_mult: np.ndarray
    volume_cum: np.ndarray

    @property
    def normals(self) -> np.ndarray:
        """Every row's standard normal (2 * len(strikes)), in row order."""
        return self.noise.upto(self.noise.size)


class ChainNormals:
    """A chain's open-interest normals: ``size`` standard normals of one generator, drawn only as far as
    a request reaches (rows in rank order: a chain of the first series needs a few hundred of 15,000). One
    stream, drawn in pieces: the same values as drawing them all at once."""

    __slots__ = ("size", "_seed", "_gen", "_drawn")

    def __init__(self, seed: tuple, size: int):
        self.size = int(size)
        self._seed = seed
        self._gen = None
        self._drawn = np.zeros(0)

    def upto(self, n: int) -> np.ndarray:
        """The first ``n`` (at least) of the normals."""
        have = len(self._drawn)
        if n > have:
            if self._gen is None:
                entropy, spawn_key = self._seed
                self._gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy=entropy,
                                                                                      spawn_key=spawn_key)))
            n = min(self.size, max(int(n), 2 * have))  # grow geometrically: a chain asked series by series
            self._drawn = np.concatenate([self._drawn, self._gen.standard_normal(n - have)])
        return self._drawn


def day_listing(market, und: str, d: int) -> DayListing:
    """The :class:`DayListing` of ``und`` on session ``d`` (cached by the market)."""
    path = market.path
    tl = path.timeline
    m0 = int(tl.day_first_minute[d])
    open_px = float(path.spx_open[m0])
    if und == "VIX":
        series = series_for_day(path, und, d, market.scenario, market.calendar)
        E = len(series.root)
        level = market.vix_future_at(np.full(E, m0), series.exp_day)
        ks = vix_strikes()
        strikes = np.tile(ks, E) if E else np.zeros(0)
        sidx = np.repeat(np.arange(E, dtype=np.int64), len(ks))
    elif getattr(market, "_strike_hulls", None) is not None:  # from the market's listing block
        series, level, bounds = _listing_of_day(market, und, d)
        E = len(series.root)
        strikes, sidx = listed_strike_sets(market, und, d, series, bounds)
    else:  # on its own: the whole look-back window
        series = series_for_day(path, und, d, market.scenario, market.calendar)
        E = len(series.root)
        # the day's own ATM variance to each expiry at the open: strike ranges and open interest
        level = atm_total_variance(market, m0, series.settle_ns, series.c_settle, 0, variance_table(market, m0))
        strikes, sidx = listed_strike_sets(market, und, d, series)
    n = np.bincount(sidx, minlength=E).astype(np.int64)
    first = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64) if E else np.zeros(0, np.int64)
    # series by root (code point order, as np.unique over every row's root would rank them), then expiry
    ranked = np.lexsort((series.expiry, series.root)) if E else np.zeros(0, np.int64)
    base = np.zeros(E, dtype=np.int64)
    if E:
        base[ranked] = np.concatenate([[0], np.cumsum(2 * n[ranked])[:-1]])
    # the open-interest noise: the stream of (seed, 17, session, underlying), drawn when rows ask for it
    ent = (int(market.seed), (17, int(tl.dates[d].astype(np.int64)), UNDERLYINGS.index(und)))
    noise = ChainNormals(ent, 2 * len(strikes))
    day_mults = getattr(market, "_day_mults", None)  # the market's per-session cache (leg quotes share it)
    mm, em, vc = day_mults(d) if callable(day_mults) else minute_multipliers(market, d)
    return DayListing(und, d, series, strikes, first, n, ranked, base, noise, level, open_px,
                      float(path.vix_step[tl.gap_step[d]]), mm, em, vc)


def build_day_chain(market, und: str, d: int, expiries=None, listing: DayListing | None = None, *,
                    roots=None, is_call: bool | None = None) -> DayChain:
    """The series and strikes of ``und`` listed on session ``d`` with their open interest and volume (cached by
    the market); only the series of ``expiries`` (datetime64[D] values), of ``roots`` (a sequence of root
    names) and calls or puts (``is_call``) when given: the rows the whole chain has for them, with the same
    values, in the same order."""
    lst = listing if listing is not None else day_listing(market, und, d)
    tl = market.path.timeline
    ch = market.scenario.chains
    series = lst.series
    ranked = lst.ranked
    if expiries is not None:
        ranked = ranked[np.isin(series.expiry[ranked], np.asarray(expiries, dtype="datetime64[D]"))]
    if roots is not None:
        names = np.asarray([roots] if isinstance(roots, str) else list(roots), dtype=series.root.dtype)
        ranked = ranked[np.isin(series.root[ranked], names)]
    # rows in key order: for each series, puts then calls, each by ascending strike (k: the row within the series'
    # 2 n_j; one right only: its n_j rows)
    n = lst.n[ranked]
    per = n if is_call is not None else 2 * n
    reps = np.repeat(np.arange(len(ranked)), per)
    if len(ranked):
        start = np.concatenate([[0], np.cumsum(per)[:-1]])
        k = np.arange(int(per.sum())) - start[reps]   # 0 .. 2n_j - 1 within the series (0 .. n_j - 1: one right)
        if is_call:
            k += n[reps]  # the calls: rows n_j .. 2n_j - 1
    else:
        k = np.zeros(0, dtype=np.int64)
    j = ranked[reps].astype(np.int64)
    nj = lst.n[j]
    is_call = k >= nj
    r = np.where(is_call, k - nj, k)
    sidx = j
    strike = lst.strikes[lst.first[j] + r]
    root = series.root[sidx]
    expiry = series.expiry[sidx]
    pos = lst.base[j] + k

    # open interest and the day's volume
    normals = lst.noise.upto(int(pos.max()) + 1 if len(pos) else 0)
    noise = np.exp(0.45 * normals[pos] - 0.1)
    dte = (expiry - tl.dates[d]).astype(np.int64)
    if und == "VIX":
        z = np.log(strike / lst.level[sidx]) / 0.25
        z = np.where(is_call, z * 0.8, z * 1.6)
        base = ch.open_interest_scale * 6.0
        age = np.ones(len(strike))
        turnover = ch.turnover * 0.5 * np.ones(len(strike))
    else:
        unit = 0.1 if und == "XSP" else 1.0
        kk = np.log(strike / (lst.open_px * unit))
        z = kk / np.sqrt(np.maximum(lst.level[sidx], 1e-6))
        # puts trade farther out of the money than calls
        z = np.where(is_call, z, z * 0.8)
        base = ch.open_interest_scale * (0.08 if und == "XSP" else 1.0)
        age = np.where(series.is_am[sidx], 1.6, 0.35 + 0.65 * np.minimum(dte, 30) / 30.0)
        turnover = ch.turnover * (8.0 / (dte + 1.0)) ** 0.6
        ticks = np.round(strike / unit).astype(np.int64)
        age = age * np.where(ticks % 100 == 0, 1.6, np.where(ticks % 25 == 0, 1.25, 1.0))
    shape = np.exp(-0.5 * z ** 2) + 0.01
    oi = np.round(base * age * shape * noise).astype(np.int64)
    day_volume = oi * turnover * (lst.vix_level / 18.0) ** 0.5 * noise
    return DayChain(und, d, series, root, expiry, strike, is_call, sidx, oi, day_volume,
                    lst.minute_mult, lst.expiring_mult, lst.volume_cum)


def day_series_arrays(dc: DayChain):
    s = dc.series
    return s.settle_ns[dc.sidx], s.c_settle[dc.sidx], s.exp_day[dc.sidx]


def dte_days(expiry, today) -> np.ndarray:
    return (np.asarray(expiry, "datetime64[D]") - np.datetime64(today, "D")).astype(np.int64)

