"""The ``files`` data feed: a backtest on exported Parquet / CSV files equals, to the cent, the same
backtest on the synthetic market the files were exported from."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from strikebench.api import RunInfo
from strikebench.engine.runner import build_engine, run_cerebro
from strikebench.errors import DataError
from strikebench.feeds.files import FileMarket, chain_file, settlements_file
from strikebench.feeds.synthetic import SyntheticMarket, export
from strikebench.options.contracts import OptionContract
from strikebench.plugin_manager import get_plugin_manager
from strikebench.portfolio import to_cents
from strikebench.report import load_config_text

START, END = "2023-01-03", "2023-01-06"
SEED = 42
# The default scenario: a listed strike stays listed until its expiry (as on the exchange), so the
# files hold every open leg on every bar and the two runs agree bar by bar.

CONFIG = """
name: files-eq
data: {data}
broker:
  name: backtest
  params: {{initial_cash: 100000}}
  fill_model: {{name: mid_slippage, params: {{k: 0.30}}}}
  commission: {{name: cboe_retail}}
strategies:
  - name: credit_vertical
    params: {{dte_targets: [1, 2], dte_tolerance: 1, entry_times: ["10:00", "11:00", "13:00"],
              short_deltas: [0.10, 0.20], side: put, width: 25, take_profit_pct: 0.95, stop_multiple: 1.5}}
risk:
  - name: max_open_trades
    params: {{limit: 2}}
