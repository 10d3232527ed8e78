"""The broker's QuoteBook asks the chain source once per contract and session; what it hands out is exactly
what asking for each leg set alone gives (the source quotes every contract independently of the others)."""

from __future__ import annotations

import datetime as dt
import io
import random
import re

import numpy as np
import pandas as pd
import pytest

from strikebench.engine import broker as broker_mod
from strikebench.engine.broker import QuoteBook
from strikebench.feeds.synthetic import SyntheticMarket
from strikebench.options.chain import LegQuotes
from strikebench.options.contracts import OptionContract
from strikebench.testing import ModelMarket

NY = "America/New_York"


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return SyntheticMarket(seed=42, start="2023-03-01", end="2023-03-31")


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.int64)


def same_quotes(a: LegQuotes, b: LegQuotes) -> bool:
    """Equal to the bit (NaN where NaN), same shape and layout, same minutes and contracts."""
    return (tuple(a.contracts) == tuple(b.contracts) and np.array_equal(a.times, b.times)
            and a.bid.shape == b.bid.shape and a.bid.flags.c_contiguous == b.bid.flags.c_contiguous
            and np.array_equal(bits(a.bid), bits(b.bid)) and np.array_equal(bits(a.ask), bits(b.ask)))


def pool(market, day, rng, per_underlying=25):
    """Contracts of every underlying listed on ``day``, with an AM monthly on its settlement day and an
    expired one when there is one (NaN columns)."""
    out = []
    for und in ("SPX", "XSP", "VIX"):
        exps = market.listed_expiries(und, day)[:5]
        snap = market.snapshot(und, pd.Timestamp(f"{day} 10:00", tz=NY), exps)
        out += [snap.contract(int(r)) for r in rng.sample(range(len(snap)), min(per_underlying, len(snap)))]
    out.append(OptionContract("SPX", dt.date(2023, 3, 17), 4000.0, "P"))  # AM: not quoted on its expiry day
    out.append(OptionContract("SPXW", dt.date(2023, 3, 1), 4000.0, "C"))  # expired (NaN after Mar 1)
    return out


@pytest.mark.parametrize("day", [dt.date(2023, 3, 1), dt.date(2023, 3, 13), dt.date(2023, 3, 17)])
def test_a_leg_quoted_in_a_batch_equals_the_leg_quoted_alone_synthetic(market, day):
    rng = random.Random(day.toordinal())
    contracts = pool(market, day, rng)
    rng.shuffle(contracts)
    batch = market.leg_quotes(contracts, day)
    for j, c in enumerate(contracts):
        alone = market.leg_quotes([c], day)
        assert np.array_equal(alone.times, batch.times)
        assert np.array_equal(bits(alone.bid[:, 0]), bits(batch.bid[:, j])), c
        assert np.array_equal(bits(alone.ask[:, 0]), bits(batch.ask[:, j])), c


def test_a_leg_quoted_in_a_batch_equals_the_leg_quoted_alone_model_market():
    day = dt.date(2024, 1, 10)
    pinned = OptionContract("SPXW", day, 4700.0, "P")
    m = ModelMarket(day, day, spot=4710.0, quotes={pinned: (3.00, 3.40)})
    contracts = [OptionContract("SPXW", day, k, r) for k in (4650.0, 4700.0, 4750.0) for r in "PC"]
    batch = m.leg_quotes(contracts, day)
    for j, c in enumerate(contracts):
        alone = m.leg_quotes([c], day)
        assert np.array_equal(bits(alone.bid[:, 0]), bits(batch.bid[:, j]))
        assert np.array_equal(bits(alone.ask[:, 0]), bits(batch.ask[:, j]))


class Counting:
    """A chain source that records every ``leg_quotes`` call."""

    def __init__(self, source):
        self.source, self.calls = source, []

    def leg_quotes(self, contracts, day):
        self.calls.append(tuple(contracts))
        return self.source.leg_quotes(contracts, day)


def test_the_quote_book_hands_out_what_the_source_gives_for_the_leg_set_alone(market):
    day = dt.date(2023, 3, 13)
    rng = random.Random(7)
    contracts = pool(market, day, rng, per_underlying=12)
    src = Counting(market)
    book = QuoteBook(src)
    book.start_session(day)
    held = rng.sample(contracts, 10)
    book.prefetch(held + held[:3])  # a session start: every open leg, one call per underlying
    assert len(src.calls) == len({c.underlying for c in held})
    asked = [c for call in src.calls for c in call]
    assert len(asked) == len(set(held)) and set(asked) == set(held)
    known = set(held)  # what the book has quoted per contract (a mixed leg set is asked whole, kept whole)
    for trial in range(60):
        und = rng.choice(["SPX", "XSP", "VIX"])
        same = [c for c in contracts if c.underlying == und]
        key = rng.sample(same, rng.randint(1, min(4, len(same))))
        if trial % 10 == 0:
            key = key + key[:1]  # a contract twice
        if trial % 15 == 0:
            key = [rng.choice(contracts) for _ in range(3)]  # underlyings mixed: asked as a whole
        n = len(src.calls)
        got = book.legs(key)
        assert same_quotes(got, market.leg_quotes(key, day)), key
        assert book.legs(key) is got  # cached for the session
        mixed = len({c.underlying for c in key}) > 1
        new = [c for c in dict.fromkeys(key) if c not in known]
        if mixed:
            assert src.calls[n:] == [tuple(key)]
        elif new:
            assert src.calls[n:] == [tuple(new)]  # only the legs not quoted yet
            known.update(new)
        else:
            assert len(src.calls) == n  # every leg known: no call
        i = rng.randrange(len(got.times) + 5)
        b, a = book.bid_ask(key, i)
        assert np.array_equal(bits(b), bits(got.bid[min(i, len(got.times) - 1)]))
    book.start_session(dt.date(2023, 3, 14))  # a new session asks again
    n = len(src.calls)
    book.legs(held[:2])
    assert len(src.calls) == n + 1


