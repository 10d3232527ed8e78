"""Closing a trade whose long wing has no bid: buy the rest back, leave the wing to settle at expiry.

Every figure is derived here by hand from the pinned quotes and the fill rule (docs/fills.md): the exit
on the first bar the rule is met, its fill on the order of the legs it trades (a one-leg close is a
single-leg order on the single-leg grid), fees only for contracts traded, the wing's settlement at its
intrinsic value, and the journal's rows reconciling to the cent.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time

import pandas as pd
import pytest

from strikebench.api import RunInfo, Strategy
from strikebench.engine.core import Engine
from strikebench.journal import Journal
from strikebench.options.contracts import OptionContract
from strikebench.options.orders import Leg
from strikebench.plugins.commissions import CboeRetail
from strikebench.plugins.fill_models import MidSlippageFill
from strikebench.strategies.spreads import credit_exit
from strikebench.testing import ModelMarket, orders_of

DAY, EXP = dt.date(2024, 1, 10), dt.date(2024, 1, 11)  # Wednesday entry, Thursday PM expiry
S, L = OptionContract("SPXW", EXP, 4700.0, "P"), OptionContract("SPXW", EXP, 4675.0, "P")


def _at(ts) -> tuple[dt.date, dt.time]:
    t = pd.Timestamp(ts)
    return t.date(), t.time()


def short_quote(ts):
    day, t = _at(ts)
    if day == EXP:
        return 0.50, 0.70
    if t < dt.time(11, 0):
        return 3.00, 3.40
    if t < dt.time(11, 30):
        return 1.40, 1.60
    return 0.90, 1.10


def wing_quote(ts):
    day, t = _at(ts)
    if day == EXP:
        return 0.00, 0.05
    if t < dt.time(11, 0):
        return 0.50, 0.70
    if t < dt.time(13, 0):
        return 0.00, 0.10  # no bid from 11:00; the whole combo has bids again only at 13:00
    return 0.05, 0.10


class TakeProfitVertical(Strategy):
    """Sells the 4700/4675 put spread at 10:00 on DAY; exits by ``credit_exit`` (50 % take profit, 2x stop)."""

    name = "tp_vertical"

    def decision_times(self):
        return [dt.time(10, 0)]

    def on_decision_time(self, ctx):
        if ctx.today == DAY:
            ctx.open_trade([Leg(S, -1), Leg(L, +1)], 1)

    def manage(self, ctx, trade):
        credit_exit(ctx, trade, take_profit_pct=0.50, stop_multiple=2.0, idle=True)


class JournalHook:
    """The journal plugin's writes, straight into a Journal (the engine without a plugin manager)."""

    def __init__(self, journal: Journal, run_id: str):
        self.j, self.run_id = journal, run_id

    def on_order_event(self, *, run, order, event):
        self.j.record_order_event(self.run_id, order, event)

    def on_fill(self, *, run, order, fill):
        self.j.record_fill(self.run_id, order, fill)

    def on_trade_closed(self, *, run, trade):
        self.j.record_trade_closed(self.run_id, trade)

    def __getattr__(self, name):
        return lambda **kwargs: []


def _run(strategy, market, journal_path=None):
    run = RunInfo(run_id="zb", name="zb", mode="backtest")
    journal = None
    hook = None
    if journal_path is not None:
        journal = Journal(journal_path)
        journal.start_run(run.run_id, name=run.name, mode=run.mode)
        hook = JournalHook(journal, run.run_id)
    engine = Engine(market=market, strategies=[(strategy.name, strategy)], fill_model=MidSlippageFill(),
                    commission=CboeRetail(), run=run, hook=hook)
    engine.run_all()
    if journal is not None:
        journal.close()
    return engine


