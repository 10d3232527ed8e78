"""The ``strikebench`` command line.

Every user-facing error is a :class:`~strikebench.errors.StrikebenchError`: the
CLI prints its one line on stderr and exits with its code (2 for a bad config),
never a traceback.
"""

from __future__ import annotations

import datetime as dt
import enum
import sqlite3
import sys
import types
import typing

import rich_click as click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from strikebench.errors import StrikebenchError

click.rich_click.TEXT_MARKUP = "markdown"
click.rich_click.SHOW_ARGUMENTS = True
click.rich_click.GROUP_ARGUMENTS_OPTIONS = True

console = Console()
err_console = Console(stderr=True)

KIND_TITLES = {
    "strategy": "Strategies",
    "feed": "Data feeds",
    "fill_model": "Fill models",
    "risk_manager": "Risk managers",
    "broker": "Brokers",
    "commission": "Commission schedules",
    "context_provider": "Context / feature providers",
}


def _registry():
    from strikebench.plugin_manager import get_plugin_manager

    return get_plugin_manager().registry


#: Paths are checked by strikebench.userfiles (one line naming the file and what is wrong), not by click,
#: whose usage error spans three lines and says nothing about FIFOs, binary or over-size files.
USER_PATH = click.Path(readable=False)

run_option = click.option("--run", "run_id", metavar="RUN_ID",
                           help="The run to read when the journal holds several (a shared SQLite file or a "
                                "postgresql:// URL).")

