"""The README's main job: a year of credit verticals on the synthetic market, reconciled to the cent."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from strikebench.feeds.synthetic import SyntheticMarket
from strikebench.strategies.credit_vertical import CreditVertical

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "spx_credit_vertical.yaml"


@pytest.fixture(scope="module")
def year_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    proc = subprocess.run(
        [sys.executable, "-m", "strikebench.cli", "backtest", str(CONFIG), "--quiet", "--set", f"output.dir={out}"],
        capture_output=True, text=True, env={"COLUMNS": "200", "NO_COLOR": "1", "PATH": "", "MPLBACKEND": "Agg"},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = list(out.iterdir())
    return run_dir


def test_the_year_reconciles_to_the_cent(year_run):
    db = sqlite3.connect(year_run / "journal.sqlite")
    trades = pd.read_sql("select * from trades", db)
    closed = trades[trades.closed_at.notna()]
    assert len(closed) > 50
    summary = json.loads((year_run / "summary.json").read_text())
    assert summary["completed"] is True
    realized = sum(Decimal(x) for x in closed.realized_pnl)
    # cash = initial + realized of closed trades + cash flows of trades still open (their fills)
    fills = pd.read_sql("select * from fills", db)
    open_ids = set(trades[trades.closed_at.isna()].trade_id)
    open_flows = sum(Decimal(x) for x in fills[fills.trade_id.isin(open_ids)].cash) if open_ids else Decimal(0)
    assert Decimal(str(summary["final_cash"])) - Decimal(str(summary["initial_cash"])) == realized + open_flows
    # every closed trade: Σ its fills' cash flows (premiums, fees, settlement) = its realized P&L
    per_trade = fills.groupby("trade_id").cash.apply(lambda s: sum(Decimal(x) for x in s))
    for row in closed.itertuples():
        assert per_trade[row.trade_id] == Decimal(row.realized_pnl), row.trade_id
    # the guardrails held: one open trade at a time, one new trade a day
    opened = pd.to_datetime(closed.opened_at, utc=True)
    assert opened.dt.tz_convert("America/New_York").dt.date.value_counts().max() == 1
    spans = sorted(zip(pd.to_datetime(trades.opened_at, utc=True), pd.to_datetime(trades.closed_at, utc=True)))
    for (o1, c1), (o2, _) in zip(spans, spans[1:]):
        assert o2 >= c1
    # entries only at the three decision times
    times = set(opened.dt.tz_convert("America/New_York").dt.strftime("%H:%M"))
    assert times <= {"10:00", "11:00", "12:00"}


def test_the_report_files_exist_and_parse(year_run):
    trades = pd.read_csv(year_run / "trades.csv")
    decisions = pd.read_csv(year_run / "decisions.csv")
    assert {"entry_credit", "exit_debit", "realized_pnl", "exit_reason"} <= set(trades.columns)
    assert set(decisions.action) <= {"TRADE", "SKIP"} and len(decisions) == 250 * 3
    assert (year_run / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (year_run / "report.html").read_text()
    assert "<table" in html and "http://" not in html and "https://" not in html
    summary = json.loads((year_run / "summary.json").read_text())
    assert summary["trades"] == len(trades[trades.closed_at.notna()])


def test_a_decision_replays_from_the_journal(year_run):
    decisions = pd.read_csv(year_run / "decisions.csv")
    trade = decisions[decisions.action == "TRADE"].iloc[0]
    proc = subprocess.run([sys.executable, "-m", "strikebench.cli", "replay-decision", str(year_run),
                           trade.decision_id], capture_output=True, text=True,
                          env={"COLUMNS": "200", "NO_COLOR": "1", "PATH": ""})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "same result" in proc.stdout


def test_the_stored_slice_decides_like_the_whole_chain():
    market = SyntheticMarket(seed=7, start="2023-03-01", end="2023-03-10")
    strat = CreditVertical()
    for day in market.sessions()[:5]:
        full = market.snapshot("SPX", pd.Timestamp(f"{day.date()} 10:00", tz="America/New_York"))
        part = full.subset(strat.relevant_rows(full))
        assert len(part) < len(full) / 3
        a = strat.evaluate(full, {"k": 0.3})
        b = strat.evaluate(part, {"k": 0.3})
        assert (a[0], a[1], a[3]) == (b[0], b[1], b[3])
        assert [c.credit for c in a[2]] == [c.credit for c in b[2]]
