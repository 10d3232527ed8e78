"""The ``files`` feed reads a Parquet session on demand (issue 19, real chain size): a snapshot decodes the
row groups of its minute, held legs come from the contract-major ``marks/`` copy. Whatever the file's layout
(as ``market export`` writes it, without its marks copy, or written by plain pyarrow with row groups that cut
snapshots in two), snapshots and leg quotes equal the synthetic market's the files came from; a marks copy or
a snapshot index that no longer matches its chain file is never believed."""

from __future__ import annotations

import datetime as dt
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import strikebench.feeds.files as files
from strikebench.errors import DataError
from strikebench.feeds.convert import convert
from strikebench.feeds.files import FileMarket, _ParquetSession, chain_file, marks_file
from strikebench.feeds.synthetic import SyntheticMarket, export
from strikebench.options.contracts import OptionContract

DAYS = (dt.date(2023, 1, 3), dt.date(2023, 1, 4))
COLS = ("bid", "ask", "last", "volume", "open_interest", "iv", "delta", "gamma", "theta", "vega")


@pytest.fixture(scope="module")
def market():
    return SyntheticMarket(seed=11, start="2023-01-03", end="2023-01-04")


@pytest.fixture(scope="module")
def layouts(market, tmp_path_factory):
    """One export (every minute, 2 sessions, <= 3 DTE, strikes within 1.5%) in four layouts."""
    mp = pytest.MonkeyPatch()
    mp.setattr(files, "ROW_GROUP_ROWS", 1_500)  # a few minutes a group, as at real size
    mp.setattr(files, "MARKS_ROW_GROUP_ROWS", 800)
    try:
        written = tmp_path_factory.mktemp("written")
        export(market, written, interval_minutes=1, underlyings=("SPX",), symbols=("SPX",), max_dte=3,
               strike_range_pct=1.5)
        no_marks = tmp_path_factory.mktemp("no-marks") / "d"
        shutil.copytree(written, no_marks)
        shutil.rmtree(no_marks / "marks")
        plain = tmp_path_factory.mktemp("plain") / "d"  # another tool's Parquet: no index, groups cut minutes
        shutil.copytree(written, plain)
        shutil.rmtree(plain / "marks")
        for day in DAYS:
            p = chain_file(plain, "SPX", day, "parquet")
            t = pq.read_table(p)
            pq.write_table(t.replace_schema_metadata(None), p, row_group_size=777)
        converted = tmp_path_factory.mktemp("converted") / "d"
        convert(plain, converted)
    finally:
        mp.undo()
    return {"written": written, "no_marks": no_marks, "plain": plain, "converted": converted}


def _frame(s):
    return pd.DataFrame({c: getattr(s, c) for c in ("root", "expiry", "strike", "is_call") + COLS}
                        ).set_index(["root", "expiry", "strike", "is_call"])


