"""The broker's closing curve: minutes grouped by the legs a close leaves out (one integer per pattern) give
exactly what grouping them by the boolean rows gave; a curve is kept per leg set for the session."""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import pytest

from strikebench.engine import broker as broker_mod
from strikebench.engine.broker import _combo_curve, closing_curve
from strikebench.options.contracts import OptionContract
from strikebench.options.fills import left_legs, reduced_combo
from strikebench.options.orders import Leg
from strikebench.plugins.fill_models import MidSlippageFill, NaturalFill


def closing_curve_by_rows(fill_model, closing_legs, bid, ask, *, as_of):
    """The general path: patterns found by np.unique over the boolean rows (the broker's code before)."""
    bid = np.asarray(bid, dtype=np.float64)
    ask = np.asarray(ask, dtype=np.float64)
    ratios = np.array([leg.ratio for leg in closing_legs], dtype=np.float64)
    left = left_legs(ratios, bid, ask)
    if not left.any():
        return _combo_curve(fill_model, closing_legs, bid, ask, as_of=as_of)
    out = np.full(bid.shape[0], np.nan)
    for pattern in np.unique(left, axis=0):
        rows = (left == pattern).all(axis=1)
        keep = ~pattern
        legs, g = reduced_combo(closing_legs, keep)
        price = _combo_curve(fill_model, legs, bid[rows][:, keep], ask[rows][:, keep], as_of=as_of)
        out[rows] = np.round(price * g, 2) + 0.0
    return out


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float64).view(np.int64)


def quotes(rng: np.random.Generator, n: int, k: int, root: str):
    """Minutes x legs of quotes: on and off the tick, zero bids (often), NaN, crossed, negative, zero asks."""
    step = 0.01 if root == "XSP" else 0.05
    mid = rng.uniform(0.0, 8.0, size=(1, k)) + np.cumsum(rng.normal(0, 0.05, size=(n, k)), axis=0)
    half = rng.choice([step / 2, step, 2 * step, 0.10, 0.003], size=(n, k))
    bid = np.round(mid - half, 2)
    ask = np.round(mid + half, 2)
    u = rng.random((n, k))
    bid = np.where(u < 0.25, 0.0, bid)  # no bid
    bid = np.where((u > 0.25) & (u < 0.27), np.nan, bid)
    ask = np.where((u > 0.27) & (u < 0.29), np.nan, ask)
    bid = np.where((u > 0.29) & (u < 0.31), ask + 0.05, bid)  # crossed
    ask = np.where((u > 0.31) & (u < 0.32), 0.0, ask)
    bid = np.where((u > 0.32) & (u < 0.33), -0.05, bid)
    bid = np.where(rng.random((n, 1)) < 0.1, bid + 1e-9, bid)  # binary noise off the tick boundary
    return bid, ask


ROOTS = {"SPXW": (4500.0, 5.0), "XSP": (450.0, 1.0), "VIX": (20.0, 1.0)}


@pytest.mark.parametrize("seed", range(6))
def test_a_closing_curve_grouped_by_pattern_codes_equals_grouping_by_rows(seed):
    rng = np.random.default_rng(seed)
    pyrng = random.Random(seed)
    expiry = dt.date(2024, 1, 19)
    for trial in range(60):
        root = pyrng.choice(list(ROOTS))
        base, width = ROOTS[root]
        k = pyrng.choice([1, 2, 2, 3, 4])
        strikes = [base + width * i for i in pyrng.sample(range(-10, 10), k)]
        right = pyrng.choice("PC")
        ratios = [pyrng.choice([1, -1, 2, -2]) for _ in range(k)]
        legs = tuple(Leg(OptionContract(root, expiry, s, right), r) for s, r in zip(strikes, ratios))
        bid, ask = quotes(rng, pyrng.choice([1, 7, 390]), k, root)
        model = pyrng.choice([MidSlippageFill(), NaturalFill()])
        as_of = dt.date(2024, 1, 10)
        got = closing_curve(model, legs, bid, ask, as_of=as_of)
        want = closing_curve_by_rows(model, legs, bid, ask, as_of=as_of)
        assert np.array_equal(bits(got), bits(want)), (legs, trial)


def test_the_patterns_are_exercised():
    """The random quotes above do leave legs out on some minutes, with more than one pattern at once."""
    rng = np.random.default_rng(0)
    legs = (Leg(OptionContract("SPXW", dt.date(2024, 1, 19), 4500.0, "P"), 1),
            Leg(OptionContract("SPXW", dt.date(2024, 1, 19), 4490.0, "P"), -1),
            Leg(OptionContract("SPXW", dt.date(2024, 1, 19), 4480.0, "P"), -1))
    bid, ask = quotes(rng, 390, 3, "SPXW")
    left = left_legs(np.array([leg.ratio for leg in legs], dtype=float), bid, ask)
    assert len(np.unique(left, axis=0)) >= 3


