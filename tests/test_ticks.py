"""strikebench.options.ticks: minimum increments and exact tick rounding."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from strikebench.options.contracts import OptionContract, UnknownRootError
from strikebench.options.ticks import (
    TICK_RULES,
    VIX_PENNY_TICKS_SINCE,
    is_on_tick,
    round_for_trader,
    round_to_tick,
    tick_rule_for,
    tick_size,
    tick_sizes,
)


# ---------------------------------------------------------------- tick sizes
@pytest.mark.parametrize(
    "root, price, complex_order, expected",
    [
        ("SPX", 0.05, False, 0.05),
        ("SPX", 2.95, False, 0.05),
        ("SPX", 2.999, False, 0.05),
        ("SPX", 3.00, False, 0.10),
        ("SPX", 45.30, False, 0.10),
        ("SPXW", 2.95, False, 0.05),
        ("SPXW", 45.30, False, 0.10),
        ("SPX", 45.30, True, 0.05),  # complex: net price in nickels at any level
        ("SPXW", 1.20, True, 0.05),
        ("XSP", 0.37, False, 0.01),
        ("XSP", 12.34, False, 0.01),
        ("XSP", 12.34, True, 0.01),
        ("VIX", 2.99, False, 0.01),
        ("VIX", 3.00, False, 0.05),
        ("VIX", 7.50, True, 0.01),
        ("SPY", 0.37, False, 0.01),
        ("QQQ", 12.34, False, 0.01),
        ("IWM", 5.55, True, 0.01),
    ],
)
def test_tick_size_table(root, price, complex_order, expected):
    got = tick_size(root, price, complex_order=complex_order)
    assert got == expected and isinstance(got, float)


def test_vix_tick_history():
    assert VIX_PENNY_TICKS_SINCE == dt.date(2022, 10, 3)
    assert tick_size("VIX", 2.50, as_of="2022-09-30") == 0.05
    assert tick_size("VIX", 3.50, as_of=dt.date(2022, 9, 30)) == 0.10
    assert tick_size("VIX", 2.50, as_of="2022-10-03") == 0.01
    assert tick_size("VIX", 3.50, as_of="2022-10-03") == 0.05
    assert tick_size("VIX", 3.50, complex_order=True, as_of="2015-01-02") == 0.01
    # as_of does not change the roots whose rules did not change
    assert tick_size("SPX", 2.50, as_of="2015-01-02") == 0.05


def test_tick_sizes_vectorised():
    got = tick_sizes("SPX", np.array([0.5, 2.95, 3.0, 10.0]))
    np.testing.assert_array_equal(got, [0.05, 0.05, 0.10, 0.10])
    np.testing.assert_array_equal(tick_sizes("SPX", [0.5, 10.0], complex_order=True), [0.05, 0.05])
    assert tick_sizes("XSP", np.ones((2, 3))).shape == (2, 3)


# ---------------------------------------------------------------- rounding tables
SPX_SINGLE = [
    # price, direction, expected
    (2.97, "up", 3.00),
    (3.04, "up", 3.10),
    (3.04, "down", 3.00),
    (2.99, "down", 2.95),
    (2.999, "up", 3.00),
    (3.00, "up", 3.00),
    (3.00, "down", 3.00),
    (2.95, "up", 2.95),
    (0.03, "up", 0.05),
    (0.03, "down", 0.00),
    (12.34, "up", 12.40),
    (12.34, "down", 12.30),
    (2.96, "nearest", 2.95),
    (2.98, "nearest", 3.00),
    (3.06, "nearest", 3.10),
    (3.04, "nearest", 3.00),
    (3.05, "nearest", 3.10),  # exact tie goes up
    (1.025, "nearest", 1.05),  # exact tie goes up
]


@pytest.mark.parametrize("price, direction, expected", SPX_SINGLE)
@pytest.mark.parametrize("root", ["SPX", "SPXW"])
def test_spx_single_leg_rounding(root, price, direction, expected):
    got = round_to_tick(price, root, direction=direction)
    assert got == expected and isinstance(got, float)


@pytest.mark.parametrize(
    "price, direction, expected",
    [
        (3.04, "up", 3.05),  # nickels above 3.00 too
        (3.04, "down", 3.00),
        (7.12, "nearest", 7.10),
        (7.13, "nearest", 7.15),
        (0.01, "up", 0.05),
        (-1.23, "up", -1.20),  # a credit written as a negative net price
        (-1.23, "down", -1.25),
        (-1.22, "nearest", -1.20),
    ],
)
def test_spx_complex_rounding(price, direction, expected):
    assert round_to_tick(price, "SPXW", direction=direction, complex_order=True) == expected


@pytest.mark.parametrize(
    "root, price, direction, expected, kwargs",
    [
        ("XSP", 1.234, "up", 1.24, {}),
        ("XSP", 1.234, "down", 1.23, {}),
        ("XSP", 1.235, "nearest", 1.24, {}),
        ("XSP", 31.001, "up", 31.01, {"complex_order": True}),
        ("VIX", 2.973, "up", 2.98, {}),
        ("VIX", 2.999, "up", 3.00, {}),
        ("VIX", 3.02, "up", 3.05, {}),
        ("VIX", 3.02, "down", 3.00, {}),
        ("VIX", 3.02, "nearest", 3.00, {}),
        ("VIX", 3.02, "up", 3.02, {"complex_order": True}),
        ("VIX", 2.97, "up", 3.00, {"as_of": "2021-06-01"}),
        ("VIX", 3.04, "up", 3.10, {"as_of": "2021-06-01"}),
        ("VIX", 2.99, "down", 2.95, {"as_of": "2021-06-01"}),
        ("SPY", 0.014, "up", 0.02, {}),
        ("SPY", 0.014, "down", 0.01, {}),
        ("QQQ", 7.777, "nearest", 7.78, {}),
        ("IWM", 3.456, "down", 3.45, {"complex_order": True}),
    ],
)
def test_other_roots_rounding(root, price, direction, expected, kwargs):
    assert round_to_tick(price, root, direction=direction, **kwargs) == expected


def test_results_are_exact_two_decimal_numbers():
    # binary noise that would otherwise push a price onto the wrong tick
    assert round_to_tick(0.1 + 0.2, "SPX", direction="up") == 0.30  # 0.30000000000000004
    assert round_to_tick(2.95 + 0.05, "SPX", direction="up") == 3.00  # not 3.10
    assert round_to_tick((2.95 + 3.05) / 2, "SPX", direction="down") == 3.00  # 2.9999999999999996
    assert repr(round_to_tick(2.97, "SPX", direction="up")) == "3.0"
    assert repr(round_to_tick(1.13, "SPX", direction="up")) == "1.15"
    assert repr(round_to_tick(0.07, "XSP", direction="up")) == "0.07"


@pytest.mark.parametrize("root", ["SPX", "XSP", "VIX", "SPY"])
@pytest.mark.parametrize("complex_order", [False, True])
def test_rounding_properties_on_random_prices(root, complex_order):
    rng = np.random.default_rng(7)
    p = np.round(rng.uniform(0, 20, 5000), 4)
    up = round_to_tick(p, root, direction="up", complex_order=complex_order)
    dn = round_to_tick(p, root, direction="down", complex_order=complex_order)
    nr = round_to_tick(p, root, direction="nearest", complex_order=complex_order)
    assert (dn <= p + 1e-12).all() and (up >= p - 1e-12).all()
    assert ((nr == up) | (nr == dn)).all()
    assert (np.abs(nr - p) <= np.abs(up - p) + 1e-12).all()
    assert (np.abs(nr - p) <= np.abs(dn - p) + 1e-12).all()
    for arr in (up, dn, nr):
        assert (np.round(arr, 2) == arr).all()  # exact 2-decimal doubles
        assert is_on_tick(arr, root, complex_order=complex_order).all()
        # idempotent
        np.testing.assert_array_equal(round_to_tick(arr, root, direction="up", complex_order=complex_order), arr)
    # the gap never exceeds one tick at the lower price
    assert (up - dn <= tick_sizes(root, dn, complex_order) + 1e-12).all()


def test_grid_walk_spx_single_leg():
    # every cent from 0.00 to 6.00 rounds up onto 0.00, 0.05, ..., 2.95, 3.00, 3.10, ...
    cents = np.arange(0, 601) / 100
    up = round_to_tick(cents, "SPX", direction="up")
    expected_grid = sorted(set(np.round(np.r_[np.arange(0, 300, 5), np.arange(300, 610, 10)] / 100, 2)))
    assert sorted(set(up.tolist())) == expected_grid


def test_vectorised_shapes_and_nan():
    a = np.array([[2.97, 3.04], [np.nan, 0.0]])
    got = round_to_tick(a, "SPX", direction="up")
    assert got.shape == (2, 2)
    np.testing.assert_array_equal(got[0], [3.0, 3.1])
    assert np.isnan(got[1, 0]) and got[1, 1] == 0.0
    assert isinstance(round_to_tick([2.97], "SPX", direction="up"), np.ndarray)
    assert isinstance(round_to_tick(np.float64(2.97), "SPX", direction="up"), float)
    assert not is_on_tick(np.nan, "SPX")


# ---------------------------------------------------------------- trader-side rounding
@pytest.mark.parametrize(
    "price, paying, complex_order, expected",
    [
        (1.02, True, False, 1.05),  # paying a debit: pay up
        (1.02, False, False, 1.00),  # receiving a credit: receive less
        (3.04, True, False, 3.10),
        (3.04, False, False, 3.00),
        (3.04, True, True, 3.05),
        (3.04, False, True, 3.00),
        (2.99, False, False, 2.95),
        (2.95, True, False, 2.95),  # already on the grid
    ],
)
def test_round_for_trader_spx(price, paying, complex_order, expected):
    assert round_for_trader(price, "SPXW", paying=paying, complex_order=complex_order) == expected


def test_round_for_trader_vectorised():
    got = round_for_trader(np.array([0.123, 4.567]), "XSP", paying=False)
    np.testing.assert_array_equal(got, [0.12, 4.56])


# ---------------------------------------------------------------- misc
def test_is_on_tick():
    np.testing.assert_array_equal(
        is_on_tick([2.95, 2.97, 3.00, 3.05, 3.10], "SPX"), [True, False, True, False, True]
    )
    assert is_on_tick(3.05, "SPX", complex_order=True) is True
    assert is_on_tick(0.37, "XSP") is True


def test_accepts_contract_and_rejects_unknowns():
    c = OptionContract.make("SPXW", "2024-12-20", 5800, "P")
    assert tick_size(c, 2.0) == 0.05
    assert tick_rule_for(c) is TICK_RULES["SPX"]
    with pytest.raises(UnknownRootError, match="known roots: SPX, SPXW"):
        tick_size("NDX", 1.0)
    with pytest.raises(ValueError, match="direction must be one of"):
        round_to_tick(1.0, "SPX", direction="sideways")


# ---------------------------------------------------------------- one-direction fast path
def _hostile_prices(rng):
    """Random prices of both signs, every tier boundary and its neighbours, binary noise, half ticks,
    NaN, infinities, -0.0 and huge values."""
    p = [rng.uniform(-20, 20, 4000), np.round(rng.uniform(-20, 20, 4000), 2), np.round(rng.uniform(-6, 6, 4000), 3)]
    edges = np.array([0.0, -0.0, 0.01, 0.025, 0.05, 2.95, 2.97, 2.99, 2.995, 3.0, 3.04, 3.05, 3.1, 1.025, 0.1 + 0.2,
                      1e-9, 5e-7, 123456.78, 9.99e6, 3e7, 1e15, 1e300, np.nan, np.inf, -np.inf])
    near = np.concatenate([edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf)])
    p += [near, -near]
    return np.concatenate(p)


@pytest.mark.parametrize("root, as_of", [("SPX", None), ("XSP", None), ("VIX", None), ("VIX", "2021-06-01"),
                                         ("SPY", None)])
@pytest.mark.parametrize("complex_order", [False, True])
def test_one_direction_rounding_equals_the_general_path(root, as_of, complex_order):
    """round_to_tick / is_on_tick / tick_sizes on arrays (one direction, tier looked up once, no NaN clean-up)
    give exactly what the general two-direction path gives: same floats, same NaN, same signed zeros."""
    from strikebench.options import ticks as T

    rng = np.random.default_rng(15)
    p = _hostile_prices(rng)
    rule = T.tick_rule_for(root, as_of)
    with np.errstate(invalid="ignore", over="ignore"):
        c, _ = T._cents(p)
        for direction in ("up", "down"):
            want = T._out(T._round_cents(rule, c, direction, complex_order) / 100.0, False)
            got = round_to_tick(p, root, direction=direction, complex_order=complex_order, as_of=as_of)
            np.testing.assert_array_equal(got, want)
            assert (np.signbit(got) == np.signbit(want)).all()
            assert got.shape == want.shape
            # a 2-D input and a non-negative-only input (the branch without mirroring)
            two = round_to_tick(p[:6000].reshape(60, 100), root, direction=direction, complex_order=complex_order,
                                as_of=as_of)
            np.testing.assert_array_equal(two.ravel(), want[:6000])
            pos = np.abs(p)
            np.testing.assert_array_equal(
                round_to_tick(pos, root, direction=direction, complex_order=complex_order, as_of=as_of),
                T._out(T._round_cents(rule, T._cents(pos)[0], direction, complex_order) / 100.0, False))
        ok = np.isfinite(c) & (T._round_cents(rule, c, "down", complex_order) == c)
        np.testing.assert_array_equal(is_on_tick(p, root, complex_order=complex_order, as_of=as_of), ok)
        if complex_order:
            step = np.full(c.shape, float(rule.complex_step))
        else:
            _, step = T._tier(rule, np.abs(c))
        np.testing.assert_array_equal(tick_sizes(root, p, complex_order, as_of=as_of), np.round(step / 100.0, 2))
        # a pair of directions in one pass: the first half down, the second up (the mirror too: negatives)
        for pair in (("down", "up"), ("up", "down")):
            cc = np.stack((c, c[::-1]))
            got = T._round_cents_one_way(rule, cc, pair, complex_order)
            for k in (0, 1):
                want = T._round_cents(rule, cc[k], pair[k], complex_order)
                np.testing.assert_array_equal(got[k], want)
                assert (np.signbit(got[k]) == np.signbit(want)).all()
        if not complex_order:
            for q in (p, np.abs(p), p[:6000].reshape(60, 100)):
                both = np.stack((q, q[::-1]))
                got = T.round_down_up(both, rule)
                for k, direction in enumerate(("down", "up")):
                    want = round_to_tick(both[k], root, direction=direction, as_of=as_of)
                    np.testing.assert_array_equal(got[k], want)
                    assert (np.signbit(got[k]) == np.signbit(want)).all()
        # tick sizes of 2-D and non-negative arrays (the fast path) and of lists and scalars (the general one)
        for q in (p[:6000].reshape(60, 100), np.abs(p)):
            cq, _ = T._cents(q)
            step = np.full(cq.shape, float(rule.complex_step)) if complex_order else T._tier(rule, np.abs(cq))[1]
            got = T.tick_sizes_on_rule(q, rule, complex_order)
            np.testing.assert_array_equal(got, np.round(step / 100.0, 2))
            assert got.dtype == np.float64 and got.shape == q.shape
        np.testing.assert_array_equal(tick_sizes(root, list(p[:50]), complex_order, as_of=as_of),
                                      tick_sizes(root, p[:50], complex_order, as_of=as_of))
    # a rule of three tiers takes the searchsorted lookup; one of a single nickel tier divides by its step
    three = T.TickRule("THREE", ((0, 1), (300, 5), (1000, 10)), 1)
    nickel = T.TickRule("NICKEL", ((0, 5),), 5)
    for other in (three, nickel):
        for direction in ("up", "down", ("down", "up")):
            with np.errstate(invalid="ignore", over="ignore"):
                cc = c if type(direction) is str else np.stack((c, c[::-1]))
                got = T._round_cents_one_way(other, cc, direction, False)
                for k in range(1 if type(direction) is str else 2):
                    want = T._round_cents(other, cc if type(direction) is str else cc[k],
                                          direction if type(direction) is str else direction[k], False)
                    g = got if type(direction) is str else got[k]
                    np.testing.assert_array_equal(g, want)
                    assert (np.signbit(g) == np.signbit(want)).all()