def test_vertical_with_a_no_bid_wing_exits_on_the_first_bar_and_the_wing_settles(tmp_path):
    market = ModelMarket(DAY, EXP, spot=4720.0, expiries=[EXP], quotes={S: short_quote, L: wing_quote},
                         settlement={EXP: 4670.0})
    engine = _run(TakeProfitVertical(), market, tmp_path / "j.sqlite")
    entry, exit_ = orders_of(engine)  # nothing is sent after the exit: the wing is left alone
    # entry at 10:00, mid_slippage k = 0.30: mid -3.20 + 0.60 = -2.60, width 0.40 + 0.20 = 0.60,
    # -2.60 + 0.18 = -2.42 -> up to the 0.05 complex tick: -2.40 (inside the naturals -2.90 .. -2.30)
    assert entry.avg_fill_price == -2.40 and entry.fills[0].fees == 2.56  # 2 contracts x 1.28
    # take profit when closing costs <= 0.50 x 2.40 = 1.20. From 11:00 the wing has no bid: the close is the
    # short alone. 11:00-11:29: 1.50 + 0.30 x 0.20 = 1.56 -> 1.60 (not yet); 11:30: 1.00 + 0.06 = 1.06 -> up to
    # the single-leg 0.05 tick: 1.10 <= 1.20. The exit is at 11:30, not at 13:00 when the wing is bid again.
    assert exit_.legs == (Leg(S, +1),) and exit_.quantity == 1 and not exit_.is_complex
    (fill,) = exit_.fills
    assert fill.filled_at == pd.Timestamp("2024-01-10 11:30", tz="America/New_York").to_pydatetime()
    assert fill.net_price == 1.10 and fill.leg_prices == (1.10,)
    assert fill.fees == 1.28  # one contract traded, not two
    (trade,) = engine.portfolio.closed_trades()
    assert trade.exit_reason == "take_profit" and trade.partly_closed_at == fill.filled_at
    # the wing settles at expiry (PM, 16:00): 4675 - 4670 = 5.00 x 100 = +500.00, no fee on it
    assert trade.closed_at == pd.Timestamp("2024-01-11 16:00", tz="America/New_York").to_pydatetime()
    assert trade.settlement_cash == 500.00 and trade.settled_contracts == 1
    # P&L: +240.00 - 2.56 - 110.00 - 1.28 + 500.00
    assert round(trade.realized_pnl * 100) == 24000 - 256 - 11000 - 128 + 50000 == 62616
    assert round(trade.fees * 100) == 256 + 128
    assert trade.exit_price == pytest.approx(1.10 - 5.00, abs=1e-12)  # per combo: paid 1.10, got 5.00 back
    assert engine.portfolio.cash_cents == 100_000_00 + 62616
    # the day's P&L counts the exit on its day (risk managers read it), the settlement on expiry
    assert engine.portfolio.realized_by_day_cents[DAY] == 24000 - 256 - 11000 - 128
    assert engine.portfolio.realized_by_day_cents[EXP] == 50000
    # DAY's equity holds the wing at its closing mid (0.05 + 0.10) / 2 x 100 = 7.50
    assert dict(engine.equity_by_day)[DAY] == pytest.approx(100_000 + 126.16 + 7.50, abs=1e-9)

    db = sqlite3.connect(tmp_path / "j.sqlite")
    rows = db.execute("SELECT kind, opens, price, quantity, fees, cash, leg_prices FROM fills WHERE trade_id = ?"
                      " ORDER BY filled_at", (trade.trade_id,)).fetchall()
    assert [r[:6] for r in rows] == [("fill", 1, "-2.40", 1, "2.56", "237.44"),
                                     ("fill", 0, "1.10", 1, "1.28", "-111.28"),  # the short alone
                                     ("settlement", 0, "-5.00", 1, "0.00", "500.00")]  # the wing, no fee
    assert [r[6] for r in rows[1:]] == ['["1.10"]', '["5.00"]']
    pnl, fees, exit_reason = db.execute("SELECT realized_pnl, fees, exit_reason FROM trades").fetchone()
    assert (pnl, fees, exit_reason) == ("626.16", "3.84", "take_profit")
    assert sum(round(float(r[5]) * 100) for r in rows) == 62616  # the rows' cash is the trade's P&L
    legs = db.execute("SELECT occ_symbol, exit_price FROM trade_legs ORDER BY leg").fetchall()
    assert legs == [(S.occ_symbol.strip(), "1.10"), (L.occ_symbol.strip(), "5.00")]
    db.close()


