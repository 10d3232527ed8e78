"""The ``databento`` feed on DBN files written by the real encoder (databento_dbn): a backtest equals the same
backtest on the synthetic market the files came from, to the cent; stale quotes; ``data convert``; bad files."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import astuple

import databento_dbn as dbn
import numpy as np
import pandas as pd
import pytest

from strikebench.api import RunInfo
from strikebench.cli import main
from strikebench.engine.runner import build_engine, run_cerebro
from strikebench.errors import DataError
from strikebench.feeds.databento import CBBO_DTYPE, OHLCV_DTYPE, DatabentoMarket, read_dbn
from strikebench.feeds.dbn_write import files_to_dbn, write_dbn
from strikebench.feeds.files import FileMarket
from strikebench.feeds.synthetic import SyntheticMarket, export
from strikebench.plugin_manager import get_plugin_manager
from strikebench.portfolio import to_cents
from strikebench.report import load_config_text

START, END, SEED = "2023-01-03", "2023-01-06", 42
CONFIG = """
name: dbn-eq
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
    return "default"  # listed strikes stay listed to expiry: the files hold every open leg every bar


@pytest.fixture(scope="module")
def dbn_dir(scenario, tmp_path_factory):
    """Four sessions, every minute, SPX within 4 DTE and 7 %: Parquet, then DBN through databento_dbn."""
    m = SyntheticMarket(seed=SEED, start=START, end=END, scenario=str(scenario))
    pq_dir = tmp_path_factory.mktemp("parquet")
    export(m, pq_dir, interval_minutes=1, underlyings=("SPX",), symbols=("SPX",), max_dte=4, strike_range_pct=7.0)
    d = tmp_path_factory.mktemp("dbn")
    files_to_dbn(pq_dir, d)
    return d


def _run(data_yaml: str):
    pm = get_plugin_manager()
    resolved = load_config_text(CONFIG.format(data=data_yaml), registry=pm.registry)
    market = resolved.data.build().open()
    engine = build_engine(resolved, run=RunInfo(run_id="eq", name="eq", mode="backtest"), market=market)
    run_cerebro(engine)
    return engine


def _fills(engine):
    return sorted((o.client_id, f.filled_at, f.quantity, f.net_price, f.leg_prices, f.fees, f.leg_quotes)
                  for o in engine.broker.orders.values() for f in o.fills)


