"""The order path's one-order shortcuts equal the general paths they stand for (bit for bit).

* the combo prices of one order's legs (``combo_mid`` / ``combo_width`` / ``combo_natural`` on 1-D arrays) in
  Python floats equal numpy's expressions;
* the one rule of strikebench.options.fills is idempotent on what ``FillModel.fill_price`` answers, so the
  broker does not apply it a second time to a fill model that keeps that method;
* the broker asks such a fill model once per order and bar (the risk check's estimate of a market order and its
  fill attempt), a fill model overriding ``fill_price`` every time, and the rule still holds for it.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from strikebench.api import Strategy
from strikebench.options.contracts import OptionContract
from strikebench.options.fills import combo_pricing, settle_fill_prices
from strikebench.options.orders import Leg, Order, OrderType, TimeInForce, combo_mid, combo_natural, combo_width
from strikebench.plugins.commissions import ZeroCommission
from strikebench.plugins.fill_models import LimitFill, MidFill, MidSlippageFill, NaturalFill
from strikebench.testing import ModelMarket, run_strategy

MODELS = [MidFill(), MidSlippageFill(), MidSlippageFill(MidSlippageFill.Params(k=0.5)), NaturalFill(),
          LimitFill(), LimitFill(LimitFill.Params(reference="mid")),
          LimitFill(LimitFill.Params(reference="mid_slippage", k=0.2))]


def same(x, y) -> bool:
    """Equal floats to the bit (NaN equals NaN; a zero's sign counts)."""
    x, y = float(x), float(y)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y and math.copysign(1.0, x) == math.copysign(1.0, y)


def _quotes(rng, n):
    bid = np.round(rng.uniform(-1, 40, n), int(rng.choice([1, 2, 3, 6])))
    ask = bid + rng.choice([0.05, 0.1, 0.35, 0.0, -0.05, 1e-9, 3.0], n)
    for arr in (bid, ask):
        for bad in (np.nan, np.inf, -np.inf, 0.0, -0.0, 1e300):
            arr[rng.random(n) < 0.04] = bad
    return bid, ask


def test_combo_prices_of_one_order_in_python_floats_equal_numpys():
    rng = np.random.default_rng(7)
    for _ in range(20000):
        n = int(rng.integers(1, 10))  # 8 and 9 legs take numpy's own path
        ratios = rng.choice([1.0, -1.0, 2.0, -2.0, 3.0, -0.5, 1e-300], n)
        bid, ask = _quotes(rng, n)
        with np.errstate(all="ignore"):
            want = {
                combo_mid: (ratios * (bid + ask) * 0.5).sum(axis=-1),
                combo_width: (np.abs(ratios) * (ask - bid)).sum(axis=-1),
                combo_natural: np.where(ratios > 0, ratios * ask, ratios * bid).sum(axis=-1),
            }
            for fn, w in want.items():
                got = fn(ratios, bid, ask)
                assert type(got) is np.float64
                assert same(got, w), (fn.__name__, ratios, bid, ask, got, w)
                # and as one row of a session's minutes (the vectorised path)
                assert same(fn(ratios, bid[None, :], ask[None, :])[0], w)
    # all -0.0 terms: numpy sums from 0.0, so +0.0
    z = np.array([-0.0, -0.0])
    assert same(combo_mid(np.array([1.0, 1.0]), z, z), 0.0)


def _orders(rng, count):
    roots = {"SPXW": 4000.0, "SPX": 4000.0, "XSP": 400.0, "VIX": 60.0}
    for _ in range(count):
        root = str(rng.choice(list(roots)))
        n = int(rng.choice([1, 2, 2, 3, 4]))
        step = 0.5 if root == "XSP" else 5.0
        strikes = rng.choice(np.arange(-8, 9), n, replace=False)
        ratios = [int(rng.choice([1, -1, 2, -2])) for _ in range(n)]
        if math.gcd(*[abs(r) for r in ratios]) != 1:
            ratios[0] = int(math.copysign(1, ratios[0]))
        legs = tuple(Leg(OptionContract(root, dt.date(2023, 3, 17), roots[root] + step * int(k),
                                        str(rng.choice(["C", "P"]))), r) for k, r in zip(strikes, ratios))
        if len({leg.contract for leg in legs}) != n:
            continue
        bid = np.round(rng.uniform(0, 30, n), int(rng.choice([1, 2, 3])))
        bid[rng.random(n) < 0.05] = 0.0
        bid[rng.random(n) < 0.03] = np.nan
        ask = bid + rng.choice([0.05, 0.1, 0.35, 0.0, -0.05, 0.01], n)
        limit = None if rng.random() < 0.5 else float(rng.uniform(-15, 15))
        created = [dt.datetime(2022, 6, 1, 10, 0), dt.datetime(2023, 3, 1, 10, 0), None][int(rng.integers(3))]
        order = Order("o", legs, 1, order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
                      limit_price=limit, created_at=created)
        yield order, bid, ask


def test_the_one_rule_is_idempotent_on_what_fill_price_answers():
    """What FillModel.fill_price answers passes the rule unchanged (the broker's second pass was this)."""
    rng = np.random.default_rng(15)
    filled = 0
    for order, bid, ask in _orders(rng, 6000):
        for model in MODELS:
            price = model.fill_price(order, bid, ask)
            if price is None:
                continue
            filled += 1
            again = settle_fill_prices(combo_pricing(order.legs, as_of=order.created_at), float(price), bid, ask,
                                       limit=order.limit_price if order.order_type == OrderType.LIMIT else None)
            assert same(again, price), (order.legs, order.limit_price, bid, ask, model, price, again)
    assert filled > 10000


DAY = dt.date(2024, 1, 10)
P4700 = OptionContract("SPXW", DAY, 4700.0, "P")
P4695 = OptionContract("SPXW", DAY, 4695.0, "P")


class _OpenThenClose(Strategy):
    name = "open_then_close"

    def decision_times(self):
        return [dt.time(10, 0), dt.time(11, 0)]

    def on_decision_time(self, ctx):
        if ctx.now.time() == dt.time(10, 0):
            ctx.open_trade([Leg(P4700, -1), Leg(P4695, 1)], 1)  # a market order
        else:
            for trade in ctx.open_trades():
                ctx.close_trade(trade, "scripted exit")


class CountingMid(MidSlippageFill):
    calls = 0

    def model_price(self, ratios, bid, ask):
        type(self).calls += 1
        return super().model_price(ratios, bid, ask)


class OffGrid(MidSlippageFill):
    """Overrides fill_price with an answer off the tick grid: the broker puts it on the grid (the rule)."""

    calls = 0

    def fill_price(self, order, bid, ask):
        type(self).calls += 1
        got = super().fill_price(order, bid, ask)
        return None if got is None else got + 0.013


def _market():
    return ModelMarket(DAY, DAY, spot=4710.0, quotes={P4700: (3.00, 3.40), P4695: (2.40, 2.60)},
                       settlement={DAY: 4697.0})


def test_the_broker_asks_a_fill_model_once_per_order_and_bar():
    CountingMid.calls = 0
    engine = run_strategy(_OpenThenClose(), _market(), fill_model=CountingMid(), commission=ZeroCommission())
    orders = list(engine.broker.orders.values())
    assert [o.status.value for o in orders] == ["filled", "filled"]
    # each market order: the risk check's estimate and the fill attempt on its bar ask the model once
    assert CountingMid.calls == 2
    # mid -0.70, width 0.60: -0.70 + 0.18 = -0.52 -> up to -0.50; the close: 0.70 + 0.18 -> 0.90
    assert [o.avg_fill_price for o in orders] == [-0.50, 0.90]


def test_a_fill_model_overriding_fill_price_is_asked_each_time_and_put_on_the_rule():
    OffGrid.calls = 0
    engine = run_strategy(_OpenThenClose(), _market(), fill_model=OffGrid(), commission=ZeroCommission())
    orders = list(engine.broker.orders.values())
    assert OffGrid.calls == 4  # each market order: its estimate and its fill attempt
    # -0.487 -> up to -0.45; 0.913 -> up to 0.95
    assert [o.avg_fill_price for o in orders] == [-0.45, 0.95]


@pytest.mark.parametrize("model", MODELS[:4], ids=lambda m: f"{m.name}-{m.slippage_fraction}")
def test_a_backtest_fills_as_with_the_rule_applied_twice(model, monkeypatch):
    """Every fill of a scripted run is the same as when the broker applies the rule to the model's answer
    again (what it did before it knew the answer is by the rule)."""
    first = run_strategy(_OpenThenClose(), _market(), fill_model=model, commission=ZeroCommission())
    monkeypatch.setattr("strikebench.engine.broker._keeps_fill_price", lambda fm: False)
    second = run_strategy(_OpenThenClose(), _market(), fill_model=model, commission=ZeroCommission())
    a = [(f.net_price, f.leg_prices, f.fees) for o in first.broker.orders.values() for f in o.fills]
    b = [(f.net_price, f.leg_prices, f.fees) for o in second.broker.orders.values() for f in o.fills]
    assert a == b and len(a) == 2


class _OpenAtTen(Strategy):
    name = "open_at_ten"

    def decision_times(self):
        return [dt.time(10, 0)]

    def on_decision_time(self, ctx):
        self.order = ctx.open_trade([Leg(P4700, -1), Leg(P4695, 1)], 1, tif=TimeInForce.GTC)


def test_a_working_order_is_priced_again_on_each_bar():
    """The answer kept for an order is for its bar only: a market order that cannot fill at 10:00 (no bid on
    the leg it sells) fills at 10:02 on that minute's quotes."""

    def short_leg(ts):
        m = ts.hour * 60 + ts.minute
        return (np.nan, 3.40) if m < 602 else (3.00 + (m - 602) * 0.10, 3.40 + (m - 602) * 0.10)

    CountingMid.calls = 0
    strat = _OpenAtTen()
    market = ModelMarket(DAY, DAY, spot=4710.0, quotes={P4700: short_leg, P4695: (2.40, 2.60)},
                         settlement={DAY: 4697.0})
    run_strategy(strat, market, fill_model=CountingMid(), commission=ZeroCommission())
    assert strat.order.status.value == "filled"
    assert strat.order.fills[0].filled_at.minute == 2
    assert strat.order.avg_fill_price == -0.50  # the 10:02 quotes: mid -0.70, width 0.60
    assert CountingMid.calls == 1  # 10:00 and 10:01 did not reach the model (untradeable), 10:02 did once


P4690 = OptionContract("SPXW", DAY, 4690.0, "P")


class _ProbeThenOpen(Strategy):
    """At 10:00: asks the risk gate about an entry (``would_veto``, what decide_and_enter does), then sends it,
    then sends a second market entry on other legs and a limit entry on the first legs, all on the same bar."""

    name = "probe_then_open"

    def decision_times(self):
        return [dt.time(10, 0)]

    def on_decision_time(self, ctx):
        first = [Leg(P4700, -1), Leg(P4695, 1)]
        assert ctx.would_veto(first, 1) == []
        ctx.open_trade(first, 1)
        ctx.open_trade([Leg(P4695, -1), Leg(P4690, 1)], 1)
        ctx.open_trade(first, 2, limit=-0.45)


def _three_entries():
    return ModelMarket(DAY, DAY, spot=4710.0,
                       quotes={P4700: (3.00, 3.40), P4695: (2.40, 2.60), P4690: (1.90, 2.05)},
                       settlement={DAY: 4697.0})


@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"{m.name}-{getattr(m.params, 'k', '')}")
def test_orders_priced_alike_share_one_answer_and_fill_as_when_each_is_asked(model, monkeypatch):
    """The broker keeps a fill model's answer for what FillModel.fill_price reads of an order (its legs, type,
    limit and time) and the bar: a would-be entry (would_veto's probe) and the order then sent ask the model
    once, and orders on other legs or with a limit on the same bar are priced on their own, as when the
    broker asks the model for every order (the same fills, bit for bit)."""
    fast = run_strategy(_ProbeThenOpen(), _three_entries(), fill_model=model, commission=ZeroCommission())
    monkeypatch.setattr("strikebench.engine.broker._keeps_fill_price", lambda fm: False)
    slow = run_strategy(_ProbeThenOpen(), _three_entries(), fill_model=model, commission=ZeroCommission())
    a = [(o.client_id, o.status.value, [(f.net_price, f.leg_prices, f.fees) for f in o.fills])
         for o in fast.broker.orders.values()]
    b = [(o.client_id, o.status.value, [(f.net_price, f.leg_prices, f.fees) for f in o.fills])
         for o in slow.broker.orders.values()]
    assert a == b and len(a) == 3
    assert len({f[2][0][0] for f in a if f[2]}) >= 2  # the entries are not all priced alike


