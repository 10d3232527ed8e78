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