class PositionsSeen(TakeProfitVertical):
    def __init__(self):
        super().__init__()
        self.seen = []

    def decision_times(self):
        return [dt.time(10, 0), dt.time(12, 0)]

    def on_decision_time(self, ctx):
        if ctx.now.time() == dt.time(10, 0):
            super().on_decision_time(ctx)
        elif ctx.today == DAY:
            self.seen.append((ctx.open_trades(), ctx.portfolio.positions(), ctx.portfolio.open_trade_count,
                              ctx._engine.portfolio.liability(), ctx.portfolio.worst_case_loss))


def test_after_the_exit_only_the_wing_is_held_and_the_strategy_sees_no_open_trade():
    market = ModelMarket(DAY, EXP, spot=4720.0, expiries=[EXP], quotes={S: short_quote, L: wing_quote},
                         settlement={EXP: 4680.0})
    strat = PositionsSeen()
    engine = _run(strat, market)
    ((trades, positions, count, liability, worst),) = strat.seen
    assert trades == [] and count == 0  # the exit is done: nothing to manage, no slot taken
    assert positions == {L: 1} and liability == 0.0 and worst == 0.0  # a long put is owed nothing
    (trade,) = engine.portfolio.closed_trades()
    # settles at 4680, above the 4675 wing: worthless, no fee. P&L = 240.00 - 2.56 - 110.00 - 1.28
    assert trade.settlement_cash == 0.0 and round(trade.realized_pnl * 100) == 24000 - 256 - 11000 - 128


# ------------------------------------------------------------------ a condor, both wings no bid
P4600, P4650 = OptionContract("SPXW", EXP, 4600.0, "P"), OptionContract("SPXW", EXP, 4650.0, "P")
C4850, C4900 = OptionContract("SPXW", EXP, 4850.0, "C"), OptionContract("SPXW", EXP, 4900.0, "C")


def _two_phase(before, after, switch=dt.time(12, 0)):
    return lambda ts: before if _at(ts)[0] == DAY and _at(ts)[1] < switch else after


class TimeExitCondor(Strategy):
    name = "condor"

    def decision_times(self):
        return [dt.time(10, 0), dt.time(14, 0)]

    def on_decision_time(self, ctx):
        if ctx.today != DAY:
            return
        if ctx.now.time() == dt.time(10, 0):
            ctx.open_trade([Leg(P4600, 1), Leg(P4650, -1), Leg(C4850, -1), Leg(C4900, 1)], 1)
        else:
            for trade in ctx.open_trades():
                ctx.close_trade(trade, "time_exit")


def test_condor_with_both_wings_no_bid_buys_the_two_shorts_back_as_one_combo():
    quotes = {P4600: _two_phase((0.20, 0.30), (0.00, 0.05)), P4650: _two_phase((1.00, 1.20), (0.40, 0.50)),
              C4850: _two_phase((1.00, 1.20), (0.30, 0.45)), C4900: _two_phase((0.20, 0.30), (0.00, 0.05))}
    market = ModelMarket(DAY, EXP, spot=4750.0, expiries=[EXP], quotes=quotes, settlement={EXP: 4590.0})
    engine = _run(TimeExitCondor(), market)
    entry, exit_ = orders_of(engine)
    # entry: mid 0.25 - 1.10 - 1.10 + 0.25 = -1.70, width 0.60: -1.52 -> -1.50; fees 4 x 1.28 = 5.12
    assert entry.avg_fill_price == -1.50 and entry.fills[0].fees == 5.12
    # 14:00: both wings bid 0.00 -> buy the two shorts back: mid 0.45 + 0.375 = 0.825, width 0.10 + 0.15 = 0.25:
    # 0.825 + 0.075 = 0.90 on the 0.05 complex grid (naturals 0.70 .. 0.95); fees 2 x 1.28 = 2.56
    assert exit_.legs == (Leg(P4650, 1), Leg(C4850, 1)) and exit_.quantity == 1
    (fill,) = exit_.fills
    assert fill.net_price == 0.90 and fill.fees == 2.56
    assert round(sum(fill.leg_prices) * 100) == 90
    assert all(b <= p <= a for p, (b, a) in zip(fill.leg_prices, ((0.40, 0.50), (0.30, 0.45))))
    (trade,) = engine.portfolio.closed_trades()
    # settles at 4590: the 4600 put wing left in the account pays 10.00 x 100; the call wing nothing
    assert trade.settlement_cash == 1000.00 and trade.exit_reason == "time_exit"
    assert round(trade.realized_pnl * 100) == 15000 - 512 - 9000 - 256 + 100000
    assert engine.portfolio.cash_cents == 100_000_00 + 15000 - 512 - 9000 - 256 + 100000
    assert trade.leg_exit_prices[0] == 10.0 and trade.leg_exit_prices[3] == 0.0