def test_a_would_be_entry_and_the_entry_sent_on_its_bar_ask_the_fill_model_once():
    CountingMid.calls = 0
    engine = run_strategy(_ProbeThenOpen(), _three_entries(), fill_model=CountingMid(), commission=ZeroCommission())
    assert [o.status.value for o in engine.broker.orders.values()] == ["filled", "filled", "filled"]
    # the probe and the first entry (its estimate and fill attempt): once; the second entry: once; the limit
    # entry is not estimated (its limit is its estimate): once
    assert CountingMid.calls == 3


def _payoff_range_numpy(legs):
    """payoff_range as it was computed in numpy (the reference)."""
    if len({leg.contract.expiry for leg in legs}) != 1:
        return -math.inf, math.inf
    strikes = sorted({float(leg.contract.strike) for leg in legs})
    s = np.array([0.0, *strikes])[:, None]
    k = np.array([float(leg.contract.strike) for leg in legs])
    calls = np.array([leg.contract.is_call for leg in legs])
    ratios = np.array([leg.ratio for leg in legs], dtype=np.float64)
    payoff = (ratios * np.where(calls, np.maximum(s - k, 0.0), np.maximum(k - s, 0.0))).sum(axis=1)
    slope_up = float(sum(leg.ratio for leg in legs if leg.contract.is_call))
    low, high = float(payoff.min()), float(payoff.max())
    return (-math.inf if slope_up < 0 else low), (math.inf if slope_up > 0 else high)


