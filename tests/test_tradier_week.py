"""A replayed week of the shipped credit-vertical strategy through the tradier broker and a loopback Tradier API.

The trader is `strikebench trade`'s account runner (in this process, so the loopback server's clock can follow
its replay clock); between them is HTTP on 127.0.0.1 with Tradier's paths, form bodies and JSON quirks, driven by
the real client; behind the server the paper broker fills at the synthetic market's quotes at the trader's time,
and the server reports each fill the Tradier way (per-leg cumulative ``exec_quantity`` and ``avg_fill_price``).
Faults are injected on the way: replies lost after an order was accepted, a timeout, a 5xx, garbled JSON, 429s,
and the trader stops in the middle of a session with an order just sent and resumes.
The reference is `strikebench backtest` of the same span and seed: trades, prices, fees and cash equal to the cent.
"""

from __future__ import annotations

import sqlite3
from collections import Counter

import pandas as pd
import yaml

from strikebench.brokers.paper import PaperAccount, PaperParams
from strikebench.brokers.tradier import TradierBroker, TradierParams
from strikebench.brokers.tradier_loopback import TradierLoopback
from strikebench.calendar import NY
from test_account import BASE, SPAN, assert_same_as_backtest, write_config

TOKEN = "tok-week-71c2aa90d4e5-secret"
ACCT = "VA000001"
ORDERS = f"/v1/accounts/{ACCT}/orders"


class WiredTradier(TradierBroker):
    """The tradier plugin whose ``sync(now)`` (and ``place``) also move the loopback server's clock to ``now``."""

    def __init__(self, params, server, tmp_path):
        super().__init__(params)
        self.server, self.tmp = server, tmp_path

    def connect(self, **kw):
        acct = super().connect(**kw)
        s = self.server
        if s.book is None:
            s.market = s.market or kw["market"]
            s.attach_book(PaperAccount(self.tmp / "book.sqlite", market=s.market, fill_model=kw["fill_model"],
                                       commission=kw["commission"], params=PaperParams(initial_cash=100_000,
                                                                                        latency_seconds=0, seed=5)))
        real_sync, real_place = acct.sync, acct.place

        def sync(now):
            s.set_now(now)
            real_sync(now)

        def place(order, now, **k):
            s.set_now(now)
            return real_place(order, now, **k)

        acct.sync, acct.place = sync, place
        return acct


def tradier_config(tmp_path, server) -> tuple:
    broker = {"name": "tradier", "account": ACCT, "token": "${SB_TEST_TRADIER_TOKEN}", "environment": "sandbox",
              "base_url": server.url, "initial_cash": 100000, "timeout_seconds": 0.5, "max_rate_wait_seconds": 5,
              "fill_model": BASE["broker"]["fill_model"], "commission": BASE["broker"]["commission"]}
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    doc["broker"] = broker
    cfg = tmp_path / "tradier.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    params = TradierParams(**{k: v for k, v in broker.items() if k not in ("name", "fill_model", "commission")
                              and k != "token"}, token=TOKEN)
    return cfg, params


def test_replayed_week_through_tradier_equals_backtest(tmp_path, monkeypatch):
    from strikebench.live.account import run_account

    monkeypatch.setenv("SB_TEST_TRADIER_TOKEN", TOKEN)
    reference = _backtest(tmp_path)
    with TradierLoopback(token=TOKEN, account=ACCT, now=lambda: pd.Timestamp(SPAN[0] + " 09:30", tz=NY)) as server:
        now = {"t": pd.Timestamp(SPAN[0] + " 09:30", tz=NY)}
        server._now = lambda: now["t"]
        server.set_now = lambda t: now.__setitem__("t", max(now["t"], pd.Timestamp(t).tz_convert(NY)))
        # each fault is taken by the next request that matches it: the week's first orders meet them
        server.rate_window = 1.0  # a 429 costs at most a second here
        for kind in ("drop", "slow", "500_after", "garbled", "429", "500"):
            server.fault("POST", ORDERS, kind, delay=0.8)
        server.fault("GET", ORDERS, "500")
        server.fault("GET", ORDERS, "429")
        server.fault("GET", ORDERS, "garbled")
        cfg, params = tradier_config(tmp_path, server)
        plugin = WiredTradier(params, server, tmp_path)
        acct = tmp_path / "tradier-week"
        # stop right after the first entry decision's bar (10:00 = bar 30): the order is working at the broker
        first = run_account(str(cfg), account=str(acct), clock="replay", start=SPAN[0], end=SPAN[1], speed=0,
                            broker_plugin=plugin, stop_after_bars=31)
        assert first["sessions_run"] and not first["sessions_run"][0]["completed"]
        run_account(str(cfg), account=str(acct), clock="replay", start=SPAN[0], end=SPAN[1], speed=0,
                    broker_plugin=plugin)
        journal = acct / "journal.sqlite"
        assert _completed(acct) == 5
        assert_same_as_backtest(journal, reference)
        assert _leg_prices(journal) == _leg_prices(reference) and len(_leg_prices(journal)) >= 6
        # one Tradier order per client id, every journal fill one of them; nothing left unconsumed
        tags = Counter(o["tag"] for o in server.orders.values())
        assert tags and max(tags.values()) == 1 and server.posted_orders == len(tags)
        db = sqlite3.connect(journal)
        try:
            sent = {r[0] for r in db.execute("SELECT DISTINCT order_id FROM order_events WHERE status = 'submitted'")}
            status = dict(db.execute("SELECT order_id, status FROM orders").fetchall())
        finally:
            db.close()
        assert len(sent) == len(tags)
        assert not server.faults, server.faults  # every injected fault happened
        assert all(s in ("filled", "cancelled", "expired", "rejected") for s in status.values()), status
        # at every session's end the runtime read Tradier's positions and cash (through the API) and they were the
        # journal's: open legs and cash to the cent
        for day, summary in _summaries(acct):
            assert summary["broker_positions"] == summary["journal_positions"], day
            assert summary["broker_cash"] == summary["journal_cash"], day
        assert any(s["journal_positions"] for _, s in _summaries(acct))  # the week ends with a trade open
        for f in acct.iterdir():
            if f.is_file():
                assert TOKEN.encode() not in f.read_bytes(), f


