"""The ibkr broker against a loopback TWS speaking the socket protocol, driven by the real ib_async client.

Each scenario ends consistent: the mirror's fills equal TWS's executions (one per leg + one per BAG, with
commissions), each event applies once, and TWS holds exactly one order per client id."""

import datetime as dt
import time

import pytest

from fake_tws import FakeTWS
from strikebench.brokers.ibkr import IBKRAccount, IBKRBroker, IBKRParams
from strikebench.errors import StrikebenchError
from strikebench.live.broker_api import BrokerUnavailable
from strikebench.options.contracts import OptionContract
from strikebench.options.orders import Leg, Order, TimeInForce

NOW = dt.datetime(2024, 3, 4, 10, 31, tzinfo=dt.timezone.utc)
SP = OptionContract.make("SPXW", "2024-03-08", 5000, "P")
LP = OptionContract.make("SPXW", "2024-03-08", 4990, "P")


@pytest.fixture
def tws():
    with FakeTWS() as t:
        t.sp = t.option("SPX", "SPXW", "20240308", 5000.0, "P")
        t.lp = t.option("SPX", "SPXW", "20240308", 4990.0, "P")
        yield t


def _params(tws, **kw):
    return IBKRParams(port=tws.port, client_id=kw.pop("client_id", 17), account=kw.pop("account", "DU1234567"),
                      timeout_seconds=kw.pop("timeout_seconds", 2.0), **kw)


@pytest.fixture
def broker(tws, tmp_path):
    b = IBKRAccount(_params(tws), tmp_path / "ibkr_orders.sqlite")
    yield b
    b.close()


def _spread(cid="O-d1-abc", qty=3, limit=-1.20):
    return Order(client_id=cid, legs=(Leg(SP, -1), Leg(LP, 1)), quantity=qty, limit_price=limit, tif=TimeInForce.DAY)


def _until(broker, pred, timeout=5.0):
    end = time.monotonic() + timeout
    while True:
        evs = broker.events(0)
        if pred(evs):
            return evs
        if time.monotonic() > end:
            raise AssertionError(f"not reached; events: {[(e.kind, e.status, e.fill_id if e.fill else '') for e in evs]}")
        time.sleep(0.01)


def _fills(evs):
    return [e.fill for e in evs if e.kind == "fill"]


def test_place_partial_fills_then_filled(tws, broker):
    ack = broker.place(_spread(), NOW, tag="run1")
    assert (ack.status, ack.duplicate) == ("accepted", False)
    (o,) = tws.live_orders()
    # what TWS received: one BUY of a BAG (SELL 1 x 5000P, BUY 1 x 4990P) at -1.20, orderRef = client id
    assert (o["action"], o["qty"], o["order_type"], o["lmt"], o["tif"], o["ref"]) == \
        ("BUY", 3, "LMT", -1.20, "DAY", "O-d1-abc")
    assert [(leg["conId"], leg["ratio"], leg["action"]) for leg in o["legs"]] == \
        [(tws.sp, 1, "SELL"), (tws.lp, 1, "BUY")]
    tws.fill(o["order_id"], 1, [3.10, 1.90])
    evs = _until(broker, lambda e: len(_fills(e)) == 1)
    f = _fills(evs)[0]
    # hand-derived: net = -1 x 3.10 + 1 x 1.90 = -1.20; fees = 2 legs x 1 contract x 0.65 + BAG 0.00
    assert (f.quantity, f.net_price, f.leg_prices, f.fees) == (1, -1.20, (3.10, 1.90), 1.30)
    assert broker.lookup("O-d1-abc").status == "partially_filled"
    tws.fill(o["order_id"], 2, [3.00, 1.85], order="bag-first")
    evs = _until(broker, lambda e: any(x.status == "filled" for x in e))
    fills = _fills(evs)
    assert [(x.quantity, x.net_price, x.leg_prices, x.fees) for x in fills] == \
        [(1, -1.20, (3.10, 1.90), 1.30), (2, -1.15, (3.00, 1.85), 2.60)]
    kinds = [(e.kind, e.status) for e in evs]
    assert kinds.index(("status", "filled")) > max(i for i, k in enumerate(kinds) if k[0] == "fill")
    assert [e.seq for e in evs] == sorted(e.seq for e in evs) and len({e.event_id for e in evs}) == len(evs)
    b = broker.lookup("O-d1-abc")
    assert (b.status, b.filled_quantity, len(b.fills), b.tag) == ("filled", 3, 2, "run1")
    assert broker.positions() == {SP.occ_compact: -3, LP.occ_compact: 3}
    # TWS's cash moved by the executions: +1.20 x 100 + 1.15 x 2 x 100 credit, minus 6 x 0.65 commissions
    assert broker.balances()["cash"] == round(100_000 + 120 + 230 - 3.90, 2)