def _extremes_numpy(legs):
    from strikebench.options.orders import expiry_payoff

    strikes = sorted({leg.contract.strike for leg in legs})
    payoff = expiry_payoff(legs, np.array([0.0, *strikes, strikes[-1] * 2 + 1.0]))
    return float(payoff.min()), float(sum(leg.ratio for leg in legs if leg.contract.is_call))


def test_payoff_range_and_worst_case_in_python_floats_equal_numpys():
    from strikebench.options.fills import payoff_range
    from strikebench.options.orders import _payoff_extremes_of

    rng = np.random.default_rng(3)
    for _ in range(5000):
        n = int(rng.integers(1, 11))  # 8 legs and more go through expiry_payoff (numpy sums those pairwise)
        root = str(rng.choice(["SPXW", "XSP", "VIX"]))
        strikes = rng.choice(np.arange(1, 400) * float(rng.choice([0.5, 1.0, 5.0, 0.125])), n, replace=False)
        legs = tuple(Leg(OptionContract(root, dt.date(2023, 3, 17), float(k), str(rng.choice(["C", "P"]))),
                         int(rng.choice([1, -1, 2, -2, 3, -5]))) for k in strikes)
        if len({leg.contract for leg in legs}) != n:
            continue
        got, want = payoff_range(legs), _payoff_range_numpy(legs)
        assert all(same(x, y) for x, y in zip(got, want)), (legs, got, want)
        got, want = _payoff_extremes_of(legs), _extremes_numpy(legs)
        assert all(same(x, y) for x, y in zip(got, want)), (legs, got, want)


