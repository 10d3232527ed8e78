"""A backtest's journal commits whole sessions, a quarter second of them at a time (``Journal.session_done``):
where the commits fall changes no row of the journal, and a commit never holds part of a session."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

from strikebench import journal as J

from test_journal_session_rows import _dump

ROOT = Path(__file__).resolve().parents[1]


def _backtest(out_dir: Path, market, resolved, pm, *, progress: bool = False) -> Path:
    from rich.console import Console

    from strikebench.engine.runner import Backtest

    bt = Backtest(resolved, console=Console(file=io.StringIO()), progress=progress, pm=pm, out_dir=str(out_dir),
                  market=market)
    bt.loop()
    return bt.run_dir / J.JOURNAL_FILE


def test_where_a_backtests_commits_fall_changes_no_row(tmp_path, monkeypatch):
    """The four shipped strategies over two weeks committed after every session, and committed after the first
    session and at the end only (every other session's rows wait in memory): every table equal row by row in
    rowid order (ids assigned by the database included). The second run shows progress: its closed-trade count
    (``Portfolio.closed_count``) is the closed-trade list's length at every session end."""
    from strikebench.config import load_config
    from strikebench.engine.runner import Backtest
    from strikebench.plugin_manager import get_plugin_manager

    pm = get_plugin_manager()
    resolved = load_config(ROOT / "configs" / "all_strategies.yaml", ["data.end=2023-01-20", "output.plots=false"],
                           registry=pm.registry)
    market = resolved.data.build().open()
    commits = []
    real_commit = J.Journal.commit
    monkeypatch.setattr(J.Journal, "commit", lambda self: (commits.append(1), real_commit(self))[1])
    monkeypatch.setattr(J.Journal, "SESSION_COMMIT_INTERVAL", 0.0)
    every = _dump(_backtest(tmp_path / "every", market, resolved, pm))
    n_every, commits[:] = len(commits), []

    counted = []
    real_done = Backtest._session_done

    def done(self, day, equity):
        p = self.engine.portfolio
        counted.append((p.closed_count(), len(p.closed_trades())))
        real_done(self, day, equity)

    monkeypatch.setattr(Backtest, "_session_done", done)
    monkeypatch.setattr(J.Journal, "SESSION_COMMIT_INTERVAL", 1e9)
    rare = _dump(_backtest(tmp_path / "rare", market, resolved, pm, progress=True))
    assert n_every >= 13 and len(commits) <= 4  # 13 sessions; the first, end_run's and close's commits
    assert every.keys() == rare.keys()
    for table in every:
        assert rare[table] == every[table], table
    assert len(every["equity"]) == 13 and len(every["trades"]) > 50 and len(every["chain_snapshots"]) > 100
    assert len(counted) == 13 and all(a == b for a, b in counted) and counted[-1][0] > 50


class _Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_session_done_commits_whole_sessions_once_the_interval_passed(tmp_path, monkeypatch):
    """The first finished session is committed at once; later ones wait until SESSION_COMMIT_INTERVAL passed since
    the last commit, then go together; a reader never sees an uncommitted session; close commits the rest."""
    clock = _Clock()
    monkeypatch.setattr(J.time, "monotonic", clock)
    monkeypatch.setattr(J.Journal, "SESSION_COMMIT_INTERVAL", 0.375)  # three steps of 0.125, exact in binary
    db = tmp_path / "j.sqlite"
    j = J.Journal(db)
    j.start_run("r", name="r", mode="backtest")
    j.commit_per_session()

    def seen() -> list[str]:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return [r[0] for r in con.execute("SELECT day FROM equity ORDER BY day")]
        finally:
            con.close()

    step = 0.125
    days = [f"2024-01-{d:02d}" for d in range(2, 12)]
    visible = []
    for day in days:
        j.record_equity("r", day, 100_000)
        j.session_done()
        visible.append(len(seen()))
        clock.t += step
    # committed after sessions 1, 4, 7, 10 (each a full interval after the last commit: 3 steps of a third)
    assert visible == [1, 1, 1, 4, 4, 4, 7, 7, 7, 10]
    j.record_equity("r", "2024-01-12", 100_000)  # a session finished after the last commit, then the run closes
    j.close()
    assert seen() == days + ["2024-01-12"]


def test_iso_time_of_aware_datetimes_is_their_isoformat_whatever_was_seen_before():
    """iso_time keeps the text of the aware datetimes and Timestamps it formatted (keyed by value, tzinfo and fold):
    every value's text is its own ``isoformat()``, also after an equal instant in another zone or of the other type,
    the other fold of an ambiguous wall time, micro- and nanoseconds, and past the cache's size."""
    import datetime as dt
    import random
    import zoneinfo

    import pandas as pd

    ny, chi, utc = zoneinfo.ZoneInfo("America/New_York"), zoneinfo.ZoneInfo("America/Chicago"), dt.timezone.utc
    fixed = [dt.timezone(dt.timedelta(hours=h, minutes=m)) for h, m in ((-5, 0), (-4, 0), (5, 30), (0, 0))]
    zones = [ny, chi, utc, *fixed]
    rng = random.Random(15)
    start = dt.datetime(2022, 1, 1, tzinfo=utc)
    values = []
    for _ in range(6000):
        instant = start + dt.timedelta(seconds=rng.randrange(0, 3 * 365 * 86400), microseconds=rng.choice([0, 0, 1, 500000]))
        for zone in rng.sample(zones, 3):  # one instant in several zones, in turn
            values.append(instant.astimezone(zone))
    for day in (dt.date(2022, 11, 6), dt.date(2023, 11, 5)):  # fall back: 01:30 twice in New York
        for fold in (0, 1, 0, 1):
            values.append(dt.datetime(day.year, day.month, day.day, 1, 30, tzinfo=ny, fold=fold))
    # pandas Timestamps of the same instants (snapshots' times), some with nanoseconds, between the datetimes
    stamps = [pd.Timestamp(v) + pd.Timedelta(nanoseconds=rng.choice([0, 0, 0, 7, 999])) for v in values[::3]]
    values = [x for pair in zip(values[::3], stamps) for x in pair] + values
    values += values[:500]  # seen before
    texts = {v.isoformat() for v in values if v.fold}
    assert any(t.endswith("-05:00") for t in texts) and len(values) > 4096
    assert any(type(v) is pd.Timestamp and v.nanosecond for v in values)
    for v in values:
        assert J.iso_time(v) == v.isoformat(), (v, v.fold)
