"""The Tradier client and broker against a loopback server speaking Tradier's REST API (issue 17).

Every test drives the real client (requests over 127.0.0.1) against
:class:`strikebench.brokers.tradier_loopback.TradierLoopback`: documented paths, form-encoded bodies, the
one-element-is-an-object and ``null``-for-empty quirks, rate-limit headers. Expected prices are worked out by
hand from the executions the test states."""

from __future__ import annotations

import datetime as dt
import re
import time

import pandas as pd
import pytest

from strikebench.brokers.tradier_client import (
    TradierAccount,
    TradierAPI,
    TradierAuthError,
    as_list,
    order_tag,
)
from strikebench.brokers.tradier_loopback import TradierLoopback
from strikebench.calendar import NY
from strikebench.live.broker_api import BrokerUnavailable
from strikebench.options.contracts import OptionContract
from strikebench.options.orders import Leg, Order, OrderType, TimeInForce
from strikebench.plugins.commissions import CboeRetail

TOKEN = "tok-9f8e7d6c5b4a-secret"
ACCT = "VA000001"
ORDERS = f"/v1/accounts/{ACCT}/orders"
NOW = pd.Timestamp("2023-01-03 10:00", tz=NY)
SHORT, LONG = "SPXW230106P03800000", "SPXW230106P03775000"


def vertical(cid="O-credit_vertical-20230103T1000-1-abc", qty=2, limit=-1.25, opens=True) -> Order:
    legs = (Leg(OptionContract.from_occ(SHORT), -1), Leg(OptionContract.from_occ(LONG), 1))
    if not opens:
        legs = tuple(leg.reversed() for leg in legs)
    return Order(client_id=cid, legs=legs, quantity=qty, order_type=OrderType.LIMIT, limit_price=limit,
                 tif=TimeInForce.DAY, opens=opens)


@pytest.fixture
def server():
    with TradierLoopback(token=TOKEN, account=ACCT, now=lambda: NOW) as s:
        yield s


def account(server, tmp_path, *, timeout=2.0, name="state.sqlite", token=TOKEN, acct=ACCT, commission=None):
    api = TradierAPI(token, acct, base_url=server.url, timeout=timeout, max_rate_wait=3.0)
    return TradierAccount(api, state_path=tmp_path / name, commission=commission)


def posts(server):
    return [r for r in server.requests if r[0] == "POST" and r[1] == ORDERS]


def test_parsing_quirks():
    assert as_list(None) == [] and as_list("null") == [] and as_list({"a": 1}) == [{"a": 1}]
    assert as_list([{"a": 1}, {"a": 2}]) == [{"a": 1}, {"a": 2}]


def test_multileg_form_is_a_form_body_with_every_documented_field(server, tmp_path):
    acct = account(server, tmp_path)
    ack = acct.place(vertical(), NOW, tag="acct-run")
    (method, path, query, form), = posts(server)
    assert query == ""  # nothing in the query string (tradier-python 0.1.3 put it there)
    tag = order_tag(vertical().client_id, "acct-run")
    assert form == {"class": "multileg", "symbol": "SPX", "type": "credit", "price": "1.25", "duration": "day",
                    "option_symbol[0]": SHORT, "side[0]": "sell_to_open", "quantity[0]": "2",
                    "option_symbol[1]": LONG, "side[1]": "buy_to_open", "quantity[1]": "2", "tag": tag}
    assert re.fullmatch(r"[A-Za-z0-9-]{1,255}", tag) and ack.broker_id == "1000" and not ack.duplicate
    # a closing debit, a market order, GTC
    acct.place(vertical("T1-X2", qty=1, limit=0.35, opens=False), NOW, tag="acct-run")
    f = posts(server)[-1][3]
    assert (f["type"], f["price"], f["side[0]"], f["side[1]"]) == ("debit", "0.35", "buy_to_close", "sell_to_close")
    o = Order(client_id="T1-X3", legs=vertical().legs, quantity=1, order_type=OrderType.MARKET, tif=TimeInForce.GTC)
    acct.place(o, NOW, tag="acct-run")
    f = posts(server)[-1][3]
    assert f["type"] == "market" and "price" not in f and f["duration"] == "gtc"