def test_records_are_the_real_encoders_layout_and_the_real_decoder_reads_the_files(dbn_dir):
    r = dbn.CBBOMsg(rtype=dbn.RType.CBBO_1M, publisher_id=1, instrument_id=7, ts_event=111, price=dbn.UNDEF_PRICE,
                    size=0, side=dbn.Side.NONE, ts_recv=222,
                    levels=dbn.ConsolidatedBidAskPair(bid_px=1_150_000_000, ask_px=1_250_000_000))
    mine = np.zeros(1, CBBO_DTYPE)
    mine[["length", "rtype", "publisher_id", "instrument_id", "ts_event", "price", "side", "ts_recv", "bid_px", "ask_px"]] = \
        (20, 0xC1, 1, 7, 111, dbn.UNDEF_PRICE, ord("N"), 222, 1_150_000_000, 1_250_000_000)
    assert mine.tobytes() == bytes(r)
    o = dbn.OHLCVMsg(rtype=dbn.RType.OHLCV_1M, publisher_id=1, instrument_id=1, ts_event=5, open=1, high=2, low=3,
                     close=4, volume=9)
    mine = np.zeros(1, OHLCV_DTYPE)
    mine[["length", "rtype", "publisher_id", "instrument_id", "ts_event", "open", "high", "low", "close", "volume"]] = \
        (14, 0x21, 1, 1, 5, 1, 2, 3, 4, 9)
    assert mine.tobytes() == bytes(o)
    # the real decoder reads what was written: the same records as our reader
    p = next(dbn_dir.glob("*20230104.cbbo-1m.dbn.zst"))
    dec = dbn.DBNDecoder(compression=dbn.Compression.ZSTD)
    dec.write(p.read_bytes())
    recs = [x for x in dec.decode() if isinstance(x, dbn.CBBOMsg)]
    meta, body = read_dbn(p)
    ours = np.frombuffer(body, CBBO_DTYPE)
    assert str(meta.schema.value if hasattr(meta.schema, "value") else meta.schema) == "cbbo-1m"
    assert len(recs) == len(ours) > 10_000
    for i in (0, 1, len(ours) // 2, len(ours) - 1):
        assert (recs[i].instrument_id, recs[i].ts_recv, recs[i].levels[0].bid_px, recs[i].levels[0].ask_px) == \
               tuple(int(ours[i][k]) for k in ("instrument_id", "ts_recv", "bid_px", "ask_px"))


def test_backtest_on_dbn_files_equals_the_synthetic_market_to_the_cent(dbn_dir, scenario):
    ref = _run(f"{{source: synthetic, seed: {SEED}, start: {START}, end: {END}, scenario: '{scenario}'}}")
    # the files have no IV/greeks: computed from the mid with the scenario's rate and dividend yield
    got = _run(f"{{source: databento, path: '{dbn_dir}', rate: 0.045, dividend_yield: 0.015}}")
    assert isinstance(got.market, DatabentoMarket)
    trades_ref = ref.portfolio.all_trades()
    # a settlement: a trade held to expiry, or a partly closed one whose no-bid wing settled (a7ec364)
    assert len(trades_ref) >= 3 and any(t.exit_reason == "settlement" or t.settled_leg_values for t in trades_ref)
    assert [astuple(t) for t in got.portfolio.all_trades()] == [astuple(t) for t in trades_ref]
    cents = [None if t.realized_pnl is None else to_cents(t.realized_pnl) for t in trades_ref]  # None: still open
    assert [None if t.realized_pnl is None else to_cents(t.realized_pnl) for t in got.portfolio.all_trades()] == cents
    assert _fills(got) == _fills(ref)
    assert to_cents(got.portfolio.cash) == to_cents(ref.portfolio.cash)
    assert got.equity_by_day == ref.equity_by_day
    np.testing.assert_array_equal(got.equity_curve, ref.equity_curve)


def test_quotes_resample_to_the_minute_and_a_stale_quote_is_dropped(dbn_dir, tmp_path):
    import shutil

    d = tmp_path / "stale"
    shutil.copytree(dbn_dir, d)
    p = next(d.glob("*20230104.cbbo-1m.dbn.zst"))
    meta, body = read_dbn(p)
    rec = np.frombuffer(body, CBBO_DTYPE).copy()
    t0 = pd.Timestamp("2023-01-04 10:00", tz="America/New_York").value
    at10 = rec[rec["ts_recv"] == t0 + 60e9]
    gone = int(at10["instrument_id"][np.flatnonzero(at10["bid_px"] != dbn.UNDEF_PRICE)[0]])  # a two-sided quote
    # the contract's quotes stop after the 10:00 bar (its last one: ts_recv 10:01) for 40 minutes
    cut = (rec["instrument_id"] == gone) & (rec["ts_recv"] > t0 + 60e9) & (rec["ts_recv"] <= t0 + 41 * 60e9)
    write_dbn(p, meta, rec[~cut].tobytes())
    m = DatabentoMarket(d, max_quote_age_minutes=15)
    defs = m._definitions().drop_duplicates("instrument_id").set_index("instrument_id")
    key = defs.loc[gone]

    def listed(minute):
        s = m.snapshot("SPX", pd.Timestamp(t0 + minute * 60e9, tz="UTC"))
        rows = (s.strike == key["strike"]) & (s.is_call == key["is_call"]) & (s.expiry == np.datetime64(key["expiry"], "D"))
        return s, rows

    last = rec[(rec["instrument_id"] == gone) & (rec["ts_recv"] == t0 + 60e9)][0]
    for minute, present in ((0, True), (10, True), (15, True), (16, False), (40, False), (41, True)):
        s, rows = listed(minute)
        assert rows.sum() == int(present), minute
        if present and minute <= 15:  # carried forward: the 10:00 bar's quote
            assert s.bid[rows][0] == last["bid_px"] / 1e9 and s.ask[rows][0] == last["ask_px"] / 1e9
    assert m.stale_rows[("SPX", dt.date(2023, 1, 4))] == 25  # minutes 16..40
    from strikebench.options.contracts import OptionContract

    c = OptionContract.make(key["root"], key["expiry"], key["strike"], "C" if key["is_call"] else "P")
    q = m.leg_quotes([c], dt.date(2023, 1, 4))
    k = int(np.searchsorted(q.times, t0))
    assert np.isfinite(q.bid[k:k + 16, 0]).all() and np.isnan(q.bid[k + 16:k + 41, 0]).all()
    assert np.isfinite(q.bid[k + 41, 0])


def test_data_convert_writes_the_parquet_layout_the_files_feed_reads(dbn_dir, tmp_path, capsys):
    out = tmp_path / "pq"
    assert main(["data", "convert", str(dbn_dir), str(out)]) == 0
    assert "wrote 4 chain file(s)" in capsys.readouterr().out
    a = DatabentoMarket(dbn_dir)
    b = FileMarket(out, "parquet")
    for at in ("2023-01-06 15:59",):
        ts = pd.Timestamp(at, tz="America/New_York")
        x, y = a.snapshot("SPX", ts), b.snapshot("SPX", ts)
        assert len(x) == len(y) > 100 and x.underlying_price == y.underlying_price
        for c in ("strike", "bid", "ask", "iv", "delta"):
            np.testing.assert_array_equal(getattr(x, c), getattr(y, c))
    assert main(["data", "check", str(out)]) == 0
    # converting again onto the same folder refuses, and writes nothing
    assert main(["data", "convert", str(dbn_dir), str(out)]) == 4


# ------------------------------------------------------------------------------------------ bad DBN input
def _truncated(d):
    p = next(d.glob("*20230104.cbbo-1m.dbn.zst"))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) * 2 // 3])
    return rf"{p.name}: not a readable zstd stream \(.*\): truncated or damaged download\?"