def test_leg_prints_are_the_decimal_division_of_their_cents():
    """allocate_legs returns each leg's cents over 100 as int division (correctly rounded, as Decimal gave)."""
    from decimal import Decimal

    for c in list(range(-2000, 200001)) + [10**12 + 7, 2**53 - 1]:
        assert c / 100 == float(Decimal(c) / 100)


def test_settle_puts_an_off_grid_limit_on_the_grid_downwards():
    """A limit handed to settle_fill_prices off the grid works as limit_on_grid (down): an SPXW spread's -1.03
    is -1.05, so -1.00 does not fill and -1.05 does, one order or a row of a session alike."""
    legs = (Leg(P4700, -1), Leg(P4695, 1))
    pricing = combo_pricing(legs, as_of=DAY)
    bid, ask = np.array([3.00, 2.00]), np.array([3.40, 2.20])  # naturals -0.80 and -1.40
    for raw, want in ((-1.00, None), (-1.02, None), (-1.07, -1.05), (-1.30, -1.30)):
        one = settle_fill_prices(pricing, raw, bid, ask, limit=-1.03)
        row = settle_fill_prices(pricing, np.array([raw]), bid[None, :], ask[None, :], limit=-1.03)[0]
        for got in (one, row):
            assert (math.isnan(got) if want is None else got == want), (raw, got)


