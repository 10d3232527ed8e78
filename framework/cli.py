"""The ``strikebench`` command line.

Every user-facing error is a :class:`~strikebench.errors.StrikebenchError`: the
CLI prints its one line on stderr and exits with its code (2 for a bad config),
never a traceback.
"""

from __future__ import annotations

import sys

import rich_click as click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from strikebench.errors import StrikebenchError

click.rich_click.USE_MARKDOWN = True
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
        table = Table(title=KIND_TITLES[k], title_justify="left", expand=False, header_style="bold")
        table.add_column("name", style="cyan", no_wrap=True)
        table.add_column("distribution")
        table.add_column("version")
        table.add_column("what it does")
        for entry in registry.entries(k):
            table.add_row(entry.name, entry.distribution, entry.version, entry.summary)
        if table.row_count:
            console.print(table)


def _print_params(entry) -> None:
    from pydantic_core import PydanticUndefined

    table = Table(title=f"{entry.kind.replace('_', ' ')} '{entry.name}' ({entry.distribution} {entry.version}): "
                        f"{entry.summary}", title_justify="left", header_style="bold")
    table.add_column("parameter", style="cyan", no_wrap=True)
    table.add_column("type")
    table.add_column("default")
    table.add_column("meaning")
    for fname, field in entry.params_model.model_fields.items():
        ann = field.annotation
        tname = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
        if field.default is PydanticUndefined and field.default_factory is None:
            default = "(required)"
        elif field.default_factory is not None:
            default = repr(field.default_factory())
        else:
            default = repr(field.default)
        constraints = [str(m) for m in field.metadata]
        meaning = field.description or ""
        if constraints:
            meaning += f" [{', '.join(constraints)}]"
        table.add_row(fname, tname, default, meaning)
    if not entry.params_model.model_fields:
        table.add_row("(none)", "", "", "")
    console.print(table)


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@set_option
def validate(config: str, overrides: tuple[str, ...]) -> None:
    """Check CONFIG completely (YAML, every plugin name, every parameter) without running anything."""
    from strikebench.config import load_config

    resolved = load_config(config, overrides)
    table = Table(title=f"{config}: valid", title_justify="left", header_style="bold")
    table.add_column("section")
    table.add_column("plugin", style="cyan")
    table.add_column("from")
    for label, rp in _resolved_rows(resolved):
        table.add_row(label, rp.entry.name if rp.instance_id == rp.entry.name else f"{rp.entry.name} (id {rp.instance_id})",
                      f"{rp.entry.distribution} {rp.entry.version}")
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


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
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
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
