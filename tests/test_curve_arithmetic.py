"""The vectorised fill rule (curves of many minutes) against the implementation it replaced, bit for bit.

``settle_fill_prices`` prices every row in one pass (masks only when a row cannot trade, the leg sums as columns
added left to right, np.clip as maximum/minimum, np.round inline); ``tradeable``, ``left_legs``,
``combo_mid/width/natural`` reduce the legs as columns. The references below are the numpy code they replaced
(verbatim but for names): every result must be the same float, NaN where it was NaN, and the same sign of zero.
"""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pytest

from strikebench.options.chain import usable_quotes
from strikebench.options.contracts import OptionContract
from strikebench.options.fills import combo_pricing, left_legs, settle_fill_prices, tradeable
from strikebench.options.orders import Leg, combo_mid, combo_natural, combo_width, sum_legs


def _tradeable_reference(ratios, bid, ask):
    bid, ask = np.asarray(bid, dtype=np.float64), np.asarray(ask, dtype=np.float64)
    ok = usable_quotes(bid, ask)
    with np.errstate(invalid="ignore"):
        ok &= (np.asarray(ratios) > 0) | (bid > 0)
    return ok.all(axis=-1)


def _left_legs_reference(ratios, bid, ask):
    bid, ask = np.asarray(bid, dtype=np.float64), np.asarray(ask, dtype=np.float64)
    r = np.asarray(ratios)
    usable = usable_quotes(bid, ask)
    with np.errstate(invalid="ignore"):
        zero = (r < 0) & usable & ~(bid > 0)
        rest_ok = (zero | (usable & ((r > 0) | (bid > 0)))).all(axis=-1) & (~zero).any(axis=-1)
    return zero & rest_ok[..., None]


def _settle_reference(pricing, raw, bid, ask, *, limit=None, at_limit=False):
    r = pricing.ratios
    bid = np.asarray(bid, dtype=np.float64)
    ask = np.asarray(ask, dtype=np.float64)
    scalar = bid.ndim == 1
    ok = np.asarray(_tradeable_reference(r, bid, ask))
    with np.errstate(invalid="ignore"):
        raw = np.where(ok, np.asarray(raw, dtype=np.float64), 0.0)
        b = np.where(ok[..., None], bid, 0.0)
        a = np.where(ok[..., None], ask, 0.0)
    natural = np.where(r > 0, r * a, r * b).sum(axis=-1)
    far = np.where(r > 0, r * b, r * a).sum(axis=-1)
    if natural.shape == far.shape == raw.shape and natural.ndim:
        g = pricing.up(np.stack([-natural, far, raw]))
        nat_g, far_g, price = -g[0], g[1], g[2]
    else:
        nat_g = pricing.down(natural)
        far_g = pricing.up(far)
        price = pricing.up(raw)
    inside = far_g <= nat_g
    price = np.where(inside, np.clip(price, far_g, nat_g), price)
    limit_g = None
    if limit is not None:
        limit_g = pricing.limit(limit)
    price = np.clip(price, pricing.low, pricing.high)
    if limit_g is not None:
        ok = ok & (price <= limit_g + 1e-9)
        if at_limit:
            price = np.where(inside, np.minimum(limit_g, np.maximum(nat_g, price)), limit_g)
            price = np.clip(price, pricing.low, pricing.high)
    price = np.round(np.where(ok, price, np.nan), 2) + 0.0
    if scalar:
        return float(price)
    return price


def _same(got, want) -> bool:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return (got.shape == want.shape and np.array_equal(got, want, equal_nan=True)
            and np.array_equal(np.signbit(got), np.signbit(want)))


ROOTS = {"SPXW": (4000.0, 5.0), "SPX": (4000.0, 5.0), "XSP": (400.0, 0.5), "VIX": (20.0, 1.0)}


