"""``data: {source: ibkr}`` against the loopback TWS serving the synthetic market's bars, quotes and greeks at a clock.

The fake TWS speaks the socket protocol to the real ib_async: historical bars (reqHistoricalData), option chain
parameters, quote snapshots with model greeks (one contract sends IB's "not computed" sentinels). The expected
values are the synthetic market's own (what TWS was given), read directly, never through the market under test."""

from __future__ import annotations

import datetime as dt
import sqlite3

import numpy as np
import pandas as pd
import pytest
import yaml

from fake_tws import FakeTWS
from strikebench.calendar import NY
from strikebench.errors import StrikebenchError
from strikebench.feeds.ibkr import SENTINEL_REASON, IBKRFeed, IBKRFeedParams, IBKRMarket
from strikebench.feeds.synthetic import SyntheticMarket
from strikebench.options.contracts import OptionContract

SENT = (-1.0, -2.0, -1.0, -1.0, -2.0, -2.0, -2.0, -1.0)  # iv, delta, price, pvDividend, gamma, vega, theta, und
DAY = "2023-03-14"


@pytest.fixture(scope="module")
def synthetic():
    return SyntheticMarket(seed=42, start="2023-03-13", end="2023-03-17")


class Wired:
    """The fake TWS serving ``synthetic`` as of ``clock['t']``: quotes are the last completed minute's."""

    def __init__(self, tws: FakeTWS, synthetic, t):
        self.tws, self.syn, self.clock = tws, synthetic, {"t": pd.Timestamp(t, tz=NY)}
        self.missing: set[pd.Timestamp] = set()  # minutes TWS does not send
        self.sentinel: set[tuple] = set()  # (trading class, YYYYMMDD, strike, right) sent as IB's sentinels
        self._snaps: dict = {}
        open_ = pd.Timestamp(f"{DAY} 09:31", tz=NY)
        listed = synthetic.snapshot("SPX", open_, [e for e in synthetic.listed_expiries("SPX", open_.date())
                                                   if (e - open_.date()).days <= 10])
        classes: dict[str, set] = {}
        tws.list_on_demand = False  # TWS knows the listed contracts only (a strike of one expiry is not in all)
        for r, e, k, c in zip(listed.root, listed.expiry, listed.strike, listed.is_call):
            classes.setdefault(str(r), set()).add(f"{pd.Timestamp(e):%Y%m%d}")
            x = f"{pd.Timestamp(e):%Y%m%d}"
            tws.add_contract(dict(secType="OPT", symbol="SPX", tradingClass=str(r), lastTradeDateOrContractMonth=x,
                                  strike=float(k), right="C" if c else "P", multiplier="100", exchange="CBOE",
                                  currency="USD", localSymbol=f"{r} {x[2:]}{'C' if c else 'P'}{int(k * 1000):08d}"))
        tws.chains["SPX"] = {"classes": {k: sorted(v) for k, v in classes.items()},
                             "strikes": sorted({float(k) for k in listed.strike})}
        tws.quote_fn, tws.history_fn = self.quote, self.history

    def minute(self) -> pd.Timestamp:
        return self.clock["t"].floor("min") - pd.Timedelta(minutes=1)

    def snap(self, expiry: dt.date):
        key = (self.minute(), expiry)
        if key not in self._snaps:
            s = self.syn.snapshot("SPX", key[0], [expiry])
            rows = {(str(r), float(k), bool(c)): i for i, (r, k, c) in enumerate(zip(s.root, s.strike, s.is_call))}
            self._snaps = {key: (s, rows)}
        return self._snaps[key]

    def quote(self, c: dict):
        bars = self.syn.bars(c["symbol"])
        spot = float(bars["close"].loc[self.minute()])
        if c["secType"] == "IND":
            return {"last": spot}
        s, rows = self.snap(dt.datetime.strptime(c["lastTradeDateOrContractMonth"], "%Y%m%d").date())
        i = rows.get((c["tradingClass"], float(c["strike"]), c["right"] == "C"))
        if i is None:
            return None

        def f(x):
            return None if not np.isfinite(x) else float(x)

        bid, ask = f(s.bid[i]), f(s.ask[i])
        key = (c["tradingClass"], c["lastTradeDateOrContractMonth"], float(c["strike"]), c["right"])
        if key in self.sentinel:
            greeks = SENT
        elif np.isfinite(s.iv[i]):
            greeks = (float(s.iv[i]), float(s.delta[i]), ((bid or 0) + (ask or 0)) / 2, 0.0, float(s.gamma[i]),
                      float(s.vega[i]), float(s.theta[i]), spot)
        else:
            greeks = SENT
        return {"bid": bid, "ask": ask, "greeks": greeks}

    def history(self, c: dict, start, end, bar_size):
        bars = self.syn.bars(c["symbol"])
        cap = self.minute() + pd.Timedelta(minutes=1)  # no bar that has not closed at the clock
        lo = pd.Timestamp(start).tz_convert(NY)
        hi = min(pd.Timestamp(end).tz_convert(NY), cap)
        if bar_size == "1 day":
            out = []
            for day, g in bars.groupby(bars.index.date):
                g = g[g.index < hi]
                if len(g) and lo.date() <= day:
                    out.append((pd.Timestamp(day).to_pydatetime(), g["open"].iloc[0], g["high"].max(),
                                g["low"].min(), g["close"].iloc[-1], 0))
            return out
        sel = bars[(bars.index >= lo) & (bars.index < hi) & ~bars.index.isin(list(self.missing))]
        return [(t.tz_convert("UTC").to_pydatetime(), r.open, r.high, r.low, r.close, r.volume)
                for t, r in zip(sel.index, sel.itertuples())]