set_option = click.option(
    "--set", "overrides", multiple=True, metavar="PATH=VALUE",
    help="Override a config value, e.g. `--set strategies[0].params.width=50` (repeatable).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="strikebench")
def cli() -> None:
    """**strikebench**: options strategies as plugins, one YAML for backtest, replay and paper trading.

    Start with `strikebench backtest configs/spx_credit_vertical.yaml`; list what is
    installed with `strikebench plugins`; check a config with `strikebench validate`.
    """


@cli.command()
@click.option("--params", "params_of", metavar="NAME", help="Show the parameters of one plugin.")
@click.option("--kind", type=click.Choice(sorted(KIND_TITLES)), help="List only one kind of plugin.")
def plugins(params_of: str | None, kind: str | None) -> None:
    """List every registered plugin: name, providing distribution and version, and what it does."""
    registry = _registry()
    if params_of:
        entries = registry.find(params_of)
        if kind:
            entries = [e for e in entries if e.kind == kind]
        if not entries:
            known = sorted({e.name for e in registry.entries()})
            raise StrikebenchError(f"no plugin named '{params_of}'; known: {', '.join(known)}")
        for entry in entries:
            _print_params(entry)
        return
    kinds = [kind] if kind else list(KIND_TITLES)
    for k in kinds:
        entries = registry.entries(k)
        if not entries:
            console.print(Text(f"{KIND_TITLES[k]}: none registered", style="dim"))
            continue
        table = Table(title=KIND_TITLES[k], title_justify="left", expand=False, header_style="bold")
        table.add_column("name", style="cyan", no_wrap=True)
        table.add_column("distribution")
        table.add_column("version")
        table.add_column("what it does")
        for entry in entries:
            table.add_row(escape(entry.name), escape(entry.distribution), escape(entry.version), escape(entry.summary))
        console.print(table)


def _print_params(entry) -> None:
    from pydantic_core import PydanticUndefined

    title = f"{entry.kind.replace('_', ' ')} '{entry.name}' ({entry.distribution} {entry.version}): {entry.summary}"
    table = Table(title=escape(title), title_justify="left", header_style="bold")
    table.add_column("parameter", style="cyan", no_wrap=True)
    table.add_column("type")
    table.add_column("default")
    table.add_column("allowed")
    table.add_column("meaning")
    for fname, field in entry.params_model.model_fields.items():
        if field.default_factory is not None:
            try:
                default = _show_value(field.default_factory())
            except TypeError:  # a factory that needs the other fields' values
                default = "(computed)"
        elif field.default is PydanticUndefined:
            default = "(required)"
        else:
            default = _show_value(field.default)
        table.add_row(escape(fname), escape(_type_name(field.annotation)), escape(default),
                      escape(_allowed(field.annotation, field.metadata)), escape(field.description or ""))
    if not entry.params_model.model_fields:
        table.add_row("(none)", "", "", "", "")
    console.print(table)


def _type_name(annotation) -> str:
    """A type as a plugin author writes it: ``list[float]``, ``float | None``, ``Literal['put','call']``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "None"
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return "Literal[" + ",".join(repr(a) for a in args) + "]"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin).replace("typing.", ""))
        return f"{name}[{', '.join(_type_name(a) for a in args)}]" if args else name
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("multiple_of", "multiple of"))


def _constraints(metadata, annotation) -> list[str]:
    """``[Gt(gt=0), Lt(lt=1), MinLen(min_length=1)]`` -> ``['> 0', '< 1', 'at least 1 item']``."""
    unit = "character" if annotation is str else "item"
    out = []
    for m in metadata:
        shown = False
        for attr, word in _BOUNDS:
            if getattr(m, attr, None) is not None:
                out.append(f"{word} {_show_value(getattr(m, attr))}")
                shown = True
        for attr, word in (("min_length", "at least"), ("max_length", "at most")):
            n = getattr(m, attr, None)
            if n is not None:
                out.append(f"{word} {n} {unit}{'s' if n != 1 else ''}")
                shown = True
        if getattr(m, "pattern", None) is not None:
            out.append(f"matches {m.pattern}")
            shown = True
        if not shown and not hasattr(m, "metadata"):
            out.append(str(m))
    return out


def _allowed(annotation, metadata) -> str:
    """The field's own constraints, then those on its items (``list[Annotated[float, Field(gt=0)]]``)."""
    inner = _strip_optional(annotation)
    parts = [", ".join(_constraints(metadata, inner))]
    if typing.get_origin(inner) in (list, tuple, set, frozenset):
        parts += ["each " + ", ".join(c) for c in map(_item_constraints, typing.get_args(inner)) if c]
    return "; ".join(p for p in parts if p)


def _item_constraints(annotation) -> list[str]:
    if typing.get_origin(annotation) is not typing.Annotated:
        return []
    base, *extras = typing.get_args(annotation)
    metadata = []
    for extra in extras:
        metadata.extend(getattr(extra, "metadata", None) or [extra])
    return _constraints(metadata, base)


def _strip_optional(annotation):
    """``float | None`` -> ``float``; anything else unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _show_value(value) -> str:
    """A default as a user would read it: times as 10:00, dates as 2023-01-03, lists of those."""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.time):
        return value.strftime("%H:%M" if not (value.second or value.microsecond) else "%H:%M:%S")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return repr(value.value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_show_value(k)}: {_show_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # 25.0 -> 25, 100000.0 -> 100000
    return repr(value)


@cli.command()
@click.argument("config", type=USER_PATH)
@set_option
def validate(config: str, overrides: tuple[str, ...]) -> None:
    """Check CONFIG completely (YAML, every plugin name, every parameter) without running anything."""
    from strikebench.config import load_config

    resolved = load_config(config, overrides)
    table = Table(title=escape(f"{config}: valid"), title_justify="left", header_style="bold")
    table.add_column("section")
    table.add_column("plugin", style="cyan")
    table.add_column("from")
    for label, rp in _resolved_rows(resolved):
        plugin = rp.entry.name if rp.instance_id == rp.entry.name else f"{rp.entry.name} (id {rp.instance_id})"
        table.add_row(escape(label), escape(plugin), escape(f"{rp.entry.distribution} {rp.entry.version}"))
    console.print(table)


def _resolved_rows(resolved):
    yield "data", resolved.data
    yield "broker", resolved.broker
    yield "fill model", resolved.fill_model
    yield "commission", resolved.commission
    for rp in resolved.strategies:
        yield rp.path, rp
    for rp in resolved.risk:
        yield rp.path, rp
    for rp in resolved.features:
        yield rp.path, rp


@cli.command("new-plugin")
@click.argument("kind", type=click.Choice(["strategy"]))
@click.argument("name")
@click.option("--dir", "directory", type=USER_PATH, metavar="PATH",
              help="Folder to create the package in (default: ./sb-NAME with dashes).")
def new_plugin(kind: str, name: str, directory: str | None) -> None:
    """Write a ready plugin package: pyproject with the `strikebench` entry point, a KIND class
    with its typed params model, a sample YAML and a test on a tiny synthetic market.

    `strikebench new-plugin strategy my_strat`, then `pip install -e "sb-my-strat[test]"`.
    """
    from strikebench.errors import PluginError
    from strikebench.scaffold import ScaffoldError, plugin_names, write_plugin

    names = plugin_names(name)
    try:
        taken = _registry().get(kind, name)
    except PluginError:  # a broken installed plugin must not stop anyone writing a new one
        taken = None
    if taken is not None:
        raise ScaffoldError(f"a {kind} named '{name}' is already registered by {taken.distribution} "
                               f"{taken.version}; choose another name")
    root, files = write_plugin(kind, name, directory)
    console.print(f"created {kind} plugin '{escape(name)}' (distribution {escape(names.distribution)}, "
                  f"package {escape(names.package)}) in {escape(str(root))}/", highlight=False, soft_wrap=True)
    for rel in files:
        console.print(f"  {escape(rel.as_posix())}", highlight=False)
    console.print("next:", highlight=False)
    for step in (f"cd {root}", 'pip install -e ".[test]"', "strikebench plugins --kind strategy", "pytest",
                 f"strikebench backtest {name}.yaml"):
        console.print(f"  {escape(step)}", highlight=False)


@cli.command()
@click.argument("config", type=USER_PATH)
@set_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
def backtest(config: str, overrides: tuple[str, ...], quiet: bool) -> None:
    """Run CONFIG as a backtest and write a run folder (journal, trades, report)."""
    from strikebench.config import load_config
    from strikebench.engine.runner import run_backtest
    from strikebench.plugin_manager import get_plugin_manager

    pm = get_plugin_manager()
    resolved = load_config(config, overrides, registry=pm.registry)
    run_backtest(resolved, console=console, progress=not quiet, pm=pm)


_engine_options = [
    click.option("--engine", "engine", type=click.Choice(["local", "ray"]), default=None,
                 help="Where trials run: `local` (processes on every core) or `ray` (default: sweep.executor)."),
    click.option("--ray", "use_ray", is_flag=True, help="Same as `--engine ray`."),
    click.option("--address", metavar="ADDR", default=None,
                 help="Ray cluster: `auto`, `ray://HOST:10001` or `HOST:6379` (default: a local Ray for the sweep)."),
    click.option("--workers", type=click.IntRange(1), default=None, help="Parallel trials (default: every core)."),
    click.option("--dir", "folder", type=USER_PATH, metavar="PATH", default=None,
                 help="The sweep folder (default: OUTPUT_DIR/NAME-sweep; the same folder resumes)."),
    click.option("--fresh", is_flag=True, help="Start the study over (delete its trials) instead of resuming."),
    click.option("--trials", type=click.IntRange(1), default=None, help="Trial budget (default: sweep.trials)."),
    click.option("--quiet", is_flag=True, help="No progress bar or live table."),
]


def engine_options(f):
    for option in reversed(_engine_options):
        f = option(f)
    return f


def _research_config(config: str, overrides: tuple[str, ...], section: str):
    from strikebench.config import load_config
    from strikebench.errors import ConfigError
    from strikebench.plugin_manager import get_plugin_manager

    resolved = load_config(config, overrides, registry=get_plugin_manager().registry)
    if getattr(resolved.config, section) is None:
        raise ConfigError(f"{config}: no `{section}:` section; add one (see docs/research.md)")
    return resolved


@cli.command()
@click.argument("config", type=USER_PATH)
@set_option
@engine_options
def sweep(config: str, overrides: tuple[str, ...], engine, use_ray, address, workers, folder, fresh, trials,
          quiet) -> None:
    """Run the `sweep:` section of CONFIG: trials in parallel into an Optuna study, a live best-so-far
    table, then `trials.csv`, `pareto.png`, `importance.png` and the best configs as ready-to-run YAML
    (`best/`). Interrupted, the same command resumes without redoing finished trials.
    """
    from strikebench.research.sweep import Sweep

    resolved = _research_config(config, overrides, "sweep")
    run = Sweep(resolved, folder=folder, fresh=fresh, executor="ray" if use_ray else engine, address=address,
                workers=workers, trials=trials, console=console, progress=not quiet)
    result = run.run()
    _print_sweep_result(run, result)
    if result.interrupted:
        raise SystemExit(130)


@cli.command("walk-forward")
@click.argument("config", type=USER_PATH)
@set_option
@engine_options
def walk_forward(config: str, overrides: tuple[str, ...], engine, use_ray, address, workers, folder, fresh, trials,
                 quiet) -> None:
    """Walk-forward validation of CONFIG (`walk_forward:` and `sweep:` sections): each window's
    in-sample sweep picks the parameters, run on the next out-of-sample sessions; reports
    out-of-sample results only, the parameters chosen per window and the stitched out-of-sample
    equity curve (`oos_equity.csv`, `oos_equity.png`). The same command resumes.
    """
    from strikebench.research.walk_forward import run_walk_forward

    resolved = _research_config(config, overrides, "walk_forward")
    run_walk_forward(resolved, folder=folder, fresh=fresh, executor="ray" if use_ray else engine, address=address,
                     workers=workers, trials=trials, console=console, progress=not quiet)


@cli.group()
def scenario() -> None:
    """Scenarios of the synthetic market: search for the ones that hurt a strategy most."""


@scenario.command("search")
@click.argument("config", type=USER_PATH)
@set_option
@engine_options
def scenario_search(config: str, overrides: tuple[str, ...], engine, use_ray, address, workers, folder, fresh,
                    trials, quiet) -> None:
    """Search the synthetic market's scenario (`scenario_search:` section of CONFIG: archetype mix, event
    sizes, vol regime, gaps) for the markets that hurt the strategy most, within plausibility bounds on the
    generated market's facts (an implausible market is an infeasible trial, never a result). Writes the
    worst scenarios as YAML (`worst/`): `strikebench backtest CONFIG --set data.scenario=FILE` reruns one
    exactly. The same machinery as `sweep`: an Optuna study, every core or Ray, resumes when run again.
    """
    from strikebench.research.scenario_search import ScenarioSearch

    resolved = _research_config(config, overrides, "scenario_search")
    run = ScenarioSearch(resolved, folder=folder, fresh=fresh, executor="ray" if use_ray else engine,
                         address=address, workers=workers, trials=trials, console=console, progress=not quiet)
    result = run.run()
    _print_sweep_result(run, result)
    if result.interrupted:
        raise SystemExit(130)


def _print_sweep_result(run, result) -> None:
    infeasible = sum(1 for r in result.trials if r["state"] == "infeasible")
    failed = f"{result.failed - infeasible} failed, {infeasible} infeasible" if run.kind != "sweep" else \
        f"{result.failed} failed"
    console.print(f"{run.kind} '{escape(result.study_name)}': {result.complete} complete, {failed} of "
                  f"{result.budget} in {result.elapsed:.1f} s; study {escape(run.storage if '@' not in run.storage else '(database)')}",
                  highlight=False, soft_wrap=True)
    for rank, b in enumerate(result.best, 1):
        figures = ", ".join(f"{o.name} {v:,.4f}" for o, v in zip(run.objectives, b["values"]))
        console.print(f"  {run.best_prefix} {rank}: trial {b['index']}: {escape(figures)} -> {escape(b.get('yaml', ''))}",
                      highlight=False, soft_wrap=True)
    console.print(f"folder: {escape(str(result.folder))} (trials.csv, sweep.json, pareto.png, importance.png, "
                  f"{run.best_dir}/)",
                  highlight=False, soft_wrap=True)


@cli.group("ml")
def ml_group() -> None:
    """Learn which entries are not worth their risk: a dataset of decision candidates with their outcomes
    (`ml dataset`), walk-forward training of a calibrated classifier (`ml train`), the `ml_gate` risk
    manager, and a gated vs ungated backtest on unseen sessions (`ml compare`). Needs the `ml` extra
    (scikit-learn) for training and the gate; see docs/ml.md."""


@ml_group.command("dataset")
@click.argument("run_dirs", nargs=-1, required=True, type=USER_PATH)
@click.option("-o", "--output", "out", required=True, type=USER_PATH, metavar="FILE.parquet",
              help="The Parquet file to write (replaced whole, only when complete).")
def ml_dataset(run_dirs: tuple[str, ...], out: str) -> None:
    """One row per decision candidate of RUN_DIRS: the candidate's features (deltas, credit, width, DTE,
    bid/ask width, context values at that bar) and its labels (entered or not; stop hit, P&L, holding time),
    the outcome of a candidate not entered simulated from the market by the same exit rules and flagged
    `counterfactual`."""
    from strikebench.ml.dataset import build_dataset, describe, write_dataset

    with console.status("reading journals and simulating candidates...", spinner="dots"):
        df, infos = build_dataset(run_dirs, console)
    write_dataset(df, out, infos)
    d = describe(df)
    table = Table(title=f"dataset {escape(out)}", show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for k, label in (("rows", "candidates (rows)"), ("decisions", "decisions"), ("entered", "entered"),
                     ("counterfactual", "counterfactual (simulated)"), ("resolved", "resolved labels"),
                     ("unfilled", "entry would not fill")):
        table.add_row(label, f"{d[k]:,}")
    table.add_row("stop rate (resolved)", f"{d['stop_rate']:.1%}")
    table.add_row("entered trades the simulation reproduces to the cent", f"{d['sim_agree']} of {d['sim_checked']}")
    console.print(table)


@ml_group.command("train")
@click.argument("config", type=USER_PATH)
@set_option
def ml_train(config: str, overrides: tuple[str, ...]) -> None:
    """Walk-forward training of CONFIG's `ml:` section: rolling (or anchored) windows over the dataset's
    sessions, no label known after a window's test start in its training, a calibrated classifier of P(stop);
    writes the report (`report.json`, `windows.csv`, `oos_predictions.csv`, `calibration.png`,
    `importance.png`) and a versioned model file `model-<hash>.sbm` into `ml.output`."""
    from strikebench.config import load_config
    from strikebench.ml.train import train

    resolved = load_config(config, overrides)
    if resolved.config.ml is None:
        raise StrikebenchError(f"{config}: no `ml:` section; add one (see docs/ml.md)")
    result = train(resolved, console=console)
    table = Table(title="out-of-sample, per window", show_header=True)
    for col in ("window", "test sessions", "train rows", "test rows", "stop rate", "AUC", "Brier", "base Brier"):
        table.add_column(col, justify="right" if col != "test sessions" else "left", no_wrap=True)
    for r in result.windows:
        table.add_row(str(r["window"]), f"{r['test_first']}..{r['test_last'][5:]}", str(r["train_rows"]),
                      str(r["test_rows"]),
                      f"{r['test_stop_rate']:.1%}" if r["test_rows"] else "-",
                      "skipped" if r["skipped"] else f"{r['auc']:.3f}", "" if r["skipped"] else f"{r['brier']:.4f}",
                      "" if r["skipped"] else f"{r['brier_base']:.4f}")
    console.print(table)
    p = result.pooled
    console.print(f"pooled out-of-sample: {p['rows']} rows, stop rate {p['stop_rate']:.1%}, AUC {p['auc']:.3f}, "
                  f"Brier {p['brier']:.4f} vs {p['brier_base']:.4f} for the training base rate", highlight=False)
    console.print("top features (permutation importance, Brier): " + ", ".join(
        f"{escape(k)} {v:+.4f}" for k, v in result.importance[:6]), highlight=False)
    m = result.manifest
    console.print(f"model: {escape(str(result.model_path))} (hash {result.model_hash}); trained on "
                  f"{m['trained']['rows']} rows decided {m['trained']['first_day']} .. {m['trained']['last_day']}, "
                  f"labels closed by {m['trained']['last_label_close'][:16]}; expected loss {m['loss_per_credit']:.2f}"
                  f" x credit when stopped, gain {m['gain_per_credit']:.2f} x credit otherwise", highlight=False,
                  soft_wrap=True)
    console.print(f"report: {escape(str(result.folder))} (report.json, windows.csv, oos_predictions.csv, "
                  f"calibration.png, importance.png)", highlight=False, soft_wrap=True)


@ml_group.command("compare")
@click.argument("config", type=USER_PATH)
@click.option("--model", "model_path", required=True, type=USER_PATH, help="The model file (model-<hash>.sbm).")
@click.option("--threshold", type=click.FloatRange(min=0, min_open=True), default=0.5, show_default=True,
              help="ml_gate's threshold: veto when P(stop) x expected loss > threshold x expected gain.")
@click.option("--from", "start", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="YYYY-MM-DD",
              help="First session (default: the config's data.start).")
@click.option("--to", "end", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="YYYY-MM-DD",
              help="Last session (default: the config's data.end).")
@set_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
def ml_compare(config: str, model_path: str, threshold: float, start, end, overrides, quiet) -> None:
    """CONFIG's backtest without and with the `ml_gate` of MODEL on a span the model never saw (a span
    overlapping its training data, first decision .. last label's close, is refused); both run folders and
    `compare.json` go into one folder, and a table shows the figures side by side."""
    from strikebench.ml.compare import FIGURES, compare

    r = compare(config, model_path, threshold=threshold, start=start.date() if start else None,
                end=end.date() if end else None, overrides=overrides, console=console, progress=not quiet)
    table = Table(title=f"{r['start']} .. {r['end']}, model {r['model']} (threshold {r['threshold']:g})")
    table.add_column("figure")
    table.add_column("without the gate", justify="right")
    table.add_column("with the gate", justify="right")
    for key, label, fmt in FIGURES:
        a, b = r["without"].get(key), r["with"].get(key)
        table.add_row(label, "-" if a is None else fmt.format(a), "-" if b is None else fmt.format(b))
    table.add_row("entries vetoed by ml_gate", "0", f"{r['vetoed_entries']:,}")
    console.print(table)
    console.print(f"folder: {escape(r['folder'])} (both run folders, compare.json)", highlight=False, soft_wrap=True)


@cli.group()
def market() -> None:
    """Look at the market a config's `data:` section generates (the synthetic market)."""