"""


@pytest.fixture(scope="module")
def scenario():
    return "default"


@pytest.fixture(scope="module")
def market(scenario):
    return SyntheticMarket(seed=SEED, start=START, end=END, scenario=str(scenario))


@pytest.fixture(scope="module")
def exported(market, tmp_path_factory):
    """The span the backtest runs, exported once per format: every minute (a backtest reads each bar's
    quotes), SPX only, expiries within 4 days and strikes within 7% (the strategy reads 1-3 DTE puts
    at 0.10-0.20 delta, and marks legs opened up to 2 sessions earlier), so the files stay small."""
    out = {}
    for fmt in ("parquet", "csv"):
        d = tmp_path_factory.mktemp(fmt)
        export(market, d, interval_minutes=1, underlyings=("SPX",), symbols=("SPX",), format=fmt,
               max_dte=4, strike_range_pct=7.0)
        out[fmt] = d
    return out


def _run(data_yaml: str):
    pm = get_plugin_manager()
    resolved = load_config_text(CONFIG.format(data=data_yaml), registry=pm.registry)
    market = resolved.data.build().open()
    engine = build_engine(resolved, run=RunInfo(run_id="eq", name="eq", mode="backtest"), market=market)
    run_cerebro(engine)
    return engine


def _cents(dollars):
    return None if dollars is None else to_cents(dollars)  # None: the trade is still open at the end


def _fills(engine):
    return sorted((o.client_id, f.filled_at, f.quantity, f.net_price, f.leg_prices, f.fees, f.leg_quotes)
                  for o in engine.broker.orders.values() for f in o.fills)


@pytest.fixture(scope="module")
def synthetic_run(scenario):
    return _run(f"{{source: synthetic, seed: {SEED}, start: {START}, end: {END}, scenario: '{scenario}'}}")


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_backtest_on_files_equals_the_synthetic_market_to_the_cent(exported, synthetic_run, fmt):
    ref = synthetic_run
    got = _run(f"{{source: files, path: '{exported[fmt]}', format: {fmt}}}")
    assert isinstance(got.market, FileMarket)
    trades_ref = ref.portfolio.all_trades()
    reasons = {t.exit_reason for t in trades_ref}
    # the span exercises entries, a stop and a settlement (else the equality would prove little): a trade
    # held to expiry, or a partly closed one whose no-bid wing settled (a7ec364)
    settled = [t for t in trades_ref if t.exit_reason == "settlement" or t.settled_leg_values]
    assert len(trades_ref) >= 3 and "stop_loss" in reasons and settled, reasons
    trades = got.portfolio.all_trades()
    assert [astuple(t) for t in trades] == [astuple(t) for t in trades_ref]
    assert [_cents(t.realized_pnl) for t in trades] == [_cents(t.realized_pnl) for t in trades_ref]
    assert _fills(got) == _fills(ref) and len(_fills(ref)) >= len(trades_ref)
    assert to_cents(got.portfolio.cash) == to_cents(ref.portfolio.cash)
    assert got.equity_by_day == ref.equity_by_day
    # the files list every open leg every session (listings only grow), so the marks agree every bar
    days = np.array(got.timeline.days, dtype=object)[got.timeline.day_codes]
    for day in sorted(set(days)):
        index = got.market._session("SPX", day).index
        for t in trades:
            if t.opened_at.date() <= day and (t.closed_at is None or day <= t.closed_at.date()):
                keys = [(c.root, c.expiry, int(round(c.strike * 1000)), c.is_call) for c in (l.contract for l in t.legs)]
                assert all(k in index for k in keys), (day, t.legs)
    np.testing.assert_array_equal(got.equity_curve, ref.equity_curve)
    assert got.market.approximated_settlements == {}  # the settlement file had every print


def test_snapshots_and_leg_quotes_equal_the_market_they_came_from(market, exported):
    f = FileMarket(exported["parquet"], "parquet")
    at = pd.Timestamp("2023-01-04 11:07", tz="America/New_York")
    a, b = market.snapshot("SPX", at), f.snapshot("SPX", at)
    assert b.timestamp == a.timestamp and b.underlying_price == a.underlying_price
    cols = ("bid", "ask", "last", "volume", "open_interest", "iv", "delta", "gamma", "theta", "vega")

    def frame(s):
        return pd.DataFrame({c: getattr(s, c) for c in ("root", "expiry", "strike", "is_call") + cols}
                            ).set_index(["root", "expiry", "strike", "is_call"])

    fa, fb = frame(a), frame(b)
    assert 200 < len(fb) < len(fa)  # the export kept a band of the chain
    for c in cols:
        np.testing.assert_array_equal(fa.loc[fb.index, c].to_numpy(), fb[c].to_numpy())
    # the legs of a put vertical for the whole next session, every minute
    exp = dt.date(2023, 1, 6)
    puts = fb.xs((np.datetime64(exp, "D"), False), level=("expiry", "is_call"))
    k = float(puts.index.get_level_values("strike")[len(puts) // 2])
    legs = [OptionContract.make("SPXW", exp, k, "P"), OptionContract.make("SPXW", exp, k - 25, "P")]
    for day in (dt.date(2023, 1, 5), dt.date(2023, 1, 6)):
        qa, qb = market.leg_quotes(legs, day), f.leg_quotes(legs, day)
        np.testing.assert_array_equal(qb.times, qa.times)
        np.testing.assert_array_equal(qb.bid, qa.bid)
        np.testing.assert_array_equal(qb.ask, qa.ask)
        assert np.isfinite(qb.bid).all()
    assert f.listed_expiries("SPX", dt.date(2023, 1, 4)) == [dt.date(2023, 1, 4), dt.date(2023, 1, 5),
                                                            dt.date(2023, 1, 6)]


def test_settlement_from_the_file_else_the_underlying_print_flagged_as_an_approximation(market, exported):
    am = OptionContract.make("SPX", dt.date(2023, 1, 5), 3800, "P")  # AM: the session's opening print
    pm = OptionContract.make("SPXW", dt.date(2023, 1, 5), 3800, "P")  # PM: its close
    outside = OptionContract.make("SPX", dt.date(2023, 1, 20), 4000, "P")
    f = FileMarket(exported["csv"], "csv")
    assert f.settlement_value(pm) == market.settlement_value(pm)
    assert f.settlement_value(am) == market.settlement_value(am)
    assert f.approximated_settlements == {}
    # without the settlement file: the expiry session's first open (AM) / last close (PM), flagged
    path = settlements_file(exported["csv"], "csv")
    saved = path.read_bytes()
    os.remove(path)
    try:
        g = FileMarket(exported["csv"], "csv")
        day = market.bars("SPX").loc["2023-01-05"]
        assert g.settlement_value(pm) == float(day["close"].iloc[-1])
        assert g.settlement_value(am) == float(day["open"].iloc[0])
        assert set(g.approximated_settlements) == {am, pm}
        assert "opening print" in g.approximated_settlements[am]
        with pytest.raises(DataError, match="no SPX bars on 2023-01-20"):
            g.settlement_value(outside)
    finally:
        path.write_bytes(saved)


def test_a_session_without_a_chain_file_is_one_line_naming_the_file_before_the_run(exported, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(exported["parquet"], d)
    os.remove(chain_file(d, "SPX", dt.date(2023, 1, 5), "parquet"))
    with pytest.raises(DataError, match=r"no SPX chain for session 2023-01-05 \(expected chains/SPX/2023-01-05.parquet;"):
        FileMarket(d, "parquet")
    f = FileMarket(d, "parquet", end=dt.date(2023, 1, 4))  # the sessions the files cover
    assert [x.date() for x in f.sessions()] == [dt.date(2023, 1, 3), dt.date(2023, 1, 4)]
    assert f.bars("SPX").index[-1] == pd.Timestamp("2023-01-04 15:59", tz="America/New_York")


def test_an_approximated_settlement_is_flagged_in_the_journal(exported, tmp_path, capsys):
    """No settlements file: the expiring spreads settle on the SPX bars' open (AM) / close (PM) of the expiry
    session, and each such trade says so in the journal (trades.settlement_note) and the run summary."""
    import json
    import shutil
    import sqlite3

    from strikebench.cli import main

    d = tmp_path / "nosettle"
    shutil.copytree(exported["parquet"], d)
    os.remove(settlements_file(d, "parquet"))
    cfg = tmp_path / "files.yaml"
    cfg.write_text(CONFIG.format(data=f"{{source: files, path: '{d}', format: parquet}}"))
    out = tmp_path / "runs"
    assert main(["backtest", str(cfg), "--quiet", "--set", f"output.dir={out}"]) == 0
    assert "Settlements approximated (no print)" in capsys.readouterr().out
    (journal,) = out.glob("*/journal.sqlite")
    db = sqlite3.connect(journal)
    db.row_factory = sqlite3.Row
    rows = db.execute("SELECT trade_id, expiry, exit_reason, settlement_note FROM trades").fetchall()
    # settled: held to expiry, or partly closed with a no-bid wing left to settle (a7ec364)
    ids = {r[0] for r in db.execute("SELECT trade_id FROM fills WHERE kind = 'settlement'")}
    settled = [r for r in rows if r["trade_id"] in ids]
    assert settled and all(r["settlement_note"] is None for r in rows if r["trade_id"] not in ids)
    bars = pd.read_parquet(d / "bars" / "SPX.parquet")
    bars["day"] = bars["timestamp"].dt.tz_convert("America/New_York").dt.date.astype(str)
    for r in settled:  # SPXW: PM-settled, the expiry session's last close
        close = float(bars.loc[bars["day"] == r["expiry"], "close"].iloc[-1])
        assert r["settlement_note"] == f"approximated: SPX closing print {close:g} on {r['expiry']} (no settlement file entry)"
        cash = db.execute("SELECT cash, leg_prices FROM fills WHERE kind = 'settlement' AND trade_id = ?",
                          (r["trade_id"],)).fetchone()
        legs = db.execute("SELECT strike, option_right, ratio FROM trade_legs WHERE trade_id = ? ORDER BY leg",
                          (r["trade_id"],)).fetchall()
        # intrinsic at that close, per leg, as the settlement row records it
        intrinsic = [max(0.0, (float(leg["strike"]) - close) if leg["option_right"] == "P" else (close - float(leg["strike"])))
                     for leg in legs]
        if r["exit_reason"] != "settlement":  # partly closed: only its long (no-bid) legs were left to settle
            intrinsic = [x for x, leg in zip(intrinsic, legs) if float(leg["ratio"]) > 0]
        assert [float(x) for x in json.loads(cash["leg_prices"])] == intrinsic
