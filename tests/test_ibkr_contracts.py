"""IBKR mapping, no socket: contracts, the BAG sign convention both ways, statuses, fills from executions."""

import datetime as dt

import pytest

from strikebench.brokers.ibkr_contracts import (
    ExecRecord,
    assemble_fills,
    index_fields,
    vix_future_fields,
    combo_legs,
    map_status,
    missing_greek,
    net_from_ib,
    occ_from_ib,
    option_fields,
    order_fields,
)
from strikebench.options.contracts import OptionContract
from strikebench.options.orders import Leg, Order, OrderError, OrderType, TimeInForce

T = dt.datetime(2024, 3, 4, 10, 31, tzinfo=dt.timezone.utc)
SP = OptionContract.make("SPXW", "2024-03-08", 5000, "P")
LP = OptionContract.make("SPXW", "2024-03-08", 4990, "P")


def _put_spread(limit, qty=2, client_id="run-1-o1"):
    return Order(client_id=client_id, legs=(Leg(SP, -1), Leg(LP, 1)), quantity=qty, limit_price=limit,
                 tif=TimeInForce.DAY)


def test_option_fields_qualify_by_trading_class():
    f = option_fields(SP)
    assert f == dict(secType="OPT", symbol="SPX", lastTradeDateOrContractMonth="20240308", strike=5000.0, right="P",
                     multiplier="100", exchange="CBOE", currency="USD", tradingClass="SPXW")
    monthly = option_fields(OptionContract.make("SPX", "2024-03-15", 5000, "C"))
    assert (monthly["symbol"], monthly["tradingClass"]) == ("SPX", "SPX")  # AM monthly: not SPXW
    xsp = option_fields(OptionContract.make("XSP", "2024-03-08", 500, "C"))
    assert (xsp["symbol"], xsp["tradingClass"], xsp["multiplier"]) == ("XSP", "XSP", "100")
    vix = option_fields(OptionContract.make("VIX", "2024-03-20", 15, "C"))
    assert (vix["symbol"], vix["tradingClass"], vix["strike"]) == ("VIX", "VIX", 15.0)


def test_index_and_vix_future_fields():
    assert index_fields("SPX") == dict(secType="IND", symbol="SPX", exchange="CBOE", currency="USD")
    fut = vix_future_fields(dt.date(2024, 3, 20))
    assert (fut["secType"], fut["exchange"], fut["multiplier"], fut["lastTradeDateOrContractMonth"]) == \
        ("FUT", "CFE", "1000", "20240320")


def test_occ_round_trip_and_non_options():
    for c in (SP, LP, OptionContract.make("SPX", "2024-03-15", 5025, "C"),
              OptionContract.make("VIX", "2024-03-20", 17.5, "C")):
        f = option_fields(c)
        back = occ_from_ib("OPT", f["symbol"], f["lastTradeDateOrContractMonth"], f["strike"], f["right"],
                           f["tradingClass"])
        assert back == c and back.occ_compact == c.occ_compact
    assert occ_from_ib("BAG", "SPX", "", 0, "", "") is None
    assert occ_from_ib("OPT", "SPY", "20240308", 500, "C", "SPYX") is None  # unknown class: not guessed


def test_credit_spread_is_a_buy_at_a_negative_limit():
    # sold for 1.20 credit: strikebench net -1.20 -> IB BUY of (SELL short put, BUY long put) at -1.20
    o = _put_spread(-1.20)
    assert combo_legs(o) == [(SP, "SELL", 1), (LP, "BUY", 1)]
    f = order_fields(o)
    assert (f["action"], f["totalQuantity"], f["orderType"], f["lmtPrice"], f["tif"], f["orderRef"]) == \
        ("BUY", 2.0, "LMT", -1.20, "DAY", "run-1-o1")
    # IB's rule: combo price = sum(sign x ratio x leg price); legs filled at 3.10 (sold) and 1.90 (bought)
    assert round(-1 * 3.10 + 1 * 1.90, 2) == f["lmtPrice"]


def test_debit_close_is_a_buy_at_a_positive_limit():
    close = Order(client_id="c", legs=(Leg(SP, 1), Leg(LP, -1)), quantity=1, limit_price=0.55,
                  tif=TimeInForce.GTC)
    assert combo_legs(close) == [(SP, "BUY", 1), (LP, "SELL", 1)]
    f = order_fields(close)
    assert (f["action"], f["lmtPrice"], f["tif"]) == ("BUY", 0.55, "GTC")


def test_off_cent_limit_is_refused_not_rounded():
    o = _put_spread(-1.20)
    o.limit_price = -1.203  # Order itself puts limits on the grid; the mapping does not trust that blindly
    with pytest.raises(OrderError, match="not a whole cent"):
        order_fields(o)


def test_read_back_both_directions():
    assert net_from_ib("BOT", -1.20) == -1.20  # our BUY at a credit
    assert net_from_ib("SLD", 1.20) == -1.20  # the same spread entered by hand as a SELL at 1.20
    assert net_from_ib("SELL", -0.55) == 0.55
    assert net_from_ib("BUY", 0.55) == 0.55