def _synthetic_market(config: str, overrides: tuple[str, ...]):
    from strikebench.config import load_config

    resolved = load_config(config, overrides)
    feed = resolved.data.build()
    if resolved.config.data.source != "synthetic":
        raise StrikebenchError(f"{config}: data.source is '{resolved.config.data.source}'; "
                               "`strikebench market` describes the synthetic market only")
    return feed.open()


@market.command("describe")
@click.argument("config", type=USER_PATH)
@set_option
@click.option("--day", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="YYYY-MM-DD",
              help="Day of the IV smile and term-structure plot (default: the most volatile day).")
@click.option("--png", "png_path", default="market.png", show_default=True, type=USER_PATH,
              help="Where to write the plot.")
def market_describe(config: str, overrides: tuple[str, ...], day, png_path: str) -> None:
    """Summarize the generated market (archetype days, realized vs implied vol, VIX range, events) and plot it."""
    from strikebench.feeds.synthetic import describe
    from strikebench.userfiles import check_output_file

    check_output_file(png_path, key="--png")
    with console.status("generating the market..."):
        m = _synthetic_market(config, overrides)
    console.print(describe(m, png_path, day=day.date() if day else None))
    from strikebench.research.scenario_search import plausibility_line

    console.print(escape(plausibility_line(m)), highlight=False, soft_wrap=True)
    console.print(f"plot: [bold]{escape(png_path)}[/]")


