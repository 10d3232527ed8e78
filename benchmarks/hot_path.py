"""Where a backtest's time goes: CPU seconds per engine component, per call and per bar.

    python benchmarks/hot_path.py                                   # the main job, two months
    python benchmarks/hot_path.py configs/all_strategies.yaml 2023-01-31

Runs the config as ``strikebench backtest`` builds it (journal, every risk manager), twice on one
generated market, and times the second run with this process's CPU clock (other processes on a
loaded machine do not count). Each listed method is wrapped with a timer, which adds about a
microsecond per call: read the figures as shares, the absolute loop figure from benchmarks/run.py.
Components nest (a decision contains its chain, its journal record and its order).
"""

from __future__ import annotations

import collections
import functools
import io
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    from rich.console import Console

    import strikebench.engine.broker as broker
    import strikebench.engine.context as context
    import strikebench.engine.core as core
    import strikebench.journal as journal
    from strikebench.config import load_config
    from strikebench.engine.runner import Backtest
    from strikebench.plugin_manager import get_plugin_manager

    argv = list(sys.argv[1:] if argv is None else argv)
    config = argv[0] if argv else str(ROOT / "configs" / "spx_credit_vertical.yaml")
    end = argv[1] if len(argv) > 1 else "2023-02-28"
    seconds: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()

    def wrap(owner, name, label):
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def timed(*a, **k):
            t = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                seconds[label] += time.process_time() - t
                calls[label] += 1

        setattr(owner, name, timed)

    wrap(core.Engine, "step", "engine per bar (everything below)")  # what Backtrader's next is
    wrap(core.Engine, "_start_session", "session start (settlement, marks)")
    wrap(core.Engine, "_end_session", "session end (expiries, settlement, journal commit)")
    wrap(core.Engine, "chain", "chain snapshot")
    wrap(core.Engine, "record_decision", "journal: decision + snapshot")
    wrap(core.Engine, "_on_transition", "journal: order event")
    wrap(core.Engine, "_on_fill", "journal: fill (+ closed trade)")
    wrap(context.StrategyContext, "would_veto", "risk check before deciding")
    wrap(context.StrategyContext, "_send", "order: risk gate + submit")
    wrap(broker.QuoteBook, "legs", "leg quotes for the session")
    wrap(broker.OptionsBroker, "_remark", "marks for the session")
    wrap(broker.OptionsBroker, "on_bar", "broker per bar (fills, mark)")
    wrap(journal.Journal, "commit", "journal: session commit")
    wrap(journal.Journal, "store_snapshot", "journal: snapshot blob")

    pm = get_plugin_manager()
    resolved = load_config(config, [f"data.end={end}"], registry=pm.registry)
    market = resolved.data.build().open()
    for rp in resolved.strategies:
        cls = type(rp.build())
        for method, what in (("on_decision_time", "decision"), ("manage", "exit check per bar")):
            label = f"{rp.instance_id}: {what}"
            if label not in calls:
                wrap(cls, method, label)
        if hasattr(cls, "evaluate"):
            wrap(cls, "evaluate", f"{rp.instance_id}: evaluate")
    total = bars = 0.0
    for _ in range(2):  # the first run warms the market's caches, as a longer run would be warm
        seconds.clear()
        calls.clear()
        backtest = Backtest(resolved, console=Console(file=io.StringIO()), progress=False, pm=pm,
                            out_dir=tempfile.mkdtemp(prefix="sb-hot-"), market=market)
        t = time.process_time()
        bars = backtest.loop()["bars"]
        total = time.process_time() - t
    print(f"{config} to {end}: loop {total:.2f} s CPU, {bars:,} bars, {total / bars * 1e6:.1f} us a bar "
          f"(Backtrader's own share is the rest of the loop)")
    print(f"  {'component':52s} {'CPU s':>7s} {'calls':>7s} {'us a call':>10s} {'us a bar':>9s}")
    for label, s in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {label:52s} {s:7.3f} {calls[label]:7d} {s / calls[label] * 1e6:10.1f} {s / bars * 1e6:9.1f}")


if __name__ == "__main__":
    main()
