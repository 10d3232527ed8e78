"""The trading account: `strikebench trade` runs the configured strategies session after session.

An account is a folder (``accounts/NAME`` by default; ``account.dir`` in YAML or ``--account``) with

* ``account.json`` -- what it was opened with (config, ``--set`` overrides, its configuration hash);
* ``journal.sqlite`` -- ONE journal for the account's whole life: one journal run (``run_id`` = the
  folder's name) whose trades open in one session and close, or settle, in a later one, and a
  ``account_sessions`` table with a row per session (started, ended, completed); with a ``journal.url``
  in the config (PostgreSQL) that journal is in the database and the folder holds ``journal.url``;
* the broker's state (the paper broker's ``paper_broker.sqlite``, or a paper-broker service's file);
* the switches ``KILL`` / ``FLATTEN`` and ``trade.pid``.

Each session is one :class:`~strikebench.live.runtime.LiveRuntime` over that day's bars, in account
mode: it restores the account from the journal (every fill of every earlier session: open trades,
working GTC orders, cash, the counters behind deterministic client ids), reconciles with the broker
(fills, expiries and settlements that happened while the trader was down), then trades. Strategy
and risk-manager state that spans days (a risk ladder, a losing streak, a loss cap's trip) is carried
as a snapshot taken at each completed session's end. See docs/live.md, "The trading account".
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import pickle
import re
import time
from pathlib import Path

import pandas as pd

from strikebench.calendar import NY, MarketCalendar
from strikebench.errors import StrikebenchError
from strikebench.journal import JOURNAL_FILE, iso_time

__all__ = ["ACCOUNT_FILE", "TRADE_PID_FILE", "account_dir", "run_account", "account_status", "is_account"]

ACCOUNT_FILE = "account.json"
TRADE_PID_FILE = "trade.pid"

def is_account(folder) -> bool:
    return (Path(folder) / ACCOUNT_FILE).is_file()


def account_dir(resolved, account: str | None) -> Path:
    return Path(account or resolved.config.account.dir or Path("accounts") / resolved.config.name)


def _db(url: str):
    """A connection to the account's journal (SQLite file or PostgreSQL), its schema made or migrated to head first
    (``account_sessions`` is one of its tables)."""
    from strikebench.journal import Journal
    from strikebench.journal_db import connect

    Journal(url).close()
    return connect(url)


def _utc() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie (a killed child not yet reaped) is not running
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def running_trader(folder) -> int | None:
    f = Path(folder) / TRADE_PID_FILE
    try:
        pid = int(f.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() and _pid_alive(pid) else None


# ------------------------------------------------------------- carried state
def _carry_snapshot(obj) -> dict:
    """The instance attributes of a strategy or risk manager that pickle (its cross-day state)."""
    out = {}
    for k, v in vars(obj).items():
        if k == "params":
            continue
        try:
            blob = pickle.dumps(v, protocol=4)
        except Exception:  # noqa: BLE001 - an attribute that does not pickle is not state we can carry
            continue
        if len(blob) <= 1_000_000:
            out[k] = base64.b64encode(blob).decode()
    return out


def _carry_restore(obj, snap: dict) -> None:
    for k, blob in snap.items():
        try:
            setattr(obj, k, pickle.loads(base64.b64decode(blob)))
        except Exception:  # noqa: BLE001 - a snapshot from another version of the plugin: keep the fresh value
            continue


def save_carry(rt) -> None:
    eng = rt.engine
    rt.state.set("carry", {
        "day": str(rt.day),
        "strategies": {sid: _carry_snapshot(s) for sid, s in eng.strategies},
        "risk": [_carry_snapshot(rm) for rm in eng.risk_gate.risk_managers]})


def load_carry(rt) -> None:
    carry = rt.state.get("carry") if rt.state is not None else None
    if not carry:
        return
    snaps = carry.get("strategies", {})
    for sid, s in rt.engine.strategies:
        if sid in snaps:
            _carry_restore(s, snaps[sid])
    for rm, snap in zip(rt.engine.risk_gate.risk_managers, carry.get("risk", [])):
        _carry_restore(rm, snap)


# ----------------------------------------------------------------- the account
class Account:
    """An account folder: its metadata, journal, sessions and the broker behind it."""

    def __init__(self, config: str, overrides=(), *, account: str | None = None, pm=None, dry_run: bool = False):
        from strikebench.config import load_config
        from strikebench.plugin_manager import get_plugin_manager

        self.pm = pm or get_plugin_manager()
        self.config = str(config)
        self.overrides = tuple(overrides)
        self.resolved = load_config(config, self.overrides, registry=self.pm.registry)
        self.dir = account_dir(self.resolved, account)
        self.run_id = self.dir.name
        from strikebench.live.runtime import live_journal_url

        self.journal_url = live_journal_url(self.resolved, self.dir)  # the folder's journal.sqlite, or journal.url
        self.calendar = MarketCalendar()
        meta_file = self.dir / ACCOUNT_FILE
        if meta_file.exists():
            try:
                meta = json.loads(meta_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise StrikebenchError(f"{meta_file}: not an account file ({exc})") from None
            if meta.get("config_hash") != self.resolved.config_hash or bool(meta.get("dry_run")) != bool(dry_run):
                raise StrikebenchError(
                    f"{self.dir} is an account opened with another configuration ({meta.get('config')}"
                    f"{' ' + ' '.join(meta.get('overrides', [])) if meta.get('overrides') else ''}"
                    f"{', dry run' if meta.get('dry_run') else ''}); an account keeps its configuration for its "
                    f"whole life: give another --account")
        else:
            if self.dir.exists() and any(self.dir.iterdir()):
                raise StrikebenchError(f"{self.dir} exists and is not an account folder (no {ACCOUNT_FILE})")
            self.dir.mkdir(parents=True, exist_ok=True)
            meta = {"config": str(Path(config).resolve()), "overrides": list(self.overrides),
                    "config_hash": self.resolved.config_hash, "name": self.resolved.config.name,
                    "dry_run": bool(dry_run), "opened": _utc()}
            meta_file.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        self.meta = meta

    # ---------------------------------------------------------------- market
    def resolved_for(self, start: dt.date, end: dt.date):
        """The config with the synthetic market's span set to [start, end] (the same as a backtest of that span)."""
        from strikebench.config import load_config

        if self.resolved.config.data.source != "synthetic":
            return self.resolved
        return load_config(self.config, self.overrides + (f"data.start={start}", f"data.end={end}"),
                           registry=self.pm.registry)

    # -------------------------------------------------------------- sessions
    def sessions(self) -> list[dict]:
        from strikebench.live.runtime import _journal_exists

        if not _journal_exists(self.journal_url):
            return []
        db = _db(self.journal_url)
        try:
            return [dict(r) for r in db.execute("SELECT * FROM account_sessions WHERE run_id = ? ORDER BY day",
                                                (self.run_id,))]
        finally:
            db.close()

    def session_done(self, day: dt.date) -> bool:
        return any(s["day"] == str(day) and s["completed"] for s in self.sessions())

    def mark(self, day: dt.date, *, completed: bool = False, summary: dict | None = None) -> None:
        db = _db(self.journal_url)
        try:
            db.execute("INSERT INTO account_sessions(run_id, day, started) VALUES (?, ?, ?) ON CONFLICT(run_id, day)"
                       " DO NOTHING", (self.run_id, str(day), _utc()))
            if completed:
                db.execute("UPDATE account_sessions SET ended = ?, completed = 1, summary = ? WHERE run_id = ? AND"
                           " day = ?", (_utc(), json.dumps(summary or {}, default=str), self.run_id, str(day)))
        finally:
            db.close()