def _backtest(tmp_path, cfg=None):
    """The reference: what `strikebench backtest` runs (run_backtest), in this process, on the same YAML with the
    backtest broker."""
    from strikebench.config import load_config
    from strikebench.engine.runner import run_backtest
    from strikebench.plugin_manager import get_plugin_manager

    pm = get_plugin_manager()
    resolved = load_config(cfg or write_config(tmp_path), (f"output.dir={tmp_path / 'bt'}", "output.plots=false"),
                           registry=pm.registry)
    run_backtest(resolved, progress=False, pm=pm)
    return next((tmp_path / "bt").glob("*/journal.sqlite"))


def _summaries(acct) -> list:
    import json

    db = sqlite3.connect(acct / "journal.sqlite")
    try:
        return [(d, json.loads(s)) for d, s in db.execute("SELECT day, summary FROM account_sessions WHERE completed"
                                                          " = 1 ORDER BY day")]
    finally:
        db.close()


def _leg_prices(journal) -> list:
    db = sqlite3.connect(journal)
    try:
        return [(p, lp) for p, lp in db.execute("SELECT price, leg_prices FROM fills WHERE kind = 'fill' ORDER BY "
                                                "filled_at, rowid")]
    finally:
        db.close()


def _completed(acct) -> int:
    db = sqlite3.connect(acct / "journal.sqlite")
    try:
        return db.execute("SELECT COUNT(*) FROM account_sessions WHERE completed = 1").fetchone()[0]
    finally:
        db.close()


def test_a_position_changed_while_the_trader_was_down_stops_new_risk(tmp_path, monkeypatch):
    """Monday's spread is open; overnight a position the journal never had appears at Tradier (a manual trade, an
    assignment). Tuesday's session starts by reading Tradier's positions: they differ from the journal's, so no
    new risk is taken all day (Tuesday's entry is not sent), exits still go out (Monday's spread closes as in the
    backtest), and the difference is named."""
    from strikebench.live.account import account_status, run_account

    monkeypatch.setenv("SB_TEST_TRADIER_TOKEN", TOKEN)
    with TradierLoopback(token=TOKEN, account=ACCT) as server:
        now = {"t": pd.Timestamp(SPAN[0] + " 09:30", tz=NY)}
        server._now = lambda: now["t"]
        server.set_now = lambda t: now.__setitem__("t", max(now["t"], pd.Timestamp(t).tz_convert(NY)))
        cfg, params = tradier_config(tmp_path, server)
        plugin = WiredTradier(params, server, tmp_path)
        acct = tmp_path / "tradier-pos"
        run_account(str(cfg), account=str(acct), clock="replay", start=SPAN[0], end="2023-03-14", speed=0,
                    broker_plugin=plugin, stop_after_sessions=1)
        pos = server.book.positions()
        assert len(pos) == 2 and _open_trades(acct) == 1
        foreign = "SPXW230317P03000000"
        server.position_changes[foreign] = 1  # appeared at the broker while the trader was down
        opening_before = _opening_orders(server)
        run_account(str(cfg), account=str(acct), clock="replay", start=SPAN[0], end="2023-03-14", speed=0,
                    broker_plugin=plugin)
        st = account_status(acct)
        assert st["new_risk_stopped"] and foreign in st["new_risk_stopped"], st["new_risk_stopped"]
        assert _opening_orders(server) == opening_before == 1  # Tuesday's entry was not sent
        assert _open_trades(acct) == 0 and server.book.positions() == {}  # Monday's spread was closed by its exit
        tags = Counter(o["tag"] for o in server.orders.values())
        assert max(tags.values()) == 1


def _opening_orders(server) -> int:
    return sum(1 for o in server.orders.values() if str(o["leg"][0]["side"]).endswith("_to_open"))


def _open_trades(acct) -> int:
    db = sqlite3.connect(acct / "journal.sqlite")
    try:
        return db.execute("SELECT COUNT(*) FROM trades WHERE closed_at IS NULL").fetchone()[0]
    finally:
        db.close()


