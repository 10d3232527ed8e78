"""IB chains through the loopback TWS: reqSecDefOptParams + quote snapshots with model greeks; IB's "not computed"
sentinels are missing values, recomputed from the mid with strikebench.pricing and flagged."""

import math

import numpy as np
import pandas as pd
import pytest

from fake_tws import FakeTWS
from strikebench.brokers.ibkr import IBKRParams, IBSession
from strikebench.brokers.ibkr_data import fetch_chain
from strikebench.options.contracts import OptionContract, settlement_time
from strikebench.pricing import bsm_price

AT = pd.Timestamp("2024-03-04 10:00", tz="America/New_York")
SENT = (-1.0, -2.0, -1.0, -1.0, -2.0, -2.0, -2.0, -1.0)  # iv, delta, price, pvDividend, gamma, vega, theta, und


def _greeks(c):
    if c["strike"] == 5000.0 and c["right"] == "C":
        return SENT  # IB had none
    if c["strike"] == 5000.0 and c["right"] == "P":
        return (0.14, -0.48, 10.2, 0.0, 0.0031, 2.05, -1.5, -2.0)[:5] + (-2.0, -1.5, 5000.0)  # vega alone missing
    sign = 1 if c["right"] == "C" else -1
    return (0.15, sign * 0.3, 10.2, 0.0, 0.002, 1.9, -1.2, 5000.0)


@pytest.fixture
def tws():
    with FakeTWS() as t:
        t.quotes[t.index["SPX"]] = {"last": 5000.0}
        t.chains["SPX"] = {"classes": {"SPX": ["20240315"], "SPXW": ["20240301", "20240305", "20240308"]},
                           "strikes": [4800.0, 4975.0, 5000.0, 5025.0, 5200.0]}
        t.quote_fn = lambda c: {"bid": 10.0, "ask": 10.4, "last": 10.1, "greeks": _greeks(c)}
        yield t


def test_chain_from_ib_with_model_greeks_and_sentinels(tws):
    s = IBSession(IBKRParams(port=tws.port, account="DU1234567", market_data_type="delayed"))
    s.connect(first=True)
    try:
        chain = fetch_chain(s.ib, "SPX", at=AT, expiries=1, width=0.01)
    finally:
        s.close()
    snap = chain.snapshot
    # the first expiry on or after the day (not the expired 03-01), strikes within 1 % of 5000, calls and puts
    assert sorted({str(e) for e in snap.expiry}) == ["2024-03-05"]
    assert sorted(set(snap.strike)) == [4975.0, 5000.0, 5025.0] and len(snap) == 6
    assert set(snap.root) == {"SPXW"} and snap.underlying_price == 5000.0
    assert chain.market_data_type == "delayed"  # asked for delayed; TWS marked the quotes so
    assert list(snap.bid) == [10.0] * 6 and list(snap.ask) == [10.4] * 6
    rows = {(float(k), bool(c)): i for i, (k, c) in enumerate(zip(snap.strike, snap.is_call))}
    # IB's own numbers pass through untouched where IB had them
    i = rows[(4975.0, False)]
    assert (snap.iv[i], snap.delta[i], snap.gamma[i], snap.vega[i], snap.theta[i]) == (0.15, -0.3, 0.002, 1.9, -1.2)
    assert not chain.recomputed[i]
    # all sentinels -> missing -> recomputed from the mid, flagged
    i = rows[(5000.0, True)]
    assert chain.recomputed[i]
    c = OptionContract.make("SPXW", "2024-03-05", 5000, "C")
    years = (settlement_time(c) - AT).total_seconds() / (365 * 86400)
    assert math.isclose(float(bsm_price(True, 5000.0, 5000.0, years, 0.045, 0.0, snap.iv[i])), 10.2, abs_tol=1e-6)
    assert 0.4 < snap.delta[i] < 0.6 and snap.gamma[i] > 0 and snap.vega[i] > 0 and snap.theta[i] < 0
    # vega's -2 alone (ib_async passes it through as a value) still marks the row missing
    i = rows[(5000.0, False)]
    assert chain.recomputed[i] and snap.vega[i] > 0 and snap.delta[i] < 0
    assert int(chain.recomputed.sum()) == 2
    assert len({ibc.conId for ibc in chain.contracts}) == 6 and all(ibc.tradingClass == "SPXW" for ibc in
                                                                    chain.contracts)
