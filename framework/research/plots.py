"""A sweep's pictures (matplotlib Agg, no pyplot state): Pareto front, parameter importance, OOS equity."""

from __future__ import annotations

import io

__all__ = ["pareto_png", "importance_png", "equity_png"]


def _figure(w=8.0, h=5.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def pareto_png(trials: list[dict], objectives, best: list[dict]) -> bytes:
    """Two objectives or more: every trial on the first two, the Pareto front joined and the written best
    marked (a third objective colours the points). One objective: the objective by trial, best so far."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    best_idx = {b["index"] for b in best}
    if not trials:
        ax.text(0.5, 0.5, "no complete trial yet", ha="center", va="center", transform=ax.transAxes)
        return _png(fig)
    o = objectives
    if len(o) == 1:
        xs = [t["index"] for t in trials]
        ys = [t["values"][0] for t in trials]
        ax.scatter(xs, ys, s=14, color="tab:blue", label="trial")
        run, out = None, []
        for y in ys:
            run = y if run is None else (max(run, y) if o[0].direction == "maximize" else min(run, y))
            out.append(run)
        ax.step(xs, out, where="post", color="tab:green", label="best so far")
        ax.scatter([t["index"] for t in trials if t["index"] in best_idx],
                   [t["values"][0] for t in trials if t["index"] in best_idx], s=60, facecolors="none",
                   edgecolors="tab:red", label="written best")
        ax.set_xlabel("trial")
        ax.set_ylabel(f"{o[0].name} ({o[0].direction})")
        ax.set_title("objective by trial")
    else:
        from strikebench.research.sweep import _pareto

        class _T:  # the Pareto helper reads .values
            def __init__(self, row):
                self.values, self.row = row["values"], row

        front = sorted((t.row for t in _pareto([_T(r) for r in trials], [x.direction for x in o])),
                       key=lambda r: r["values"][0])
        xs, ys = [t["values"][0] for t in trials], [t["values"][1] for t in trials]
        if len(o) > 2:
            sc = ax.scatter(xs, ys, s=16, c=[t["values"][2] for t in trials], cmap="viridis", label="trial")
        else:
            sc = ax.scatter(xs, ys, s=16, color="tab:blue", label="trial")
        if len(o) > 2:
            fig.colorbar(sc, ax=ax, label=o[2].name)
        if len(o) == 2:
            ax.plot([t["values"][0] for t in front], [t["values"][1] for t in front], "-o", color="tab:red", ms=4,
                    label="Pareto front")
        else:  # a front in three objectives or more is not a line in two of them: ringed points
            ax.scatter([t["values"][0] for t in front], [t["values"][1] for t in front], s=70, facecolors="none",
                       edgecolors="tab:red", linewidths=1.5, label=f"Pareto front (all {len(o)} objectives)")
        ax.set_xlabel(f"{o[0].name} ({o[0].direction})")
        ax.set_ylabel(f"{o[1].name} ({o[1].direction})")
        ax.set_title("trials and the Pareto front" + (" (colour: " + o[2].name + ")" if len(o) > 2 else ""))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _png(fig)


def importance_png(study, objectives, names: list[str]) -> bytes | None:
    """PED-ANOVA importance (Optuna's, no scikit-learn needed) of each parameter for each objective (Optuna's evaluator, seeded), or None
    when there are too few complete trials or a single parameter value."""
    import warnings

    import optuna
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 3 or len(names) < 1:
        return None
    rows = []
    for k, o in enumerate(objectives):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                imp = optuna.importance.get_param_importances(
                    study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
                    target=lambda t, k=k: t.values[k])
        except (RuntimeError, ValueError, ZeroDivisionError, ImportError):
            continue
        rows.append((o.name, imp))
    if not rows:
        return None
    fig = _figure(8.0, 1.2 + 0.5 * len(names) * len(rows))
    ax = fig.add_subplot(1, 1, 1)
    height = 0.8 / len(rows)
    for j, (label, imp) in enumerate(rows):
        ys = [i + j * height for i in range(len(names))]
        ax.barh(ys, [imp.get(n, 0.0) for n in names], height=height, label=label)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(names))], labels=names)
    ax.set_xlabel("importance (PED-ANOVA, normalized)")
    ax.set_title("parameter importance")
    ax.legend(loc="best", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def equity_png(curve: list[tuple[str, float]], boundaries: list[str], title: str) -> bytes:
    """The stitched out-of-sample equity curve with each window's start marked."""
    import datetime as dt

    fig = _figure(9.0, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    if curve:
        ax.plot([dt.date.fromisoformat(d) for d, _ in curve], [v for _, v in curve], color="tab:blue")
    for b in boundaries:
        ax.axvline(dt.date.fromisoformat(b), color="grey", alpha=0.4, lw=0.8)
    ax.set_title(title)
    ax.set_ylabel("equity ($)")
    ax.grid(alpha=0.3)
    return _png(fig)
