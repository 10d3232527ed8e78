"""The run journal: exact money, offset times, fills that add up to trades, snapshots that replay,
incomplete runs that say so, and a report rebuilt from the journal alone."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import re
import sqlite3
import subprocess
import sys
import textwrap
import zlib
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pandas as pd
import pytest

from strikebench.api import RunInfo, Strategy
from strikebench.cli import main
from strikebench.engine.core import Engine
from strikebench.journal import Journal, JournalError, dollars_text, points_text, snapshot_to_bytes
from strikebench.options.contracts import OptionContract
from strikebench.options.orders import Leg, TimeInForce
from strikebench.plugin_manager import get_plugin_manager
from strikebench.plugins import journal as journal_plugin
from strikebench.plugins.commissions import CboeRetail
from strikebench.plugins.fill_models import MidSlippageFill
from strikebench.strategies.credit_vertical import CreditVertical
from strikebench.testing import ModelMarket, make_chain

DAY = dt.date(2024, 1, 10)  # a Wednesday
P4700 = OptionContract("SPXW", DAY, 4700.0, "P")
P4695 = OptionContract("SPXW", DAY, 4695.0, "P")
ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d$")
MONEY = re.compile(r"^-?\d+\.\d\d$")
CV_PARAMS = dict(dte_targets=[0, 2], dte_tolerance=0, entry_times=["10:00", "13:00"])

CONFIG_YAML = """\
name: jtest
data: {source: synthetic, seed: 7, start: 2024-01-08, end: 2024-01-12}
broker:
  params: {initial_cash: 100000}
  fill_model: {name: mid_slippage, params: {k: 0.30}}
  commission: {name: cboe_retail}
strategies:
  - name: credit_vertical
    params: {dte_targets: [0, 2], dte_tolerance: 0, entry_times: ["10:00", "13:00"]}
"""


class PutSpreadOnce(Strategy):
    """Sells the 4700/4695 put spread at 10:00 on DAY and lets it settle."""

    name = "put_spread_once"

    def decision_times(self):
        return [dt.time(10, 0)]

    def on_decision_time(self, ctx):
        if ctx.today == DAY:
            ctx.open_trade([Leg(P4700, -1), Leg(P4695, +1)], 1)


def swing(index):
    """SPX dips 120 points and recovers over the week: take profits and stops both happen."""
    x = np.linspace(0.0, 1.0, len(index))
    return 4800.0 - 120.0 * np.sin(x * np.pi * 2)


@pytest.fixture(scope="module")
def pm():
    return get_plugin_manager(load_entry_points=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request):
    """Each test taking it runs twice: journal.sqlite in the run folder (None), then a new database on the
    test suite's real PostgreSQL server (tests/pgserver.py)."""
    return None if request.param == "sqlite" else request.getfixturevalue("pg_url")


def _journal_config(url):
    """What the journal plugin reads of a run's config: only ``config.journal.url``."""
    from types import SimpleNamespace

    return SimpleNamespace(config=SimpleNamespace(journal=SimpleNamespace(url=url)))


def make_engine(pm, out: Path, strategies, market, *, run_id: str, config=None, initial_cash=100_000.0,
                journal_url=None):
    out.mkdir(parents=True, exist_ok=True)
    if journal_url is not None:
        config = _journal_config(journal_url)
    run = RunInfo(run_id=run_id, name=run_id, mode="backtest", config=config, output_dir=str(out), seed=7)
    engine = Engine(market=market, strategies=strategies, fill_model=MidSlippageFill(), commission=CboeRetail(),
                    initial_cash=initial_cash, run=run, hook=pm.hook)
    pm.hook.on_run_start(run=run)
    return engine


def rows(path, sql: str, params=()) -> list[sqlite3.Row]:
    if str(path).startswith("postgresql://"):  # through the journal's own read-only connection
        from strikebench.journal import open_read_only

        j = open_read_only(path)
        try:
            return j.execute(sql, params)
        finally:
            j.close()
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


@pytest.fixture(scope="module")
def cv_run(pm, tmp_path_factory):
    """A finished week of credit verticals on a swinging market (shared by several tests)."""
    out = tmp_path_factory.mktemp("cv") / "cv-run"
    market = ModelMarket("2024-01-08", "2024-01-12", spot=swing)
    engine = make_engine(pm, out, [("credit_vertical", CreditVertical(CreditVertical.Params(**CV_PARAMS)))], market,
                         run_id="cv-run")
    engine.run_all()
    return engine, out


