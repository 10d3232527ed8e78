"""The live runtime against the paper broker: a replayed day end to end, a restart at every state of the
order life-cycle (the crash is an exception raised at that point; the SIGKILL test does it for real), and
every guardrail refusing an order with a journaled reason."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import yaml

from strikebench.brokers.paper import PaperAccount
from strikebench.errors import StrikebenchError
from strikebench.live.guards import GuardConfig, Guards
from strikebench.live.launch import paper_status, request_flatten, request_kill, start_paper
from strikebench.live.runtime import LiveRuntime
from strikebench.plugins import journal as journal_plugin
from test_paper_sigkill import check_run

BASE = {
    "name": "live",
    "data": {"source": "synthetic", "seed": 42, "start": "2023-03-14", "end": "2023-03-14", "scenario": "default"},
    "broker": {"name": "paper", "params": {"initial_cash": 100000, "latency_seconds": 2, "seed": 5},
               "fill_model": {"name": "mid_slippage", "params": {"k": 0.30}}, "commission": {"name": "cboe_retail"}},
    "strategies": [{"name": "credit_vertical", "params": {
        "dte_targets": [3, 5, 7], "entry_times": ["09:45", "10:30", "11:30", "13:00"], "short_deltas": [0.10, 0.20],
        "width": 25, "take_profit_pct": 0.10, "stop_multiple": 1.2, "contracts": 3}}],
    "risk": [{"name": "max_open_trades", "params": {"limit": 2}}],
    "output": {"dir": "runs"},
}


class Crash(BaseException):
    """Stands in for the process dying at that point (nothing after it runs)."""


def _config(tmp_path, **broker_params):
    cfg = yaml.safe_load(yaml.safe_dump(BASE))
    cfg["broker"]["params"].update(broker_params)
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _run(cfg, run_dir, **kw):
    return start_paper(cfg, clock="replay", speed=0, run_dir=str(run_dir), panel=False, **kw)


def _journal(run_dir, sql, params=()):
    db = sqlite3.connect(run_dir / "journal.sqlite")
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def _events(run_dir, order_id):
    return [(p, s) for p, s in _journal(run_dir, "SELECT previous, status FROM order_events WHERE order_id = ?"
                                                 " ORDER BY event_id", (order_id,))]


def _log(run_dir, kind=None):
    sql = "SELECT kind, message FROM live_log" + (" WHERE kind = ?" if kind else "")
    return _journal(run_dir, sql, (kind,) if kind else ())


# --------------------------------------------------------------- end to end
def test_replayed_day_end_to_end(tmp_path):
    cfg = _config(tmp_path, partial_fill_probability=0.5, rejection_probability=0.1)
    run_dir = tmp_path / "day"
    summary = _run(cfg, run_dir)
    assert summary["completed"] and summary["bars"] == 390
    counts = check_run(run_dir)
    assert counts["orders"] >= 4 and counts["fills"] > counts["orders"] // 2
    first = _journal(run_dir, "SELECT order_id FROM orders ORDER BY created_at LIMIT 1")[0][0]
    path = _events(run_dir, first)
    assert path[0] == ("new", "submitted") and path[1] == ("submitted", "accepted")
    assert path[-1][1] == "filled"
    # the journal knows the order before the broker acknowledged it: submitted is journaled at the bar,
    # accepted at the bar close + latency
    at = dict(_journal(run_dir, "SELECT status, at FROM order_events WHERE order_id = ?", (first,)))
    assert pd.Timestamp(at["accepted"]) - pd.Timestamp(at["submitted"]) == pd.Timedelta(seconds=62)
    status = paper_status(run_dir)
    assert status["completed"] and not status["working_orders"]


# ------------------------------------------------------- restart per state
def _crash_then_resume(tmp_path, monkeypatch, patch, **broker_params):
    cfg = _config(tmp_path, **broker_params)
    run_dir = tmp_path / "crash"
    with monkeypatch.context() as m:
        patch(m)
        with pytest.raises(Crash):
            _run(cfg, run_dir)
    journal_plugin.discard(run_dir.name)  # a new process starts with nothing open
    summary = _run(cfg, run_dir)
    assert summary["completed"]
    check_run(run_dir)
    return run_dir


def test_restart_after_journaling_before_sending(tmp_path, monkeypatch):
    def patch(m):
        def place(self, order, now, *, tag=""):
            raise Crash()
        m.setattr(PaperAccount, "place", place)

    run_dir = _crash_then_resume(tmp_path, monkeypatch, patch)
    first = _journal(run_dir, "SELECT order_id, status, status_reason FROM orders ORDER BY created_at LIMIT 1")[0]
    assert first[1] == "rejected" and "never reached the broker" in first[2]
    assert any("never reached the broker" in msg for _, msg in _log(run_dir, "reconcile"))


def test_restart_after_sending_before_the_ack(tmp_path, monkeypatch):
    original = PaperAccount.place

    def patch(m):
        def place(self, order, now, *, tag=""):
            original(self, order, now, tag=tag)
            raise Crash()
        m.setattr(PaperAccount, "place", place)

    run_dir = _crash_then_resume(tmp_path, monkeypatch, patch)
    first = _journal(run_dir, "SELECT order_id, status FROM orders ORDER BY created_at LIMIT 1")[0]
    assert first[1] == "filled"  # found by its client id after the restart, then followed to its fill
    assert _log(run_dir, "idempotent")  # the re-run bar made the same order: looked up, not resent


def test_restart_when_the_place_call_times_out(tmp_path):
    cfg = _config(tmp_path, timeout_probability=1.0)
    run_dir = tmp_path / "timeout"
    assert _run(cfg, run_dir)["completed"]
    counts = check_run(run_dir)
    assert counts["orders"] >= 1
    assert any("the broker has it" in msg for _, msg in _log(run_dir, "send"))


def test_restart_while_working(tmp_path, monkeypatch):
    original = LiveRuntime._apply_status

    def patch(m):
        def apply(self, order, status, reason, at):
            original(self, order, status, reason, at)
            if order.status.value == "accepted":
                raise Crash()
        m.setattr(LiveRuntime, "_apply_status", apply)

    run_dir = _crash_then_resume(tmp_path, monkeypatch, patch, latency_seconds=2)
    first = _journal(run_dir, "SELECT order_id FROM orders ORDER BY created_at LIMIT 1")[0][0]
    assert _events(run_dir, first)[:3] == [("new", "submitted"), ("submitted", "accepted"), ("accepted", "filled")]


def test_restart_when_partially_filled(tmp_path, monkeypatch):
    original = LiveRuntime._apply_fill

    def patch(m):
        def apply(self, order, fill):
            original(self, order, fill)
            if order.status.value == "partially_filled":
                raise Crash()
        m.setattr(LiveRuntime, "_apply_fill", apply)

    run_dir = _crash_then_resume(tmp_path, monkeypatch, patch, partial_fill_probability=1.0)
    first = _journal(run_dir, "SELECT order_id, status, filled_quantity FROM orders ORDER BY created_at LIMIT 1")[0]
    assert first[1:] == ("filled", 3)
    assert len(_journal(run_dir, "SELECT fill_id FROM fills WHERE order_id = ?", (first[0],))) >= 2


def test_restart_after_the_broker_filled_before_the_journal_recorded_it(tmp_path, monkeypatch):
    from strikebench.journal import Journal

    def patch(m):
        def record_fill(self, run_id, order, fill):
            raise Crash()
        m.setattr(Journal, "record_fill", record_fill)

    run_dir = _crash_then_resume(tmp_path, monkeypatch, patch)
    assert any("applied from the broker's records" in msg for _, msg in _log(run_dir, "reconcile"))


def test_a_reran_bar_does_not_send_its_order_again(tmp_path, monkeypatch):
    """Crash after the bar's order was sent and filled, before the bar's checkpoint: the bar is re-run, the
    strategy makes the same order (same client id) and the runtime does not send it again."""
    from strikebench.live.runtime import LiveState

    original = LiveState.set

    def patch(m):
        def set_(self, key, value):
            if key == "bar_done" and _journal_has_fill(self):
                raise Crash()
            original(self, key, value)
        m.setattr(LiveState, "set", set_)

    def _journal_has_fill(state):
        return bool(state.query("SELECT 1 FROM fills LIMIT 1"))

    cfg = _config(tmp_path, latency_seconds=0)
    run_dir = tmp_path / "rerun"
    with monkeypatch.context() as m:
        patch(m)
        with pytest.raises(Crash):
            _run(cfg, run_dir)
    journal_plugin.discard(run_dir.name)
    assert _run(cfg, run_dir)["completed"]
    check_run(run_dir)
    assert any("not sent again" in msg for _, msg in _log(run_dir, "idempotent"))


# ---------------------------------------------------------------- guardrails
def _refusals(run_dir, rule):
    return _journal(run_dir, "SELECT order_id, status_reason FROM orders WHERE status = 'rejected' AND"
                             " status_reason LIKE ?", (f"%{rule}%",))


def test_dry_run_sends_nothing_and_journals_what_it_would_send(tmp_path):
    cfg = _config(tmp_path)
    run_dir = tmp_path / "dry"
    _run(cfg, run_dir, dry_run=True)
    assert _refusals(run_dir, "dry run")
    assert not sqlite3.connect(run_dir / "paper_broker.sqlite").execute("SELECT COUNT(*) FROM orders").fetchone()[0]


def test_kill_file_stops_new_risk(tmp_path):
    cfg = _config(tmp_path)
    run_dir = tmp_path / "kill"
    run_dir.mkdir()
    request_kill(run_dir, "operator says stop")
    _run(cfg, run_dir)
    refused = _refusals(run_dir, "kill switch")
    assert refused and "operator says stop" in refused[0][1]


def test_daily_loss_cap_trips_the_kill_switch(tmp_path):
    cfg = _config(tmp_path)
    run_dir = tmp_path / "cap"
    _run(cfg, run_dir, guard_overrides={"daily_loss_cap": 0.01})
    assert _log(run_dir, "kill_switch")
    assert _refusals(run_dir, "kill switch: daily loss")


def test_no_new_risk_window(tmp_path):
    cfg = _config(tmp_path)
    run_dir = tmp_path / "window"
    _run(cfg, run_dir, guard_overrides={"no_new_risk_minutes": 389})
    assert _refusals(run_dir, "no new risk in the last 389 minutes")


def test_order_rate(tmp_path):
    cfg = _config(tmp_path)
    run_dir = tmp_path / "rate"
    _run(cfg, run_dir, guard_overrides={"max_orders_per_minute": 0})
    assert _refusals(run_dir, "order rate")


def test_stale_quotes(tmp_path):
    cfg = _config(tmp_path)
    run_dir = tmp_path / "stale"
    _run(cfg, run_dir, guard_overrides={"max_quote_age_seconds": -1})
    assert _refusals(run_dir, "stale quotes")


def test_missing_position_report_is_never_flat(tmp_path):
    cfg = _config(tmp_path, report_positions=False)
    run_dir = tmp_path / "nopos"
    _run(cfg, run_dir)
    assert any("did not report positions" in msg for _, msg in _log(run_dir, "fail_closed"))
    assert _refusals(run_dir, "no new risk until the journal and the broker agree")


def test_session_guard_unit():
    g = Guards(GuardConfig())
    day = pd.Timestamp("2023-03-14", tz="America/New_York")
    o, c = day + pd.Timedelta(hours=9.5), day + pd.Timedelta(hours=16)

    class _O:
        opens = True

    veto = g.check(_O(), now=c + pd.Timedelta(minutes=5), quote_time=c, session_open=o, session_close=c,
                   bar_time=c - pd.Timedelta(minutes=1))
    assert veto.rule == "guard:session"
    assert g.check(_O(), now=o + pd.Timedelta(minutes=31), quote_time=o + pd.Timedelta(minutes=31), session_open=o,
                   session_close=c, bar_time=o + pd.Timedelta(minutes=30)) is None


def test_flatten_request_closes_everything(tmp_path):
    cfg = _config(tmp_path, latency_seconds=0)
    # exits far away, so the 09:45 entry is still open at 10:00 whatever the seed's first minutes do
    doc = yaml.safe_load(Path(cfg).read_text())
    doc["strategies"][0]["params"].update(take_profit_pct=0.9, stop_multiple=5.0)
    Path(cfg).write_text(yaml.safe_dump(doc))
    run_dir = tmp_path / "flat"
    _run(cfg, run_dir, stop_after_bars=30)
    assert paper_status(run_dir)["open_trades"]
    request_flatten(run_dir)
    journal_plugin.discard(run_dir.name)
    summary = _run(cfg, run_dir, exit_when_flat=True)
    assert summary["stopped"] == "flat" and summary["open_trades"] == 0
    assert _log(run_dir, "flatten")
    assert paper_status(run_dir)["kill_switch"]


def test_the_same_command_again_resumes_the_days_run(tmp_path, monkeypatch):
    """Without --run-dir the run lives in OUTPUT_DIR/NAME-paper-DAY, so re-running the command resumes it."""
    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path)
    first = start_paper(cfg, clock="replay", speed=0, panel=False, stop_after_bars=120)
    run_dir = Path(first["run_dir"])
    assert run_dir == Path("runs") / "live-paper-2023-03-14" and not first["completed"]
    orders_before = _journal(run_dir, "SELECT order_id FROM orders")
    again = start_paper(cfg, clock="replay", speed=0, panel=False)
    assert again["run_dir"] == first["run_dir"] and again["completed"]
    assert sorted(os.listdir("runs")) == ["live-paper-2023-03-14"]  # one folder: resumed, not restarted
    after = {r[0] for r in _journal(run_dir, "SELECT order_id FROM orders")}
    assert {r[0] for r in orders_before} <= after
    check_run(run_dir)
    # other options on the same day are refused rather than mixed into that run; --fresh starts anew
    with pytest.raises(StrikebenchError, match="started with other options"):
        start_paper(cfg, ("strategies[0].params.contracts=1",), clock="replay", speed=0, panel=False)
    fresh = start_paper(cfg, clock="replay", speed=0, panel=False, fresh=True, stop_after_bars=5)
    assert fresh["run_dir"] != first["run_dir"]


def test_paper_runs_hand_features_to_strategies(tmp_path, monkeypatch):
    """zero_dte reads ctx.features; under paper trading they must be there (not 'not known yet')."""
    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parents[1] / "configs" / "xsp_zero_dte.yaml"
    summary = start_paper(str(config), clock="replay", speed=0, panel=False, day=pd.Timestamp("2023-03-14").date())
    reasons = [r for (r,) in _journal(Path(summary["run_dir"]), "SELECT reason FROM trade_decisions")]
    assert len(reasons) == 21
    assert not any("not known yet" in r for r in reasons)
    assert any("opening range" in r or "OR high" in r or "OR low" in r for r in reasons)