def _bad_symbol(d):
    p = next(d.glob("*20230104.definition.dbn.zst"))
    dec = dbn.DBNDecoder(compression=dbn.Compression.ZSTD)
    dec.write(p.read_bytes())
    recs = dec.decode()
    meta, defs = recs[0], recs[1:]
    out = []
    for i, r in enumerate(defs):
        sym = "SPXW  2301X6P03800000" if i == 5 else r.raw_symbol
        out.append(bytes(dbn.InstrumentDefMsg(
            publisher_id=r.publisher_id, instrument_id=r.instrument_id, ts_event=r.ts_event, ts_recv=r.ts_recv,
            min_price_increment=r.min_price_increment, display_factor=r.display_factor, raw_symbol=sym, asset=r.asset,
            security_type=r.security_type, instrument_class=r.instrument_class,
            security_update_action=r.security_update_action, expiration=r.expiration, strike_price=r.strike_price,
            underlying=r.underlying)))
    write_dbn(p, meta, b"".join(out))
    return rf"{p.name}: record 5: raw_symbol 'SPXW  2301X6P03800000' is not an OCC option symbol"


def _mixed_schemas(d):
    p = next(d.glob("*20230104.cbbo-1m.dbn.zst"))
    meta, body = read_dbn(p)
    meta = dbn.Metadata(dataset="OPRA.PILLAR", start=meta.start, stype_in=dbn.SType.RAW_SYMBOL,
                        stype_out=dbn.SType.INSTRUMENT_ID, schema=dbn.Schema.TBBO, symbols=["SPX.OPT"], end=meta.end)
    write_dbn(d / "extra.tbbo.dbn.zst", meta, b"")
    return r"mixed quote schemas in one folder: .*extra.tbbo.dbn.zst is tbbo"