# ------------------------------------------------------------------ the same close through the brokers
def _close_order(cid, position, bid, ask, *, at=None):
    """The order ``ctx.close_trade`` sends for ``position`` (legs to buy, negative = sell) on these quotes."""
    from strikebench.engine.broker import closing_order_legs
    from strikebench.options.orders import Order, OrderType

    legs, qty, _ = closing_order_legs(position, bid, ask)
    return Order(cid, legs, qty, order_type=OrderType.MARKET, opens=False, trade_id="T-1", reason="take_profit",
                 created_at=at)


def test_paper_broker_fills_the_short_alone_and_settles_the_wing_and_the_portfolio_agrees(tmp_path):
    from strikebench.brokers.paper import PaperAccount, PaperParams
    from strikebench.calendar import NY
    from strikebench.options.orders import Fill, Order, OrderType
    from strikebench.portfolio import Portfolio

    market = ModelMarket(DAY, EXP, spot=4720.0, expiries=[EXP], quotes={S: short_quote, L: wing_quote},
                         settlement={EXP: 4670.0})
    account = PaperAccount(tmp_path / "paper.sqlite", market=market, fill_model=MidSlippageFill(),
                           commission=CboeRetail(), params=PaperParams(latency_seconds=0))
    book = Portfolio(100_000.0)

    def apply(order):  # what the live runtime does with the broker's fills
        for bf in account.lookup(order.client_id).fills:
            book.apply_fill(order, Fill(bf.fill_id, order.client_id, bf.at, bf.quantity, bf.net_price,
                                        tuple(bf.leg_prices), bf.fees))

    try:
        t = pd.Timestamp("2024-01-10 10:01", tz=NY)  # the 10:00 bar's quotes are in force
        entry = Order("O-1", (Leg(S, -1), Leg(L, 1)), 2, order_type=OrderType.MARKET, opens=True, trade_id="T-1",
                      created_at=t.to_pydatetime())
        account.place(entry, t)
        account.sync(t)
        apply(entry)
        t = pd.Timestamp("2024-01-10 11:31", tz=NY)  # the 11:30 bar: wing 0.00/0.10, short 0.90/1.10
        q = market.leg_quotes([S, L], DAY)
        i = int(q.index_at(pd.Timestamp("2024-01-10 11:30", tz=NY).value))
        position = (Leg(S, 2), Leg(L, -2))
        close = _close_order("T-1-X2", position, q.bid[i], q.ask[i], at=t.to_pydatetime())
        assert close.legs == (Leg(S, 1),) and close.quantity == 2  # one leg, two contracts: not a one-leg combo
        account.place(close, t)
        account.sync(t)
        apply(close)
        (fill,) = account.lookup("T-1-X2").fills
        # 1.00 + 0.30 x 0.20 = 1.06 -> 1.10 on the single-leg grid; fees 2 contracts x 1.28
        assert (fill.quantity, fill.net_price, fill.fees) == (2, 1.10, 2.56)
        assert account.positions() == {L.occ_compact: 2}
        assert {c.occ_compact: n for c, n in book.positions().items()} == account.positions()
        (trade,) = book.open_trades()
        assert trade.partly_closed_at is not None and book.open_trades(exited=False) == []
        account.sync(pd.Timestamp("2024-01-11 16:05", tz=NY))
        book.settle([S, L], {S: 4670.0, L: 4670.0}, pd.Timestamp("2024-01-11 16:00", tz=NY).to_pydatetime())
        # entry -2.40 x 2 = +480.00 - 5.12; exit 1.10 x 2 = -220.00 - 2.56; wing 5.00 x 100 x 2 = +1,000.00
        pnl_cents = 48000 - 512 - 22000 - 256 + 100000
        assert {s.occ: s.cash for s in account.settlements()} == {L.occ_compact: 1000.0}
        assert round(account.balances()["cash"] * 100) == 100_000_00 + pnl_cents
        (trade,) = book.closed_trades()
        assert round(trade.realized_pnl * 100) == pnl_cents and book.cash_cents == 100_000_00 + pnl_cents
    finally:
        account.close()