def test_the_risk_gate_hands_a_trip_made_by_a_check_to_the_journal_at_that_check():
    """Managers that keep RiskManager.pop_trips are not asked for trips; one that can trip is, at once."""
    from strikebench.api import OrderRequest, RiskManager, Veto
    from strikebench.engine.context import RiskGate
    from strikebench.plugins.breakers import CircuitBreaker

    class TripsOnCheck(CircuitBreaker):
        name = "trips_on_check"

        def check(self, request, portfolio):
            self._trip("account", request.at, "tripped by the check", {})
            return Veto("tripped")

    class Quiet(RiskManager):
        name = "quiet"

        def pop_trips(self, upto=None):  # an override: asked (and it has none)
            self.asked = getattr(self, "asked", 0) + 1
            return []

    class Hook:
        def __init__(self):
            self.trips = []

        def on_breaker_trip(self, run, trip):
            self.trips.append(trip)

        def check_order(self, run, request, portfolio):
            return []

    hook = Hook()
    quiet, plain = Quiet(), RiskManager()
    gate = RiskGate([plain, TripsOnCheck(), quiet], hook=hook, run=None)
    at = dt.datetime(2024, 1, 10, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    vetoes = gate.check(OrderRequest(None, at, "s", True, 1, -0.5, 450.0), None)
    assert [v.rule for v in vetoes] == ["trips_on_check"]
    assert [t.reason for t in hook.trips] == ["tripped by the check"] and gate.trips == hook.trips
    assert quiet.asked == 1


def test_the_risk_gate_asks_each_manager_about_the_orders_its_applies_to_names_and_check_order_plugins():
    """A manager keeping RiskManager.applies_to is asked about entries only; one overriding it about the orders it
    names (here: closing orders only). The check_order hook is called whenever a plugin implements it, also one
    registered after the gate was made (the gate skips the call only while none does)."""
    import pluggy

    from strikebench.api import OrderRequest, RiskManager, Veto
    from strikebench.engine.context import RiskGate
    from strikebench.hookspecs import PROJECT, hookimpl
    from strikebench import hookspecs

    class GuardsCloses(RiskManager):
        name = "guards_closes"

        def applies_to(self, request):
            return not request.opens

        def check(self, request, portfolio):
            return Veto("no closing today")

    class EntriesOnly(RiskManager):
        name = "entries_only"

        def check(self, request, portfolio):
            return Veto("no entry today")

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    gate = RiskGate([GuardsCloses(), EntriesOnly()], hook=pm.hook, run=None)
    at = dt.datetime(2024, 1, 10, 10, 0)
    entry = OrderRequest(None, at, "s", True, 1, -0.5, 450.0)
    close = OrderRequest(None, at, "s", False, 1, 0.5, 0.0)
    assert [v.rule for v in gate.check(entry, None)] == ["entries_only"]
    assert [v.rule for v in gate.check(close, None)] == ["guards_closes"]

    class LateVeto:
        @hookimpl
        def check_order(self, run, request, portfolio):
            return Veto("vetoed by a plugin", rule="plugin")

    pm.register(LateVeto())
    assert [v.rule for v in gate.check(entry, None)] == ["entries_only", "plugin"]
    assert [v.rule for v in gate.check(close, None)] == ["guards_closes", "plugin"]


def test_the_contexts_plain_time_is_the_bars_time_at_every_bar():
    """ctx._at() (the bar's time as a datetime, made once a bar) is now.to_pydatetime() at every bar, and what an
    order, its request and its events are stamped with."""

    class Stamps(_OpenThenClose):
        seen: list = []

        def on_decision_time(self, ctx):
            type(self).seen.append((ctx._at(), ctx.now.to_pydatetime(), ctx._at()))
            super().on_decision_time(ctx)

    Stamps.seen = []
    engine = run_strategy(Stamps(), _market(), fill_model=MidSlippageFill(), commission=ZeroCommission())
    assert len(Stamps.seen) == 2 and all(a == b == c and type(a) is dt.datetime for a, b, c in Stamps.seen)
    assert Stamps.seen[0][0] != Stamps.seen[1][0]
    orders = list(engine.broker.orders.values())
    assert [o.created_at for o in orders] == [s[1] for s in Stamps.seen]
    assert [o.fills[0].filled_at for o in orders] == [s[1] for s in Stamps.seen]


def test_usable_quotes_in_four_comparisons_equal_the_finite_checks():
    """``usable_quotes`` (bid >= 0, bid <= ask, ask > 0, ask < inf) is the definition it stands for (both finite,
    bid >= 0, ask > 0, not crossed) on quotes with NaN, +-inf, -0.0, negatives and crossed values, broadcast too."""
    from strikebench.options.chain import usable_quotes

    rng = np.random.default_rng(11)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -0.05, 5e-324, 1e300])
    for shape_b, shape_a in [((390, 2), (390, 2)), ((7,), (7,)), ((), ()), ((5, 3), (3,)), ((1, 4), (6, 4))]:
        for _ in range(50):
            bid = np.round(rng.uniform(-1, 10, shape_b), 2)
            ask = np.round(rng.uniform(-1, 10, shape_a), 2)
            bid = np.where(rng.random(shape_b) < 0.2, rng.choice(specials, shape_b), bid)
            ask = np.where(rng.random(shape_a) < 0.2, rng.choice(specials, shape_a), ask)
            with np.errstate(invalid="ignore"):
                want = np.isfinite(bid) & np.isfinite(ask) & (bid >= 0) & (ask > 0) & (bid <= ask)
            got = usable_quotes(bid, ask)
            assert got.shape == want.shape and got.dtype == want.dtype and np.array_equal(got, want)