def test_market_and_single_leg_and_bad_ratios():
    mkt = Order(client_id="m", legs=(Leg(SP, -1), Leg(LP, 1)), quantity=3, order_type=OrderType.MARKET)
    f = order_fields(mkt)
    assert f["orderType"] == "MKT" and "lmtPrice" not in f and f["totalQuantity"] == 3.0
    single = Order(client_id="s", legs=(Leg(SP, -1),), quantity=2, limit_price=-3.10)
    f = order_fields(single)  # one option: IB's plain form, SELL 2 at 3.10
    assert (f["action"], f["totalQuantity"], f["lmtPrice"]) == ("SELL", 2.0, 3.10)
    bwb = Order(client_id="b", legs=(Leg(SP, 1), Leg(LP, -2), Leg(OptionContract.make("SPXW", "2024-03-08", 4970,
                                                                                       "P"), 1)), quantity=1,
                limit_price=0.40)
    assert [(a, r) for _, a, r in combo_legs(bwb)] == [("BUY", 1), ("SELL", 2), ("BUY", 1)]


@pytest.mark.parametrize("ib,filled,qty,err,want", [
    ("PendingSubmit", 0, 2, None, "submitted"), ("PreSubmitted", 0, 2, None, "accepted"),
    ("Submitted", 0, 2, None, "accepted"), ("Submitted", 1, 2, None, "partially_filled"),
    ("Filled", 2, 2, None, "filled"), ("Cancelled", 1, 2, None, "cancelled"),
    ("ApiCancelled", 0, 2, None, "cancelled"), ("Inactive", 0, 2, None, "rejected"),
    ("Cancelled", 0, 2, 201, "rejected"), ("PendingCancel", 0, 2, None, "accepted"),
])
def test_statuses(ib, filled, qty, err, want):
    assert map_status(ib, filled=filled, quantity=qty, error_code=err) == want


def _x(eid, sec, con, side, shares, price, comm=None, minute=0):
    return ExecRecord(eid, sec, con, side, shares, price, T + dt.timedelta(minutes=minute), comm)


LEGS = [(101, -1), (102, 1)]


def test_bag_fill_from_leg_and_bag_executions():
    execs = [_x("L1", "OPT", 101, "SLD", 2, 3.10, 1.30), _x("L2", "OPT", 102, "BOT", 2, 1.90, 1.30),
             _x("B", "BAG", 28812380, "BOT", 2, -1.20, 0.0)]
    (f,) = assemble_fills(LEGS, execs)
    assert (f.fill_id, f.quantity, f.net_price, f.leg_prices, f.fees) == ("B", 2, -1.20, (3.10, 1.90), 2.60)
    assert round(-1 * f.leg_prices[0] + 1 * f.leg_prices[1], 2) == f.net_price


def test_partial_fills_wait_for_legs_and_commissions():
    # 1 of 3 filled, then 2 more; the second BAG execution came before its second leg and before its reports
    execs = [_x("L1a", "OPT", 101, "SLD", 1, 3.10, 1.0), _x("L2a", "OPT", 102, "BOT", 1, 1.90, 1.0),
             _x("Ba", "BAG", 0, "BOT", 1, -1.20, 0.0, 0),
             _x("Bb", "BAG", 0, "BOT", 2, -1.15, None, 3), _x("L1b", "OPT", 101, "SLD", 2, 3.05, 2.0)]
    fills = assemble_fills(LEGS, execs)
    assert [f.fill_id for f in fills] == ["Ba"]  # Bb waits: leg 102 has 1 share of 3, and no BAG report
    execs += [_x("L2b", "OPT", 102, "BOT", 2, 1.90, None), _x("Bb", "BAG", 0, "BOT", 2, -1.15, 0.0, 3)]
    assert [f.fill_id for f in assemble_fills(LEGS, execs)] == ["Ba"]  # L2b's report is still missing
    execs[-2] = _x("L2b", "OPT", 102, "BOT", 2, 1.90, 2.0)
    execs[3] = execs.pop()  # Bb's report arrived (replaces the record)
    a, b = assemble_fills(LEGS, execs)
    assert (b.quantity, b.net_price, b.leg_prices, b.fees) == (2, -1.15, (3.05, 1.90), 4.0)
    assert a.fees + b.fees == 6.0


def test_duplicated_and_split_leg_executions_count_once():
    once = [_x("L1", "OPT", 101, "SLD", 2, 3.10, 1.3), _x("L2a", "OPT", 102, "BOT", 1, 1.85, 0.65),
            _x("L2b", "OPT", 102, "BOT", 1, 1.95, 0.65), _x("B", "BAG", 0, "BOT", 2, -1.20, 0.0)]
    execs = [e for e in once for _ in (1, 2)]  # every message twice (a replay after a reconnect)
    (f,) = assemble_fills(LEGS, execs)
    assert (f.quantity, f.leg_prices, f.fees) == (2, (3.10, 1.90), 2.60)  # 1.85 and 1.95 -> 1.90


def test_missing_greeks():
    assert missing_greek("delta", -2.0) and missing_greek("vega", -2.0) and missing_greek("impliedVol", -1.0)
    assert not missing_greek("delta", -1.0)  # a deep put's delta is a value
    assert missing_greek("gamma", float("nan")) and missing_greek("theta", None) and missing_greek("delta", 1.8e308)
    assert not missing_greek("theta", -0.75)
