"""Run reports: the terminal summary and, from the journal alone, the files of a run folder.

:func:`write_report` reads only the run's journal and writes ``trades.csv``,
``decisions.csv``, ``summary.json``, ``equity.png`` (equity and drawdown) and a
self-contained ``report.html``. :func:`print_decisions` shows one day's decisions
and :func:`replay_decision` re-runs one decision from its stored snapshot and
context.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from strikebench.errors import StrikebenchError

__all__ = [
    "print_summary",
    "write_report",
    "journal_summary",
    "has_journal",
    "open_run",
    "print_decisions",
    "print_decision_days",
    "replay_decision",
    "print_replay",
    "ReplayResult",
    "ReplayDifferent",
    "load_config_text",
]

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
    ("max_drawdown_per_bar", "Max drawdown ($, per bar)", "{:,.2f}"),
    ("return_pct", "Return (%)", "{:+.2f}"),
    ("worst_day", "Worst day ($)", "{:+,.2f}"),
    ("sharpe", "Sharpe (daily, annualized)", "{:.2f}"),
    ("decisions", "Decisions", "{:,}"),
    ("vetoed_entries", "Entries blocked by risk", "{:,}"),
    ("vetoed_orders", "Orders vetoed by risk", "{:,}"),
]


def print_summary(summary: dict, console: Console | None = None) -> None:
    console = console or Console()
    title = f"run {summary.get('run_id', '')}"
    if summary.get("completed") is False:
        title += " (INCOMPLETE)"
    table = Table(title=escape(title), title_justify="left", header_style="bold")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, label, fmt in _ROWS:
        value = summary.get(key)
        if value is None:
            continue
        table.add_row(label, fmt.format(value))
    if summary.get("approximated_settlements"):
        # real-data runs: expiries settled on the underlying's open/close, not the settlement print
        table.add_row("Settlements approximated (no print)", f"{summary['approximated_settlements']:,}")
    console.print(table)
    if summary.get("breaker_trips"):
        trips = Table(title="circuit-breaker trips", title_justify="left", header_style="bold")
        for col in ("tripped at", "breaker", "scope", "why", "resets"):
            trips.add_column(col)
        for t in summary["breaker_trips"]:
            trips.add_row(escape(str(t["tripped_at"])[:16]), escape(t["rule"]), escape(t["scope"]),
                          escape(t["reason"]), escape(t["resets"]))
        console.print(trips)
    if summary.get("run_dir"):
        console.print(f"run folder: [bold]{escape(str(summary['run_dir']))}[/]")


class ReplayDifferent(StrikebenchError):
    """A replayed decision did not reach the stored result."""

    exit_code = 1


# ------------------------------------------------------------------ opening
def has_journal(run_dir) -> bool:
    from strikebench.journal import JOURNAL_FILE, JOURNAL_URL_FILE

    p = Path(run_dir)
    return (p / JOURNAL_FILE).is_file() or (p / JOURNAL_URL_FILE).is_file()


def open_run(run_dir, run_id: str | None = None):
    """(journal, run row) of a run folder, a journal file or a journal URL (``postgresql://...``, its
    run named by ``run_id`` or ``#RUN_ID`` when it holds several), opened read-only after checking the
    journal is whole (:class:`strikebench.journal.ReadOnlyJournal`)."""
    from strikebench.journal import find_journal, open_read_only

    journal = open_read_only(find_journal(run_dir))
    try:
        run = journal.pick_run(run_dir, run_id)
    except Exception:
        journal.close()
        raise
    return journal, run


def _folder(run_dir) -> Path:
    if is_url(run_dir):
        return Path(".")
    p = Path(run_dir)
    return p.parent if p.is_file() else p


def is_url(run_dir) -> bool:
    """A journal URL (``postgresql://``, ``sqlite:///``) rather than a run folder or journal file."""
    import os

    return "://" in os.fspath(run_dir)


# ------------------------------------------------------------------ figures
def _cents(text) -> int:
    return int((Decimal(text) * 100).to_integral_value())


def vetoed_entries(decisions) -> int:
    """How many entries a risk manager vetoed before they were sent: a strategy asks the gate first
    (``ctx.would_veto``) and records the TRADE it would have made as a SKIP whose reason starts
    ``risk:`` (see :func:`strikebench.strategies.spreads.decide_and_enter`), so no order exists for
    them and "Orders vetoed by risk" (orders the gate refused when sent) does not count them."""
    if not len(decisions):
        return 0
    return int(((decisions["action"] == "SKIP") & decisions["reason"].astype(str).str.startswith("risk:")).sum())


def _dollars(cents: int) -> float:
    return cents / 100.0


def journal_summary(journal, run: dict, run_dir=None) -> dict:
    """Every summary figure, computed from the journal's exact records."""
    run_id = run["run_id"]
    stored = json.loads(run["summary"]) if run.get("summary") else {}
    fills = journal.fills(run_id)
    trades = journal.trades(run_id)
    equity = journal.equity(run_id)
    decisions = journal.decision_frame(run_id)
    orders = journal.orders(run_id)

    initial_c = _cents(run["initial_cash"]) if run.get("initial_cash") else None
    cash_flow_c = sum(_cents(x) for x in fills["cash"]) if len(fills) else 0
    fees_c = sum(_cents(x) for x in fills["fees"]) if len(fills) else 0
    closed = trades[trades["realized_pnl"].notna()] if len(trades) else trades
    pnl_c = [_cents(x) for x in closed["realized_pnl"]] if len(closed) else []
    eq_c = [_cents(x) for x in equity["equity"]] if len(equity) else []
    final_cash_c = initial_c + cash_flow_c if initial_c is not None else None
    final_equity_c = eq_c[-1] if eq_c else final_cash_c
    series = ([initial_c] if initial_c is not None else []) + eq_c
    dd_c, peak = 0, None
    for v in series:
        peak = v if peak is None else max(peak, v)
        dd_c = max(dd_c, peak - v)
    daily_c = [b - a for a, b in zip(series, series[1:])]  # each session's change of equity, cents
    vetoed = 0
    if len(orders):
        vetoed = int(sum(1 for s, r in zip(orders["status"], orders["status_reason"])
                         if s == "rejected" and str(r).startswith("vetoed")))

    trips_frame = journal.breaker_trips(run_id) if hasattr(journal, "breaker_trips") else None
    trips = [{"rule": r.rule, "scope": r.scope, "tripped_at": r.tripped_at, "reason": r.reason,
              "figures": json.loads(r.figures), "resets": r.resets}
             for r in trips_frame.itertuples(index=False)] if trips_frame is not None else []

    per_strategy: dict[str, dict] = {}
    strategies = sorted(set(trades["strategy"]) | set(decisions["strategy"])) if len(trades) or len(decisions) else []
    for s in strategies:
        t = closed[closed["strategy"] == s] if len(closed) else closed
        p = [_cents(x) for x in t["realized_pnl"]] if len(t) else []
        credits = [Decimal(x) for x in t["entry_credit"]] if len(t) else []
        d = decisions[decisions["strategy"] == s] if len(decisions) else decisions
        fee_s = sum(_cents(x) for x in t["fees"]) if len(t) else 0
        per_strategy[s] = {
            "trades": len(p),
            "open_trades": int(((trades["strategy"] == s) & trades["closed_at"].isna()).sum()) if len(trades) else 0,
            "wins": sum(1 for x in p if x > 0),
            "win_rate": (sum(1 for x in p if x > 0) / len(p)) if p else None,
            "realized_pnl": _dollars(sum(p)),
            "fees": _dollars(fee_s),
            "avg_pnl": round(_dollars(sum(p)) / len(p), 2) if p else None,
            "avg_entry_credit": float(round(sum(credits) / len(credits), 4)) if credits else None,
            "worst_trade": _dollars(min(p)) if p else None,
            "best_trade": _dollars(max(p)) if p else None,
            "decisions": int(len(d)),
            "trade_decisions": int((d["action"] == "TRADE").sum()) if len(d) else 0,
            "skip_decisions": int((d["action"] == "SKIP").sum()) if len(d) else 0,
            "exit_reasons": dict(Counter(t["exit_reason"])) if len(t) else {},
        }

    summary = {k: v for k, v in stored.items() if k not in ("per_strategy", "exit_reasons")}
    summary.update({
        "run_id": run_id,
        "name": run["name"],
        "completed": bool(run["completed"]),
        "started_at": run["started_at"],
        "ended_at": run["ended_at"],
        "config_hash": run["config_hash"],
        "code_version": run["code_version"],
        "git_commit": run["git_commit"],
        "seed": run["seed"],
        "sessions": len(eq_c),
        "initial_cash": _dollars(initial_c) if initial_c is not None else None,
        "final_cash": _dollars(final_cash_c) if final_cash_c is not None else None,
        "final_equity": _dollars(final_equity_c) if final_equity_c is not None else None,
        "realized_pnl": _dollars(sum(pnl_c)),
        "fees": _dollars(fees_c),
        "trades": len(pnl_c),
        "open_trades": int(trades["closed_at"].isna().sum()) if len(trades) else 0,
        "win_rate": (sum(1 for x in pnl_c if x > 0) / len(pnl_c)) if pnl_c else None,
        "max_drawdown": _dollars(dd_c),
        "return_pct": _return_pct(initial_c, final_equity_c),
        "worst_day": _dollars(min(daily_c)) if daily_c else None,
        "best_day": _dollars(max(daily_c)) if daily_c else None,
        "sharpe": _sharpe(series),
        "decisions": int(len(decisions)),
        "vetoed_entries": vetoed_entries(decisions),
        "vetoed_orders": vetoed,
        "breaker_trips": trips,
        "approximated_settlements": (int(trades["settlement_note"].notna().sum())
                                     if "settlement_note" in trades.columns and len(trades) else 0),
        "exit_reasons": dict(Counter(closed["exit_reason"])) if len(closed) else {},
        "per_strategy": per_strategy,
        "source": "journal",
    })
    if run_dir is not None:
        summary["run_dir"] = str(_folder(run_dir))
    return summary


def _return_pct(initial_c: int | None, final_c: int | None) -> float | None:
    """Total return in percent of the initial cash, to 1e-6 percent (the cents are exact)."""
    if not initial_c or final_c is None:
        return None
    return round((final_c - initial_c) * 100 / initial_c, 6)


def _sharpe(series_c: list[int]) -> float | None:
    """Annualized Sharpe ratio of the daily returns (252 sessions a year, zero rate), to 1e-6."""
    if len(series_c) < 3:
        return None
    import numpy as np

    eq = np.asarray(series_c, dtype=float)
    r = eq[1:] / eq[:-1] - 1.0
    sd = float(np.std(r, ddof=1))
    if not sd > 0:
        return None
    return round(float(np.mean(r)) / sd * 252 ** 0.5, 6)


# ------------------------------------------------------------------- tables
def _trade_table(journal, run_id: str):
    import pandas as pd

    trades = journal.trades(run_id)
    legs = journal.trade_legs(run_id)
    by_trade: dict[str, list[str]] = {}
    for r in legs.itertuples(index=False):
        by_trade.setdefault(r.trade_id, []).append(f"{int(r.ratio):+d} {r.occ_symbol}")
    cols = ["trade_id", "strategy", "decision_id", "opened_at", "closed_at", "expiry", "contracts", "multiplier", "legs",
            "entry_credit", "exit_debit", "fees", "realized_pnl", "max_loss", "exit_reason"]
    if not len(trades):
        return pd.DataFrame(columns=cols)
    out = trades.copy()
    out["legs"] = [" ".join(by_trade.get(t, [])) for t in out["trade_id"]]
    return out[cols]


def _decision_table(journal, run_id: str):
    import pandas as pd

    rows = []
    for d in journal.decisions(run_id):
        cands = d["candidates"]
        chosen = cands[d["chosen"]] if d["chosen"] is not None and 0 <= d["chosen"] < len(cands) else None
        det = (chosen or {}).get("details") or {}
        rows.append({
            "decision_id": d["decision_id"], "decided_at": d["decided_at"], "strategy": d["strategy"],
            "action": d["action"], "reason": d["reason"], "chosen_expiry": d["chosen_expiry"],
            "chosen": chosen.get("description") if chosen else None,
            "short_strike": det.get("short_strike"), "long_strike": det.get("long_strike"),
            "short_delta": det.get("short_delta"), "credit": chosen.get("credit") if chosen else None,
            "score": chosen.get("score") if chosen else None, "candidates": len(cands),
            "snapshot_id": d["snapshot_id"], "snapshot_checksum": d["snapshot_checksum"],
            "context_id": d["context_id"], "ruleset_version": d["ruleset_version"],
        })
    cols = ["decision_id", "decided_at", "strategy", "action", "reason", "chosen_expiry", "chosen", "short_strike",
            "long_strike", "short_delta", "credit", "score", "candidates", "snapshot_id", "snapshot_checksum",
            "context_id", "ruleset_version"]
    return pd.DataFrame(rows, columns=cols)


# -------------------------------------------------------------------- plot
def _equity_png(journal, run: dict) -> bytes:
    """Equity (top) and drawdown (bottom), daily, as PNG bytes (matplotlib Agg, no pyplot state)."""
    # Figure + FigureCanvasAgg directly: no pyplot, so a caller's backend is never switched
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    eq = journal.equity(run["run_id"])
    days = [dt.date.fromisoformat(d) for d in eq["day"]] if len(eq) else []
    values = [_cents(x) / 100.0 for x in eq["equity"]] if len(eq) else []
    initial = _cents(run["initial_cash"]) / 100.0 if run.get("initial_cash") else (values[0] if values else 0.0)
    peak, dd = initial, []
    for v in values:
        peak = max(peak, v)
        dd.append(v - peak)

    fig = Figure(figsize=(10, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    title = f"{run['run_id']}" + ("" if run["completed"] else "  (INCOMPLETE RUN)")
    ax1.set_title(title, fontsize=11, loc="left")
    if values:
        ax1.plot(days, values, color="#1f5fa8", linewidth=1.4)
        ax1.axhline(initial, color="#888888", linewidth=0.8, linestyle="--")
        ax2.fill_between(days, dd, 0.0, color="#c0392b", alpha=0.45)
        ax2.plot(days, dd, color="#c0392b", linewidth=0.8)
    else:
        ax1.text(0.5, 0.5, "no completed session", transform=ax1.transAxes, ha="center", va="center")
    ax1.set_ylabel("equity ($)")
    ax2.set_ylabel("drawdown ($)")
    ax1.grid(True, alpha=0.3)
    ax2.grid(True, alpha=0.3)
    from matplotlib.ticker import FuncFormatter

    money = FuncFormatter(lambda v, _pos: f"{v:,.0f}")
    ax1.yaxis.set_major_formatter(money)
    ax2.yaxis.set_major_formatter(money)
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# -------------------------------------------------------------------- html
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222;max-width:1400px}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f8} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.neg{color:#b03a2e} .pos{color:#1e7b34} .warn{background:#fdecea;border:1px solid #e6a19b;padding:.6em 1em}
.meta{color:#666;font-size:.85em} img{max-width:100%;border:1px solid #eee}
"""


def _h(x) -> str:
    return html.escape("" if x is None else str(x))


def _fmt_money(v) -> str:
    if v is None:
        return ""
    return f"{v:+,.2f}" if isinstance(v, float) else _h(v)


def _num_cell(text, signed: bool = False) -> str:
    if text is None or (isinstance(text, float) and text != text):
        return '<td class="num"></td>'
    cls = "num"
    if signed:
        try:
            value = Decimal(str(text).replace(",", "").replace("+", ""))
            cls += " neg" if value < 0 else (" pos" if value > 0 else "")
        except Exception:
            pass
    return f'<td class="{cls}">{_h(text)}</td>'


def _html(run: dict, summary: dict, trades, decisions, png: bytes) -> str:
    rows = []
    labels = dict((k, (label, fmt)) for k, label, fmt in _ROWS)
    for key, (label, fmt) in labels.items():
        v = summary.get(key)
        if v is None:
            continue
        rows.append(f"<tr><th>{_h(label)}</th><td class='num'>{_h(fmt.format(v))}</td></tr>")
    rows.append(f"<tr><th>Final cash ($)</th><td class='num'>{_h(format(summary.get('final_cash') or 0, ',.2f'))}</td></tr>")
    summary_html = "<table>" + "".join(rows) + "</table>"

    strat_rows = []
    for s, f in summary.get("per_strategy", {}).items():
        wr = "" if f["win_rate"] is None else f"{f['win_rate']:.1%}"
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(f["exit_reasons"].items()))
        strat_rows.append(
            f"<tr><td>{_h(s)}</td><td class='num'>{f['decisions']}</td><td class='num'>{f['trade_decisions']}</td>"
            f"<td class='num'>{f['skip_decisions']}</td><td class='num'>{f['trades']}</td>"
            f"<td class='num'>{f['open_trades']}</td><td class='num'>{wr}</td>"
            f"{_num_cell(format(f['realized_pnl'], '+,.2f'), True)}{_num_cell(format(f['fees'], ',.2f'))}"
            f"{_num_cell('' if f['avg_pnl'] is None else format(f['avg_pnl'], '+,.2f'), True)}"
            f"{_num_cell('' if f['avg_entry_credit'] is None else format(f['avg_entry_credit'], '.2f'))}"
            f"{_num_cell('' if f['best_trade'] is None else format(f['best_trade'], '+,.2f'), True)}"
            f"{_num_cell('' if f['worst_trade'] is None else format(f['worst_trade'], '+,.2f'), True)}"
            f"<td>{_h(reasons)}</td></tr>")
    strat_html = (
        "<table><tr><th>strategy</th><th>decisions</th><th>TRADE</th><th>SKIP</th><th>closed trades</th>"
        "<th>open</th><th>win rate</th><th>realized P&amp;L ($)</th><th>fees, closed trades ($)</th><th>avg P&amp;L ($)</th>"
        "<th>avg credit (pts)</th><th>best ($)</th><th>worst ($)</th><th>exits</th></tr>"
        + "".join(strat_rows) + "</table>")

    trade_rows = []
    for t in trades.itertuples(index=False):
        trade_rows.append(
            f"<tr><td>{_h(t.trade_id)}</td><td>{_h(t.strategy)}</td><td>{_h(t.opened_at)}</td>"
            f"<td>{_h(t.closed_at)}</td><td>{_h(t.expiry)}</td><td class='num'>{_h(t.contracts)}</td>"
            f"<td>{_h(t.legs)}</td>{_num_cell(t.entry_credit)}{_num_cell(t.exit_debit)}{_num_cell(t.fees)}"
            f"{_num_cell(t.realized_pnl, True)}<td>{_h(t.exit_reason)}</td></tr>")
    trades_html = (
        "<table id='trades'><tr><th>trade</th><th>strategy</th><th>opened</th><th>closed</th><th>expiry</th>"
        "<th>contracts</th><th>legs</th><th>entry credit (pts)</th><th>exit debit (pts)</th><th>fees ($)</th>"
        "<th>realized P&amp;L ($)</th><th>exit</th></tr>" + "".join(trade_rows) + "</table>")

    skip_reasons = Counter(r for a, r in zip(decisions["action"], decisions["reason"]) if a == "SKIP") \
        if len(decisions) else Counter()
    skip_html = "<table><tr><th>SKIP reason</th><th>times</th></tr>" + "".join(
        f"<tr><td>{_h(r)}</td><td class='num'>{n}</td></tr>" for r, n in skip_reasons.most_common(15)) + (
        "" if skip_reasons else "<tr><td>no SKIP decision</td><td class='num'>0</td></tr>") + "</table>"

    trip_rows = "".join(
        f"<tr><td>{_h(str(t['tripped_at'])[:16])}</td><td>{_h(t['rule'])}</td><td>{_h(t['scope'])}</td>"
        f"<td>{_h(t['reason'])}</td><td>{_h(json.dumps(t['figures'], sort_keys=True))}</td><td>{_h(t['resets'])}</td></tr>"
        for t in summary.get("breaker_trips") or [])
    trips_html = ("<h2>Circuit-breaker trips</h2><table><tr><th>tripped at</th><th>breaker</th><th>scope</th>"
                  "<th>why</th><th>figures</th><th>resets</th></tr>" + trip_rows + "</table>") if trip_rows else ""

    warn = "" if run["completed"] else (
        "<p class='warn'><b>Incomplete run.</b> The journal says this run did not finish "
        "(it stopped early or crashed); figures cover what was recorded.</p>")
    meta = (f"config hash {_h(run['config_hash'])} &middot; strikebench {_h(run['code_version'])}"
            f"{' (' + _h(run['git_commit']) + ')' if run['git_commit'] else ''} &middot; seed {_h(run['seed'])}"
            f" &middot; started {_h(run['started_at'])} &middot; ended {_h(run['ended_at'])}")
    img = base64.b64encode(png).decode("ascii")
    config = (f"<h2>Config</h2><pre>{_h(run['config_yaml'])}</pre>" if run.get("config_yaml") else "")
    if run.get("config_resolved"):
        overrides = json.loads(run["config_overrides"]) if run.get("config_overrides") else []
        shown = ", ".join(f"<code>--set {_h(o)}</code>" for o in overrides) or "none"
        config += (f"<h2>Config the run used</h2><p class='meta'>after substitution and overrides ({shown})</p>"
                   f"<pre>{_h(run['config_resolved'])}</pre>")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>strikebench run {_h(run['run_id'])}</title><style>{_CSS}</style></head><body>"
        f"<h1>Run {_h(run['run_id'])}</h1><p class='meta'>{meta}</p>{warn}"
        f"<h2>Summary</h2>{summary_html}"
        f"<h2>Equity and drawdown</h2><img alt='equity and drawdown' src='data:image/png;base64,{img}'>"
        f"<h2>Per-strategy attribution</h2>{strat_html}"
        f"<h2>Why it skipped</h2>{skip_html}{trips_html}"
        f"<h2>Trades ({len(trades)})</h2>{trades_html}"
        f"{config}"
        "<p class='meta'>Money: dollars to the cent; credits and debits per spread in index points. "
        "Built from journal.sqlite alone.</p></body></html>")


# ------------------------------------------------------------------- write
def write_report(run_dir, *, extra_summary: dict | None = None, plots: bool = True, run_id: str | None = None,
                 out_dir=None) -> dict:
    """Rebuild a run folder's files from its journal alone; returns the summary written.

    ``extra_summary`` (figures the journal cannot know, e.g. Backtrader's analyzers) is
    first merged into the journal's stored summary, so a later rebuild keeps it.
    """
    from strikebench.userfiles import write_atomic

    if extra_summary:  # the run that just ended adds what only it knows (its own journal, opened for writing)
        from strikebench.journal import Journal, find_journal

        with Journal(find_journal(run_dir), create=False) as writable:
            writable.update_summary(writable.pick_run(run_dir)["run_id"], extra_summary)
    journal, run = open_run(run_dir, run_id)  # read-only, refused before anything is written when damaged
    try:
        # a journal URL names no folder: the files go to out_dir, by default ./RUN_ID
        folder = Path(out_dir) if out_dir is not None else (
            Path(run["run_id"]) if is_url(run_dir) else _folder(run_dir))
        summary = journal_summary(journal, run, folder)
        trades = _trade_table(journal, run["run_id"])
        decisions = _decision_table(journal, run["run_id"])
        files = {"trades.csv": trades.to_csv(index=False), "decisions.csv": decisions.to_csv(index=False),
                 "summary.json": json.dumps(summary, indent=2, default=str) + "\n"}
        if plots:
            png = _equity_png(journal, run)
            files["equity.png"] = png
            files["report.html"] = _html(run, summary, trades, decisions, png)
    finally:
        journal.close()
    from strikebench.userfiles import prepare_output_dir

    prepare_output_dir(folder, error=StrikebenchError)  # a read-only folder: refused before the first file
    if out_dir is not None or is_url(run_dir):
        folder.mkdir(parents=True, exist_ok=True)  # --out (or ./RUN_ID for a URL) may be new
    for name, data in files.items():  # each whole or not at all: a temporary file, then a rename
        write_atomic(folder / name, data)
    return summary


# --------------------------------------------------------------- decisions
def _fmt(v, spec: str = "") -> str:
    if v is None:
        return ""
    try:
        return format(float(v), spec) if spec else str(v)
    except (TypeError, ValueError):
        return str(v)


def print_decision_days(run_dir, console: Console | None = None, run_id: str | None = None) -> None:
    """Days that have decisions, with TRADE/SKIP counts (``decisions RUN_DIR`` without ``--date``)."""
    console = console or Console()
    journal, run = open_run(run_dir, run_id)
    try:
        rows = journal.execute(
            "SELECT substr(decided_at, 1, 10) AS day, action, COUNT(*) AS n FROM trade_decisions WHERE run_id = ?"
            " GROUP BY day, action ORDER BY day", (run["run_id"],))
    finally:
        journal.close()
    days: dict[str, Counter] = {}
    for r in rows:
        days.setdefault(r["day"], Counter())[r["action"]] += r["n"]
    table = Table(title=escape(f"run {run['run_id']}: decisions per day (pick one with --date)"),
                  title_justify="left", header_style="bold")
    for c in ("day", "TRADE", "SKIP", "EXIT"):
        table.add_column(c, justify="right" if c != "day" else "left")
    for day, c in days.items():
        table.add_row(day, str(c.get("TRADE", 0)), str(c.get("SKIP", 0)), str(c.get("EXIT", 0)))
    console.print(table)


def print_decisions(run_dir, day: dt.date | str, console: Console | None = None, run_id: str | None = None) -> int:
    """Every decision of one day: time, strategy, action, reason, expiry and each candidate."""
    console = console or Console()
    journal, run = open_run(run_dir, run_id)
    try:
        rows = journal.decisions(run["run_id"], str(day))
        for d in rows:  # what a scoring risk manager (ml_gate) said about the decision's entry
            notes = (journal.load_context(d["context_id"]) if d.get("context_id") else {}).get("risk_notes") or {}
            d["risk_notes"] = notes if isinstance(notes, dict) else {}
    finally:
        journal.close()
    if not rows:
        raise StrikebenchError(f"run {run['run_id']} has no decision on {day}; "
                               f"`strikebench decisions {run_dir}` lists the days that have some")
    from rich import box

    console.print(Text(f"run {run['run_id']}: {len(rows)} decision(s) on {day}", style="bold"))
    for d in rows:
        style = {"TRADE": "bold green", "SKIP": "bold yellow", "EXIT": "bold cyan"}.get(d["action"], "bold")
        head = Text.assemble((d["decided_at"][11:16], "bold"), "  ", (d["strategy"], "cyan"), "  ",
                             (d["action"], style))
        if d["chosen_expiry"]:
            head.append(f"  expiry {d['chosen_expiry']}")
        head.append(f"  {d['reason'] or ''}")
        console.print()
        console.print(head)
        console.print(Text(f"       id {d['decision_id']}  snapshot {d['snapshot_id']}", style="dim"))
        for rule, note in d["risk_notes"].items():
            if isinstance(note, dict) and note.get("reason"):
                verdict = "VETO" if note.get("vetoed") else "pass"
                console.print(Text(f"       {rule}: {verdict}: {note['reason']}", style="dim"))
        cands = d["candidates"]
        if not cands:
            console.print(Text("       no candidates", style="dim"))
            continue
        table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), header_style="bold", pad_edge=False)
        table.add_column("", no_wrap=True)
        table.add_column("candidate")
        table.add_column("expiry", no_wrap=True)
        table.add_column("short/long", no_wrap=True)
        table.add_column("Δ short/long", no_wrap=True)
        table.add_column("credit", justify="right", no_wrap=True)
        table.add_column("score")
        for i, c in enumerate(cands):
            det = c.get("details") or {}
            chosen = d["chosen"] == i
            strikes = (f"{_fmt(det.get('short_strike'), 'g')}/{_fmt(det.get('long_strike'), 'g')}"
                       if "short_strike" in det else "")
            deltas = (f"{_fmt(det.get('short_delta'), '.3f')}/{_fmt(det.get('long_delta'), '.3f')}"
                      if "short_delta" in det else "")
            score = (Text(_fmt(c.get("score"), ".4f"), style="bold" if chosen else "")
                     if c.get("score") is not None else Text(str(det.get("rejected", "")), style="dim"))
            label = (f"{det['dte']}DTE {det.get('right', '')}".strip() if "short_strike" in det and "dte" in det
                     else str(c.get("description", "")))
            table.add_row(Text("▶", style="bold green") if chosen else "",
                          Text(label, style="bold" if chosen else ""),
                          escape(str(det.get("expiry", ""))), strikes, deltas, _fmt(c.get("credit"), ".2f"), score)
        console.print(table)
    return len(rows)


# ------------------------------------------------------------------- replay
def load_config_text(text: str, overrides=(), registry=None, *, label: str = "stored config"):
    """:func:`strikebench.config.load_config` on YAML text (written to a temporary file)."""
    from strikebench.config import load_config

    with tempfile.TemporaryDirectory(prefix="strikebench-config-") as tmp:
        path = os.path.join(tmp, "config.yaml")
        Path(path).write_text(text, encoding="utf-8")
        try:
            return load_config(path, overrides, registry=registry)
        except StrikebenchError as exc:
            exc.args = (str(exc).replace(path, label),)
            raise


@dataclass
class ReplayResult:
    run_id: str
    decision_id: str
    strategy: str
    decided_at: str
    snapshot_id: int
    snapshot_checksum: str
    snapshot_rows: int
    context: dict
    stored: dict
    replayed: dict
    same: bool
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _rebuild_strategy(run: dict, strategy_id: str):
    """The strategy as the run configured it: its stored YAML through load_config, and the
    parameters the run actually used (which include any --set overrides)."""
    from strikebench.journal import JournalError
    from strikebench.plugin_manager import get_plugin_manager

    registry = get_plugin_manager().registry
    notes: list[str] = []
    from_yaml = None
    if run.get("config_yaml"):
        try:
            resolved = load_config_text(run["config_yaml"], registry=registry,
                                        label=f"run {run['run_id']} config")
            from_yaml = next((rp for rp in resolved.strategies if rp.instance_id == strategy_id), None)
        except StrikebenchError as exc:
            notes.append(f"the stored config YAML no longer loads ({exc}); using the stored strategy parameters")
    stored = {s["id"]: s for s in json.loads(run["strategies"])} if run.get("strategies") else {}
    if strategy_id in stored:
        s = stored[strategy_id]
        entry = registry.get("strategy", s["name"])
        if entry is None:
            raise JournalError(f"strategy '{s['name']}' (id {strategy_id}) is not installed; cannot replay")
        try:
            params = entry.params_model.model_validate(s["params"])
        except Exception as exc:
            raise JournalError(f"strategy '{s['name']}' no longer accepts the run's parameters: "
                               f"{' '.join(str(exc).split())}") from None
        if from_yaml is not None and from_yaml.params.model_dump(mode="json") != params.model_dump(mode="json"):
            notes.append("the run's strategy parameters differ from its YAML (--set overrides); "
                         "replaying with the parameters the run used")
        return entry.build(params), notes
    if from_yaml is not None:
        return from_yaml.build(), notes
    raise JournalError(f"run {run['run_id']} stored no config for strategy '{strategy_id}'; cannot rebuild it")


def _normalized(action, reason, candidates, chosen) -> dict:
    from strikebench.journal import candidates_json

    return {"action": str(action), "reason": str(reason or ""), "chosen": None if chosen is None else int(chosen),
            "candidates": json.loads(candidates_json(candidates))}


def _compare(stored: dict, replayed: dict) -> tuple[bool, list[str], list[str]]:
    diffs, notes = [], []
    if stored["chosen"] != replayed["chosen"]:
        diffs.append(f"chosen candidate: {stored['chosen']} stored, {replayed['chosen']} replayed")
    sc, rc = stored["candidates"], replayed["candidates"]
    if len(sc) != len(rc):
        diffs.append(f"candidates: {len(sc)} stored, {len(rc)} replayed")
    for i, (a, b) in enumerate(zip(sc, rc)):
        if a != b:
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            if "details" in keys:
                da, db = a.get("details") or {}, b.get("details") or {}
                keys = [k for k in keys if k != "details"] + [f"details.{k}" for k in sorted(set(da) | set(db))
                                                              if da.get(k) != db.get(k)]
            diffs.append(f"candidate {i} ({a.get('description')}): differs in {', '.join(keys)}")
            break
    vetoed = (stored["action"] == "SKIP" and stored["reason"].startswith("risk:") and replayed["action"] == "TRADE")
    if vetoed and not diffs:
        notes.append("the run turned this TRADE into a SKIP on a risk veto (portfolio state at the time, "
                     "not part of the pure evaluation); the evaluation itself is the same")
    else:
        if stored["action"] != replayed["action"]:
            diffs.append(f"action: {stored['action']} stored, {replayed['action']} replayed")
        if stored["reason"] != replayed["reason"]:
            diffs.append(f"reason: {stored['reason']!r} stored, {replayed['reason']!r} replayed")
    return not diffs, diffs, notes


def replay_decision(run_dir, decision_id: str, run_id: str | None = None) -> ReplayResult:
    """Re-run one decision from its stored snapshot (checksum verified) and context."""
    from strikebench.journal import JournalError

    journal, run = open_run(run_dir, run_id)
    try:
        d = journal.decision(decision_id, run_id=run["run_id"])
        if d["snapshot_id"] is None:
            if d["action"] == "SKIP" and str(d["reason"]).startswith("risk:") and not d["candidates"]:
                raise JournalError(f"decision {decision_id} was a SKIP before any chain was built: a risk rule blocked "
                                   f"every entry ({d['reason']}); there is no evaluation to replay (a run with "
                                   f"journal.blocked_decisions: full evaluates and stores such decisions)")
            raise JournalError(f"decision {decision_id} saw no chain snapshot; there is nothing to replay")
        info = journal.snapshot_info(d["snapshot_id"])
        snapshot = journal.load_snapshot(d["snapshot_id"], verify=False)
        if snapshot.checksum != info["checksum"] or (d["snapshot_checksum"] and snapshot.checksum != d["snapshot_checksum"]):
            raise JournalError(
                f"decision {decision_id}: stored snapshot {d['snapshot_id']} checksum mismatch (decision saw "
                f"{(d['snapshot_checksum'] or info['checksum'])[:16]}..., the stored snapshot hashes to "
                f"{snapshot.checksum[:16]}...); refusing to replay on different data")
        context = journal.load_context(d["context_id"]) if d["context_id"] is not None else {}
    finally:
        journal.close()

    strategy, notes = _rebuild_strategy(run, d["strategy"])
    evaluate = getattr(strategy, "evaluate", None)
    if not callable(evaluate):
        raise JournalError(f"strategy '{d['strategy']}' ({type(strategy).__name__}) has no "
                           f"evaluate(snapshot, context) method, so its decisions cannot be replayed")
    try:
        result = evaluate(snapshot, dict(context))
    except StrikebenchError:
        raise
    except Exception as exc:
        raise JournalError(f"strategy '{d['strategy']}'.evaluate raised {type(exc).__name__}: "
                           f"{' '.join(str(exc).split())}") from None
    if isinstance(result, tuple) and len(result) == 4:
        action, reason, candidates, chosen = result
    else:  # a Decision-like object
        action, reason = getattr(result, "action"), getattr(result, "reason", "")
        candidates, chosen = getattr(result, "candidates", ()), getattr(result, "chosen", None)
    stored = {"action": d["action"], "reason": d["reason"], "chosen": d["chosen"], "candidates": d["candidates"]}
    replayed = _normalized(action, reason, candidates, chosen)
    same, diffs, more = _compare(stored, replayed)
    if d["ruleset_version"] and getattr(strategy, "ruleset_version", d["ruleset_version"]) != d["ruleset_version"]:
        notes.append(f"ruleset version: {d['ruleset_version']} at the run, "
                     f"{getattr(strategy, 'ruleset_version')} now")
    return ReplayResult(run_id=run["run_id"], decision_id=decision_id, strategy=d["strategy"],
                        decided_at=d["decided_at"], snapshot_id=int(d["snapshot_id"]),
                        snapshot_checksum=snapshot.checksum, snapshot_rows=len(snapshot), context=context,
                        stored=stored, replayed=replayed, same=same, differences=diffs, notes=notes + more)


def print_replay(result: ReplayResult, console: Console | None = None) -> None:
    console = console or Console()
    console.print(Text.assemble(("decision ", "bold"), result.decision_id, f"  ({result.strategy} at "
                                f"{result.decided_at}, run {result.run_id})"))
    console.print(f"snapshot {result.snapshot_id}: {result.snapshot_rows:,} quotes, checksum "
                  f"{result.snapshot_checksum[:16]}... verified", highlight=False)
    console.print(Text("context: " + json.dumps(result.context, sort_keys=True)), highlight=False)
    table = Table(header_style="bold", title_justify="left")
    table.add_column("")
    table.add_column("stored")
    table.add_column("replayed")
    s, r = result.stored, result.replayed

    def chosen_text(x):
        c = x["candidates"]
        if x["chosen"] is None:
            return "none"
        return f"{x['chosen']}: {c[x['chosen']].get('description')}" if 0 <= x["chosen"] < len(c) else str(x["chosen"])

    table.add_row("action", s["action"], r["action"])
    table.add_row("reason", escape(s["reason"]), escape(r["reason"]))
    table.add_row("chosen", escape(chosen_text(s)), escape(chosen_text(r)))
    table.add_row("candidates", str(len(s["candidates"])), str(len(r["candidates"])))
    console.print(table)
    cands = Table(title="replayed candidates", title_justify="left", header_style="bold")
    for col in ("#", "candidate", "credit", "score (or why not)", "matches stored"):
        cands.add_column(col)
    for i, c in enumerate(r["candidates"]):
        same = i < len(s["candidates"]) and s["candidates"][i] == c
        cands.add_row(str(i), escape(("▶ " if r["chosen"] == i else "  ") + str(c.get("description", ""))),
                      _fmt(c.get("credit"), ".2f"),
                      _fmt(c.get("score"), ".4f") if c.get("score") is not None
                      else Text(str((c.get("details") or {}).get("rejected", "")), style="dim"),
                      Text("yes", style="green") if same else Text("NO", style="bold red"))
    if r["candidates"]:
        console.print(cands)
    for n in result.notes:
        console.print(Text("note: " + n, style="dim"))
    for d in result.differences:
        console.print(Text("difference: " + d, style="red"))
    console.print(Text("same result", style="bold green") if result.same else Text("DIFFERENT", style="bold red"))