@pytest.fixture
def wired(synthetic):
    with FakeTWS() as tws:
        w = Wired(tws, synthetic, f"{DAY} 11:00:30")
        opened = []

        def market(**kw) -> IBKRMarket:
            m = IBKRFeed(IBKRFeedParams(port=tws.port, **kw)).open(now=lambda: w.clock["t"])
            m.ib.client.MaxRequests = 0  # ib_async paces requests as TWS demands (~45/s): not needed by the fake
            opened.append(m)
            return m

        yield w, market
        for m in opened:
            m.close()


def _put_near(snap, delta):
    return int(np.nanargmin(np.abs(snap.delta - delta) + np.where(snap.is_call, 9, 0)))


def test_session_bars_chain_greeks_and_sentinels_as_ib_sends_them(wired, synthetic):
    w, market = wired
    at = pd.Timestamp(f"{DAY} 10:59", tz=NY)
    e = synthetic.listed_expiries("SPX", at.date())[1]
    ref_chain = synthetic.snapshot("SPX", at, [e])
    j = _put_near(ref_chain, -0.30)  # this one IB sends without greeks (its sentinels)
    w.sentinel.add((str(ref_chain.root[j]), f"{e:%Y%m%d}", float(ref_chain.strike[j]), "P"))
    gap = pd.Timestamp(f"{DAY} 10:15", tz=NY)
    w.missing.add(gap)
    m = market()
    assert m.day == pd.Timestamp(DAY).date() and list(m.sessions()) == [pd.Timestamp(DAY)]
    bars = m.bars("SPX")
    ref = synthetic.bars("SPX").loc[DAY]
    assert len(bars) == 390 and bars.index[0] == pd.Timestamp(f"{DAY} 09:30", tz=NY)
    done = bars.index < pd.Timestamp(f"{DAY} 11:00", tz=NY)  # bars that closed by 11:00:30
    assert np.isnan(bars.loc[gap].to_numpy()).all()  # the minute TWS did not send stays NaN (never invented)
    done &= bars.index != gap
    for col in ("open", "high", "low", "close"):
        assert np.array_equal(bars[col].to_numpy()[done], ref[col].to_numpy()[done]), col
    assert np.isnan(bars["close"].to_numpy()[~done]).all()  # minutes not yet happened stay NaN

    assert m.listed_expiries("SPX", at.date()) == [x for x in synthetic.listed_expiries("SPX", at.date())
                                                   if (x - at.date()).days <= 10]  # what TWS lists here
    snap = m.snapshot("SPX", at, [e])
    assert snap.underlying_price == float(ref["close"].loc[at])
    # the same contracts as the synthetic chain within 5 % of the index, IB's greeks untouched
    near = np.abs(ref_chain.strike - snap.underlying_price) <= 0.05 * snap.underlying_price
    assert len(snap) == int(near.sum()) > 50
    got = {(str(r), float(k), bool(c)): i for i, (r, k, c) in enumerate(zip(snap.root, snap.strike, snap.is_call))}
    # a hand-checked row: the 20-delta put, every number as TWS sent it
    h = _put_near(ref_chain, -0.20)
    i = got[(str(ref_chain.root[h]), float(ref_chain.strike[h]), False)]
    for col in ("bid", "ask", "iv", "delta", "gamma", "theta", "vega"):
        assert getattr(snap, col)[i] == getattr(ref_chain, col)[h], col
    # the sentinel row: recomputed from its mid (close to the model that made the quote) and flagged
    k = got[(str(ref_chain.root[j]), float(ref_chain.strike[j]), False)]
    occ = OptionContract.make(str(ref_chain.root[j]), e, float(ref_chain.strike[j]), "P").occ_compact
    assert m.greeks_flags("SPX", at) == {occ: SENTINEL_REASON} and m.recomputed == 1
    assert snap.delta[k] != ref_chain.delta[j] and abs(snap.delta[k] - ref_chain.delta[j]) < 0.03
    assert abs(snap.iv[k] - ref_chain.iv[j]) < 0.02 and snap.vega[k] > 0 and snap.theta[k] < 0
    assert m.quotes_type == "live" and m.notes == []

    # the bar that closes at 11:01 arrives with the runtime's bar_closed(11:01)
    w.clock["t"] = pd.Timestamp(f"{DAY} 11:01:30", tz=NY)
    m.bar_closed(pd.Timestamp(f"{DAY} 11:01", tz=NY))
    n = bars.index.get_loc(pd.Timestamp(f"{DAY} 11:00", tz=NY))
    assert bars["close"].iloc[n] == ref["close"].iloc[n] and np.isnan(bars["close"].iloc[n + 1])