def _open_time(calendar, day: dt.date) -> pd.Timestamp:
    return pd.Timestamp(calendar.session_open(day)).tz_convert(NY)


def _close_time(calendar, day: dt.date) -> pd.Timestamp:
    return pd.Timestamp(calendar.session_close(day)).tz_convert(NY)


def run_account(config: str, overrides=(), *, account: str | None = None, clock: str = "wall",
                start: dt.date | None = None, end: dt.date | None = None, speed: float = 60.0,
                dry_run: bool = False, console=None, panel: bool = False, guard_overrides: dict | None = None,
                stop_after_sessions: int | None = None, stop_after_bars: int | None = None,
                say=None, broker_plugin=None, live: bool = False) -> dict:
    """Run the account: every session in [start, end] (replay), or every session from now on (wall, forever)."""
    from strikebench.live.clock import ReplayClock, WallClock
    from strikebench.live.guards import GuardConfig
    from strikebench.live.launch import _guard_defaults, live_broker_plugin
    from strikebench.live.runtime import LiveRuntime

    say = say or (lambda msg: None)
    from strikebench.live.launch import refuse_password_in_overrides

    refuse_password_in_overrides(overrides, what="an account")
    if broker_plugin is None:  # a real-money broker without --live is refused before the account folder is made
        from strikebench.config import load_config
        from strikebench.plugin_manager import get_plugin_manager

        _pm = get_plugin_manager()
        resolved = load_config(config, overrides, registry=_pm.registry)
        live_broker_plugin(resolved, _pm, live=live or dry_run)
    acct = Account(config, overrides, account=account, dry_run=dry_run)
    pid = running_trader(acct.dir)
    if pid is not None:
        raise StrikebenchError(f"{acct.dir}: a trader is already running on this account (pid {pid})")
    (acct.dir / TRADE_PID_FILE).write_text(str(os.getpid()))
    cal = acct.calendar
    service = None  # the paper broker service's connection, when the account trades on paper
    if broker_plugin is None:
        broker_plugin = live_broker_plugin(acct.resolved, acct.pm)
        if getattr(broker_plugin, "name", "") == "paper":
            from strikebench.brokers.paper_client import STATE_FILE, ServiceBrokerPlugin, ensure_service

            if clock == "replay":
                start, end = _span(acct, start, end)
            service = ensure_service(acct.dir / STATE_FILE, config=acct.meta["config"], overrides=acct.overrides,
                                     clock=clock, start=start, end=end, speed=speed, say=say)
            broker_plugin = ServiceBrokerPlugin(service)
    gcfg = {**_guard_defaults(acct.resolved), "dry_run": dry_run, **(guard_overrides or {})}
    the_panel = None
    if panel:
        from strikebench.live.panel import LivePanel

        the_panel = LivePanel(console=console)
    ran: list[dict] = []
    last_rt = None

    def one_session(day: dt.date, resolved, market, make_clock, final: bool) -> dict:
        """One session; the broker being unavailable restarts it from the journal (as a process restart would)."""
        from strikebench.live.broker_api import BrokerUnavailable

        waited = 0.0
        while True:
            try:
                return _session(day, resolved, market, make_clock(), final)
            except BrokerUnavailable as exc:
                if waited > 120:
                    raise
                say(f"  {day}: broker unavailable ({exc}); resuming from the journal in 1 s")
                time.sleep(1.0)
                waited += 1.0

    def _session(day: dt.date, resolved, market, clk, final: bool) -> dict:
        nonlocal last_rt
        acct.mark(day)
        rt = LiveRuntime(resolved, run_dir=acct.dir, broker_plugin=broker_plugin, clock=clk, day=day, pm=acct.pm,
                         market=market, guards=GuardConfig(**gcfg), panel=the_panel, run_id=acct.run_id,
                         account=True, final=final)
        try:
            load_carry(rt)
            summary = rt.run(stop_after_bars=stop_after_bars)
            if summary.get("completed"):
                save_carry(rt)
                facts = {k: summary.get(k) for k in ("final_cash", "final_equity", "trades", "open_trades",
                                                     "realized_pnl")}
                facts.update(_broker_check(rt))
                acct.mark(day, completed=True, summary=facts)
            for note in rt.reconciled:
                say(f"  {day}: {note}")
            summary = dict(summary, day=str(day), stopped=rt.stopped_reason)
            last_rt = rt
            return summary
        finally:
            rt.close()

    try:
        if clock == "replay":
            start, end = _span(acct, start, end)
            days = [d.date() for d in cal.sessions(start, end)]
            resolved = acct.resolved_for(days[0], days[-1])
            market = resolved.data.build().open()
            for k, day in enumerate(days):
                if acct.session_done(day):
                    continue
                if service is not None:
                    from strikebench.brokers.paper_client import ServiceClock

                    def make_clock():
                        return ServiceClock(service)

                    if make_clock().now() > _close_time(cal, day):  # the service moved on while the trader was down
                        acct.mark(day, completed=True, summary={"missed": "the trader was down for the session"})
                        say(f"session {day}: missed (the broker's market clock is past its close; the trader was "
                            f"down); the next session reconciles what happened at the broker")
                        continue
                else:
                    def make_clock(day=day):
                        return ReplayClock(_open_time(cal, day), speed=speed)
                s = one_session(day, resolved, market, make_clock, final=(k == len(days) - 1))
                ran.append(s)
                say(_line(s))
                if not s.get("completed") or (stop_after_sessions and len(ran) >= stop_after_sessions):
                    break
            else:
                if service is not None and all(acct.session_done(d) for d in days):
                    try:  # the replay is over: nothing more can happen at its broker
                        service.request("POST", "/v1/shutdown", {})
                        say("the replay is complete: paper broker service stopped")
                    except Exception:  # noqa: BLE001 - already gone
                        pass
        else:
            clk = WallClock()
            while True:
                now = clk.now()
                today = now.date()
                if cal.is_session(today) and now < _close_time(cal, today) and not acct.session_done(today):
                    resolved = acct.resolved_for(today, today)
                    market = resolved.data.build().open()
                    s = one_session(today, resolved, market, lambda: clk, final=False)
                    ran.append(s)
                    say(_line(s))
                    if not s.get("completed") or (stop_after_sessions and len(ran) >= stop_after_sessions):
                        break
                    continue
                nxt = cal.next_session(today) if (not cal.is_session(today) or now >= _open_time(cal, today)) \
                    else pd.Timestamp(today)
                opens = _open_time(cal, pd.Timestamp(nxt).date())
                say(f"waiting for the session of {pd.Timestamp(nxt).date()} (opens {opens:%Y-%m-%d %H:%M %Z})")
                while clk.now() < opens - pd.Timedelta(minutes=5):
                    time.sleep(min(60.0, max((opens - pd.Timedelta(minutes=5) - clk.now()).total_seconds(), 0.1)))
    finally:
        if the_panel is not None and last_rt is not None:
            the_panel.stop(last_rt)
        if running_trader(acct.dir) is None:
            (acct.dir / TRADE_PID_FILE).unlink(missing_ok=True)
    out = account_status(acct.dir)
    out["sessions_run"] = ran
    return out