def test_a_legs_marks_are_its_mids_carried_over_unusable_minutes_whether_or_not_every_minute_is_usable():
    """``OptionsBroker._leg_marks``: where every minute of every leg is usable, the marks are the mids themselves;
    else the usable mids with the others carried (the general path): both equal the general computation."""
    from strikebench.engine.broker import OptionsBroker, _carry_forward
    from strikebench.options.chain import LegQuotes
    from strikebench.portfolio import Portfolio

    class Book:
        day = dt.date(2024, 1, 10)

        def __init__(self, bid, ask):
            self.bid, self.ask = bid, ask

        def legs(self, contracts):
            times = np.arange(len(self.bid), dtype=np.int64) * 60_000_000_000 + 1_700_000_000 * 10**9
            return LegQuotes(contracts=tuple(contracts), times=times, bid=self.bid, ask=self.ask)

    rng = np.random.default_rng(12)
    contracts = [OptionContract("SPXW", dt.date(2024, 1, 12), 4700.0 + 5 * i, "P") for i in range(3)]
    kinds = {"all usable": 0, "some not": 0}
    for trial in range(200):
        n, k = int(rng.choice([1, 5, 390])), int(rng.integers(1, 4))
        bid = np.round(rng.uniform(0, 10, (n, k)), 2)
        ask = bid + np.round(rng.uniform(0, 0.5, (n, k)), 2)
        if trial % 2:
            u = rng.random((n, k))
            bid = np.where(u < 0.05, np.nan, np.where(u < 0.1, ask + 0.05, bid))
            ask = np.where((u > 0.1) & (u < 0.12), np.inf, ask)
        broker = OptionsBroker(Portfolio(100_000.0), MidFill(), ZeroCommission(), Book(bid, ask))
        if trial % 3 == 0:
            broker._last_mark[contracts[0]] = 1.5
        got = broker._leg_marks(contracts[:k])
        with np.errstate(invalid="ignore"):
            usable = np.isfinite(bid) & np.isfinite(ask) & (bid >= 0) & (ask > 0) & (bid <= ask)
            mid = np.where(usable, (bid + ask) * 0.5, np.nan)
        want = _carry_forward(mid, np.array([broker._last_mark.get(c, np.nan) for c in contracts[:k]]))
        assert np.array_equal(got, want, equal_nan=True), trial
        kinds["all usable" if usable.all() else "some not"] += 1
    assert min(kinds.values()) > 50, kinds


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning")
def test_a_position_value_curves_finiteness_from_its_sum_equals_numpys_elementwise_check():
    """``broker._all_finite`` (the sum finite, else the elements asked) is ``np.isfinite(x).all()``: NaN, +-inf,
    both infinities, sums that overflow while every item is finite, empty and one-item curves."""
    from strikebench.engine.broker import _all_finite

    rng = np.random.default_rng(13)
    cases = [np.array([]), np.array([np.nan]), np.array([-0.0]), np.array([1e308, 1e308]), np.array([-1e308, -1e308]),
             np.array([np.inf, -np.inf]), np.array([np.inf, 1.0]), np.full(390, 1e306)]
    for _ in range(3000):
        x = rng.uniform(-1e5, 1e5, int(rng.choice([1, 2, 390])))
        u = rng.random(x.shape)
        x[u < 0.01] = np.nan
        x[(u > 0.01) & (u < 0.02)] = np.inf
        x[(u > 0.02) & (u < 0.03)] = -np.inf
        x[(u > 0.03) & (u < 0.04)] = 1e308
        cases.append(x)
    seen = set()
    for x in cases:
        want = bool(np.isfinite(x).all())
        assert _all_finite(x) is want, x
        with np.errstate(over="ignore", invalid="ignore"):
            seen.add((want, bool(np.isfinite(np.add.reduce(x)))))
    assert seen == {(True, True), (True, False), (False, False)}  # finite items summing to inf: the elements asked