def _legs(rng, n):
    root = str(rng.choice(list(ROOTS)))
    spot, step = ROOTS[root]
    expiry = dt.date(2023, 3, 15) if rng.random() < 0.8 else dt.date(2023, 3, int(rng.choice([17, 24])))
    legs, seen = [], set()
    while len(legs) < n:
        c = OptionContract(root, expiry if rng.random() < 0.9 else dt.date(2023, 4, 21),
                           spot + step * int(rng.integers(-10, 11)), str(rng.choice(["C", "P"])))
        if c in seen:
            continue
        seen.add(c)
        legs.append(Leg(c, int(rng.choice([1, -1, 2, -2, 3]))))
    return tuple(legs)


def _quotes(rng, shape):
    """Bids and asks with what breaks quotes: zero, negative, NaN, inf, crossed, subnormal, tick edges."""
    bid = np.round(rng.uniform(0, 30, shape), int(rng.choice([1, 2, 3])))
    ask = bid + rng.choice([0.05, 0.1, 0.35, 1.0, 0.0, -0.05], shape)
    for arr in (bid, ask):
        u = rng.random(shape)
        arr[u < 0.04] = 0.0
        arr[(u >= 0.04) & (u < 0.06)] = np.nan
        arr[(u >= 0.06) & (u < 0.07)] = -0.05
        arr[(u >= 0.07) & (u < 0.075)] = np.inf
        arr[(u >= 0.075) & (u < 0.08)] = -np.inf
        arr[(u >= 0.08) & (u < 0.085)] = 5e-324
        arr[(u >= 0.085) & (u < 0.09)] = -0.0
        arr[(u >= 0.09) & (u < 0.11)] = np.round(arr[(u >= 0.09) & (u < 0.11)], 1) + rng.choice([1e-9, -1e-9])
    return bid, ask


@pytest.mark.parametrize("seed", range(8))
def test_a_curve_is_priced_as_by_the_replaced_code(seed):
    rng = np.random.default_rng(seed)
    fast = 0
    for _ in range(150):
        legs = _legs(rng, int(rng.choice([1, 2, 2, 2, 3, 4, 7, 8, 10])))
        pricing = combo_pricing(legs, as_of=[None, dt.date(2022, 6, 1), dt.datetime(2023, 3, 1, 10)][int(rng.integers(3))])
        n = int(rng.choice([1, 2, 5, 390]))
        L = len(legs)
        bid, ask = _quotes(rng, (n, L))
        if rng.random() < 0.5:  # mostly tradeable: the pass without masks
            bid, ask = np.round(rng.uniform(0.05, 20, (n, L)), 2), None
            ask = bid + rng.choice([0.05, 0.1, 0.5], (n, L))
        raw = rng.uniform(-30, 30, n)
        raw[rng.random(n) < 0.05] = np.nan
        raw[rng.random(n) < 0.02] = np.inf
        raw[rng.random(n) < 0.02] = -np.nan  # a NaN with its sign bit set keeps it
        raw[rng.random(n) < 0.05] = 0.0
        raw[rng.random(n) < 0.05] = np.round(raw[rng.random(n) < 2], 1)[0]  # on the grid
        limit = None if rng.random() < 0.6 else float(rng.uniform(-15, 15))
        at_limit = bool(rng.random() < 0.3)
        got = settle_fill_prices(pricing, raw, bid, ask, limit=limit, at_limit=at_limit)
        want = _settle_reference(pricing, raw, bid, ask, limit=limit, at_limit=at_limit)
        assert _same(got, want), (legs, bid, ask, raw, limit, at_limit)
        fast += bool(_tradeable_reference(pricing.ratios, bid, ask).all())
        # broadcast shapes: one raw price for every row, one quote row for many raw prices, a leading axis more
        for args in ((raw[0], bid, ask), (raw, bid[:1], ask[:1]), (raw[None, :], bid[None], ask[None])):
            got = settle_fill_prices(pricing, *args, limit=limit, at_limit=at_limit)
            want = _settle_reference(pricing, *args, limit=limit, at_limit=at_limit)
            assert _same(got, want), (legs, args, limit, at_limit)
        # one order given as numpy scalars (the path after the Python-float one declines, e.g. a NaN raw)
        got = settle_fill_prices(pricing, np.float64(raw[0]), bid[0], ask[0], limit=limit, at_limit=at_limit)
        want = _settle_reference(pricing, np.float64(raw[0]), bid[0], ask[0], limit=limit, at_limit=at_limit)
        assert type(got) is float and _same(got, want)
    assert fast > 40  # the pass without masks was taken


