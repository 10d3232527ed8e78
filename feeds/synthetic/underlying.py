"""The SPX minute path, its variance state, VIX and VIX9D: one vectorized simulation per market.

Layout. Every session is a row of 391 *steps*: the overnight gap (column 0)
then up to 390 one-minute bars (210 on an early close; the rest of the row is
padding). Each step carries a share ``c`` of a nominal day's variance (the gap
``overnight_variance_share``, the minutes a U-shaped profile), so the
cumulative sum of ``c`` is a *variance clock* in variance-days; expectations
and option surfaces run on it.

Shocks are *scores* ``s`` in units of the step's own standard deviation:
Student-t noise, plus the day archetype's drifts, reversion and spikes. The
two log-variance factors are AR(1) in steps (``scipy.signal.lfilter`` over the
whole year at once), driven by ``rho * s`` plus their own noise (the leverage
effect), plus explicit kicks from events. The step's return is then
``sigma_k * s_k`` with ``sigma_k`` from the variance *before* the step, plus
drift, event jumps and episode corrections. No Python loop runs per minute.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from strikebench.calendar import NY, MarketCalendar, default_calendar

from .events import scheduled_events
from .scenario import ARCHETYPES, Scenario
from .vol import VarianceModel

__all__ = ["Timeline", "UnderlyingPath", "simulate", "substreams", "STREAMS"]

#: Named random sub-streams, in spawn order. Append only: reordering would change every market.
STREAMS = (
    "minute_shocks", "gap_shocks", "variance_fast", "variance_slow", "premium",
    "archetype_draw", "archetype_shape", "event_jumps", "bar_ranges", "volume", "vix_ranges",
)

ROW = 391  # gap + 390 minutes
NS_MIN = 60 * 10**9
NS_DAY = 86400 * 10**9
EXTENSION_DAYS = 400  # sessions beyond the end, for expiries and the variance clock


def substreams(seed: int) -> dict[str, np.random.Generator]:
    """One independent PCG64 generator per named stream (SeedSequence.spawn)."""
    children = np.random.SeedSequence(int(seed)).spawn(len(STREAMS))
    return {name: np.random.Generator(np.random.PCG64(ch)) for name, ch in zip(STREAMS, children)}


# ======================================================================= timeline
@dataclass
class Timeline:
    """Sessions, minutes and the variance clock. Day arrays cover the simulated sessions
    followed by an extension (for expiries after the end); minute arrays only the simulated ones."""

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
        d = np.datetime64(pd.Timestamp(day).date(), "D")
        i = int(np.searchsorted(self.dates[: self.n_sim], d))
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
    last_ext = min(pd.Timestamp(sim[-1]) + pd.Timedelta(days=EXTENSION_DAYS), pd.Timestamp("2050-12-01"))
    allsess = cal.sessions(sim[0], last_ext)
    xcal = cal.xcal
    opens = pd.DatetimeIndex(xcal.opens.reindex(allsess)).as_unit("ns").asi8.copy()
    closes = pd.DatetimeIndex(xcal.closes.reindex(allsess)).as_unit("ns").asi8.copy()
    n_min = (closes - opens) // NS_MIN
    dates = allsess.to_numpy().astype("datetime64[D]")
    u = scenario.underlying
    ov = u.overnight_variance_share
    gap_days = np.diff(dates.astype(np.int64), prepend=dates[0].astype(np.int64) - 1)
    gap_var = ov * (1.0 + u.weekend_gap_extra * (gap_days - 1))
    gap_var[0] = ov
    intra_var = (1.0 - ov) * n_min / 390.0
    c_close = np.cumsum(gap_var + intra_var)
    c_open = c_close - intra_var

    D = len(sim)
    prof = intraday_profile(n_min[:D], scenario.intraday.vol_open_boost, scenario.intraday.vol_close_boost, 20.0, 30.0)
    c_grid = np.zeros((D, ROW))
    c_grid[:, 0] = gap_var[:D]
    c_grid[:, 1:] = prof * intra_var[:D, None]
    valid = np.zeros((D, ROW), dtype=bool)
    valid[:, 0] = True
    valid[:, 1:] = np.arange(390)[None, :] < n_min[:D, None]
    flat = np.flatnonzero(valid.ravel())
    is_gap = (flat % ROW) == 0
    minute_step = np.flatnonzero(~is_gap)
    gap_step = np.flatnonzero(is_gap)
    mday = flat[~is_gap] // ROW
    mpos = flat[~is_gap] % ROW - 1
    c_min = c_grid.ravel()[flat[~is_gap]]
    c_step = c_grid.ravel()[flat]
    c_cum = np.cumsum(c_step)
    c_end = c_cum[minute_step]
    # align with c_open computed per day (same arithmetic up to rounding): rebase per day
    c_end = c_end - c_cum[gap_step][mday] + c_open[mday]
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
        cal_first=cal_first, cal_session=cal_session, cal_prev=cal_prev,
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

    def event_variance(self, t0_ns, t1_ns):
        """Physical jump variance of events realized in (t0, t1]."""
        cum = np.concatenate([[0.0], self.event_cumvar])
        i0 = np.searchsorted(self.event_R, t0_ns, side="right")
        i1 = np.searchsorted(self.event_R, t1_ns, side="right")
        return cum[i1] - cum[i0]


def _student(rng: np.random.Generator, df: float, size) -> np.ndarray:
    """Student-t draws scaled to unit variance (normal when df is large)."""
    if df >= 500:
        return rng.standard_normal(size)
    return rng.standard_t(df, size) * math.sqrt((df - 2.0) / df)


def _step_for_moment(tl: Timeline, ns: int) -> tuple[int, int]:
    """(step index, realized ns) of a release at ``ns``: an intraday minute, else the next gap."""
    D = tl.n_sim
    d = int(np.searchsorted(tl.close_ns[:D], ns, side="right"))  # first session closing after ns
    if d >= D:
        return -1, int(ns)
    if ns >= tl.open_ns[d]:
        pos = int((ns - tl.open_ns[d]) // NS_MIN)
        return int(tl.minute_step[tl.day_first_minute[d] + pos]), int(tl.open_ns[d] + (pos + 1) * NS_MIN)
    return int(tl.gap_step[d]), int(tl.open_ns[d])


def _realized_beyond(tl: Timeline, ns: int) -> int:
    """Realized moment of a release after the simulated range (for pricing only)."""
    d = int(np.searchsorted(tl.close_ns, ns, side="right"))
    if d >= len(tl.close_ns):
        return int(ns)
    if ns >= tl.open_ns[d]:
        return int(tl.open_ns[d] + ((ns - tl.open_ns[d]) // NS_MIN + 1) * NS_MIN)
    return int(tl.open_ns[d])


def _solve_kick(model: VarianceModel, yf, ys, eps, dC30, target_vix) -> float:
    """Change of the fast factor that moves VIX from the state to ``target_vix``."""
    grid = np.linspace(-6.0, 8.0, 2801)
    vals = model.vix(yf + grid, ys, eps, dC30)
    if target_vix <= vals[0]:
        return float(grid[0])
    if target_vix >= vals[-1]:
        return float(grid[-1])
    return float(np.interp(target_vix, vals, grid))


def simulate(scenario: Scenario, seed: int, start, end, calendar: MarketCalendar | None = None) -> UnderlyingPath:
    """Draw the whole path of the market for ``[start, end]``."""
    tl = build_timeline(scenario, start, end, calendar)
    model = VarianceModel(scenario)
    rng = substreams(seed)
    D = tl.n_sim
    var, arch_spec, und = scenario.variance, scenario.archetypes, scenario.underlying
    valid = tl.valid
    vmin = valid[:, 1:]
    nmin = tl.n_minutes[:D]
    flat = tl.step_of_flat
    K = len(flat)

    c2 = np.zeros((D, ROW))
    c2[:, 0] = tl.gap_var[:D]
    c2.ravel()[flat[tl.minute_step]] = tl.c_min
    sc2 = np.sqrt(c2)
    daysig = np.sqrt(c2[:, 1:].sum(axis=1))

    # ---------------------------------------------------------------- scores
    s2 = np.zeros((D, ROW))
    # fat tails, but no 20-sigma minute or 8-sigma overnight gap from the noise alone
    s2[:, 1:] = np.clip(_student(rng["minute_shocks"], und.minute_tail_df, (D, 390)), -12.0, 12.0)
    s2[:, 0] = np.clip(_student(rng["gap_shocks"], 6.0, D), -4.5, 4.5)
    s2[:, 1:] *= vmin

    probs = np.array([getattr(arch_spec, a).probability for a in ARCHETYPES])
    arch = rng["archetype_draw"].choice(len(ARCHETYPES), size=D, p=probs / probs.sum())
    mults = np.array([getattr(arch_spec, a).vol_mult for a in ARCHETYPES])
    day_mult = mults[arch]
    ra = rng["archetype_shape"]
    shape_u = ra.random((D, 4))          # fixed draws per day: direction, size, timing, spare
    shape_n = ra.standard_normal(D)
    pos = np.arange(390)[None, :]
    J_f = np.zeros((D, ROW))

    def add_move(rows, g, total):
        if len(rows) == 0:
            return
        g = g * vmin[rows]
        denom = (sc2[rows, 1:] * g).sum(axis=1)
        denom = np.where(denom > 0, denom, 1.0)
        s2[rows, 1:] += (total * daysig[rows] / denom)[:, None] * g

    rows = np.flatnonzero(arch == 0)  # calm range: reversion to the open
    if len(rows):
        phi = 2.0 ** (-1.0 / arch_spec.calm_range.reversion_half_life_minutes)
        x = lfilter([1.0], [1.0, -phi], s2[rows, 1:], axis=1)
        s2[rows, 1:] = np.diff(x, axis=1, prepend=0.0) * vmin[rows]
    for code, spec, sign in ((1, arch_spec.trend_up, 1.0), (2, arch_spec.trend_down, -1.0)):
        rows = np.flatnonzero(arch == code)
        size = np.maximum(spec.drift_sigmas + spec.drift_dispersion * shape_n[rows], 0.0)
        add_move(rows, np.ones((len(rows), 390)), sign * size)
    rows = np.flatnonzero(arch == 3)  # fake-out
    if len(rows):
        fk = arch_spec.fakeout
        direction = np.where(shape_u[rows, 0] < 0.5, -1.0, 1.0)
        L = fk.opening_range_minutes
        add_move(rows, np.broadcast_to(pos < L, (len(rows), 390)).astype(float), direction * fk.fake_sigmas)
        add_move(rows, np.broadcast_to(pos >= L, (len(rows), 390)).astype(float),
                 -direction * (fk.fake_sigmas + fk.reversal_sigmas))
    rows = np.flatnonzero(arch == 4)  # spike and fade
    if len(rows):
        sp = arch_spec.event_spike_fade
        direction = np.where(shape_u[rows, 0] < sp.down_probability, -1.0, 1.0)
        lo, hi = 30, np.maximum(nmin[rows] - 100, 31)
        m_star = (lo + shape_u[rows, 2] * (hi - lo)).astype(np.int64)
        s2[rows, 1 + m_star] += direction * sp.spike_sigmas * daysig[rows] / sc2[rows, 1 + m_star]
        after = pos - m_star[:, None]
        g = np.where(after > 0, np.exp(-math.log(2.0) * after / sp.fade_half_life_minutes), 0.0)
        add_move(rows, g, -direction * sp.fade_fraction * sp.spike_sigmas)
        J_f[rows, 1 + m_star] += sp.vol_bump * np.where(direction < 0, 1.0, 0.5)

    # ------------------------------------------------------------ innovations
    rho = var.return_correlation
    omega2 = sc2 * math.sqrt(ROW)
    sclip = np.clip(s2, -8.0, 8.0)
    wf = rng["variance_fast"].standard_normal((D, ROW))
    ws = rng["variance_slow"].standard_normal((D, ROW))
    we = rng["premium"].standard_normal((D, ROW))
    a_f = 2.0 ** (-1.0 / (var.fast.half_life_days * ROW))
    a_s = 2.0 ** (-1.0 / (var.slow.half_life_days * ROW))
    a_e = 2.0 ** (-1.0 / (scenario.vol_index.premium_half_life_days * ROW))
    b_f = var.fast.stdev * math.sqrt(1 - a_f * a_f)
    b_s = var.slow.stdev * math.sqrt(1 - a_s * a_s)
    b_e = scenario.vol_index.premium_noise * math.sqrt(1 - a_e * a_e)
    cr = math.sqrt(max(1.0 - rho * rho, 0.0))
    x_f = (b_f * omega2 * (rho * sclip + cr * wf)).ravel()[flat]
    x_s = (b_s * omega2 * (rho * sclip + cr * ws)).ravel()[flat]
    x_e = (b_e * omega2 * we).ravel()[flat]
    jf = J_f.ravel()[flat].copy()
    s = s2.ravel()[flat]
    c = c2.ravel()[flat]
    mult = np.where((flat % ROW) == 0, 1.0, day_mult[flat // ROW])

    # initial state
    yf0 = 0.0
    ys0 = 0.0
    eps_path = lfilter([1.0], [1.0, -a_e], x_e, zi=[0.0])[0]
    dC30_0 = tl.clock_after(0, 0.0, 30) - tl.c_open[0]
    if var.initial_vix is not None:
        grid = np.linspace(-5.0, 5.0, 2001)
        vals = model.vix(0.0, grid, 0.0, dC30_0)
        ys0 = float(np.interp(var.initial_vix, vals, grid))

    def run(jf_):
        yf_ = lfilter([1.0], [1.0, -a_f], x_f + jf_, zi=[a_f * yf0])[0]
        ys_ = lfilter([1.0], [1.0, -a_s], x_s, zi=[a_s * ys0])[0]
        return yf_, ys_

    def prev(arr, first):
        out = np.empty_like(arr)
        out[0] = first
        out[1:] = arr[:-1]
        return out

    yf, ys = run(jf)

    # ------------------------------------------------------- scheduled events
    ev_spec = scenario.events
    first_date = pd.Timestamp(tl.dates[0]).date()
    last_date = pd.Timestamp(tl.dates[-1]).date()
    sched = scheduled_events(ev_spec, first_date, last_date)
    rj = rng["event_jumps"]
    records: list[EventRecord] = []
    jump_ret = np.zeros(K)
    v_prev = model.L2 * np.exp(prev(yf, yf0) + prev(ys, ys0))
    for e in sched:
        spec = getattr(ev_spec, e.kind)
        draw = float(np.clip(_student(rj, spec.jump_df, 1)[0], -4.0, 4.0))  # one draw per event, in date order
        jvar = (spec.jump_stdev_pct / 100.0) ** 2
        step, realized = _step_for_moment(tl, e.at_ns)
        if step < 0:
            records.append(EventRecord(e.kind, e.kind, _realized_beyond(tl, e.at_ns), -1, jvar))
            continue
        move = draw * spec.jump_stdev_pct / 100.0
        x = move / math.sqrt(v_prev[step] / 252.0)
        kick = var.jump_leverage_down * max(-x, 0.0) - var.jump_leverage_up * max(x, 0.0) - spec.vol_crush
        jump_ret[step] += move
        jf[step] += kick
        records.append(EventRecord(e.kind, e.kind, realized, step, jvar, move, kick))

    # ------------------------------------------------------- injected events
    ignored: list[str] = []
    step_day = flat // ROW

    c_cum = np.cumsum(c)
    c_cum = c_cum - c_cum[tl.gap_step][step_day] + tl.c_open[step_day]  # clock after each step

    def vix_pre(step):
        k = max(step - 1, 0)
        d = int(step_day[k])
        dC = float(tl.clock_after(d, c_cum[k] - tl.c_open[d], 30) - c_cum[k])
        return (yf[k] if step > 0 else yf0), (ys[k] if step > 0 else ys0), eps_path[k], dC

    for i, inj in enumerate(ev_spec.injected):
        if inj.at is not None:
            ts = pd.Timestamp(inj.at)
            ts = ts.tz_localize(NY) if ts.tzinfo is None else ts.tz_convert(NY)
        else:
            if inj.session >= D:
                ignored.append(f"events.injected[{i}] (session {inj.session} is past the end)")
                continue
            day = pd.Timestamp(tl.dates[inj.session])
            hh, mm = map(int, inj.time.split(":"))
            ts = pd.Timestamp(dt.datetime.combine(day.date(), dt.time(hh, mm)), tz=NY)
        step, realized = _step_for_moment(tl, ts.value)
        if step < 0 or ts.value < tl.open_ns[0] - 3 * NS_DAY:
            ignored.append(f"events.injected[{i}] ({ts}) is outside the market's dates")
            continue
        move = math.log1p(inj.move_pct / 100.0)
        jump_ret[step] += move
        kick = 0.0
        if inj.vol_jump:
            f0, s0, e0, dC = vix_pre(step)
            before = float(model.vix(f0, s0, e0, dC))
            kick = _solve_kick(model, f0, s0, e0, dC, max(before + inj.vol_jump, 1.0))
            jf[step] += kick
        records.append(EventRecord("injected", inj.label, realized, step, 0.0, move, kick))

    # ---------------------------------------------------------------- episodes
    episode_windows = []
    for i, ep in enumerate(ev_spec.episodes):
        if ep.start is not None:
            d0 = int(np.searchsorted(tl.dates[:D], np.datetime64(ep.start, "D")))
        else:
            d0 = ep.after_sessions
        d1 = d0 + ep.sessions - 1
        if d0 >= D or d1 >= D:
            ignored.append(f"events.episodes[{i}] does not fit in the market's dates")
            continue
        k0 = int(tl.gap_step[d0]) + 1
        k1 = int(tl.minute_step[tl.day_first_minute[d1] + nmin[d1] - 1])
        if ep.vol_jump:
            f0, s0, e0, dC = vix_pre(k0)
            before = float(model.vix(f0, s0, e0, dC))
            kick = _solve_kick(model, f0, s0, e0, dC, max(before + ep.vol_jump, 1.0))
            steps = np.arange(k0, k1 + 1)
            w = a_f ** (k1 - steps).astype(float)
            jf[k0:k1 + 1] += kick / w.sum()
        episode_windows.append((k0, k1, math.log1p(ep.move_pct / 100.0)))
        records.append(EventRecord("episode", ep.label, int(tl.open_ns[d0]), k0, 0.0,
                                   math.log1p(ep.move_pct / 100.0), 0.0))

    # ----------------------------------------------------------- final pass
    yf, ys = run(jf)
    v_prev = model.L2 * np.exp(prev(yf, yf0) + prev(ys, ys0))
    sigma = np.sqrt(v_prev * c / 252.0) * mult
    r = sigma * s + und.drift * c / 252.0 - 0.5 * sigma * sigma + jump_ret
    r[0] = 0.0  # the first open is the scenario's start level
    for k0, k1, target in episode_windows:
        seg = slice(k0, k1 + 1)
        r[seg] += (target - r[seg].sum()) * c[seg] / c[seg].sum()
    logS = math.log(und.start_level) + np.cumsum(r)
    S = np.exp(logS)

    # ------------------------------------------------------------------ bars
    ms = tl.minute_step
    close = np.round(S[ms], 2)
    open_ = np.empty_like(close)
    open_[1:] = close[:-1]
    first = tl.day_first_minute
    open_[first] = np.round(S[tl.gap_step], 2)
    rb = rng["bar_ranges"]
    M = len(ms)
    ext = np.abs(rb.standard_normal((2, M))) * 0.55 * sigma[ms] * close
    high = np.ceil((np.maximum(open_, close) + ext[0]) * 100.0) / 100.0
    low = np.floor((np.minimum(open_, close) - ext[1]) * 100.0) / 100.0
    vprof = intraday_profile(nmin, scenario.intraday.volume_open_boost, scenario.intraday.volume_close_boost, 15.0, 20.0)
    vprof = vprof.ravel()[(tl.minute_day * 390 + tl.minute_pos)]
    vol_level = np.sqrt(v_prev[ms] / (model.L2 * math.exp(0.5 * (model.sf ** 2 + model.ss ** 2))))
    noise = np.exp(0.25 * rng["volume"].standard_normal(M) - 0.03125)
    volume = np.round(scenario.intraday.daily_volume * vprof * (nmin[tl.minute_day] / 390.0) * vol_level * noise)
    day_open = open_[first]
    day_close = close[first + nmin - 1]

    # ---------------------------------------------------- VIX, VIX9D per step
    rec_R = np.array([e.realized_ns for e in records if e.jump_var > 0] or [0], dtype=np.int64)
    rec_V = np.array([e.jump_var for e in records if e.jump_var > 0] or [0.0])
    order = np.argsort(rec_R, kind="stable")
    event_R, event_cumvar = rec_R[order], np.cumsum(rec_V[order])
    path = UnderlyingPath(
        timeline=tl, model=model, yf=yf, ys=ys, eps=eps_path, spx_open=open_, spx_high=high,
        spx_low=low, spx_close=close, spx_volume=volume.astype(np.float64), day_open=day_open,
        day_close=day_close, archetype=arch, day_mult=day_mult, vix_step=None, vix9d_step=None,
        events=records, event_R=event_R, event_cumvar=event_cumvar, ignored_events=ignored,
    )
    # quote time of each step: a minute's bar close, or the open for a gap
    t_step = np.empty(K, dtype=np.int64)
    t_step[tl.gap_step] = tl.open_ns[:D]
    t_step[ms] = tl.minute_ns + NS_MIN
    off = c_cum - tl.c_open[step_day]
    dC30 = tl.clock_after(step_day, off, 30) - c_cum
    dC9 = tl.clock_after(step_day, off, 9) - c_cum
    ev30 = path.event_variance(t_step, t_step + 30 * NS_DAY)
    ev9 = path.event_variance(t_step, t_step + 9 * NS_DAY)
    path.vix_step = model.vix(yf, ys, eps_path, dC30, ev30)
    path.vix9d_step = model.vix9d(yf, ys, eps_path, dC9, ev9)
    path.c_step = c_cum
    path.t_step = t_step
    path.step_day = step_day
    path.sigma_step = sigma
    return path
