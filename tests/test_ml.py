"""The ML trade gate: dataset labels (hand-checked from quotes), walk-forward without look-ahead,
the gate's veto, determinism, bad input. One small synthetic market (three weeks), built once."""

from __future__ import annotations

import io
import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from strikebench.cli import main

CONFIG = """\
name: mltest
data: {{source: synthetic, seed: 7, start: {start}, end: {end}, scenario: default}}
broker:
  name: backtest
  params: {{initial_cash: 100000}}
  fill_model: {{name: mid_slippage, params: {{k: 0.30}}}}
  commission: {{name: cboe_retail}}
strategies:
  - name: credit_vertical
    params: {{dte_targets: [3, 7], entry_times: ["10:00", "12:00"], short_deltas: [0.10, 0.20], width: 25,
              take_profit_pct: 0.5, stop_multiple: 2.0}}
risk:
  - name: max_open_trades
    params: {{limit: 1}}
{extra}
output: {{dir: {out}}}
"""
START, END = "2023-01-03", "2023-01-24"


def _config(tmp: Path, *, start=START, end=END, extra="") -> Path:
    path = tmp / f"cfg-{start}-{end}-{abs(hash(extra)) % 10**6}.yaml"
    path.write_text(CONFIG.format(start=start, end=end, out=tmp / "runs", extra=extra))
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("ml")


@pytest.fixture(scope="module")
def run_dir(work):
    assert main(["backtest", str(_config(work))]) == 0
    (folder,) = (work / "runs").iterdir()
    return folder


@pytest.fixture(scope="module")
def dataset(run_dir, work):
    out = work / "data.parquet"
    assert main(["ml", "dataset", str(run_dir), "-o", str(out)]) == 0
    from strikebench.ml.dataset import read_dataset

    df, meta = read_dataset(out)
    return out, df, meta


# ----------------------------------------------------------------------------- labels by hand
def _grid_up(x: float) -> Decimal:  # SPX complex orders: 0.05, rounded up (worse for the trader)
    return (Decimal(repr(float(x))) / Decimal("0.05")).quantize(Decimal(1), rounding=ROUND_CEILING) * Decimal("0.05")


def _grid_down(x: float) -> Decimal:
    return (Decimal(repr(float(x))) / Decimal("0.05")).quantize(Decimal(1), rounding=ROUND_FLOOR) * Decimal("0.05")


def _price(bs, as_, bl, al, sign: int, k=0.30) -> Decimal | None:
    """Net price of buying the combo sign x (short leg), -sign x (long leg) at mid + k x width, on the grid,
    kept between the two naturals and inside [-25, 25] (a 25-wide vertical); None when a quote is unusable."""
    if not all(np.isfinite([bs, as_, bl, al])) or as_ <= 0 or al <= 0 or bs > as_ or bl > al:
        return None
    if sign < 0 and bs <= 0 or sign > 0 and bl <= 0:  # a sold leg needs a bid
        return None
    mid = sign * (bs + as_) / 2 - sign * (bl + al) / 2
    raw = mid + k * ((as_ - bs) + (al - bl))
    natural = (sign * (as_ if sign > 0 else bs)) - sign * (bl if sign > 0 else al)
    far = (sign * (bs if sign > 0 else as_)) - sign * (al if sign > 0 else bl)
    p = _grid_up(raw)
    lo, hi = _grid_up(far), _grid_down(natural)
    if lo <= hi:
        p = min(max(p, lo), hi)
    return min(max(p, Decimal(-25) if sign < 0 else Decimal(0)), Decimal(0) if sign < 0 else Decimal(25))


def _by_hand(market, row) -> tuple[str, int]:
    """(exit reason, P&L in cents) of a put credit vertical row, from the market's quotes alone."""
    from strikebench.options.contracts import OptionContract

    short_k, long_k = (float(s) for s in row["description"].split()[-1].split("/"))
    expiry = pd.Timestamp(row["expiry"]).date()
    short, long = OptionContract("SPXW", expiry, short_k, "P"), OptionContract("SPXW", expiry, long_k, "P")
    at = pd.Timestamp(row["decided_at"]).tz_convert("America/New_York")
    limit = -Decimal(repr(float(row["limit_credit"])))
    fees = Decimal("2.56")  # 2 legs x (0.65 + 0.60 + 0.03)
    entry = credit = None
    for day in [d.date() for d in market.sessions() if at.date() <= d.date() <= expiry]:
        q = market.leg_quotes([short, long], day)
        times = pd.to_datetime(q.times, utc=True).tz_convert("America/New_York")
        for i, t in enumerate(times):
            bs, as_, bl, al = q.bid[i, 0], q.ask[i, 0], q.bid[i, 1], q.ask[i, 1]
            if entry is None:
                if t < at:
                    continue
                p = _price(bs, as_, bl, al, -1)
                if p is not None and p <= limit:
                    entry, credit, entered_at = p, -p, t
                continue
            if day == entered_at.date() and t <= entered_at:  # the first check is the bar after the entry
                continue
            cost = _price(bs, as_, bl, al, +1)
            if cost is None:
                continue
            if cost <= credit / 2:
                return "take_profit", int(((credit - cost) * 100 - 2 * fees) * 100)
            if cost >= 2 * credit:
                return "stop_loss", int(((credit - cost) * 100 - 2 * fees) * 100)
    settle = float(market.settlement_value(short))
    payout = Decimal(repr(round(max(short_k - settle, 0.0), 4))) - Decimal(repr(round(max(long_k - settle, 0.0), 4)))
    return "settlement", int(((credit - payout) * 100 - fees) * 100)


def test_labels_match_the_outcome_derived_from_quotes_by_hand(dataset, work):
    from strikebench.report import load_config_text

    _, df, _ = dataset
    cf = df[df["counterfactual"] & df["resolved"]]
    picks = pd.concat([cf[cf["exit_reason"] == r].head(2) for r in ("stop_loss", "take_profit", "settlement")])
    assert {"stop_loss", "take_profit"} <= set(picks["exit_reason"])
    market = load_config_text(_config(work, end="2023-02-10").read_text()).data.build().open()
    for _, row in picks.iterrows():
        reason, cents = _by_hand(market, row)
        assert (reason, cents) == (row["exit_reason"], int(row["pnl_cents"])), row["description"]
        assert bool(row["stop"]) == (reason == "stop_loss")


def test_entered_rows_carry_the_journal_trade_and_the_simulation_reproduces_it(dataset, run_dir):
    from strikebench.journal import find_journal, open_read_only

    _, df, meta = dataset
    with open_read_only(find_journal(run_dir)) as j:
        run_id = j.runs()[0]["run_id"]
        trades = j.trades(run_id)
    closed = trades[trades["closed_at"].notna()]
    entered = df[df["label_source"] == "journal"]
    assert len(entered) == len(closed) > 3
    cents = {r.decision_id: int(Decimal(r.realized_pnl) * 100) for r in closed.itertuples()}
    assert {r.decision_id: int(r.pnl_cents) for r in entered.itertuples()} == cents
    assert entered["sim_agrees"].all()  # the counterfactual simulator books the engine's trades to the cent
    assert not entered["counterfactual"].any() and df[~df["entered"]]["counterfactual"].all()
    # one row per tradeable candidate, with the features the docs list
    assert set(meta["candidate_features"]) <= set(df.columns) and "vix" in df.columns
    assert df["holding_minutes"].dropna().gt(0).all()
