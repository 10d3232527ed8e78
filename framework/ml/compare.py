"""``strikebench ml compare``: the same backtest with and without ``ml_gate``, on sessions the model never saw.

The span is the config's ``data.start .. data.end`` (or ``--from/--to``); it must not overlap the model's
training data, from its first decision day to the day its last training label closed (both in the model
file's manifest): an overlapping span is refused, so the comparison is out-of-sample by construction.
Both runs are ordinary run folders (journal, trades, report) under one comparison folder; the gated run
has ``ml_gate`` appended to the config's risk managers (any ``ml_gate`` already there is removed from both).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import yaml

from strikebench.errors import ConfigError

__all__ = ["compare", "check_unseen"]

FIGURES = (("trades", "closed trades", "{:,}"), ("win_rate", "win rate", "{:.1%}"),
           ("realized_pnl", "realized P&L ($)", "{:+,.2f}"), ("fees", "fees ($)", "{:,.2f}"),
           ("max_drawdown", "max drawdown ($, daily)", "{:,.2f}"), ("worst_day", "worst day ($)", "{:+,.2f}"),
           ("return_pct", "return (%)", "{:+.2f}"), ("sharpe", "Sharpe (daily, annualized)", "{:.2f}"))


def check_unseen(start: dt.date, end: dt.date, manifest: dict, label: str) -> None:
    """Refuse a span that overlaps the model's training data (first decision day .. last label's close)."""
    t = manifest.get("trained") or {}
    try:
        first = dt.date.fromisoformat(t["first_day"])
        last = dt.date.fromisoformat(str(t["last_label_close"])[:10])
    except (KeyError, ValueError):
        raise ConfigError(f"{label}: the model file does not say which sessions it was trained on") from None
    if start <= last and end >= first:
        raise ConfigError(f"the span {start} .. {end} overlaps the model's training data ({first} .. {last}, "
                          f"last label closed {t['last_label_close'][:16]}); compare on sessions after {last} "
                          f"or before {first}")


def compare(config: str, model_path: str, *, threshold: float = 0.5, start: dt.date | None = None,
            end: dt.date | None = None, overrides=(), console=None, progress: bool = True) -> dict:
    from strikebench.config import load_config
    from strikebench.engine.runner import run_backtest
    from strikebench.ml.model import load_model
    from strikebench.plugin_manager import get_plugin_manager
    from strikebench.report import load_config_text
    from strikebench.userfiles import make_dir, write_atomic

    model = load_model(model_path)
    pm = get_plugin_manager()
    base = load_config(config, list(overrides) + ([f"data.start={start}"] if start else [])
                       + ([f"data.end={end}"] if end else []), registry=pm.registry)
    params = base.data.params
    s, e = getattr(params, "start", None), getattr(params, "end", None)
    if not isinstance(s, dt.date) or not isinstance(e, dt.date):
        raise ConfigError(f"{config}: ml compare needs a data source with `start` and `end`")
    check_unseen(s, e, model.manifest, str(model_path))
    data = yaml.safe_load(base.run_yaml())
    data["risk"] = [r for r in (data.get("risk") or []) if r.get("name") != "ml_gate"]
    gated = copy.deepcopy(data)
    gated["risk"].append({"name": "ml_gate", "params": {"model": str(Path(model_path).resolve()),
                                                           "threshold": float(threshold)}})
    folder = Path(base.config.output.dir) / f"{base.config.name}-ml-compare-{model.model_hash}-{s}-{e}"
    make_dir(folder, key="output.dir", exist_ok=True)
    summaries = {}
    for name, cfg in (("without", data), ("with", gated)):
        cfg = {**cfg, "name": f"{base.config.name}-{name}-gate"}
        text = yaml.safe_dump(cfg, sort_keys=False)
        resolved = load_config_text(text, registry=pm.registry, label=f"{config} ({name} the gate)")
        if console is not None:
            console.print(f"[bold]backtest {name} the gate[/]: {s} .. {e}", highlight=False)
        summaries[name] = run_backtest(resolved, console=console, progress=progress, pm=pm, out_dir=str(folder))
    vetoed = _vetoed(summaries["with"]["run_dir"])
    result = {"model": model.model_hash, "model_file": str(model_path), "threshold": threshold, "start": str(s),
              "end": str(e), "trained": model.manifest.get("trained"), "vetoed_entries": vetoed,
              "without": {k: summaries["without"].get(k) for k, *_ in FIGURES} | {"run_dir": summaries["without"]["run_dir"]},
              "with": {k: summaries["with"].get(k) for k, *_ in FIGURES} | {"run_dir": summaries["with"]["run_dir"]},
              "folder": str(folder)}
    write_atomic(folder / "compare.json", json.dumps(result, indent=2, default=str) + "\n", error=ConfigError)
    return result


def _vetoed(run_dir) -> int:
    from strikebench.report import open_run

    journal, run = open_run(run_dir)
    try:
        return sum(1 for d in journal.decisions(run["run_id"]) if "ml_gate:" in (d["reason"] or ""))
    finally:
        journal.close()
