"""The SPX minute path, its variance state, VIX and VIX9D -- the same for a day whatever range is asked.

Two layers, both keyed on the seed and on *calendar* positions, never on the requested range:

1. **Daily layer** (:func:`daily_layer`): one pass over every session of the calendar
   (2000-01-03 .. 2050) from a fixed epoch. Per session it draws the day's archetype, its
   standardized overnight and open-to-close scores (Student-t), the variance innovations,
   and runs the two log-variance factors and the premium noise as AR(1) processes driven by
   the scores (the leverage effect) plus event kicks (``scipy.signal.lfilter``: about a
   millisecond for 12,800 sessions). Its outputs are the factors at every close, the gap and
   open-to-close log returns, and the index level, pinned to ``underlying.start_level`` at the
   open of ``underlying.anchor_date``. Every random array has the calendar's length, so a
   draw never depends on ``data.start``/``data.end``.
2. **Intraday layer**: the minutes of a session are a bridge between that session's daily
   endpoints, drawn from the session's own stream ``SeedSequence(seed, spawn_key=(41,
   day ordinal))``: Student-t minute shocks on a U-shaped variance profile, the archetype's
   intraday shape (reversion, trend, fake-out, a spike spread over minutes), scheduled and
   injected jumps at their minutes; the fast factor moves inside the day with the cumulative
   shock so VIX moves against the minute path, and lands on the daily layer's close.

Layout. Every session is a row of 391 *steps*: the overnight gap (column 0) then up to 390
one-minute bars (210 on an early close). Each step carries a share ``c`` of a nominal day's
variance, and the cumulative sum of ``c`` from the epoch is the *variance clock* in
variance-days (computed once over the calendar, sliced: bit-identical for every range).

Injected events and episodes change the daily layer from their session on only: the
index level is anchored on the path without them, and their extra returns and factor
kicks are zero before their first session.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from strikebench.calendar import NY, MarketCalendar, default_calendar

from .events import scheduled_events
from .scenario import ARCHETYPES, Scenario
from .vol import VarianceModel


def lfilter(b, a, x, axis=-1):
    """``scipy.signal.lfilter``, imported on first use (scipy.signal costs about a second to import, which
    every command that only validates a config or reads a run would pay)."""
    from scipy.signal import lfilter as _lfilter

    return _lfilter(b, a, x, axis=axis)

__all__ = ["Timeline", "UnderlyingPath", "DailyLayer", "daily_layer", "simulate", "substreams", "STREAMS",
           "EPOCH_CACHE"]

#: Named daily random sub-streams, in spawn order. Append only: reordering would change every market.
STREAMS = (
    "gap_scores", "day_scores", "variance_fast", "variance_slow", "premium",
    "archetype_draw", "archetype_shape", "event_jumps",
)
#: spawn_key of a session's intraday stream: SeedSequence(seed, spawn_key=(INTRADAY_KEY, day ordinal)).
INTRADAY_KEY = 41

ROW = 391  # gap + 390 minutes
NS_MIN = 60 * 10**9
NS_DAY = 86400 * 10**9
EXTENSION_DAYS = 400  # sessions beyond the end, for expiries and the variance clock
LAST_EXTENSION = np.datetime64("2050-12-01", "D")
#: Weights of the minutes over which an unscheduled spike unfolds (decaying, sum 1).
_SPIKE_DECAY_MINUTES = 4.0


def substreams(seed: int) -> dict[str, np.random.Generator]:
    """One independent PCG64 generator per named daily stream (SeedSequence.spawn)."""
    children = np.random.SeedSequence(int(seed)).spawn(len(STREAMS))
    return {name: np.random.Generator(np.random.PCG64(ch)) for name, ch in zip(STREAMS, children)}


def day_stream(seed: int, ordinal: int) -> np.random.Generator:
    """The intraday stream of the session with date ordinal ``ordinal`` (days since 1970-01-01)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        entropy=int(seed), spawn_key=(INTRADAY_KEY, int(ordinal)))))


def _student(rng: np.random.Generator, df: float, size) -> np.ndarray:
    """Student-t draws scaled to unit variance (normal when df is large)."""
    if df >= 500:
        return rng.standard_normal(size)
    return rng.standard_t(df, size) * math.sqrt((df - 2.0) / df)


# ========================================================= the calendar, once
@dataclass
class EpochDays:
    """Every session of the calendar with its variance-clock positions (cumulated from the epoch)."""

    dates: np.ndarray
    open_ns: np.ndarray
    close_ns: np.ndarray
    n_minutes: np.ndarray
    gap_var: np.ndarray
    intra_var: np.ndarray
    c_open: np.ndarray
    c_close: np.ndarray


EPOCH_CACHE: OrderedDict = OrderedDict()


def epoch_days(scenario: Scenario, calendar: MarketCalendar) -> EpochDays:
    u = scenario.underlying
    key = ("days", id(calendar.xcal), u.overnight_variance_share, u.weekend_gap_extra)
    got = EPOCH_CACHE.get(key)
    if got is not None:
        return got
    xcal = calendar.xcal
    allsess = xcal.sessions
    opens = pd.DatetimeIndex(xcal.opens.reindex(allsess)).as_unit("ns").asi8.copy()
    closes = pd.DatetimeIndex(xcal.closes.reindex(allsess)).as_unit("ns").asi8.copy()
    n_min = (closes - opens) // NS_MIN
    dates = allsess.to_numpy().astype("datetime64[D]")
    ov = u.overnight_variance_share
    gap_days = np.diff(dates.astype(np.int64), prepend=dates[0].astype(np.int64) - 1)
    gap_var = ov * (1.0 + u.weekend_gap_extra * (gap_days - 1))
    gap_var[0] = ov
    intra_var = (1.0 - ov) * n_min / 390.0
    c_close = np.cumsum(gap_var + intra_var)
    c_open = c_close - intra_var
    got = EpochDays(dates, opens, closes, n_min, gap_var, intra_var, c_open, c_close)
    EPOCH_CACHE[key] = got
    while len(EPOCH_CACHE) > 16:
        EPOCH_CACHE.popitem(last=False)
    return got