def test_partial_fills_become_fills_at_the_increments_prices(server, tmp_path):
    """Leg executions 1 @ 2.10/0.80 then 1 @ 2.00/0.80: fills of -1.30 and -1.20 (not the running average -1.25)."""
    acct = account(server, tmp_path, commission=CboeRetail())
    order = vertical()
    acct.place(order, NOW, tag="r")
    server.fill(1000, 1, [2.10, 0.80])
    ev = acct.events(0)
    (f1,) = [e.fill for e in ev if e.kind == "fill"]
    assert (f1.fill_id, f1.quantity, f1.net_price, f1.leg_prices) == ("tradier-1000-1", 1, -1.30, (2.10, 0.80))
    assert f1.fees == 2 * (0.65 + 0.60 + 0.03)  # cboe_retail: two SPXW contracts
    assert acct.lookup(order.client_id).status == "partially_filled"
    server.fill(1000, 1, [2.00, 0.80])
    ev2 = acct.events(ev[-1].seq)
    fills = [e.fill for e in ev2 if e.kind == "fill"]
    assert [(f.fill_id, f.quantity, f.net_price, f.leg_prices) for f in fills] == \
        [("tradier-1000-2", 1, -1.20, (2.00, 0.80))]
    assert [e.status for e in ev2 if e.kind == "status"] == ["filled"]
    b = acct.lookup(order.client_id)
    assert (b.status, b.filled_quantity, [f.fill_id for f in b.fills]) == ("filled", 2, ["tradier-1000-1",
                                                                                         "tradier-1000-2"])
    assert [e.event_id for e in acct.events(0)] == [e.event_id for e in ev + ev2]  # polled again: nothing new


@pytest.mark.parametrize("fault", ["drop", "slow", "500_after", "garbled"])
def test_reply_lost_after_the_order_was_accepted_is_looked_up_never_resent(server, tmp_path, fault):
    acct = account(server, tmp_path, timeout=0.4)
    server.fault("POST", ORDERS, fault, delay=1.0)
    order = vertical()
    with pytest.raises(BrokerUnavailable, match="outcome unknown"):
        acct.place(order, NOW, tag="r")
    assert server.posted_orders == 1
    found = acct.lookup(order.client_id)  # what the runtime does after any doubt
    assert found is not None and found.broker_id == "1000"
    ack = acct.place(order, NOW, tag="r")  # and a second place of the same id sends nothing
    assert ack.duplicate and ack.broker_id == "1000"
    assert server.posted_orders == 1 and len(posts(server)) == 1


def test_500_before_processing_then_lookup_then_one_order(server, tmp_path):
    acct = account(server, tmp_path)
    server.fault("POST", ORDERS, "500")
    order = vertical()
    with pytest.raises(BrokerUnavailable):
        acct.place(order, NOW, tag="r")
    assert server.posted_orders == 0 and acct.lookup(order.client_id) is None
    assert acct.place(order, NOW, tag="r").broker_id == "1000"  # looked up: none there, so it is sent
    assert server.posted_orders == 1


def test_429_waits_for_the_window_and_the_order_is_placed_once(server, tmp_path):
    server.rate_window = 0.3
    server._window_start = time.time()
    acct = account(server, tmp_path)
    server.fault("POST", ORDERS, "429")
    t0 = time.monotonic()
    ack = acct.place(vertical(), NOW, tag="r")
    assert ack.broker_id == "1000" and server.posted_orders == 1 and len(posts(server)) == 2
    assert time.monotonic() - t0 < 2.0


def test_rate_limit_headers_pace_requests_before_a_429(server, tmp_path):
    server.rate_allowed, server.rate_window = 2, 0.5
    server._window_start = time.time()
    acct = account(server, tmp_path)
    for _ in range(4):
        acct.positions()
    assert acct.api.rate["allowed"] == "2"
    codes_429 = [r for r in server.requests if r[1].endswith("/positions")]
    assert len(codes_429) == 4  # paced: the client waited for the window instead of meeting a 429 it must retry


def test_bad_token_and_foreign_account_are_one_line_naming_the_variable(server, tmp_path):
    acct = account(server, tmp_path, token="wrong-token-123456")
    with pytest.raises(TradierAuthError) as e:
        acct.positions()
    msg = str(e.value)
    assert "TRADIER_TOKEN" in msg and "401" in msg and "\n" not in msg and "wrong-token" not in msg
    acct = account(server, tmp_path, acct="VA999999", name="s2.sqlite")
    with pytest.raises(TradierAuthError, match="TRADIER_ACCOUNT"):
        acct.balances()


