"""Vectorised European option pricing: Black-Scholes-Merton, Black-76 and implied volatility.

Everything here is plain numpy + :mod:`scipy.special`, float64 throughout, and
broadcasts like a numpy ufunc: every argument may be a scalar or an array of any
shape, and the results have the broadcast shape of all the arguments.  When all
arguments are scalars the results are 0-d ``numpy.ndarray`` objects (use
``float(x)`` or ``x.item()`` to get a Python float).

Conventions and units (the same for every function in this module)
------------------------------------------------------------------
``is_call``    bool or bool array; ``True`` = call, ``False`` = put.
``spot``       underlying price (for :func:`black76` the *forward/futures* price).
``strike``     strike, same currency units as ``spot``.
``years``      time to expiry in years, ACT/365, computed by the caller to the minute
               (1 minute = ``1 / (365 * 24 * 60)``).  ``years <= 0`` means expired /
               at the settlement moment.
``rate``       continuously compounded risk-free rate, decimal (0.05 = 5 %).
``div_yield``  continuous dividend (or borrow / carry) yield, decimal.
``vol``        annualised volatility, decimal (0.15 = 15 %).

Greeks returned (fields of :class:`Greeks`):

``price``  option value (per unit of underlying).
``delta``  d price / d spot, spot delta *including* ``exp(-q T)``; for Black-76 it is
           d price / d forward = ``exp(-r T) N(d1)`` (call).
``gamma``  d delta / d spot, per 1 point (1 unit) move of spot (forward for Black-76).
``theta``  change in value per *calendar day* of elapsed time: annual theta / 365
           (negative for a typical long option).
``vega``   change in value per 1 *vol point*, i.e. per 0.01 of ``vol``
           (``dV/dsigma / 100``).
``rho``    change in value per 1 *percentage point* of ``rate``, i.e. per 0.01
           (``dV/dr / 100``).  BSM: with ``div_yield`` held fixed.  Black-76: with the
           forward held fixed, so ``rho = -T * price / 100``.

Edge cases
----------
* ``years <= 0``: price is the undiscounted intrinsic value ``max(S-K, 0)`` /
  ``max(K-S, 0)``; delta is +1 (call) / -1 (put) when strictly in the money and 0
  otherwise (also exactly at the money); gamma = theta = vega = rho = 0.
* ``years > 0`` and ``vol <= 0``: the zero-volatility limit, i.e. the discounted
  forward intrinsic ``max(S e^{-qT} - K e^{-rT}, 0)`` (call) /
  ``max(K e^{-rT} - S e^{-qT}, 0)`` (put).  Delta is ``+-e^{-qT}`` when strictly in
  the money and 0 otherwise, gamma = vega = 0, and theta / rho are the (finite)
  zero-volatility limits of the analytic formulas (the carry of the forward
  position, 0 when out of the money).
* NaN in any input that matters gives NaN in that element's outputs (an expired
  option ignores vol/rate/yield; a NaN spot or strike still gives NaN).  Spot and
  strike are expected to be positive; non-positive values are not validated.
* No numpy ``RuntimeWarning`` is ever emitted (everything runs under ``np.errstate``).

Implied volatility
------------------
:func:`implied_vol` returns NaN (never raises) wherever no volatility reproduces the
price; :func:`implied_vol_reasons` gives the per-element reason code, one of
``REASON_CODES``.  The solver works on the normalised Black function
(``x = ln(F/K)``, ``beta = price / (D sqrt(F K))``), reduces every quote to an
out-of-the-money call through put-call parity, and solves for the total standard
deviation ``s = vol sqrt(T)`` with a bracketed, safeguarded Halley iteration:
on ``ln(b)`` (computed through ``erfcx`` so it never underflows) below the
inflection point ``s_c = sqrt(2|x|)`` and on ``b`` itself above it.  Starting
values come from two small precomputed tables of the inverse function (built
lazily on first use, < 0.1 s, 800 kB), accurate to ~1e-5, so one Halley step (cubic
convergence) normally reaches machine precision; a step outside the bracket falls
back to bisection, so the iteration cannot diverge.

Performance notes: large inputs are processed in cache-sized blocks and the
kernels work in place on their own temporaries (inputs are never modified).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.special import erf, erfcx, ndtr

__all__ = [
    "Greeks",
    "bsm",
    "bsm_price",
    "black76",
    "black76_price",
    "implied_vol",
    "implied_vol_reasons",
    "REASON_CODES",
]

#: Every code :func:`implied_vol_reasons` can return.
REASON_CODES = (
    "ok",
    "below_intrinsic",
    "above_upper_bound",
    "expired",
    "nonpositive_price",
    "nan_input",
)

_OK, _BELOW, _ABOVE, _EXPIRED, _NONPOS, _NAN = range(6)
_REASON_ARRAY = np.array(REASON_CODES)

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_DAYS_PER_YEAR = 365.0


class Greeks(NamedTuple):
    """Price and first-order greeks (plus gamma); units documented in the module docstring.

    price: value; delta: per 1 unit of spot (incl. e^{-qT}); gamma: per 1 unit of spot;
    theta: per calendar day; vega: per vol point (0.01); rho: per 1 % of rate (0.01).
    """

    price: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    theta: np.ndarray
    vega: np.ndarray
    rho: np.ndarray


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def _f64(a):
    """Return a float64 array (or a Python/NumPy scalar kept as a 0-d array)."""
    return np.asarray(a, dtype=np.float64)


def _sign(is_call):
    """+1.0 for calls, -1.0 for puts (float64 array, same shape as ``is_call``)."""
    c = np.asarray(is_call)
    if c.dtype != np.bool_:
        c = c.astype(bool)
    if c.ndim == 0:
        return np.float64(1.0 if c else -1.0)
    w = c.astype(np.float64)
    w *= 2.0
    w -= 1.0
    return w


def _full(a, shape):
    """``a`` as a writable, owned float64 array of exactly ``shape``."""
    a = np.asarray(a, dtype=np.float64)
    if a.shape != shape:
        a = np.broadcast_to(a, shape).copy()
    return a


def _sub(a, shape, mask):
    """Elements of ``a`` (broadcast to ``shape``) selected by boolean ``mask``."""
    a = np.asarray(a)
    if a.ndim == 0:
        return np.full(int(np.count_nonzero(mask)), a.item(), dtype=np.result_type(a, np.float64))
    return np.broadcast_to(a, shape)[mask]


def _signed(arr, w, clean=False):
    """Multiply ``arr`` by the +-1 sign ``w`` in place (``arr`` must be an owned array).

    ``clean=True`` guarantees +0.0 instead of -0.0 for zero results (used on outputs).
    """
    if np.ndim(w) == 0:
        if w < 0:
            np.subtract(0.0, arr, out=arr)  # 0 - x: like negation, but 0 -> +0
    else:
        arr *= w
        if clean:
            arr += 0.0  # -0.0 + 0.0 = +0.0
    return arr


def _op(op, a, b, full, mine=True):
    """``op(a, b)``, computed in place into ``a`` when ``a`` is one of our own
    temporaries (``mine``) that already has the full output shape.  Saves the
    allocation (and page faults) of a fresh 8 MB array per operation."""
    if mine and type(a) is np.ndarray and a.shape == full:
        return op(a, b, out=a)
    return op(a, b)


def _disc(base, rate, T, full):
    """``base * exp(-rate T)`` and whether the result is a fresh temporary."""
    if rate.ndim == 0 and rate == 0.0:
        return base, False
    e = np.multiply(T, -rate)
    e = np.exp(e, out=e) if type(e) is np.ndarray else np.exp(e)
    return _op(np.multiply, e, base, full), True


def _d1_d2(fw, kd, vst, full):
    """d1 and d2 (full-shape temporaries); ``vst`` is halved in place."""
    d1 = np.divide(fw, kd)
    d1 = np.log(d1, out=d1) if type(d1) is np.ndarray else np.log(d1)
    d1 = _op(np.divide, d1, vst, full)
    vst *= 0.5
    d2 = d1 - vst
    d1 += vst
    return d1, d2


def _bsm_core(w, S, K, T, r, q, v, full):
    """Analytic price and greeks for T > 0, vol > 0 (no edge-case handling).

    ``v`` must already have the full broadcast shape ``full`` (a broadcast view is
    fine); it guarantees every intermediate depending on it is full-shape.  Units
    of the returned greeks are the public ones (theta per day, vega per vol point,
    rho per 1 %).  ``w`` is +1 for calls, -1 for puts.  Inputs are never written to;
    the code works in place on its own temporaries to keep allocations down.
    """
    sqrt_t = np.sqrt(T)
    vst = np.multiply(v, sqrt_t)  # sigma sqrt(T), full shape
    fw, fw_mine = _disc(S, q, T, full)  # S e^{-qT}
    kd, _ = _disc(K, r, T, full)  # K e^{-rT}
    d1, d2 = _d1_d2(fw, kd, vst, full)

    pdf = np.multiply(d1, d1)
    pdf *= -0.5
    np.exp(pdf, out=pdf)
    pdf *= _INV_SQRT_2PI  # n(d1)

    a = ndtr(_signed(d1, w), out=d1)  # N(w d1)
    a *= fw  # A = S e^{-qT} N(w d1)
    b = ndtr(_signed(d2, w), out=d2)  # N(w d2)
    b *= kd  # B = K e^{-rT} N(w d2)

    price = _signed(np.subtract(a, b), w, clean=True)
    delta = _signed(np.divide(a, S), w, clean=True)  # w e^{-qT} N(w d1) = w A / S

    # vega per unit vol: S e^{-qT} n(d1) sqrt(T)
    vega = _op(np.multiply, fw, pdf, full, fw_mine)
    vega *= sqrt_t
    # gamma = e^{-qT} n(d1) / (S sigma sqrt T) = vega_annual / (S^2 sigma T)
    if type(sqrt_t) is np.ndarray and sqrt_t.shape == full:
        den = np.multiply(v, T, out=sqrt_t)  # reuse the sqrt(T) buffer
    else:
        den = np.multiply(v, T)
    den *= S
    den *= S
    gamma = np.divide(vega, den, out=pdf)

    # annual theta = -S e^{-qT} n(d1) sigma / (2 sqrt T) + w (q A - r B)
    theta = np.multiply(vega, v)
    theta /= T
    theta *= -0.5
    # rho per 1 %: w T K e^{-rT} N(w d2) / 100
    rho = np.multiply(b, T)
    rho *= 0.01
    _signed(rho, w)

    b *= r
    if q.ndim == 0 and q == 0.0:
        np.negative(b, out=b)
        carry = b
    else:
        a *= q
        a -= b
        carry = a
    theta += _signed(carry, w)
    theta *= 1.0 / _DAYS_PER_YEAR

    vega *= 0.01
    return price, delta, gamma, theta, vega, rho


def _price_core(w, S, K, T, r, q, v, full):
    """Analytic price only for T > 0, vol > 0 (see :func:`_bsm_core`)."""
    vst = np.multiply(v, np.sqrt(T))
    fw, _ = _disc(S, q, T, full)
    kd, _ = _disc(K, r, T, full)
    d1, d2 = _d1_d2(fw, kd, vst, full)
    a = ndtr(_signed(d1, w), out=d1)
    a *= fw
    b = ndtr(_signed(d2, w), out=d2)
    b *= kd
    a -= b
    return _signed(a, w, clean=True)


def _fix_edges(out, model, w, S, K, T, r, q, v, shape):
    """Overwrite expired (T <= 0) and zero-vol (v <= 0) elements of ``out`` in place."""
    expired = T <= 0.0
    flat = v <= 0.0
    any_exp = bool(np.any(expired))
    any_flat = bool(np.any(flat))
    if not (any_exp or any_flat):
        return
    with np.errstate(all="ignore"):
        if any_flat:
            m = np.broadcast_to(flat & ~expired, shape)
            if m.any():
                ws, Ss, Ks, Ts = (_sub(a, shape, m) for a in (w, S, K, T))
                rs, qs = _sub(r, shape, m), _sub(q, shape, m)
                dq = np.exp(-qs * Ts)
                dr = np.exp(-rs * Ts)
                fw, kd = Ss * dq, Ks * dr
                itm = (ws * (fw - kd)) > 0.0  # strictly in the money (forward basis)
                n = itm.astype(np.float64)  # N(w d1) = N(w d2) = 1 or 0 in the limit
                a, b = fw * n, kd * n
                price = ws * (a - b)
                out[0][m] = price + 0.0  # + 0.0 turns -0.0 into 0.0
                if len(out) > 1:
                    out[1][m] = ws * dq * n + 0.0
                    out[2][m] = 0.0
                    out[4][m] = 0.0
                    out[3][m] = ws * (qs * a - rs * b) / _DAYS_PER_YEAR + 0.0
                    if model == "black76":
                        out[5][m] = -Ts * price * 0.01 + 0.0
                    else:
                        out[5][m] = ws * Ts * b * 0.01 + 0.0
        if any_exp:
            m = np.broadcast_to(expired, shape)
            ws, Ss, Ks = (_sub(a, shape, m) for a in (w, S, K))
            intrinsic = ws * (Ss - Ks)
            out[0][m] = np.maximum(intrinsic, 0.0)  # NaN stays NaN
            if len(out) > 1:
                nan = np.isnan(intrinsic)
                delta = np.where(intrinsic > 0.0, ws, 0.0)
                delta[nan] = np.nan
                out[1][m] = delta
                zero = np.where(nan, np.nan, 0.0)
                for g in out[2:]:
                    g[m] = zero


# Large inputs are processed in blocks of this many elements so that all the
# temporaries stay in cache (and come from the malloc heap instead of fresh,
# page-faulting mmaps); results are identical, it is only faster.
_CHUNK = 16384
_IV_CHUNK = 32768


def _blockwise(fn, args, chunk):
    """``fn(*args)`` evaluated over cache-sized blocks of the flattened broadcast.

    ``fn`` takes numpy arrays (any broadcastable shapes) and returns a tuple of
    arrays of their broadcast shape.  Returns that tuple for the full broadcast shape.
    """
    arrs = [np.asarray(a) for a in args]
    shape = np.broadcast_shapes(*(a.shape for a in arrs))
    n = math.prod(shape)
    if n <= chunk:
        return fn(*arrs)
    flat = [a if a.ndim == 0 else np.broadcast_to(a, shape).reshape(n) for a in arrs]
    outs = None
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        res = fn(*(a if a.ndim == 0 else a[sl] for a in flat))
        if outs is None:
            outs = [np.empty(n, dtype=o.dtype) for o in res]
        for o, r in zip(outs, res):
            o[sl] = r
    return tuple(o.reshape(shape) for o in outs)


def _as_bool(is_call):
    c = np.asarray(is_call)
    return c if c.dtype == np.bool_ else c.astype(bool)


def _greeks_block(model, c, S, K, T, r, q, v):
    w = _sign(c)
    shape = np.broadcast_shapes(c.shape, S.shape, K.shape, T.shape, r.shape, q.shape, v.shape)
    work = shape if shape != () else (1,)
    with np.errstate(all="ignore"):
        out = list(_bsm_core(w, S, K, T, r, q, np.broadcast_to(v, work), work))
        if model == "black76":
            # Black-76 rho: forward held fixed, dV/dr = -T V.
            rho = out[0] * T
            rho *= -0.01
            out[5] = rho
    out = [_full(o, work) for o in out]
    _fix_edges(out, model, w, S, K, T, r, q, v, work)
    return tuple(o.reshape(shape) for o in out)


def _price_block(c, S, K, T, r, q, v):
    w = _sign(c)
    shape = np.broadcast_shapes(c.shape, S.shape, K.shape, T.shape, r.shape, q.shape, v.shape)
    work = shape if shape != () else (1,)
    with np.errstate(all="ignore"):
        price = _price_core(w, S, K, T, r, q, np.broadcast_to(v, work), work)
    price = _full(price, work)
    _fix_edges([price], "bsm", w, S, K, T, r, q, v, work)
    return (price.reshape(shape),)


def _greeks(model, is_call, spot, strike, years, rate, div_yield, vol):
    args = [_as_bool(is_call)] + [_f64(a) for a in (spot, strike, years, rate, div_yield, vol)]
    return Greeks(*_blockwise(lambda *a: _greeks_block(model, *a), args, _CHUNK))


def bsm(is_call, spot, strike, years, rate, div_yield, vol) -> Greeks:
    """Black-Scholes-Merton price and greeks of European options on a dividend-paying asset.

    Parameters (all broadcast against each other; scalars or arrays of any shape)
    ---------------------------------------------------------------------------
    is_call : bool or bool array -- True for calls, False for puts.
    spot : underlying price S.
    strike : strike K.
    years : time to expiry T in years (ACT/365, to the minute); ``<= 0`` = expired.
    rate : continuously compounded risk-free rate r, decimal.
    div_yield : continuous dividend yield q, decimal.
    vol : volatility sigma, decimal (0.15 = 15 %); ``<= 0`` gives the zero-vol limit.

    Returns
    -------
    Greeks(price, delta, gamma, theta, vega, rho), float64 arrays of the broadcast
    shape (0-d arrays when every input is a scalar):

    * price -- ``w (S e^{-qT} N(w d1) - K e^{-rT} N(w d2))``, w = +1 call / -1 put.
    * delta -- dV/dS = ``w e^{-qT} N(w d1)``, per 1 unit of spot.
    * gamma -- d2V/dS2 = ``e^{-qT} n(d1) / (S sigma sqrt T)``, per 1 unit of spot.
    * theta -- dV/dt per *calendar day* (annual theta / 365).
    * vega  -- dV/dsigma per vol point (per 0.01 of sigma).
    * rho   -- dV/dr per 1 percentage point (per 0.01 of r), q held fixed.

    Expired options (``years <= 0``) return the undiscounted intrinsic value,
    delta +-1 if strictly in the money else 0, and zero gamma/theta/vega/rho.
    """
    return _greeks("bsm", is_call, spot, strike, years, rate, div_yield, vol)


def bsm_price(is_call, spot, strike, years, rate, div_yield, vol) -> np.ndarray:
    """Black-Scholes-Merton option value only; same arguments, units and edge cases as :func:`bsm`."""
    args = [_as_bool(is_call)] + [_f64(a) for a in (spot, strike, years, rate, div_yield, vol)]
    return _blockwise(_price_block, args, _CHUNK)[0]


def black76(is_call, forward, strike, years, rate, vol) -> Greeks:
    """Black-76 price and greeks of European options on a forward / futures price.

    Used e.g. for VIX options, priced off the VIX future of the same expiry.
    Value ``V = e^{-rT} w (F N(w d1) - K N(w d2))``, ``d1 = (ln(F/K) + sigma^2 T/2)/(sigma sqrt T)``.

    Arguments broadcast like :func:`bsm`; ``forward`` is the futures price F.
    Returned greeks (float64 arrays of the broadcast shape, 0-d for all-scalar input):

    * delta -- dV/dF = ``w e^{-rT} N(w d1)``, per 1 unit of the forward.
    * gamma -- d2V/dF2 = ``e^{-rT} n(d1) / (F sigma sqrt T)``, per 1 unit of the forward.
    * theta -- dV/dt per calendar day (annual / 365), forward held fixed.
    * vega  -- dV/dsigma per vol point (0.01).
    * rho   -- dV/dr per 1 percentage point (0.01) with the forward held fixed,
      i.e. ``-T V / 100``.

    Expired (``years <= 0``): intrinsic ``max(w (F - K), 0)``, delta +-1 if strictly in
    the money else 0, other greeks 0.  ``vol <= 0``: discounted intrinsic
    ``e^{-rT} max(w (F - K), 0)`` with its exact theta (``r V`` per year) and rho.
    """
    r = _f64(rate)
    return _greeks("black76", is_call, forward, strike, years, r, r, vol)


def black76_price(is_call, forward, strike, years, rate, vol) -> np.ndarray:
    """Black-76 option value only; same arguments, units and edge cases as :func:`black76`."""
    r = _f64(rate)
    return bsm_price(is_call, forward, strike, years, r, r, vol)


# ----------------------------------------------------------------------------
# implied volatility
# ----------------------------------------------------------------------------

_MAX_ITER = 60
# Relative Halley step at which to stop.  The iteration converges cubically: a step
# of relative size d leaves an error of order d^3 (1e-12 for d = 1e-4; the tests
# check the recovered vols against the inputs to 1e-8 absolute and reprice to 1e-9).
_S_TOL = 1e-4


def _iv_prepare(P, c, S, K, T, r, q, want_codes):
    """Classify every element and build the normalised problem (one block).

    Returns ``(shape, ok, x, beta, sqrt_t, codes)``: ``ok`` is the boolean mask (of the
    working shape) of solvable elements, ``x = -|ln(F/K)|`` (<= 0), ``beta`` in
    ``(0, e^{x/2})`` and ``sqrt(T)`` describe the equivalent normalised
    out-of-the-money call for the ``ok`` elements only (1-D, in C order), and
    ``codes`` (int8 reason indices, working shape) is computed only if requested.
    """
    shape = np.broadcast_shapes(c.shape, P.shape, S.shape, K.shape, T.shape, r.shape, q.shape)
    work = shape if shape != () else (1,)
    w = _sign(c)
    fw, _ = _disc(S, q, T, work)  # S e^{-qT}   (Black-76: F e^{-rT})
    kd, _ = _disc(K, r, T, work)  # K e^{-rT}
    intrinsic = np.multiply(np.subtract(fw, kd), w)  # discounted forward intrinsic
    intrinsic = np.maximum(intrinsic, 0.0, out=intrinsic) if type(intrinsic) is np.ndarray else max(intrinsic, 0.0)
    tv = np.subtract(np.broadcast_to(P, work), intrinsic)  # time value, full shape
    # upper bound: call P < S e^{-qT}, put P < K e^{-rT}  <=>  tv < min(S e^{-qT}, K e^{-rT})
    lim = np.minimum(fw, kd)
    x = np.divide(fw, kd)
    x = np.log(x, out=x) if type(x) is np.ndarray else np.log(x)
    ok = tv > 0.0
    ok &= tv < lim
    ok &= np.isfinite(x)
    ok &= (T > 0.0) & (T < np.inf)
    codes = None
    if want_codes:
        codes = np.zeros(work, dtype=np.int8)
        codes[~(tv < lim)] = _ABOVE
        codes[tv <= 0.0] = _BELOW
        codes[np.broadcast_to(P <= 0.0, work)] = _NONPOS
        codes[np.broadcast_to(T <= 0.0, work)] = _EXPIRED
        bad = np.isnan(P) | ~(S > 0.0) | ~(K > 0.0)
        for a in (S, K, T, r, q):
            bad = bad | ~np.isfinite(a)
        codes[np.broadcast_to(bad, work)] = _NAN
        codes[(codes == _OK) & ~ok] = _NAN  # degenerate leftovers (e.g. e^{-qT} underflow)
    beta = np.multiply(fw, kd)
    beta = np.sqrt(beta, out=beta) if type(beta) is np.ndarray else np.sqrt(beta)
    beta = np.divide(tv, beta, out=tv)
    x = np.abs(x, out=x) if type(x) is np.ndarray else np.abs(x)
    x = np.negative(x, out=x) if type(x) is np.ndarray else -x
    sqrt_t = np.sqrt(T)
    if ok.all():
        x = np.broadcast_to(x, work).reshape(-1)
        beta = beta.reshape(-1)
        sqrt_t = np.broadcast_to(sqrt_t, work).reshape(-1)
    else:
        x = np.broadcast_to(x, work)[ok]
        beta = beta[ok]
        sqrt_t = np.broadcast_to(sqrt_t, work)[ok]
    return shape, ok, x, beta, sqrt_t, codes


def _iv_block(want_codes, P, c, S, K, T, r, q):
    with np.errstate(all="ignore"):
        shape, ok, x, beta, sqrt_t, codes = _iv_prepare(P, c, S, K, T, r, q, want_codes)
        if want_codes:
            return (codes.reshape(shape),)
        if x.size == ok.size:
            out = _solve(x, beta)
            out /= sqrt_t
            return (out.reshape(shape),)
        out = np.full(ok.shape, np.nan)
        if x.size:
            out[ok] = _solve(x, beta) / sqrt_t
        return (out.reshape(shape),)


def _iv_args(price, is_call, spot, strike, years, rate, div_yield, model):
    if model == "bsm":
        q = _f64(div_yield)
    elif model == "black76":
        q = _f64(rate)  # Black-76 = BSM on the forward with "dividend yield" = rate
    else:
        raise ValueError(f"model must be 'bsm' or 'black76', not {model!r}")
    return [_f64(price), _as_bool(is_call), _f64(spot), _f64(strike), _f64(years), _f64(rate), q]


def _solve_high(x, beta, s_c, s, near):
    """Halley on ``b(s) - beta`` for ``s >= s_c`` (b concave there); bracketed.

    ``near=True`` (use for |x| < 1/2) evaluates ``2 (b - sinh(x/2)) =
    e^{x/2} erf(d1/sqrt2) - e^{-x/2} erf(d2/sqrt2)`` instead of ``b`` itself: same
    root and Halley ratios, but no cancellation of two ~1/2 terms when the total
    standard deviation is tiny near the money.  Far from the money ``sinh(x/2)``
    would dwarf ``b``, so there ``b = e^{x/2} N(d1) - e^{-x/2} N(d2)`` is used.
    """
    n = x.size
    out = s.copy()
    lo = s_c.copy()
    hi = np.full(n, np.inf)
    eh = np.exp(0.5 * x)
    emh = 1.0 / eh
    if near:
        beta = beta - np.sinh(0.5 * x)
        beta *= 2.0
        cdf, arg_scale, vega_scale = erf, _INV_SQRT2, 2.0 * _INV_SQRT_2PI
    else:
        cdf, arg_scale, vega_scale = ndtr, 1.0, _INV_SQRT_2PI
    x2 = x * x
    idx = np.arange(n)
    for _ in range(_MAX_ITER):
        if idx.size == 0:
            break
        d1 = x / s
        d1 += 0.5 * s
        b = eh * cdf(d1 * arg_scale) - emh * cdf((d1 - s) * arg_scale)
        vega = eh * np.exp(-0.5 * d1 * d1)
        vega *= vega_scale
        g = b - beta
        pos = g > 0.0
        hi = np.where(pos, s, hi)
        lo = np.where(pos, lo, s)
        nu = g / vega
        curv = x2 / (s * s * s) - 0.25 * s  # b'' / b'
        den = 1.0 - 0.5 * nu * curv
        step = np.where(den > 0.25, -nu / den, -nu)
        s_new = s + step
        outside = ~((s_new >= lo) & (s_new <= hi))
        if outside.any():
            mid = np.where(np.isinf(hi), 2.0 * s + 1.0, 0.5 * (lo + hi))
            s_new = np.where(outside, mid, s_new)
            step = s_new - s
        out[idx] = s_new
        done = ((np.abs(step) <= _S_TOL * s_new) & ~outside) | (g == 0.0) | (hi - lo <= 4e-16 * lo)
        keep = ~done
        idx, x, beta, s, lo, hi, eh, emh, x2 = (
            a[keep] for a in (idx, x, beta, s_new, lo, hi, eh, emh, x2)
        )
    return out


def _solve_low(x, beta, s_c, s):
    """Halley on ``ln b(s) - ln beta`` for ``0 < s < s_c``; bracketed.

    With ``u_i = -d_i / sqrt 2 > 0`` and ``E = erfcx(u1) - erfcx(u2)`` one has
    ``ln b = -x^2/(2 s^2) - s^2/8 + ln(E/2)`` and ``(ln b)' = sqrt(2/pi) / E``, which
    neither underflows nor loses the sign for tiny prices.
    """
    n = x.size
    out = s.copy()
    lo = np.zeros(n)
    hi = s_c.copy()
    lnbeta = np.log(beta)
    idx = np.arange(n)
    for _ in range(_MAX_ITER):
        if idx.size == 0:
            break
        xs = x / s
        d1 = xs + 0.5 * s
        u1 = d1 * -_INV_SQRT2
        u2 = u1 + s * _INV_SQRT2
        e1 = erfcx(u1)
        e2 = erfcx(u2)
        E = e1 - e2
        h = np.log(0.5 * E) - 0.5 * xs * xs - 0.125 * s * s - lnbeta
        pos = h > 0.0
        hi = np.where(pos, s, hi)
        lo = np.where(pos, lo, s)
        nu = h * E * (1.0 / _SQRT_2_OVER_PI)  # h / h'
        # E' = erfcx'(u1) u1' - erfcx'(u2) u2',  erfcx'(u) = 2 u erfcx(u) - 2/sqrt(pi)
        xs2 = xs / s
        du1 = (xs2 - 0.5) * _INV_SQRT2
        du2 = (xs2 + 0.5) * _INV_SQRT2
        # (u2 - u1 = s / sqrt 2 and du1 - du2 = -1 / sqrt 2 simplify the constant term)
        dE = 2.0 * (u1 * e1 * du1 - u2 * e2 * du2) + _SQRT_2_OVER_PI
        curv = -dE / E  # h'' / h'
        den = 1.0 - 0.5 * nu * curv
        step = np.where(den > 0.25, -nu / den, -nu)
        s_new = s + step
        outside = ~((s_new >= lo) & (s_new <= hi))  # also catches NaN (E == 0)
        if outside.any():
            s_new = np.where(outside, 0.5 * (lo + hi), s_new)
            step = s_new - s
        out[idx] = s_new
        done = ((np.abs(step) <= _S_TOL * s_new) & ~outside) | (h == 0.0) | (hi - lo <= 4e-16 * hi)
        keep = ~done
        idx, x, lnbeta, s, lo, hi = (a[keep] for a in (idx, x, lnbeta, s_new, lo, hi))
    return out


# Initial guesses come from two tables of the inverse of the normalised Black
# function, built once (lazily, well under 0.1 s) from the forward function.  Both use the
# row coordinate a = ln|x| (|x| clipped to [1e-9, 16]) and a column coordinate
# in (0, 1] chosen so that the tabulated value stays finite and smooth all the way
# to the extreme of the branch:
#
# * below the inflection point (s < s_c):  y = 1 / sqrt(1 - ln(beta / b_c)),
#   tabulating  q = (s / s_c) / y      (finite as y -> 0, i.e. beta -> 0);
# * above it (s >= s_c), with tau = e^{x/2} - beta (distance to the upper bound):
#   t = 1 / sqrt(1 - ln(tau / tau_c)), tabulating  Q = s t   (-> 2 sqrt 2 as t -> 0).
#
# Lookup is cubic (4-point Lagrange) across rows and linear along the row; the
# guesses are within ~1e-5 relative, so a single Halley step usually lands at
# machine precision and the loop stops.
_TAB_A0 = math.log(1e-9)
_TAB_A1 = math.log(16.0)
_TAB_NA = 97
_TAB_NY = 1025
_tables: dict[str, np.ndarray] = {}  # filled once, in one step (thread-safe enough)


def _ln_b_low(x, s):
    """ln of the normalised OTM call for ``s < sqrt(2|x|)``, via erfcx (no underflow)."""
    xs = x / s
    u1 = (xs + 0.5 * s) * -_INV_SQRT2
    u2 = u1 + s * _INV_SQRT2
    return np.log(0.5 * (erfcx(u1) - erfcx(u2))) - 0.5 * xs * xs - 0.125 * s * s


def _tabulate(coord, value):
    """Resample each row of (coord, value) samples onto the uniform column grid."""
    grid = np.linspace(0.0, 1.0, _TAB_NY)
    tab = np.empty((coord.shape[0], _TAB_NY))
    for i in range(coord.shape[0]):
        ci, vi = coord[i], value[i]
        good = np.isfinite(ci) & np.isfinite(vi) & (ci > 0.0) & (ci < 1.0)
        ci, vi = np.append(ci[good], 1.0), np.append(vi[good], vi[-1])
        order = np.argsort(ci, kind="stable")
        ci, vi = ci[order], vi[order]
        keep = np.concatenate(([True], np.diff(ci) > 0.0))  # strictly increasing for interp
        tab[i] = np.interp(grid, ci[keep], vi[keep])
    # float32 is ample for a starting guess and halves the cache footprint (400 kB)
    return tab.ravel().astype(np.float32)


def _build_tables():
    tables = {}
    x = -np.exp(np.linspace(_TAB_A0, _TAB_A1, _TAB_NA))[:, None]
    s_c = np.sqrt(-2.0 * x)
    eh, emh = np.exp(0.5 * x), np.exp(-0.5 * x)
    with np.errstate(all="ignore"):
        n_c = ndtr(-s_c)
        # low branch: z = s / s_c in (0, 1)
        z = np.exp(np.linspace(math.log(1e-7), 0.0, 6000))[None, :-1]
        ln_eta = _ln_b_low(x, z * s_c) - np.log(0.5 * eh - emh * n_c)
        y = 1.0 / np.sqrt(1.0 - ln_eta)
        value = np.concatenate([z / y, np.ones((_TAB_NA, 1))], axis=1)
        tables["low"] = _tabulate(np.concatenate([y, np.ones((_TAB_NA, 1))], axis=1), value)
        # high branch: s = s_c + u, u up to ~80 (tau underflows beyond)
        u = np.exp(np.linspace(math.log(1e-7), math.log(80.0), 6000))[None, :]
        s = s_c + u
        d1 = x / s + 0.5 * s
        tau = eh * ndtr(-d1) + emh * ndtr(d1 - s)  # e^{x/2} - b(s), without cancellation
        t = 1.0 / np.sqrt(1.0 - np.log(tau / (0.5 * eh + emh * n_c)))
        t = np.concatenate([t, np.ones((_TAB_NA, 1))], axis=1)
        value = np.concatenate([s, s_c], axis=1) * t
        tables["high"] = _tabulate(t, value)
    _tables.update(tables)  # both tables appear together


def _lookup(name, x, col):
    """Table value at (ln|x|, col): cubic across rows, linear along the row."""
    if name not in _tables:
        _build_tables()
    tab = _tables[name]
    a = np.log(-x)
    a -= _TAB_A0
    a *= (_TAB_NA - 1) / (_TAB_A1 - _TAB_A0)
    np.clip(a, 1.0, _TAB_NA - 2.000001, out=a)
    ia = a.astype(np.intp)
    t = a - ia
    # 4-point Lagrange weights at rows ia-1, ia, ia+1, ia+2
    tp1, tm1, tm2 = t + 1.0, t - 1.0, t - 2.0
    w0 = t * tm1 * tm2 * (-1.0 / 6.0)
    w1 = tp1 * tm1 * tm2 * 0.5
    w2 = tp1 * t * tm2 * -0.5
    w3 = tp1 * t * tm1 * (1.0 / 6.0)
    cc = col * (_TAB_NY - 1)
    ic = np.minimum(cc.astype(np.intp), _TAB_NY - 2)
    fc = cc - ic
    k = (ia - 1) * _TAB_NY + ic
    n = _TAB_NY
    v0 = tab[k] * w0 + tab[k + n] * w1 + tab[k + 2 * n] * w2 + tab[k + 3 * n] * w3
    k += 1
    v1 = tab[k] * w0 + tab[k + n] * w1 + tab[k + 2 * n] * w2 + tab[k + 3 * n] * w3
    v1 -= v0
    v1 *= fc
    v0 += v1
    return v0


def _solve(x, beta):
    """Total implied standard deviation ``s`` with ``b(x, s) = beta`` (x <= 0)."""
    with np.errstate(all="ignore"):
        s_c = np.sqrt(-2.0 * x)
        eh = np.exp(0.5 * x)
        emh_nc = ndtr(-s_c)
        emh_nc /= eh  # e^{-x/2} N(-s_c)
        half_eh = 0.5 * eh
        b_c = half_eh - emh_nc  # b(s_c)
        low = beta < b_c
        s = np.empty_like(x)
        hi_idx = np.flatnonzero(~low)
        lo_idx = np.flatnonzero(low)
        if hi_idx.size:
            xh, bh, sch, ehh = x[hi_idx], beta[hi_idx], s_c[hi_idx], eh[hi_idx]
            # rounding in the ITM -> OTM reduction may leave beta a hair above its bound
            np.minimum(bh, np.nextafter(ehh, 0.0), out=bh)
            tau = ehh - bh
            tau /= half_eh[hi_idx] + emh_nc[hi_idx]  # tau / tau_c, tau_c = e^{x/2} - b_c
            np.log(tau, out=tau)
            np.subtract(1.0, tau, out=tau)
            np.sqrt(tau, out=tau)
            t = np.divide(1.0, tau, out=tau)
            g = _lookup("high", xh, t)
            g /= t
            np.maximum(g, sch, out=g)
            near = xh > -0.5
            if near.all():
                s[hi_idx] = _solve_high(xh, bh, sch, g, True)
            elif not near.any():
                s[hi_idx] = _solve_high(xh, bh, sch, g, False)
            else:
                far = ~near
                s[hi_idx[near]] = _solve_high(xh[near], bh[near], sch[near], g[near], True)
                s[hi_idx[far]] = _solve_high(xh[far], bh[far], sch[far], g[far], False)
        if lo_idx.size:
            xl, bl, scl = x[lo_idx], beta[lo_idx], s_c[lo_idx]
            y = bl / b_c[lo_idx]
            np.log(y, out=y)
            np.subtract(1.0, y, out=y)
            np.sqrt(y, out=y)
            np.divide(1.0, y, out=y)
            g = _lookup("low", xl, y)
            g *= y
            np.clip(g, 1e-12, 0.9999, out=g)
            g *= scl
            s[lo_idx] = _solve_low(xl, bl, scl, g)
    return s


def implied_vol(price, is_call, spot, strike, years, rate, div_yield, *, model="bsm") -> np.ndarray:
    """Implied volatility (decimal, annualised) reproducing ``price``; NaN where none does.

    Arguments broadcast like :func:`bsm` (``price`` is the option premium per unit).
    ``model="bsm"`` inverts :func:`bsm_price`; ``model="black76"`` inverts
    :func:`black76_price`, in which case ``spot`` is the *forward/futures* price and
    ``div_yield`` is ignored (pass anything, e.g. 0).

    Never raises on bad data: returns NaN where no volatility reproduces the price --
    price at or below the lower bound (discounted intrinsic
    ``max(w (S e^{-qT} - K e^{-rT}), 0)``), at or above the upper bound (call
    ``S e^{-qT}``, put ``K e^{-rT}``), ``years <= 0``, ``price <= 0``, or NaN / non-finite
    / non-positive spot or strike inputs.  :func:`implied_vol_reasons` says which.

    The result has the broadcast shape (0-d array for all-scalar input) and is
    accurate to ~1e-12 relative wherever the price carries that much information
    about the volatility (i.e. vega is not negligible against the price's rounding).
    """
    args = _iv_args(price, is_call, spot, strike, years, rate, div_yield, model)
    return _blockwise(lambda *a: _iv_block(False, *a), args, _IV_CHUNK)[0]


def implied_vol_reasons(price, is_call, spot, strike, years, rate, div_yield, *, model="bsm") -> np.ndarray:
    """Why :func:`implied_vol` is or is not defined, per element (string array, broadcast shape).

    Codes (first matching wins, in this order):

    * ``"nan_input"`` -- any input is NaN, or spot/strike/years/rate/div_yield is
      non-finite, or spot/strike is <= 0.
    * ``"expired"`` -- ``years <= 0``.
    * ``"nonpositive_price"`` -- ``price <= 0``.
    * ``"below_intrinsic"`` -- price at or below the lower bound (discounted intrinsic,
      ``max(w (S e^{-qT} - K e^{-rT}), 0)``).
    * ``"above_upper_bound"`` -- price at or above ``S e^{-qT}`` (call) / ``K e^{-rT}`` (put).
    * ``"ok"`` -- a finite positive implied volatility exists.

    Same arguments (and ``model`` semantics) as :func:`implied_vol`; the solver is not run.
    """
    args = _iv_args(price, is_call, spot, strike, years, rate, div_yield, model)
    codes = _blockwise(lambda *a: _iv_block(True, *a), args, _IV_CHUNK)[0]
    return np.asarray(_REASON_ARRAY[codes], dtype=_REASON_ARRAY.dtype)