# ---------------------------------------------------------------- storage
def test_money_is_exact_text_and_times_carry_their_offset(pm, tmp_path, journal_url):
    market = ModelMarket(DAY, DAY, spot=4710.0, quotes={P4700: (3.00, 3.40), P4695: (2.40, 2.60)},
                         settlement={DAY: 4697.0})
    engine = make_engine(pm, tmp_path, [("spread", PutSpreadOnce())], market, run_id="money", journal_url=journal_url)
    engine.run_all()
    db = journal_url or tmp_path / "journal.sqlite"

    (t,) = rows(db, "SELECT * FROM trades")
    # sold at 0.50 credit (mid 0.70 less 0.30 x 0.60 width, to the 0.05 tick), fees 2 x 1.28,
    # settled at 4697: the short 4700 put pays 3.00 -> 50.00 - 2.56 - 300.00
    assert (t["entry_price"], t["entry_credit"], t["exit_price"], t["exit_debit"]) == ("-0.50", "0.50", "3.00", "3.00")
    assert (t["fees"], t["realized_pnl"], t["exit_reason"], t["contracts"]) == ("2.56", "-252.56", "settlement", 1)
    if journal_url is None:
        typed = rows(db, "SELECT typeof(entry_credit), typeof(exit_debit), typeof(fees), typeof(realized_pnl) FROM trades")
        assert set(typed[0]) == {"text"}
    else:  # NUMERIC on PostgreSQL, read back as the same exact text
        typed = rows(db, "SELECT pg_typeof(entry_credit)::text, pg_typeof(fees)::text, pg_typeof(realized_pnl)::text"
                         " FROM trades")
        assert set(typed[0]) == {"numeric"}
    assert t["opened_at"] == "2024-01-10T10:00:00-05:00"
    assert t["closed_at"] == "2024-01-10T16:00:00-05:00"

    legs = rows(db, "SELECT occ_symbol, ratio, entry_price, exit_price FROM trade_legs ORDER BY leg")
    # leg prints (docs/fills.md): the net -0.50 lies at f = (-0.50 - -1.00) / (-0.40 - -1.00) = 5/6 of the
    # way from the far side (buy 2.40, sell 3.40) to the natural (buy 2.60, sell 3.00): targets
    # 3.40 - 5/6 x 0.40 = 3.067 -> 3.10 (0.10 grid above 3.00) and 2.40 + 5/6 x 0.20 = 2.567 -> 2.55;
    # the 0.05 left over moves the long leg, which has the room, to 2.60: -3.10 + 2.60 = -0.50
    assert [tuple(r) for r in legs] == [("SPXW  240110P04700000", -1, "3.10", "3.00"),
                                        ("SPXW  240110P04695000", 1, "2.60", "0.00")]

    fills = rows(db, "SELECT kind, price, quantity, fees, cash, filled_at FROM fills ORDER BY filled_at")
    assert [tuple(r)[:5] for r in fills] == [("fill", "-0.50", 1, "2.56", "47.44"),
                                             ("settlement", "3.00", 1, "0.00", "-300.00")]
    assert rows(db, "SELECT equity FROM equity")[0][0] == "99747.44"

    for table, cols in {"trades": ("opened_at", "closed_at"), "fills": ("filled_at",), "orders": ("created_at",),
                        "order_events": ("at",)}.items():
        for col in cols:
            for (value,) in rows(db, f"SELECT {col} FROM {table}"):
                assert ISO_WITH_OFFSET.match(value), (table, col, value)
    for table, cols in {"trades": ("fees", "realized_pnl", "max_loss"), "fills": ("fees", "cash"),
                        "equity": ("equity",)}.items():
        for col in cols:
            for (value,) in rows(db, f"SELECT {col} FROM {table}"):
                assert MONEY.match(value), (table, col, value)
    (run,) = rows(db, "SELECT completed, initial_cash, seed, code_version FROM runs")
    assert (run["completed"], run["initial_cash"], run["seed"]) == (1, "100000.00", 7)
    assert run["code_version"]


def test_amount_formatting_is_exact():
    assert dollars_text(-252.56) == "-252.56"
    assert dollars_text(0.1 + 0.2) == "0.30"
    assert dollars_text(-0.001) == "0.00"
    assert points_text(-0.5) == "-0.50"
    assert points_text(Decimal("1.125")) == "1.125"
    assert points_text(4700.0) == "4700.00"
    assert points_text(Decimal(1) / 3) == "0.3333"


def test_fills_add_up_to_every_trade_and_to_the_cash(cv_run):
    engine, out = cv_run
    db = out / "journal.sqlite"
    trades = rows(db, "SELECT trade_id, realized_pnl, exit_reason, fees FROM trades")
    closed = [t for t in trades if t["realized_pnl"] is not None]
    assert {t["exit_reason"] for t in closed} >= {"take_profit", "stop_loss"}
    for t in closed:
        fills = rows(db, "SELECT cash, fees FROM fills WHERE trade_id = ?", (t["trade_id"],))
        assert sum(Decimal(f["cash"]) for f in fills) == Decimal(t["realized_pnl"]), t["trade_id"]
        assert sum(Decimal(f["fees"]) for f in fills) == Decimal(t["fees"])
    # every cash movement of the run is a fill row: initial cash + Σ cash == the portfolio's cash, to the cent
    total = sum(Decimal(r["cash"]) for r in rows(db, "SELECT cash FROM fills"))
    assert int((Decimal("100000.00") + total) * 100) == engine.portfolio.cash_cents
    assert len(closed) == len(engine.portfolio.closed_trades())
    # decisions link to the trades they opened
    linked = rows(db, "SELECT COUNT(*) FROM trades t JOIN trade_decisions d USING (run_id, decision_id)")
    assert linked[0][0] == len(trades) > 0


def test_settlement_after_a_partial_close_splits_the_exit(pm, tmp_path, journal_url):
    """Two spreads, one closed by an order at 14:00, the other settled: both cash flows are fill rows."""

    class TwoThenOne(PutSpreadOnce):
        name = "two_then_one"

        def decision_times(self):
            return [dt.time(10, 0), dt.time(14, 0)]

        def on_decision_time(self, ctx):
            if ctx.today != DAY:
                return
            if ctx.now.time() == dt.time(10, 0):
                ctx.open_trade([Leg(P4700, -1), Leg(P4695, +1)], 2)
            else:
                (trade,) = ctx.open_trades()
                legs = tuple(leg.reversed() for leg in trade.legs)
                # close one of the two combos (the context's close_trade always closes all)
                ctx._send(legs, 1, None, "partial", trade.trade_id, opens=False, decision=None, tif=TimeInForce.DAY)

    market = ModelMarket(DAY, DAY, spot=4710.0, quotes={P4700: (3.00, 3.40), P4695: (2.40, 2.60)},
                         settlement={DAY: 4697.0})
    engine = make_engine(pm, tmp_path, [("two", TwoThenOne())], market, run_id="partial", journal_url=journal_url)
    engine.run_all()
    db = journal_url or tmp_path / "journal.sqlite"
    (t,) = rows(db, "SELECT * FROM trades")
    fills = rows(db, "SELECT kind, opens, price, quantity, cash FROM fills ORDER BY filled_at, kind")
    assert [(f["kind"], f["opens"], f["quantity"]) for f in fills] == [("fill", 1, 2), ("fill", 0, 1),
                                                                       ("settlement", 0, 1)]
    assert fills[2]["price"] == "3.00" and fills[2]["cash"] == "-300.00"
    assert sum(Decimal(f["cash"]) for f in fills) == Decimal(t["realized_pnl"])
    assert int(Decimal(t["realized_pnl"]) * 100) == engine.portfolio.cash_cents - engine.portfolio.initial_cash_cents