@market.command("export")
@click.argument("config", type=USER_PATH)
@click.argument("out_dir", type=USER_PATH)
@set_option
@click.option("--days", type=int, default=5, show_default=True,
              help="Export the first N sessions (0 = every session: about 1 GB a year at 30-minute chains).")
@click.option("--interval", "interval_minutes", type=click.IntRange(1, 390), default=30, show_default=True,
              help="Minutes between exported chain snapshots (1: every bar, what a backtest on the files needs).")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv", "dbn"]), default="parquet", show_default=True,
              help="File format of the layout (dbn: Databento OPRA-style zstd DBN files, what the databento feed reads).")
@click.option("--max-dte", type=click.IntRange(0, 400), default=None,
              help="Only expiries at most this many calendar days out.")
@click.option("--strike-range", "strike_range_pct", type=click.FloatRange(0, 100, min_open=True), default=None,
              help="Only strikes within this percentage of the session's opening price.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Processes writing sessions in parallel (a real-size SPX session is ~10 CPU s).")
def market_export(config: str, out_dir: str, overrides: tuple[str, ...], days: int, interval_minutes: int,
                  fmt: str, max_dte: int | None, strike_range_pct: float | None, workers: int) -> None:
    """Write bars, settlement prints and chains in the layout the `files` data feed reads
    (bars/SYMBOL, chains/UNDERLYING/DATE, settlements, manifest.json; docs/data-files.md)."""
    from strikebench.feeds.synthetic import export
    from strikebench.userfiles import prepare_output_dir

    prepare_output_dir(out_dir, key="OUT_DIR")
    with console.status("generating the market..."):
        m = _synthetic_market(config, overrides)
    sessions = [d.date() for d in m.sessions()]
    chosen = sessions if days == 0 else sessions[:days]
    with console.status(f"writing {len(chosen)} session(s)..."):
        if fmt == "dbn":
            import tempfile

            from strikebench.feeds.dbn_write import files_to_dbn

            with tempfile.TemporaryDirectory(prefix="sb-export-") as tmp:
                export(m, tmp, days=chosen, interval_minutes=interval_minutes, format="parquet", max_dte=max_dte,
                       strike_range_pct=strike_range_pct, workers=workers)
                files_to_dbn(tmp, out_dir)
        else:
            export(m, out_dir, days=chosen, interval_minutes=interval_minutes, format=fmt, max_dte=max_dte,
                   strike_range_pct=strike_range_pct, workers=workers)
    console.print(f"wrote {len(chosen)} session(s) of bars and chains to [bold]{escape(out_dir)}[/]")