def test_a_trade_on_the_same_legs_as_another_shares_its_curve_for_the_session(monkeypatch):
    """Two trades on one leg set: the curve is computed once a session, and each trade reads it."""
    from strikebench.testing import ModelMarket, run_strategy
    from strikebench.api import Strategy

    day = dt.date(2024, 1, 10)
    short, long = OptionContract("SPXW", day, 4700.0, "P"), OptionContract("SPXW", day, 4695.0, "P")

    class Twice(Strategy):
        name = "twice"

        def __init__(self):
            super().__init__()
            self.prices = []

        def decision_times(self):
            return [dt.time(10, 0), dt.time(10, 5)]

        def on_decision_time(self, ctx):
            ctx.open_trade([Leg(short, -1), Leg(long, +1)], 1)

        def manage(self, ctx, trade):
            self.prices.append((trade.trade_id, ctx.now.time(), ctx.close_price(trade),
                                ctx.close_price_outside(trade, 0.10, 2.0)))

    made = []
    real = broker_mod._closing_curve_part  # what the broker prices a curve with (closing_curve's first part)

    def counting(*a, **k):
        made.append(1)
        return real(*a, **k)

    monkeypatch.setattr(broker_mod, "_closing_curve_part", counting)
    market = ModelMarket(day, day, spot=4710.0, quotes={short: (3.00, 3.40), long: (2.40, 2.60)})
    strat = Twice()
    run_strategy(strat, market, fill_model=MidSlippageFill())
    ids = {p[0] for p in strat.prices}
    assert len(ids) == 2 and len(made) == 1
    by_time = {}
    for tid, t, price, out in strat.prices:
        by_time.setdefault(t, set()).add((price, out))
    assert all(len(v) == 1 for v in by_time.values())  # both trades read the same price at a bar
    # buy 3.00/3.40 back, sell 2.40/2.60: mid 0.70 + 0.30 x width 0.60 = 0.88, up to the 0.05 tick
    assert strat.prices[-1][2] == 0.90


# ------------------------------------------------------------------ settle_fill_prices: one rounding pass
def settle_three_passes(pricing, raw, bid, ask, *, limit=None, at_limit=False):
    """The vectorised settle_fill_prices as it was: natural rounded down, far and raw up, three passes."""
    from strikebench.options.fills import limit_on_grid, tradeable

    r = pricing.ratios
    bid = np.asarray(bid, dtype=np.float64)
    ask = np.asarray(ask, dtype=np.float64)
    ok = np.asarray(tradeable(r, bid, ask))
    with np.errstate(invalid="ignore"):
        raw = np.where(ok, np.asarray(raw, dtype=np.float64), 0.0)
        b = np.where(ok[..., None], bid, 0.0)
        a = np.where(ok[..., None], ask, 0.0)
    natural = np.where(r > 0, r * a, r * b).sum(axis=-1)
    far = np.where(r > 0, r * b, r * a).sum(axis=-1)
    nat_g = pricing.down(natural)
    far_g = pricing.up(far)
    inside = far_g <= nat_g
    price = pricing.up(raw)
    price = np.where(inside, np.clip(price, far_g, nat_g), price)
    limit_g = None
    if limit is not None:
        limit_g = limit_on_grid(limit, pricing.root, complex_order=pricing.complex_order, as_of=pricing.as_of)
    price = np.clip(price, pricing.low, pricing.high)
    if limit_g is not None:
        ok = ok & (price <= limit_g + 1e-9)
        if at_limit:
            price = np.where(inside, np.minimum(limit_g, np.maximum(nat_g, price)), limit_g)
            price = np.clip(price, pricing.low, pricing.high)
    return np.round(np.where(ok, price, np.nan), 2) + 0.0


@pytest.mark.parametrize("seed", range(4))
def test_settle_fill_prices_rounding_in_one_pass_equals_three_passes(seed):
    """Minutes x legs: down(natural) taken as -up(-natural) in one pass with far and raw gives the same
    prices to the bit (a zero's sign included) on both grids (complex; the single-leg tiers at 3.00),
    negatives, NaN, raw prices on and just off the tick, limits, at_limit."""
    from strikebench.options.fills import combo_pricing, settle_fill_prices

    rng = np.random.default_rng(100 + seed)
    pyrng = random.Random(seed)
    expiry = dt.date(2024, 1, 19)
    for trial in range(80):
        root = pyrng.choice(["SPXW", "SPX", "XSP", "VIX"])
        base, width = ROOTS["SPXW" if root == "SPX" else root]
        k = pyrng.choice([1, 1, 2, 3, 4])
        strikes = [base + width * i for i in pyrng.sample(range(-10, 10), k)]
        right = pyrng.choice("PC")
        legs = tuple(Leg(OptionContract(root, expiry, s, right), pyrng.choice([1, -1, 2, -2])) for s in strikes)
        n = pyrng.choice([1, 5, 390])
        bid, ask = quotes(rng, n, k, root)
        bid = np.where(rng.random((n, k)) < 0.2, bid + 3.0, bid)  # around the single-leg tier at 3.00
        ask = np.where(rng.random((n, k)) < 0.2, ask + 3.0, ask)
        raw = np.round(rng.uniform(-12, 12, size=n), pyrng.choice([1, 2, 3]))
        raw = np.where(rng.random(n) < 0.1, raw + pyrng.choice([1e-9, -1e-9]), raw)
        raw = np.where(rng.random(n) < 0.05, np.nan, raw)
        raw = np.where(rng.random(n) < 0.05, 0.0, raw)
        as_of = pyrng.choice([dt.date(2024, 1, 10), dt.date(2013, 1, 10)])
        pricing = combo_pricing(legs, as_of=as_of)
        limit = pyrng.choice([None, None, round(rng.uniform(-6, 6), 3), 0.0])
        at_limit = limit is not None and pyrng.random() < 0.5
        got = settle_fill_prices(pricing, raw, bid, ask, limit=limit, at_limit=at_limit)
        want = settle_three_passes(pricing, raw, bid, ask, limit=limit, at_limit=at_limit)
        assert got.shape == want.shape
        assert np.array_equal(bits(got), bits(want)), (legs, trial, limit, at_limit)