def _cut_record(d):
    p = next(d.glob("*20230104.cbbo-1m.dbn.zst"))
    meta, body = read_dbn(p)
    # a plain (uncompressed) DBN download cut inside its last record
    plain = p.with_name(p.name[: -len(".zst")])
    plain.write_bytes(bytes(meta.encode()) + bytes(body)[:-30])
    p.unlink()
    n = len(body) // 80 - 1
    return rf"{plain.name}: truncated DBN file: 50 bytes after record {n - 1}"


def _unsorted(d):
    p = next(d.glob("*20230104.cbbo-1m.dbn.zst"))
    meta, body = read_dbn(p)
    rec = np.frombuffer(body, CBBO_DTYPE).copy()
    i = len(rec) // 2
    rec[[i, len(rec) - 1]] = rec[[len(rec) - 1, i]]
    write_dbn(p, meta, rec.tobytes())
    return rf"{p.name}: record {i + 1}: timestamps are not sorted"


def _no_bars_day(d):
    p = next(d.glob("spx.ohlcv-1m.dbn.zst"))
    meta, body = read_dbn(p)
    rec = np.frombuffer(body, OHLCV_DTYPE)
    day = pd.Timestamp("2023-01-04", tz="America/New_York")
    keep = (rec["ts_event"] < day.value) | (rec["ts_event"] >= (day + pd.Timedelta(days=1)).value)
    write_dbn(p, meta, rec[keep].tobytes())
    # the sessions come from the bars: the quotes of 01-04 then sit on a day without bars
    return r"quotes of 2023-01-04 .* but no SPX bars that day"


BAD = [_truncated, _bad_symbol, _mixed_schemas, _cut_record, _unsorted, _no_bars_day]


@pytest.mark.parametrize("case", BAD, ids=[c.__name__[1:] for c in BAD])
def test_a_bad_dbn_folder_is_one_line_naming_file_and_record_and_convert_writes_nothing(dbn_dir, tmp_path, capsys, case):
    import shutil

    d = tmp_path / "src"
    shutil.copytree(dbn_dir, d)
    pattern = case(d)
    out = tmp_path / "out"
    assert main(["data", "convert", str(d), str(out)]) == 4
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob("out.part-*"))  # nothing half-written
    with pytest.raises(DataError):  # the feed refuses the same folder (before or during the run)
        m = DatabentoMarket(d)
        for day in m.sessions():
            m.snapshot("SPX", pd.Timestamp(day).tz_localize("America/New_York") + pd.Timedelta(hours=10))


def test_dbn_export_and_convert_keep_every_underlying(tmp_path):
    """SPX and XSP chains to DBN, then `data convert`: one chain file per underlying and session (the DBN
    files of two underlyings once overwrote each other)."""
    import pyarrow.parquet as pq

    m = SyntheticMarket(seed=3, start="2023-01-03", end="2023-01-03")
    export(m, tmp_path / "ref", interval_minutes=1, underlyings=("SPX", "XSP"), symbols=("SPX", "XSP"), max_dte=1,
           strike_range_pct=1.0)
    files_to_dbn(tmp_path / "ref", tmp_path / "dbn")
    assert main(["data", "convert", str(tmp_path / "dbn"), str(tmp_path / "pq")]) == 0
    got = sorted(p.relative_to(tmp_path / "pq").as_posix() for p in (tmp_path / "pq" / "chains").rglob("*.parquet"))
    assert got == ["chains/SPX/2023-01-03.parquet", "chains/XSP/2023-01-03.parquet"]
    for name in got:
        a, b = pq.read_table(tmp_path / "ref" / name), pq.read_table(tmp_path / "pq" / name)
        assert b.num_rows == a.num_rows > 390
        assert set(b.column("underlying").to_pylist()) == {name.split("/")[1]}
        for c in ("bid", "ask", "strike"):
            assert sorted(a.column(c).to_pylist()) == sorted(b.column(c).to_pylist()), (name, c)
