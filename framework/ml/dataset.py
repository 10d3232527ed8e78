"""``strikebench ml dataset``: one row per decision candidate of one or more runs, with features and labels.

For each run folder: the journal's decisions and their candidates (a candidate the strategy rejected,
``details.rejected``, never could be traded and is left out), the chain snapshot each decision stored,
the run's trades, and the run's resolved config, from which the market is rebuilt (the synthetic market
gives the same minutes for the same day and seed whatever span is asked for; its end is moved past the
last candidate's expiry so every label resolves).

Labels (see docs/ml.md): ``entered`` (the candidate was the decision's choice and a trade was opened from
it); for entered rows the trade's own outcome from the journal (``label_source = journal``); for every
other row the outcome the candidate would have had, simulated by the engine's rules
(:mod:`strikebench.ml.outcomes`) and flagged ``counterfactual``. Entered rows are simulated too
(``sim_pnl_cents``): ``sim_agrees`` says whether the simulation reproduced the engine's trade to the cent,
the dataset's own check of its counterfactuals.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from strikebench.errors import ConfigError, DataError
from strikebench.ml.features import CANDIDATE_FEATURES, CONTEXT_PROVIDERS, ContextFeatures, candidate_features
from strikebench.ml.outcomes import Spec, simulate

__all__ = ["build_dataset", "write_dataset", "read_dataset", "resolved_from_run", "LABEL_COLUMNS"]

LABEL_COLUMNS = ("entered", "counterfactual", "filled", "resolved", "stop", "exit_reason", "pnl_cents",
                 "holding_minutes", "closed_at", "label_source")
#: the dataset's format version, written into the Parquet file's metadata
DATASET_VERSION = "1"
_META_KEY = b"strikebench.ml"


def _cents(text) -> int | None:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    return int((Decimal(str(text)) * 100).to_integral_value())


def resolved_from_run(run: dict, label: str, overrides=()):
    """The run's resolved config (as the journal stored it) loaded again, with ``overrides``."""
    from strikebench.config import _load, parse_yaml_text

    text = run.get("config_resolved") or run.get("config_yaml")
    if not text:
        raise DataError(f"{label}: the journal stores no config for run {run['run_id']}; cannot rebuild its market")
    try:
        return _load(parse_yaml_text(text, f"{label} (stored config)"), label, tuple(overrides), None)
    except ConfigError as exc:
        raise DataError(f"{label}: the run's stored config no longer loads: {exc}") from None


def _exit_rule(resolved, strategy_id: str, label: str):
    for sp in resolved.strategies:
        if sp.instance_id == strategy_id:
            p = sp.params
            if not all(hasattr(p, k) for k in ("take_profit_pct", "stop_multiple")):
                return None
            if getattr(p, "exit_trigger", "executable") != "executable" or getattr(p, "exit_time", None) is not None:
                return None
            return float(p.take_profit_pct), float(p.stop_multiple), int(getattr(p, "contracts", 1))
    return None


