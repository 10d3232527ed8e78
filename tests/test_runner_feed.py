"""strikebench's minute-bar feed hands cerebro exactly the lines Backtrader's PandasData would."""

from __future__ import annotations

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from strikebench.engine.runner import MinuteBars, bars_feed, pandas_feed


class _Record(bt.Strategy):
    def __init__(self):
        self.rows = []

    def next(self):
        d = self.data
        self.rows.append((d.datetime[0], d.open[0], d.high[0], d.low[0], d.close[0], d.volume[0], d.openinterest[0]))


def _lines(feed, runonce: bool) -> np.ndarray:
    cerebro = bt.Cerebro(stdstats=False, preload=True, runonce=runonce)
    cerebro.adddata(feed)
    cerebro.addstrategy(_Record)
    return np.array(cerebro.run()[0].rows, dtype=np.float64)


def _bars() -> pd.DataFrame:
    """Three sessions of minute bars across the March DST change, with awkward floats (tz-aware index, as
    every market gives them)."""
    days = ["2023-03-10", "2023-03-13", "2023-03-14"]
    idx = pd.DatetimeIndex([t for d in days for t in pd.date_range(f"{d} 09:30", f"{d} 15:59", freq="1min",
                                                                   tz="America/New_York")])
    rng = np.random.default_rng(7)
    close = 3900 + np.cumsum(rng.normal(0, 1.3, len(idx))) + 0.1 + 0.2  # binary noise in every value
    return pd.DataFrame({"open": close - 0.35, "high": close + 1.05, "low": close - 1.15, "close": close,
                         "volume": rng.integers(0, 5000, len(idx)).astype(float)}, index=idx)


@pytest.mark.parametrize("runonce", [True, False])
def test_every_line_equals_pandasdata(runonce):
    bars = _bars()
    ours, stock = _lines(bars_feed(bars), runonce), _lines(pandas_feed(bars), runonce)
    assert isinstance(bars_feed(bars), MinuteBars)
    assert ours.shape == stock.shape == (len(bars), 7)
    # bit for bit: datetime numbers (date2num of the naive New York label), prices, volume; openinterest unset
    assert np.array_equal(ours, stock, equal_nan=True)
    assert np.isnan(ours[:, 6]).all()
    # and the datetimes are the bars' New York labels
    labels = [bt.num2date(x) for x in ours[:, 0]]
    assert labels[0] == dt_naive(bars.index[0]) and labels[-1] == dt_naive(bars.index[-1])


def dt_naive(ts: pd.Timestamp):
    return ts.tz_convert("America/New_York").tz_localize(None).to_pydatetime()


def test_preload_fills_the_lines_at_once_unless_a_bar_by_bar_load_could_differ(monkeypatch):
    """The default feed preloads every bar in one fill per line (the lines still equal PandasData's: the test
    above); with a date window Backtrader's bar-by-bar load runs, and the lines equal PandasData's with the
    same window."""
    taken = []
    fill = MinuteBars._fill_lines

    def spy(self):
        taken.append(fill(self))
        return taken[-1]

    monkeypatch.setattr(MinuteBars, "_fill_lines", spy)
    bars = _bars()
    _lines(bars_feed(bars), True)
    assert taken == [True]

    taken.clear()
    start = dt_naive(bars.index[400])

    def windowed(feed_fn):
        feed = feed_fn(bars)
        feed.p.fromdate = start
        return feed

    ours, stock = _lines(windowed(bars_feed), True), _lines(windowed(pandas_feed), True)
    assert taken == [False]
    assert ours.shape == stock.shape == (len(bars) - 400, 7)
    assert np.array_equal(ours, stock, equal_nan=True)


def test_the_loop_collects_young_objects_less_often_and_restores_the_collector():
    """frozen_heap (around every cerebro loop): the heap frozen, the youngest generation collected every
    10,000 new objects at least, and the collector as it was afterwards (also after an error)."""
    import gc

    from strikebench.engine.runner import YOUNG_COLLECTION_THRESHOLD, frozen_heap

    before = gc.get_threshold()
    with frozen_heap():
        inside = gc.get_threshold()
        frozen = gc.get_freeze_count()
    assert inside == (max(before[0], YOUNG_COLLECTION_THRESHOLD), *before[1:]) and inside[0] >= 10_000
    assert frozen > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError):
        with frozen_heap():
            raise RuntimeError("a loop that fails")
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
