"""The fill rule (strikebench.options.fills) by hand and by property: every fill on the tick, never
through its limit, inside the combo's no-arbitrage range, legs inside their quotes, sum of legs = net.

Expected figures are derived here from the quotes and the rule in docs/fills.md, in integer cents,
never read back from the engine.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from strikebench.options.contracts import OptionContract
from strikebench.options.fills import allocate_legs, combo_pricing, payoff_range, settle_fill_prices
from strikebench.options.orders import Fill, Leg, Order, OrderError, OrderType
from strikebench.options.ticks import is_on_tick, tick_size
from strikebench.plugins.fill_models import LimitFill, MidFill, MidSlippageFill, NaturalFill
from strikebench.portfolio import Portfolio
from strikebench.pricing import bsm_price

DAY = dt.date(2024, 1, 10)


def cents(x) -> int:
    """Dollars/points to integer cents, refusing anything that is not a whole cent."""
    d = Decimal(repr(float(x))) * 100
    assert d == d.to_integral_value(), f"{x} is not a whole number of cents"
    return int(d)


def up_to(c: int, step: int) -> int:
    return -((-c) // step) * step


def down_to(c: int, step: int) -> int:
    return (c // step) * step


# ------------------------------------------------------------------ by hand
def test_off_grid_limits_round_the_way_that_never_fills_through_them():
    p1, p2 = OptionContract("SPXW", DAY, 4700.0, "P"), OptionContract("SPXW", DAY, 4695.0, "P")
    order = Order("o", (Leg(p1, -1), Leg(p2, 1)), 1, limit_price=-1.03)
    assert order.limit_price == -1.05  # a credit of at least 1.03 on the 0.05 grid: 1.05, never 1.00
    x1, x2 = OptionContract("XSP", DAY, 470.0, "P"), OptionContract("XSP", DAY, 468.0, "P")
    assert Order("x", (Leg(x1, -1), Leg(x2, 1)), 1, limit_price=-0.193).limit_price == -0.20
    assert Order("d", (Leg(x1, 1), Leg(x2, -1)), 1, limit_price=0.197).limit_price == 0.19  # a debit: pay at most
    assert Order("s", (Leg(p1, 1),), 1, limit_price=3.17).limit_price == 3.10  # single leg above 3.00: 0.10 grid


def test_ratios_sharing_a_factor_are_refused_with_the_reduced_combo():
    p1, p2 = OptionContract("SPXW", DAY, 4700.0, "P"), OptionContract("SPXW", DAY, 4695.0, "P")
    with pytest.raises(OrderError, match="share the factor 2"):
        Order("o", (Leg(p1, -2), Leg(p2, 2)), 1, order_type=OrderType.MARKET)


def test_a_vertical_never_costs_more_than_its_width():
    """Issue 24: a 1-wide XSP 374/375 call spread bought back by a market order on quotes whose natural
    (6.95 - 5.86 = 1.09) exceeds the width fills at 1.00, with both legs inside their quotes."""
    exp = dt.date(2023, 3, 23)
    c374, c375 = OptionContract("XSP", exp, 374.0, "C"), OptionContract("XSP", exp, 375.0, "C")
    legs = (Leg(c374, 1), Leg(c375, -1))
    bid, ask = np.array([6.90, 5.86]), np.array([6.95, 5.90])
    for model in (NaturalFill(), MidSlippageFill(), LimitFill()):
        price = model.fill_price(Order("c", legs, 1, order_type=OrderType.MARKET), bid, ask)
        assert price == 1.00, model.name
    # legs: f = (100 - 96) / (109 - 96) of each market from the trader's side: 6.90 + 4/13 x 0.05 = 6.915 -> 6.92,
    # 5.90 - 4/13 x 0.04 = 5.888 -> 5.89; 6.92 - 5.89 = 1.03: three cents over, moved off the roomiest leg
    p = allocate_legs(legs, bid, ask, 1.00)
    assert cents(p[0]) - cents(p[1]) == 100
    assert 690 <= cents(p[0]) <= 695 and 586 <= cents(p[1]) <= 590
    # a short vertical never fills for a credit above its width either
    assert payoff_range((Leg(c374, -1), Leg(c375, 1))) == (-1.0, 0.0)


def test_no_arbitrage_ranges_of_butterflies_and_ratios():
    k = [OptionContract("SPXW", DAY, s, "P") for s in (4600.0, 4650.0, 4700.0, 4725.0)]
    assert payoff_range((Leg(k[0], 1), Leg(k[1], -2), Leg(k[2], 1))) == (0.0, 50.0)  # a 50-wide fly
    # put broken wing 4600 / 2 x 4675 / 4725: 50 at the body, 4600 + 4725 - 2 x 4675 = -25 below the low wing
    bwb = [OptionContract("SPXW", DAY, s, "P") for s in (4600.0, 4675.0, 4725.0)]
    assert payoff_range((Leg(bwb[0], 1), Leg(bwb[1], -2), Leg(bwb[2], 1))) == (-25.0, 50.0)
    # 1x2 put ratio, long 4650 / short 2 x 4700: 0 above 4700, 4650 - 2 x 4700 = -4750 at S = 0
    assert payoff_range((Leg(k[1], 1), Leg(k[2], -2))) == (-4750.0, 0.0)
    c = [OptionContract("SPXW", DAY, s, "C") for s in (4700.0, 4750.0)]
    assert payoff_range((Leg(c[0], 1), Leg(c[1], -2))) == (-math.inf, 50.0)  # naked call side: unbounded below
    assert payoff_range((Leg(c[0], 2), Leg(c[1], -1))) == (0.0, math.inf)
    condor = (Leg(k[0], 1), Leg(k[1], -1), Leg(c[0], -1), Leg(c[1], 1))
    assert payoff_range(condor) == (-50.0, 0.0)


def test_a_zero_bid_wing_can_be_bought_never_sold():
    short, wing = OptionContract("SPXW", DAY, 4700.0, "P"), OptionContract("SPXW", DAY, 4650.0, "P")
    bid, ask = np.array([1.00, 0.00]), np.array([1.10, 0.05])
    order = Order("o", (Leg(short, -1), Leg(wing, 1)), 1, order_type=OrderType.MARKET)
    # mid -1.05 + 0.025 = -1.025, width 0.15: -1.025 + 0.045 = -0.98 -> up to -0.95
    assert MidSlippageFill().fill_price(order, bid, ask) == -0.95
    legs = allocate_legs(order.legs, bid, ask, -0.95)
    assert -cents(legs[0]) + cents(legs[1]) == -95 and cents(legs[1]) in (0, 5)
    sell_wing = Order("s", (Leg(short, 1), Leg(wing, -1)), 1, order_type=OrderType.MARKET)
    assert MidSlippageFill().fill_price(sell_wing, bid, ask) is None


def test_limit_model_fills_at_the_limit_but_never_worse_than_the_natural():
    p1, p2 = OptionContract("SPXW", DAY, 4700.0, "P"), OptionContract("SPXW", DAY, 4695.0, "P")
    bid, ask = np.array([3.00, 2.40]), np.array([3.40, 2.60])  # natural credit 0.40
    assert LimitFill().fill_price(Order("a", (Leg(p1, -1), Leg(p2, 1)), 1, limit_price=-0.35), bid, ask) == -0.40
    assert LimitFill().fill_price(Order("b", (Leg(p1, -1), Leg(p2, 1)), 1, limit_price=-0.45), bid, ask) is None
    ref_mid = LimitFill(LimitFill.Params(reference="mid"))  # mid -0.70: a -0.55 limit is marketable, fills at it
    assert ref_mid.fill_price(Order("c", (Leg(p1, -1), Leg(p2, 1)), 1, limit_price=-0.55), bid, ask) == -0.55


# ------------------------------------------------------------------ by property
SPEC = {"SPXW": (5.0, 4700.0, 5), "XSP": (1.0, 470.0, 1)}  # strike step, spot, complex tick in cents


@st.composite
def combos(draw):
    root = draw(st.sampled_from(sorted(SPEC)))
    step, spot, _ = SPEC[root]
    n = draw(st.integers(1, 4))
    offsets = draw(st.lists(st.integers(-12, 12), min_size=n, max_size=n, unique=True))
    rights = draw(st.lists(st.sampled_from("CP"), min_size=n, max_size=n))
    ratios = draw(st.lists(st.sampled_from([-2, -1, 1, 2]), min_size=n, max_size=n))
    assume(math.gcd(*[abs(r) for r in ratios]) == 1)
    contracts = [OptionContract(root, DAY, spot + o * step, r) for o, r in zip(offsets, rights)]
    assume(len(set(contracts)) == n)
    legs = tuple(Leg(c, r) for c, r in zip(contracts, ratios))
    # quotes around one arbitrage-free model value per leg (undiscounted, so payoff bounds hold exactly)
    s = spot * draw(st.floats(0.97, 1.03))
    vol = draw(st.floats(0.08, 0.6))
    years = draw(st.floats(0.5, 30)) / 365
    bid, ask = [], []
    for c in contracts:
        value = float(bsm_price(c.is_call, s, c.strike, years, 0.0, 0.0, vol))
        half = draw(st.integers(0, 30)) / 100 + value * draw(st.floats(0.0, 0.05))
        tick = tick_size(root, max(value - half, 0.0))
        b = max(0.0, math.floor(round((value - half) / tick, 6)) * tick)
        a = max(math.ceil(round((value + half) / tick, 6)) * tick, b + tick_size(root, b))
        bid.append(round(b, 2))
        ask.append(round(a, 2))
    return legs, np.array(bid), np.array(ask)


MODELS = [MidFill(), MidSlippageFill(), MidSlippageFill(MidSlippageFill.Params(k=0.5)), NaturalFill(),
          LimitFill(), LimitFill(LimitFill.Params(reference="mid"))]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(combo=combos(), model=st.sampled_from(MODELS), limit=st.one_of(st.none(), st.floats(-60, 60)),
       qty=st.integers(1, 5))
def test_every_fill_is_on_the_tick_inside_its_bounds_and_its_legs_inside_their_quotes(combo, model, limit, qty):
    legs, bid, ask = combo
    order = Order("p", legs, qty, order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
                  limit_price=limit)
    price = model.fill_price(order, bid, ask)
    if price is None:
        return
    root, complex_order = legs[0].contract.root, len(legs) > 1
    assert is_on_tick(price, root, complex_order=complex_order)
    if limit is not None:
        # never through the trader's limit (the raw one, before the grid); a limit is a price in cents, so float
        # noise below a billionth of a dollar (a limit of -4.9e-21 is 0.00) is not a price beyond it
        assert price <= limit + 1e-9
    low, high = payoff_range(legs)
    assert low - 1e-9 <= price <= high + 1e-9
    # never worse than legging in at the natural (when a grid price exists there)
    r = np.array([leg.ratio for leg in legs])
    natural = sum(cents(x) for x in np.where(r > 0, r * ask, r * bid))
    far = sum(cents(x) for x in np.where(r > 0, r * bid, r * ask))
    tick = SPEC[root][2] if complex_order else cents(tick_size(root, price))
    if up_to(far, tick) <= down_to(natural, tick) and up_to(far, tick) <= high * 100 and down_to(natural, tick) >= low * 100:
        assert cents(price) <= natural
        leg_prices = allocate_legs(legs, bid, ask, price)
        for p, b, a in zip(leg_prices, bid, ask):
            assert cents(b) <= cents(p) <= cents(a)
        assert sum(leg.ratio * cents(p) for leg, p in zip(legs, leg_prices)) == cents(price)
    # cash = sum of flows, exactly: open at the fill, close at the same price less a tick
    portfolio = Portfolio(100_000.0)
    opening = Order("o", legs, qty, order_type=OrderType.MARKET, trade_id="T", opens=True)
    leg_prices = allocate_legs(legs, bid, ask, price)
    assert min(leg_prices) >= 0
    assert sum(leg.ratio * cents(p) for leg, p in zip(legs, leg_prices)) == cents(price)
    at = dt.datetime(2024, 1, 10, 10, 0)
    portfolio.apply_fill(opening, Fill("f1", "o", at, qty, price, leg_prices, 1.30 * qty))
    closing = Order("c", tuple(leg.reversed() for leg in legs), qty, order_type=OrderType.MARKET, trade_id="T",
                    opens=False)
    portfolio.apply_fill(closing, Fill("f2", "c", at, qty, -price, leg_prices, 1.30 * qty))
    (trade,) = portfolio.closed_trades()
    mult = legs[0].contract.multiplier
    assert portfolio.cash_cents == 100_000_00 - 2 * 130 * qty  # round trip at one price: only fees
    assert cents(trade.realized_pnl) == portfolio.cash_cents - 100_000_00
    assert cents(price) * mult * qty == -cents(-price) * mult * qty


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(combo=combos(), model=st.sampled_from(MODELS[:4]),
       bad=st.sampled_from(["nan", "crossed", "zero_bid", "zero_ask"]), which=st.integers(0, 3))
def test_unusable_quotes_never_fill_and_a_zero_bid_only_blocks_a_sale(combo, model, bad, which):
    legs, bid, ask = combo
    i = which % len(legs)
    bid, ask = bid.copy(), ask.copy()
    if bad == "nan":
        bid[i] = np.nan
    elif bad == "crossed":
        bid[i] = ask[i] + 0.05
    elif bad == "zero_ask":
        bid[i], ask[i] = 0.0, 0.0
    else:
        bid[i] = 0.0
    price = model.fill_price(Order("p", legs, 1, order_type=OrderType.MARKET), bid, ask)
    if bad == "zero_bid" and legs[i].ratio > 0:
        return  # buying a leg bid at zero is allowed (it fills unless something else stops it)
    assert price is None


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(combo=combos(), model=st.sampled_from(MODELS[:4]))
def test_the_exit_curve_prices_every_minute_as_a_fill_would(combo, model):
    """The broker's vectorised close curve and a fill one minute at a time are the same rule."""
    legs, bid, ask = combo
    rows_bid = np.vstack([bid, bid + 0.05, np.where(np.arange(len(bid)) == 0, np.nan, bid)])
    rows_ask = np.vstack([ask, ask + 0.10, ask])
    order = Order("p", legs, 1, order_type=OrderType.MARKET)
    with np.errstate(invalid="ignore"):
        raw = model.model_price(order.ratios, rows_bid, rows_ask)
    curve = settle_fill_prices(combo_pricing(legs), np.nan_to_num(raw), rows_bid, rows_ask)
    for i in range(3):
        one = model.fill_price(order, rows_bid[i], rows_ask[i])
        assert (one is None and np.isnan(curve[i])) or one == curve[i]