def test_rejected_multileg_at_placement_and_after_acceptance(server, tmp_path):
    acct = account(server, tmp_path)
    server.fault("POST", ORDERS, "errors")
    order = vertical()
    ack = acct.place(order, NOW, tag="r")
    assert ack.status == "rejected" and "Insufficient buying power" in ack.reason
    (ev,) = acct.events(0)
    assert (ev.kind, ev.status, ev.client_id) == ("status", "rejected", order.client_id)
    assert acct.lookup(order.client_id).status == "rejected"
    assert acct.place(order, NOW, tag="r").duplicate and len(posts(server)) == 1  # never sent again
    # accepted, then rejected by the broker's risk check
    o2 = vertical("O-2")
    acct.place(o2, NOW, tag="r")
    assert [(e.status, e.client_id) for e in acct.events(ev.seq)] == [("accepted", "O-2")]
    server.set_status(1000, "rejected", "Order rejected: margin")
    evs = [e for e in acct.events(ev.seq) if e.client_id == "O-2"]
    assert [(e.kind, e.status, e.reason) for e in evs] == [("status", "accepted", ""),
                                                           ("status", "rejected", "Order rejected: margin")]


def test_restart_with_a_working_order_finds_it_and_its_fills_once(server, tmp_path):
    order = vertical()
    a1 = account(server, tmp_path)
    a1.place(order, NOW, tag="r")
    server.fill(1000, 1, [2.10, 0.80])
    first = [e.fill.fill_id for e in a1.events(0) if e.fill]
    a1.close()
    a2 = account(server, tmp_path)  # the same state file: the same events, nothing new
    assert [e.fill.fill_id for e in a2.events(0) if e.fill] == first == ["tradier-1000-1"]
    a3 = account(server, tmp_path, name="lost.sqlite")  # the state file lost: found by its tag, same fill ids
    found = a3.lookup(order.client_id)
    assert (found.broker_id, found.status, [f.fill_id for f in found.fills], found.fills[0].net_price) == \
        ("1000", "partially_filled", ["tradier-1000-1"], -1.30)
    assert a3.place(order, NOW, tag="r").duplicate and server.posted_orders == 1
    assert [o.client_id for o in a3.orders("r")] == [order.client_id]  # the run's orders, by the tag's run part
    assert a3.orders("another-run") == []


def test_cancel_and_modify(server, tmp_path):
    acct = account(server, tmp_path)
    order = vertical()
    acct.place(order, NOW, tag="r")
    assert acct.modify(order.client_id, limit_price=-1.10)
    put = [r for r in server.requests if r[0] == "PUT"][-1]
    assert put[2] == "" and put[3] == {"type": "credit", "price": "1.10"} and server.orders[1000]["price"] == 1.10
    assert acct.cancel(order.client_id, NOW)
    assert [r[0] for r in server.requests if r[1] == f"{ORDERS}/1000"][-1] == "DELETE"
    assert [e.status for e in acct.events(0) if e.kind == "status"][-1] == "cancelled"
    assert not acct.cancel(order.client_id, NOW)  # finished: nothing sent
    assert [r[0] for r in server.requests].count("DELETE") == 1


def test_positions_and_balances_shapes(server, tmp_path):
    acct = account(server, tmp_path)
    assert acct.positions() == {}  # "null": reported and flat
    server.positions = {SHORT: -2}
    assert acct.positions() == {SHORT: -2}  # one position: a bare object
    server.positions = {SHORT: -2, LONG: 2}
    assert acct.positions() == {SHORT: -2, LONG: 2}
    b = acct.balances()
    assert (b["cash"], b["option_buying_power"]) == (100_000.0, 50_000.0)


def test_the_token_is_nowhere_in_state_or_errors(server, tmp_path):
    acct = account(server, tmp_path, timeout=0.3)
    server.fault("POST", ORDERS, "slow", delay=0.8)
    with pytest.raises(BrokerUnavailable) as e:
        acct.place(vertical(), NOW, tag="r")
    assert TOKEN not in str(e.value)
    acct.lookup(vertical().client_id)
    acct.close()
    for f in tmp_path.iterdir():
        assert TOKEN.encode() not in f.read_bytes()