def _broker_check(rt) -> dict:
    """At a session's end: the broker's cash and positions beside the journal's (kept in the session row)."""
    from strikebench.live.broker_api import BrokerUnavailable

    mine = {c.occ_compact: q for c, q in rt.engine.portfolio.positions().items() if q}
    out = {"journal_cash": f"{rt.engine.portfolio.cash:.2f}", "journal_positions": mine}
    try:
        bal, theirs = rt.broker.balances(), rt.broker.positions()
    except BrokerUnavailable:
        return out
    if bal is not None:
        out["broker_cash"] = f"{float(bal['cash']):.2f}"
    if theirs is not None:
        out["broker_positions"] = {k: v for k, v in theirs.items() if v}
    if out.get("broker_cash") not in (None, out["journal_cash"]) or \
            out.get("broker_positions") not in (None, mine):
        rt.log("reconcile", f"session end: journal cash {out['journal_cash']} positions {mine} vs broker "
                            f"{out.get('broker_cash')} {out.get('broker_positions')}")
    return out


def _span(acct, start, end) -> tuple[dt.date, dt.date]:
    start = start or acct.resolved.config.data.start
    end = end or acct.resolved.config.data.end or start
    start, end = pd.Timestamp(start).date(), pd.Timestamp(end).date()
    if not len(acct.calendar.sessions(start, end)):
        raise StrikebenchError(f"no trading session between {start} and {end}")
    return start, end