# --------------------------------------------------------------- snapshots
def test_snapshot_round_trip_reproduces_the_checksum(cv_run):
    _, out = cv_run
    db = out / "journal.sqlite"
    decisions = rows(db, "SELECT snapshot_id, snapshot_checksum FROM trade_decisions")
    assert decisions
    with Journal(db, create=False) as j:
        for d in decisions[:3]:
            snap = j.load_snapshot(d["snapshot_id"])
            assert snap.checksum == d["snapshot_checksum"]
            assert str(snap.timestamp.tz) == "America/New_York"


def test_unusable_quotes_and_nans_survive_the_round_trip(tmp_path, journal_url):
    snap = make_chain(expiries=["2024-01-10", "2024-01-12"], at="2024-01-08 10:00")
    bid, ask = snap.bid.copy(), snap.ask.copy()
    bid[:3], ask[3], bid[4], ask[4] = np.nan, 0.0, 5.0, 4.0  # NaN, zero ask, crossed
    cols = {name: getattr(snap, name) for name in ("root", "expiry", "strike", "is_call", "last", "iv", "delta")}
    odd = type(snap).from_arrays("SPX", snap.timestamp, 4800.125, bid=bid, ask=ask, **cols)
    assert odd.dropped["nan"] == 3 and odd.dropped["crossed"] >= 1 and odd.dropped["zero_ask"] >= 1
    with Journal(journal_url or f"sqlite:///{tmp_path}/j.sqlite") as j:
        sid = j.store_snapshot(odd)
        assert j.store_snapshot(odd) == sid  # once per checksum
        back = j.load_snapshot(sid)
        assert back.checksum == odd.checksum
        assert back.dropped == odd.dropped
        assert np.array_equal(back.gamma, odd.gamma, equal_nan=True)


def test_a_tampered_snapshot_is_refused(tmp_path):
    snap = make_chain(expiries=["2024-01-10"], at="2024-01-08 10:00")
    other = make_chain(spot=4801.0, expiries=["2024-01-10"], at="2024-01-08 10:00")
    path = tmp_path / "j.sqlite"
    with Journal(path) as j:
        sid = j.store_snapshot(snap)
        oid = j.store_snapshot(other)
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE chain_snapshots SET data = (SELECT data FROM chain_snapshots WHERE snapshot_id = ?)"
                   " WHERE snapshot_id = ?", (oid, sid))
    db.close()
    with Journal(path, create=False) as j:
        with pytest.raises(JournalError, match="checksum mismatch"):
            j.load_snapshot(sid)


