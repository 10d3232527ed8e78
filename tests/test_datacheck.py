"""``strikebench data check``: coverage of a good dataset, and one line naming file and row/field for each
malformed file (each case written by the test)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from strikebench.cli import main
from strikebench.datacheck import check_dataset
from strikebench.feeds.synthetic import SyntheticMarket, export

DAYS = ["2023-01-03", "2023-01-04"]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    m = SyntheticMarket(seed=7, start="2023-01-03", end="2023-01-04")
    out = {}
    for fmt in ("parquet", "csv"):
        d = tmp_path_factory.mktemp("good-" + fmt)
        export(m, d, interval_minutes=30, underlyings=("SPX",), symbols=("SPX",), format=fmt, max_dte=3,
               strike_range_pct=2.0)
        out[fmt] = d
    return out


def _copy(good, fmt, tmp_path):
    d = tmp_path / "data"
    shutil.copytree(good[fmt], d)
    return d


def test_good_dataset_coverage_matches_the_files(good, capsys):
    for fmt in ("parquet", "csv"):
        rep = check_dataset(good[fmt])
        assert rep.ok, rep.errors
        assert rep.fmt == fmt and rep.sessions == 2
        (row,) = rep.coverage
        # independently from the files: pandas over the two chain files
        frames = [pd.read_parquet(good["parquet"] / "chains" / "SPX" / f"{d}.parquet") for d in DAYS]
        assert row["snapshots"] == [f["timestamp"].nunique() for f in frames] == [14, 14]  # 09:30 every 30 min + 15:59
        assert row["expiries"] == [f["expiry"].nunique() for f in frames]
        assert row["zero_bid"] == sum(int((f["bid"] == 0).sum()) for f in frames)
        assert row["crossed"] == 0 and row["nan"] == 0
        assert row["missing_bar_minutes"] == 0
        assert row["missing_chain_minutes"] == 2 * (390 - 14)
        needed = {(e, r) for f in frames for e, r in zip(f["expiry"], f["root"]) if str(e) <= DAYS[-1]}
        assert row["settle_need"] == row["settle_have"] == len(needed)
    assert main(["data", "check", str(good["parquet"])]) == 0
    out = capsys.readouterr().out
    assert "ok (2 sessions)" in out and "SPX" in out


def _rewrite_parquet(path, fn):
    t = pq.read_table(path)
    pq.write_table(fn(t), path)


def _csv_lines(path):
    return path.read_text().splitlines(keepends=True)


CHAIN = "chains/SPX/2023-01-04"


def _case_missing_column(d, fmt):
    _rewrite_parquet(d / f"{CHAIN}.parquet", lambda t: t.drop_columns(["bid"]))
    return rf"{CHAIN}.parquet: missing column bid \(the file has"


def _case_wrong_type(d, fmt):
    p = d / f"{CHAIN}.csv"
    lines = _csv_lines(p)
    cells = lines[5].split(",")
    cells[5] = "abc"  # strike
    lines[5] = ",".join(cells)
    p.write_text("".join(lines))
    return rf"{CHAIN}.csv: line 6: field 'strike' is 'abc', not a double"


def _case_unsorted(d, fmt):
    p = d / f"{CHAIN}.csv"
    lines = _csv_lines(p)
    n = len(lines)
    lines[1], lines[n - 1] = lines[n - 1], lines[1]
    p.write_text("".join(lines))
    return rf"{CHAIN}.csv: line 3: timestamps are not sorted"


def _case_duplicate_row(d, fmt):
    p = d / f"{CHAIN}.csv"
    lines = _csv_lines(p)
    lines.insert(3, lines[2])
    p.write_text("".join(lines))
    return rf"{CHAIN}.csv: line 4: duplicate row \(SPXW"


def _case_stray_header(d, fmt):
    p = d / f"{CHAIN}.csv"
    lines = _csv_lines(p)
    lines.insert(10, lines[0])
    p.write_text("".join(lines))
    return rf"{CHAIN}.csv: line 11: a header line in the middle of the file"


def _case_no_underlying_bars(d, fmt):
    shutil.copy(d / f"{CHAIN}.parquet", d / "chains/SPX/2023-01-05.parquet")
    return r"chains/SPX/2023-01-05.parquet: a chain on 2023-01-05, a day with no SPX bars"


def _case_mixed_schemas(d, fmt):
    _rewrite_parquet(d / f"{CHAIN}.parquet",
                     lambda t: t.set_column(t.schema.get_field_index("iv"), "iv", t.column("iv").cast(pa.float32())))
    return rf"{CHAIN}.parquet: schema differs from 2023-01-03.parquet \(column 'iv' is float here, double there\)"


def _case_missing_settlement(d, fmt):
    _rewrite_parquet(d / "settlements.parquet",
                     lambda t: t.filter(pa.compute.not_equal(t.column("expiry"), pa.scalar(pd.Timestamp("2023-01-04").date(), pa.date32()))))
    return r"settlements.parquet: no PM settlement print for SPX expiry 2023-01-04"


def _case_mixed_formats(d, fmt):
    pd.read_parquet(d / f"{CHAIN}.parquet").to_csv(d / "chains/SPX/2023-01-05.csv", index=False)
    return r"chains/SPX/2023-01-05.csv: a .csv file in a parquet dataset"


def _case_truncated(d, fmt):
    p = d / f"{CHAIN}.parquet"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return rf"{CHAIN}.parquet: "


def _case_bad_right(d, fmt):
    p = d / f"{CHAIN}.csv"
    lines = _csv_lines(p)
    cells = lines[7].split(",")
    cells[6] = '"X"'
    lines[7] = ",".join(cells)
    p.write_text("".join(lines))
    return rf"{CHAIN}.csv: line 8: field 'right' is 'X', expected 'C' or 'P'"


def _case_bars_unsorted(d, fmt):
    _rewrite_parquet(d / "bars/SPX.parquet", lambda t: t.take(np.r_[0, 2, 1, np.arange(3, len(t))]))
    return r"bars/SPX.parquet: row 2: timestamps are not sorted"


CASES = [("parquet", _case_missing_column), ("csv", _case_wrong_type), ("csv", _case_unsorted),
         ("csv", _case_duplicate_row), ("csv", _case_stray_header), ("parquet", _case_no_underlying_bars),
         ("parquet", _case_mixed_schemas), ("parquet", _case_missing_settlement), ("parquet", _case_mixed_formats),
         ("parquet", _case_truncated), ("csv", _case_bad_right), ("parquet", _case_bars_unsorted)]


@pytest.mark.parametrize("fmt,case", CASES, ids=[c.__name__[6:] for _, c in CASES])
def test_a_malformed_file_is_one_line_naming_file_and_row_and_exit_4(good, tmp_path, capsys, fmt, case):
    d = _copy(good, fmt, tmp_path)
    before = sorted((p.relative_to(d), p.stat().st_mtime_ns) for p in d.rglob("*"))
    pattern = case(d, fmt)
    before = sorted((p.relative_to(d), p.stat().st_mtime_ns) for p in d.rglob("*"))
    assert main(["data", "check", str(d)]) == 4
    captured = capsys.readouterr()
    errors = [line for line in captured.out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, captured.out
    import re

    assert re.search(pattern, errors[0]), errors[0]
    assert "Traceback" not in captured.out + captured.err
    assert "error: 1 error(s) in" in captured.err
    assert sorted((p.relative_to(d), p.stat().st_mtime_ns) for p in d.rglob("*")) == before  # read only