def _line(s: dict) -> str:
    state = "completed" if s.get("completed") else (s.get("stopped") or "stopped")
    return (f"session {s['day']}: {state}; open trades {s['open_trades']}, cash {s['final_cash']:,.2f}, "
            f"equity {s['final_equity']:,.2f}")


def account_status(folder) -> dict:
    """What an account folder says (read-only): sessions, cash, open trades, working orders, switches, last log."""
    from strikebench.live.runtime import FLATTEN_FILE, KILL_FILE

    from strikebench.journal import JOURNAL_URL_FILE, find_journal, open_read_only
    from strikebench.journal_db import table_names
    from strikebench.userfiles import read_text

    d = Path(folder)
    try:
        meta = json.loads(read_text(d / ACCOUNT_FILE, what="account file", error=StrikebenchError, max_bytes=1 << 20))
    except ValueError:
        raise StrikebenchError(f"{d / ACCOUNT_FILE}: damaged account file (not the JSON an account writes)") from None
    path = d / JOURNAL_FILE
    out = {"account": str(d), "run_id": d.name, "config": meta.get("config"), "running_pid": running_trader(d),
           "sessions": [], "open_trades": [], "working_orders": [], "realized_pnl": 0.0, "closed_trades": 0,
           "cash": None, "kill_switch": None, "new_risk_stopped": None, "log": [],
           "flatten_requested": (d / FLATTEN_FILE).exists()}
    if (d / KILL_FILE).exists():
        out["kill_switch"] = (d / KILL_FILE).read_text(encoding="utf-8").strip() or "kill file present"
    if not (os.path.lexists(path) or os.path.lexists(d / JOURNAL_URL_FILE)):
        return out
    # the folder's journal.sqlite, or the journal URL its journal.url names (PostgreSQL: one read-only snapshot)
    journal = open_read_only(find_journal(d))  # a damaged, truncated or foreign journal is refused; nothing written
    db = journal._db
    rid = d.name
    tables = table_names(db)
    try:
        def q(sql, params=()):
            if not all(t in tables for t in re.findall(r"\bFROM (\w+)", sql)):
                return []  # a journal from before the table (an SQLite account journal without the live tables)
            return [dict(r) for r in db.execute(sql, params)]

        out["sessions"] = q("SELECT day, started, ended, completed FROM account_sessions WHERE run_id = ? ORDER BY day",
                            (rid,))
        out["open_trades"] = q("SELECT trade_id, strategy, opened_at, contracts, entry_credit, expiry FROM trades"
                               " WHERE run_id = ? AND closed_at IS NULL ORDER BY opened_at", (rid,))
        out["working_orders"] = q("SELECT order_id, status, filled_quantity, quantity, opens, tif FROM orders WHERE"
                                  " run_id = ? AND status IN ('submitted', 'accepted', 'partially_filled')", (rid,))
        closed = q("SELECT realized_pnl FROM trades WHERE run_id = ? AND closed_at IS NOT NULL", (rid,))
        out["closed_trades"] = len(closed)
        from decimal import Decimal

        out["realized_pnl"] = float(sum((Decimal(r["realized_pnl"]) for r in closed), Decimal(0)))
        run = q("SELECT initial_cash FROM runs WHERE run_id = ?", (rid,))
        cash = q("SELECT cash FROM fills WHERE run_id = ?", (rid,))
        if run and run[0]["initial_cash"] is not None:
            out["cash"] = float(Decimal(run[0]["initial_cash"]) + sum((Decimal(r["cash"]) for r in cash), Decimal(0)))
        state = {r["key"]: json.loads(r["value"]) for r in q("SELECT key, value FROM live_state WHERE run_id = ?",
                                                              (rid,))}
        out["new_risk_stopped"] = state.get("fail_closed")
        if out["sessions"]:
            last = out["sessions"][-1]["day"]
            out["last_session"] = last
            out["kill_switch"] = out["kill_switch"] or state.get(f"{last}:kill_reason")
            out["last_bar_done"] = state.get(f"{last}:bar_done_at")
        out["log"] = list(reversed(q("SELECT at, kind, message FROM live_log WHERE run_id = ? ORDER BY log_id DESC"
                                     " LIMIT 12", (rid,))))
    finally:
        db.close()
    return out
