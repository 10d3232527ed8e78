"""The backtest broker on hand-made markets: every figure checkable with a pencil."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from strikebench.api import Strategy
from strikebench.options.contracts import OptionContract
from strikebench.options.orders import Leg, OrderStatus, TimeInForce
from strikebench.plugins.commissions import CboeRetail, ZeroCommission
from strikebench.plugins.fill_models import MidSlippageFill, NaturalFill
from strikebench.testing import ModelMarket, run_strategy

DAY = dt.date(2024, 1, 10)  # a Wednesday
P4700 = OptionContract("SPXW", DAY, 4700.0, "P")
P4695 = OptionContract("SPXW", DAY, 4695.0, "P")


class Scripted(Strategy):
    """Opens the given legs once at a time of day, optionally closes later."""

    name = "scripted"

    def __init__(self, legs, *, at=dt.time(10, 0), quantity=1, limit=None, close_at=None, cancel_at=None,
                 tif=TimeInForce.DAY, day=DAY):
        super().__init__()
        self.legs, self.at, self.quantity, self.limit = legs, at, quantity, limit
        self.close_at, self.cancel_at, self.tif, self.day = close_at, cancel_at, tif, day
        self.orders = []

    def decision_times(self):
        return [t for t in (self.at, self.close_at, self.cancel_at) if t]

    def on_decision_time(self, ctx):
        if ctx.today != self.day:
            return
        t = ctx.now.time()
        if t == self.at:
            self.orders.append(ctx.open_trade(self.legs, self.quantity, limit=self.limit, tif=self.tif))
        elif t == self.close_at:
            for trade in ctx.open_trades():
                self.orders.append(ctx.close_trade(trade, "scripted exit"))
        elif t == self.cancel_at:
            for order in self.orders:
                if order is not None and order.is_working:
                    ctx.cancel(order)


def put_spread_market(settle=4697.0, **kw):
    return ModelMarket(DAY, DAY, spot=4710.0, quotes={P4700: (3.00, 3.40), P4695: (2.40, 2.60)},
                       settlement={DAY: settle}, **kw)


def test_put_credit_spread_fills_at_k030_marks_at_mid_and_settles_to_the_cent():
    strat = Scripted([Leg(P4700, -1), Leg(P4695, +1)])
    engine = run_strategy(strat, put_spread_market(), fill_model=MidSlippageFill(), commission=CboeRetail())
    order = strat.orders[0]
    # mid = -3.20 + 2.50 = -0.70; width = 0.40 + 0.20 = 0.60; -0.70 + 0.30 x 0.60 = -0.52 -> up to -0.50
    assert order.status == OrderStatus.FILLED
    assert order.avg_fill_price == -0.50
    fill = order.fills[0]
    assert fill.fees == 2.56  # 2 legs x (0.65 + 0.60 + 0.03)
    assert sum(r * round(p * 100) for r, p in zip((-1, 1), fill.leg_prices)) == -50
    # settles at 4697: short 4700 put pays 3.00, long 4695 expires worthless
    (trade,) = engine.portfolio.closed_trades()
    assert trade.exit_reason == "settlement"
    assert trade.exit_price == 3.00
    assert trade.realized_pnl == -252.56  # 50.00 - 2.56 - 300.00
    assert engine.portfolio.cash == 99_747.44
    assert engine.portfolio.cash_cents == 100_000_00 + 50_00 - 256 - 300_00
    # cash = Σ realized P&L + initial cash, exactly
    assert engine.portfolio.cash_cents - engine.portfolio.initial_cash_cents == round(trade.realized_pnl * 100)


def test_open_spread_is_marked_at_mid_each_bar():
    seen = []

    class Watch(Scripted):
        def manage(self, ctx, trade):
            seen.append((ctx.now.time(), ctx.mark(trade), self._engine_value(ctx)))

        @staticmethod
        def _engine_value(ctx):
            return ctx._engine.broker.getvalue()

    strat = Watch([Leg(P4700, -1), Leg(P4695, +1)])
    run_strategy(strat, put_spread_market(), commission=CboeRetail())
    t, mark, value = seen[0]
    assert t == dt.time(10, 1)
    assert round(mark, 9) == -0.70
    # cash 100,000 + 50 - 2.56; short spread worth -0.70 x 100
    assert round(value, 9) == 99_977.44  # 100,000 + 50 - 2.56 - 70


def test_settlement_out_of_the_money_keeps_the_credit():
    strat = Scripted([Leg(P4700, -1), Leg(P4695, +1)])
    engine = run_strategy(strat, put_spread_market(settle=4750.0))
    (trade,) = engine.portfolio.closed_trades()
    assert trade.realized_pnl == 50.00
    assert trade.exit_price == 0.0


def test_butterfly_one_minus_two_one():
    c1, c2, c3 = (OptionContract("SPXW", DAY, k, "C") for k in (4700.0, 4710.0, 4720.0))
    market = ModelMarket(DAY, DAY, spot=4710.0, quotes={c1: (14.00, 14.40), c2: (8.00, 8.20), c3: (4.00, 4.20)},
                         settlement={DAY: 4712.0})
    strat = Scripted([Leg(c1, 1), Leg(c2, -2), Leg(c3, 1)])
    engine = run_strategy(strat, market)
    order = strat.orders[0]
    # mid = 14.20 - 2 x 8.10 + 4.10 = 2.10; width = 0.40 + 2 x 0.20 + 0.20 = 1.00; 2.10 + 0.30 = 2.40 debit
    assert order.avg_fill_price == 2.40
    (trade,) = engine.portfolio.closed_trades()
    # settle 4712: 12 - 2 x 2 + 0 = 8.00 per fly
    assert trade.exit_price == -8.00
    assert trade.realized_pnl == 560.00  # (8.00 - 2.40) x 100
    assert engine.portfolio.cash == 100_560.00


def test_vix_call_spread_settles_at_the_wednesday_open_print():
    vday = dt.date(2024, 1, 17)  # VIX January 2024 expiry (Wednesday, AM-settled)
    c20 = OptionContract("VIX", vday, 20.0, "C")
    c25 = OptionContract("VIX", vday, 25.0, "C")
    market = ModelMarket("2024-01-16", "2024-01-17", spot=14.0, underlying="VIX", root="VIX",
                         quotes={c20: (0.30, 0.34), c25: (0.10, 0.12)}, settlement={vday: 22.35})

    class VixHedge(Scripted):
        underlying = "VIX"

    strat = VixHedge([Leg(c20, 1), Leg(c25, -1)], day=dt.date(2024, 1, 16))
    engine = run_strategy(strat, market)
    order = strat.orders[0]
    # mid = 0.32 - 0.11 = 0.21; width = 0.04 + 0.02 = 0.06; 0.21 + 0.018 = 0.228 -> up to 0.23 (VIX complex 0.01)
    assert order.avg_fill_price == 0.23
    (trade,) = engine.portfolio.closed_trades()
    assert trade.exit_reason == "settlement"
    assert trade.closed_at.time() == dt.time(9, 30)
    assert trade.realized_pnl == 212.00  # (2.35 - 0.23) x 100


def test_buying_power_rejection():
    strat = Scripted([Leg(P4700, -1), Leg(P4695, +1)], quantity=300)
    engine = run_strategy(strat, put_spread_market(), initial_cash=100_000)
    order = strat.orders[0]
    # max loss (5 - 0.50) x 100 x 300 = 135,000 > 100,000
    assert order.status == OrderStatus.REJECTED
    assert "buying power" in order.status_reason
    assert engine.portfolio.cash == 100_000


def test_a_naked_short_call_is_rejected_as_undefined_risk():
    call = OptionContract("SPXW", DAY, 4715.0, "C")
    strat = Scripted([Leg(call, -1)])
    run_strategy(strat, ModelMarket(DAY, DAY, spot=4710.0))
    assert strat.orders[0].status == OrderStatus.REJECTED
    assert "unbounded" in strat.orders[0].status_reason


def test_unmarketable_limit_works_then_cancel():
    strat = Scripted([Leg(P4700, -1), Leg(P4695, +1)], limit=-1.00, cancel_at=dt.time(11, 0))
    engine = run_strategy(strat, put_spread_market())
    order = strat.orders[0]
    assert order.status == OrderStatus.CANCELLED
    assert engine.portfolio.closed_trades() == [] and engine.portfolio.cash == 100_000


def test_day_order_expires_at_the_close():
    strat = Scripted([Leg(P4700, -1), Leg(P4695, +1)], limit=-1.00)
    run_strategy(strat, put_spread_market())
    assert strat.orders[0].status == OrderStatus.EXPIRED


def test_marketable_limit_fills_at_the_model_price():
    strat = Scripted([Leg(P4700, -1), Leg(P4695, +1)], limit=-0.40)
    run_strategy(strat, put_spread_market())
    assert strat.orders[0].avg_fill_price == -0.50


@pytest.mark.parametrize("quote", [(np.nan, 3.40), (0.0, 3.40), (3.60, 3.40)], ids=["nan", "zero-bid", "crossed"])
def test_unusable_quotes_never_fill(quote):
    market = ModelMarket(DAY, DAY, spot=4710.0, quotes={P4700: quote, P4695: (2.40, 2.60)}, settlement={DAY: 4697.0})
    strat = Scripted([Leg(P4700, -1), Leg(P4695, +1)])
    engine = run_strategy(strat, market)
    assert strat.orders[0].status == OrderStatus.EXPIRED
    assert engine.portfolio.cash == 100_000


def test_natural_fill_and_an_exit_before_expiry():
    strat = Scripted([Leg(P4700, -1), Leg(P4695, +1)], close_at=dt.time(14, 0))
    engine = run_strategy(strat, put_spread_market(), fill_model=NaturalFill(), commission=ZeroCommission())
    entry, exit_ = strat.orders
    assert entry.avg_fill_price == -0.40  # sell at bid, buy at ask: credit 0.40
    assert exit_.avg_fill_price == 1.00  # buy back at ask, sell at bid: debit 1.00
    (trade,) = engine.portfolio.closed_trades()
    assert trade.exit_reason == "scripted exit"
    assert trade.realized_pnl == -60.00  # (0.40 - 1.00) x 100


def test_am_settled_monthly_cannot_trade_on_its_expiry_day():
    monthly = dt.date(2024, 1, 19)
    put = OptionContract("SPX", monthly, 4700.0, "P")
    put2 = OptionContract("SPX", monthly, 4695.0, "P")
    market = ModelMarket(monthly, monthly, spot=4710.0, quotes={put: (3.0, 3.4), put2: (2.4, 2.6)})
    strat = Scripted([Leg(put, -1), Leg(put2, 1)], day=monthly)
    run_strategy(strat, market)
    assert strat.orders[0].status == OrderStatus.REJECTED
    assert "no longer trades" in strat.orders[0].status_reason


def test_backtraders_own_analyzers_read_the_options_broker():
    """DrawDown and TimeReturn, run by cerebro, agree with the engine's own per-bar figures."""
    from strikebench.engine.core import Engine
    from strikebench.engine.runner import run_cerebro

    market = ModelMarket("2024-01-08", "2024-01-12", spot=lambda idx: 4800.0 - np.arange(len(idx)) * 0.05, iv=0.15)
    strat = Scripted([Leg(OptionContract("SPXW", dt.date(2024, 1, 12), 4780.0, "P"), -1),
                      Leg(OptionContract("SPXW", dt.date(2024, 1, 12), 4755.0, "P"), 1)], day=dt.date(2024, 1, 8))
    engine = Engine(market=market, strategies=[("s", strat)], fill_model=MidSlippageFill(), commission=CboeRetail())
    figures = run_cerebro(engine, analyzers=True)
    curve = np.r_[100_000.0, engine.equity_curve]
    ours = float(np.max(np.maximum.accumulate(curve) - curve))
    assert ours > 100  # the short put spread lost as the index fell
    assert figures["bt_max_drawdown_money"] == pytest.approx(ours, abs=0.01)
    # Backtrader's daily returns compound to the engine's final equity
    growth = np.prod([1 + r for r in figures["bt_daily_returns"].values()])
    assert 100_000 * growth == pytest.approx(engine.broker.getvalue(), abs=0.01)