def test_leg_quotes_fill_bar_by_bar_and_settlement(wired, synthetic):
    w, market = wired
    m = market()
    at = pd.Timestamp(f"{DAY} 10:59", tz=NY)
    want = synthetic.snapshot("SPX", at, synthetic.listed_expiries("SPX", at.date())[:1])
    j = _put_near(want, -0.20)
    c = OptionContract.make(str(want.root[j]), pd.Timestamp(want.expiry[j]).date(), float(want.strike[j]), "P")
    lq = m.leg_quotes([c], at.date())
    ref = synthetic.leg_quotes([c], at.date())
    i = int(np.searchsorted(lq.times, at.value))
    assert lq.bid[i, 0] == ref.bid[i, 0] and lq.ask[i, 0] == ref.ask[i, 0]
    assert np.isnan(lq.bid[i - 1, 0])  # before it was tracked: no quote history from snapshots
    w.clock["t"] = pd.Timestamp(f"{DAY} 11:05:30", tz=NY)
    m.bar_closed(pd.Timestamp(f"{DAY} 11:05", tz=NY))
    assert lq.bid[i + 5, 0] == ref.bid[i + 5, 0] and lq.mid[i + 5, 0] == (ref.bid[i + 5, 0] + ref.ask[i + 5, 0]) / 2
    # settlement: PM root -> the day's close (IB's daily bar); AM root -> the day's open, noted
    monday = synthetic.bars("SPX").loc["2023-03-13"]
    assert m.settlement_value(OptionContract.from_occ("SPXW230313P03800000")) == float(monday["close"].iloc[-1])
    am = OptionContract.make("SPX", "2023-03-13", 3800, "P")
    assert m.settlement_value(am) == float(monday["open"].iloc[0]) and "special opening quotation" in m.notes[-1]
    with pytest.raises(StrikebenchError, match="IB has no close of SPX on 2023-03-17"):
        m.settlement_value(OptionContract.from_occ("SPXW230317P03800000"))


def test_market_data_type_is_requested_and_shown(wired):
    w, market = wired
    m = market(market_data_type="delayed")
    at = pd.Timestamp(f"{DAY} 10:59", tz=NY)
    e = m.listed_expiries("SPX", at.date())[0]
    m.snapshot("SPX", at, [e])
    assert w.tws.market_data_type == 3 and m.quotes_type == "delayed" and m.notes == []
    assert "delayed" in repr(m)
    # asked for live, but TWS marks the quotes delayed (no live subscription): shown and noted once
    live = market(client_id=19)
    w.tws.market_data_type = 3
    live.snapshot("SPX", at, [e])
    live.snapshot("SPX", at + pd.Timedelta(minutes=1), [e])
    assert live.quotes_type == "delayed" and live.notes == ["SPX chain at 10:59: IB sent delayed quotes (asked for "
                                                           "live)"]


