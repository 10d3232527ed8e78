"""The one place that decides the price of a fill, and how a combo fill splits into leg prints.

Every fill model (``mid``, ``mid_slippage``, ``natural``, ``limit``, a plugin's own) only says
where *in the market* it expects an order to trade (its raw model price). This module turns
that into the price the order fills at, for the backtest broker, its exit curves and the paper
broker alike. Prices follow one sign convention (net = sum(ratio x leg price), positive =
debit, see :mod:`strikebench.options.orders`), so "worse for the trader" is always "higher".

The rule, in order:

1. **Tradeable quotes.** Every leg needs a finite, uncrossed quote with a positive ask; a leg
   the order *sells* also needs a positive bid. A 0.00/0.05 wing can be bought at the ask,
   never sold. NaN and crossed quotes never fill.
2. **Tick.** The raw model price is rounded *up* onto the order's grid (complex orders on the
   complex grid, e.g. 0.05 for SPX spreads; single legs on the tiered single-leg grid).
3. **Inside the legs' market.** The price is kept between the combo's bid-side natural and its
   natural (what buying every leg at its ask and selling at its bid costs), taken onto the grid
   inwards: a fill is never worse than legging in at the natural, so every leg can print
   inside its own quote (see :func:`allocate_legs`).
4. **No arbitrage.** A European, cash-settled combo of one expiry is worth between its least
   and its greatest payoff at expiry, over every level of the underlying
   (:func:`payoff_range`): a vertical between 0 and its width, a 1:-2:1 butterfly between 0
   and its wing width, a broken-wing butterfly between its worst and best payoff, a ratio
   spread with a naked short side has no upper bound. Fills are clamped into that range
   (taken onto the grid inwards), even when quotes say otherwise.
5. **Limit.** A limit order's limit is first put on the grid in the direction that never
   fills through it: *down* (a higher net price is worse for the buyer of the combo), so an
   SPX spread limit of -1.03 works at -1.05 and an XSP limit of -0.193 at -0.20
   (:func:`limit_on_grid`; :class:`~strikebench.options.orders.Order` does this when it is
   created). The order fills when the price of steps 1-4 is at or below the limit. The
   ``limit`` fill model then fills at the limit itself (but never worse than the natural).

All functions are vectorised over leading axes (minutes) with legs on the last axis, so the
broker prices a whole session's exit curve in one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from strikebench.options.orders import payoffs_at, sum_legs
from strikebench.options.ticks import TickRule, round_on_rule, round_to_tick, tick_rule_for

__all__ = [
    "ComboPricing",
    "payoff_range",
    "limit_on_grid",
    "tradeable",
    "combo_pricing",
    "settle_fill_prices",
    "allocate_legs",
    "left_legs",
    "reduced_combo",
]


def payoff_range(legs: Sequence) -> tuple[float, float]:
    """(least, greatest) payoff per combo at expiry over every underlying level in [0, inf).

    The payoff of a combo of one expiry is piecewise linear in the underlying with kinks at
    the strikes, so its extremes lie at 0, at a strike, or at infinity (the slope beyond
    the highest strike is the net ratio of its calls). Legs of different expiries have no
    such bound here: ``(-inf, inf)``.
    """
    if len({leg.contract.expiry for leg in legs}) != 1:
        return -math.inf, math.inf
    strikes = sorted({float(leg.contract.strike) for leg in legs})
    payoff = payoffs_at(legs, [0.0, *strikes])  # the combo's value at expiry at 0 and at each strike
    slope_up = float(sum(leg.ratio for leg in legs if leg.contract.is_call))
    low, high = float(min(payoff)), float(max(payoff))
    if slope_up < 0:
        low = -math.inf
    if slope_up > 0:
        high = math.inf
    return low, high


def limit_on_grid(limit: float, root: str, *, complex_order: bool, as_of=None) -> float:
    """An order's limit on the tick grid, rounded the way that never fills through it (down)."""
    return float(round_to_tick(float(limit), root, direction="down", complex_order=complex_order, as_of=as_of))