def test_same_client_id_twice_places_one_order(tws, broker):
    broker.place(_spread(), NOW)
    again = broker.place(_spread(), NOW)
    assert again.duplicate and len(tws.live_orders()) == 1


def test_cancel_after_a_partial_fill(tws, broker):
    broker.place(_spread(qty=2), NOW)
    (o,) = tws.live_orders()
    tws.fill(o["order_id"], 1, [3.10, 1.90])
    _until(broker, lambda e: len(_fills(e)) == 1)
    assert broker.cancel("O-d1-abc", NOW) is True
    evs = _until(broker, lambda e: any(x.status == "cancelled" for x in e))
    assert [e.status for e in evs if e.kind == "status"] == ["submitted", "accepted", "partially_filled", "cancelled"]
    b = broker.lookup("O-d1-abc")
    assert (b.status, b.filled_quantity, b.cancel_requested) == ("cancelled", 1, True)
    assert broker.cancel("O-d1-abc", NOW) is False  # finished: nothing sent
    assert broker.cancel("never-placed", NOW) is False


def test_duplicated_execution_messages_book_once(tws, broker):
    tws.duplicate_executions = True
    broker.place(_spread(qty=2), NOW)
    (o,) = tws.live_orders()
    tws.fill(o["order_id"], 2, [3.10, 1.90])
    evs = _until(broker, lambda e: any(x.status == "filled" for x in e))
    assert [(f.quantity, f.fees) for f in _fills(evs)] == [(2, 2.60)]
    assert broker.positions() == {SP.occ_compact: -2, LP.occ_compact: 2}


def test_fill_waits_for_its_commission_reports(tws, broker):
    broker.place(_spread(qty=1), NOW)
    (o,) = tws.live_orders()
    execs = tws.fill(o["order_id"], 1, [3.10, 1.90], commission_reports=False)
    time.sleep(0.1)
    assert _fills(broker.events(0)) == [] and broker.lookup("O-d1-abc").status == "accepted"
    with tws.lock:
        for conn in tws._conns_of(o):
            for e in execs:
                tws._send_commission(conn, e)
    assert [f.fees for f in _fills(_until(broker, lambda e: any(x.status == "filled" for x in e)))] == [1.30]


def test_rejection_is_one_line_with_the_code(tws, broker):
    tws.reject_next = (201, "Order rejected - reason:YOUR ORDER IS NOT ACCEPTED. IN ORDER TO OBTAIN THE DESIRED "
                            "POSITION YOUR EQUITY WITH LOAN VALUE [1000.00 USD] MUST EXCEED THE INITIAL MARGIN")
    ack = broker.place(_spread(), NOW)
    assert ack.status == "rejected" and ack.reason.startswith("IB 201: Order rejected") and "\n" not in ack.reason
    evs = broker.events(0)
    assert [(e.status, e.reason[:6]) for e in evs] == [("submitted", ""), ("rejected", "IB 201")]


