"""Exit curves priced once per trade and session, from the bar first asked on.

* A combo's curve (:func:`_combo_curve`, vectorised over minutes) is the fill price of a market order for the
  combo, minute by minute (``FillModel.fill_price``: the general path), to the bit, NaN where it does not fill.
* A closing curve of the minutes from a bar on is the whole session's curve from that bar on (each minute's
  price depends on that minute's quotes alone), so the broker prices a trade's curve from the bar it is first
  asked at: a session's bars are asked in order.
* ``next_bar_outside`` (a bisection of the session's outside minutes) equals a scan of the
  session's comparison; the exit rule's bar (``credit_exit``) is the first bar, found here by hand from the
  quotes, whose closing cost meets a level, whether ``manage`` runs every bar or idles until it.
"""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import pytest

from strikebench.api import Strategy
from strikebench.engine.broker import NEVER, OptionsBroker, _combo_curve, closing_curve
from strikebench.options.contracts import OptionContract
from strikebench.options.fills import reduced_combo
from strikebench.options.orders import Leg, Order, OrderType
from strikebench.plugins.fill_models import MidFill, MidSlippageFill, NaturalFill
from strikebench.strategies.spreads import PRICE_EPS, credit_exit
from strikebench.testing import ModelMarket, run_strategy

from test_closing_curve import ROOTS, bits, quotes


def _random_legs(pyrng: random.Random, expiry: dt.date):
    root = pyrng.choice(list(ROOTS))
    base, width = ROOTS[root]
    k = pyrng.choice([1, 2, 2, 3, 4])
    strikes = [base + width * i for i in pyrng.sample(range(-10, 10), k)]
    right = pyrng.choice("PC")
    return root, tuple(Leg(OptionContract(root, expiry, s, right), pyrng.choice([1, -1, 2, -2])) for s in strikes)


@pytest.mark.parametrize("seed", range(4))
def test_a_combo_curve_is_a_market_orders_fill_price_minute_by_minute(seed):
    """Random quotes (zero bids, NaN, crossed, negative, zero asks, off-tick noise): the vectorised curve equals
    ``fill_price`` of a one-combo market order on each minute's quotes, NaN where it returns None."""
    rng = np.random.default_rng(200 + seed)
    pyrng = random.Random(seed)
    for trial in range(40):
        root, legs = _random_legs(pyrng, dt.date(2024, 1, 19))
        legs = reduced_combo(legs)[0]  # an order's ratios share no factor
        bid, ask = quotes(rng, pyrng.choice([1, 7, 60]), len(legs), root)
        model = pyrng.choice([MidSlippageFill(), NaturalFill(), MidFill()])
        probe = Order(client_id="_probe", legs=legs, quantity=1, order_type=OrderType.MARKET, opens=False)
        want = np.array([np.nan if (p := model.fill_price(probe, bid[i], ask[i])) is None else p
                         for i in range(len(bid))], dtype=np.float64)
        got = _combo_curve(model, legs, bid, ask, as_of=None)
        assert np.array_equal(bits(got), bits(want)), (legs, trial)


@pytest.mark.parametrize("seed", range(4))
def test_a_closing_curve_from_a_bar_on_is_the_whole_curve_from_that_bar_on(seed):
    """What the broker relies on to price a trade's curve from the bar first asked: the minutes priced alone give
    the same floats as the whole session priced at once (legs left out on some minutes included)."""
    rng = np.random.default_rng(300 + seed)
    pyrng = random.Random(seed)
    for trial in range(40):
        root, legs = _random_legs(pyrng, dt.date(2024, 1, 19))
        bid, ask = quotes(rng, 390, len(legs), root)
        model = pyrng.choice([MidSlippageFill(), NaturalFill()])
        whole = closing_curve(model, legs, bid, ask, as_of=dt.date(2024, 1, 10))
        for start in (1, pyrng.randrange(1, 389), 389):
            part = closing_curve(model, legs, bid[start:], ask[start:], as_of=dt.date(2024, 1, 10))
            assert np.array_equal(bits(part), bits(whole[start:])), (legs, trial, start)


class _Quotes:
    """A QuoteBook stand-in: one leg set's quotes for the session."""

    def __init__(self, bid, ask, day):
        self.bid, self.ask, self.day = bid, ask, day

    def legs(self, contracts):
        from strikebench.options.chain import LegQuotes

        times = np.arange(len(self.bid), dtype=np.int64) * 60_000_000_000 + 1_700_000_000 * 10**9
        return LegQuotes(contracts=tuple(contracts), times=times, bid=self.bid, ask=self.ask)