def _leg_tradeable(r: float, b: float, a: float) -> bool:
    """One leg of :func:`tradeable` in Python floats (the same comparisons as ``usable_quotes``)."""
    return (math.isfinite(b) and math.isfinite(a) and b >= 0.0 and a > 0.0 and b <= a
            and (r > 0 or b > 0.0))


def tradeable(ratios, bid, ask) -> np.ndarray:
    """Per row (legs on the last axis): every leg usable, and every sold leg has a positive bid."""
    if type(bid) is np.ndarray and bid.ndim == 1 and type(ask) is np.ndarray and ask.ndim == 1:
        # one order's legs (the common case): Python floats, a bool (numpy's per-call cost dominates here)
        return all(_leg_tradeable(r, b, a) for r, b, a in zip(np.asarray(ratios).tolist(), bid.tolist(), ask.tolist()))
    bid, ask = np.asarray(bid, dtype=np.float64), np.asarray(ask, dtype=np.float64)
    # usable_quotes (bid, ask finite, bid >= 0, ask > 0, bid <= ask) and a sold leg's bid > 0, in four
    # comparisons: bid >= 0 and bid <= ask with ask finite make bid finite (a NaN fails every comparison), and
    # a bid > 0 is a bid >= the least positive float (5e-324), so a sold leg's bound is that, a bought leg's 0
    with np.errstate(invalid="ignore"):
        ok = bid >= np.where(np.asarray(ratios) < 0, _LEAST_POSITIVE, 0.0)
        ok &= bid <= ask
        ok &= ask > 0.0
        ok &= ask < math.inf
    return _all_legs(ok)


def _all_legs(ok: np.ndarray) -> np.ndarray:
    """``ok.all(axis=-1)`` of a bool array (legs on the last axis): below 8 legs the columns and-ed (numpy
    reduces a short last axis row by row: ~7 us for 390 rows of 2 legs, the columns ~1.5 us)."""
    if ok.ndim < 2 or not 0 < ok.shape[-1] < 8:
        return ok.all(axis=-1)
    out = ok[..., 0].copy()
    for j in range(1, ok.shape[-1]):
        out &= ok[..., j]
    return out


_LEAST_POSITIVE = 5e-324  # the least positive float (a subnormal): x > 0 is x >= it

def _within(price: np.ndarray, low: float, high: float) -> np.ndarray:
    """``np.clip(price, low, high)`` in place on a new array of ours (its comparisons, in its order), skipping an
    infinite bound."""
    if low > -math.inf:
        np.maximum(price, low, out=price)
    if high < math.inf:
        np.minimum(price, high, out=price)
    return price


def left_legs(ratios, bid, ask) -> np.ndarray:
    """Per row (legs on the last axis): the legs a closing order leaves out because they cannot be sold.

    A leg the order sells (negative ratio: a long wing being closed) whose quote is usable but bid
    zero cannot trade (step 1 of the rule); a trader buys the other legs back and keeps that wing to
    expiry. It is left out only when every other leg is tradeable and at least one leg remains, so a
    row whose combo is tradeable as a whole, or that no order can trade, leaves nothing out (the
    order then fills whole, or not at all, exactly as before). See docs/fills.md ("A long leg with
    no bid").
    """
    if (type(bid) is np.ndarray and bid.ndim == 1 and type(ask) is np.ndarray and ask.shape == bid.shape
            and bid.dtype == np.float64 and ask.dtype == np.float64 and np.ndim(ratios) == 1 and len(ratios) == len(bid)):
        # one minute (an exit order's legs): the same comparisons on Python floats (numpy's per-call cost dominates)
        r = ratios.tolist() if type(ratios) is np.ndarray else list(ratios)
        return np.array(_left_one(r, bid.tolist(), ask.tolist()), dtype=bool)
    from strikebench.options.chain import usable_quotes

    bid, ask = np.asarray(bid, dtype=np.float64), np.asarray(ask, dtype=np.float64)
    r = np.asarray(ratios)
    usable = usable_quotes(bid, ask)
    with np.errstate(invalid="ignore"):
        zero = (r < 0) & usable & ~(bid > 0)
        rest_ok = _all_legs(zero | (usable & ((r > 0) | (bid > 0)))) & ~_all_legs(zero)
    return zero & rest_ok[..., None]