def test_tradier_receives_a_single_option_order_for_a_one_leg_close_and_a_multileg_for_three(tmp_path):
    from strikebench.brokers.tradier_client import TradierAccount, TradierAPI
    from strikebench.brokers.tradier_loopback import TradierLoopback
    from strikebench.calendar import NY

    now = pd.Timestamp("2024-01-10 11:31", tz=NY)
    with TradierLoopback(token="tok-zb", account="VA0001", now=lambda: now) as server:
        acct = TradierAccount(TradierAPI("tok-zb", "VA0001", base_url=server.url, timeout=2.0, max_rate_wait=3.0),
                              state_path=tmp_path / "state.sqlite", commission=CboeRetail())
        close = _close_order("T-1-X2", (Leg(S, 2), Leg(L, -2)), [0.90, 0.00], [1.10, 0.10])
        acct.place(close, now, tag="zb")
        form = [r for r in server.requests if r[0] == "POST" and r[1].endswith("/orders")][-1][3]
        assert {k: form[k] for k in ("class", "option_symbol", "side", "quantity", "type")} == \
            {"class": "option", "option_symbol": S.occ_compact, "side": "buy_to_close", "quantity": "2",
             "type": "market"}
        server.fill(1000, 2, [1.10])
        (f,) = [e.fill for e in acct.events(0) if e.kind == "fill"]
        assert (f.quantity, f.net_price, f.leg_prices, f.fees) == (2, 1.10, (1.10,), 2.56)
        # a condor with one wing bid 0.00: the other three legs in one multileg order
        condor = (Leg(P4600, -1), Leg(P4650, 1), Leg(C4850, 1), Leg(C4900, -1))
        close3 = _close_order("T-2-X2", condor, [0.00, 0.40, 0.30, 0.05], [0.05, 0.50, 0.45, 0.10])
        acct.place(close3, now, tag="zb")
        form = [r for r in server.requests if r[0] == "POST" and r[1].endswith("/orders")][-1][3]
        assert form["class"] == "multileg" and "option_symbol[3]" not in form
        assert [(form[f"option_symbol[{i}]"], form[f"side[{i}]"]) for i in range(3)] == \
            [(P4650.occ_compact, "buy_to_close"), (C4850.occ_compact, "buy_to_close"),
             (C4900.occ_compact, "sell_to_close")]


def test_ibkr_receives_the_single_option_not_a_one_leg_bag(tmp_path):
    from fake_tws import FakeTWS

    from strikebench.brokers.ibkr import IBKRAccount, IBKRParams

    now = dt.datetime(2024, 1, 10, 16, 31, tzinfo=dt.timezone.utc)
    with FakeTWS() as tws:
        con = tws.option("SPX", "SPXW", "20240111", 4700.0, "P")
        tws.option("SPX", "SPXW", "20240111", 4675.0, "P")
        broker = IBKRAccount(IBKRParams(port=tws.port, client_id=23, account="DU1234567", timeout_seconds=2.0),
                             tmp_path / "ibkr.sqlite")
        try:
            broker.place(_close_order("T-1-X2", (Leg(S, 2), Leg(L, -2)), [0.90, 0.00], [1.10, 0.10]), now, tag="zb")
            (o,) = tws.live_orders()
            assert o["contract"]["secType"] == "OPT" and int(o["contract"]["conId"]) == con
            assert (o["action"], o["qty"], o["order_type"]) == ("BUY", 2, "MKT")
            tws.fill(o["order_id"], 2, [1.10])
            end = time.monotonic() + 5.0
            while not any(e.kind == "fill" for e in broker.events(0)) and time.monotonic() < end:
                time.sleep(0.01)
            (f,) = [e.fill for e in broker.events(0) if e.kind == "fill"]
            assert (f.quantity, f.net_price, f.leg_prices, f.fees) == (2, 1.10, (1.10,), 1.30)  # 2 x 0.65 at TWS
        finally:
            broker.close()