# ======================================================================= timeline
@dataclass
class Timeline:
    """Sessions, minutes and the variance clock. Day arrays cover the simulated sessions
    followed by an extension (for expiries after the end); minute arrays only the simulated ones.
    Every value is a slice of the calendar-wide arrays (:func:`epoch_days`), so it is the same
    for a day whatever range is asked."""

    dates: np.ndarray          # datetime64[D], all days (simulated + extension)
    open_ns: np.ndarray        # int64 UTC ns of 09:30
    close_ns: np.ndarray       # int64 UTC ns of the close
    n_minutes: np.ndarray      # 390 / 210
    gap_var: np.ndarray        # variance share of the gap before each session
    c_open: np.ndarray         # variance clock just after the open (gap included)
    c_close: np.ndarray        # variance clock at the close
    n_sim: int                 # number of simulated sessions
    # minute level (simulated)
    minute_ns: np.ndarray      # bar start, UTC ns
    minute_day: np.ndarray
    minute_pos: np.ndarray
    day_first_minute: np.ndarray
    c_min: np.ndarray          # variance share of each minute
    c_end: np.ndarray          # variance clock at each minute's end
    # steps (gap + minutes, row-major over the padded grid)
    valid: np.ndarray          # (n_sim, ROW) bool
    step_of_flat: np.ndarray   # flat padded index of each step
    minute_step: np.ndarray    # step index of each minute
    gap_step: np.ndarray       # step index of each session's gap
    # calendar-day lookup from the first simulated date
    cal_first: np.datetime64 = field(default=None)
    cal_session: np.ndarray = field(default=None)   # session index or -1
    cal_prev: np.ndarray = field(default=None)      # last session index on or before the date
    first: int = 0             # index of the first simulated session in the calendar-wide arrays
    prof: np.ndarray = None    # (n_sim, 390) intraday variance profile (rows sum to 1)

    @property
    def sessions(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.dates[: self.n_sim])

    def clock_after(self, day_idx, offset, days: int):
        """Variance clock at the same time of day ``days`` calendar days later.

        ``offset`` is the clock elapsed since that session's open. On a closed
        day the clock is the previous session's close (the gap accrues at the next open).
        """
        day_idx = np.asarray(day_idx)
        target = (self.dates[day_idx] - self.cal_first).astype(np.int64) + int(days)
        target = np.minimum(target, len(self.cal_session) - 1)
        sess = self.cal_session[target]
        prev = self.cal_prev[target]
        on = sess >= 0
        c_on = np.minimum(self.c_open[np.where(on, sess, 0)] + offset, self.c_close[np.where(on, sess, 0)])
        return np.where(on, c_on, self.c_close[prev])

    def day_index(self, day) -> int:
        """Index of a simulated session; KeyError otherwise."""
        if type(day) is dt.date:  # the day itself (pd.Timestamp(day).date() == day; making one is ~10 us)
            d = np.datetime64(day, "D")
        else:
            d = np.datetime64(pd.Timestamp(day).date(), "D")
        i = int(self.dates[: self.n_sim].searchsorted(d))
        if i >= self.n_sim or self.dates[i] != d:
            raise KeyError(f"{pd.Timestamp(day).date()} is not a simulated session")
        return i


def intraday_profile(n: np.ndarray, open_boost: float, close_boost: float,
                     tau_open: float, tau_close: float) -> np.ndarray:
    """(len(n), 390) U-shaped weights, zero past each session's length, each row summing to 1."""
    pos = np.arange(390.0)[None, :]
    n = np.asarray(n)[:, None]
    w = 1.0 + open_boost * np.exp(-pos / tau_open) + close_boost * np.exp(-(n - 1 - pos) / tau_close)
    w = np.where(pos < n, w, 0.0)
    return w / w.sum(axis=1, keepdims=True)


def build_timeline(scenario: Scenario, start, end, calendar: MarketCalendar | None = None) -> Timeline:
    cal = calendar or default_calendar()
    sim = cal.sessions(start, end)
    if len(sim) == 0:
        raise ValueError(f"no sessions between {start} and {end}")
    ep = epoch_days(scenario, cal)
    d0 = np.datetime64(pd.Timestamp(sim[0]).date(), "D")
    d1 = np.datetime64(pd.Timestamp(sim[-1]).date(), "D")
    i0 = int(np.searchsorted(ep.dates, d0))
    i1 = int(np.searchsorted(ep.dates, d1)) + 1
    last_ext = min(d1 + np.timedelta64(EXTENSION_DAYS, "D"), max(LAST_EXTENSION, d1))
    i2 = max(int(np.searchsorted(ep.dates, last_ext, side="right")), i1)
    sl = slice(i0, i2)
    dates, opens, closes, n_min = ep.dates[sl], ep.open_ns[sl], ep.close_ns[sl], ep.n_minutes[sl]
    gap_var, intra_var, c_open, c_close = ep.gap_var[sl], ep.intra_var[sl], ep.c_open[sl], ep.c_close[sl]

    D = i1 - i0
    prof = intraday_profile(n_min[:D], scenario.intraday.vol_open_boost, scenario.intraday.vol_close_boost, 20.0, 30.0)
    c_grid = prof * intra_var[:D, None]
    # the clock at each minute's end: the session's open plus a within-row cumsum (row by row,
    # so a day's values never depend on the other rows)
    c_end_grid = c_open[:D, None] + np.cumsum(c_grid, axis=1)
    valid = np.zeros((D, ROW), dtype=bool)
    valid[:, 0] = True
    valid[:, 1:] = np.arange(390)[None, :] < n_min[:D, None]
    flat = np.flatnonzero(valid.ravel())
    is_gap = (flat % ROW) == 0
    minute_step = np.flatnonzero(~is_gap)
    gap_step = np.flatnonzero(is_gap)
    mday = flat[~is_gap] // ROW
    mpos = flat[~is_gap] % ROW - 1
    c_min = c_grid[mday, mpos]
    c_end = c_end_grid[mday, mpos]
    minute_ns = opens[mday] + mpos * NS_MIN
    day_first = np.searchsorted(mday, np.arange(D))

    cal_first = dates[0]
    span = int((dates[-1] - cal_first).astype(np.int64)) + 1
    cal_session = np.full(span, -1, dtype=np.int64)
    cal_session[(dates - cal_first).astype(np.int64)] = np.arange(len(dates))
    has = cal_session >= 0
    cal_prev = np.maximum.accumulate(np.where(has, cal_session, 0))

    return Timeline(
        dates=dates, open_ns=opens, close_ns=closes, n_minutes=n_min, gap_var=gap_var,
        c_open=c_open, c_close=c_close, n_sim=D, minute_ns=minute_ns, minute_day=mday,
        minute_pos=mpos, day_first_minute=day_first, c_min=c_min, c_end=c_end, valid=valid,
        step_of_flat=flat, minute_step=minute_step, gap_step=gap_step,
        cal_first=cal_first, cal_session=cal_session, cal_prev=cal_prev, first=i0, prof=prof,
    )