def test_one_order_is_priced_exactly_as_its_minute_of_a_session_curve():
    """settle_fill_prices on one order's legs (Python floats) gives the same float, NaN and sign as the
    vectorised path on the same quotes as one row of a curve, over roots, grids, ratios, limits and
    untradeable quotes (zero, crossed, NaN)."""
    rng = np.random.default_rng(15)
    roots = {"SPXW": 4000.0, "SPX": 4000.0, "XSP": 400.0, "VIX": 60.0}
    checked = filled = 0
    for _ in range(1200):
        root = str(rng.choice(list(roots)))
        n = int(rng.choice([1, 2, 2, 3, 4]))
        step = 0.5 if root == "XSP" else 5.0
        legs = [Leg(OptionContract(root, dt.date(2023, 3, 15), roots[root] + step * int(rng.integers(-8, 9)),
                                   str(rng.choice(["C", "P"]))), int(rng.choice([1, -1, 2, -2]))) for _ in range(n)]
        bid = np.round(rng.uniform(0, 30, n), int(rng.choice([1, 2, 3])))
        bid[rng.random(n) < 0.05] = 0.0
        bid[rng.random(n) < 0.03] = np.nan
        ask = bid + rng.choice([0.05, 0.1, 0.35, 0.0, -0.05], n)
        raw = float(rng.uniform(-25, 25))
        limit = None if rng.random() < 0.6 else float(rng.uniform(-15, 15))
        at_limit = bool(rng.random() < 0.3)
        as_of = [dt.date(2022, 6, 1), dt.datetime(2023, 3, 1, 10, 0), None][int(rng.integers(3))]
        pricing = combo_pricing(legs, as_of=as_of)
        one = settle_fill_prices(pricing, raw, bid, ask, limit=limit, at_limit=at_limit)
        row = settle_fill_prices(pricing, np.array([raw]), bid[None, :], ask[None, :], limit=limit,
                                 at_limit=at_limit)[0]
        assert type(one) is float
        assert (math.isnan(one) and math.isnan(row)) or (one == row and math.copysign(1, one) == math.copysign(1, row)), \
            (legs, bid, ask, raw, limit, at_limit)
        checked += 1
        filled += one == one
    assert checked == 1200 and filled > 400
