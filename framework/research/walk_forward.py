"""``strikebench walk-forward``: optimize in-sample, trade the choice out-of-sample, window after window.

The span ``data.start .. data.end`` is cut into trading sessions. Window ``k``:

* rolling: in-sample = ``in_sample`` sessions starting at ``k * out_of_sample``; anchored: from the
  first session to the same end (it grows);
* out-of-sample = the ``out_of_sample`` sessions right after the in-sample's last (the last window
  may be shorter). Out-of-sample windows follow each other without gap or overlap.

Each window's in-sample sweep is the config's ``sweep:`` section with ``data.start``/``data.end`` set
to the in-sample span: its market ends at the in-sample's last session (the synthetic market is
range-stable, so it is the same market, cut there: no out-of-sample minute exists in it). The
parameters with the best ``select`` objective in-sample are then run on the out-of-sample span.
Only out-of-sample figures are reported; the stitched out-of-sample equity adds each window's daily
P&L to the previous window's end (each window starts from the configured cash: no compounding).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from strikebench.errors import ConfigError

__all__ = ["Window", "windows", "run_walk_forward", "WalkForwardResult"]


@dataclass(frozen=True)
class Window:
    number: int
    in_sample: tuple[dt.date, dt.date]
    out_of_sample: tuple[dt.date, dt.date]
    in_sessions: int
    out_sessions: int


def windows(sessions: list[dt.date], mode: str, in_sample: int, out_of_sample: int) -> list[Window]:
    """The walk-forward windows over ``sessions`` (sorted trading days)."""
    out = []
    k = 0
    while True:
        is_end = in_sample - 1 + k * out_of_sample  # index of the in-sample's last session
        oos_start = is_end + 1
        if oos_start >= len(sessions):
            break
        is_start = 0 if mode == "anchored" else k * out_of_sample
        oos_end = min(oos_start + out_of_sample - 1, len(sessions) - 1)
        out.append(Window(k, (sessions[is_start], sessions[is_end]), (sessions[oos_start], sessions[oos_end]),
                          is_end - is_start + 1, oos_end - oos_start + 1))
        k += 1
    return out


@dataclass
class WalkForwardResult:
    folder: Path
    windows: list[dict]
    curve: list[tuple[str, float]]
    oos: dict
    elapsed: float


def _sessions(resolved) -> list[dt.date]:
    params = resolved.data.params
    start, end = getattr(params, "start", None), getattr(params, "end", None)
    if not isinstance(start, dt.date) or not isinstance(end, dt.date):
        raise ConfigError(f"{resolved.source_path}: walk_forward needs a data source with `start` and `end` "
                          f"(data.source '{resolved.config.data.source}' has none)")
    from strikebench.calendar import default_calendar

    return [d.date() for d in default_calendar().sessions(start, end)]


def run_walk_forward(resolved, *, folder: str | Path | None = None, fresh: bool = False, executor: str | None = None,
                     address: str | None = None, workers: int | None = None, trials: int | None = None,
                     console: Console | None = None, progress: bool = True) -> WalkForwardResult:
    from strikebench.research.executors import make_executor
    from strikebench.research.sweep import Sweep, _lock
    from strikebench.userfiles import make_dir, write_atomic

    console = console or Console()
    wf = resolved.config.walk_forward
    spec = resolved.config.sweep
    if wf is None:
        raise ConfigError(f"{resolved.source_path}: no `walk_forward:` section; add one (see docs/research.md)")
    select = wf.select or spec.objectives[0].name
    objective = next(o for o in spec.objectives if o.name == select)
    sessions = _sessions(resolved)
    wins = windows(sessions, wf.mode, wf.in_sample, wf.out_of_sample)
    if not wins:
        raise ConfigError(f"{resolved.source_path}: walk_forward: data.start .. data.end has {len(sessions)} "
                          f"sessions, fewer than in_sample ({wf.in_sample}) + 1; widen the span or shorten the window")
    folder = Path(folder) if folder else Path(resolved.config.output.dir) / f"{resolved.config.name}-walk-forward"
    make_dir(folder, key="--dir", exist_ok=True)
    lock = _lock(folder)
    started = time.perf_counter()
    pool = None
    interrupted = False
    try:
        pool = make_executor(executor or spec.executor, workers or spec.workers,
                             address if address is not None else spec.ray_address)
        rows = []
        for w in wins:
            console.print(f"[bold]window {w.number}[/]: in-sample {w.in_sample[0]} .. {w.in_sample[1]} "
                          f"({w.in_sessions} sessions), out-of-sample {w.out_of_sample[0]} .. {w.out_of_sample[1]} "
                          f"({w.out_sessions})", highlight=False)
            sweep = Sweep(resolved, folder=folder / f"window-{w.number:02d}", fresh=fresh, trials=trials,
                          console=console, progress=progress, pool=pool, workers=pool.workers,
                          base_values={"data.start": w.in_sample[0], "data.end": w.in_sample[1]},
                          study_name=f"{resolved.config.name}-w{w.number:02d}", outputs=True, plots=False,
                          executor=executor, address=address)
            res = sweep.run()
            if res.interrupted:
                raise KeyboardInterrupt
            done = [r for r in res.trials if r["state"] == "complete"]
            k = [o.name for o in spec.objectives].index(select)
            sign = -1 if objective.direction == "maximize" else 1
            chosen = min(done, key=lambda r: (sign * r["values"][k], r["index"])) if done else None
            rows.append({"window": w, "chosen": chosen, "in_sample_value": chosen["values"][k] if chosen else None,
                         "trials": len(res.trials), "failed": res.failed})
        # out-of-sample runs, all windows at once
        handles = {}
        for row in rows:
            w, chosen = row["window"], row["chosen"]
            if chosen is None:
                continue
            values = {**chosen["params"], "data.start": w.out_of_sample[0], "data.end": w.out_of_sample[1]}
            row["values"] = values
            task = {"config": resolved.source_path, "overrides": list(resolved.overrides), "values": values,
                    "index": w.number, "out_dir": str(folder / "oos-runs"), "keep_run": spec.keep_runs,
                    "equity": True}
            handles[pool.submit(task)] = row
        pending = list(handles)
        with console.status("out-of-sample runs..."):
            while pending:
                for h in pool.wait(pending, timeout=0.5):
                    pending.remove(h)
                    handles[h]["oos"] = pool.result(h)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if pool is not None:
            pool.close(cancel=interrupted)
        lock.close()
    if interrupted:
        console.print("[yellow]interrupted[/]: the same command resumes (finished in-sample trials are kept)")
        raise SystemExit(130)

    initial = float(resolved.broker.params.initial_cash)
    curve: list[tuple[str, float]] = []
    level = initial
    out_rows = []
    for row in rows:
        w, oos = row["window"], row.get("oos") or {}
        summary = oos.get("summary") or {}
        eq = oos.get("equity") or []
        base = level
        for day, value in eq:
            curve.append((day, round(base + value - initial, 2)))
        if eq:
            level = curve[-1][1]
        out_rows.append({
            "window": w.number, "in_sample": [str(w.in_sample[0]), str(w.in_sample[1])],
            "out_of_sample": [str(w.out_of_sample[0]), str(w.out_of_sample[1])],
            "in_sessions": w.in_sessions, "out_sessions": w.out_sessions,
            "chosen_params": row["chosen"]["params"] if row["chosen"] else None,
            "chosen_trial": row["chosen"]["index"] if row["chosen"] else None,
            f"in_sample_{select}": row["in_sample_value"],
            "oos_error": oos.get("error") if row["chosen"] else "no complete in-sample trial",
            "oos_pnl": round(summary["final_equity"] - initial, 2) if summary else None,
            "oos_return_pct": summary.get("return_pct"), "oos_max_drawdown": summary.get("max_drawdown"),
            "oos_worst_day": summary.get("worst_day"), "oos_trades": summary.get("trades"),
            "oos_summary": summary or None,
        })
    oos = _oos_figures(curve, initial, out_rows)
    elapsed = time.perf_counter() - started
    result = WalkForwardResult(folder, out_rows, curve, oos, elapsed)
    _write(resolved, folder, result, select, rows)
    _print(console, result, select)
    return result


def _oos_figures(curve, initial: float, rows: list[dict]) -> dict:
    values = [initial] + [v for _, v in curve]
    peak, dd = values[0], 0.0
    for v in values:
        peak = max(peak, v)
        dd = max(dd, peak - v)
    days = [b - a for a, b in zip(values, values[1:])]
    pnl = round(values[-1] - initial, 2)
    return {"sessions": len(curve), "pnl": pnl, "return_pct": round(pnl * 100 / initial, 6),
            "final_equity": round(values[-1], 2), "max_drawdown": round(dd, 2),
            "worst_day": round(min(days), 2) if days else None,
            "trades": sum(r["oos_trades"] or 0 for r in rows), "windows": len(rows),
            "windows_without_run": sum(1 for r in rows if r["oos_pnl"] is None)}


def _write(resolved, folder: Path, result: WalkForwardResult, select: str, rows) -> None:
    from strikebench.config import load_config
    from strikebench.research.plots import equity_png
    from strikebench.userfiles import write_atomic

    write_atomic(folder / "walk_forward.json", json.dumps(
        {"select": select, "out_of_sample": result.oos,
         "windows": [{k: v for k, v in r.items() if k != "oos_summary"} for r in result.windows],
         "elapsed_seconds": round(result.elapsed, 3)}, indent=2, default=str) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["day", "equity"])
    w.writerows(result.curve)
    write_atomic(folder / "oos_equity.csv", buf.getvalue())
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["window", "in_sample_start", "in_sample_end", "oos_start", "oos_end", "chosen_params",
                f"in_sample_{select}", "oos_pnl", "oos_return_pct", "oos_max_drawdown", "oos_trades", "oos_error"])
    for r in result.windows:
        w.writerow([r["window"], *r["in_sample"], *r["out_of_sample"], json.dumps(r["chosen_params"], default=str),
                    r[f"in_sample_{select}"], r["oos_pnl"], r["oos_return_pct"], r["oos_max_drawdown"],
                    r["oos_trades"], r["oos_error"] or ""])
    write_atomic(folder / "windows.csv", buf.getvalue())
    write_atomic(folder / "oos_equity.png", equity_png(
        result.curve, [r["out_of_sample"][0] for r in result.windows],
        f"{resolved.config.name}: stitched out-of-sample equity ({len(result.windows)} windows)"))
    oos_dir = folder / "oos"
    oos_dir.mkdir(exist_ok=True)
    for row in rows:  # each window's out-of-sample run as a ready-to-run YAML (it reproduces that window)
        if "values" in row:
            text = load_config(resolved.source_path, resolved.overrides, values=row["values"]).run_yaml()
            write_atomic(oos_dir / f"window-{row['window'].number:02d}.yaml",
                         f"# walk-forward window {row['window'].number}: the out-of-sample run with the parameters "
                         f"chosen in-sample\n" + text)


def _print(console: Console, result: WalkForwardResult, select: str) -> None:
    table = Table(title=escape(f"walk-forward: out-of-sample only (parameters chosen by in-sample {select})"),
                  title_justify="left", header_style="bold")
    for c in ("window", "in-sample", "out-of-sample", "chosen parameters", f"IS {select}", "OOS P&L ($)",
              "OOS max DD ($)", "OOS trades"):
        table.add_column(escape(c), justify="right" if c.startswith(("OOS", "IS", "window")) else "left")
    for r in result.windows:
        params = ", ".join(f"{k.split('.')[-1]}={v:.4g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                           for k, v in (r["chosen_params"] or {}).items())
        is_value = r[f"in_sample_{select}"]
        table.add_row(str(r["window"]), f"{r['in_sample'][0]} .. {r['in_sample'][1]}",
                      f"{r['out_of_sample'][0]} .. {r['out_of_sample'][1]}", escape(params or "-"),
                      f"{is_value:,.4g}" if is_value is not None else "-",
                      f"{r['oos_pnl']:+,.2f}" if r["oos_pnl"] is not None else escape(r["oos_error"] or "-"),
                      f"{r['oos_max_drawdown']:,.2f}" if r["oos_max_drawdown"] is not None else "-",
                      str(r["oos_trades"]) if r["oos_trades"] is not None else "-")
    console.print(table)
    o = result.oos
    console.print(f"out-of-sample, stitched: {o['sessions']} sessions, P&L {o['pnl']:+,.2f} ({o['return_pct']:+.2f} %), "
                  f"max drawdown {o['max_drawdown']:,.2f}, worst day "
                  f"{o['worst_day'] if o['worst_day'] is not None else '-'}, {o['trades']} trades; "
                  f"folder {escape(str(result.folder))} (walk_forward.json, windows.csv, oos_equity.csv, "
                  f"oos_equity.png, oos/)", highlight=False, soft_wrap=True)
