"""``strikebench ml train``: walk-forward training of a calibrated P(stop) classifier, its report and model file.

Windows are the walk-forward's own (:func:`strikebench.research.walk_forward.windows`) over the dataset's
decision sessions: window ``k`` trains on ``train_sessions`` sessions and is tested on the
``test_sessions`` after them. **No look-ahead**: a training row must be decided inside the training span
*and* have its label known before the test span starts (its trade closed before the first test session's
midnight, America/New_York); a trade still open then is left out of that window's training
(:func:`training_rows`). Test rows are those decided in the test span with a resolved label.

Out-of-sample predictions of every window are pooled for the report (AUC, Brier score against the
base-rate Brier, a calibration curve), and a permutation importance (Brier loss) is taken on each
window's test rows. The model written to the file is then fitted on every resolved row, calibrated the
same way; its manifest records the span it learned from.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from strikebench.errors import ConfigError, DataError
from strikebench.research.walk_forward import windows as walk_forward_windows

__all__ = ["training_rows", "test_rows", "make_estimator", "train", "TrainResult", "feature_columns"]

_NY = "America/New_York"


def _local_day(ts: pd.Series) -> pd.Series:
    return pd.to_datetime(ts, utc=True).dt.tz_convert(_NY).dt.date


def feature_columns(meta: dict) -> list[str]:
    return list(meta["candidate_features"]) + list(meta["context_features"])


def _usable(df: pd.DataFrame, counterfactual: bool) -> pd.DataFrame:
    ok = df["resolved"].astype(bool) & df["filled"].astype(bool) & df["stop"].notna()
    if not counterfactual:
        ok &= df["entered"].astype(bool)
    return df[ok]


def training_rows(df: pd.DataFrame, first: dt.date, last: dt.date, test_start: dt.date) -> pd.DataFrame:
    """Rows decided in ``first .. last`` whose label was known before ``test_start`` began (midnight, New York)."""
    day = _local_day(df["decided_at"])
    cutoff = pd.Timestamp(test_start).tz_localize(_NY)
    closed = pd.to_datetime(df["closed_at"], utc=True)
    return df[(day >= first) & (day <= last) & (closed < cutoff)]


def test_rows(df: pd.DataFrame, first: dt.date, last: dt.date) -> pd.DataFrame:
    day = _local_day(df["decided_at"])
    return df[(day >= first) & (day <= last)]


def make_estimator(model, seed: int):
    """The configured classifier, calibrated (CalibratedClassifierCV, folds in time order within the span)."""
    try:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.ensemble import HistGradientBoostingClassifier
    except ModuleNotFoundError:
        raise ConfigError("ml train needs scikit-learn: pip install 'strikebench[ml]'") from None
    if model.kind == "hgb":
        base = HistGradientBoostingClassifier(max_iter=model.max_iter, learning_rate=model.learning_rate,
                                              max_depth=model.max_depth, min_samples_leaf=model.min_samples_leaf,
                                              random_state=seed, early_stopping=False)
    elif model.kind == "lightgbm":
        try:
            import lightgbm
        except ModuleNotFoundError:
            raise ConfigError("ml.model.kind: lightgbm is not installed (pip install lightgbm), or use hgb") from None
        base = lightgbm.LGBMClassifier(n_estimators=model.max_iter, learning_rate=model.learning_rate,
                                       max_depth=model.max_depth or -1, min_child_samples=model.min_samples_leaf,
                                       random_state=seed, deterministic=True, verbose=-1, n_jobs=1)
    else:
        try:
            import xgboost
        except ModuleNotFoundError:
            raise ConfigError("ml.model.kind: xgboost is not installed (pip install xgboost), or use hgb") from None
        base = xgboost.XGBClassifier(n_estimators=model.max_iter, learning_rate=model.learning_rate,
                                     max_depth=model.max_depth or 0, random_state=seed, n_jobs=1)
    from sklearn.pipeline import Pipeline

    from strikebench.ml.model import EmptyColumnsToZero

    base = Pipeline([("empty", EmptyColumnsToZero()), ("model", base)])
    if model.calibration == "none":
        return base
    from sklearn.model_selection import KFold

    return CalibratedClassifierCV(base, method=model.calibration, cv=KFold(model.calibration_folds))


def _fit(estimator, X: np.ndarray, y: np.ndarray):
    from strikebench.ml.model import BaseRate

    if len(np.unique(y)) < 2:  # one class only: nothing to learn beyond the rate
        return BaseRate(float(np.mean(y)))
    return estimator.fit(X, y)


def _permutation_importance(est, X: np.ndarray, y: np.ndarray, repeats: int, seed: int) -> np.ndarray:
    """Mean rise of the Brier score when one column is shuffled, per column: every shuffled copy scored in one
    ``predict_proba`` call (scikit-learn's permutation_importance calls it once per column and repeat)."""
    rng = np.random.default_rng(seed)
    n, k = X.shape
    blocks = []
    for j in range(k):
        for _ in range(repeats):
            Xp = X.copy()
            Xp[:, j] = X[rng.permutation(n), j]
            blocks.append(Xp)
    p = est.predict_proba(np.vstack([X] + blocks))[:, 1]
    base = _brier(y, p[:n])
    shuffled = ((p[n:].reshape(k * repeats, n) - y[None, :]) ** 2).mean(axis=1).reshape(k, repeats)
    return shuffled.mean(axis=1) - base


def _auc(y, p) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else math.nan


def _brier(y, p) -> float:
    return float(np.mean((np.asarray(p, dtype=float) - np.asarray(y, dtype=float)) ** 2)) if len(y) else math.nan


def _money_ratios(rows: pd.DataFrame) -> tuple[float, float]:
    """Mean loss of stopped trades and mean gain of the others, per point of credit per combo (x100 = dollars)."""
    credit = rows["limit_credit"].astype(float) * 100.0 * rows["quantity"].astype(float)
    pnl = rows["pnl_cents"].astype(float) / 100.0
    stop = rows["stop"].astype(bool)
    loss = float((-pnl[stop] / credit[stop]).mean()) if stop.any() else math.nan
    gain = float((pnl[~stop] / credit[~stop]).mean()) if (~stop).any() else math.nan
    return loss, gain


class TrainResult:
    def __init__(self, folder: Path, model_path: Path, model_hash: str, windows: list[dict], pooled: dict,
                 importance: list[tuple[str, float]], manifest: dict, elapsed: float):
        self.folder, self.model_path, self.model_hash = folder, model_path, model_hash
        self.windows, self.pooled, self.importance, self.manifest, self.elapsed = (windows, pooled, importance,
                                                                                   manifest, elapsed)


def _resolve_path(resolved, text: str) -> Path:
    p = Path(text)
    return p if p.is_absolute() else Path(resolved.source_path).resolve().parent / p


def train(resolved, *, console=None, progress: bool = True) -> TrainResult:
    """Run the config's ``ml:`` section: windows, out-of-sample figures, plots, the final model file.

    The trees are fitted on one thread: the same seed and data give the same model file on every machine
    (their split search is parallel, and its float sums depend on the thread count)."""
    try:
        import sklearn.ensemble  # noqa: F401 - loads OpenMP, so that the limit below applies to it
    except ModuleNotFoundError:
        raise ConfigError("ml train needs scikit-learn: pip install 'strikebench[ml]'") from None
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _train(resolved, console=console, progress=progress)


def _train(resolved, *, console=None, progress: bool = True) -> TrainResult:
    from strikebench.ml.dataset import read_dataset
    from strikebench.ml.model import BaseRate, save_model
    from strikebench.userfiles import make_dir, write_atomic

    spec = resolved.config.ml
    if spec is None:
        raise ConfigError(f"{resolved.source_path}: no `ml:` section; add one (see docs/ml.md)")
    started = time.perf_counter()
    df_all, meta = read_dataset(_resolve_path(resolved, spec.dataset))
    cols = feature_columns(meta)
    missing = [c for c in cols if c not in df_all.columns]
    if missing:
        raise DataError(f"{spec.dataset}: the dataset lacks feature column(s) {', '.join(missing)}")
    df = _usable(df_all, spec.counterfactual).copy()
    if df.empty:
        raise DataError(f"{spec.dataset}: no row with a resolved label to learn from")
    df["y"] = df["stop"].astype(bool).astype(int)
    sessions = sorted(set(_local_day(df_all["decided_at"])))
    w = spec.windows
    wins = walk_forward_windows(sessions, w.mode, w.train_sessions, w.test_sessions)
    if not wins:
        raise ConfigError(f"{resolved.source_path}: ml.windows: the dataset has {len(sessions)} decision sessions, "
                          f"fewer than train_sessions ({w.train_sessions}) + 1; lower it or add runs")
    rows, pooled_y, pooled_p, pooled_base = [], [], [], []
    imp = np.zeros(len(cols))
    imp_n = 0
    for win in wins:
        tr = training_rows(df, win.in_sample[0], win.in_sample[1], win.out_of_sample[0])
        te = test_rows(df, win.out_of_sample[0], win.out_of_sample[1])
        row = {"window": win.number, "train_first": str(win.in_sample[0]), "train_last": str(win.in_sample[1]),
               "test_first": str(win.out_of_sample[0]), "test_last": str(win.out_of_sample[1]),
               "train_rows": len(tr), "test_rows": len(te),
               "train_stop_rate": float(tr["y"].mean()) if len(tr) else math.nan,
               "test_stop_rate": float(te["y"].mean()) if len(te) else math.nan,
               "last_label_in_training": None if tr.empty else
               pd.to_datetime(tr["closed_at"], utc=True).max().tz_convert(_NY).isoformat()}
        if len(tr) < w.min_train_rows or te.empty:
            row.update({"auc": math.nan, "brier": math.nan, "brier_base": math.nan, "skipped": True})
            rows.append(row)
            continue
        est = _fit(make_estimator(spec.model, spec.seed), tr[cols].to_numpy(float), tr["y"].to_numpy())
        p = est.predict_proba(te[cols].to_numpy(float))[:, 1]
        base = np.full(len(te), float(tr["y"].mean()))
        row.update({"auc": _auc(te["y"], p), "brier": _brier(te["y"], p), "brier_base": _brier(te["y"], base),
                    "skipped": False})
        rows.append(row)
        pooled_y.append(te["y"].to_numpy())
        pooled_p.append(p)
        pooled_base.append(base)
        if len(np.unique(te["y"])) == 2 and not isinstance(est, BaseRate):
            imp += _permutation_importance(est, te[cols].to_numpy(float), te["y"].to_numpy(),
                                           spec.importance_repeats, spec.seed)
            imp_n += 1
        if console is not None and progress:
            console.print(f"window {win.number}: train {row['train_first']} .. {row['train_last']} "
                          f"({row['train_rows']} rows), test {row['test_first']} .. {row['test_last']} "
                          f"({row['test_rows']} rows): AUC {row['auc']:.3f}, Brier {row['brier']:.4f} "
                          f"(base rate {row['brier_base']:.4f})", highlight=False)
    if not pooled_y:
        raise DataError(f"{spec.dataset}: no window had {w.min_train_rows} training rows and a test row; "
                        f"lower ml.windows.min_train_rows or train_sessions")
    y, p, b = np.concatenate(pooled_y), np.concatenate(pooled_p), np.concatenate(pooled_base)
    pooled = {"rows": int(len(y)), "stop_rate": float(y.mean()), "auc": _auc(y, p), "brier": _brier(y, p),
              "brier_base": _brier(y, b), "windows": sum(1 for r in rows if not r["skipped"])}
    importance = sorted(zip(cols, (imp / imp_n if imp_n else imp).tolist()), key=lambda kv: -kv[1])
    # the model of the file: every resolved row
    final = _fit(make_estimator(spec.model, spec.seed), df[cols].to_numpy(float), df["y"].to_numpy())
    loss, gain = _money_ratios(df)
    if not (math.isfinite(loss) and math.isfinite(gain)):
        raise DataError(f"{spec.dataset}: the labels hold only stopped or only unstopped trades; the gate needs "
                        f"both to weigh a loss against a gain")
    closed = pd.to_datetime(df["closed_at"], utc=True)
    import sklearn

    manifest = {
        "label": spec.label, "features": cols, "context_providers": meta["context_providers"],
        "loss_per_credit": loss, "gain_per_credit": gain,
        "trained": {"first_day": str(min(_local_day(df["decided_at"]))),
                    "last_day": str(max(_local_day(df["decided_at"]))),
                    "last_label_close": closed.max().tz_convert(_NY).isoformat(), "rows": int(len(df)),
                    "stop_rate": float(df["y"].mean())},
        "model": spec.model.model_dump(mode="json"), "seed": spec.seed, "counterfactual": spec.counterfactual,
        "windows": spec.windows.model_dump(mode="json"), "oos": pooled,
        "dataset_runs": [r.get("run_id") for r in meta.get("runs", [])],
        "sklearn": sklearn.__version__,
    }
    out = _resolve_path(resolved, spec.output)
    make_dir(out, key="ml.output", exist_ok=True)
    model_path = save_model(final, manifest, out)
    from strikebench.ml.model import load_model

    mf = load_model(model_path)
    # report: windows.csv, oos_predictions.csv, report.json, calibration.png, importance.png
    pd.DataFrame(rows).to_csv(out / "windows.csv", index=False)
    test_all = pd.concat([test_rows(df, win.out_of_sample[0], win.out_of_sample[1]).assign(window=win.number)
                          for win, r in zip(wins, rows) if not r["skipped"]])
    pd.DataFrame({"decision_id": test_all["decision_id"].to_numpy(), "candidate": test_all["candidate"].to_numpy(),
                  "window": test_all["window"].to_numpy(), "stop": y, "p_stop": p}).to_csv(
        out / "oos_predictions.csv", index=False)
    report = {"model_file": model_path.name, "model_hash": mf.model_hash, "pooled_oos": pooled, "windows": rows,
              "importance": importance, "manifest": manifest}
    write_atomic(out / "report.json", json.dumps(report, indent=2, default=str, allow_nan=True) + "\n",
                 error=DataError)
    write_atomic(out / "calibration.png", _calibration_png(y, p), error=DataError)
    write_atomic(out / "importance.png", _importance_png(importance[:20]), error=DataError)
    return TrainResult(out, model_path, mf.model_hash, rows, pooled, importance, manifest,
                       time.perf_counter() - started)


def _calibration_png(y, p) -> bytes:
    from strikebench.research.plots import _figure, _png

    n_bins = int(min(10, max(2, len(y) // 20)))
    edges = np.quantile(p, np.linspace(0, 1, n_bins + 1))
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    mean_p = [p[idx == k].mean() for k in range(n_bins) if (idx == k).any()]
    frac = [y[idx == k].mean() for k in range(n_bins) if (idx == k).any()]
    fig = _figure(6, 6)
    ax = fig.add_subplot(111)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfectly calibrated")
    ax.plot(mean_p, frac, marker="o", label=f"out-of-sample ({len(y)} rows)")
    ax.set_xlabel("predicted P(stop)")
    ax.set_ylabel("observed stop rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("calibration (pooled out-of-sample windows, quantile bins)")
    ax.legend(loc="upper left")
    return _png(fig)


def _importance_png(importance) -> bytes:
    from strikebench.research.plots import _figure, _png

    fig = _figure(7, max(3, 0.3 * len(importance) + 1))
    ax = fig.add_subplot(111)
    names = [k for k, _ in importance][::-1]
    vals = [v for _, v in importance][::-1]
    ax.barh(names, vals)
    ax.set_xlabel("Brier score lost when the feature is shuffled (out-of-sample, mean over windows)")
    ax.set_title("permutation importance")
    return _png(fig)