def test_the_portfolios_liability_kept_between_changes_is_the_liability_of_its_open_trades_after_each():
    """``Portfolio.liability`` is kept until a fill or a settlement: after every opening fill, exit (whole, one leg
    of a no-bid close), settlement and buying-power check it equals the liability computed afresh."""
    from strikebench.options.orders import Fill
    from strikebench.portfolio import Portfolio

    exp = dt.date(2024, 1, 12)
    put = lambda k: OptionContract("SPXW", exp, k, "P")  # noqa: E731
    at = dt.datetime(2024, 1, 10, 10, 0)
    p = Portfolio(100_000.0)
    n = [0]

    def fill(legs, qty, price, trade, opens, leg_prices):
        n[0] += 1
        order = Order(f"O{n[0]}", legs, qty, OrderType.MARKET, strategy="s", trade_id=trade, opens=opens,
                      created_at=at)
        p.apply_fill(order, Fill(f"F{n[0]}", order.client_id, at, qty, price, leg_prices, 1.3))

    def check():
        kept = p.liability()
        p._liability = None
        assert p.liability() == kept and p.check_buying_power(
            Order("probe", (Leg(put(4700.0), -1), Leg(put(4690.0), 1)), 1, OrderType.MARKET, created_at=at), -1.0,
            1.3) is None
        return kept

    seen = [check()]
    fill((Leg(put(4700.0), -1), Leg(put(4690.0), 1)), 2, -2.0, "A", True, (3.0, 1.0))
    seen.append(check())
    fill((Leg(put(4600.0), -1), Leg(put(4580.0), 1), Leg(put(4570.0), 1)), 1, -1.0, "B", True, (3.0, 1.0, 1.0))
    seen.append(check())
    fill((Leg(put(4700.0), 1), Leg(put(4690.0), -1)), 1, 1.0, "A", False, (1.5, 0.5))  # one of two combos
    seen.append(check())
    fill((Leg(put(4600.0), 1), Leg(put(4580.0), -1)), 1, 0.5, "B", False, (1.0, 0.5))  # the wing left (no bid)
    seen.append(check())
    p.settle([put(4700.0), put(4690.0), put(4570.0)], {put(4700.0): 0.0, put(4690.0): 0.0, put(4570.0): 0.0},
             at.replace(hour=16))
    seen.append(check())
    assert len(set(seen)) >= 4 and seen[-1] == 0.0, seen