def _run_rows(run_dir, console=None) -> tuple[list[dict], dict]:
    from strikebench.options.contracts import OptionContract
    from strikebench.options.orders import Leg
    from strikebench.report import open_run
    from strikebench.strategies.spreads import credit_limit

    label = str(run_dir)
    journal, run = open_run(run_dir)
    try:
        run_id = run["run_id"]
        resolved = resolved_from_run(run, label)
        decisions = journal.decisions(run_id)
        trades = journal.trades(run_id)
        items = []  # (decision, candidate index, candidate, spec)
        skipped = {"rejected": 0, "not_a_vertical": 0, "no_exit_rule": 0, "no_quote": 0}
        snapshots: dict[int, object] = {}
        for d in decisions:
            rule = _exit_rule(resolved, d["strategy"], label)
            for k, c in enumerate(d["candidates"] or ()):
                det = c.get("details") or {}
                if c.get("score") is None or det.get("rejected"):
                    skipped["rejected"] += 1
                    continue
                legs = c.get("legs") or []
                if len(legs) != 2 or "est_credit" not in det:
                    skipped["not_a_vertical"] += 1
                    continue
                if rule is None:
                    skipped["no_exit_rule"] += 1
                    continue
                short, long = OptionContract.from_occ(legs[0]), OptionContract.from_occ(legs[1])
                at = pd.Timestamp(d["decided_at"]).tz_convert("America/New_York")
                sid = d["snapshot_id"]
                if sid is None:
                    skipped["no_quote"] += 1
                    continue
                if sid not in snapshots:
                    snapshots[sid] = journal.load_snapshot(sid)
                feats = candidate_features(snapshots[sid], short, long, at)
                if feats is None:
                    skipped["no_quote"] += 1
                    continue
                tp, stop, qty = rule
                spec = Spec(decided_at=at, legs=(Leg(short, -1), Leg(long, +1)), quantity=qty,
                            limit=credit_limit(float(det["est_credit"]), short.root),
                            take_profit_pct=tp, stop_multiple=stop)
                items.append((d, k, c, spec, feats))
        if not items:
            return [], {"run_id": run_id, "skipped": skipped, "candidates": 0}
        # the market, its end moved past the last expiry (synthetic: same minutes whatever the span)
        overrides = []
        last_expiry = max(s.legs[0].contract.expiry for *_, s, _ in items)
        params = resolved.data.params
        if resolved.config.data.source == "synthetic" and getattr(params, "end", None) is not None \
                and params.end < last_expiry:
            overrides.append(f"data.end={last_expiry.isoformat()}")
        market_cfg = resolved_from_run(run, label, overrides) if overrides else resolved
        market = market_cfg.data.build().open()
        fill_model = resolved.fill_model.build()
        commission = resolved.commission.build()
        ctx = ContextFeatures(CONTEXT_PROVIDERS)
        outcomes = simulate(market, [it[3] for it in items], fill_model, commission)
        by_decision = {}
        for _, t in trades.iterrows():
            if t["decision_id"]:
                by_decision[t["decision_id"]] = t
        rows = []
        for (d, k, c, spec, feats), sim in zip(items, outcomes):
            at = spec.decided_at
            ctx.start_day(at.date(), market)
            context = ctx.values_at(at)
            trade = by_decision.get(d["decision_id"])
            entered = trade is not None and d["chosen"] == k and d["action"] == "TRADE"
            row = {"run_id": run_id, "decision_id": d["decision_id"], "strategy": d["strategy"],
                   "decided_at": at.tz_convert("UTC"), "candidate": k, "description": c.get("description", ""),
                   "expiry": spec.legs[0].contract.expiry.isoformat(), "chosen": d["chosen"] == k,
                   "action": d["action"], "limit_credit": -spec.limit, "quantity": spec.quantity}
            row.update(feats)
            row.update(context)
            sim_pnl = sim.pnl_cents
            if entered and trade["closed_at"]:
                pnl = _cents(trade["realized_pnl"])
                opened, closed = pd.Timestamp(trade["opened_at"]), pd.Timestamp(trade["closed_at"])
                reason = trade["exit_reason"]
                source, filled, resolved_ = "journal", True, True
            else:
                pnl, reason, filled, resolved_ = sim_pnl, sim.exit_reason, sim.filled, sim.resolved
                opened, closed = sim.opened_at, sim.closed_at
                source = "simulated"
            row.update({
                "entered": bool(entered), "counterfactual": not (entered and source == "journal"),
                "filled": bool(filled), "resolved": bool(resolved_ and filled),
                "stop": (reason == "stop_loss") if (filled and resolved_) else None,
                "exit_reason": reason if filled else "unfilled",
                "pnl_cents": pnl if filled else None,
                "holding_minutes": ((closed - opened).total_seconds() / 60.0) if (filled and closed is not None
                                                                                  and opened is not None) else None,
                "opened_at": None if opened is None or not filled else pd.Timestamp(opened).tz_convert("UTC"),
                "closed_at": None if closed is None or not filled else pd.Timestamp(closed).tz_convert("UTC"),
                "label_source": source,
                "sim_pnl_cents": sim_pnl if sim.filled else None,
                "sim_agrees": (bool(sim_pnl == pnl and sim.exit_reason == reason) if source == "journal" else None),
            })
            rows.append(row)
        info = {"run_id": run_id, "skipped": skipped, "candidates": len(rows),
                "market_end": (overrides[0].split("=", 1)[1] if overrides else None)}
        return rows, info
    finally:
        journal.close()