def _left_one(ratios: list, bid: list, ask: list) -> list[bool]:
    """:func:`left_legs` of one row in Python floats: ``usable_quotes``' four comparisons, then the same masks."""
    zero = []
    rest = True  # every leg either left out or tradeable as the order trades it
    for r, b, a in zip(ratios, bid, ask):
        usable = b >= 0.0 and b <= a and a > 0.0 and a < math.inf
        z = r < 0 and usable and not b > 0.0
        zero.append(z)
        if not (z or (usable and (r > 0 or b > 0.0))):
            rest = False
    rest = rest and not all(zero)
    return [z and rest for z in zero]


def reduced_combo(legs: Sequence, keep=None) -> tuple[tuple, int]:
    """(legs kept, their ratios divided by their greatest common divisor ``g``) and ``g``.

    An order's ratios share no factor (a 2x short body alone is 1 contract x 2), so the position
    ``legs`` describes is ``g`` orders of the reduced combo: its price per combo is ``g`` times the
    reduced one's."""
    legs = tuple(leg for leg, k in zip(legs, keep if keep is not None else [True] * len(legs)) if k)
    g = math.gcd(*(abs(int(leg.ratio)) for leg in legs))
    if g == 1:
        return legs, 1
    return tuple(type(leg)(leg.contract, int(leg.ratio) // g) for leg in legs), g


@dataclass(frozen=True)
class ComboPricing:
    """What pricing a fill of one combo needs: its ratios, grid and no-arbitrage range."""

    ratios: np.ndarray
    root: str
    complex_order: bool
    low: float  #: least payoff at expiry, on the grid (rounded up); -inf when unbounded
    high: float  #: greatest payoff at expiry, on the grid (rounded down); inf when unbounded
    as_of: object = None

    @property
    def ratio_list(self) -> list[float]:
        """The ratios as Python floats (the one-order path of :func:`settle_fill_prices`)."""
        got = self.__dict__.get("_ratio_list")
        if got is None:
            got = self.ratios.tolist()
            object.__setattr__(self, "_ratio_list", got)
        return got

    @property
    def bought(self) -> np.ndarray:
        """Per leg: bought (positive ratio), as a bool array (read-only: shared by every asker)."""
        got = self.__dict__.get("_bought")
        if got is None:
            got = self.ratios > 0
            got.flags.writeable = False
            object.__setattr__(self, "_bought", got)
        return got

    @property
    def rule(self) -> TickRule:
        """The tick rule of the grid (looked up once)."""
        got = self.__dict__.get("_rule")
        if got is None:
            got = tick_rule_for(self.root, self.as_of)
            object.__setattr__(self, "_rule", got)
        return got

    def up(self, x):
        return round_on_rule(x, self.rule, "up", self.complex_order)

    def down(self, x):
        return round_on_rule(x, self.rule, "down", self.complex_order)

    def limit(self, limit: float) -> float:
        """:func:`limit_on_grid` of a limit on this grid."""
        return float(round_on_rule(float(limit), self.rule, "down", self.complex_order))


_PRICINGS: dict[tuple, ComboPricing] = {}


def combo_pricing(legs: Sequence, *, as_of=None) -> ComboPricing:
    """The :class:`ComboPricing` of an order's legs (ratios as given: the combo it buys).

    Memoized per (legs, tick rule in force at ``as_of``): an order's pricing is asked at every fill
    attempt, by its risk check's estimate and by its exit curves, and only the tick rule depends on
    the day (the returned object's ``as_of`` is the first asker's; its grid is the same)."""
    legs = tuple(legs)
    root = legs[0].contract.root
    key = (legs, tick_rule_for(root, as_of).name)
    got = _PRICINGS.get(key)
    if got is None:
        got = _combo_pricing(legs, root, as_of)
        if len(_PRICINGS) >= 4096:
            _PRICINGS.clear()
        _PRICINGS[key] = got
    return got


def _combo_pricing(legs: tuple, root: str, as_of) -> ComboPricing:
    complex_order = len(legs) > 1
    low, high = payoff_range(legs)
    if math.isfinite(low):
        low = float(round_to_tick(low, root, direction="up", complex_order=complex_order, as_of=as_of))
    if math.isfinite(high):
        high = float(round_to_tick(high, root, direction="down", complex_order=complex_order, as_of=as_of))
    ratios = np.array([leg.ratio for leg in legs], dtype=np.float64)
    ratios.flags.writeable = False  # shared by every asker of the memo
    return ComboPricing(ratios, root, complex_order, low, high, as_of)


def settle_fill_prices(pricing: ComboPricing, raw, bid, ask, *, limit: float | None = None,
                       at_limit: bool = False):
    """Fill price(s) for raw model price(s) ``raw`` against leg quotes ``bid``/``ask``.

    Applies steps 1-5 of the module doc. Returns a float (or an array over leading axes)
    with NaN where the order does not fill. ``at_limit``: fill at the limit itself when the
    order is marketable (the ``limit`` fill model).
    """
    if (type(raw) is float and type(bid) is np.ndarray and type(ask) is np.ndarray and bid.ndim == 1
            and ask.ndim == 1 and bid.dtype == np.float64 and ask.dtype == np.float64):  # one order, as below
        got = _settle_one(pricing, raw, bid.tolist(), ask.tolist(), limit, at_limit)
        if got is not None:
            return got
    r = pricing.ratios
    bid = np.asarray(bid, dtype=np.float64)
    ask = np.asarray(ask, dtype=np.float64)
    if bid.ndim == 1 and ask.ndim == 1 and np.ndim(raw) == 0:
        got = _settle_one(pricing, float(raw), bid.tolist(), ask.tolist(), limit, at_limit)
        if got is not None:
            return got
    # every row in one pass (a single order is one row), the three roundings in one call of the grid: down(x) is
    # -up(-x) (the grid is mirrored at zero), equal but for the sign of a zero, which the final rounding turns
    # into 0.0; so is every min/max below (np.clip's comparisons, in its order)
    raw = np.asarray(raw, dtype=np.float64)
    shape = bid.shape[:-1]
    scalar = not shape
    if scalar or ask.shape != bid.shape or raw.shape != shape or bid.shape[-1:] != r.shape:  # not one per row
        shape = np.broadcast_shapes(bid.shape[:-1], ask.shape[:-1], raw.shape)
        scalar = not shape
        shape = shape or (1,)
        width = np.broadcast_shapes(bid.shape[-1:], ask.shape[-1:], r.shape)
        bid = np.broadcast_to(bid, shape + width)
        ask = np.broadcast_to(ask, shape + width)
        raw = np.broadcast_to(raw, shape)
    ok = tradeable(r, bid, ask)
    every = bool(ok.all())
    if not every:  # a row that cannot trade is priced on zero quotes (then NaN)
        with np.errstate(invalid="ignore"):
            raw = np.where(ok, raw, 0.0)
            bid = np.where(ok[..., None], bid, 0.0)
            ask = np.where(ok[..., None], ask, 0.0)
    pos = pricing.bought
    g = np.empty((3,) + shape)
    # natural: a bought leg at its ask, a sold one at its bid; far the other way (per leg the same product,
    # ratio x ask or ratio x bid, summed over the legs)
    np.negative(sum_legs(r * np.where(pos, ask, bid)), out=g[0])
    g[1] = sum_legs(r * np.where(pos, bid, ask))
    g[2] = raw
    g = pricing.up(g)
    nat_g, far_g, price = -g[0], g[1], g[2]
    inside = far_g <= nat_g  # a grid price exists between the two naturals
    clipped = np.maximum(price, far_g)
    np.minimum(clipped, nat_g, out=clipped)
    price = _within(np.where(inside, clipped, price), pricing.low, pricing.high)
    if limit is not None:
        limit_g = pricing.limit(limit)
        ok = ok & (price <= limit_g + 1e-9)
        every = False
        if at_limit:
            price = _within(np.where(inside, np.minimum(limit_g, np.maximum(nat_g, price)), limit_g), pricing.low,
                            pricing.high)
    if not every:
        price = np.where(ok, price, np.nan)
    # np.round(price, 2) + 0.0: multiply, rint, divide, then -0.0 -> 0.0
    price *= 100.0
    np.rint(price, out=price)
    price /= 100.0
    price += 0.0
    if scalar:
        return float(price[0])
    return price


def _rsum(values) -> float:
    """numpy's sum of a short 1-D float64 array (fewer than 8 items: left to right), in Python floats."""
    it = iter(values)
    total = next(it)
    for v in it:
        total += v
    return total


def _settle_one(pricing: ComboPricing, raw: float, bid: list, ask: list, limit, at_limit: bool) -> float | None:
    """:func:`settle_fill_prices` of one order (legs as Python floats): the same operations in the same
    order as the vectorised path, so the same float; None (use the vectorised path) for what this does
    not cover (more than 7 legs, a non-finite raw price, unbounded grids)."""
    r = pricing.ratio_list
    n = len(r)
    if n == 0 or n >= 8 or len(bid) != n or len(ask) != n:
        return None
    ok = all(_leg_tradeable(ri, b, a) for ri, b, a in zip(r, bid, ask))
    if ok:
        if not math.isfinite(raw):
            return None
        b, a = bid, ask
    else:
        raw = 0.0
        b = a = [0.0] * n
    natural = _rsum([ri * ai if ri > 0 else ri * bi for ri, bi, ai in zip(r, b, a)])
    far = _rsum([ri * bi if ri > 0 else ri * ai for ri, bi, ai in zip(r, b, a)])
    nat_g = pricing.down(natural)
    far_g = pricing.up(far)
    price = pricing.up(raw)
    if not (type(nat_g) is float and type(far_g) is float and type(price) is float):
        return None
    inside = far_g <= nat_g
    if inside:
        price = min(max(price, far_g), nat_g)  # np.clip
    low, high = pricing.low, pricing.high
    price = min(max(price, low), high)
    if limit is not None:
        limit_g = pricing.limit(limit)
        ok = ok and price <= limit_g + 1e-9
        if at_limit:
            price = min(limit_g, max(nat_g, price)) if inside else limit_g
            price = min(max(price, low), high)
    if not ok:
        return math.nan
    return float(round(price * 100.0)) / 100.0 + 0.0  # np.round(x, 2) + 0.0: rint(x * 100) / 100


# ------------------------------------------------------------------ legs
def _cents(x: float) -> int:
    return int(round(float(x) * 100.0))


def _leg_step(rule: TickRule, p: int, direction: int) -> int:
    """Cents to the next point of the leg's single-leg grid (``rule``) from ``p`` (cents) in ``direction``."""
    if direction > 0:
        nxt = _cents(round_on_rule((p + 1) / 100.0, rule, "up"))
    else:
        if p <= 0:
            return 0
        nxt = _cents(round_on_rule((p - 1) / 100.0, rule, "down"))
    return abs(nxt - p)


def allocate_legs(legs: Sequence, bid, ask, net: float, *, as_of=None) -> tuple[float, ...]:
    """Leg prices of a combo fill at ``net``: each inside its bid/ask, sum(ratio x price) == net.

    The rule: every leg starts at the same fraction ``f`` of its own market, measured from the
    side that favours the trader (bid for a leg bought, ask for a leg sold), with
    ``f = (net - far natural) / (natural - far natural)``; so a fill at the natural prints
    every leg at its ask/bid and a fill at mid prints every leg at its mid. Each leg is put on
    its single-leg tick grid (nearest), and the few cents left over are moved, a grid step (or
    else a cent) at a time, onto the leg with the most room left in its quote. Arithmetic is in
    integer cents, so the sum is exact. Only when no split inside the quotes exists (the net was
    clamped to the combo's no-arbitrage range while quotes disagree with it) may a leg print
    outside its quote, never below zero.
    """
    legs = tuple(legs)
    r = [int(leg.ratio) for leg in legs]
    by_root: dict[str, TickRule] = {}  # each leg's single-leg grid, looked up once per root
    rules = [by_root.get(root) or by_root.setdefault(root, tick_rule_for(root, as_of))
             for root in (leg.contract.root for leg in legs)]
    n = len(legs)
    N = _cents(net)
    b = [max(0, _cents(x)) if math.isfinite(x) else 0 for x in np.asarray(bid, dtype=np.float64).tolist()]
    a = [_cents(x) if math.isfinite(x) else b[i] for i, x in enumerate(np.asarray(ask, dtype=np.float64).tolist())]
    a = [max(ai, bi) for ai, bi in zip(a, b)]
    lo_nat = sum(ri * (bi if ri > 0 else ai) for ri, bi, ai in zip(r, b, a))
    hi_nat = sum(ri * (ai if ri > 0 else bi) for ri, bi, ai in zip(r, b, a))
    f = 0.5 if hi_nat == lo_nat else min(1.0, max(0.0, (N - lo_nat) / (hi_nat - lo_nat)))
    p = []
    for ri, bi, ai, rule in zip(r, b, a, rules):
        t = bi + f * (ai - bi) if ri > 0 else ai - f * (ai - bi)
        g = _cents(round_on_rule(t / 100.0, rule, "nearest"))
        p.append(min(max(g, bi), ai))
    residual = N - sum(ri * pi for ri, pi in zip(r, p))

    def move(lo: list[int], hi: list[int], grid: bool, residual: int) -> int:
        while residual:
            best, best_room = None, -1
            for i in range(n):
                d = (1 if residual > 0 else -1) * (1 if r[i] > 0 else -1)  # direction of p[i] that shrinks it
                step = _leg_step(rules[i], p[i], d) if grid else 1
                if step <= 0 or abs(r[i]) * step > abs(residual):
                    continue
                target = p[i] + d * step
                if not lo[i] <= target <= hi[i]:
                    continue
                room = (hi[i] - target) if d > 0 else (target - lo[i])
                if room > best_room:
                    best, best_room = (i, d * step), room
            if best is None:
                return residual
            i, dp = best
            p[i] += dp
            residual -= r[i] * dp
        return residual

    big = 10**12
    for lo, hi in ((b, a), ([0] * n, [big] * n)):
        for grid in (True, False):
            residual = move(lo, hi, grid, residual)
            if not residual:
                break
        if residual:  # stuck one step short (e.g. the only +-1 leg at its quote's edge): a small exact exchange
            residual = _small_fix(r, p, lo, hi, residual)
        if not residual:
            break
    if residual:
        raise ValueError(f"cannot split net {net} over legs with ratios {r}")
    return tuple(pi / 100 for pi in p)  # an int over 100: correctly rounded, the float Decimal(pi) / 100 gave


def _small_fix(r: list[int], p: list[int], lo: list[int], hi: list[int], residual: int) -> int:
    """The smallest integer moves x (|x_i| <= max |ratio| + 1) with sum(r_i x_i) = residual, every leg
    staying within [lo, hi]; applied to ``p``. Returns the residual left (0, or unchanged if none)."""
    import itertools

    k = max(abs(x) for x in r) + 1
    if abs(residual) > k * sum(abs(x) for x in r):
        return residual
    best = None
    for xs in itertools.product(range(-k, k + 1), repeat=len(r)):
        if sum(ri * xi for ri, xi in zip(r, xs)) != residual:
            continue
        if all(lo_i <= pi + xi <= hi_i for pi, xi, lo_i, hi_i in zip(p, xs, lo, hi)):
            cost = sum(abs(x) for x in xs)
            if best is None or cost < best[0]:
                best = (cost, xs)
    if best is None:
        return residual
    for i, x in enumerate(best[1]):
        p[i] += x
    return 0