def test_running_totals_kept_between_remarks_equal_every_curve_summed_again():
    """``broker._running_totals``: after any change of the curve list (a curve appended, dropped anywhere, replaced,
    the list emptied, reordered; the kept totals given or not) the running totals are bit for bit those of summing
    every curve again in order, the totals before the first changed curve the very objects kept."""
    from strikebench.engine.broker import _running_totals

    rng = np.random.default_rng(21)
    pool = []
    for _ in range(12):
        c = rng.normal(0, 1e4, 390) * 10.0 ** rng.integers(-3, 4)
        c[rng.random(390) < 0.02] = np.nan
        c[rng.random(390) < 0.01] = -0.0
        pool.append(c)
    curves, totals = [], None
    reused = 0
    for step in range(600):
        new = list(curves)
        move = rng.integers(6)
        if move == 0 or not new:
            new.append(pool[rng.integers(len(pool))])
        elif move == 1:
            del new[rng.integers(len(new))]
        elif move == 2:
            new[rng.integers(len(new))] = pool[rng.integers(len(pool))]
        elif move == 3:
            new = new[::-1]
        elif move == 4 and rng.random() < 0.1:
            new = []
        kept = totals if rng.random() < 0.9 else None
        got = _running_totals(curves, kept, new)
        want, total = [], None
        for c in new:
            total = c if total is None else total + c
            want.append(total)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert np.array_equal(g.view(np.int64), w.view(np.int64))
        if kept and new:
            k = 0
            while k < min(len(curves), len(new)) and curves[k] is new[k]:
                k += 1
            assert all(got[i] is kept[i] for i in range(k))
            reused += k
        curves, totals = new, got
    assert reused > 300
