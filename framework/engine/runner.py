"""Run a resolved config as a Backtrader backtest: cerebro owns the loop, the engine does the options.

One ``bt.Strategy`` (:class:`EngineStrategy`) hosts every configured strategy
plugin through the :class:`~strikebench.engine.core.Engine`; the underlying's
minute bars are an ordinary Backtrader feed; the :class:`OptionsBroker` is
cerebro's broker, so Backtrader's analyzers (returns, drawdown) read its value.
"""

from __future__ import annotations

import array
import datetime as dt
import gc
import json
import math
import shutil
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd

from strikebench.api import RunInfo
from strikebench.engine.core import Engine

__all__ = ["EngineStrategy", "Backtest", "build_engine", "run_backtest", "run_cerebro", "bars_feed", "pandas_feed",
           "MinuteBars", "frozen_heap"]


class EngineStrategy(bt.Strategy):
    """The single Backtrader strategy: forwards every bar to the engine."""

    params = (("engine", None),)

    def __init__(self):
        self._engine: Engine = self.p.engine
        self._i = -1
        # Backtrader calls ``self.next()`` once a bar: the engine's next bar itself, without a frame in between
        # (an engine-like object with only ``on_bar(i)`` is driven by the method below)
        step = getattr(self._engine, "step", None)
        if step is not None:
            self.next = step

    def next(self):
        self._i += 1
        self._engine.on_bar(self._i)

    def stop(self):
        self._engine.finish()


class MinuteBars(bt.feed.DataBase):
    """A Backtrader feed of minute bars read from arrays made once at ``start``.

    Backtrader's ``PandasData`` reads every value of every bar through ``DataFrame.iloc`` (about 40 % of
    a bare cerebro loop over minute bars); this feed hands cerebro the same lines (datetime as
    ``date2num`` of the naive New York label, open/high/low/close/volume, openinterest left unset) from
    Python lists. ``tests/test_runner_feed.py`` checks every line equals ``PandasData``'s, bar for bar.

    Two more of Backtrader's per-bar costs are left out (together about 40 % of a bare loop on this feed):

    * **Preload** fills each line's buffer with all the bars at once (:meth:`preload`) instead of one
      ``load()`` a bar (a ``forward`` of 7 lines, a ``_load``, the date and filter checks), when nothing would
      make those differ: no filters, no ``fromdate``/``todate``, no input time zone.
    * **Tick attributes.** Backtrader's feed sets a ``tick_<line>`` attribute per line every bar and clears it
      before the next: they serve Backtrader's own ``BackBroker`` filling Backtrader orders (it reads the bar's
      lines when they are absent) and bars built from ticks (replay). strikebench's broker fills from option
      quotes and nothing replays these bars, so they are not kept.
    """

    params = (("bars", None),)

    def start(self):
        super().start()
        df = self.p.bars
        idx = df.index
        # date2num(dt) is fsum(ordinal, hour / 24, minute / 1440, second / 86400, microsecond / 86400e6)
        ordinal = (idx.values.astype("datetime64[D]").astype(np.int64) + 719_163).astype(np.float64)
        parts = zip(ordinal.tolist(), (idx.hour.to_numpy() / 24.0).tolist(),
                    (idx.minute.to_numpy() / 1440.0).tolist(), (idx.second.to_numpy() / 86400.0).tolist(),
                    (idx.microsecond.to_numpy() / 86400000000.0).tolist())
        fsum = math.fsum
        # one list per line (not a tuple per bar: a year's ~100,000 tuples would each be visited by every
        # full collection the engine's allocations trigger during the loop)
        self._cols = ([fsum(p) for p in parts],) + tuple(
            df[c].to_numpy(dtype=np.float64).tolist() for c in ("open", "high", "low", "close", "volume"))
        self._n = len(idx)
        self._next = 0

    def _load(self):
        i = self._next
        if i >= self._n:
            return False
        self._next = i + 1
        lines = self.lines
        dts, o, h, lo, c, v = self._cols
        lines.datetime[0] = dts[i]
        lines.open[0] = o[i]
        lines.high[0] = h[i]
        lines.low[0] = lo[i]
        lines.close[0] = c[i]
        lines.volume[0] = v[i]
        return True

    def preload(self):
        if not self._fill_lines():
            super().preload()
        self._cols = ()  # every bar is in the lines now (a year: ~20 MB of Python floats freed)

    def _fill_lines(self) -> bool:
        """Every bar left into the lines' buffers at once, leaving them as ``while self.load(): pass`` does
        (each buffer ``n`` values long, its index on the last), then ``_last()`` and ``home()`` as Backtrader's
        ``preload`` ends. False, doing nothing, when a bar-by-bar load could differ (filters, a date window, an
        input time zone, bars put back on the stack) or a buffer is not Backtrader's plain ``array``."""
        if (self._filters or self._tzinput or self._barstack or self._barstash
                or self.fromdate != float("-inf") or self.todate != float("inf")):
            return False
        names = self.getlinealiases()
        buffers = [getattr(self.lines, name) for name in names]
        if any(type(b.array) is not array.array or b.extension for b in buffers):
            return False
        start, n = self._next, self._n - self._next
        cols = dict(zip(("datetime", "open", "high", "low", "close", "volume"), self._cols))
        unset = None
        for name, buf in zip(names, buffers):
            values = cols.get(name)
            if values is None:  # openinterest (and a subclass's extra lines): NaN, as forward() leaves them
                if unset is None:
                    unset = array.array("d", [math.nan]) * n
                buf.array.extend(unset)
            else:
                buf.array.extend(values[start:] if start else values)
            buf.idx += n
            buf.lencount += n
        self._next = self._n
        self._last()
        self.home()
        return True

    # Backtrader's per-bar tick attributes: not kept (see the class's docstring)
    def _tick_nullify(self):
        pass

    def _tick_fill(self, force=False):
        pass


