"""Run reports: the terminal summary (and, from the journal, the files of a run folder)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

__all__ = ["print_summary"]

_ROWS = [
    ("sessions", "Sessions", "{:,}"),
    ("trades", "Closed trades", "{:,}"),
    ("open_trades", "Open trades", "{:,}"),
    ("win_rate", "Win rate", "{:.1%}"),
    ("realized_pnl", "Realized P&L ($)", "{:+,.2f}"),
    ("fees", "Fees ($)", "{:,.2f}"),
    ("initial_cash", "Initial cash ($)", "{:,.2f}"),
    ("final_equity", "Final equity ($)", "{:,.2f}"),
    ("max_drawdown", "Max drawdown ($, daily)", "{:,.2f}"),
    ("bt_max_drawdown_money", "Max drawdown ($, Backtrader, per bar)", "{:,.2f}"),
    ("decisions", "Decisions", "{:,}"),
    ("vetoed_orders", "Orders vetoed by risk", "{:,}"),
]


def print_summary(summary: dict, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"run {summary.get('run_id', '')}", title_justify="left", header_style="bold")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, label, fmt in _ROWS:
        value = summary.get(key)
        if value is None:
            continue
        table.add_row(label, fmt.format(value))
    console.print(table)
    if summary.get("run_dir"):
        console.print(f"run folder: [bold]{summary['run_dir']}[/]")
