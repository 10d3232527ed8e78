"""The journal's write path keeps a few texts it formatted (by identity or by listing); each test proves the kept text is
the text the general code writes, whatever was seen before."""
from __future__ import annotations

import datetime as dt
import gc
import random
import zoneinfo
from enum import Enum, IntEnum

import numpy as np
import pandas as pd

from strikebench import journal as J
from strikebench.options import contracts as C
from strikebench.options import orders as O
from test_decision_paths import blob_general, chains
from test_journal_session_rows import interrupted_tx


def test_enum_text_is_str_of_its_value_for_every_member_and_anything_else():
    class Num(IntEnum):
        ONE = 1
        TWO = 2

    class Plain(Enum):
        A = "a"
        B = 2.5
        C = ("x", 1)

    members = [m for cls in (C.Right, C.SettlementStyle, C.ExerciseStyle, C.SettlementType, O.OrderType,
                             O.TimeInForce, O.OrderStatus, Num, Plain) for m in cls]
    others = ["new", "", 3, 2.5, None, dt.date(2024, 1, 2), type("V", (), {"value": "held"})()]
    for value in members + others:
        assert J._enum(value) == str(getattr(value, "value", value)), value
    assert J._enum(O.OrderStatus.FILLED) == O.OrderStatus.FILLED.value != str(O.OrderStatus.FILLED)


def _contract_text_general(c):
    return (c.occ_symbol.strip(), c.root, str(c.expiry), J.points_text(c.strike), J._enum(c.right))


def test_contract_text_is_each_contracts_own_even_when_a_freed_contracts_id_comes_back():
    rng = random.Random(7)
    day = dt.date(2024, 1, 2)

    def contract():
        return C.OptionContract(rng.choice(["SPX", "SPXW", "XSP"]), day + dt.timedelta(days=rng.randrange(0, 400)),
                                rng.choice([4800.0, 4805.0, 4812.5, 480.5, 5.0, 4799.999]), rng.choice(list(C.Right)))

    kept = [contract() for _ in range(50)]
    for _ in range(3):
        for c in kept:  # seen again: the kept text
            assert J._contract_text(c) == _contract_text_general(c)
    freed, reused = set(), 0
    for _ in range(3000):  # each contract dropped before the next is made: CPython would hand the next one its id
        c = contract()
        reused += id(c) in freed
        assert J._contract_text(c) == _contract_text_general(c)
        freed.add(id(c))
        del c
        gc.collect(0)
    # the memo holds each contract it formatted, so no new one gets a kept one's id (without that, most would)
    assert reused < 100
    for _ in range(5000):  # past the memo's size
        c = kept[rng.randrange(50)] if rng.random() < 0.3 else contract()
        assert J._contract_text(c) == _contract_text_general(c)


def test_iso_time_of_the_same_object_again_and_of_equal_times_in_other_zones():
    """Consecutive calls with the same object (a bar's events) and with an equal instant in another zone or of the
    other type right after it: each value's text is its own ``isoformat()`` (naive times: New York's)."""
    ny, utc = zoneinfo.ZoneInfo("America/New_York"), dt.timezone.utc
    rng = random.Random(3)
    values = []
    for _ in range(3000):
        v = dt.datetime(2023, 1, 3, 9, 30, tzinfo=ny) + dt.timedelta(minutes=rng.randrange(0, 300000))
        same = [v] * rng.randrange(1, 4)
        other = [v.astimezone(utc), pd.Timestamp(v), pd.Timestamp(v).tz_convert("UTC"), v.replace(tzinfo=None),
                 pd.Timestamp(v) + pd.Timedelta(nanoseconds=5), None]
        values += same + rng.sample(other, 2) + same
    for v in values:
        want = None if v is None else (v.isoformat() if v.tzinfo is not None
                                       else pd.Timestamp(v).tz_localize(ny).isoformat())
        assert J.iso_time(v) == want, v


def test_blob_of_columns_not_stored_as_their_type_is_the_general_one():
    """Quote columns of another dtype or byte order than the blob's (converted, as before) and strided ones."""
    snap = chains(1)[0]
    for name, make in (("bid", lambda a: a.astype(">f8")), ("ask", lambda a: a.astype("<f4")),
                       ("volume", lambda a: a.astype(">i8")), ("iv", lambda a: np.stack([a, a], axis=1)[:, 1]),
                       ("delta", lambda a: a.tolist())):
        odd = snap.subset(np.arange(len(snap)))
        object.__setattr__(odd, "_static", {})  # its own listing memo
        object.__setattr__(odd, name, make(np.asarray(getattr(snap, name))))
        for fmt in ("columns-lz4", "columns-zlib"):
            assert J.snapshot_to_bytes(odd, fmt) == blob_general(odd, fmt) == J.snapshot_to_bytes(snap, fmt), name