@cli.command()
@click.argument("run_dir", type=USER_PATH)
@run_option
@click.option("--out", "out_dir", type=USER_PATH, metavar="DIR",
              help="Folder for the files (default: RUN_DIR; for a journal URL, ./RUN_ID).")
def report(run_dir: str, run_id: str | None, out_dir: str | None) -> None:
    """Rebuild RUN_DIR's trades.csv, decisions.csv, summary.json, equity.png and report.html from its journal alone.

    RUN_DIR is a run folder, a journal file, or a journal URL (postgresql://user@host/db; add --run
    when it holds several runs)."""
    from strikebench.report import print_summary, write_report

    summary = write_report(run_dir, run_id=run_id, out_dir=out_dir)
    print_summary(summary, console)
    console.print(f"wrote trades.csv, decisions.csv, summary.json, equity.png, report.html in "
                  f"[bold]{escape(summary.get('run_dir') or run_dir)}[/]")


@cli.command()
@click.argument("run_dir", type=USER_PATH)
@click.option("--date", "day", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="YYYY-MM-DD",
              help="The session day to show (without it: the days that have decisions).")
@run_option
def decisions(run_dir: str, day: dt.datetime | None, run_id: str | None) -> None:
    """Every decision of one day in RUN_DIR: time, strategy, TRADE/SKIP and why, chosen expiry, each candidate's
    strikes, deltas, credit and score."""
    from strikebench.report import print_decision_days, print_decisions

    if day is None:
        print_decision_days(run_dir, console, run_id=run_id)
    else:
        print_decisions(run_dir, day.date(), console, run_id=run_id)


@cli.command("replay-decision")
@click.argument("run_dir", type=USER_PATH)
@click.argument("decision_id")
@run_option
def replay_decision(run_dir: str, decision_id: str, run_id: str | None) -> None:
    """Re-run DECISION_ID of RUN_DIR from its stored chain snapshot (checksum verified) and context; exit 0 when
    it reaches the same result, 1 when it does not."""
    from strikebench.report import ReplayDifferent, print_replay
    from strikebench.report import replay_decision as replay

    result = replay(run_dir, decision_id, run_id=run_id)
    print_replay(result, console)
    if not result.same:
        raise ReplayDifferent(f"decision {decision_id} replayed to a DIFFERENT result: {result.differences[0]}")


@cli.command()
@click.argument("config", type=USER_PATH)
@set_option
@click.option("--clock", "clock_kind", type=click.Choice(["wall", "replay"]), default="wall", show_default=True,
              help="`wall`: trade on the real clock; `replay`: replay a day of the configured market at --speed.")
@click.option("--speed", type=float, default=60.0, show_default=True,
              help="Replay speed (60 = a minute a second; 0 = as fast as possible).")
@click.option("--day", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="YYYY-MM-DD",
              help="Session to trade (wall: today; replay: the market's first session).")
@click.option("--dry-run", is_flag=True, help="Log the orders it would send; send nothing.")
@click.option("--run-dir", type=USER_PATH, metavar="DIR",
              help="Run folder (default: OUTPUT_DIR/NAME-paper-DAY); when it holds a run, that run resumes "
                   "from its journal.")
@click.option("--fresh", is_flag=True, help="Start a new run folder even when today's run exists.")
@click.option("--no-panel", is_flag=True, help="No live panel (one summary line at the end).")
@click.option("--max-quote-age", type=float, default=None, metavar="SECONDS", help="Stale-quote guard (default 120).")
@click.option("--max-orders-per-minute", type=int, default=None, help="Order-rate guard (default 20).")
@click.option("--daily-loss-cap", type=float, default=None, metavar="DOLLARS",
              help="Kill switch on the day's loss (default: the YAML's daily_loss_cap rule).")
@click.option("--live", "live", is_flag=True,
              help="Confirm a broker configured for a real-money account (Tradier `environment: live`); refused "
                   "without it.")
