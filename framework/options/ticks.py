"""Minimum price increments ("ticks") and tick rounding for option premiums.

Rules (sources in ``docs/options-domain.md``):

========  =========================================  ==========================
rule      single-leg premium                          complex order net price
========  =========================================  ==========================
SPX       0.05 below 3.00, 0.10 at/above 3.00         0.05 (any price)
XSP       0.01 all series                             0.01
VIX       0.01 below 3.00, 0.05 at/above 3.00 (*)    0.01
PENNY     0.01 all series (SPY, QQQ, IWM)             0.01
========  =========================================  ==========================

(*) since 2022-10-03.  Before that VIX single legs were 0.05 below 3.00 and
0.10 at/above; pass ``as_of=<date>`` to get the rule in force on that day.

All arithmetic is done on an integer-cent grid and results are rounded to 2
decimals, so ``round_to_tick(2.97, "SPX", direction="up")`` is exactly
``3.0`` and never ``2.9999999999999996``.  Every function is vectorised:
scalars in -> Python ``float``/``bool`` out; arrays/lists in -> ``np.ndarray``.

Negative prices (e.g. a complex order's net credit written as a negative
number) use the grid mirrored about zero; "up" always means towards +inf.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np
import pandas as pd

from strikebench.options.contracts import OptionContract, RootSpec, root_spec

__all__ = [
    "TickRule",
    "TICK_RULES",
    "VIX_PENNY_TICKS_SINCE",
    "tick_rule_for",
    "tick_size",
    "tick_sizes",
    "tick_sizes_on_rule",
    "round_to_tick",
    "round_on_rule",
    "round_down_up",
    "round_for_trader",
    "is_on_tick",
]

#: First day of Cboe's VIX single-leg tick reduction (0.05/0.10 -> 0.01/0.05).
VIX_PENNY_TICKS_SINCE = _dt.date(2022, 10, 3)

_DIRECTIONS = ("up", "down", "nearest")
# Prices are quantised to 10**-_CENT_DECIMALS cent before rounding.
_CENT_DECIMALS = 6


@dataclass(frozen=True)
class TickRule:
    """A tiered tick grid in integer cents.

    ``tiers`` are ``(lower_bound_cents, step_cents)`` pairs, ascending, the
    first starting at 0; each tier applies from its bound (inclusive) to the
    next bound (exclusive).  Every upper bound must lie on the grid of the
    tier below it, so the grid is continuous (e.g. 3.00 is a valid SPX price
    reachable from both sides).
    """

    name: str
    tiers: tuple[tuple[int, int], ...]
    complex_step: int  #: net-price increment of complex (multi-leg) orders, cents
    note: str = ""

    def __post_init__(self) -> None:
        if not self.tiers or self.tiers[0][0] != 0:
            raise ValueError(f"tick rule {self.name}: first tier must start at 0")
        for (b0, s0), (b1, _s1) in zip(self.tiers, self.tiers[1:]):
            if b1 <= b0 or (b1 - b0) % s0:
                raise ValueError(f"tick rule {self.name}: bound {b1} not on the {s0}-cent grid from {b0}")
        if any(s <= 0 for _, s in self.tiers) or self.complex_step <= 0:
            raise ValueError(f"tick rule {self.name}: steps must be positive")

    @functools.cached_property
    def _bounds(self) -> np.ndarray:
        return np.array([b for b, _ in self.tiers], dtype=np.float64)

    @functools.cached_property
    def _steps(self) -> np.ndarray:
        return np.array([s for _, s in self.tiers], dtype=np.float64)

    @functools.cached_property
    def _tick_dollars(self) -> tuple[float, float | None]:
        """np.round(step / 100, 2) of the first tier's step and of the second's (None for a one-tier rule): the
        increments :func:`tick_sizes` gives on a rule of one or two tiers."""
        got = np.round(np.array([s for _, s in self.tiers[:2]], dtype=np.float64) / 100.0, 2)
        return float(got[0]), (float(got[1]) if len(got) > 1 else None)

    @functools.cached_property
    def _complex_dollars(self) -> float:
        return float(np.round(np.array([float(self.complex_step)]) / 100.0, 2)[0])

    @functools.cached_property
    def _tiers_f(self) -> tuple[tuple[float, float], ...]:
        """The tiers as Python floats, highest bound first (the scalar path's lookup)."""
        return tuple((float(b), float(s)) for b, s in reversed(self.tiers))


TICK_RULES: Mapping[str, TickRule] = MappingProxyType(
    {
        "SPX": TickRule("SPX", ((0, 5), (300, 10)), 5, "SPX/SPXW; complex net price in 0.05 (boxes 0.01 not modelled)"),
        "XSP": TickRule("XSP", ((0, 1),), 1, "Mini-SPX: 0.01 for all series"),
        "VIX": TickRule("VIX", ((0, 1), (300, 5)), 1, "VIX since 2022-10-03"),
        "VIX_PRE_2022": TickRule("VIX_PRE_2022", ((0, 5), (300, 10)), 1, "VIX before 2022-10-03"),
        "PENNY": TickRule("PENNY", ((0, 1),), 1, "penny-interval ETFs SPY/QQQ/IWM: 0.01 for all series"),
    }
)


def _as_date(as_of: Any) -> _dt.date:
    if isinstance(as_of, _dt.datetime):
        return as_of.date()
    if isinstance(as_of, _dt.date):
        return as_of
    ts = pd.Timestamp(as_of)
    if ts is pd.NaT:
        raise ValueError(f"cannot read as_of {as_of!r}")
    return ts.date()


def tick_rule_for(root: str | OptionContract | RootSpec, as_of: Any = None) -> TickRule:
    """The :class:`TickRule` of ``root`` (a root string, contract or RootSpec).

    ``as_of`` (date-like, optional) selects the historical rule where the
    exchange changed it (only VIX so far); ``None`` means today's rules.
    """
    if isinstance(root, OptionContract):
        spec = root.spec
    elif isinstance(root, RootSpec):
        spec = root
    else:
        spec = root_spec(root)
    name = spec.tick_rule
    if name == "VIX" and as_of is not None and _as_date(as_of) < VIX_PENNY_TICKS_SINCE:
        name = "VIX_PRE_2022"
    return TICK_RULES[name]


# --------------------------------------------------------------------------
# core (vectorised, integer-cent grid held in float64 for NaN support)
# --------------------------------------------------------------------------
def _cents(prices: Any) -> tuple[np.ndarray, bool]:
    scalar = np.ndim(prices) == 0
    arr = np.asarray(prices, dtype=np.float64)
    # Quantise to 1e-6 cent: removes binary noise such as 1.025*100 ==
    # 102.49999999999999 or (0.1+0.2)*100 == 30.000000000000004, so grid
    # points and exact half-ticks are recognised as such.
    c = np.round(arr * 100.0, _CENT_DECIMALS)
    return c, scalar


def _out(values: np.ndarray, scalar: bool) -> Any:
    values = np.round(values, 2) + 0.0  # +0.0 turns -0.0 into 0.0
    if scalar:
        return float(values)
    return values


def _tier(rule: TickRule, ac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    bounds, steps = rule._bounds, rule._steps
    with np.errstate(invalid="ignore"):
        idx = np.searchsorted(bounds, np.nan_to_num(ac, nan=0.0, posinf=0.0), side="right") - 1
    idx = np.clip(idx, 0, len(bounds) - 1)
    return bounds[idx], steps[idx]


def _up_nonneg(rule: TickRule, ac: np.ndarray, complex_order: bool) -> np.ndarray:
    if complex_order:
        s = float(rule.complex_step)
        return np.ceil(ac / s) * s
    base, step = _tier(rule, ac)
    return base + np.ceil((ac - base) / step) * step


def _down_nonneg(rule: TickRule, ac: np.ndarray, complex_order: bool) -> np.ndarray:
    if complex_order:
        s = float(rule.complex_step)
        return np.floor(ac / s) * s
    base, step = _tier(rule, ac)
    return base + np.floor((ac - base) / step) * step


def _round_cents(rule: TickRule, c: np.ndarray, direction: str, complex_order: bool) -> np.ndarray:
    neg = c < 0
    ac = np.abs(c)
    up_a = _up_nonneg(rule, ac, complex_order)
    dn_a = _down_nonneg(rule, ac, complex_order)
    # mirror for negatives: up(x) = -down(-x), down(x) = -up(-x)
    up = np.where(neg, -dn_a, up_a)
    dn = np.where(neg, -up_a, dn_a)
    if direction == "up":
        return up
    if direction == "down":
        return dn
    # nearest; exact ties go up (towards +inf)
    return np.where((c - dn) < (up - c), dn, up)


def _cents_fast(arr: np.ndarray) -> np.ndarray:
    """:func:`_cents` of a float64 array as numpy's ``np.round(arr * 100, 6)`` computes it (multiply by
    10**6, rint, divide) without its Python-level dispatch."""
    c = arr * 100.0 * 1e6
    np.rint(c, out=c)
    c /= 1e6
    return c


def _out_fast(g: np.ndarray) -> np.ndarray:
    """:func:`_out` of a float64 array of grid points in cents (``g / 100`` rounded to 2 decimals as
    ``np.round`` does it: multiply, rint, divide; then -0.0 -> 0.0)."""
    v = g / 100.0
    v *= 100.0
    np.rint(v, out=v)
    v /= 100.0
    v += 0.0
    return v


def _tier_fast(rule: TickRule, ac: np.ndarray):
    """(base, step) of each of ``ac`` (non-negative cents or NaN/inf) for rounding: :func:`_tier` without
    its NaN clean-up and clip. A NaN or infinite ``ac`` rounds to NaN or inf whatever its tier, and a
    non-negative one is never below the first bound, so the values rounded are the same; a one-tier rule
    gives scalars, a two-tier rule is one comparison."""
    tiers = rule.tiers
    if len(tiers) == 1:
        return 0.0, float(tiers[0][1])
    if len(tiers) == 2:  # base and step as 0/1 times integer cents: exact
        hi = (ac >= float(tiers[1][0])).astype(np.float64)
        return hi * float(tiers[1][0]), hi * float(tiers[1][1] - tiers[0][1]) + float(tiers[0][1])
    idx = np.searchsorted(rule._bounds, ac, side="right") - 1
    return rule._bounds[idx], rule._steps[idx]


def _steps(q: np.ndarray, direction, mirrored: bool = False) -> np.ndarray:
    """ceil (``direction`` "up") or floor ("down") of ``q``, the other one when ``mirrored``; a pair of directions
    takes the first for ``q[0]`` and the second for ``q[1]``."""
    if type(direction) is str:
        return np.ceil(q) if (direction == "up") != mirrored else np.floor(q)
    out = np.empty_like(q)
    for k, d in enumerate(direction):
        (np.ceil if (d == "up") != mirrored else np.floor)(q[k], out=out[k])
    return out


def _round_cents_one_way(rule: TickRule, c: np.ndarray, direction, complex_order: bool) -> np.ndarray:
    """:func:`_round_cents` for ``direction`` "up" or "down" computing only that direction: the tier
    looked up once, the other direction's grid point only when there are negative prices (mirrored).
    The same values, element for element (``tests/test_ticks.py`` checks it against the general path).
    ``direction`` may be a pair ("down", "up"): ``c[0]`` rounded the first way, ``c[1]`` the second, in one pass
    (what :func:`round_down_up` asks)."""
    ac = np.abs(c)
    if complex_order:
        # the general path's ceil(ac / s) * s
        q = ac / float(rule.complex_step)
        step = float(rule.complex_step)
        g = _steps(q, direction) * step
        base = None
    else:
        base, step = _tier_fast(rule, ac)
        if len(rule.tiers) == 1:
            # one tier (base 0): ac - 0 and + 0 leave ac >= +0 (or NaN) and its grid points as they are, and so
            # do / 1 and * 1 for a one-cent step
            base = None
            q = ac if step == 1.0 else ac / step
            g = _steps(q, direction)
            if step != 1.0:
                g *= step
        else:
            q = (ac - base) / step
            g = _steps(q, direction) * step + base   # = base + ceil(q) * step (exact)
    neg = c < 0
    if not neg.any():
        return g
    # mirror for negatives: up(x) = -down(-x), down(x) = -up(-x)
    o = _steps(q, direction, mirrored=True) * step
    if base is not None:
        o = base + o
    return np.where(neg, -o, g)


def _rint(x: float) -> float:
    """np.rint of a finite float (round half to even), in Python floats."""
    return float(round(x))


def _round_scalar(rule: TickRule, x: float, direction: str, complex_order: bool) -> float:
    """:func:`round_to_tick` of one finite price in Python floats: the same operations in the same
    order as the vectorised path (np.round is multiply, rint, divide), so the same float, at a
    fraction of the cost of numpy's per-call overhead on a scalar (a fill rounds a dozen times)."""
    c = _rint(x * 100.0 * 1e6) / 1e6  # _cents: np.round(x * 100, 6)
    ac = abs(c)
    if complex_order:
        s = float(rule.complex_step)
        up_a = math.ceil(ac / s) * s
        dn_a = math.floor(ac / s) * s
    else:
        for base, step in rule._tiers_f:  # searchsorted(bounds, ac, "right") - 1, clipped to the first
            if ac >= base:
                break
        up_a = base + math.ceil((ac - base) / step) * step
        dn_a = base + math.floor((ac - base) / step) * step
    if c < 0:
        up, dn = -dn_a, -up_a
    else:
        up, dn = up_a, dn_a
    if direction == "up":
        g = up
    elif direction == "down":
        g = dn
    else:
        g = dn if (c - dn) < (up - c) else up
    return _rint(g / 100.0 * 100.0) / 100.0 + 0.0  # _out: np.round(g / 100, 2) + 0.0


def _rule(root: Any, as_of: Any) -> TickRule:
    return tick_rule_for(root, as_of)


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------
def tick_sizes(root: Any, prices: Any, complex_order: bool = False, *, as_of: Any = None) -> np.ndarray:
    """Minimum increment at each of ``prices`` (vectorised; always an ndarray)."""
    return tick_sizes_on_rule(prices, _rule(root, as_of), complex_order)


def tick_sizes_on_rule(prices: Any, rule: TickRule, complex_order: bool = False) -> np.ndarray:
    """:func:`tick_sizes` on a :class:`TickRule` already looked up."""
    if type(prices) is np.ndarray and prices.dtype == np.float64 and prices.ndim and len(rule.tiers) <= 2:
        # each increment is one of the rule's (at most two) steps in dollars, np.round(step / 100, 2) of each
        # worked out once (elementwise: the same floats), picked by the tier lookup of the general path below
        small, large = rule._tick_dollars
        if complex_order:
            return np.full(prices.shape, rule._complex_dollars)
        if large is None:
            return np.full(prices.shape, small)
        ac = _cents_fast(prices)
        np.abs(ac, out=ac)
        hi = ac >= float(rule.tiers[1][0])
        hi &= ac != np.inf
        return np.where(hi, large, small)
    c, _ = _cents(prices)
    tiers = rule.tiers
    if complex_order:
        step = np.full(c.shape, float(rule.complex_step))
    elif len(tiers) == 1:
        step = np.full(c.shape, float(tiers[0][1]))
    elif len(tiers) == 2:  # _tier's lookup, where NaN and +inf are looked up as 0 (the first tier)
        ac = np.abs(c)
        hi = ac >= float(tiers[1][0])
        hi &= ac != np.inf
        step = np.where(hi, float(tiers[1][1]), float(tiers[0][1]))
    else:
        _, step = _tier(rule, np.abs(c))
    return np.round(step / 100.0, 2)


def tick_size(root: Any, price: Any, *, complex_order: bool = False, as_of: Any = None) -> Any:
    """Minimum increment for a premium of ``price`` on ``root``.

    ``tick_size("SPX", 2.95) == 0.05``, ``tick_size("SPX", 3.00) == 0.10``,
    ``tick_size("SPXW", 12.3, complex_order=True) == 0.05``.
    Returns a ``float`` for a scalar price (ndarray for array input).
    """
    out = tick_sizes(root, price, complex_order, as_of=as_of)
    return float(out) if np.ndim(price) == 0 else out


def round_to_tick(
    price: Any,
    root: Any,
    *,
    direction: str,
    complex_order: bool = False,
    as_of: Any = None,
) -> Any:
    """Round ``price`` onto ``root``'s tick grid.

    ``direction``: ``"up"`` (towards +inf), ``"down"`` (towards -inf) or
    ``"nearest"`` (exact ties go up).  Prices already on the grid are
    returned unchanged.  The two-tier single-leg grids are handled exactly
    at the boundary: SPX 2.97 up -> 3.00, 3.04 up -> 3.10, 3.04 down -> 3.00,
    2.99 down -> 2.95.
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
    return round_on_rule(price, _rule(root, as_of), direction, bool(complex_order))


def round_on_rule(price: Any, rule: TickRule, direction: str, complex_order: bool = False) -> Any:
    """:func:`round_to_tick` on a :class:`TickRule` already looked up (``direction`` one of "up", "down",
    "nearest", not checked here): what a caller rounding many prices on one order's grid uses."""
    if type(price) is float or type(price) is int or type(price) is np.float64:
        x = float(price)
        if math.isfinite(x) and abs(x) < 1e7:
            return _round_scalar(rule, x, direction, bool(complex_order))
    if direction != "nearest" and type(price) is np.ndarray and price.dtype == np.float64 and price.ndim:
        return _out_fast(_round_cents_one_way(rule, _cents_fast(price), direction, bool(complex_order)))
    c, scalar = _cents(price)
    if direction == "nearest":
        g = _round_cents(rule, c, direction, bool(complex_order))
    else:
        g = _round_cents_one_way(rule, c, direction, bool(complex_order))
    return _out(g / 100.0, scalar)


def round_down_up(prices: np.ndarray, rule: TickRule) -> np.ndarray:
    """``prices[0]`` rounded down and ``prices[1]`` up on ``rule``'s single-leg grid (``prices`` a float64 array of
    shape (2, ...)): :func:`round_on_rule` of each, the same values, in one pass over both (half the numpy calls:
    what quoting the bids and asks of many prices takes)."""
    return _out_fast(_round_cents_one_way(rule, _cents_fast(prices), ("down", "up"), False))


def round_for_trader(
    price: Any,
    root: Any,
    *,
    paying: bool,
    complex_order: bool = False,
    as_of: Any = None,
) -> Any:
    """Round to the tick on the side that is worse for the trader.

    ``price`` is the (positive) amount paid or received.  Paying a debit ->
    round up (pay more); receiving a credit -> round down (receive less).
    Use it for conservative fill/limit modelling.
    """
    return round_to_tick(
        price, root, direction="up" if paying else "down", complex_order=complex_order, as_of=as_of
    )


def is_on_tick(price: Any, root: Any, *, complex_order: bool = False, as_of: Any = None) -> Any:
    """True where ``price`` is a valid increment (NaN -> False)."""
    rule = _rule(root, as_of)
    c, scalar = _cents(price)
    g = _round_cents_one_way(rule, c, "down", bool(complex_order))
    ok = np.isfinite(c) & (g == c)
    return bool(ok) if scalar else ok
