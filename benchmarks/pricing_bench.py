"""Throughput benchmark for :mod:`strikebench.pricing`.

``run()`` returns options per second for

* ``greeks_per_s``  -- :func:`strikebench.pricing.bsm` (price + all five greeks),
* ``iv_per_s``      -- :func:`strikebench.pricing.implied_vol` (BSM),
* ``scalar_python_greeks_per_s`` -- reference: a plain pure-Python ``math.erf``
  BSM price + greeks loop, one option at a time,
* ``scalar_python_iv_per_s`` -- reference: a scalar pure-Python Newton iteration
  with a bisection safeguard, one option at a time,

on a book of random European options (mixed calls and puts; spot 100; strikes
at moneyness 0.6-1.6; 1 day to 2 years; vol 5 %-100 %; r 0-5 %; q 0-3 %).  The
scalar references run on a smaller sample (they are ~100x slower).  Timings are
the best of ``repeats`` runs.  The numpy code paths are single-threaded
(elementwise ufuncs); run with ``OMP_NUM_THREADS=1`` to be sure nothing else is.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/pricing_bench.py [n]
"""

from __future__ import annotations

import math
import os
import sys
import time

if __name__ == "__main__":  # before numpy is imported
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from strikebench import pricing

__all__ = ["run", "random_book", "scalar_bsm_greeks", "scalar_implied_vol"]

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def random_book(n: int, seed: int = 42):
    """``(is_call, spot, strike, years, rate, div_yield, vol)`` arrays of length n."""
    rng = np.random.default_rng(seed)
    spot = np.full(n, 100.0)
    strike = spot * rng.uniform(0.6, 1.6, n)
    years = rng.uniform(1.0 / 365.0, 2.0, n)
    vol = rng.uniform(0.05, 1.0, n)
    rate = rng.uniform(0.0, 0.05, n)
    div = rng.uniform(0.0, 0.03, n)
    is_call = rng.random(n) < 0.5
    return is_call, spot, strike, years, rate, div, vol


# --------------------------------------------------------------------------
# pure-Python scalar references
# --------------------------------------------------------------------------


def _ncdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / _SQRT2))


def scalar_bsm_greeks(is_call, S, K, T, r, q, v):
    """Pure-Python BSM price and greeks (same units as :func:`strikebench.pricing.bsm`)."""
    sqrt_t = math.sqrt(T)
    vst = v * sqrt_t
    dq, dr = math.exp(-q * T), math.exp(-r * T)
    d1 = (math.log(S / K) + (r - q + 0.5 * v * v) * T) / vst
    d2 = d1 - vst
    pdf = math.exp(-0.5 * d1 * d1) * _INV_SQRT_2PI
    w = 1.0 if is_call else -1.0
    n1, n2 = _ncdf(w * d1), _ncdf(w * d2)
    price = w * (S * dq * n1 - K * dr * n2)
    delta = w * dq * n1
    gamma = dq * pdf / (S * vst)
    theta = (-S * dq * pdf * v / (2.0 * sqrt_t) + w * (q * S * dq * n1 - r * K * dr * n2)) / 365.0
    vega = S * dq * pdf * sqrt_t / 100.0
    rho = w * K * T * dr * n2 / 100.0
    return price, delta, gamma, theta, vega, rho


def _scalar_price_vega(is_call, S, K, T, r, q, v):
    sqrt_t = math.sqrt(T)
    vst = v * sqrt_t
    d1 = (math.log(S / K) + (r - q + 0.5 * v * v) * T) / vst
    d2 = d1 - vst
    w = 1.0 if is_call else -1.0
    price = w * (S * math.exp(-q * T) * _ncdf(w * d1) - K * math.exp(-r * T) * _ncdf(w * d2))
    vega = S * math.exp(-q * T) * math.exp(-0.5 * d1 * d1) * _INV_SQRT_2PI * sqrt_t
    return price, vega


def scalar_implied_vol(price, is_call, S, K, T, r, q, tol=1e-12, max_iter=100):
    """Pure-Python Newton on the BSM price with a bisection safeguard (reference only)."""
    lo, hi, v = 1e-6, 10.0, 0.3
    for _ in range(max_iter):
        p, vega = _scalar_price_vega(is_call, S, K, T, r, q, v)
        diff = p - price
        if abs(diff) < tol:
            return v
        if diff > 0.0:
            hi = v
        else:
            lo = v
        v_new = v - diff / vega if vega > 0.0 else -1.0
        v = v_new if lo < v_new < hi else 0.5 * (lo + hi)
    return v


# --------------------------------------------------------------------------
# benchmark
# --------------------------------------------------------------------------


def _best(fn, repeats: int) -> float:
    fn()  # warm-up (also builds the IV guess table once)
    best = math.inf
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(n: int = 1_000_000, repeats: int = 3) -> dict:
    """Options per second for vectorised greeks / IV and the pure-Python references."""
    c, S, K, T, r, q, v = random_book(n)
    prices = pricing.bsm_price(c, S, K, T, r, q, v)

    t_greeks = _best(lambda: pricing.bsm(c, S, K, T, r, q, v), repeats)
    t_iv = _best(lambda: pricing.implied_vol(prices, c, S, K, T, r, q), repeats)

    m_g = max(1, min(n, 100_000))
    args_g = list(zip(*(a[:m_g].tolist() for a in (c, S, K, T, r, q, v))))
    t_sg = _best(lambda: [scalar_bsm_greeks(*a) for a in args_g], repeats)

    m_iv = max(1, min(n, 20_000))
    args_iv = list(zip(*(a[:m_iv].tolist() for a in (prices, c, S, K, T, r, q))))
    t_siv = _best(lambda: [scalar_implied_vol(*a) for a in args_iv], repeats)

    return {
        "greeks_per_s": n / t_greeks,
        "iv_per_s": n / t_iv,
        "scalar_python_greeks_per_s": m_g / t_sg,
        "scalar_python_iv_per_s": m_iv / t_siv,
    }


def _main(argv: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    n = int(float(argv[1])) if len(argv) > 1 else 1_000_000
    res = run(n)
    table = Table(title=f"strikebench.pricing throughput (n = {n:,}, one core)")
    table.add_column("figure")
    table.add_column("options / s", justify="right")
    table.add_column("vs pure Python", justify="right")
    rows = [
        ("BSM price + greeks (numpy)", res["greeks_per_s"], res["greeks_per_s"] / res["scalar_python_greeks_per_s"]),
        ("BSM implied vol (numpy)", res["iv_per_s"], res["iv_per_s"] / res["scalar_python_iv_per_s"]),
        ("price + greeks, pure-Python loop", res["scalar_python_greeks_per_s"], 1.0),
        ("implied vol, pure-Python Newton", res["scalar_python_iv_per_s"], 1.0),
    ]
    for name, rate, ratio in rows:
        table.add_row(name, f"{rate:,.0f}", f"{ratio:,.0f}x")
    Console().print(table)


if __name__ == "__main__":
    _main(sys.argv)
