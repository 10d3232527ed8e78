"""The take-profit / stop rule of the credit strategies (strikebench.strategies.spreads.credit_exit) on pinned
quotes: the exit happens on the FIRST bar whose closing price meets the rule, at that bar's price.

Every expected figure is derived here, in integer cents, from the quotes and the fill rule
(mid + 0.30 x width, rounded up to the 0.05 complex tick), not read from the engine.
"""

from __future__ import annotations

import datetime as dt

import pytest

from strikebench.api import Strategy
from strikebench.options.contracts import OptionContract
from strikebench.options.orders import Leg
from strikebench.plugins.commissions import ZeroCommission
from strikebench.plugins.fill_models import MidSlippageFill
from strikebench.strategies.spreads import credit_exit
from strikebench.testing import ModelMarket, run_strategy

DAY = dt.date(2024, 1, 10)
SHORT = OptionContract("SPXW", DAY, 4700.0, "P")
LONG = OptionContract("SPXW", DAY, 4695.0, "P")
LONG_QUOTE = (180, 200)  # cents


class SellOnceAndManage(Strategy):
    """Sells the 4700/4695 put spread at 10:00 by market order; exits by the shared credit rule."""

    name = "sell_once"

    def __init__(self, take_profit_pct: float, stop_multiple: float, idle: bool = False):
        super().__init__()
        self.tp, self.stop, self.idle = take_profit_pct, stop_multiple, idle
        self.managed: list[dt.time] = []  # the bars manage ran on

    def decision_times(self):
        return [dt.time(10, 0)]

    def on_decision_time(self, ctx):
        ctx.open_trade([Leg(SHORT, -1), Leg(LONG, +1)], 1)

    def manage(self, ctx, trade):
        self.managed.append(ctx.now.time())
        credit_exit(ctx, trade, take_profit_pct=self.tp, stop_multiple=self.stop, idle=self.idle)