def _naive_ny(bars: pd.DataFrame) -> pd.DataFrame:
    """OHLCV with naive America/New_York labels, as Backtrader takes them."""
    df = bars[["open", "high", "low", "close", "volume"]].copy()
    df.index = df.index.tz_convert("America/New_York").tz_localize(None)
    return df


def bars_feed(bars: pd.DataFrame) -> MinuteBars:
    """A Backtrader feed of minute bars (naive America/New_York labels)."""
    return MinuteBars(bars=_naive_ny(bars), timeframe=bt.TimeFrame.Minutes, compression=1)


def pandas_feed(bars: pd.DataFrame) -> bt.feeds.PandasData:
    """The same bars through Backtrader's stock ``PandasData`` (what a Backtrader user writes; the benchmark's
    reference loop beside strikebench's own feed)."""
    return bt.feeds.PandasData(dataname=_naive_ny(bars), timeframe=bt.TimeFrame.Minutes, compression=1)


def build_engine(resolved, *, run: RunInfo, hook=None, market=None, on_session_end=None) -> Engine:
    """Build the plugins a resolved config names and wire them into an engine."""
    market = market if market is not None else resolved.data.build().open()
    strategies = [(rp.instance_id, rp.build()) for rp in resolved.strategies]
    return Engine(
        market=market, strategies=strategies, fill_model=resolved.fill_model.build(),
        commission=resolved.commission.build(), risk_managers=[rp.build() for rp in resolved.risk],
        initial_cash=resolved.broker.params.initial_cash, run=run, hook=hook, on_session_end=on_session_end,
        features=[rp.build() for rp in resolved.features],
        blocked_decisions=resolved.config.journal.blocked_decisions,
    )