def paper(config: str, overrides, clock_kind: str, speed: float, day, dry_run: bool, run_dir, fresh: bool,
          no_panel: bool, max_quote_age, max_orders_per_minute, daily_loss_cap, live: bool) -> None:
    """Paper-trade CONFIG on a live (or replayed) clock through its broker (`paper` stands in for `backtest`).

    Ctrl-C or a crash, then the same command again: the day's run (OUTPUT_DIR/NAME-paper-DAY, or `--run-dir`)
    resumes from its journal, reconciled with the broker before any new decision. See docs/live.md.
    """
    from strikebench.live.launch import start_paper

    guards = {k: v for k, v in (("max_quote_age_seconds", max_quote_age), ("max_orders_per_minute",
                                max_orders_per_minute), ("daily_loss_cap", daily_loss_cap)) if v is not None}
    summary = start_paper(config, overrides, clock=clock_kind, speed=speed, day=day.date() if day else None,
                          dry_run=dry_run, run_dir=run_dir, console=console, panel=not no_panel and console.is_terminal,
                          guard_overrides=guards, fresh=fresh, live=live)
    state = "completed" if summary.get("completed") else (summary.get("stopped") or "stopped")
    console.print(f"paper run {escape(summary['run_id'])}: {state}; trades {summary['trades']}, open "
                  f"{summary['open_trades']}, realized P&L {summary['realized_pnl']:+,.2f}, equity "
                  f"{summary['final_equity']:,.2f}; run folder [bold]{escape(summary['run_dir'])}[/]",
                  highlight=False, soft_wrap=True)
    for note in summary.get("reconciled") or ():
        console.print(f"  reconciled: {escape(note)}", highlight=False, soft_wrap=True)


@cli.command()
@click.argument("config", type=USER_PATH)
@set_option
@click.option("--account", "account", type=USER_PATH, metavar="DIR",
              help="Account folder (default: the YAML's account.dir, else accounts/NAME); one journal for its life.")
@click.option("--clock", "clock_kind", type=click.Choice(["wall", "replay"]), default="wall", show_default=True,
              help="`wall`: every session from now on, waiting through nights, weekends and holidays (never stops "
                   "on its own); `replay`: the sessions from --from to --to at --speed.")
@click.option("--from", "start", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="YYYY-MM-DD",
              help="Replay: first session (default the YAML's data.start).")
@click.option("--to", "end", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="YYYY-MM-DD",
              help="Replay: last session (default the YAML's data.end).")
@click.option("--speed", type=float, default=60.0, show_default=True,
              help="Replay speed (60 = a minute a second; 0 = as fast as possible).")
@click.option("--dry-run", is_flag=True, help="Log the orders it would send; send nothing.")
@click.option("--sessions", "stop_after_sessions", type=int, default=None, metavar="N",
              help="Stop after N sessions (the account resumes with the same command).")
@click.option("--no-panel", is_flag=True, help="No live panel (one line per session).")
@click.option("--max-quote-age", type=float, default=None, metavar="SECONDS", help="Stale-quote guard (default 120).")
@click.option("--max-orders-per-minute", type=int, default=None, help="Order-rate guard (default 20).")
@click.option("--daily-loss-cap", type=float, default=None, metavar="DOLLARS",
              help="Kill switch on the day's loss (default: the YAML's daily_loss_cap rule).")
@click.option("--live", "live", is_flag=True,
              help="Confirm a broker configured for a real-money account (Tradier `environment: live`); refused "
                   "without it.")
def trade(config: str, overrides, account, clock_kind: str, start, end, speed: float, dry_run: bool,
          stop_after_sessions, no_panel: bool, max_quote_age, max_orders_per_minute, daily_loss_cap,
          live: bool) -> None:
    """Trade an ACCOUNT session after session: positions, working GTC orders, cash and cross-day risk state carry.

    After Ctrl-C, a crash or a weekend the same command resumes: it reconciles with the broker first (fills,
    expiries, settlements while it was down), says what changed, then trades. See docs/live.md.
    """
    from strikebench.live.account import run_account

    guards = {k: v for k, v in (("max_quote_age_seconds", max_quote_age), ("max_orders_per_minute",
                                max_orders_per_minute), ("daily_loss_cap", daily_loss_cap)) if v is not None}
    s = run_account(config, overrides, account=account, clock=clock_kind, start=start.date() if start else None,
                    end=end.date() if end else None, speed=speed, dry_run=dry_run, console=console,
                    panel=not no_panel and console.is_terminal, guard_overrides=guards,
                    stop_after_sessions=stop_after_sessions, live=live,
                    say=lambda m: console.print(escape(m), highlight=False, soft_wrap=True))
    _print_account(s)


@cli.group("broker")
def broker_group() -> None:
    """The configured broker: check credentials, account, buying power, clock and data before trading."""


@broker_group.command("check")
@click.argument("config", type=USER_PATH)
@set_option
@click.option("--preview", is_flag=True,
              help="Also preview (never place) a multileg order at the broker; without it only reads are sent.")
def broker_check_cmd(config: str, overrides, preview: bool) -> None:
    """Ask CONFIG's broker: credentials, account, option buying power, market clock, data permissions.

    Sends read requests only (and, with `--preview`, one preview order that is not placed); writes nothing.
    Exits 1 when a check fails.
    """
    from strikebench.live.launch import broker_check

    name, rows = broker_check(config, overrides, preview=preview)
    table = Table(title=f"broker check: {name}", title_justify="left", header_style="bold")
    for col in ("check", "result", "detail"):
        table.add_column(col, overflow="fold")
    for r in rows:
        mark = "[green]ok[/]" if r.ok else ("[red]FAILED[/]" if r.ok is False else "-")
        table.add_row(escape(r.item), mark, escape(r.detail + (f" -> {r.fix}" if r.fix else "")))
    console.print(table)
    failed = [r.item for r in rows if r.ok is False]
    if failed:
        raise StrikebenchError(f"broker check: {len(failed)} check(s) failed: {', '.join(failed)}")


@cli.group("paper-broker")
def paper_broker() -> None:
    """The paper broker as a service: its own process, clock, market data and SQLite state (docs/live.md)."""