def _orders_and_decisions(path, per_session, interrupt=None):
    """One order object through its events, changed after each (as the broker changes it) and once more after its
    last recorded event; decisions between them. Returns the orders, order_events and trade_decisions rows."""
    import pytest

    from strikebench.api import Decision
    from strikebench.engine.broker import OrderTransition
    from strikebench.options.orders import Fill, Leg, Order, OrderStatus, OrderType

    day = dt.date(2024, 1, 12)
    legs = (Leg(C.OptionContract("SPXW", day, 4700.0, C.Right.PUT), -1),
            Leg(C.OptionContract("SPXW", day, 4695.0, C.Right.PUT), +1))
    t0 = dt.datetime(2024, 1, 10, 10, 0, tzinfo=zoneinfo.ZoneInfo("America/New_York"))
    j = J.Journal(path)
    j.start_run("r", name="r", mode="backtest")
    if per_session:
        j.commit_per_session()
    order = Order("O-1", legs, 2, OrderType.LIMIT, -1.25, strategy="s", trade_id="T-s-1-abc", created_at=t0)
    steps = [(OrderStatus.SUBMITTED, 0, "", 0, None), (OrderStatus.ACCEPTED, 1, "", 0, None),
             (OrderStatus.PARTIALLY_FILLED, 2, "half", 1, -1.25), (OrderStatus.FILLED, 3, "", 2, -1.275)]
    for n, (status, minutes, reason, filled, avg) in enumerate(steps, 1):
        at = t0 + dt.timedelta(minutes=minutes)
        j.record_decision("r", Decision(strategy="s", decided_at=at, action="SKIP", reason=f"r{n}",
                                        context={"n": n}, decision_id=f"s-{n}"), None)
        previous = order.status
        order.status, order.status_reason, order.filled_quantity, order.avg_fill_price = status, reason, filled, avg
        j.record_order_event("r", order, OrderTransition(order.client_id, previous, status, at, reason))
        if filled:  # a fill of one combo at each of the last two events, a commit between them
            j.record_fill("r", order, Fill(f"O-1-F{n}", "O-1", at, 1, -1.25 - 0.05 * (n - 3), (2.5, 1.25 + 0.05 * (n - 3)),
                                           1.3, ((2.4, 2.6), (1.2, float("nan")))))
            if n == 3:
                j.commit()
    # changed after its last recorded event (no event for it): nothing of this may reach the rows
    order.status, order.status_reason, order.filled_quantity, order.avg_fill_price = (
        OrderStatus.CANCELLED, "late", 7, 9.99)
    if interrupt:
        with interrupt.context() as m:
            m.setattr(J.Journal, "_tx", interrupted_tx)
            with pytest.raises(SystemExit):
                j.commit()
    j.commit()
    out = [[tuple(r) for r in j.execute(f"SELECT * FROM {t} ORDER BY rowid")]
           for t in ("orders", "order_events", "trade_decisions", "context_snapshots", "fills", "trades")]
    j.close()
    return out


def test_a_backtests_order_and_decision_rows_are_formatted_from_the_values_at_their_events(tmp_path, monkeypatch):
    """A backtest formats its order events', fills' and decisions' texts when it writes them (at the commit), from the
    values each event had: an order object changed after its events leaves the rows a journal writing each event at once
    leaves; a commit interrupted by a signal leaves the same rows to the commit at exit."""
    at_once = _orders_and_decisions(tmp_path / "at_once.sqlite", per_session=False)
    assert _orders_and_decisions(tmp_path / "buffered.sqlite", per_session=True) == at_once
    assert _orders_and_decisions(tmp_path / "interrupted.sqlite", per_session=True, interrupt=monkeypatch) == at_once
    orders, events, decisions, contexts, fills, trades = at_once
    assert [f[6:] for f in fills] == [
        ("2024-01-10T10:02:00-05:00", "-1.25", 1, 100, "1.30", "123.70", '["2.50","1.25"]', '[["2.40","2.60"],["1.20",null]]'),
        ("2024-01-10T10:03:00-05:00", "-1.30", 1, 100, "1.30", "128.70", '["2.50","1.30"]', '[["2.40","2.60"],["1.20",null]]')]
    assert len(trades) == 1
    assert orders[0][13:] == ("filled", "", 2, "-1.275", "2024-01-10T10:03:00-05:00")
    assert [e[4:6] for e in events] == [("new", "submitted"), ("submitted", "accepted"),
                                        ("accepted", "partially_filled"), ("partially_filled", "filled")]
    assert [d[4] for d in decisions] == [f"2024-01-10T10:0{m}:00-05:00" for m in range(4)]
    assert len(contexts) == 4