@pytest.mark.parametrize("seed", range(4))
def test_legs_reduced_as_columns_equal_numpys_reductions(seed):
    rng = np.random.default_rng(100 + seed)
    for _ in range(200):
        L = int(rng.integers(1, 11))
        shape = [(L,), (int(rng.choice([1, 3, 390])), L), (2, 3, L)][int(rng.integers(3))]
        ratios = rng.choice([1.0, -1.0, 2.0, -2.0, 3.0], L)
        bid, ask = _quotes(rng, shape)
        assert np.array_equal(tradeable(ratios, bid, ask), _tradeable_reference(ratios, bid, ask))
        assert np.array_equal(left_legs(ratios, bid, ask), _left_legs_reference(ratios, bid, ask))
        x = rng.normal(size=shape) * 10.0 ** rng.integers(-3, 8, size=shape)
        x[rng.random(shape) < 0.1] = -0.0
        x[rng.random(shape) < 0.1] = 0.0
        x[rng.random(shape) < 0.03] = np.nan
        assert _same(sum_legs(x), x.sum(axis=-1))
        with np.errstate(invalid="ignore"):
            for f, ref in ((combo_mid, lambda r, b, a: (r * (b + a) * 0.5).sum(axis=-1)),
                           (combo_width, lambda r, b, a: (np.abs(r) * (a - b)).sum(axis=-1)),
                           (combo_natural, lambda r, b, a: np.where(r > 0, r * a, r * b).sum(axis=-1))):
                assert _same(f(ratios, bid, ask), ref(ratios, bid, ask))
    assert _same(sum_legs(np.array([[-0.0, -0.0], [0.0, -0.0], [-0.0, 0.0]])), np.zeros(3))


def test_one_minutes_left_legs_on_python_floats_equal_the_rows_of_the_array_path():
    """``left_legs`` of one row (an exit order's minute: Python floats) and ``_may_leave_legs`` of it equal the array
    path's row on every pair of legs whose bids and asks are edge values (zero, -0.0, the least positive float,
    negative, NaN, +-inf, crossed), bought or sold, 1:1 and 1:2."""
    from strikebench.engine.broker import _may_leave_legs

    edges = [0.0, -0.0, 5e-324, 0.05, 1.0, -0.05, np.nan, np.inf, -np.inf]
    quotes = [(b, a) for b in edges for a in edges]
    for ratios in ([-1, 1], [1, -1], [-1, -1], [1, 1], [-2, 1], [1, 2], [-1], [1]):
        combos = np.array(list(itertools.product(quotes, repeat=len(ratios))), dtype=np.float64)  # (rows, legs, 2)
        bid, ask = combos[..., 0], combos[..., 1]
        rows = left_legs(np.array(ratios, dtype=np.float64), bid, ask)
        assert np.array_equal(rows, _left_legs_reference(ratios, bid, ask))
        for k in range(len(bid)):
            one = left_legs(ratios, bid[k], ask[k])
            assert one.dtype == bool and one.tolist() == rows[k].tolist(), (ratios, bid[k], ask[k])
            assert left_legs(np.array(ratios, dtype=np.float64), bid[k], ask[k]).tolist() == rows[k].tolist()
            assert _may_leave_legs(ratios, bid[k]) == _may_leave_legs(np.array(ratios, dtype=np.float64), bid[k:k + 1])
            if not _may_leave_legs(ratios, bid[k]):
                assert not rows[k].any()
