"""``data: {source: tradier}`` against the loopback Tradier API serving the synthetic market's quotes at a clock.

The expected values are the synthetic market's own (what the server was given), read directly, never through the
Tradier market under test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from strikebench.brokers.tradier_loopback import TradierLoopback
from strikebench.calendar import NY
from strikebench.errors import StrikebenchError
from strikebench.feeds.synthetic import SyntheticMarket
from strikebench.feeds.tradier import TradierFeed, TradierFeedParams
from strikebench.options.contracts import OptionContract

TOKEN = "tok-market-5e4d3c2b1a-secret"


@pytest.fixture(scope="module")
def synthetic():
    return SyntheticMarket(seed=42, start="2023-03-13", end="2023-03-17")


@pytest.fixture
def wired(synthetic):
    clock = {"t": pd.Timestamp("2023-03-14 11:00:30", tz=NY)}
    with TradierLoopback(token=TOKEN, market=synthetic, now=lambda: clock["t"]) as server:
        def market(**kw):
            return TradierFeed(TradierFeedParams(token=TOKEN, base_url=server.url, **kw)).open(
                now=lambda: clock["t"])
        yield server, clock, market


def test_session_bars_and_chain_as_tradier_sends_them(wired, synthetic):
    server, clock, market = wired
    m = market()
    assert m.day == pd.Timestamp("2023-03-14").date() and list(m.sessions()) == [pd.Timestamp("2023-03-14")]
    bars = m.bars("SPX")
    ref = synthetic.bars("SPX").loc["2023-03-14"]
    assert len(bars) == 390 and bars.index[0] == pd.Timestamp("2023-03-14 09:30", tz=NY)
    done = bars.index < pd.Timestamp("2023-03-14 11:00", tz=NY)  # bars whose close is at or before 11:00:30
    assert np.array_equal(bars["close"].to_numpy()[done], ref["close"].to_numpy()[done])
    assert np.isnan(bars["close"].to_numpy()[~done]).all()
    at = pd.Timestamp("2023-03-14 10:59", tz=NY)
    exps = m.listed_expiries("SPX", at.date())
    assert exps == synthetic.listed_expiries("SPX", at.date())
    snap = m.snapshot("SPX", at, exps[:2])
    want = synthetic.snapshot("SPX", at, exps[:2])
    assert len(snap) == len(want) > 100
    for col in ("strike", "bid", "ask", "iv", "delta", "gamma", "theta", "vega", "open_interest"):
        assert np.array_equal(getattr(snap, col), getattr(want, col), equal_nan=True), col
    assert list(snap.root) == list(want.root) and np.array_equal(snap.expiry, want.expiry)
    assert snap.underlying_price == float(ref["close"].loc[at]) and m.greeks_flags("SPX", at) == {}
    # the bar that closes at 11:01 arrives with the runtime's bar_closed(11:01)
    clock["t"] = pd.Timestamp("2023-03-14 11:01:30", tz=NY)
    m.bar_closed(pd.Timestamp("2023-03-14 11:01", tz=NY))
    i = bars.index.get_loc(pd.Timestamp("2023-03-14 11:00", tz=NY))
    assert bars["close"].iloc[i] == ref["close"].iloc[i] and np.isnan(bars["close"].iloc[i + 1])


@pytest.mark.parametrize("mode, reason", [("missing", "no greeks"), ("stale", "stale greeks (updated 07:59)")])
def test_missing_or_stale_greeks_are_recomputed_and_flagged(wired, synthetic, mode, reason):
    server, clock, market = wired
    server.greeks_mode = mode
    m = market()
    at = pd.Timestamp("2023-03-14 10:59", tz=NY)
    e = synthetic.listed_expiries("SPX", at.date())[2]
    snap, want = m.snapshot("SPX", at, [e]), synthetic.snapshot("SPX", at, [e])
    flags = m.greeks_flags("SPX", at)
    step = 3 if mode == "missing" else 2
    flagged = {f"{r}{pd.Timestamp(x):%y%m%d}{'C' if c else 'P'}{int(round(k * 1000)):08d}"
               for j, (r, x, c, k) in enumerate(zip(want.root, want.expiry, want.is_call, want.strike)) if j % step == 0}
    assert set(flags) == flagged and set(flags.values()) == {reason}
    rows = np.arange(len(want))
    kept = rows % step != 0
    assert np.array_equal(snap.delta[kept], want.delta[kept])  # Tradier's own values where they were usable
    # rows whose mid carries time value (deep in the money a mid at or below intrinsic has no IV, as
    # feeds/greeks.py documents; the chain lists such strikes from the series' first day)
    redo = ~kept & want.valid & (want.bid > 0.5) & (np.abs(want.delta) < 0.95)
    assert redo.sum() > 10 and np.all(np.isfinite(snap.delta[redo]))
    assert np.max(np.abs(snap.delta[redo] - want.delta[redo])) < 0.03  # recomputed from the mid: close to the model
    assert np.max(np.abs(snap.iv[redo] - want.iv[redo])) < 0.02
    assert m.recomputed >= len(flagged) - (~want.valid[~kept]).sum()


def test_leg_quotes_fill_bar_by_bar(wired, synthetic):
    server, clock, market = wired
    m = market()
    at = pd.Timestamp("2023-03-14 10:59", tz=NY)
    want = synthetic.snapshot("SPX", at, synthetic.listed_expiries("SPX", at.date())[:1])
    j = int(np.nanargmin(np.abs(want.delta + 0.2) + np.where(want.is_call, 9, 0)))
    c = OptionContract.from_occ(f"{want.root[j]}{pd.Timestamp(want.expiry[j]):%y%m%d}P{int(want.strike[j] * 1000):08d}")
    lq = m.leg_quotes([c], at.date())
    ref = synthetic.leg_quotes([c], at.date())
    i = int(np.searchsorted(lq.times, at.value))
    assert lq.bid[i, 0] == ref.bid[i, 0] and lq.ask[i, 0] == ref.ask[i, 0]
    assert np.isnan(lq.bid[i - 1, 0])  # before it was tracked: Tradier has no quote history
    assert lq.bid[-1, 0] == lq.bid[i, 0]  # later minutes carry the latest quote until their bar closes
    clock["t"] = pd.Timestamp("2023-03-14 11:05:30", tz=NY)
    m.bar_closed(pd.Timestamp("2023-03-14 11:05", tz=NY))
    assert lq.bid[i + 5, 0] == ref.bid[i + 5, 0] and lq.mid[i + 5, 0] == (ref.bid[i + 5, 0] + ref.ask[i + 5, 0]) / 2


def test_calendars_disagree_is_one_line(wired):
    server, clock, market = wired
    server.calendar_overrides["2023-03-14"] = "closed"
    with pytest.raises(StrikebenchError) as e:
        market()
    assert "Tradier's calendar says 2023-03-14 is closed" in str(e.value) and "\n" not in str(e.value)


def test_no_token_names_the_variable(monkeypatch):
    monkeypatch.delenv("TRADIER_TOKEN", raising=False)
    with pytest.raises(StrikebenchError, match="set TRADIER_TOKEN"):
        TradierFeed(TradierFeedParams(base_url="http://127.0.0.1:9")).open()


def test_settlement_value_is_the_days_print(wired, synthetic):
    server, clock, market = wired
    m = market()
    pm = OptionContract.from_occ("SPXW230313P03800000")  # PM-settled, expired Monday: Monday's close
    assert m.settlement_value(pm) == float(synthetic.bars("SPX").loc["2023-03-13"]["close"].iloc[-1])


def test_broker_check_reads_only_and_previews_without_placing(wired, tmp_path):
    """`strikebench broker check` rows for Tradier: credentials, account, option buying power, market clock, data
    permissions; the preview only with --preview, and never placed."""
    import yaml

    from strikebench.config import load_config
    from strikebench.live.launch import broker_check

    server, clock, market = wired
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"name": "chk", "strategies": [{"name": "credit_vertical"}],
                                   "broker": {"name": "tradier", "account": server.account, "token": TOKEN,
                                              "base_url": server.url}}))
    name, rows = broker_check(str(cfg))
    got = {r.item: r for r in rows}
    assert name == "tradier" and list(got) == ["credentials", "account", "option buying power", "market clock",
                                               "data permissions", "preview"]
    assert all(got[k].ok for k in list(got)[:5]) and got["preview"].ok is None
    assert "50,000.00" in got["option buying power"].detail and "2023-03-14: open" in got["market clock"].detail
    assert {m for m, *_ in server.requests} == {"GET"} and server.posted_orders == 0
    name, rows = broker_check(str(cfg), preview=True)
    prev = [r for r in rows if r.item == "preview"][0]
    assert prev.ok and "not placed" in prev.detail and server.posted_orders == 0
    (post,) = [r for r in server.requests if r[0] == "POST"]
    assert post[3]["preview"] == "true" and post[3]["class"] == "multileg" and post[3]["type"] == "credit"
    # a bad token: one row, naming the variable, nothing else asked
    bad = load_config(cfg).broker.build()
    object.__setattr__(bad.params, "token", type(bad.params.token)("not-the-token-xyz"))
    rows = bad.check(resolved=None)
    assert len(rows) == 1 and rows[0].ok is False and "TRADIER_TOKEN" in rows[0].fix + rows[0].detail
    assert "not-the-token" not in rows[0].detail