def test_disconnect_mid_order_then_reconnect(tws, broker):
    broker.place(_spread(qty=2), NOW)
    (o,) = tws.live_orders()
    tws.drop()  # TWS's nightly restart: the socket goes, the order stays working
    tws.fill(o["order_id"], 1, [3.10, 1.90])  # ... and fills while we are away
    with pytest.raises(BrokerUnavailable):
        for _ in range(50):
            broker.events(0)
            time.sleep(0.01)
    evs = _until(broker, lambda e: len(_fills(e)) == 1)  # reconnected: reqExecutions replays what it missed
    assert _fills(evs)[0].net_price == -1.20 and broker.s.connects == 2
    tws.fill(o["order_id"], 1, [3.00, 1.85])
    evs = _until(broker, lambda e: any(x.status == "filled" for x in e))
    assert [f.quantity for f in _fills(evs)] == [1, 1] and len(tws.live_orders()) == 1
    assert broker.place(_spread(qty=2), NOW).duplicate  # still one order


def test_slow_ack_then_lookup_then_resend_is_one_order(tws, tmp_path):
    broker = IBKRAccount(_params(tws, timeout_seconds=0.3), tmp_path / "o.sqlite")
    tws.hold_acks = True
    with pytest.raises(BrokerUnavailable, match="no acknowledgement"):
        broker.place(_spread(), NOW)
    tws.release_acks()
    end = time.monotonic() + 5
    while broker.lookup("O-d1-abc") is None:  # the runtime's look-up by client id finds it once TWS answers
        assert time.monotonic() < end
        time.sleep(0.01)
    ack = broker.place(_spread(), NOW)  # the runtime's second attempt
    assert len(tws.live_orders()) == 1
    assert ack.duplicate or ack.broker_id == str(tws.live_orders()[0]["order_id"])
    broker.close()


def test_never_arrived_is_none_and_resend_reuses_the_order_id(tws, tmp_path):
    broker = IBKRAccount(_params(tws, timeout_seconds=0.3), tmp_path / "o.sqlite")
    tws.hold_acks = True
    with pytest.raises(BrokerUnavailable):
        broker.place(_spread(), NOW)
    (o,) = tws.live_orders()
    del tws.orders[o["order_id"]]  # TWS lost it (it never reached the order book)
    assert broker.lookup("O-d1-abc") is None
    tws.hold_acks = False
    ack = broker.place(_spread(), NOW)
    assert ack.status == "accepted" and ack.broker_id == str(o["order_id"]) and len(tws.live_orders()) == 1
    broker.close()


def test_restart_with_a_working_order(tws, tmp_path):
    path = tmp_path / "ibkr_orders.sqlite"
    first = IBKRAccount(_params(tws), path)
    first.place(_spread(qty=2), NOW, tag="run1")
    before = first.events(0)
    first.s.ib.disconnect()  # the process dies (its socket closes)
    first.db.close()
    (o,) = tws.live_orders()
    tws.fill(o["order_id"], 1, [3.10, 1.90])  # filled in part while the trader is down
    second = IBKRAccount(_params(tws), path)
    try:
        b = second.lookup("O-d1-abc")
        assert (b.status, b.filled_quantity, b.broker_id) == ("partially_filled", 1, str(o["order_id"]))
        assert second.place(_spread(qty=2), NOW, tag="run1").duplicate
        assert [x.client_id for x in second.orders("run1")] == ["O-d1-abc"]
        evs = second.events(before[-1].seq)  # the cursor carries over: only what happened since
        assert [(e.kind, e.status) for e in evs] == [("fill", ""), ("status", "partially_filled")]
        assert second.cancel("O-d1-abc", NOW)
        _until(second, lambda e: any(x.status == "cancelled" for x in e))
        assert len(tws.live_orders()) == 1 and tws.live_orders()[0]["status"] == "Cancelled"
    finally:
        second.close()


def test_completed_orders_found_after_restart(tws, tmp_path):
    path = tmp_path / "ibkr_orders.sqlite"
    first = IBKRAccount(_params(tws), path)
    first.place(_spread(qty=1), NOW)
    (o,) = tws.live_orders()
    tws.fill(o["order_id"], 1, [3.10, 1.90])
    _until(first, lambda e: any(x.status == "filled" for x in e))
    first.close()
    path.unlink()  # even with the mirror lost, TWS's completed orders and executions answer
    second = IBKRAccount(_params(tws), path)
    try:
        assert second.lookup("O-d1-abc") is not None
        assert second.place(_spread(qty=1), NOW).duplicate and len(tws.live_orders()) == 1
    finally:
        second.close()