def test_gtc_order_works_across_sessions_then_fills():
    """A GTC limit too greedy on day one stays working overnight and fills when the market comes to it."""
    expiry = dt.date(2024, 1, 12)
    p1, p2 = OptionContract("SPXW", expiry, 4700.0, "P"), OptionContract("SPXW", expiry, 4695.0, "P")

    def short_leg(ts):  # the short put is bid higher from Wednesday on
        return (3.00, 3.40) if ts.day < 10 else (3.60, 3.80)

    market = ModelMarket("2024-01-08", "2024-01-12", spot=4710.0, quotes={p1: short_leg, p2: (2.40, 2.60)},
                         settlement={expiry: 4750.0})
    strat = Scripted([Leg(p1, -1), Leg(p2, 1)], limit=-1.00, tif=TimeInForce.GTC, day=dt.date(2024, 1, 8))
    engine = run_strategy(strat, market)
    order = strat.orders[0]
    # Mon/Tue: mid -0.70, width 0.60 -> -0.52 -> -0.50: not marketable at -1.00
    # Wed: mid -3.70 + 2.50 = -1.20, width 0.40 -> -1.08 -> up to -1.05 <= -1.00: fills at 09:30 Wednesday
    assert order.status == OrderStatus.FILLED
    assert order.fills[0].filled_at.date() == dt.date(2024, 1, 10)
    assert order.avg_fill_price == -1.05
    (trade,) = engine.portfolio.closed_trades()
    assert trade.realized_pnl == 105.00