@paper_broker.command("serve")
@click.option("--state", required=True, type=USER_PATH, metavar="FILE",
              help="The broker's SQLite state (authoritative; created with --config, resumed without).")
@click.option("--config", type=click.Path(dir_okay=False), metavar="CONFIG.yaml",
              help="The config whose market, fill model, commission and paper params the broker uses.")
@set_option
@click.option("--clock", "clock_kind", type=click.Choice(["wall", "replay"]), default=None,
              help="`wall` (default) or `replay` (the service owns market time; traders follow it).")
@click.option("--from", "start", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="YYYY-MM-DD")
@click.option("--to", "end", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="YYYY-MM-DD")
@click.option("--speed", type=float, default=None, help="Replay speed (default 60; 0 = as fast as a trader asks).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=0, show_default=True, help="0 = any free port (written to FILE.addr).")
@click.option("--allow-remote", is_flag=True, help="Listen on a non-loopback --host (no authentication!).")
@click.option("--hold-start", type=click.FloatRange(min=0, max=600), default=0.0, metavar="SECONDS",
              help="Replay: wait at the current market time until a trader holds the clock, for at most SECONDS "
                   "(`trade` starts its service with 60, so the replay never runs ahead of a trader still starting).")
def paper_broker_serve(state, config, overrides, clock_kind, start, end, speed, host, port, allow_remote,
                       hold_start) -> None:
    """Serve a paper broker over HTTP+JSON until SIGTERM or Ctrl-C."""
    from strikebench.brokers.paper_service import serve

    serve(state, host=host, port=port, allow_remote=allow_remote, config=config, overrides=tuple(overrides),
          clock=clock_kind, start=start.date() if start else None, end=end.date() if end else None, speed=speed,
          hold_start=hold_start, say=lambda m: console.print(escape(m), highlight=False, soft_wrap=True))


def _print_account(s: dict) -> None:
    done = sum(1 for x in s["sessions"] if x["completed"])
    running = f"running (pid {s['running_pid']})" if s["running_pid"] else "not running"
    cash = "unknown" if s["cash"] is None else f"{s['cash']:,.2f}"
    console.print(f"account [bold]{escape(s['account'])}[/]: {running}; {done} session(s) completed"
                  f"{', last ' + s['last_session'] if s.get('last_session') else ''}; closed trades "
                  f"{s['closed_trades']}, realized P&L {s['realized_pnl']:+,.2f}, cash {cash}; open trades "
                  f"{len(s['open_trades'])}, working orders {len(s['working_orders'])}", highlight=False,
                  soft_wrap=True)


@cli.command()
@click.argument("run_dir", type=USER_PATH)
@run_option
def status(run_dir: str, run_id: str | None) -> None:
    """State of a paper run or an account: running or not, last bar, switches, open trades, working orders.

    RUN_DIR may also be a journal URL (postgresql://...; --run picks the run, else the latest)."""
    from strikebench.live.account import account_status, is_account
    from strikebench.live.launch import paper_status

    if run_id is not None or "://" in run_dir:
        s = paper_status(run_dir, run_id=run_id)
        running = f"running (pid {s['running_pid']})" if s["running_pid"] else \
            ("completed" if s["completed"] else "not completed")
        console.print(f"[bold]{escape(s['run_id'])}[/]: {running}; last bar done {s['last_bar_done']}; realized P&L "
                      f"{s['realized_pnl']:+,.2f}", highlight=False)
    elif is_account(run_dir):
        s = account_status(run_dir)
        _print_account(s)
        s["run_id"] = s["account"]
    else:
        s = paper_status(run_dir)
        running = f"running (pid {s['running_pid']})" if s["running_pid"] else \
            ("completed" if s["completed"] else "not running")
        console.print(f"[bold]{escape(s['run_id'])}[/]: {running}; last bar done {s['last_bar_done']}; realized P&L "
                      f"{s['realized_pnl']:+,.2f}", highlight=False)
    console.print(f"kill switch: {escape(s['kill_switch'] or 'armed')}; new risk: "
                  f"{escape(s['new_risk_stopped'] or 'allowed')}" + ("; flatten requested" if s["flatten_requested"] else ""),
                  highlight=False, soft_wrap=True)
    table = Table(title="open trades", title_justify="left", header_style="bold")
    for col in ("trade", "strategy", "opened", "contracts", "entry credit"):
        table.add_column(col)
    for t in s["open_trades"]:
        table.add_row(escape(t["trade_id"]), escape(t["strategy"]), escape(t["opened_at"]), str(t["contracts"]),
                      escape(str(t["entry_credit"])))
    console.print(table)
    for o in s["working_orders"]:
        console.print(f"working: {escape(o['order_id'])} {o['status']} {o['filled_quantity']}/{o['quantity']}",
                      highlight=False)
    for line in s["log"]:
        console.print(f"  {escape(line['at'])} {escape(line['kind'])}: {escape(line['message'])}", highlight=False,
                      soft_wrap=True)


@cli.command()
@click.argument("run_dir", type=USER_PATH)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def flatten(run_dir: str, yes: bool) -> None:
    """Close every open trade of a paper run and trip its kill switch (asks first).

    A running run closes at its next bar; a stopped one on its next start, before any new decision.
    """
    from strikebench.live.account import account_status, is_account
    from strikebench.live.launch import paper_status, request_flatten

    s = dict(account_status(run_dir), run_id=run_dir) if is_account(run_dir) else paper_status(run_dir)
    n = len(s["open_trades"])
    if not yes and not click.confirm(f"close {n} open trade(s) and cancel working entries of {s['run_id']}?",
                                     default=False):
        raise click.exceptions.Abort()
    request_flatten(run_dir)
    when = "at its next bar" if s["running_pid"] else "when the run is next started (before any new decision)"
    console.print(f"flatten requested for {escape(s['run_id'])} ({n} open trade(s)); kill switch tripped; acts "
                  f"{when}", highlight=False, soft_wrap=True)


@cli.command()
@click.argument("run_dir", type=USER_PATH)
@click.option("--reason", default="kill switch by command", show_default=True)
def kill(run_dir: str, reason: str) -> None:
    """Trip a paper run's kill switch: no new risk (exits still allowed)."""
    from strikebench.live.launch import request_kill

    request_kill(run_dir, reason)
    console.print(f"kill switch tripped for {escape(run_dir)}: {escape(reason)}", highlight=False)


@cli.command()
@click.argument("sources", nargs=-1, type=USER_PATH, metavar="[RUN_DIR | ACCOUNT | SWEEP_DIR | JOURNAL_URL]...")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on (loopback by default; another address shows the page to the network).")
@click.option("--port", type=click.IntRange(0, 65535), default=8050, show_default=True,
              help="Port (0 = any free port; the address is printed).")
@click.option("--token-env", "token_env", default=None, metavar="VAR",
              help="Enable the kill and flatten buttons, guarded by the token in environment variable VAR "
                   "(never printed or logged). Without it the dashboard is read-only.")
def dashboard(sources, host: str, port: int, token_env: str | None) -> None:
    """Serve a local web page: a backtest run (equity, drawdown, trades, attribution, decisions, chain slices), a
    paper/live account updating by itself (positions, greeks, P&L, orders, risk state, log) or a sweep (trials,
    Pareto front, importances). No argument: the runs and accounts under runs/ and accounts/ here."""
    from strikebench.dashboard.server import serve

    serve(list(sources), host=host, port=port, token_env=token_env,
          say=lambda m: console.print(escape(m), highlight=False, soft_wrap=True))


@cli.group("journal")
def journal_group() -> None:
    """A journal's schema and its runs: migrate a journal to this version's schema, copy runs between journals
    (SQLite files and PostgreSQL databases, either way)."""


@journal_group.command("migrate")
@click.argument("url", type=USER_PATH, metavar="URL_OR_PATH")
def journal_migrate(url: str) -> None:
    """Bring a journal's schema to this version's head (Alembic). A PostgreSQL database may be empty: the
    journal's tables are created. Reading commands never migrate; they say when this is needed."""
    from strikebench.journal_admin import migrate
    from strikebench.journal_db import mask_url

    before, after = migrate(url)
    what = "already at" if before == after else f"migrated from {before or 'no revision'} to"
    console.print(f"{escape(mask_url(url))}: {what} schema revision {after}", highlight=False, soft_wrap=True)


@journal_group.command("copy")
@click.argument("src", type=USER_PATH)
@click.argument("dst", type=USER_PATH)
@click.option("--run", "run_ids", multiple=True, metavar="RUN_ID", help="Copy only this run (repeatable; default: all).")
@click.option("--force", is_flag=True, help="Copy into a journal that already holds runs (a run already there is "
                                            "replaced; the others stay).")
def journal_copy(src: str, dst: str, run_ids: tuple[str, ...], force: bool) -> None:
    """Copy the runs of journal SRC into journal DST, row for row and exact to the cent (SQLite file or path,
    postgresql:// URL, either way). SRC is only read; DST gets the schema if it has none."""
    from strikebench.journal_admin import copy_runs
    from strikebench.journal_db import mask_url

    with console.status("copying..."):
        copied = copy_runs(src, dst, run_ids=list(run_ids) or None, force=force)
    console.print(f"copied {len(copied)} run(s) ({escape(', '.join(copied))}) from {escape(mask_url(src))} to "
                  f"{escape(mask_url(dst))}", highlight=False, soft_wrap=True)


@cli.group("data")
def data_group() -> None:
    """Check historical data files (the layout of the `files` data feed, docs/data-files.md)."""


@data_group.command("check")
@click.argument("path", type=USER_PATH)
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default=None,
              help="File format (default: the one most files have).")