def test_client_id_in_use_is_one_line(tws, broker, tmp_path, capfd):
    capfd.readouterr()
    with pytest.raises(StrikebenchError, match=r"client id 17 is already in use \(IB error 326\)"):
        IBKRAccount(_params(tws, timeout_seconds=0.5), tmp_path / "other.sqlite")
    assert capfd.readouterr().err == ""  # ib_async's own error log stays out of the user's terminal


def test_nothing_listening_is_broker_unavailable(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(BrokerUnavailable, match=f"127.0.0.1:{port} .*refused the connection"):
        IBKRAccount(IBKRParams(port=port, timeout_seconds=1.0), tmp_path / "x.sqlite")


def test_unknown_account_and_live_port(tws, tmp_path):
    with pytest.raises(StrikebenchError, match="account 'U999' is not managed by this login"):
        IBKRAccount(_params(tws, account="U999"), tmp_path / "x.sqlite")
    assert IBKRBroker(IBKRParams(port=7496)).trades_real_money()
    assert IBKRBroker(IBKRParams(port=4001)).trades_real_money()
    assert not IBKRBroker(IBKRParams(port=7497)).trades_real_money()


def test_modify_is_the_same_order_at_a_new_limit(tws, broker):
    broker.place(_spread(qty=1, limit=-1.20), NOW)
    assert broker.modify("O-d1-abc", -1.10, NOW)
    tws.wait(lambda: tws.live_orders()[0]["lmt"] == -1.10)
    (o,) = tws.live_orders()
    assert (o["lmt"], o["qty"], o["ref"]) == (-1.10, 1, "O-d1-abc")
    tws.fill(o["order_id"], 1, [3.00, 1.90])
    evs = _until(broker, lambda e: any(x.status == "filled" for x in e))
    assert [f.net_price for f in _fills(evs)] == [-1.10]
    assert not broker.modify("O-d1-abc", -1.00, NOW)  # finished: nothing sent


def test_tws_offline_1100_refuses_new_orders_until_1102(tws, broker):
    with tws.lock:
        for c in tws.conns:
            c.send(4, 2, -1, 1100, "Connectivity between IB and Trader Workstation has been lost.")
    with pytest.raises(BrokerUnavailable, match="IB 1100"):
        for _ in range(100):
            broker.place(_spread(), NOW)
            time.sleep(0.01)
    assert tws.live_orders() == []
    with tws.lock:
        for c in tws.conns:
            c.send(4, 2, -1, 1102, "Connectivity between IB and Trader Workstation has been restored - data "
                                   "maintained.")
    end = time.monotonic() + 5
    while True:
        try:
            assert broker.place(_spread(), NOW).status == "accepted"
            break
        except BrokerUnavailable:
            assert time.monotonic() < end
            time.sleep(0.01)
    assert len(tws.live_orders()) == 1


def test_reconnect_backs_off_while_tws_is_down(tws, broker):
    broker.place(_spread(qty=1), NOW)
    tws.close()  # TWS goes away (its nightly restart) and does not come back yet
    seen = []
    for _ in range(6):
        try:
            broker.events(0)
        except BrokerUnavailable as exc:
            seen.append(str(exc))
            if "next reconnect try" in str(exc):
                broker.s._next_try = 0.0  # the back-off has elapsed: try again now
        time.sleep(0.01)
    # lost -> refused (back-off 1 s) -> waiting -> refused (2 s) -> waiting -> refused (4 s): never a busy loop
    assert "connection lost" in seen[0] or "refused" in seen[0]
    assert any("refused the connection" in m for m in seen) and any("next reconnect try" in m for m in seen)
    assert broker.s._backoff in (2.0, 4.0)
    broker.s._backoff = 50.0
    broker.s._fail()
    assert broker.s._backoff == 60.0  # capped at reconnect_max_seconds
