"""Expected variance, VIX, VIX9D and the VIX futures curve from the variance state.

The state at any moment is two log-variance factors (fast, slow) and a
log-premium noise ``eps``. Instantaneous variance (annualized, 252-day basis)
is ``v = L^2 exp(fast + slow)``; both factors are Ornstein-Uhlenbeck in
*variance time* ``u`` (variance-days: a regular session plus its overnight gap
is one unit), so the expected variance ``u`` variance-days ahead is::

    E v(u) = L^2 exp(f e^{-kf u} + s e^{-ks u} + sf^2/2 (1 - e^{-2 kf u}) + ss^2/2 (1 - e^{-2 ks u}))

Risk-neutral total variance to a horizon ``dC`` variance-days away (plus the
scheduled events inside it) is::

    W = VRP e^{2 eps} F_arch / 252 * int_0^dC E v(u) du  +  event_premium * sum(event jump variances)

where ``F_arch`` is the expected close-to-close variance of a day relative to
the diffusion (day archetypes add drifts and reversions). VIX is
``100 sqrt(W(30 days) / (30/365))``; VIX9D the same over 9 days; the SPX
surface's ATM total variance is ``atm_variance_ratio * W``.
"""

from __future__ import annotations

import math

import numpy as np

from .scenario import Scenario

__all__ = ["VarianceModel"]

_GL_X, _GL_W = np.polynomial.legendre.leggauss(12)
_GL_X = 0.5 * (_GL_X + 1.0)
_GL_W = 0.5 * _GL_W

# Fixed grid in variance-days for the monotone integral used by option surfaces.
_GRID = np.concatenate([[0.0], np.geomspace(2e-4, 400.0, 111)])
_GRID_STEP = np.diff(_GRID)
_GRID_COL = _GRID[:, None]
_GRID_LAST = float(_GRID[-1])
#: from this many states on, integral_table sums grid point by grid point over contiguous rows of states
_COLUMN_ROWS = 48


_ROWS = np.arange(390)[:, None]  # the row of each minute of a session (integral_lookup_rows)


def _cells(dC):
    """``dC`` bounded to the grid and its cell's points (i, i + 1), as :meth:`VarianceModel.integral_lookup` reads
    them: np.clip of dC and of the cell index without np.clip's Python dispatch, the same values (NaN stays NaN),
    but for a dC of -0.0, which np.maximum may turn into 0.0: its integral is h * (...) + t_0 with h = +-0.0, the
    same float for the first column integral_table makes (+0.0)."""
    dC = np.minimum(np.maximum(np.asarray(dC, float), 0.0), _GRID_LAST)
    i = np.minimum(np.maximum(_GRID.searchsorted(dC, side="right") - 1, 0), len(_GRID) - 2)
    return dC, i, i + 1


def _interpolate(dC, i, j, t_i, e_i, e_j):
    """The integral of the linear interpolant of E v over [g0, dC] from the table's cells: t_i + h (e_i + 0.5 frac
    (e_j - e_i)) with h = dC - g0, frac = h / (next point - g0), each step as written (products and sums only
    commuted: the same floats)."""
    g0 = _GRID[i]
    h = dC - g0
    frac = h / (_GRID[j] - g0)
    frac *= 0.5
    out = frac * np.subtract(e_j, e_i)
    out += e_i
    out *= h
    out += t_i
    return out