class _Trade:
    def __init__(self, legs):
        self.legs, self.trade_id = legs, "T-1"


@pytest.mark.parametrize("seed", range(3))
def test_the_broker_prices_a_curve_from_the_bar_first_asked_and_finds_the_next_bar_outside(seed):
    """Asked first at bar k, the broker's closing price at every bar from k on is the whole curve's; the session's
    comparison and the next bar outside (at each bar, past the quotes too) are a scan of the whole curve's."""
    from strikebench.portfolio import Portfolio
    from strikebench.plugins.commissions import ZeroCommission

    rng = np.random.default_rng(400 + seed)
    pyrng = random.Random(seed)
    day = dt.date(2024, 1, 10)
    for trial in range(12):
        root, legs = _random_legs(pyrng, dt.date(2024, 1, 19))
        n = pyrng.choice([5, 60, 390])
        bid, ask = quotes(rng, n, len(legs), root)
        model = MidSlippageFill()
        whole = closing_curve(model, tuple(leg.reversed() for leg in legs), bid, ask, as_of=day)
        finite = whole[np.isfinite(whole)]
        low, high = (np.quantile(finite, [0.2, 0.8]) if finite.size else (0.0, 1.0))
        hit = (np.nan_to_num(whole, nan=np.inf) <= low) | (np.nan_to_num(whole, nan=-np.inf) >= high)
        start = pyrng.choice([0, 1, n // 2, n - 1])
        broker = OptionsBroker(Portfolio(100_000.0), model, ZeroCommission(), _Quotes(bid, ask, day))
        trade = _Trade(legs)
        for bar in range(start, n + 3):  # bars past the quotes read the last minute
            broker._bar = bar
            m = min(bar, n - 1)
            price = broker.close_price(trade)
            assert (price is None and whole[m] != whole[m]) or price == whole[m], (trial, bar)
            assert broker.close_price_outside(trade, low, high) == bool(hit[m]), (trial, bar)
            ahead = [j for j in range(bar + 1, n) if hit[j]]
            want = ahead[0] if ahead else (bar + 1 if hit[n - 1] else NEVER)
            assert broker.next_bar_outside(trade, low, high) == want, (trial, bar)


@pytest.mark.parametrize("seed", range(4))
def test_the_broker_asked_at_some_bars_answers_as_the_whole_curve(seed):
    """A curve priced up to its first minute where a leg may be left out (a sold leg without a bid) and the rest
    only when a bar from it is read: asked at a few bars in order, one or more of close_price, close_price_outside
    and next_bar_outside in any order at each, every answer is the whole curve's (the rest priced or not)."""
    from strikebench.portfolio import Portfolio
    from strikebench.plugins.commissions import ZeroCommission

    rng = np.random.default_rng(700 + seed)
    pyrng = random.Random(70 + seed)
    day = dt.date(2024, 1, 10)
    lazy = 0
    for trial in range(40):
        root, legs = _random_legs(pyrng, dt.date(2024, 1, 19))
        n = pyrng.choice([5, 60, 390])
        bid, ask = quotes(rng, n, len(legs), root)
        if pyrng.random() < 0.7:  # sold legs bid until some minute (the usual session: a wing's bid fades)
            fade = pyrng.randrange(n)
            bid[:fade] = np.where(np.isfinite(bid[:fade]), np.abs(bid[:fade]) + 0.05, 0.05)
        model = pyrng.choice([MidSlippageFill(), NaturalFill()])
        whole = closing_curve(model, tuple(leg.reversed() for leg in legs), bid, ask, as_of=day)
        finite = whole[np.isfinite(whole)]
        levels = [tuple(np.quantile(finite, [q, 1 - q])) if finite.size else (0.0, 1.0) for q in (0.05, 0.3)]
        broker = OptionsBroker(Portfolio(100_000.0), model, ZeroCommission(), _Quotes(bid, ask, day))
        trade = _Trade(legs)
        bars = sorted(pyrng.sample(range(n + 3), min(n + 3, pyrng.choice([1, 2, 4, 9]))))
        for bar in bars:
            broker._bar = bar
            m = min(bar, n - 1)
            asks = pyrng.sample(["price", "outside", "next"], pyrng.randint(1, 3))
            for low, high in pyrng.sample(levels, pyrng.randint(1, 2)):
                hit = (np.nan_to_num(whole, nan=np.inf) <= low) | (np.nan_to_num(whole, nan=-np.inf) >= high)
                for what in asks:
                    if what == "price":
                        price = broker.close_price(trade)
                        assert (price is None and whole[m] != whole[m]) or price == whole[m], (trial, bar)
                    elif what == "outside":
                        assert broker.close_price_outside(trade, low, high) == bool(hit[m]), (trial, bar)
                    else:
                        ahead = [j for j in range(bar + 1, n) if hit[j]]
                        want = ahead[0] if ahead else (bar + 1 if hit[n - 1] else NEVER)
                        assert broker.next_bar_outside(trade, low, high) == want, (trial, bar)
                    lazy += bool(broker._curve_rest)  # answered without pricing the minutes that leave legs out
    assert lazy >= 20, lazy


# ------------------------------------------------------------------ the exit bar, by hand from the quotes
DAY = dt.date(2024, 1, 10)
SHORT = OptionContract("SPXW", DAY, 4700.0, "P")
LONG = OptionContract("SPXW", DAY, 4690.0, "P")


def _price_cents(legs: list[tuple[int, int, int]], low: int, high: int) -> int:
    """A combo's fill by hand (mid_slippage, k 0.30): ``legs`` as (ratio, bid, ask) in cents; mid + 0.30 x width,
    up to the 0.05 complex tick, between the far natural and the natural (on the grid inwards), then inside
    the combo's payoff range ``low``..``high``."""
    mid2 = sum(r * (b + a) for r, b, a in legs)  # twice the mid
    width = sum(abs(r) * (a - b) for r, b, a in legs)
    up = -(-round((mid2 / 2 + 0.30 * width) * 1000) // 5000) * 5
    nat = sum(r * (a if r > 0 else b) for r, b, a in legs) // 5 * 5  # natural, down to the grid
    far = -(-sum(r * (b if r > 0 else a) for r, b, a in legs) // 5) * 5  # far natural, up to the grid
    price = min(max(up, far), nat) if far <= nat else up
    return min(max(price, low), high)


def _cost_cents(sb: int, sa: int, lb: int, la: int) -> int:
    """Closing the short 4700 / long 4690 put spread: buy the short back, sell the long (worth 0..10.00)."""
    assert lb > 0  # a long leg without a bid would be left out: the path below never has one
    return _price_cents([(1, sb, sa), (-1, lb, la)], 0, 1000)


def _entry_cents(sb: int, sa: int, lb: int, la: int) -> int:
    """Opening it: sell the 4700 put, buy the 4690 (worth -10.00..0)."""
    return _price_cents([(-1, sb, sa), (1, lb, la)], -1000, 0)


def _path(minute: int) -> tuple[int, int]:
    """The short put's quote at minute ``minute`` of the session (cents): a drift down, a spike up, back down."""
    base = 520 - 2 * minute if minute < 150 else 220 + 4 * (minute - 150)
    base = max(base, 40)
    return base, base + 20


class _SellAndExit(Strategy):
    name = "sell_exit"

    def __init__(self, when: dt.time, idle: bool, tp: float = 0.5, stop: float = 2.0):
        super().__init__()
        self.when, self.idle, self.tp, self.stop = when, idle, tp, stop
        self.managed: list[dt.time] = []

    def decision_times(self):
        return [self.when]

    def on_decision_time(self, ctx):
        if not ctx.open_trades() and not ctx._engine.portfolio.closed_trades():
            ctx.open_trade([Leg(SHORT, -1), Leg(LONG, +1)], 1)

    def manage(self, ctx, trade):
        self.managed.append(ctx.now.time())
        credit_exit(ctx, trade, take_profit_pct=self.tp, stop_multiple=self.stop, idle=self.idle)


def _run(when: dt.time, idle: bool, tp: float, stop: float):
    def short_quote(ts):
        m = (ts.hour * 60 + ts.minute) - (9 * 60 + 30)
        b, a = _path(m)
        return b / 100, a / 100

    market = ModelMarket(DAY, DAY, spot=4710.0, quotes={SHORT: short_quote, LONG: (1.00, 1.20)},
                         settlement={DAY: 4750.0})
    strat = _SellAndExit(when, idle, tp, stop)
    engine = run_strategy(strat, market, fill_model=MidSlippageFill())
    return engine, strat


@pytest.mark.parametrize("idle", [False, True])
@pytest.mark.parametrize("when,tp,stop", [(dt.time(10, 0), 0.5, 2.0), (dt.time(12, 7), 0.5, 1.5),
                                          (dt.time(9, 31), 0.8, 2.0), (dt.time(14, 0), 0.5, 2.0)])
def test_the_exit_is_on_the_first_bar_after_the_entry_whose_cost_meets_a_level(when, tp, stop, idle):
    engine, strat = _run(when, idle, tp, stop)
    trades = engine.portfolio.closed_trades() + engine.portfolio.open_trades()
    assert len(trades) == 1
    trade = trades[0]
    entry_bar = (when.hour * 60 + when.minute) - (9 * 60 + 30)
    sb, sa = _path(entry_bar)
    credit = -_entry_cents(sb, sa, 100, 120)
    assert round(trade.entry_price * 100) == -credit
    low = (1.0 - tp) * credit / 100 + PRICE_EPS
    high = stop * credit / 100 - PRICE_EPS
    want = None
    for m in range(entry_bar + 1, 390):
        cost = _cost_cents(*_path(m), 100, 120) / 100
        if cost <= low or cost >= high:
            want = (m, round(cost * 100), "take_profit" if cost <= low else "stop_loss")
            break
    if want is None:
        assert trade.exit_reason == "settlement"
        return
    m, cost, reason = want
    t = dt.time(9 + (30 + m) // 60, (30 + m) % 60)
    assert trade.exit_reason == reason
    assert trade.closed_at.time() == t and round(trade.exit_price * 100) == cost
    if idle:  # asked on the bar after the fill (the fill woke it) and then on the exit bar only
        assert strat.managed[-1] == t and len(strat.managed) <= 3


# ------------------------------------------------------------------ promises about a strategy's own trades
OTHER = OptionContract("SPXW", DAY, 4600.0, "P")


class _BuysOften(Strategy):
    """Another strategy of the run: buys a put every 7 minutes (order events and fills all day)."""

    name = "buys_often"

    def decision_times(self):
        return [dt.time(9 + (30 + m) // 60, (30 + m) % 60) for m in range(3, 385, 7)]

    def on_decision_time(self, ctx):
        ctx.open_trade([Leg(OTHER, +1)], 1)


class _NapsForever(Strategy):
    """Holds one trade and promises (not own) that nothing happens to it before the session ends."""

    name = "naps"

    def __init__(self):
        super().__init__()
        self.managed: list[dt.time] = []

    def decision_times(self):
        return [dt.time(10, 0)]

    def on_decision_time(self, ctx):
        ctx.open_trade([Leg(SHORT, -1), Leg(LONG, +1)], 1)

    def manage(self, ctx, trade):
        self.managed.append(ctx.now.time())
        ctx.idle_until(trade, NEVER)


def _market():
    def short_quote(ts):
        b, a = _path((ts.hour * 60 + ts.minute) - (9 * 60 + 30))
        return b / 100, a / 100

    return ModelMarket(DAY, DAY, spot=4710.0, quotes={SHORT: short_quote, LONG: (1.00, 1.20), OTHER: (0.40, 0.50)},
                       settlement={DAY: 4750.0})


def _together(*strategies):
    from strikebench.engine.core import Engine
    from strikebench.plugins.commissions import ZeroCommission

    engine = Engine(market=_market(), strategies=[(s.name, s) for s in strategies], fill_model=MidSlippageFill(),
                    commission=ZeroCommission())
    engine.run_all()
    return engine


@pytest.mark.parametrize("when,tp,stop", [(dt.time(10, 0), 0.5, 2.0), (dt.time(12, 7), 0.5, 1.5)])
def test_other_strategies_events_do_not_wake_the_credit_rule_and_change_nothing(when, tp, stop):
    """credit_exit's promise is about its own trade: another strategy's orders and fills all day do not wake it
    (manage runs on the bar after its own fill and on the exit bar only), and its exit is the one it makes alone."""
    alone, strat_alone = _run(when, True, tp, stop)
    strat = _SellAndExit(when, True, tp, stop)
    other = _BuysOften()
    engine = _together(other, strat)
    (mine,) = [t for t in engine.portfolio.closed_trades() if t.strategy == strat.name]
    (want,) = alone.portfolio.closed_trades()
    assert (mine.exit_reason, mine.closed_at, mine.exit_price, mine.entry_price) == \
        (want.exit_reason, want.closed_at, want.exit_price, want.entry_price)
    assert strat.managed == strat_alone.managed and len(strat.managed) == 2
    assert len([t for t in engine.portfolio.closed_trades() if t.strategy == other.name]) > 40  # it did trade


def test_a_promise_that_is_not_about_own_trades_is_broken_by_any_event_of_the_run():
    """ctx.idle_until without own=True: manage runs again after each of the other strategy's events (on the bar of
    the buy: that strategy comes first in the run, its order fills at once), and on no other bar."""
    naps = _NapsForever()
    _together(_BuysOften(), naps)
    buys = [t for t in _BuysOften().decision_times() if t > dt.time(10, 1)]
    assert naps.managed == [dt.time(10, 1)] + buys


# ------------------------------------------------------------------ an exit's fill price read off its curve
@pytest.mark.parametrize("seed", range(4))
def test_a_market_order_on_a_curves_closing_legs_fills_at_the_models_price(seed):
    """Once a trade's closing curve is priced this session, the broker reads a market order on the trade's legs
    reversed (the exit the rule found on that curve) off the curve: on every bar it answers what the fill model
    answers for that order on that bar's quotes, to the bit (None where it does not fill): on minutes where a long
    leg cannot be sold (the curve holds the price of the order without it), off the session's tick rule (a VIX
    order made under the other rule than the session's), for orders on other legs, and for models."""
    from strikebench.portfolio import Portfolio
    from strikebench.plugins.commissions import ZeroCommission

    rng = np.random.default_rng(500 + seed)
    pyrng = random.Random(seed)
    read = asked = left_minutes = other_rule = 0
    for trial in range(30):
        root, legs = _random_legs(pyrng, dt.date(2022, 10, 21))
        legs = reduced_combo(legs)[0]  # a trade's legs are an order's: their ratios share no factor
        closing = tuple(leg.reversed() for leg in legs)
        n = pyrng.choice([5, 60])
        bid, ask = quotes(rng, n, len(legs), root)
        # the session on either side of VIX's tick-rule change (nickels/dimes before 2022-10-03, pennies since)
        day = pyrng.choice([dt.date(2022, 9, 26), dt.date(2022, 10, 10)])
        made = pyrng.choice([day, dt.date(2022, 9, 28), dt.date(2022, 10, 5)])
        created = dt.datetime.combine(made, dt.time(10, 0))
        model = pyrng.choice([MidSlippageFill(), NaturalFill(), MidFill()])
        broker = OptionsBroker(Portfolio(100_000.0), model, ZeroCommission(), _Quotes(bid, ask, day))
        trade = _Trade(legs)
        start = pyrng.choice([0, 1, n // 2])
        broker._bar = start
        broker.close_price(trade)  # the curve, priced from this bar on
        other = Order(client_id="o", legs=legs, quantity=1, order_type=OrderType.MARKET, opens=False,
                      created_at=created)  # the legs as opened: not the curve's order
        for bar in range(start, n + 2):
            broker._bar = bar
            m = min(bar, n - 1)
            for legs_of in (closing, other.legs):
                order = Order(client_id=f"c{bar}", legs=legs_of, quantity=2, order_type=OrderType.MARKET,
                              opens=False, created_at=created)
                broker._priced = None  # nothing kept from another order
                got = broker.fill_price(order, bid[m], ask[m])
                want = model.fill_price(order, bid[m], ask[m])
                assert (got is None and want is None) or (type(got) is float and bits(got) == bits(want)), \
                    (trial, bar, got, want)
                if legs_of is closing:
                    asked += 1
                    read += broker._curve_price(order, bid[m], ask[m]) is not None
                    curve = broker._order_curves[closing]
                    left_minutes += want is None and curve[m] == curve[m]
                    other_rule += root == "VIX" and (made < dt.date(2022, 10, 3)) != (day < dt.date(2022, 10, 3))
    assert read > asked // 4 and left_minutes > 0 and other_rule > 0, (read, asked, left_minutes, other_rule)