def test_client_id_in_use_and_nothing_listening_are_one_line(wired):
    w, market = wired
    market()
    with pytest.raises(StrikebenchError) as e:
        market(timeout_seconds=2)  # the same client id 18 again
    assert "client id 18 is already in use" in str(e.value) and "data.client_id" in str(e.value)
    assert "\n" not in str(e.value)
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StrikebenchError, match=r"data source ibkr: TWS/IB Gateway at 127.0.0.1:\d+ \(client id 30\) "
                                               r"refused the connection: is it running"):
        IBKRFeed(IBKRFeedParams(port=port, client_id=30, timeout_seconds=1)).open()


def test_a_session_decided_on_ib_chains_equals_backtest(tmp_path, monkeypatch, synthetic):
    """`data: {source: ibkr}` in `strikebench trade`'s account runner (replayed clock; paper broker): Tuesday's
    entry is decided on the chains, greeks and bars the loopback TWS serves minute by minute and equals
    `strikebench backtest` of that day to the cent (one minute later: live decides when the bar has closed)."""
    from test_account import BASE, PAPER_EXACT
    from test_tradier_week import _backtest, _trades

    from strikebench.config import load_config
    from strikebench.live.account import run_account
    from strikebench.live.launch import live_broker_plugin
    from strikebench.plugin_manager import get_plugin_manager

    doc = yaml.safe_load(yaml.safe_dump(BASE))
    doc["data"].update(start=DAY, end=DAY)
    ref_cfg = tmp_path / "ref.yaml"
    ref_cfg.write_text(yaml.safe_dump(doc))
    reference = _backtest(tmp_path, ref_cfg)
    with FakeTWS() as tws:
        w = Wired(tws, synthetic, f"{DAY} 09:30")
        doc["data"] = {"source": "ibkr", "port": tws.port, "client_id": 18, "max_dte": 9, "strike_width": 0.04}
        doc["broker"] = PAPER_EXACT
        cfg = tmp_path / "ibkr.yaml"
        cfg.write_text(yaml.safe_dump(doc))
        opened, closed = IBKRFeed.open, IBKRMarket.bar_closed

        def open_(self, now=None):
            m = opened(self, now=lambda: w.clock["t"])
            m.ib.client.MaxRequests = 0  # no pacing needed against the fake
            markets.append(m)
            return m

        markets: list[IBKRMarket] = []

        monkeypatch.setattr(IBKRFeed, "open", open_)

        def bar_closed(self, t):  # the trader's clock reached t: so has TWS's (as the wall clock would)
            w.clock["t"] = max(w.clock["t"], pd.Timestamp(t).tz_convert(NY))
            return closed(self, t)

        monkeypatch.setattr(IBKRMarket, "bar_closed", bar_closed)
        acct = tmp_path / "acct"
        pm = get_plugin_manager()  # the paper broker in this process (its service process would open IB data too)
        paper = live_broker_plugin(load_config(str(cfg), registry=pm.registry), pm)
        try:
            run_account(str(cfg), account=str(acct), clock="replay", start=DAY, end=DAY, speed=0,
                        stop_after_bars=35, broker_plugin=paper)
        finally:
            for m in markets:
                m.close()
        historical = [f for f in tws.received if f[0] == "20"]
        secdef = [f for f in tws.received if f[0] == "78"]
    live, ref = _trades(acct / "journal.sqlite"), _trades(reference)
    assert len(live) == 1 and ref
    a, b = live[0], ref[0]
    assert pd.Timestamp(a[0]) == pd.Timestamp(b[0]) + pd.Timedelta(minutes=1), (a, b)
    assert (a[2], a[3]) == (b[2], b[3]), (a, b)  # contracts and entry price to the cent
    assert len(historical) >= 30 and secdef  # bars read bar by bar; chains from reqSecDefOptParams
    db = sqlite3.connect(acct / "journal.sqlite")
    try:
        assert db.execute("SELECT COUNT(*) FROM trade_decisions WHERE snapshot_id IS NOT NULL").fetchone()[0] >= 1
    finally:
        db.close()