class VarianceModel:
    """The variance process' parameters and the closed-form expectations built on them."""

    def __init__(self, scenario: Scenario):
        var, vi = scenario.variance, scenario.vol_index
        self.scenario = scenario
        self.L2 = var.long_run_vol ** 2
        self.kf = math.log(2.0) / var.fast.half_life_days
        self.ks = math.log(2.0) / var.slow.half_life_days
        self.sf = var.fast.stdev
        self.ss = var.slow.stdev
        self.ke = math.log(2.0) / vi.premium_half_life_days
        self.se = vi.premium_noise
        self.vrp = vi.variance_risk_premium
        self.vrp9 = vi.variance_risk_premium * vi.vix9d_premium_ratio
        self.event_premium = scenario.surface.event_premium
        self.atm_ratio = vi.atm_variance_ratio
        self.f_arch = archetype_variance_factor(scenario)
        self._grid_decays: tuple | None = None  # _decays of the fixed grid: (as a row, as a column)

    # ------------------------------------------------------------- E v(u)
    def expected_variance(self, yf, ys, u, decays=None):
        """E v(u) (annualized) given the factors now; broadcasts. ``decays``: :meth:`_decays` of ``u`` if known."""
        ef, es, cf, cs = self._decays(u) if decays is None else decays
        expo = yf * ef + ys * es
        expo += cf
        expo += cs
        if type(expo) is not np.ndarray:  # scalars in, a scalar out
            return self.L2 * np.exp(expo)
        np.exp(expo, out=expo)
        expo *= self.L2
        return expo

    def _decays(self, u):
        """exp(-kf u), exp(-ks u) and the two variance terms of E v's exponent, kept for the fixed grid
        (as a row or as a column: the same values)."""
        if u is _GRID or u is _GRID_COL:
            kept = self._grid_decays
            if kept is None:
                row = self._decays_of(_GRID)
                kept = self._grid_decays = (row, tuple(a[:, None] for a in row))
            return kept[0] if u is _GRID else kept[1]
        return self._decays_of(u)

    def _decays_of(self, u):
        ef = np.exp(-self.kf * u)
        es = np.exp(-self.ks * u)
        return ef, es, 0.5 * self.sf ** 2 * (1.0 - ef * ef), 0.5 * self.ss ** 2 * (1.0 - es * es)

    def integral_gl(self, yf, ys, dC):
        """int_0^dC E v(u) du by 12-point Gauss-Legendre (smooth; for index levels)."""
        yf, ys, dC = np.asarray(yf, float), np.asarray(ys, float), np.asarray(dC, float)
        acc = np.zeros(np.broadcast_shapes(yf.shape, ys.shape, dC.shape))
        for x, w in zip(_GL_X, _GL_W):
            acc += w * self.expected_variance(yf, ys, dC * x)
        return acc * dC

    def integral_table(self, yf, ys, points: int | None = None, prior=None):
        """Cumulative trapezoid integral of E v on the fixed variance-day grid.

        ``yf``/``ys`` of shape (n,) give a table of shape (n, len(grid)); use
        :meth:`integral_lookup` on it. Monotone in the horizon by construction,
        so total implied variance never decreases with expiry. ``points``: only the
        grid's first ``points`` (at least 2; :meth:`lookup_points` of the largest dC
        to look up): the same values as those columns of the whole table (a running sum).
        ``prior``: this call's (table, ev) for the same states and fewer points, continued
        (many states: its columns kept, the running sum carried on from its last one).
        """
        yf = np.asarray(yf, float)
        ys = np.asarray(ys, float)
        g = len(_GRID) if points is None else max(2, min(int(points), len(_GRID)))
        if yf.ndim == 1 and yf.shape == ys.shape and yf.size >= _COLUMN_ROWS:
            # many states (a session's minutes): the table built grid point by grid point, each a contiguous
            # row of states, and handed back transposed; the same elementwise values and the same running sum
            # as cumsum's (which runs one scalar loop per state)
            self._decays(_GRID)  # the grid's decays, kept as a row and as a column
            k = 0 if prior is None else min(prior[0].shape[1], g)
            decays = tuple(a[k:g] for a in self._decays(_GRID_COL))
            table = np.empty((g, yf.size))
            if k:
                ev = np.empty((g, yf.size))
                ev[:k] = prior[1].T[:k]
                table[:k] = prior[0].T[:k]
                ev[k:] = self.expected_variance(yf[None, :], ys[None, :], _GRID_COL[k:g], decays)  # (grid, n)
            else:  # a new array of its own
                ev = self.expected_variance(yf[None, :], ys[None, :], _GRID_COL[:g], decays)
            table[0] = 0.0
            lo = max(k, 1)
            np.add(ev[lo:], ev[lo - 1:-1], out=table[lo:])
            table[lo:] *= 0.5
            table[lo:] *= _GRID_STEP[lo - 1: g - 1, None]
            for i in range(max(lo, 2), g):
                np.add(table[i - 1], table[i], out=table[i])
            return table.T, ev.T
        decays = self._decays(_GRID)  # kept for the grid
        if g < len(_GRID):
            decays = tuple(a[:g] for a in decays)
        ev = self.expected_variance(yf[..., None], ys[..., None], _GRID[:g], decays)
        table = np.empty(ev.shape)
        table[..., 0] = 0.0
        seg = table[..., 1:]  # 0.5 (ev[i + 1] + ev[i]) (grid[i + 1] - grid[i]), summed in place
        np.add(ev[..., 1:], ev[..., :-1], out=seg)
        seg *= 0.5
        seg *= _GRID_STEP[: g - 1]
        np.cumsum(seg, axis=-1, out=seg)
        return table, ev

    @staticmethod
    def lookup_points(dC_max: float) -> int:
        """Grid points :meth:`integral_lookup` reads for any dC up to ``dC_max`` (its cell and the next point)."""
        x = float(dC_max)
        x = min(max(x, 0.0), _GRID_LAST)  # np.clip's (NaN stays NaN; a -0.0 is looked up as 0.0)
        i = int(_GRID.searchsorted(x, side="right")) - 1
        return min(max(i, 0), len(_GRID) - 2) + 2  # (NaN sorts last: the last cell, as the lookup's)

    @staticmethod
    def integral_lookup(table, ev, dC, row=None):
        """Integral to ``dC`` from a table (linear E v inside the last grid cell).

        ``row`` selects the table row per element (broadcast with ``dC``);
        None when the table has a single row.
        """
        dC, i, j = _cells(dC)
        if row is None:
            return _interpolate(dC, i, j, table[..., i], ev[..., i], ev[..., j])
        return _interpolate(dC, i, j, table[row, i], ev[row, i], ev[row, j])

    @staticmethod
    def integral_lookup_rows(table, ev, dC):
        """:meth:`integral_lookup` of ``dC`` of shape (n, 1), element k at row k (``row`` = arange(n)[:, None]), on a
        table of n states as the many-states path of :meth:`integral_table` hands it back (the transposes of
        C-contiguous (points, n) arrays): the cells gathered by their flat position, one take per array instead of
        fancy indexing. The same values; any other table is looked up by :meth:`integral_lookup`."""
        n = dC.shape[0]
        tt, et = table.T, ev.T
        if not (dC.shape == (n, 1) and table.shape[0] == n and ev.shape[0] == n and tt.flags.c_contiguous
                and et.flags.c_contiguous):
            return VarianceModel.integral_lookup(table, ev, dC, np.arange(n)[:, None])
        dC, i, j = _cells(dC)
        at = i * n
        at += _ROWS[:n] if n <= len(_ROWS) else np.arange(n)[:, None]
        t_i, e_i = tt.take(at), et.take(at)
        at += n
        return _interpolate(dC, i, j, t_i, e_i, et.take(at))

    # ---------------------------------------------------------- risk-neutral
    def rn_scale(self, eps):
        """Variance-risk-premium multiplier of the diffusion part, per 252 days."""
        return self.vrp * np.exp(2.0 * np.asarray(eps, float)) * self.f_arch / 252.0

    def vix(self, yf, ys, eps, dC30, event_var30=0.0):
        """VIX (points) from the state, the variance-days in the next 30 calendar days
        and the event jump variance inside them."""
        w = self.rn_scale(eps) * self.integral_gl(yf, ys, dC30) + self.event_premium * event_var30
        return 100.0 * np.sqrt(w / (30.0 / 365.0))

    def vix9d(self, yf, ys, eps, dC9, event_var9=0.0):
        """VIX9D (points): as :meth:`vix` over 9 calendar days with its own premium."""
        w = (self.vrp9 / self.vrp) * self.rn_scale(eps) * self.integral_gl(yf, ys, dC9)
        w = w + self.event_premium * event_var9
        return 100.0 * np.sqrt(w / (9.0 / 365.0))

    def vix_future(self, yf, ys, eps, dC_start, dC_end, event_var, days_to_expiry):
        """Price of the VIX future expiring ``dC_start`` variance-days ahead.

        Forward risk-neutral variance over the 30 days after expiry, less a
        Jensen convexity correction (E sqrt < sqrt E), plus a term premium
        growing like sqrt(months to expiry) -- zero at expiry, so the future
        converges to the VIX print that settles it.
        """
        dC_start = np.asarray(dC_start, float)
        eps_fwd = np.asarray(eps, float) * np.exp(-self.ke * dC_start)
        scale = self.vrp * np.exp(2.0 * eps_fwd) * self.f_arch / 252.0
        fwd = scale * (self.integral_gl(yf, ys, dC_end) - self.integral_gl(yf, ys, dC_start))
        fwd = fwd + self.event_premium * event_var
        level = 100.0 * np.sqrt(np.maximum(fwd, 1e-12) / (30.0 / 365.0))
        # Variance of log VIX at expiry: factor loadings averaged over the 30-day window.
        h = np.maximum(dC_end - dC_start, 1e-9)
        bf = (1.0 - np.exp(-self.kf * h)) / (self.kf * h)
        bs = (1.0 - np.exp(-self.ks * h)) / (self.ks * h)
        var_log = (bf ** 2 * self.sf ** 2 * (1.0 - np.exp(-2 * self.kf * dC_start))
                   + bs ** 2 * self.ss ** 2 * (1.0 - np.exp(-2 * self.ks * dC_start))
                   + 4 * self.se ** 2 * (1.0 - np.exp(-2 * self.ke * dC_start))) / 4.0
        months = np.maximum(np.asarray(days_to_expiry, float), 0.0) / 30.0
        tp = self.scenario.vol_index.futures_term_premium
        return level * np.exp(-0.5 * var_log) + tp * np.sqrt(months)