@pytest.mark.parametrize("layout", ["written", "no_marks", "plain", "converted"])
def test_snapshots_and_leg_quotes_read_on_demand_equal_the_market(market, layouts, layout):
    d = layouts[layout]
    s0 = _ParquetSession(chain_file(d, "SPX", DAYS[0], "parquet"), marks=marks_file(d, "SPX", DAYS[0]))
    assert s0.pf.metadata.num_row_groups >= 10  # several groups a session, else nothing is skipped
    assert s0.indexed == (layout in ("written", "no_marks", "converted"))
    assert (s0._marks_file() is not False) == (layout in ("written", "converted"))
    f = FileMarket(d, "parquet")
    listed = f.listed_expiries("SPX", DAYS[0])
    assert listed == [dt.date(2023, 1, 3), dt.date(2023, 1, 4), dt.date(2023, 1, 5), dt.date(2023, 1, 6)]
    for at, exps in (("09:30", None), ("10:00", listed[1:3]), ("11:07", None), ("15:59", listed[1:2])):
        ts = pd.Timestamp(f"{DAYS[0]} {at}", tz="America/New_York")
        a, b = market.snapshot("SPX", ts, exps or listed), f.snapshot("SPX", ts, exps)
        assert b.timestamp == a.timestamp and b.underlying_price == a.underlying_price
        fa, fb = _frame(a), _frame(b)
        assert 40 < len(fb) < len(fa)  # the export kept a band of the chain
        assert sorted(set(fb.index.get_level_values("expiry"))) == sorted(set(fa.index.get_level_values("expiry")))
        for c in COLS:
            np.testing.assert_array_equal(fa.loc[fb.index, c].to_numpy(), fb[c].to_numpy())
    # a put vertical and a call of the next day's expiry, each minute of both sessions (held overnight)
    snap = market.snapshot("SPX", pd.Timestamp(f"{DAYS[0]} 10:00", tz="America/New_York"))
    fb = _frame(f.snapshot("SPX", pd.Timestamp(f"{DAYS[0]} 10:00", tz="America/New_York")))
    puts = fb.xs((np.datetime64(DAYS[1], "D"), False), level=("expiry", "is_call"))
    k = float(puts.index.get_level_values("strike")[len(puts) // 2])
    legs = [OptionContract.make("SPXW", DAYS[1], k, "P"), OptionContract.make("SPXW", DAYS[1], k - 5, "P"),
            OptionContract.make("SPXW", DAYS[1], k + 10, "C")]
    assert snap is not None
    for day in DAYS:
        qa, qb = market.leg_quotes(legs, day), f.leg_quotes(legs, day)
        np.testing.assert_array_equal(qb.times, qa.times)
        np.testing.assert_array_equal(qb.bid, qa.bid)
        np.testing.assert_array_equal(qb.ask, qa.ask)
        assert np.isfinite(qb.bid).all() and qb.bid.shape == (390, 3)


def test_a_marks_copy_or_an_index_that_does_not_match_its_chain_file_is_not_believed(layouts, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(layouts["written"], d)
    day = DAYS[1]
    p = chain_file(d, "SPX", day, "parquet")
    assert marks_file(d, "SPX", day).is_file()
    # another tool changes one quote and keeps the footer's metadata (pyarrow does by default)
    t = pq.read_table(p)
    bid = t.column("bid").to_numpy().copy()
    row = 7 * 1_000 + 3
    bid[row] = 0.05 if bid[row] != 0.05 else 0.10
    root, exp, strike, right = (t.column(c)[row].as_py() for c in ("root", "expiry", "strike", "right"))
    at = t.column("timestamp")[row].as_py()
    pq.write_table(t.set_column(t.schema.get_field_index("bid"), "bid", pa.array(bid)), p)
    f = FileMarket(d, "parquet")
    leg = OptionContract.make(root, exp, strike, right)
    # the marks copy rewritten in another row order, its metadata (the contract index) kept: the index is
    # checked against the rows it points at, the copy dropped, the chain file read
    mp = marks_file(d, "SPX", DAYS[0])
    m = pq.read_table(mp)
    pq.write_table(m.take(pa.array(np.arange(len(m))[::-1])), mp, row_group_size=800)
    q0, want = f.leg_quotes([leg], DAYS[0]), FileMarket(layouts["no_marks"], "parquet").leg_quotes([leg], DAYS[0])
    assert f._session("SPX", DAYS[0])._marks is False and np.isfinite(want.bid).sum() > 300
    np.testing.assert_array_equal(q0.bid, want.bid)
    np.testing.assert_array_equal(q0.ask, want.ask)
    q = f.leg_quotes([leg], day)
    i = int(np.searchsorted(q.times, pd.Timestamp(at).value))
    assert q.bid[i, 0] == bid[row]  # the chain file's value: the stale marks copy was left alone
    assert f._session("SPX", day).indexed  # same rows: the index still holds (and is checked on read)
    # the timestamps moved a minute, the metadata kept: the index is refused when a snapshot is read
    ts = t.column("timestamp").cast(pa.int64()).to_numpy() + 60_000_000_000
    pq.write_table(t.set_column(0, "timestamp", pa.array(ts).cast(t.schema.field("timestamp").type)), p)
    f = FileMarket(d, "parquet")
    with pytest.raises(DataError, match=r"2023-01-04.parquet: row \d+: the snapshot index in the file's metadata "
                                        r"does not match its rows"):
        f.snapshot("SPX", pd.Timestamp(f"{day} 10:00", tz="America/New_York"))


def test_a_bad_row_read_on_demand_is_one_line_naming_the_file_row(layouts, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(layouts["plain"], d)
    day = DAYS[0]
    p = chain_file(d, "SPX", day, "parquet")
    t = pq.read_table(p)
    ts = t.column("timestamp").cast(pa.int64()).to_numpy()
    minute = int(np.flatnonzero(ts == ts[0] + 30 * 60_000_000_000)[0])  # 10:00's first row
    rows = np.r_[np.arange(minute + 4), minute + 3, np.arange(minute + 4, len(t))]  # a contract twice at 10:00
    pq.write_table(t.take(pa.array(rows)), p, row_group_size=777)
    f = FileMarket(d, "parquet")
    f.snapshot("SPX", pd.Timestamp(f"{day} 09:59", tz="America/New_York"))  # other minutes read fine
    with pytest.raises(DataError, match=rf"2023-01-03.parquet: row {minute + 4}: duplicate row \(SPXW"):
        f.snapshot("SPX", pd.Timestamp(f"{day} 10:00", tz="America/New_York"))


def test_data_check_in_parallel_equals_one_process_and_names_a_duplicate_in_parquet(layouts, tmp_path, monkeypatch):
    import strikebench.datacheck as datacheck
    from strikebench.datacheck import check_dataset

    monkeypatch.setattr(datacheck, "_PARALLEL_MIN_FILES", 2)  # two files: two worker processes
    monkeypatch.setattr(datacheck, "_BATCH_ROWS", 2_000)  # several batches a file; in "plain" they cut minutes

    one = check_dataset(layouts["written"], workers=1)
    assert one.ok, one.errors
    two = check_dataset(layouts["plain"], workers=2)
    assert two.ok and two.coverage == one.coverage  # same figures whatever the row order within a minute
    (row,) = one.coverage
    frames = [pd.read_parquet(chain_file(layouts["plain"], "SPX", d, "parquet")) for d in DAYS]
    assert row["snapshots"] == [390, 390] and row["quotes"] == sum(len(f) for f in frames)
    assert row["zero_bid"] == sum(int((f["bid"] == 0).sum()) for f in frames)
    # a contract twice in one minute, in the sorted layout and in a file sorted by time only
    for layout, workers in (("written", 1), ("plain", 2)):
        d = tmp_path / layout
        shutil.copytree(layouts[layout], d)
        p = chain_file(d, "SPX", DAYS[1], "parquet")
        t = pq.read_table(p)
        rows = np.r_[np.arange(501), 500, np.arange(501, len(t))]
        pq.write_table(t.take(pa.array(rows)), p)
        rep = check_dataset(d, workers=workers)
        assert len(rep.errors) == 1 and "2023-01-04.parquet: row 501: duplicate row (SPX" in rep.errors[0], rep.errors


def test_export_in_worker_processes_writes_the_same_files(market, layouts, tmp_path, monkeypatch):
    monkeypatch.setattr(files, "ROW_GROUP_ROWS", 1_500)  # as the fixture's export
    monkeypatch.setattr(files, "MARKS_ROW_GROUP_ROWS", 800)
    export(market, tmp_path, interval_minutes=1, underlyings=("SPX",), symbols=("SPX",), max_dte=3,
           strike_range_pct=1.5, workers=2)
    for day in DAYS:
        for path in (chain_file, lambda root, und, d, fmt: marks_file(root, und, d)):
            a, b = pq.ParquetFile(path(layouts["written"], "SPX", day, "parquet")), pq.ParquetFile(path(tmp_path, "SPX", day, "parquet"))
            assert [a.metadata.row_group(g).num_rows for g in range(a.metadata.num_row_groups)] == \
                   [b.metadata.row_group(g).num_rows for g in range(b.metadata.num_row_groups)]
            ma, mb = a.metadata.metadata, b.metadata.metadata
            assert {k for k in ma if b"write_id" not in k and b"bytes" not in k and k != b"ARROW:schema"} == \
                   {k for k in mb if b"write_id" not in k and b"bytes" not in k and k != b"ARROW:schema"}
            assert all(ma[k] == mb[k] for k in ma if k.startswith(b"strikebench.") and b"write_id" not in k
                       and b"bytes" not in k)
            pd.testing.assert_frame_equal(a.read().to_pandas(), b.read().to_pandas())