def test_which_legs_a_close_leaves_out():
    from strikebench.options.fills import left_legs

    closing = [1, -1]  # buy the short back, sell the long wing
    assert left_legs(closing, [0.90, 0.00], [1.10, 0.10]).tolist() == [False, True]
    assert left_legs(closing, [0.90, 0.05], [1.10, 0.10]).tolist() == [False, False]  # tradeable whole
    assert left_legs(closing, [float("nan"), 0.00], [1.10, 0.10]).tolist() == [False, False]  # nothing trades
    assert left_legs(closing, [0.90, 0.00], [1.10, float("nan")]).tolist() == [False, False]  # wing unquoted
    assert left_legs(closing, [0.90, 0.20], [1.10, 0.10]).tolist() == [False, False]  # wing crossed
    assert left_legs([-1, -1], [0.00, 0.00], [0.05, 0.05]).tolist() == [False, False]  # nothing would remain
    # per minute (rows), as the exit curve asks: only the rows where the wing is bid 0.00
    rows = left_legs(closing, [[0.90, 0.05], [0.90, 0.00]], [[1.10, 0.10], [1.10, 0.10]])
    assert rows.tolist() == [[False, False], [False, True]]


def test_a_partly_closed_trade_shows_its_exit_and_the_wing_in_the_panel_and_the_dashboard(tmp_path):
    """Open P&L of a partly closed trade = entry premium - exit premium + the wing's mark (fees left out), not
    the whole combo's mark against the entry (which would price the short already bought back at its mid)."""
    import json

    from strikebench.dashboard.sources import LiveSource

    seen = {}

    class Watch(TakeProfitVertical):
        name = "tp_vertical"

        def decision_times(self):
            return [dt.time(10, 0), dt.time(14, 0)]

        def on_decision_time(self, ctx):
            if ctx.now.time() == dt.time(10, 0):
                super().on_decision_time(ctx)
            else:
                engine, (t,) = ctx._engine, ctx._engine.portfolio.open_trades()
                held = engine.portfolio.legs_open(t.trade_id)
                seen.update(held=held, flow=engine.portfolio.premium_flow(t.trade_id),
                            value=engine.broker.held_value(t, held), holdings=engine.portfolio.open_holdings())

    market = ModelMarket(DAY, DAY, spot=4720.0, expiries=[EXP], quotes={S: short_quote, L: wing_quote})
    folder = tmp_path / "zb"
    folder.mkdir()
    engine = _run(Watch(), market, folder / "journal.sqlite")
    # by hand: credit 2.40 in, the short bought back at 1.10 at 11:30; at 14:00 the wing is 0.05/0.10, mid 0.075
    assert seen["held"] == [0, 1]
    # what the broker's marks read: the trade with its combos held per leg, a tuple
    assert [(x.trade_id, h) for x, h in seen["holdings"]] == [(engine.portfolio.all_trades()[0].trade_id, (0, 1))]
    assert type(seen["holdings"][0][1]) is tuple
    assert round(seen["flow"] * 100) == 24000 - 11000 and seen["value"] == pytest.approx(0.075, abs=1e-12)
    (trade,) = engine.portfolio.open_trades()
    assert trade.partly_closed_at is not None
    # the dashboard: the journal's fills + the positions the runtime publishes (the wing alone, at its mid)
    mark = 0.075
    db = sqlite3.connect(folder / "journal.sqlite")
    db.execute("INSERT INTO live_state(run_id, key, value) VALUES (?, ?, ?)", ("zb", "positions", json.dumps(
        {"at": "2024-01-10T15:59:00-05:00", "spot": 4720.0, "trades": [
            {"trade_id": trade.trade_id, "strategy": "tp_vertical", "contracts": 1,
             "legs": [{"occ": L.occ_compact, "ratio": 1, "multiplier": 100, "mark": mark, "greeks": None}]}]})))
    db.commit()
    db.close()
    src = LiveSource(folder, account=False, run_id="zb")
    src.poll()
    view = src.view()
    (row,) = view["open"]
    assert round(row["unrealized"] * 100) == 24000 - 11000 + 750  # +137.50
    assert round(view["unrealized_pnl"] * 100) == 13750