def archetype_variance_factor(scenario: Scenario) -> float:
    """Expected close-to-close variance of a day relative to the pure diffusion.

    The overnight gap is pure diffusion; the session's open-to-close variance
    is scaled by each archetype's vol multiplier squared and by what its
    drifts and reversion do to the open-to-close move.
    """
    a = scenario.archetypes
    ov = scenario.underlying.overnight_variance_share
    n = 390.0
    phi = 2.0 ** (-1.0 / a.calm_range.reversion_half_life_minutes)
    calm = (1.0 - phi ** (2 * n)) / ((1.0 - phi * phi) * n)
    terms = [
        a.calm_range.probability * a.calm_range.vol_mult ** 2 * calm,
        a.trend_up.probability * a.trend_up.vol_mult ** 2 * (1 + a.trend_up.drift_sigmas ** 2 + a.trend_up.drift_dispersion ** 2),
        a.trend_down.probability * a.trend_down.vol_mult ** 2 * (1 + a.trend_down.drift_sigmas ** 2 + a.trend_down.drift_dispersion ** 2),
        a.fakeout.probability * a.fakeout.vol_mult ** 2 * (1 + a.fakeout.reversal_sigmas ** 2),
        a.event_spike_fade.probability * a.event_spike_fade.vol_mult ** 2
        * (1 + (a.event_spike_fade.spike_sigmas * (1 - a.event_spike_fade.fade_fraction)) ** 2),
    ]
    return ov + (1.0 - ov) * float(sum(terms))
