"""Implied-volatility surfaces: SSVI (Gatheral & Jacquier, 2014) on the model's ATM term structure.

For log-moneyness ``k = ln(K / F_T)`` and ATM total implied variance ``theta_T``::

    w(k, theta) = theta / 2 * (1 + rho phi k + sqrt((phi k + rho)^2 + 1 - rho^2))
    phi(theta)  = eta / (theta^gamma (1 + theta)^(1 - gamma))

The surface is free of butterfly arbitrage when ``eta (1 + |rho|) <= 2`` (the
scenario validator enforces it) and of calendar arbitrage when ``theta_T`` is
non-decreasing in T (the ATM term structure is an integral of positive forward
variance plus event variances, so it is). ``rho < 0`` gives the SPX put skew;
the power law makes short-dated smiles steeper in strike. VIX options use the
same family with ``rho > 0`` (call skew) around the VIX future.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ssvi_total_variance", "vix_option_atm_variance"]


def ssvi_total_variance(k, theta, rho: float, eta: float, gamma: float):
    """Total implied variance w(k, theta); broadcasts over ``k`` and ``theta``."""
    theta = np.asarray(theta, dtype=np.float64)
    phi = eta / (theta ** gamma * (1.0 + theta) ** (1.0 - gamma))
    pk = phi * k
    root = np.sqrt((pk + rho) ** 2 + (1.0 - rho * rho))
    return 0.5 * theta * (1.0 + rho * pk + root)


def vix_option_atm_variance(vix, years, vvix: float, term_exponent: float):
    """ATM total variance of VIX options: vol-of-vol ``vvix`` at 30 days and VIX = 20,
    rising with the VIX level and for short expiries (``T^-term_exponent``)."""
    years = np.maximum(np.asarray(years, dtype=np.float64), 1e-7)
    level = vvix * (np.maximum(np.asarray(vix, dtype=np.float64), 5.0) / 20.0) ** 0.3
    vol = level * (years / (30.0 / 365.0)) ** (-term_exponent)
    return vol * vol * years