def test_gtc_order_expires_when_its_contracts_stop_trading():
    strat = Scripted([Leg(P4700, -1), Leg(P4695, +1)], limit=-1.00, tif=TimeInForce.GTC)
    run_strategy(strat, put_spread_market())
    assert strat.orders[0].status == OrderStatus.EXPIRED
    assert "stopped trading" in strat.orders[0].status_reason


def test_a_minute_without_a_usable_quote_is_marked_at_the_last_mid_not_at_zero():
    def short_leg(ts):  # the short put's quote vanishes (NaN) between 11:00 and 11:59
        return (np.nan, np.nan) if ts.hour == 11 else (3.00, 3.40)

    values = {}

    class Watch(Scripted):
        def manage(self, ctx, trade):
            values[ctx.now.strftime("%H:%M")] = ctx._engine.broker.getvalue()

    market = ModelMarket(DAY, DAY, spot=4710.0, quotes={P4700: short_leg, P4695: (2.40, 2.60)},
                         settlement={DAY: 4750.0})
    run_strategy(Watch([Leg(P4700, -1), Leg(P4695, +1)]), market)
    assert values["10:59"] == 99_980.00  # 100,000 + 50 - 70
    assert values["11:30"] == values["10:59"]  # not 100,050 (the short leg marked at zero)