def test_a_live_source_is_asked_per_leg_set_and_its_quotes_are_handed_out_as_they_are(market):
    class Live(Counting):
        def bar_closed(self, t):  # a live market: its LegQuotes fill in as bars close
            pass

    day = dt.date(2023, 3, 13)
    contracts = pool(market, day, random.Random(3), per_underlying=3)[:3]
    src = Live(market)
    book = QuoteBook(src)
    book.start_session(day)
    book.prefetch(contracts)
    assert src.calls == []
    a = book.legs(contracts[:2])
    b = book.legs(contracts[1:3])
    assert src.calls == [tuple(contracts[:2]), tuple(contracts[1:3])]
    assert a is not b and book.legs(contracts[:2]) is a


def run_free(client_id: str) -> str:
    """An order's or trade's id without its run digest (the two runs are two run ids)."""
    return re.sub(r"-[0-9a-f]{10}\b", "-H", client_id)


def _run(monkeypatch, per_contract: bool, tmp_path):
    from rich.console import Console

    from strikebench.config import load_config
    from strikebench.engine.runner import Backtest
    from strikebench.plugin_manager import get_plugin_manager

    init = QuoteBook.__init__

    def patched(self, source):
        init(self, source)
        self._per_contract = self._per_contract and per_contract

    monkeypatch.setattr(QuoteBook, "__init__", patched)
    if not per_contract:  # the general path: every trade's value curve recomputed at every remark
        remark = broker_mod.OptionsBroker._remark

        def fresh(self):
            self._values.clear()
            self._trade_values.clear()
            self._summed = ([], None)  # every curve summed again
            remark(self)

        monkeypatch.setattr(broker_mod.OptionsBroker, "_remark", fresh)
    values = []
    on_bar = broker_mod.OptionsBroker.on_bar

    def recording(self, i, now):
        on_bar(self, i, now)
        values.append(self.getvalue())

    monkeypatch.setattr(broker_mod.OptionsBroker, "on_bar", recording)
    pm = get_plugin_manager()
    resolved = load_config("configs/all_strategies.yaml", ["data.end=2023-01-13"], registry=pm.registry)
    bt = Backtest(resolved, console=Console(file=io.StringIO()), progress=False, pm=pm,
                  out_dir=str(tmp_path / ("on" if per_contract else "off")))
    bt.loop()
    e = bt.engine
    fills = [(run_free(o.client_id), o.status.value, f.filled_at, f.net_price, f.leg_prices, f.leg_quotes, f.fees)
             for o in e.broker.orders.values() for f in o.fills]
    trades = [(run_free(t.trade_id), t.opened_at, t.closed_at, t.exit_reason, t.realized_pnl, t.partly_closed_at)
              for t in list(e.portfolio.closed_trades()) + list(e.portfolio.open_trades())]
    return fills, trades, e.equity_by_day, values


def test_a_backtest_with_the_quote_book_per_contract_equals_it_per_leg_set(monkeypatch, tmp_path):
    """Four strategies, two weeks: trades opened mid-session beside open ones get their marks, exits and
    fills exactly as when every leg set is asked alone and every trade's value curve is recomputed at every
    remark (every fill, trade, bar's account value)."""
    on = _run(monkeypatch, True, tmp_path)
    monkeypatch.undo()
    off = _run(monkeypatch, False, tmp_path)
    assert len(on[0]) > 50 and len(on[1]) > 20
    # what the test is about happened: trades opened after a session's first bar while others were open
    spans = [(t[1], t[2] or dt.datetime.max.replace(tzinfo=t[1].tzinfo)) for t in on[1]]
    assert sum(1 for a, _ in spans if a.time() > dt.time(9, 31)
               and any(x < a < y for x, y in spans if (x, y) != (a, _))) > 10
    assert on[0] == off[0]
    assert on[1] == off[1]
    assert on[2] == off[2]
    assert np.array_equal(bits(np.array(on[3])), bits(np.array(off[3])))
