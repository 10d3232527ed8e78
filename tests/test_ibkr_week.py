"""A replayed week of the shipped credit-vertical strategy through the ibkr broker and a loopback TWS.

The trader is `strikebench trade`'s account runner (in this process, so the fake TWS's exchange can follow its
replay clock); TWS is the socket-protocol fake driven by the real ib_async; behind TWS, the paper broker's fill
model fills at the time the trader has reached and TWS reports each fill the IB way (an execution per leg and one
for the BAG, commission reports). TWS drops every connection twice during the week (a nightly restart, a blip).
The reference is `strikebench backtest` of the same span and seed: trades, prices, fees and cash equal to the cent.
"""

from __future__ import annotations

import sqlite3
from collections import Counter

import yaml

from fake_tws import FakeTWS, PaperExchange
from strikebench.brokers.ibkr import IBKRBroker, IBKRParams
from test_account import BASE, SPAN, assert_same_as_backtest, write_config


class WiredIBKR(IBKRBroker):
    """The ibkr plugin whose ``sync(now)`` also moves the exchange behind the fake TWS to ``now``."""

    def __init__(self, params, tws, tmp_path, on_advance=None):
        super().__init__(params)
        self.tws, self.tmp, self.exchange, self.on_advance = tws, tmp_path, None, on_advance

    def connect(self, **kw):
        acct = super().connect(**kw)
        if self.exchange is None:
            self.exchange = PaperExchange(self.tws, self.tmp / "exchange.sqlite", market=kw["market"],
                                          fill_model=kw["fill_model"], commission=kw["commission"])
            self.exchange.on_advance = self.on_advance
        real = acct.sync

        def sync(now):
            self.exchange.advance(now)
            real(now)

        acct.sync = sync
        return acct


def test_replayed_week_through_tws_equals_backtest(tmp_path):
    from strikebench.live.account import run_account

    reference = _backtest(tmp_path)
    with FakeTWS() as tws:
        broker = {"name": "ibkr", "params": {"port": tws.port, "client_id": 17, "account": "DU1234567",
                                             "initial_cash": 100000, "timeout_seconds": 3},
                  "fill_model": BASE["broker"]["fill_model"], "commission": BASE["broker"]["commission"]}
        cfg = tmp_path / "ibkr.yaml"
        doc = yaml.safe_load(yaml.safe_dump(BASE))
        doc["broker"] = broker
        cfg.write_text(yaml.safe_dump(doc))
        drops = []

        def restart_twice(ex, now):  # TWS's nightly restart right after the first fill, and a blip on Thursday
            if (tws.executions and not drops) or (len(drops) == 1 and str(now.date()) == "2023-03-16"
                                                  and now.hour >= 11):
                drops.append(str(now))
                tws.drop()

        plugin = WiredIBKR(IBKRParams(**broker["params"]), tws, tmp_path, on_advance=restart_twice)
        acct = tmp_path / "acct"
        out = run_account(str(cfg), account=str(acct), clock="replay", start=SPAN[0], end=SPAN[1], speed=0,
                          broker_plugin=plugin)
        assert _completed(acct) == 5, out
        journal = acct / "journal.sqlite"
        assert_same_as_backtest(journal, reference)
        # each fill's leg prices too (IB's leg executions, read back per leg), in order
        assert _leg_prices(journal) == _leg_prices(reference) and len(_leg_prices(journal)) >= 6
        # TWS saw one order per client id, and every journal fill is one BAG execution at TWS
        refs = Counter(o["ref"] for o in tws.live_orders())
        assert refs and max(refs.values()) == 1
        db = sqlite3.connect(journal)
        try:
            sent = {r[0] for r in db.execute("SELECT DISTINCT order_id FROM order_events WHERE status = 'submitted'")}
            jfills = db.execute("SELECT fill_id FROM fills WHERE kind != 'settlement'").fetchall()
        finally:
            db.close()
        assert sent == set(refs)
        bags = [e for e in tws.executions if e["contract"]["tradingClass"] == "COMB"]
        assert sorted(f[0] for f in jfills) == sorted(e["exec_id"] for e in bags)
        assert len(tws.executions) == 3 * len(bags)  # two legs + the BAG per fill
        assert len(drops) == 2 and plugin.exchange.advances > 100


def _backtest(tmp_path):
    """`strikebench backtest` of the span, in this process (the backtest broker: the same YAML, broker backtest)."""
    from strikebench.config import load_config
    from strikebench.engine.runner import run_backtest
    from strikebench.plugin_manager import get_plugin_manager

    pm = get_plugin_manager()
    out = tmp_path / "bt"
    resolved = load_config(str(write_config(tmp_path)), (f"output.dir={out}", "output.plots=false"),
                           registry=pm.registry)
    run_backtest(resolved, progress=False, pm=pm, out_dir=str(out))
    return next(out.glob("*/journal.sqlite"))


def _leg_prices(journal) -> list:
    db = sqlite3.connect(journal)
    try:
        return [(p, lp) for p, lp in db.execute("SELECT price, leg_prices FROM fills WHERE kind = 'fill' ORDER BY "
                                                "filled_at, rowid")]
    finally:
        db.close()


def _completed(acct) -> int:
    path = acct / "journal.sqlite"
    if not path.exists():
        return 0
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT COUNT(*) FROM account_sessions WHERE completed = 1").fetchone()[0]
    finally:
        db.close()