def build_dataset(run_dirs, console=None) -> tuple[pd.DataFrame, list[dict]]:
    """The dataset of ``run_dirs`` (one row per tradeable candidate) and per-run notes."""
    rows, infos = [], []
    for rd in run_dirs:
        r, info = _run_rows(rd, console)
        rows.extend(r)
        infos.append(info)
    if not rows:
        raise DataError(f"{', '.join(map(str, run_dirs))}: no vertical-spread candidate with an exit rule in "
                        f"these runs' decisions; the dataset would be empty")
    df = pd.DataFrame(rows)
    for col in ("stop", "sim_agrees"):
        df[col] = df[col].astype("boolean")
    for col in ("pnl_cents", "sim_pnl_cents"):
        df[col] = df[col].astype("Int64")
    for col in ("decided_at", "opened_at", "closed_at"):
        df[col] = pd.to_datetime(df[col], utc=True)
    df = df.sort_values(["decided_at", "run_id", "decision_id", "candidate"], kind="stable").reset_index(drop=True)
    return df, infos


def write_dataset(df: pd.DataFrame, out, infos: list[dict]) -> None:
    """Write ``df`` to Parquet at ``out`` (whole or not at all: a temporary file renamed into place)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from strikebench.userfiles import prepare_output_dir

    out = Path(out)
    if out.is_dir():
        raise DataError(f"{out}: is a folder; give the dataset's file name (-o data.parquet)")
    prepare_output_dir(out.parent if str(out.parent) else ".", key="-o folder", error=DataError)
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = {"version": DATASET_VERSION, "runs": infos,
            "candidate_features": list(CANDIDATE_FEATURES),
            "context_providers": [list(p) for p in CONTEXT_PROVIDERS],
            "context_features": list(ContextFeatures(CONTEXT_PROVIDERS).names)}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()})
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_dataset(path) -> tuple[pd.DataFrame, dict]:
    """A dataset written by :func:`write_dataset` and its metadata; one line for anything else."""
    import pyarrow.parquet as pq

    from strikebench.userfiles import check_file

    p = Path(path)
    check_file(p, what="dataset file", error=DataError, nonempty=True)
    try:
        table = pq.read_table(p)
    except Exception as exc:  # pyarrow raises several kinds for a file that is not Parquet
        raise DataError(f"{path}: not a Parquet dataset ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})") \
            from None
    raw = (table.schema.metadata or {}).get(_META_KEY)
    if raw is None:
        raise DataError(f"{path}: not a strikebench ML dataset (no strikebench.ml metadata); "
                        f"make one with `strikebench ml dataset RUN_DIR... -o {p.name}`")
    meta = json.loads(raw)
    df = table.to_pandas()
    if df.empty:
        raise DataError(f"{path}: the dataset has no rows")
    return df, meta


def describe(df: pd.DataFrame) -> dict:
    """Counts a user checks first: rows, entered, counterfactual, resolved, stop rate, simulation agreement."""
    entered = df[df["label_source"] == "journal"]
    agree = entered["sim_agrees"].astype("boolean")
    res = df[df["resolved"]]
    return {"rows": len(df), "decisions": int(df["decision_id"].nunique()), "entered": int(df["entered"].sum()),
            "counterfactual": int(df["counterfactual"].sum()), "resolved": len(res),
            "unfilled": int((~df["filled"]).sum()),
            "stop_rate": float(res["stop"].astype(float).mean()) if len(res) else math.nan,
            "sim_checked": int(agree.notna().sum()), "sim_agree": int(agree.fillna(False).sum())}