def test_a_flipped_byte_in_a_stored_blob_is_refused_never_loaded(tmp_path):
    snap = make_chain(expiries=["2024-01-10", "2024-01-12"], at="2024-01-08 10:00")
    path = tmp_path / "j.sqlite"
    with Journal(path) as j:
        sid = j.store_snapshot(snap)
    db = sqlite3.connect(path)
    with db:
        (blob, fmt) = db.execute("SELECT data, format FROM chain_snapshots WHERE snapshot_id = ?", (sid,)).fetchone()
        assert fmt == "columns-lz4" and blob[:4] == b"SBL1"
        assert len(blob) < len(snap) * 14 * 8 / 2  # under half the raw float64 size of its 14 columns
        header_end = 8 + int.from_bytes(blob[4:8], "little")
        lz4 = pa.Codec("lz4")
        raw = lz4.decompress(blob[header_end:], decompressed_size=sum(
            c[2] for c in json.loads(blob[8:header_end])["columns"]), asbytes=True)
        bad = bytearray(raw)
        bad[len(raw) // 2] ^= 0x01  # one bit of one price or greek
        db.execute("UPDATE chain_snapshots SET data = ? WHERE snapshot_id = ?",
                   (blob[:header_end] + lz4.compress(bytes(bad), asbytes=True), sid))
    db.close()
    with Journal(path, create=False) as j:
        with pytest.raises(JournalError, match="checksum mismatch"):
            j.load_snapshot(sid)


def test_journals_written_with_zlib_snapshots_still_load_and_verify(tmp_path):
    """Journals written before the columns-lz4 format hold columns-zlib blobs (the same layout, one zlib
    stream): still read, still checked."""
    snap = make_chain(expiries=["2024-01-10", "2024-01-12"], at="2024-01-08 10:00")
    path = tmp_path / "j.sqlite"
    with Journal(path) as j:
        sid = j.store_snapshot(snap)
    old = snapshot_to_bytes(snap, "columns-zlib")
    header_end = 8 + int.from_bytes(old[4:8], "little")
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE chain_snapshots SET data = ?, format = 'columns-zlib' WHERE snapshot_id = ?", (old, sid))
    db.close()
    with Journal(path, create=False) as j:
        back = j.load_snapshot(sid)
        assert back.checksum == snap.checksum
        assert np.array_equal(back.delta, snap.delta, equal_nan=True) and list(back.root) == list(snap.root)
    bad = bytearray(zlib.decompress(old[header_end:]))
    bad[len(bad) // 2] ^= 0x01
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE chain_snapshots SET data = ? WHERE snapshot_id = ?",
                   (old[:header_end] + zlib.compress(bytes(bad)), sid))
    db.close()
    with Journal(path, create=False) as j:
        with pytest.raises(JournalError, match="checksum mismatch"):
            j.load_snapshot(sid)


def test_journals_written_with_parquet_snapshots_still_load_and_verify(tmp_path):
    """Journals from before the columns-zlib format (issue 15) hold Parquet blobs: still read, still checked."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from strikebench.options.chain import COLUMNS

    snap = make_chain(expiries=["2024-01-10"], at="2024-01-08 10:00")
    buf = io.BytesIO()  # what the earlier journal wrote: the columns as a Parquet table
    pq.write_table(pa.table({name: pa.array(np.asarray(getattr(snap, name))) for name in COLUMNS}), buf)
    path = tmp_path / "j.sqlite"
    with Journal(path) as j:
        sid = j.store_snapshot(snap)
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE chain_snapshots SET data = ?, format = 'parquet' WHERE snapshot_id = ?",
                   (buf.getvalue(), sid))
    db.close()
    with Journal(path, create=False) as j:
        back = j.load_snapshot(sid)
    assert back.checksum == snap.checksum
    assert np.array_equal(back.bid, snap.bid, equal_nan=True) and list(back.root) == list(snap.root)


def test_decisions_at_the_same_minute_share_one_snapshot(pm, tmp_path, journal_url):
    market = ModelMarket("2024-01-08", "2024-01-08")
    params = CreditVertical.Params(**CV_PARAMS)
    engine = make_engine(pm, tmp_path, [("cv_a", CreditVertical(params)), ("cv_b", CreditVertical(params))], market,
                         run_id="shared", journal_url=journal_url)
    engine.run_all()
    db = journal_url or tmp_path / "journal.sqlite"
    decisions = rows(db, "SELECT strategy, decided_at, snapshot_id FROM trade_decisions ORDER BY decided_at, strategy")
    assert [d["strategy"] for d in decisions] == ["cv_a", "cv_b", "cv_a", "cv_b"]
    assert decisions[0]["snapshot_id"] == decisions[1]["snapshot_id"] != decisions[2]["snapshot_id"]
    assert rows(db, "SELECT COUNT(*) FROM chain_snapshots")[0][0] == 2


# ------------------------------------------------------------- completion
def test_a_run_that_stops_early_reads_as_incomplete(pm, tmp_path, journal_url):
    market = ModelMarket("2024-01-08", "2024-01-09")
    engine = make_engine(pm, tmp_path, [("credit_vertical", CreditVertical(CreditVertical.Params(**CV_PARAMS)))],
                         market, run_id="early", journal_url=journal_url)
    for i in range(390 + 200):  # into the second session, past its 10:00 decision; never finish()
        engine.on_bar(i)
    try:
        db = journal_url or tmp_path / "journal.sqlite"
        (run,) = rows(db, "SELECT completed, ended_at FROM runs")
        assert (run["completed"], run["ended_at"]) == (0, None)
        # a backtest commits once per session: the first session's 10:00 and 13:00 decisions are there,
        # the second session's 10:00 one is not (yet)
        assert [r[0][:16] for r in rows(db, "SELECT decided_at FROM trade_decisions ORDER BY decided_at")] == [
            "2024-01-08T10:00", "2024-01-08T13:00"]
        assert rows(db, "SELECT day FROM equity")[0][0] == "2024-01-08"
        assert main(["report", str(tmp_path)]) == 0
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["completed"] is False
        assert "Incomplete run" in (tmp_path / "report.html").read_text()
    finally:
        journal_plugin.discard("early")


def test_a_crashed_process_leaves_a_journal_that_says_incomplete(tmp_path):
    script = textwrap.dedent(f"""
        import os
        from strikebench.api import RunInfo
        from strikebench.engine.core import Engine
        from strikebench.plugin_manager import get_plugin_manager
        from strikebench.plugins.commissions import CboeRetail
        from strikebench.plugins.fill_models import MidSlippageFill
        from strikebench.strategies.credit_vertical import CreditVertical
        from strikebench.testing import ModelMarket
        pm = get_plugin_manager(load_entry_points=False)
        run = RunInfo(run_id="crash", name="crash", mode="backtest", output_dir={str(tmp_path)!r})
        engine = Engine(market=ModelMarket("2024-01-08", "2024-01-09"), strategies=[("cv", CreditVertical())],
                        fill_model=MidSlippageFill(), commission=CboeRetail(), run=run, hook=pm.hook)
        pm.hook.on_run_start(run=run)
        for i in range(450):
            engine.on_bar(i)
        os._exit(3)  # no finish, no close, no checkpoint
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    db = tmp_path / "journal.sqlite"
    (run,) = rows(db, "SELECT completed FROM runs")
    assert run["completed"] == 0
    # the first session whole (10:00, 11:00, 12:00, its equity row); the second session's 10:00 decision was in
    # its uncommitted session transaction: a kill loses only the session it interrupts
    assert [r[0][:16] for r in rows(db, "SELECT decided_at FROM trade_decisions ORDER BY decided_at")] == [
        "2024-01-08T10:00", "2024-01-08T11:00", "2024-01-08T12:00"]
    assert [r[0] for r in rows(db, "SELECT day FROM equity")] == ["2024-01-08"]
    assert rows(db, "PRAGMA integrity_check")[0][0] == "ok"


def test_several_runs_in_one_process_keep_their_own_journals(pm, tmp_path):
    params = CreditVertical.Params(**CV_PARAMS)
    a = make_engine(pm, tmp_path / "a", [("cv", CreditVertical(params))], ModelMarket("2024-01-08", "2024-01-08"),
                    run_id="run-a")
    b = make_engine(pm, tmp_path / "b", [("cv", CreditVertical(params))],
                    ModelMarket("2024-01-08", "2024-01-08", spot=4500.0), run_id="run-b")
    for i in range(len(a.timeline)):  # interleaved, bar by bar
        a.on_bar(i)
        b.on_bar(i)
    a.finish()
    b.finish()
    for name, spot in (("a", "4800.0"), ("b", "4500.0")):
        db = tmp_path / name / "journal.sqlite"
        assert [r[0] for r in rows(db, "SELECT run_id FROM runs")] == [f"run-{name}"]
        assert {r[0] for r in rows(db, "SELECT run_id FROM trade_decisions")} == {f"run-{name}"}
        assert {r[0] for r in rows(db, "SELECT underlying_price FROM chain_snapshots")} == {spot}
    assert "run-a" not in journal_plugin.open_journals() and "run-b" not in journal_plugin.open_journals()


def test_journal_url_of_an_unknown_scheme_or_unreachable_server_is_a_clear_error():
    import socket

    with pytest.raises(JournalError, match="scheme 'mysql' is not supported"):
        Journal("mysql://user@localhost/strikebench")
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(JournalError) as err:
        Journal(f"postgresql://user:hunter2@127.0.0.1:{port}/strikebench")
    assert "cannot connect" in str(err.value) and "hunter2" not in str(err.value)
    assert str(err.value).startswith(f"postgresql://user:***@127.0.0.1:{port}/strikebench:")


# ------------------------------------------------------------------ report
def test_report_rebuilds_the_run_folder_from_the_journal_alone(cv_run, capsys):
    engine, out = cv_run
    for name in ("trades.csv", "decisions.csv", "summary.json", "equity.png", "report.html"):
        (out / name).unlink(missing_ok=True)
    assert main(["report", str(out)]) == 0
    trades = pd.read_csv(out / "trades.csv", dtype=str)
    assert len(trades) == len(engine.portfolio.all_trades())
    assert trades["realized_pnl"].dropna().map(lambda x: MONEY.match(x) is not None).all()
    decisions = pd.read_csv(out / "decisions.csv")
    assert len(decisions) == len(engine.decisions)
    summary = json.loads((out / "summary.json").read_text())
    figures = engine.summary()
    for key in ("completed", "sessions", "trades", "open_trades", "realized_pnl", "fees", "final_cash",
                "final_equity", "max_drawdown", "win_rate", "decisions"):
        assert summary[key] == figures[key], key  # money rebuilt from the journal's exact text: equal to the cent
    assert summary["per_strategy"]["credit_vertical"]["realized_pnl"] == figures["realized_pnl"]
    assert (out / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert "<table id='trades'>" in page and "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page  # self-contained
    assert trades["trade_id"].iloc[0] in page
    assert "Realized P&amp;L" in page
    assert "Closed trades" in capsys.readouterr().out


def test_report_on_a_folder_without_journal_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 6
    err = capsys.readouterr().err
    assert "no journal in this folder" in err and err.count("\n") == 1


def test_decisions_of_a_day_show_candidates_deltas_credits_and_scores(cv_run, capsys):
    engine, out = cv_run
    assert main(["decisions", str(out), "--date", "2024-01-09"]) == 0
    text = capsys.readouterr().out
    day = [d for d in engine.decisions if d.decided_at.date() == dt.date(2024, 1, 9)]
    assert len(day) == 2
    assert "10:00" in text and "13:00" in text
    for d in day:
        assert d.action in text and d.decision_id in text
        for c in d.candidates:
            det = c.details
            assert f"{det['short_strike']:g}/{det['long_strike']:g}" in text
            assert f"{det['short_delta']:.3f}" in text
            assert f"{c.credit:.2f}" in text
    assert main(["decisions", str(out), "--date", "2024-02-01"]) == 1
    assert "no decision on 2024-02-01" in capsys.readouterr().err


# ------------------------------------------------------------------ replay
@pytest.fixture(scope="module")
def configured_run(pm, tmp_path_factory):
    from strikebench.report import load_config_text

    out = tmp_path_factory.mktemp("cfg") / "jtest-run"
    resolved = load_config_text(CONFIG_YAML, ["strategies[0].params.min_credit=0.50"], registry=pm.registry)
    from strikebench.engine.runner import build_engine

    run = RunInfo(run_id="jtest-run", name="jtest", mode="backtest", config=resolved, output_dir=str(out), seed=7)
    out.mkdir(parents=True)
    engine = build_engine(resolved, run=run, hook=pm.hook, market=ModelMarket("2024-01-08", "2024-01-12", spot=swing))
    pm.hook.on_run_start(run=run)
    engine.run_all()
    return engine, out


def test_replay_decision_reaches_the_same_result(configured_run, capsys):
    engine, out = configured_run
    (run,) = rows(out / "journal.sqlite", "SELECT config_yaml, config_hash, strategies FROM runs")
    assert run["config_yaml"] == CONFIG_YAML
    assert json.loads(run["strategies"])[0]["params"]["min_credit"] == 0.5  # the --set override is kept
    trade = next(d for d in engine.decisions if d.action == "TRADE")
    assert main(["replay-decision", str(out), trade.decision_id]) == 0
    text = capsys.readouterr().out
    assert "same result" in text and "verified" in text


def test_replay_decision_reports_a_different_result(configured_run, capsys, tmp_path):
    import shutil

    engine, out = configured_run
    copy = tmp_path / "jtest-run"
    shutil.copytree(out, copy)
    decision = engine.decisions[0]
    db = sqlite3.connect(copy / "journal.sqlite")
    with db:
        db.execute("UPDATE trade_decisions SET chosen = 0 WHERE decision_id = ?", (decision.decision_id,))
    db.close()
    assert main(["replay-decision", str(copy), decision.decision_id]) == 1
    captured = capsys.readouterr()
    assert "DIFFERENT" in captured.out and "DIFFERENT" in captured.err


def test_replay_refuses_a_snapshot_whose_checksum_changed(configured_run, capsys, tmp_path):
    import shutil

    engine, out = configured_run
    copy = tmp_path / "jtest-run"
    shutil.copytree(out, copy)
    first, second = engine.decisions[0], engine.decisions[1]
    db = sqlite3.connect(copy / "journal.sqlite")
    with db:
        (sid,) = db.execute("SELECT snapshot_id FROM trade_decisions WHERE decision_id = ?",
                            (second.decision_id,)).fetchone()
        db.execute("UPDATE trade_decisions SET snapshot_id = ? WHERE decision_id = ?", (sid, first.decision_id))
    db.close()
    assert main(["replay-decision", str(copy), first.decision_id]) == 6
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and err.count("\n") == 1


def test_replay_of_a_strategy_without_evaluate_is_one_line(configured_run, capsys, monkeypatch):
    engine, out = configured_run
    monkeypatch.delattr(CreditVertical, "evaluate")
    assert main(["replay-decision", str(out), engine.decisions[0].decision_id]) == 6
    err = capsys.readouterr().err
    assert "has no evaluate(snapshot, context) method" in err and err.count("\n") == 1


# ------------------------------------------------------------------ runner
class _StubData:
    """Stands in for the synthetic feed: hands the runner a hand-made market."""

    def __init__(self, market):
        self.market = market
        self.params = type("P", (), {"model_dump": staticmethod(lambda: {"seed": 7})})()

    def build(self):
        return self

    def open(self):
        return self.market


def test_backtest_runner_writes_the_run_folder_and_figures_agree(pm, tmp_path):
    from rich.console import Console

    from strikebench.engine.runner import run_backtest
    from strikebench.report import load_config_text

    resolved = load_config_text(CONFIG_YAML, registry=pm.registry)
    resolved = dataclasses.replace(resolved, data=_StubData(ModelMarket("2024-01-08", "2024-01-10", spot=swing)))
    console = Console(file=io.StringIO(), width=120)
    summary = run_backtest(resolved, console=console, progress=False, pm=pm, out_dir=str(tmp_path))
    run_dir = Path(summary["run_dir"])
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "decisions.csv", "equity.png", "equity_bars.parquet", "journal.sqlite", "report.html", "summary.json",
        "trades.csv"]
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["source"] == "journal" and on_disk["completed"] is True
    assert on_disk["max_drawdown_per_bar"] >= on_disk["max_drawdown"] - 0.005
    printed = console.file.getvalue()
    assert f"{on_disk['final_equity']:,.2f}" in printed
    (run,) = rows(run_dir / "journal.sqlite", "SELECT run_id, completed, config_hash FROM runs")
    assert (run["run_id"], run["completed"], run["config_hash"]) == (run_dir.name, 1, resolved.config_hash)
    # rebuilding later from the journal alone keeps the Backtrader figures and every number
    (run_dir / "summary.json").unlink()
    assert main(["report", str(run_dir)]) == 0
    again = json.loads((run_dir / "summary.json").read_text())
    assert {k: v for k, v in again.items() if k != "run_dir"} == {k: v for k, v in on_disk.items() if k != "run_dir"}


def test_xsp_settlement_on_a_three_decimal_print_reconciles_in_the_journal(pm, tmp_path):
    expiry = dt.date(2024, 1, 10)
    c1, c2 = OptionContract("XSP", expiry, 470.0, "P"), OptionContract("XSP", expiry, 468.0, "P")

    class XspOnce(Strategy):
        name = "xsp_once"
        underlying = "XSP"

        def decision_times(self):
            return [dt.time(10, 0)]

        def on_decision_time(self, ctx):
            ctx.open_trade([Leg(c1, -1), Leg(c2, +1)], 3)

    market = ModelMarket(expiry, expiry, spot=471.0, root="XSP", underlying="XSP",
                         quotes={c1: (0.40, 0.44), c2: (0.20, 0.22)}, settlement={expiry: 469.043})
    engine = make_engine(pm, tmp_path, [("xsp", XspOnce())], market, run_id="xsp")
    engine.run_all()
    db = tmp_path / "journal.sqlite"
    (t,) = rows(db, "SELECT * FROM trades")
    fills = rows(db, "SELECT kind, cash FROM fills ORDER BY filled_at, kind")
    assert [f["kind"] for f in fills] == ["fill", "settlement"]
    assert fills[1]["cash"] == "-287.10"  # 0.957 points x 100 x 3, not 0.96 x 300
    assert sum(Decimal(f["cash"]) for f in fills) == Decimal(t["realized_pnl"])
    assert int(Decimal(t["realized_pnl"]) * 100) == engine.portfolio.cash_cents - engine.portfolio.initial_cash_cents


# ------------------------------------------------------------ self-auditing records
@pytest.mark.parametrize("print_, per_combo", [(469.043, "0.957"), (469.997, "0.003")])
def test_xsp_settlement_prices_keep_the_precision_the_cash_used(pm, tmp_path, print_, per_combo):
    """Issue 24: an XSP print with three decimals. Every fills row satisfies
    cash = -price x multiplier x quantity - fees, and trades.csv reconciles from its own columns."""
    expiry = dt.date(2024, 1, 10)
    c1, c2 = OptionContract("XSP", expiry, 470.0, "P"), OptionContract("XSP", expiry, 468.0, "P")

    class XspOnce(Strategy):
        name = "xsp_once"
        underlying = "XSP"

        def decision_times(self):
            return [dt.time(10, 0)]

        def on_decision_time(self, ctx):
            ctx.open_trade([Leg(c1, -1), Leg(c2, +1)], 3)

    market = ModelMarket(expiry, expiry, spot=471.0, root="XSP", underlying="XSP",
                         quotes={c1: (0.40, 0.44), c2: (0.20, 0.22)}, settlement={expiry: print_})
    engine = make_engine(pm, tmp_path, [("xsp", XspOnce())], market, run_id="xsp")
    engine.run_all()
    db = tmp_path / "journal.sqlite"
    fills = rows(db, "SELECT kind, price, quantity, multiplier, fees, cash, leg_prices FROM fills ORDER BY filled_at")
    for f in fills:
        assert Decimal(f["cash"]) == -Decimal(f["price"]) * f["multiplier"] * f["quantity"] - Decimal(f["fees"]), dict(f)
    settle = fills[-1]
    assert settle["kind"] == "settlement" and settle["price"] == per_combo  # paid per combo
    assert json.loads(settle["leg_prices"]) == [per_combo, "0.00"]
    assert main(["report", str(tmp_path)]) == 0
    csv = pd.read_csv(tmp_path / "trades.csv", dtype=str)
    (t,) = csv.to_dict("records")
    assert t["exit_debit"] == per_combo
    pnl = (Decimal(t["entry_credit"]) - Decimal(t["exit_debit"])) * int(t["multiplier"]) * int(t["contracts"]) \
        - Decimal(t["fees"])
    assert pnl == Decimal(t["realized_pnl"])
    # 0.19 credit x 300, less the payoff: the trade is short the 470 put, so it pays it
    assert Decimal(t["realized_pnl"]) == Decimal("57.00") - Decimal(per_combo) * 300 - Decimal(t["fees"])


def test_every_fill_stores_its_quotes_and_max_loss_is_written_at_the_opening_fill(pm, tmp_path):
    db = tmp_path / "journal.sqlite"
    seen = {}

    class OpenThenClose(Strategy):
        name = "open_then_close"

        def decision_times(self):
            return [dt.time(10, 0), dt.time(11, 0), dt.time(14, 0)]

        def on_decision_time(self, ctx):
            t = ctx.now.time()
            if t == dt.time(10, 0):
                ctx.open_trade([Leg(P4700, -1), Leg(P4695, +1)], 2)
            elif t == dt.time(11, 0):  # the run's own connection: a backtest commits at the session's end
                journal = journal_plugin.open_journals()["otc"]
                seen["open"] = [dict(r) for r in journal.execute("SELECT max_loss, closed_at FROM trades")]
            else:
                for trade in ctx.open_trades():
                    ctx.close_trade(trade, "scripted exit")

    def short_leg(ts):
        return (3.00, 3.40) if ts.hour < 14 else (2.70, 2.90)

    market = ModelMarket(DAY, DAY, spot=4710.0, quotes={P4700: short_leg, P4695: (2.40, 2.60)},
                         settlement={DAY: 4750.0})
    engine = make_engine(pm, tmp_path, [("otc", OpenThenClose())], market, run_id="otc")
    engine.run_all()
    # sold for 0.50 (mid -0.70 + 0.30 x 0.60 = -0.52 -> -0.50): worst case (5.00 - 0.50) x 100 x 2, before fees
    assert seen["open"] == [{"max_loss": "900.00", "closed_at": None}]
    fills = rows(db, "SELECT opens, price, leg_quotes FROM fills ORDER BY filled_at")
    assert [(f["opens"], json.loads(f["leg_quotes"])) for f in fills] == [
        (1, [["3.00", "3.40"], ["2.40", "2.60"]]),
        (0, [["2.70", "2.90"], ["2.40", "2.60"]]),  # the exit's own quotes: checkable from the journal alone
    ]
    # the exit price from those quotes and the rule: buy 4700 back, sell 4695: mid 2.80 - 2.50 = 0.30,
    # width 0.40 -> 0.30 + 0.12 = 0.42 -> up to 0.45 (below the natural 2.90 - 2.40 = 0.50)
    assert fills[1]["price"] == "0.45"


def test_the_resolved_config_after_overrides_is_journaled_and_reported(configured_run):
    import yaml

    _, out = configured_run
    (run,) = rows(out / "journal.sqlite", "SELECT config_yaml, config_resolved, config_overrides FROM runs")
    assert json.loads(run["config_overrides"]) == ["strategies[0].params.min_credit=0.50"]
    assert "min_credit" not in run["config_yaml"]  # the file as read
    resolved = yaml.safe_load(run["config_resolved"])
    assert resolved["strategies"][0]["params"]["min_credit"] == 0.5
    assert str(resolved["data"]["end"]) == "2024-01-12"
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "Config the run used" in html and "--set strategies[0].params.min_credit=0.50" in html


def test_a_backtest_journal_buffers_order_rows_to_the_commit_and_writes_what_write_through_writes(tmp_path):
    """Order rows and transitions of a backtest (one transaction per session) are written at the session's
    commit: the same orders and order_events rows, in the same order, as a journal writing every event at
    once; a read through the journal mid-session sees them; nothing of an uncommitted session is on disk."""
    from strikebench.engine.broker import OrderTransition
    from strikebench.options.orders import Order, OrderStatus, OrderType

    t0 = dt.datetime(2024, 1, 10, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    legs = (Leg(P4700, -1), Leg(P4695, +1))

    def events():
        """(order, previous, status, minutes after t0, reason): an entry filled, an exit that works into the
        next session (GTC) and fills there, an entry rejected."""
        entry = Order("O-e", legs, 1, OrderType.LIMIT, -1.25, strategy="s", trade_id="T-s-1-abc", created_at=t0)
        exit_ = Order("X-e", tuple(l.reversed() for l in legs), 1, OrderType.LIMIT, 0.40, TimeInForce.GTC,
                      strategy="s", trade_id="T-s-1-abc", opens=False, created_at=t0 + dt.timedelta(minutes=5))
        rejected = Order("O-r", legs, 2, OrderType.MARKET, strategy="s", trade_id="T-s-2-def", created_at=t0)
        yield entry, OrderStatus.SUBMITTED, 0, ""
        yield entry, OrderStatus.ACCEPTED, 0, ""
        yield entry, OrderStatus.FILLED, 1, ""
        yield exit_, OrderStatus.SUBMITTED, 5, ""
        yield exit_, OrderStatus.ACCEPTED, 5, ""
        yield rejected, OrderStatus.REJECTED, 7, "buying power"
        yield "commit", None, None, None
        yield exit_, OrderStatus.FILLED, 60 * 24, ""

    def journal_all(path, per_session: bool):
        j = Journal(path)
        j.start_run("r", name="r", mode="backtest")
        if per_session:
            j.commit_per_session()
        j.record_decision("r", dataclasses.replace(_decision(), decision_id="s-1"), None)
        seen_mid_session = None
        for order, status, minutes, reason in events():
            if order == "commit":
                j.commit()
                continue
            previous, order.status, order.status_reason = order.status, status, reason
            if status == OrderStatus.FILLED:
                order.filled_quantity, order.avg_fill_price = order.quantity, order.limit_price
            j.record_order_event("r", dataclasses.replace(order, fills=[]),
                                 OrderTransition(order.client_id, previous, status,
                                                 t0 + dt.timedelta(minutes=minutes), reason))
            if order.client_id == "O-r" and per_session:
                on_disk = rows(path, "SELECT COUNT(*) FROM orders")[0][0]
                seen_mid_session = (on_disk, len(j.execute("SELECT * FROM orders")))
        j.commit()
        out = ([tuple(r) for r in j.execute("SELECT * FROM orders ORDER BY rowid")],
               [tuple(r) for r in j.execute("SELECT * FROM order_events ORDER BY event_id")])
        j.close()
        return out, seen_mid_session

    (orders_a, events_a), _ = journal_all(tmp_path / "through.sqlite", per_session=False)
    (orders_b, events_b), seen = journal_all(tmp_path / "buffered.sqlite", per_session=True)
    assert orders_b == orders_a and events_b == events_a
    assert [o[0] for o in orders_a] == ["O-e", "X-e", "O-r"] and len(events_a) == 7
    by_id = {o[0]: o for o in orders_a}
    assert by_id["O-e"][4] == "s-1"  # decision_id found from the trade id at the order's first event
    assert by_id["X-e"][13:] == ("filled", "", 1, "0.40", "2024-01-11T10:00:00-05:00")  # its last event's state
    assert seen == (0, 3)  # nothing on disk before the commit; the journal's own read sees all three


def _decision():
    from strikebench.api import Decision

    return Decision(strategy="s", decided_at=dt.datetime(2024, 1, 10, 10, 0, tzinfo=dt.timezone.utc), action="TRADE",
                    reason="test")


def test_a_backtests_decisions_are_written_at_the_session_commit_as_they_would_be_at_once(tmp_path):
    """Decisions of a backtest (one transaction per session) are kept until the session commits: the same
    trade_decisions, chain_snapshots and context_snapshots rows in the same order as a journal writing each
    decision at once (a snapshot or context seen twice stored once, in this session or an earlier one); a read
    through the journal mid-session sees them; nothing of an uncommitted session is on disk; an order opened
    from a decision not yet written names it."""
    from strikebench.api import Decision
    from strikebench.engine.broker import OrderTransition
    from strikebench.options.orders import Order, OrderStatus, OrderType

    t0 = dt.datetime(2024, 1, 8, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    a, b = make_chain(expiries=["2024-01-12"]), make_chain(expiries=["2024-01-12"], at="2024-01-08 11:00")

    def decisions():  # (snapshot, context, commit after it)
        yield a, {"k": 0.3}, False
        yield a, {"k": 0.3}, False       # same snapshot and context: stored once
        yield None, {"k": 0.3, "blocked": True}, True
        yield b, {"k": 0.3}, False       # a new snapshot, a context of the first session
        yield a, {"k": 0.4}, False       # a snapshot of the first session

    def journal_all(path, per_session):
        j = Journal(path)
        j.start_run("r", name="r", mode="backtest")
        if per_session:
            j.commit_per_session()
        seen = None
        for n, (snap, context, commit) in enumerate(decisions(), 1):
            d = Decision(strategy="s", decided_at=t0 + dt.timedelta(minutes=n), action="TRADE" if snap else "SKIP",
                         reason=f"r{n}", snapshot_checksum=snap.checksum if snap else None, context=context,
                         decision_id=f"s-{n}")
            j.record_decision("r", d, snap)
            if n == 1:  # an order from the decision just recorded
                order = Order("O-1", (Leg(P4700, -1), Leg(P4695, +1)), 1, OrderType.LIMIT, -1.25, strategy="s",
                              trade_id="T-s-1-abc", created_at=t0)
                j.record_order_event("r", order, OrderTransition("O-1", OrderStatus.NEW, OrderStatus.SUBMITTED, t0, ""))
            if n == 2 and per_session:
                seen = (rows(path, "SELECT COUNT(*) FROM trade_decisions")[0][0], len(j.decisions("r")))
            if commit:
                j.commit()
        j.commit()
        out = [[tuple(r) for r in j.execute(f"SELECT * FROM {t} ORDER BY rowid")]
               for t in ("trade_decisions", "chain_snapshots", "context_snapshots", "orders")]
        j.close()
        return out, seen

    through, _ = journal_all(tmp_path / "through.sqlite", per_session=False)
    buffered, seen = journal_all(tmp_path / "buffered.sqlite", per_session=True)
    assert buffered == through
    decisions_, snapshots, contexts, orders = through
    assert [d[7] for d in decisions_] == [1, 1, None, 2, 1] and len(snapshots) == 2  # snapshot ids
    assert [d[9] for d in decisions_] == [1, 1, 2, 1, 3] and len(contexts) == 3  # context ids
    assert orders[0][4] == "s-1"  # the order's decision, found before the decision was written
    assert seen == (0, 2)  # nothing on disk before the commit; the journal's own read sees both


@pytest.mark.parametrize("chunk", [500, 2])
def test_a_shared_journals_snapshots_and_contexts_of_another_run_are_found_as_one_at_a_time_finds_them(
        tmp_path, monkeypatch, chunk):
    """A session's decisions look up the snapshots and contexts this connection has not written in one query (per
    ``_LOOKUP_CHUNK`` checksums): in a journal holding another run, a second run's rows are the rows a journal
    writing each decision at once (a SELECT per snapshot and context) leaves: ids found from the first run, new
    ones written in order, a new one seen twice stored once."""
    import shutil

    from strikebench.api import Decision

    monkeypatch.setattr(Journal, "_LOOKUP_CHUNK", chunk)
    t0 = dt.datetime(2024, 1, 8, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    snaps = [make_chain(expiries=["2024-01-12"], at=f"2024-01-08 1{i}:00") for i in range(5)]

    def record(j, run, plan, per_session):
        j.start_run(run, name=run, mode="backtest")
        if per_session:
            j.commit_per_session()
        for n, (snap, context) in enumerate(plan, 1):
            d = Decision(strategy="s", decided_at=t0 + dt.timedelta(minutes=n), action="TRADE" if snap else "SKIP",
                         reason=f"r{n}", snapshot_checksum=snap.checksum if snap else None, context=context,
                         decision_id=f"{run}-{n}")
            j.record_decision(run, d, snap)
            if n == 4:
                j.commit()
        j.commit()

    first = [(snaps[0], {"k": 1}), (snaps[1], {"k": 2}), (None, {"k": 3}), (snaps[2], {"k": 1})]
    second = [(snaps[1], {"k": 2}), (snaps[3], {"k": 9}), (snaps[3], {"k": 9}), (None, {"k": 3}),
              (snaps[0], {"k": 4}), (snaps[4], {"k": 1}), (snaps[2], {"k": 2}), (snaps[4], {"k": 8})]
    with Journal(tmp_path / "base.sqlite") as j:
        record(j, "r1", first, per_session=True)
    out = {}
    for per_session in (False, True):
        path = tmp_path / f"shared-{per_session}.sqlite"
        shutil.copy(tmp_path / "base.sqlite", path)
        with Journal(path) as j:  # a new connection: nothing of r1 known without a query
            record(j, "r2", second, per_session)
            out[per_session] = [[tuple(r) for r in j.execute(f"SELECT * FROM {t} ORDER BY rowid")]
                                for t in ("trade_decisions", "chain_snapshots", "context_snapshots")]
    assert out[True] == out[False]
    decisions_, snapshots, contexts = out[True]
    r2 = [d for d in decisions_ if d[1] == "r2"]
    assert [d[7] for d in r2] == [2, 4, 4, None, 1, 5, 3, 5] and len(snapshots) == 5
    assert [d[9] for d in r2] == [2, 4, 4, 3, 5, 1, 2, 6] and len(contexts) == 6