def data_check(path: str, fmt: str | None) -> None:
    """Validate a dataset before a long run: coverage table, one line per error, non-zero exit on errors."""
    from strikebench.datacheck import check_dataset, render
    from strikebench.errors import DataError

    with console.status("checking the files..."):
        rep = check_dataset(path, fmt)
    render(rep, console)
    if not rep.ok:
        raise DataError(f"{len(rep.errors)} error(s) in {path}")
    console.print(f"{escape(path)}: ok ({rep.sessions} sessions)", highlight=False)


@data_group.command("convert")
@click.argument("src", type=USER_PATH)
@click.argument("out", type=USER_PATH)
def data_convert(src: str, out: str) -> None:
    """Convert Databento DBN files (definition + cbbo-1m/tbbo/mbp-1 + ohlcv-1m or bars/) or a CSV layout into the
    Parquet layout at OUT, once (a new folder, published only when every file converted)."""
    from strikebench.feeds.convert import convert

    with console.status("converting..."):
        manifest = convert(src, out)
    rows = sum(c["rows"] for c in manifest["chains"])
    console.print(f"wrote {len(manifest['chains'])} chain file(s), {rows:,} rows, to [bold]{escape(out)}[/]"
                  f" (data: {{source: files, path: {escape(out)}, format: parquet}})")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``strikebench`` command: one-line errors, exit codes."""
    try:
        cli.main(args=argv, prog_name="strikebench", standalone_mode=False)
    except StrikebenchError as exc:
        err_console.print(Text.assemble(("error: ", "bold red"), str(exc)), highlight=False, soft_wrap=True)
        return exc.exit_code
    except click.exceptions.Abort:
        err_console.print("aborted")
        return 130
    except click.ClickException as exc:  # a misspelled option, a value out of range: one line like every error
        where = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            where = f" (see `{exc.ctx.command_path} --help`)"
        err_console.print(Text.assemble(("error: ", "bold red"), f"{exc.format_message()}{where}"), highlight=False,
                          soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except OSError as exc:  # a file problem no check caught: still one line naming the file
        from strikebench.userfiles import os_problem

        where = f"{exc.filename}: " if exc.filename else ""
        err_console.print(Text.assemble(("error: ", "bold red"), f"{where}{os_problem(exc)}"), highlight=False,
                          soft_wrap=True)
        return 1
    except sqlite3.DatabaseError as exc:  # a journal damaged in a way the read-only checks did not catch
        err_console.print(Text.assemble(("error: ", "bold red"), f"damaged journal ({exc})"), highlight=False,
                          soft_wrap=True)
        return 6
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