def test_xsp_settlement_on_a_three_decimal_print_is_exact_to_the_cent():
    expiry = dt.date(2024, 1, 10)
    c1, c2 = OptionContract("XSP", expiry, 470.0, "P"), OptionContract("XSP", expiry, 468.0, "P")
    market = ModelMarket(expiry, expiry, spot=471.0, root="XSP", underlying="XSP",
                         quotes={c1: (0.40, 0.44), c2: (0.20, 0.22)}, settlement={expiry: 469.043})

    class Xsp(Scripted):
        underlying = "XSP"

    strat = Xsp([Leg(c1, -1), Leg(c2, 1)], quantity=3, day=expiry)
    engine = run_strategy(strat, market)
    # mid -0.42 + 0.21 = -0.21; width 0.04 + 0.02 = 0.06 -> -0.192 -> up to -0.19 (XSP 0.01 ticks): credit 0.19 x 3
    assert strat.orders[0].avg_fill_price == -0.19
    (trade,) = engine.portfolio.closed_trades()
    # the short 470 put pays 0.957 x 100 x 3 = 287.10
    assert trade.realized_pnl == -230.10  # 3 x 19.00 - 287.10
    assert engine.portfolio.cash_cents == 100_000_00 + 3 * 19_00 - 287_10


def test_a_leg_unquoted_for_a_whole_session_keeps_its_last_mark_and_crossed_quotes_are_no_marks():
    """Marks: the short put has no quote on Tuesday at all and a crossed one on Wednesday morning; the
    position keeps Monday's last mid (-3.20 + 2.50 = -0.70) instead of being valued at 0 or at 3.60/3.40."""
    expiry = dt.date(2024, 1, 12)
    p1, p2 = OptionContract("SPXW", expiry, 4700.0, "P"), OptionContract("SPXW", expiry, 4695.0, "P")

    def short_leg(ts):
        if ts.day == 9:
            return (np.nan, np.nan)
        if ts.day == 10 and ts.hour < 12:
            return (3.60, 3.40)  # crossed
        return (3.00, 3.40)

    values = {}

    class Watch(Scripted):
        def manage(self, ctx, trade):
            values[ctx.now.strftime("%d %H:%M")] = (ctx._engine.broker.getvalue(), round(ctx.mark(trade), 6))

    market = ModelMarket("2024-01-08", "2024-01-12", spot=4710.0, quotes={p1: short_leg, p2: (2.40, 2.60)},
                         settlement={expiry: 4750.0})
    run_strategy(Watch([Leg(p1, -1), Leg(p2, 1)], day=dt.date(2024, 1, 8)), market)
    # sold for 0.50 at 10:00 Monday, no fees: cash 100,050; the spread is worth -0.70 x 100 while quoted
    assert values["08 15:59"] == (100_000 + 50 - 70, -0.70)
    assert values["09 12:00"] == (100_000 + 50 - 70, -0.70)  # a whole session without a quote
    assert values["10 11:00"] == (100_000 + 50 - 70, -0.70)  # crossed: not a mark
    assert values["10 12:00"] == (100_000 + 50 - 70, -0.70)