@contextmanager
def frozen_heap():
    """The objects that exist before the loop (market arrays' owners, the timeline, plugins: a few hundred
    thousand) are moved out of the cyclic collector's reach for the loop (``gc.freeze``), so a full
    collection triggered by a decision's allocations scans only what the run made since (such a
    collection cost about a millisecond inside a decision). Measured on the whole main-job loop the
    effect is within the noise (about +0.01 of the ratio to the bare loop). Unfrozen after: nothing is
    kept alive longer.

    The youngest generation is also collected every 10,000 new container objects instead of Python's 700:
    a decision's short-lived lists and dicts (some with thousands of items to visit) made the 700-object collections cost 2.5-4.5 % of a four-strategy loop (100-190 ms a
    quarter, ~95 collections); at 10,000 it is ~35 ms (6). Restored after the loop."""
    threshold = gc.get_threshold()
    gc.freeze()  # no collection first: a full one over that heap costs a tenth of a second
    gc.set_threshold(max(threshold[0], YOUNG_COLLECTION_THRESHOLD), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


#: new container objects between two collections of the youngest generation during a loop (see frozen_heap)
YOUNG_COLLECTION_THRESHOLD = 10_000


def run_cerebro(engine: Engine, *, analyzers: bool = False) -> dict:
    """Run the engine under cerebro.

    With ``analyzers`` Backtrader's DrawDown and TimeReturn analyzers run too and
    their readings are returned (they read the OptionsBroker's value; a test checks
    they agree with the engine's own figures). They cost about a third of the bare
    loop per bar, so a normal run leaves them out: the engine records the account
    value after every bar itself (``engine.equity_curve``).

    ``runonce=True`` (Backtrader's default): the engine strategy has no indicators, so the two modes
    call ``next`` on the same bars in the same order with the broker notified before each, and the
    vectorized mode's loop costs about 30 % less per bar than the event mode's.
    """
    cerebro = bt.Cerebro(stdstats=False, preload=True, runonce=True)
    cerebro.adddata(bars_feed(engine.bars))
    cerebro.setbroker(engine.broker)
    cerebro.addstrategy(EngineStrategy, engine=engine)
    if not analyzers:
        with frozen_heap():
            cerebro.run()
        return {}
    engine.quiet_bars = False  # the analyzers read the broker's value every bar
    cerebro.addanalyzer(bt.analyzers.DrawDown, _name="drawdown")
    cerebro.addanalyzer(bt.analyzers.TimeReturn, _name="daily", timeframe=bt.TimeFrame.Days)
    with frozen_heap():
        strat = cerebro.run()[0]
    dd = strat.analyzers.drawdown.get_analysis()
    daily = strat.analyzers.daily.get_analysis()
    return {"bt_max_drawdown_money": float(dd.max.moneydown), "bt_max_drawdown_pct": float(dd.max.drawdown),
            "bt_daily_returns": {str(k.date()): float(v) for k, v in daily.items()}}


@contextmanager
def _sigterm_exits():
    """SIGTERM raises SystemExit(143) while the loop runs (main thread only), so an interrupted run
    unwinds like Ctrl-C: the journal commits what it holds at exit and the run reads as incomplete."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Backtest:
    """One backtest exactly as ``strikebench backtest`` runs it, in three phases the benchmark times apart.

    ``Backtest(resolved, pm=pm)`` builds the market (unless one is handed in), the run folder and the
    engine with every configured plugin and the plugin manager's hooks (the journal among them);
    :meth:`loop` runs cerebro over every bar; :meth:`report` writes the run folder's files from the
    journal and prints the summary. :func:`run_backtest` is the three in a row.
    """

    def __init__(self, resolved, *, console=None, progress: bool = True, pm=None, out_dir: str | None = None,
                 market=None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from strikebench.userfiles import make_dir

        self.console = console or Console()
        self.resolved = resolved
        cfg = resolved.config
        check_run_targets(resolved, out_dir)  # output folder and journal, before any work: nothing made yet
        if market is None:
            with self.console.status("generating market data...", spinner="dots"):
                market = resolved.data.build().open()  # before the run folder: a data error leaves nothing behind
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(out_dir or cfg.output.dir) / f"{cfg.name}-{stamp}"
        n = 1
        while run_dir.exists():
            n += 1
            run_dir = Path(out_dir or cfg.output.dir) / f"{cfg.name}-{stamp}-{n}"
        self._created = make_dir(run_dir, key="output.dir", exist_ok=False)
        self.run_dir = run_dir
        with self._cleanup_if_not_started():
            self.run = RunInfo(run_id=run_dir.name, name=cfg.name, mode="backtest", config=resolved,
                               output_dir=str(run_dir), seed=resolved.data.params.model_dump().get("seed"))
            self.hook = pm.hook if pm is not None else None
            sessions = len(market.sessions())
            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=20),
                                     MofNCompleteColumn(), TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                     console=self.console, disable=not progress, transient=False)
            self._task = self.progress.add_task(cfg.name, total=sessions, status="")
            self.engine = build_engine(resolved, run=self.run, hook=self.hook, market=market,
                                       on_session_end=self._session_done if progress else None)
        self.summary: dict | None = None

    @contextmanager
    def _cleanup_if_not_started(self):
        """A start that fails before the journal holds the run leaves no folder behind."""
        from strikebench.userfiles import remove_created

        try:
            yield
        except BaseException:
            if not _run_started(self.run_dir):
                shutil.rmtree(self.run_dir, ignore_errors=True)
                remove_created(self._created[:-1])
            raise

    def _session_done(self, day, equity) -> None:
        p = self.engine.portfolio
        self.progress.update(self._task, advance=1, status=f"{day} trades {p.closed_count()} "
                                                           f"P&L {equity - p.initial_cash:+,.0f}")

    def loop(self) -> dict:
        """Every bar under cerebro (the journal writes as the run goes); returns the engine's summary."""
        with self._cleanup_if_not_started():
            if self.hook is not None:
                self.hook.on_run_start(run=self.run)
            with self.progress, _sigterm_exits():
                run_cerebro(self.engine)
        self.summary = self.engine.summary()
        self.summary["run_dir"] = str(self.run_dir)
        write_equity_bars(self.run_dir / EQUITY_BARS_FILE, self.engine)
        return self.summary

    def report(self) -> dict:
        """The run folder's files (from the journal alone; summary.json rewritten), and the printed summary."""
        from strikebench.report import has_journal, print_summary, write_report

        summary = self.summary if self.summary is not None else self.loop()
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        if has_journal(self.run_dir):
            summary = write_report(self.run_dir, extra_summary={"max_drawdown_per_bar": summary["max_drawdown_per_bar"]},
                                   plots=self.resolved.config.output.plots)
        print_summary(summary, self.console)
        return summary


#: the account value after every bar of a backtest (time, equity in dollars), beside the journal's daily equity
EQUITY_BARS_FILE = "equity_bars.parquet"


def write_equity_bars(path: Path, engine) -> None:
    """The per-bar equity curve as Parquet (``time`` UTC ns, ``equity`` dollars to the cent): what the dashboard
    draws, decimated; the journal keeps one equity row per session. A few milliseconds for a year (98k bars)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = engine.i + 1
    if n <= 0:
        return
    eq = np.round(np.asarray(engine.equity_curve[:n], dtype=np.float64), 2)
    ns = np.asarray(engine.timeline.ns[:n], dtype=np.int64)
    ok = np.isfinite(eq)
    table = pa.table({"time": pa.array(ns[ok], type=pa.timestamp("ns", tz="UTC")), "equity": pa.array(eq[ok])})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)


def run_backtest(resolved, *, console=None, progress: bool = True, pm=None, out_dir: str | None = None) -> dict:
    """Run a backtest from a resolved config; write the run folder; return the summary."""
    backtest = Backtest(resolved, console=console, progress=progress, pm=pm, out_dir=out_dir)
    backtest.loop()
    return backtest.report()


def check_run_targets(resolved, out_dir: str | None = None) -> None:
    """Every folder and file a run will write, checked before anything is made (one line each)."""
    from strikebench.errors import ConfigError
    from strikebench.journal import check_journal_target
    from strikebench.userfiles import prepare_output_dir

    cfg = resolved.config
    prepare_output_dir(out_dir or cfg.output.dir, key="output.dir" if out_dir is None else None, error=ConfigError)
    if cfg.journal.url:
        check_journal_target(cfg.journal.url)


def _run_started(run_dir: Path) -> bool:
    """The journal recorded the run (a crash from then on keeps the folder: the run reads as incomplete)."""
    import sqlite3
    from urllib.parse import quote

    from strikebench.journal import JOURNAL_FILE, JOURNAL_URL_FILE

    if (run_dir / JOURNAL_URL_FILE).exists():
        return True
    journal = run_dir / JOURNAL_FILE
    if not journal.is_file() or journal.stat().st_size == 0:
        return False
    try:
        db = sqlite3.connect(f"file:{quote(str(journal.resolve()))}?mode=ro", uri=True)
        try:
            return db.execute("SELECT 1 FROM runs LIMIT 1").fetchone() is not None
        finally:
            db.close()
    except sqlite3.Error:
        return False