def test_a_session_decided_on_tradier_chains_equals_backtest(tmp_path, monkeypatch):
    """`data: {source: tradier}` and `broker: tradier` together: Tuesday's session decides on the chains, greeks
    and bars the loopback Tradier API serves (the synthetic market's, minute by minute at the trader's clock) and
    trades through its order API; the trade equals `strikebench backtest` of that day to the cent, and each
    decision's stored chain slice replays (`replay-decision`)."""
    from strikebench.feeds.tradier import TradierFeed
    from strikebench.live.account import run_account
    from strikebench.report import replay_decision

    monkeypatch.setenv("SB_TEST_TRADIER_TOKEN", TOKEN)
    from strikebench.engine.core import Engine

    engines: dict[str, Engine] = {}
    which = ["ref"]
    built = Engine.__init__

    def keep(self, *args, **kwargs):  # each run's engine (its equity_curve: the account value after every bar)
        built(self, *args, **kwargs)
        engines[which[0]] = self

    monkeypatch.setattr(Engine, "__init__", keep)
    day = "2023-03-14"
    ref_cfg = write_config(tmp_path)
    doc = yaml.safe_load(ref_cfg.read_text())
    doc["data"].update(start=day, end=day)
    ref_cfg.write_text(yaml.safe_dump(doc))
    reference = _backtest(tmp_path, ref_cfg)
    from strikebench.feeds.synthetic import SyntheticMarket

    with TradierLoopback(token=TOKEN, account=ACCT, market=SyntheticMarket(seed=42, start=SPAN[0], end=SPAN[1])) \
            as server:
        now = {"t": pd.Timestamp(day + " 09:30", tz=NY)}
        server._now = lambda: now["t"]
        server.set_now = lambda t: now.__setitem__("t", max(now["t"], pd.Timestamp(t).tz_convert(NY)))
        cfg, params = tradier_config(tmp_path, server)
        doc = yaml.safe_load(cfg.read_text())
        doc["data"] = {"source": "tradier", "token": "${SB_TEST_TRADIER_TOKEN}", "base_url": server.url,
                       "max_dte": 9}
        cfg.write_text(yaml.safe_dump(doc))
        from strikebench.feeds.tradier import TradierMarket

        opened, closed = TradierFeed.open, TradierMarket.bar_closed
        monkeypatch.setattr(TradierFeed, "open", lambda self, now=None: opened(self, now=lambda: now_t()))

        def bar_closed(self, t):  # the trader's clock reached t: so has the loopback's (as the wall clock would)
            server.set_now(t)
            return closed(self, t)

        monkeypatch.setattr(TradierMarket, "bar_closed", bar_closed)

        def now_t():
            return now["t"]

        plugin = WiredTradier(params, server, tmp_path)
        acct = tmp_path / "tradier-day"
        which[0] = "live"
        # until 11:25 (bar 115): the day's trade opens at 10:00 and its exit fills at 11:24
        run_account(str(cfg), account=str(acct), clock="replay", start=day, end=day, speed=0, broker_plugin=plugin,
                    stop_after_bars=115)
        journal = acct / "journal.sqlite"
        live, ref = _trades(journal), _trades(reference)
        assert len(ref) == 1 and len(live) == len(ref) and live[0][1] is not None
        for a, b in zip(live, ref):
            assert pd.Timestamp(a[0]) == pd.Timestamp(b[0]) + pd.Timedelta(minutes=1), (a, b)
            assert pd.Timestamp(a[1]) == pd.Timestamp(b[1]) + pd.Timedelta(minutes=1), (a, b)
            assert a[2:] == b[2:], (a, b)
        assert _leg_prices(journal) == _leg_prices(reference)
        # the account value after every bar the trader ran (115: the trade held from 10:00 to 11:24) is the
        # backtest's to the cent: the position is marked on each closed bar's quotes, not left at its fill's mark
        ref_v, live_v = (pd.Series(engines[k].equity_curve, index=engines[k].timeline.stamps) for k in ("ref", "live"))
        live_v = live_v.dropna()
        assert len(live_v) == 115 and live_v.index.isin(ref_v.index).all()
        assert (live_v.round(2) == ref_v[live_v.index].round(2)).all(), \
            live_v.round(2)[live_v.round(2) != ref_v[live_v.index].round(2)].head()
        assert live_v.round(2).nunique() > 10  # the open spread's value moved while it was held
        db = sqlite3.connect(journal)
        try:
            decisions = [r[0] for r in db.execute("SELECT decision_id FROM trade_decisions WHERE snapshot_id IS NOT"
                                                  " NULL ORDER BY decided_at")]
        finally:
            db.close()
        assert decisions
        result = replay_decision(acct, decisions[0])  # the chain slice it saw was stored, checksum verified
        assert result.same and result.snapshot_rows > 100, result.differences


def _trades(journal) -> list:
    db = sqlite3.connect(journal)
    try:
        return db.execute("SELECT opened_at, closed_at, contracts, entry_price, exit_price, fees, realized_pnl,"
                          " exit_reason FROM trades ORDER BY opened_at").fetchall()
    finally:
        db.close()