def test_a_zero_bid_wing_is_bought_at_its_ask():
    wing = OptionContract("SPXW", DAY, 4650.0, "P")
    market = ModelMarket(DAY, DAY, spot=4710.0, quotes={P4700: (3.00, 3.40), wing: (0.00, 0.05)},
                         settlement={DAY: 4750.0})
    strat = Scripted([Leg(P4700, -1), Leg(wing, +1)], close_at=dt.time(14, 0))
    engine = run_strategy(strat, market, fill_model=NaturalFill())
    entry, exit_ = strat.orders
    # entry: sell 4700 at the bid 3.00, buy the wing at its ask 0.05: -2.95, the wing printed at 0.05
    assert entry.avg_fill_price == -2.95 and entry.fills[0].leg_prices == (3.00, 0.05)
    # exit: the wing cannot be sold at a zero bid, so the exit buys 4700 back alone (a single-leg order) at its
    # ask 3.40; the wing stays to expiry and settles worthless at 4750 (see tests/test_zero_bid_close.py)
    assert exit_.status == OrderStatus.FILLED and [leg.contract for leg in exit_.legs] == [P4700]
    assert exit_.avg_fill_price == 3.40
    (trade,) = engine.portfolio.closed_trades()
    assert trade.exit_reason == "scripted exit" and trade.settlement_cash == 0.0
    assert engine.portfolio.cash_cents == 100_000_00 + 295_00 - 340_00


def test_a_plugin_fill_model_cannot_fill_off_the_grid_or_beyond_the_market():
    """A fill model that overrides fill_price still gets the one rule applied by the broker."""
    from strikebench.api import FillModel

    class Sloppy(FillModel):
        name = "sloppy"

        def fill_price(self, order, bid, ask):
            return -0.523 if order.opens else 7.00  # off the 0.05 grid; a 5-wide spread bought back for 7.00

    strat = Scripted([Leg(P4700, -1), Leg(P4695, +1)], close_at=dt.time(14, 0))
    engine = run_strategy(strat, put_spread_market(), fill_model=Sloppy())
    entry, exit_ = strat.orders
    assert entry.avg_fill_price == -0.50  # -0.523 up to the tick
    assert exit_.avg_fill_price == 1.00  # never worse than the natural 3.40 - 2.40 (and never above the width 5.00)
    (trade,) = engine.portfolio.closed_trades()
    assert trade.realized_pnl == -50.00