# ========================================================================== path
@dataclass
class EventRecord:
    """An event that happened (or will, for pricing) with its realized moment."""

    kind: str
    label: str
    realized_ns: int      # when the jump is in prices (bar close, or the open for gaps)
    step: int             # step index in the path, -1 beyond the simulated range
    jump_var: float       # physical variance of the jump (log-return^2) priced before it
    move: float = 0.0     # realized log-return of the jump (0 beyond the range)
    vol_kick: float = 0.0  # change of the fast factor at the event


@dataclass
class UnderlyingPath:
    """Everything simulated: bars, variance state per step, archetypes, events."""

    timeline: Timeline
    model: VarianceModel
    yf: np.ndarray           # fast factor after each step
    ys: np.ndarray           # slow factor after each step
    eps: np.ndarray          # premium noise after each step
    spx_open: np.ndarray
    spx_high: np.ndarray
    spx_low: np.ndarray
    spx_close: np.ndarray
    spx_volume: np.ndarray
    day_open: np.ndarray     # first bar open (opening print) per session
    day_close: np.ndarray    # last bar close per session
    archetype: np.ndarray    # code per session (index into ARCHETYPES)
    day_mult: np.ndarray
    vix_step: np.ndarray     # VIX after each step
    vix9d_step: np.ndarray
    events: list[EventRecord]
    event_R: np.ndarray      # realized ns of all events (sorted)
    event_cumvar: np.ndarray  # cumulative physical jump variance, aligned with event_R
    ignored_events: list[str]
    c_step: np.ndarray = None      # variance clock after each step
    t_step: np.ndarray = None      # quote moment of each step (bar close; the open for a gap), UTC ns
    step_day: np.ndarray = None    # session index of each step
    sigma_step: np.ndarray = None  # standard deviation of each step's log return
    #: the calendar-wide daily layer the sessions were drawn from (the same for a day whatever range
    #: is asked): what strike listings look back on before the first simulated session
    daily: "DailyLayer" = None
    #: the calendar-wide sessions and variance clock (:func:`epoch_days`)
    epoch: "EpochDays" = None

    def event_variance(self, t0_ns, t1_ns):
        """Physical jump variance of events realized in (t0, t1]."""
        cum = np.concatenate([[0.0], self.event_cumvar])
        i0 = np.searchsorted(self.event_R, t0_ns, side="right")
        i1 = np.searchsorted(self.event_R, t1_ns, side="right")
        return cum[i1] - cum[i0]




def _solve_kick(model: VarianceModel, yf, ys, eps, dC30, target_vix) -> float:
    """Change of the fast factor that moves VIX from the state to ``target_vix``."""
    grid = np.linspace(-6.0, 8.0, 2801)
    vals = model.vix(yf + grid, ys, eps, dC30)
    if target_vix <= vals[0]:
        return float(grid[0])
    if target_vix >= vals[-1]:
        return float(grid[-1])
    return float(np.interp(target_vix, vals, grid))


def _epoch_dC30(ep: EpochDays, j: int) -> float:
    """Variance-days from the open of calendar session ``j`` to the same moment 30 days later."""
    target = ep.dates[j] + np.timedelta64(30, "D")
    k = min(int(np.searchsorted(ep.dates, target, side="right")) - 1, len(ep.dates) - 1)
    c = ep.c_open[k] if ep.dates[k] == target else ep.c_close[k]
    return float(c - ep.c_open[j])


# ================================================================== daily layer
@dataclass
class DailyLayer:
    """Per calendar session (index j into :func:`epoch_days`): the day's draws, the variance
    state at the start (``S_*``, the previous close) and at the close (``F_*``), the returns and
    the index level; events placed on the calendar."""

    arch: np.ndarray
    day_mult: np.ndarray
    shape_u: np.ndarray       # (N, 4): direction, size, timing, spare
    size: np.ndarray          # trend drift size, day-sigmas
    zg: np.ndarray            # overnight score
    zi: np.ndarray            # open-to-close score (archetype drift included)
    x: np.ndarray             # the day's standardized total shock (drives the factors)
    wf: np.ndarray
    ws: np.ndarray
    we: np.ndarray
    lin_f: np.ndarray         # kicks spread over the day (episodes)
    lin_s: np.ndarray         # slow-factor kicks spread over the day (initial VIX)
    S_f: np.ndarray
    S_s: np.ndarray
    S_e: np.ndarray
    F_f: np.ndarray
    F_s: np.ndarray
    F_e: np.ndarray
    gap_ret: np.ndarray
    day_ret: np.ndarray
    log_open: np.ndarray
    log_close: np.ndarray
    # events on the calendar: one row per event (scheduled, then injected / episodes)
    ev_kind: list
    ev_label: list
    ev_day: np.ndarray        # calendar session index
    ev_pos: np.ndarray        # minute of the session (-1: the gap)
    ev_spread: np.ndarray     # minutes over which the jump unfolds
    ev_move: np.ndarray       # log return of the jump
    ev_kick: np.ndarray       # fast-factor kick
    ev_jvar: np.ndarray       # physical jump variance priced before (scheduled only)
    ev_realized: np.ndarray   # realized moment, UTC ns
    event_R: np.ndarray       # sorted realized ns of priced (scheduled) events, calendar-wide
    event_cumvar: np.ndarray
    ignored: list
    coef: dict