def up5(c: float) -> int:
    """Cents rounded up to the 0.05 grid (c may carry a fraction of a cent)."""
    return int(-(-round(c * 1000) // 5000) * 5)


def closing_cost(short: tuple[int, int]) -> int:
    """Buy the short put back, sell the long: mid + 0.30 x width, up to 0.05, in cents."""
    mid = (short[0] + short[1]) / 2 - (LONG_QUOTE[0] + LONG_QUOTE[1]) / 2
    width = (short[1] - short[0]) + (LONG_QUOTE[1] - LONG_QUOTE[0])
    price = up5(mid + 0.30 * width)
    natural = short[1] - LONG_QUOTE[0]
    assert 0 <= price <= natural <= 500  # inside the legs' market and the 0..5.00 range: no clamp here
    return price


def run(path: list[tuple[dt.time, tuple[int, int]]], tp: float, stop: float, idle: bool = False):
    def short_quote(ts):
        quote = path[0][1]
        for start, q in path:
            if ts.time() >= start:
                quote = q
        return quote[0] / 100, quote[1] / 100

    market = ModelMarket(DAY, DAY, spot=4710.0, quotes={SHORT: short_quote, LONG: (1.80, 2.00)},
                         settlement={DAY: 4750.0})
    strat = SellOnceAndManage(tp, stop, idle)
    engine = run_strategy(strat, market, fill_model=MidSlippageFill(), commission=ZeroCommission())
    (trade,) = engine.portfolio.closed_trades()
    engine.managed = strat.managed
    return trade, engine


def first_bar(path, entry_credit: int, test) -> tuple[dt.time, int]:
    """The first minute after the entry bar whose closing cost meets ``test``, and that cost."""
    t = dt.datetime.combine(DAY, dt.time(10, 1))
    while t.time() < dt.time(16, 0):
        quote = [q for start, q in path if t.time() >= start][-1]
        cost = closing_cost(quote)
        if test(cost, entry_credit):
            return t.time(), cost
        t += dt.timedelta(minutes=1)
    raise AssertionError("the path never meets the rule")


# entry at 10:00 on (2.75, 2.95) / (1.80, 2.00): mid -2.85 + 1.90 = -0.95, width 0.40 -> -0.83 -> up to -0.80
ENTRY = [(dt.time(9, 30), (275, 295))]


@pytest.mark.parametrize("idle", [False, True])
def test_take_profit_on_the_first_bar_the_cost_reaches_half_the_credit(idle):
    path = ENTRY + [(dt.time(10, 30), (235, 255)),   # 2.45 - 1.90 + 0.12 = 0.67 -> 0.70
                    (dt.time(10, 45), (205, 225)),   # 2.15 - 1.90 + 0.12 = 0.37 -> 0.40 = exactly half of 0.80
                    (dt.time(11, 0), (195, 215))]    # 0.27 -> 0.30
    trade, _ = run(path, tp=0.50, stop=2.0, idle=idle)
    credit = up5(-(285 - 190) + 0.30 * 40)
    assert credit == -80 and round(trade.entry_price * 100) == -80
    when, cost = first_bar(path, 80, lambda cost, credit: cost * 2 <= credit)
    assert (when, cost) == (dt.time(10, 45), 40)
    assert trade.exit_reason == "take_profit"
    assert trade.closed_at.time() == when and round(trade.exit_price * 100) == cost
    assert round(trade.realized_pnl * 100) == (80 - cost) * 100


@pytest.mark.parametrize("idle", [False, True])
def test_stop_on_the_first_bar_the_cost_reaches_twice_the_credit(idle):
    path = ENTRY + [(dt.time(11, 0), (305, 325)),    # 3.15 - 1.78 = 1.37 -> 1.40
                    (dt.time(11, 20), (325, 345)),   # 3.35 - 1.78 = 1.57 -> 1.60 = exactly twice 0.80
                    (dt.time(11, 40), (345, 365))]   # 1.77 -> 1.80
    trade, _ = run(path, tp=0.50, stop=2.0, idle=idle)
    when, cost = first_bar(path, 80, lambda cost, credit: cost >= 2 * credit)
    assert (when, cost) == (dt.time(11, 20), 160)
    assert trade.exit_reason == "stop_loss"
    assert trade.closed_at.time() == when and round(trade.exit_price * 100) == cost
    assert round(trade.realized_pnl * 100) == (80 - cost) * 100


@pytest.mark.parametrize("tp", [0.40, 0.60, 0.70])
def test_take_profit_thresholds_that_are_not_on_the_grid(tp):
    """(1 - tp) x 0.80 = 0.48 / 0.32 / 0.24: the first grid cost at or below it."""
    path = ENTRY + [(dt.time(10, 30), (220, 240)),   # 0.52 -> 0.55
                    (dt.time(10, 40), (215, 235)),   # 0.47 -> 0.50
                    (dt.time(10, 50), (200, 220)),   # 0.32 -> 0.35
                    (dt.time(11, 0), (195, 215)),    # 0.27 -> 0.30
                    (dt.time(11, 10), (185, 205))]   # 0.17 -> 0.20
    trade, _ = run(path, tp=tp, stop=2.0)
    limit_c = round(80 * (1 - tp), 6)
    when, cost = first_bar(path, 80, lambda cost, credit: cost <= limit_c)
    assert trade.exit_reason == "take_profit"
    assert trade.closed_at.time() == when and round(trade.exit_price * 100) == cost


def test_an_idle_exit_rule_is_asked_only_after_the_fill_and_on_the_bar_that_meets_it():
    """credit_exit(idle=True): manage runs on the bar after the entry fills (anything that changes the
    run wakes it), then not again until the first bar whose closing cost reaches a level; the exit is
    the same bar and price as when manage runs every bar (the tests above, both ways)."""
    path = ENTRY + [(dt.time(10, 30), (235, 255)), (dt.time(10, 45), (205, 225))]
    _, every_bar = run(path, tp=0.50, stop=2.0)
    trade, idle = run(path, tp=0.50, stop=2.0, idle=True)
    assert trade.closed_at.time() == dt.time(10, 45)
    assert every_bar.managed == [dt.time(10, m) for m in range(1, 46)]
    assert idle.managed == [dt.time(10, 1), dt.time(10, 45)]


@pytest.mark.parametrize("idle", [False, True])
@pytest.mark.parametrize("stop", [1.5, 1.75, 3.0, 3.5])
def test_stop_exactly_at_a_multiple_whose_float_product_is_above_it(stop, idle):
    """stop x 0.80 = 1.20 / 1.40 / 2.40 / 2.80 exactly, but in binary floating point 1.5 * 0.8 is 1.2000000000000002:
    a closing cost of exactly 1.20 meets the rule on that bar (the rule is in cents, not in float noise)."""
    target = round(stop * 80)  # cents, exact for these multiples
    # a short quote whose closing cost is exactly the target: mid - 1.90 + 0.12 = target -> mid = target + 0.78
    mid = target + 190 - 12
    path = ENTRY + [(dt.time(10, 30), (mid - 20 - 20, mid - 20 + 0)),   # a lower cost first: not a stop
                    (dt.time(11, 0), (mid - 10, mid + 10)),             # exactly the stop
                    (dt.time(11, 20), (mid + 10, mid + 30))]            # beyond it
    trade, _ = run(path, tp=0.50, stop=stop, idle=idle)
    when, cost = first_bar(path, 80, lambda cost, credit: cost >= target)
    assert (when, cost) == (dt.time(11, 0), target)
    assert trade.exit_reason == "stop_loss"
    assert trade.closed_at.time() == when and round(trade.exit_price * 100) == cost


@pytest.mark.parametrize("idle", [False, True])
@pytest.mark.parametrize("credit_quote,tp", [((275, 295), 0.25), ((275, 295), 0.75)])
def test_take_profit_exactly_at_a_fraction_whose_float_product_is_below_it(credit_quote, tp, idle):
    """(1 - tp) x 0.80 = 0.60 / 0.20 exactly; a closing cost of exactly that meets the take profit on that bar."""
    target = round((1 - tp) * 80)
    mid = target + 190 - 12
    path = [(dt.time(9, 30), credit_quote),
            (dt.time(10, 30), (mid + 10, mid + 30)),   # above the target: not yet
            (dt.time(11, 0), (mid - 10, mid + 10)),    # exactly the target
            (dt.time(11, 20), (mid - 30, mid - 10))]   # below it
    trade, _ = run(path, tp=tp, stop=2.0, idle=idle)
    when, cost = first_bar(path, 80, lambda cost, credit: cost <= target)
    assert (when, cost) == (dt.time(11, 0), target)
    assert trade.exit_reason == "take_profit"
    assert trade.closed_at.time() == when and round(trade.exit_price * 100) == cost