_BASE_CACHE: OrderedDict = OrderedDict()


def _base_key(seed, scenario: Scenario, calendar) -> tuple:
    data = scenario.model_dump(mode="json")
    data["events"] = {k: v for k, v in data["events"].items() if k not in ("injected", "episodes")}
    data.pop("name", None)
    data.pop("description", None)
    data.pop("extends", None)
    return (int(seed), repr(data), id(calendar.xcal))


def _spread_weights(n: int) -> np.ndarray:
    """How a scheduled intraday release's jump unfolds: half in the first minute, then halving."""
    w = 0.5 ** np.arange(1, n + 1, dtype=float)
    return w / w.sum()


def _base_layer(scenario: Scenario, seed: int, calendar: MarketCalendar, model: VarianceModel):
    key = _base_key(seed, scenario, calendar)
    got = _BASE_CACHE.get(key)
    if got is not None:
        _BASE_CACHE.move_to_end(key)
        return got
    ep = epoch_days(scenario, calendar)
    N = len(ep.dates)
    var, arch_spec, und = scenario.variance, scenario.archetypes, scenario.underlying
    rng = substreams(seed)
    df = und.daily_tail_df
    zg = np.clip(_student(rng["gap_scores"], df, N), -6.0, 6.0)
    e = np.clip(_student(rng["day_scores"], df, N), -6.0, 6.0)
    wf = rng["variance_fast"].standard_normal(N)
    ws = rng["variance_slow"].standard_normal(N)
    we = rng["premium"].standard_normal(N)
    probs = np.array([getattr(arch_spec, a).probability for a in ARCHETYPES])
    cum = np.cumsum(probs / probs.sum())
    arch = np.minimum(np.searchsorted(cum, rng["archetype_draw"].random(N), side="right"), len(ARCHETYPES) - 1)
    shape_u = rng["archetype_shape"].random((N, 4))
    shape_n = rng["archetype_shape"].standard_normal(N)
    mults = np.array([getattr(arch_spec, a).vol_mult for a in ARCHETYPES])
    day_mult = mults[arch]

    # the open-to-close score: noise plus the archetype's net move (day-sigmas)
    zi = e.copy()
    a0 = arch_spec.calm_range
    phi = 2.0 ** (-1.0 / a0.reversion_half_life_minutes)
    calm = math.sqrt((1.0 - phi ** (2 * 390)) / ((1.0 - phi * phi) * 390))
    zi[arch == 0] *= calm
    size = np.zeros(N)
    for code, spec, sign in ((1, arch_spec.trend_up, 1.0), (2, arch_spec.trend_down, -1.0)):
        rows = arch == code
        size[rows] = np.maximum(spec.drift_sigmas + spec.drift_dispersion * shape_n[rows], 0.0)
        zi[rows] += sign * size[rows]
    direction = np.where(shape_u[:, 0] < 0.5, -1.0, 1.0)
    rows = arch == 3
    zi[rows] -= direction[rows] * arch_spec.fakeout.reversal_sigmas
    sp = arch_spec.event_spike_fade
    sdir = np.where(shape_u[:, 0] < sp.down_probability, -1.0, 1.0)
    rows = arch == 4
    zi[rows] += sdir[rows] * sp.spike_sigmas * (1.0 - sp.fade_fraction)

    gv = ep.gap_var
    iv = ep.intra_var * day_mult ** 2
    x = (np.sqrt(gv) * zg + np.sqrt(iv) * zi) / np.sqrt(gv + iv)

    rho = var.return_correlation
    cr = math.sqrt(max(1.0 - rho * rho, 0.0))
    a_f = 2.0 ** (-1.0 / var.fast.half_life_days)
    a_s = 2.0 ** (-1.0 / var.slow.half_life_days)
    a_e = 2.0 ** (-1.0 / scenario.vol_index.premium_half_life_days)
    b_f = var.fast.stdev * math.sqrt(1 - a_f * a_f)
    b_s = var.slow.stdev * math.sqrt(1 - a_s * a_s)
    b_e = scenario.vol_index.premium_noise * math.sqrt(1 - a_e * a_e)
    coef = dict(a_f=a_f, a_s=a_s, a_e=a_e, b_f=b_f, b_s=b_s, b_e=b_e, rho=rho, cr=cr)
    inp_f = b_f * (rho * x + cr * wf)
    inp_s = b_s * (rho * x + cr * ws)
    inp_e = b_e * we
    F_e = lfilter([1.0], [1.0, -a_e], inp_e)
    F_s = lfilter([1.0], [1.0, -a_s], inp_s)
    F_f0 = lfilter([1.0], [1.0, -a_f], inp_f)
    S_f0 = np.concatenate([[0.0], F_f0[:-1]])
    S_s = np.concatenate([[0.0], F_s[:-1]])

    # ------------------------------------------------------ scheduled events
    ev_spec = scenario.events
    sched = scheduled_events(ev_spec, pd.Timestamp(ep.dates[0]).date(), pd.Timestamp(ep.dates[-1]).date())
    kinds = [s.kind for s in sched]
    at = np.array([s.at_ns for s in sched], dtype=np.int64)
    j = np.searchsorted(ep.close_ns, at, side="right")
    keep = j < N
    sched = [s for s, k in zip(sched, keep) if k]
    kinds = [k for k, kk in zip(kinds, keep) if kk]
    at, j = at[keep], j[keep]
    M = len(sched)
    intra = at >= ep.open_ns[j]
    pos = np.where(intra, (at - ep.open_ns[j]) // NS_MIN, -1)
    specs = [getattr(ev_spec, k) for k in kinds]
    std = np.array([s.jump_stdev_pct for s in specs]) / 100.0
    edf = np.array([s.jump_df for s in specs], dtype=float)
    crush = np.array([s.vol_crush for s in specs], dtype=float)
    spread = np.where(intra, np.array([s.spread_minutes for s in specs], dtype=np.int64), 1)
    rj = rng["event_jumps"]
    nrm = rj.standard_normal(M)
    chi = 2.0 * rj.standard_gamma(edf / 2.0) if M else np.zeros(0)
    t = nrm / np.sqrt(np.maximum(chi, 1e-12) / edf) * np.sqrt((edf - 2.0) / edf)
    move = np.clip(t, -3.5, 3.5) * std
    sd = np.sqrt(model.L2 * np.exp(S_f0[j] + S_s[j]) / 252.0)
    xe = move / sd
    kick = var.jump_leverage_down * np.maximum(-xe, 0.0) - var.jump_leverage_up * np.maximum(xe, 0.0) - crush
    realized = np.where(intra, ep.open_ns[j] + (pos + 1) * NS_MIN, ep.open_ns[j])
    jvar = std ** 2
    order = np.argsort(realized, kind="stable")
    event_R, event_cumvar = realized[order], np.cumsum(jvar[order])

    kick_f = np.zeros(N)
    np.add.at(kick_f, j, kick)
    bump = np.where(arch == 4, sp.vol_bump * np.where(sdir < 0, 1.0, 0.5), 0.0)
    kick_f += bump

    lin_s = np.zeros(N)
    lin_f = np.zeros(N)
    if var.initial_vix is not None:
        ja = int(np.searchsorted(ep.dates, np.datetime64(und.anchor_date, "D")))
        if 0 < ja < N:
            F_f1 = lfilter([1.0], [1.0, -a_f], inp_f + kick_f)
            S_e = np.concatenate([[0.0], F_e[:-1]])
            dC = _epoch_dC30(ep, ja)
            grid = np.linspace(-5.0, 5.0, 2001)
            vals = model.vix(F_f1[ja - 1], F_s[ja - 1] + grid, S_e[ja], dC)
            lin_s[ja - 1] = float(np.interp(var.initial_vix, vals, grid))
            F_s = lfilter([1.0], [1.0, -a_s], inp_s + lin_s)
    base = dict(ep=ep, N=N, arch=arch, day_mult=day_mult, shape_u=shape_u, size=size, zg=zg, zi=zi, x=x,
                wf=wf, ws=ws, we=we, inp_f=inp_f, kick_f=kick_f, lin_f=lin_f, lin_s=lin_s, F_s=F_s, F_e=F_e,
                coef=coef, kinds=kinds, j=j, pos=pos, spread=spread, move=move, kick=kick, jvar=jvar,
                realized=realized, event_R=event_R, event_cumvar=event_cumvar, sdir=sdir, direction=direction)
    # returns and the level of the path without injected events: its anchor fixes the level
    F_f = lfilter([1.0], [1.0, -a_f], inp_f + kick_f + lin_f)
    G, R = _returns(scenario, model, base, F_f, F_s)
    base["C"] = np.cumsum(G + R)
    ja = int(np.clip(np.searchsorted(ep.dates, np.datetime64(und.anchor_date, "D")), 0, N - 1))
    prev_c = base["C"][ja - 1] if ja > 0 else 0.0
    base["offset"] = math.log(und.start_level) - (prev_c + G[ja])
    _BASE_CACHE[key] = base
    while len(_BASE_CACHE) > 8:
        _BASE_CACHE.popitem(last=False)
    return base


def _returns(scenario, model, base, F_f, F_s, extra_gap=None, extra_day=None):
    """Gap and open-to-close log returns of every calendar session from the factor paths."""
    ep, und = base["ep"], scenario.underlying
    S_f = np.concatenate([[0.0], F_f[:-1]])
    S_s = np.concatenate([[0.0], F_s[:-1]])
    v = model.L2 * np.exp(S_f + S_s) / 252.0
    gv, iv = ep.gap_var, ep.intra_var
    m2 = base["day_mult"] ** 2
    G = np.sqrt(v * gv) * base["zg"] + und.drift * gv / 252.0 - 0.5 * v * gv
    R = np.sqrt(v * iv * m2) * base["zi"] + und.drift * iv / 252.0 - 0.5 * v * iv * m2
    pre = base["pos"] < 0
    np.add.at(G, base["j"][pre], base["move"][pre])
    np.add.at(R, base["j"][~pre], base["move"][~pre])
    if extra_gap is not None:
        G = G + extra_gap
        R = R + extra_day
    return G, R


def daily_layer(scenario: Scenario, seed: int, calendar: MarketCalendar, model: VarianceModel,
                first: int, n_sim: int) -> DailyLayer:
    """The daily layer with the scenario's injected events and episodes applied.

    ``first``/``n_sim`` (calendar index of the first simulated session, number of sessions)
    only place the events anchored by a session count; dated ones sit on their date.
    """
    b = _base_layer(scenario, seed, calendar, model)
    ep, N, c = b["ep"], b["N"], b["coef"]
    a_f, a_s = c["a_f"], c["a_s"]
    kick_f = b["kick_f"].copy()
    lin_f = b["lin_f"].copy()
    extra_gap = np.zeros(N)
    extra_day = np.zeros(N)
    inj_rows = []   # (kind, label, j, pos, move, kick, realized)
    ignored: list[str] = []
    ev_spec = scenario.events

    placed = []
    for i, inj in enumerate(ev_spec.injected):
        if inj.at is not None:
            ts = pd.Timestamp(inj.at)
            ts = ts.tz_localize(NY) if ts.tzinfo is None else ts.tz_convert(NY)
        else:
            if inj.session >= n_sim:
                ignored.append(f"events.injected[{i}] (session {inj.session} is past the end)")
                continue
            day = pd.Timestamp(ep.dates[first + inj.session])
            hh, mm = map(int, inj.time.split(":"))
            ts = pd.Timestamp(dt.datetime.combine(day.date(), dt.time(hh, mm)), tz=NY)
        j = int(np.searchsorted(ep.close_ns, ts.value, side="right"))
        if j >= N or ts.value < ep.open_ns[0]:
            ignored.append(f"events.injected[{i}] ({ts}) is outside the calendar")
            continue
        pos = int((ts.value - ep.open_ns[j]) // NS_MIN) if ts.value >= ep.open_ns[j] else -1
        placed.append((j, pos, "injected", i, inj))
    for i, epi in enumerate(ev_spec.episodes):
        if epi.start is not None:
            d0 = int(np.searchsorted(ep.dates, np.datetime64(epi.start, "D")))
        else:
            d0 = first + epi.after_sessions
            if epi.after_sessions + epi.sessions > n_sim:
                ignored.append(f"events.episodes[{i}] does not fit in the market's dates")
                continue
        if d0 + epi.sessions > N:
            ignored.append(f"events.episodes[{i}] does not fit in the calendar")
            continue
        placed.append((d0, -2, "episode", i, epi))
    placed.sort(key=lambda p: (p[0], p[1]))

    def state_at(j):
        F_f = lfilter([1.0], [1.0, -a_f], b["inp_f"] + kick_f + lin_f)
        F_s = b["F_s"]
        S = lambda F: F[j - 1] if j > 0 else 0.0  # noqa: E731
        return S(F_f), S(F_s), S(b["F_e"])

    model = VarianceModel(scenario)
    episodes = []
    for j, pos, kind, i, spec in placed:
        if kind == "injected":
            move = math.log1p(spec.move_pct / 100.0)
            if pos < 0:
                extra_gap[j] += move
            else:
                extra_day[j] += move
            kick = 0.0
            if spec.vol_jump:
                f0, s0, e0 = state_at(j)
                dC = _epoch_dC30(ep, j)
                before = float(model.vix(f0, s0, e0, dC))
                kick = _solve_kick(model, f0, s0, e0, dC, max(before + spec.vol_jump, 1.0))
                kick_f[j] += kick
            realized = int(ep.open_ns[j] + (pos + 1) * NS_MIN) if pos >= 0 else int(ep.open_ns[j])
            inj_rows.append(("injected", spec.label, j, pos, move, kick, realized))
        else:
            d1 = j + spec.sessions - 1
            if spec.vol_jump:
                f0, s0, e0 = state_at(j)
                dC = _epoch_dC30(ep, j)
                before = float(model.vix(f0, s0, e0, dC))
                kick = _solve_kick(model, f0, s0, e0, dC, max(before + spec.vol_jump, 1.0))
                w = a_f ** (d1 - np.arange(j, d1 + 1)).astype(float)
                lin_f[j:d1 + 1] += kick / w.sum()
            episodes.append((j, d1, math.log1p(spec.move_pct / 100.0)))
            inj_rows.append(("episode", spec.label, j, -1, math.log1p(spec.move_pct / 100.0), 0.0,
                             int(ep.open_ns[j])))

    F_f = lfilter([1.0], [1.0, -a_f], b["inp_f"] + kick_f + lin_f)
    F_s = b["F_s"]
    G, R = _returns(scenario, model, b, F_f, F_s, extra_gap, extra_day)
    if episodes:
        m2iv = ep.intra_var * b["day_mult"] ** 2
        for d0, d1, target in episodes:
            got = R[d0:d1 + 1].sum() + G[d0 + 1:d1 + 1].sum()
            w = m2iv[d0:d1 + 1]
            R[d0:d1 + 1] += (target - got) * w / w.sum()
    C = np.cumsum(G + R)
    log_close = b["offset"] + C
    log_open = log_close - R
    S_f = np.concatenate([[0.0], F_f[:-1]])
    S_s = np.concatenate([[0.0], F_s[:-1]])
    S_e = np.concatenate([[0.0], b["F_e"][:-1]])

    kinds = list(b["kinds"]) + [r[0] for r in inj_rows]
    labels = list(b["kinds"]) + [r[1] for r in inj_rows]
    cat = lambda base_arr, k, dtype: np.concatenate([base_arr, np.array([r[k] for r in inj_rows], dtype=dtype)])  # noqa: E731
    return DailyLayer(
        arch=b["arch"], day_mult=b["day_mult"], shape_u=b["shape_u"], size=b["size"], zg=b["zg"], zi=b["zi"],
        x=b["x"], wf=b["wf"], ws=b["ws"], we=b["we"], lin_f=lin_f, lin_s=b["lin_s"],
        S_f=S_f, S_s=S_s, S_e=S_e, F_f=F_f, F_s=F_s, F_e=b["F_e"], gap_ret=G, day_ret=R,
        log_open=log_open, log_close=log_close,
        ev_kind=kinds, ev_label=labels,
        ev_day=cat(b["j"], 2, np.int64), ev_pos=cat(b["pos"], 3, np.int64),
        ev_spread=np.concatenate([b["spread"], np.ones(len(inj_rows), np.int64)]),
        ev_move=cat(b["move"], 4, float), ev_kick=np.concatenate([b["kick"], np.array([r[5] for r in inj_rows], float)]),
        ev_jvar=np.concatenate([b["jvar"], np.zeros(len(inj_rows))]),
        ev_realized=cat(b["realized"], 6, np.int64),
        event_R=b["event_R"], event_cumvar=b["event_cumvar"], ignored=ignored, coef=c,
    )


# ================================================================ intraday layer
def simulate(scenario: Scenario, seed: int, start, end, calendar: MarketCalendar | None = None) -> UnderlyingPath:
    """The market's path for the sessions in ``[start, end]``: the daily layer sliced, the minutes
    of each session drawn from that session's own stream (see the module docstring)."""
    cal = calendar or default_calendar()
    tl = build_timeline(scenario, start, end, cal)
    model = VarianceModel(scenario)
    D, i0 = tl.n_sim, tl.first
    L = daily_layer(scenario, seed, cal, model, i0, D)
    c = L.coef
    und, arch_spec = scenario.underlying, scenario.archetypes
    J = np.arange(i0, i0 + D)
    valid = tl.valid
    vmin = valid[:, 1:]
    nmin = tl.n_minutes[:D]
    flat = tl.step_of_flat
    prof = tl.prof
    ordinals = tl.dates[:D].astype(np.int64)

    # --------------------------------------------------- each session's own draws
    s = np.empty((D, 390))
    rng_ext = np.empty((D, 2, 390))
    vol_n = np.empty((D, 390))
    eps_n = np.empty((D, 390))
    for r in range(D):
        g = day_stream(seed, ordinals[r])
        s[r] = _student(g, und.minute_tail_df, 390)
        rng_ext[r] = g.standard_normal((2, 390))
        vol_n[r] = g.standard_normal(390)
        eps_n[r] = g.standard_normal(390)
    np.clip(s, -8.0, 8.0, out=s)
    s *= vmin
    w = np.sqrt(prof)
    q = w * s                                           # minute shocks in day-sigmas
    arch = L.arch[J]
    pos = np.arange(390)[None, :]

    def add_move(rows, g, total):
        if len(rows) == 0:
            return
        g = g * prof[rows]
        den = g.sum(axis=1, keepdims=True)
        q[rows] += total[:, None] * g / np.where(den > 0, den, 1.0)

    rows = np.flatnonzero(arch == 0)  # calm range: the path reverts to the open
    if len(rows):
        phi = 2.0 ** (-1.0 / arch_spec.calm_range.reversion_half_life_minutes)
        xr = lfilter([1.0], [1.0, -phi], q[rows], axis=1)
        q[rows] = np.diff(xr, axis=1, prepend=0.0) * vmin[rows]
    for code, sign in ((1, 1.0), (2, -1.0)):
        rows = np.flatnonzero(arch == code)
        add_move(rows, vmin[rows].astype(float), sign * L.size[J[rows]])
    rows = np.flatnonzero(arch == 3)  # fake-out
    if len(rows):
        fk = arch_spec.fakeout
        direction = np.where(L.shape_u[J[rows], 0] < 0.5, -1.0, 1.0)
        Lm = fk.opening_range_minutes
        add_move(rows, np.broadcast_to(pos < Lm, (len(rows), 390)).astype(float), direction * fk.fake_sigmas)
        add_move(rows, ((pos >= Lm) & vmin[rows]).astype(float), -direction * (fk.fake_sigmas + fk.reversal_sigmas))
    kick_grid = np.zeros((D, ROW))
    rows = np.flatnonzero(arch == 4)  # spike and fade: the spike unfolds over a few minutes
    if len(rows):
        sp = arch_spec.event_spike_fade
        direction = np.where(L.shape_u[J[rows], 0] < sp.down_probability, -1.0, 1.0)
        lo, hi = 30, np.maximum(nmin[rows] - 100, 31)
        m_star = (lo + L.shape_u[J[rows], 2] * (hi - lo)).astype(np.int64)
        after = pos - m_star[:, None]
        n_sp = sp.spike_minutes
        gw = np.where((after >= 0) & (after < n_sp), np.exp(-np.maximum(after, 0) / _SPIKE_DECAY_MINUTES), 0.0)
        gw = gw / gw.sum(axis=1, keepdims=True)
        q[rows] += (direction * sp.spike_sigmas)[:, None] * gw
        fade = np.where(after >= n_sp, np.exp(-math.log(2.0) * (after - n_sp) / sp.fade_half_life_minutes), 0.0)
        add_move(rows, fade * vmin[rows], -direction * sp.fade_fraction * sp.spike_sigmas)
        kick_grid[rows, 1 + m_star] += sp.vol_bump * np.where(direction < 0, 1.0, 0.5)
    # bridge: the session's shocks add up to the daily layer's score
    q += (L.zi[J] - q.sum(axis=1))[:, None] * prof
    Z = np.cumsum(q, axis=1)

    # ------------------------------------------------ events of these sessions
    jump_grid = np.zeros((D, 390))
    gap_kick = np.zeros(D)
    sel = np.flatnonzero((L.ev_day >= i0) & (L.ev_day < i0 + D))
    for e in sel:
        r = int(L.ev_day[e] - i0)
        p = int(L.ev_pos[e])
        if L.ev_kind[e] == "episode":
            continue
        if p < 0:
            gap_kick[r] += L.ev_kick[e]
            continue
        p = min(p, int(nmin[r]) - 1)
        n = int(L.ev_spread[e])
        ww = _spread_weights(n)
        for k in range(n):
            jump_grid[r, min(p + k, int(nmin[r]) - 1)] += L.ev_move[e] * ww[k]
        kick_grid[r, 1 + p] += L.ev_kick[e]
    kick_grid[:, 0] += gap_kick

    # ------------------------------------------------- the factors inside the day
    gv = tl.gap_var[:D]
    intra = (1.0 - und.overnight_variance_share) * nmin / 390.0
    m = L.day_mult[J]
    iv = intra * m * m
    norm = np.sqrt(gv + iv)
    X = np.empty((D, ROW))
    X[:, 0] = np.sqrt(gv) * L.zg[J] / norm
    X[:, 1:] = X[:, :1] + (np.sqrt(iv) / norm)[:, None] * Z
    U = np.empty((D, ROW))
    tot = gv + intra
    U[:, 0] = gv / tot
    U[:, 1:] = (gv[:, None] + np.cumsum(prof * intra[:, None], axis=1)) / tot[:, None]
    U[:, 1:] = np.where(vmin, U[:, 1:], 1.0)
    K = np.cumsum(kick_grid, axis=1)
    a_f, a_s, a_e = c["a_f"], c["a_s"], c["a_e"]
    yf2 = (a_f ** U) * L.S_f[J][:, None] + c["b_f"] * c["rho"] * X \
        + U * (c["b_f"] * c["cr"] * L.wf[J] + L.lin_f[J])[:, None] + K
    ys2 = (a_s ** U) * L.S_s[J][:, None] + c["b_s"] * c["rho"] * X \
        + U * (c["b_s"] * c["cr"] * L.ws[J] + L.lin_s[J])[:, None]
    # premium noise: the daily AR(1) plus a small bridge (zero at both ends) for intraday VIX wiggle
    bw = np.cumsum(eps_n * w * vmin, axis=1)
    bridge = bw - np.cumsum(prof, axis=1) * bw[:, -1:]
    ep2 = np.empty((D, ROW))
    ep2[:, 0] = (a_e ** U[:, 0]) * L.S_e[J] + U[:, 0] * c["b_e"] * L.we[J]
    ep2[:, 1:] = (a_e ** U[:, 1:]) * L.S_e[J][:, None] + U[:, 1:] * (c["b_e"] * L.we[J])[:, None] \
        + 0.5 * scenario.vol_index.premium_noise * bridge

    # --------------------------------------------------------------- returns
    # The minutes' variance follows the factors' response to the day's own shocks (intraday
    # clustering), not the event kicks: an event changes nothing before its minute, and the
    # bridge below spreads a day's residual over all its minutes.
    vprev = np.empty((D, ROW))
    vprev[:, 0] = model.L2 * np.exp(L.S_f[J] + L.S_s[J])
    vprev[:, 1:] = model.L2 * np.exp(yf2[:, :-1] - K[:, :-1] + ys2[:, :-1])
    c_min = prof * intra[:, None]
    sig_unit = np.sqrt(vprev[:, 1:] * intra[:, None] / 252.0) * m[:, None]   # a day-sigma at that minute
    r = sig_unit * q + (und.drift / 252.0) * c_min - 0.5 * vprev[:, 1:] * c_min * (m * m)[:, None] / 252.0
    r += jump_grid
    r *= vmin
    r += (L.day_ret[J] - r.sum(axis=1))[:, None] * prof
    logS = L.log_open[J][:, None] + np.cumsum(r, axis=1)
    sigma2 = np.empty((D, ROW))
    sigma2[:, 0] = np.sqrt(vprev[:, 0] * gv / 252.0)
    sigma2[:, 1:] = np.sqrt(vprev[:, 1:] * c_min / 252.0) * m[:, None]

    # ------------------------------------------------------------------ bars
    ms = tl.minute_step
    mday, mpos = tl.minute_day, tl.minute_pos
    close = np.round(np.exp(logS[mday, mpos]), 2)
    open_ = np.empty_like(close)
    open_[1:] = close[:-1]
    first = tl.day_first_minute
    day_open = np.round(np.exp(L.log_open[J]), 2)
    open_[first] = day_open
    sig_m = sigma2[:, 1:][mday, mpos]
    ext = np.abs(rng_ext[mday, :, mpos]) * (0.55 * sig_m * close)[:, None]
    high = np.ceil((np.maximum(open_, close) + ext[:, 0]) * 100.0) / 100.0
    low = np.floor((np.minimum(open_, close) - ext[:, 1]) * 100.0) / 100.0
    vprof = intraday_profile(nmin, scenario.intraday.volume_open_boost, scenario.intraday.volume_close_boost, 15.0, 20.0)
    vprof = vprof[mday, mpos]
    vol_level = np.sqrt(vprev[:, 1:][mday, mpos] / (model.L2 * math.exp(0.5 * (model.sf ** 2 + model.ss ** 2))))
    noise = np.exp(0.25 * vol_n[mday, mpos] - 0.03125)
    volume = np.round(scenario.intraday.daily_volume * vprof * (nmin[mday] / 390.0) * vol_level * noise)
    day_close = close[first + nmin - 1]

    # ------------------------------------------------------------ event records
    tl_lo, tl_hi = i0, i0 + len(tl.dates)
    records: list[EventRecord] = []
    for e in range(len(L.ev_kind)):
        jd = int(L.ev_day[e])
        if not (tl_lo <= jd < tl_hi):
            continue
        rr = jd - i0
        p = int(L.ev_pos[e])
        if rr < D:
            step = int(tl.gap_step[rr]) if p < 0 else int(ms[first[rr] + min(p, int(nmin[rr]) - 1)])
            move = float(L.ev_move[e])
        else:
            step, move = -1, 0.0
        records.append(EventRecord(L.ev_kind[e], L.ev_label[e], int(L.ev_realized[e]), step,
                                   float(L.ev_jvar[e]), move, float(L.ev_kick[e])))
    records.sort(key=lambda ev: (ev.realized_ns, ev.kind))

    path = UnderlyingPath(
        timeline=tl, model=model, yf=yf2.ravel()[flat], ys=ys2.ravel()[flat], eps=ep2.ravel()[flat],
        spx_open=open_, spx_high=high, spx_low=low, spx_close=close, spx_volume=volume.astype(np.float64),
        day_open=day_open, day_close=day_close, archetype=arch, day_mult=m, vix_step=None, vix9d_step=None,
        events=records, event_R=L.event_R, event_cumvar=L.event_cumvar, ignored_events=list(L.ignored),
        daily=L, epoch=epoch_days(scenario, cal),
    )
    # ---------------------------------------------------- VIX, VIX9D per step
    K_ = len(flat)
    step_day = flat // ROW
    c_cum = np.empty(K_)
    c_cum[tl.gap_step] = tl.c_open[:D]
    c_cum[ms] = tl.c_end
    t_step = np.empty(K_, dtype=np.int64)
    t_step[tl.gap_step] = tl.open_ns[:D]
    t_step[ms] = tl.minute_ns + NS_MIN
    off = c_cum - tl.c_open[step_day]
    dC30 = tl.clock_after(step_day, off, 30) - c_cum
    dC9 = tl.clock_after(step_day, off, 9) - c_cum
    ev30 = path.event_variance(t_step, t_step + 30 * NS_DAY)
    ev9 = path.event_variance(t_step, t_step + 9 * NS_DAY)
    path.vix_step = model.vix(path.yf, path.ys, path.eps, dC30, ev30)
    path.vix9d_step = model.vix9d(path.yf, path.ys, path.eps, dC9, ev9)
    path.c_step = c_cum
    path.t_step = t_step
    path.step_day = step_day
    path.sigma_step = sigma2.ravel()[flat]
    return path
