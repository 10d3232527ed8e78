"""What the CLI's ``paper``, ``status``, ``flatten`` and ``kill`` commands do."""

from __future__ import annotations

import datetime as dt
import json
import os
from decimal import Decimal
from pathlib import Path

import pandas as pd

from strikebench.calendar import NY
from strikebench.errors import StrikebenchError
from strikebench.live.guards import GuardConfig
from strikebench.live.runtime import FLATTEN_FILE, KILL_FILE, LIVE_FILE, PID_FILE, LiveRuntime, LiveState

__all__ = ["start_paper", "paper_status", "request_flatten", "request_kill", "running_pid", "live_broker_plugin",
           "broker_check"]


def _guard_defaults(resolved) -> dict:
    """Guard settings the YAML already implies: the daily_loss_cap and no_new_risk_window risk managers."""
    out: dict = {}
    for rp in resolved.risk:
        if rp.entry.name == "daily_loss_cap":
            out["daily_loss_cap"] = float(rp.params.cap)
        if rp.entry.name == "no_new_risk_window":
            out["no_new_risk_minutes"] = int(rp.params.minutes_before_close)
    return out


def running_pid(run_dir) -> int | None:
    f = Path(run_dir) / PID_FILE
    if not f.exists():
        return None
    try:
        pid = int(f.read_text().strip())
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def live_broker_plugin(resolved, pm, *, live: bool | None = None, command: str = "trade"):
    """The configured broker as a live broker (`paper` stands in for `backtest`, with its initial cash).

    ``live``: whether the user confirmed real money (``--live``); a broker whose configuration reaches a real-money
    account (:meth:`BrokerPlugin.trades_real_money`) is refused without it. None: not asked (a read-only use)."""
    broker_ref = resolved.broker
    if broker_ref.entry.name == "backtest":  # the same YAML: paper stands in for the backtest broker
        paper = pm.registry.get("broker", "paper")
        broker_plugin = paper.build(paper.params_model(initial_cash=broker_ref.params.initial_cash))
    else:
        broker_plugin = broker_ref.build()
    if not hasattr(broker_plugin, "connect"):
        raise StrikebenchError(f"broker '{broker_ref.entry.name}' is not a live broker (it has no connect())")
    real = getattr(broker_plugin, "trades_real_money", None)
    if live is not None and callable(real) and real() and not live:
        raise StrikebenchError(f"broker '{broker_ref.entry.name}' is configured for a real-money account "
                               f"({resolved.source_path}); confirm with `strikebench {command} ... --live`, or "
                               f"use its paper/sandbox environment")
    return broker_plugin


def broker_check(config: str, overrides=(), *, preview: bool = False):
    """``strikebench broker check``: the configured broker plugin's check rows -> (broker name, rows).

    Reads only: the plugin is asked for its rows (a live broker sends read requests, and a preview order only
    with ``preview``); no account folder, journal or state file is created."""
    from strikebench.config import load_config
    from strikebench.plugin_manager import get_plugin_manager

    pm = get_plugin_manager()
    resolved = load_config(config, overrides, registry=pm.registry)
    plugin = live_broker_plugin(resolved, pm)
    name = "paper" if resolved.broker.entry.name == "backtest" else resolved.broker.entry.name
    try:
        rows = plugin.check(resolved=resolved, preview=preview)
    except NotImplementedError:
        raise StrikebenchError(f"broker '{name}' has no check (its plugin does not define check())") from None
    return name, list(rows)


def start_paper(config: str, overrides=(), *, clock: str = "wall", speed: float = 60.0, day: dt.date | None = None,
                dry_run: bool = False, run_dir: str | None = None, console=None, panel: bool = True,
                guard_overrides: dict | None = None, stop_after_bars: int | None = None, flatten: bool = False,
                exit_when_flat: bool = False, fresh: bool = False, live: bool = False) -> dict:
    from strikebench.config import load_config
    from strikebench.plugin_manager import get_plugin_manager
    from strikebench.userfiles import read_text

    explicit_run_dir = run_dir is not None
    refuse_password_in_overrides(overrides)

    def resume_args(folder):
        """The stored arguments of the run in ``folder`` (None if there is none); refuses a live one."""
        if not (Path(folder) / LIVE_FILE).exists():
            return None
        text = read_text(Path(folder) / LIVE_FILE, what="paper run file", error=StrikebenchError, max_bytes=1 << 20)
        try:
            stored = json.loads(text)
            if not isinstance(stored, dict) or "day" not in stored:
                raise ValueError("no day")
        except ValueError:
            raise StrikebenchError(f"{Path(folder) / LIVE_FILE}: damaged paper run file (not the JSON a paper run "
                                   f"writes); start elsewhere with another --run-dir") from None
        pid = running_pid(folder)
        if pid is not None and pid != os.getpid():
            raise StrikebenchError(f"{folder}: a paper run is already running there (pid {pid})")
        return stored

    live_args = resume_args(run_dir) if run_dir else None
    if live_args is not None:
        if day is not None and str(day) != live_args["day"]:
            raise StrikebenchError(f"{run_dir} holds the paper run of {live_args['day']}, not {day}: a paper run is one "
                                   f"session; trade the next days with their positions through `strikebench trade "
                                   f"CONFIG --account DIR`, or give another --run-dir")
        day = dt.date.fromisoformat(live_args["day"])  # a resumed run keeps its day
        overrides = tuple(live_args.get("overrides", ())) + tuple(o for o in overrides if o not in live_args.get("overrides", ()))
        dry_run = dry_run or live_args.get("dry_run", False)
    pm = get_plugin_manager()
    resolved = load_config(config, overrides, registry=pm.registry)
    if day is None:
        day = dt.datetime.now(NY).date() if clock == "wall" else None
    data_overrides = []
    if day is not None and resolved.config.data.source == "synthetic":
        data_overrides = [f"data.start={day}", f"data.end={day}"]
        resolved = load_config(config, tuple(overrides) + tuple(data_overrides), registry=pm.registry)
    broker_plugin = live_broker_plugin(resolved, pm, live=live or dry_run, command="paper")
    market = resolved.data.build().open()
    sessions = [d.date() for d in market.sessions()]
    if day is None:
        day = sessions[0]
    if day not in sessions:
        raise StrikebenchError(f"{day} is not a trading session of the configured market")
    if run_dir is None:
        # one folder per (config name, day): the same command again resumes it; --fresh starts a new one
        run_dir = str(Path(resolved.config.output.dir) / f"{resolved.config.name}-paper-{day}")
        if fresh:
            run_dir += dt.datetime.now().strftime("-%Y%m%d-%H%M%S")
        else:
            live_args = resume_args(run_dir)
            if live_args is not None and (live_args.get("overrides", []) != list(overrides)
                                          or bool(live_args.get("dry_run")) != bool(dry_run)):
                raise StrikebenchError(f"{run_dir} holds this day's run started with other options "
                                       f"({' '.join(live_args.get('overrides', [])) or 'no --set'}"
                                       f"{', dry run' if live_args.get('dry_run') else ''}); resume it with "
                                       f"--run-dir {run_dir}, or start another with --fresh")
    from strikebench.engine.runner import check_run_targets
    from strikebench.userfiles import make_dir, prepare_output_dir, remove_created

    check_run_targets(resolved)  # output.dir and journal.url: checked before anything is made
    prepare_output_dir(run_dir, key="--run-dir" if explicit_run_dir else "run folder")
    rd = Path(run_dir)
    created = make_dir(rd, key="--run-dir" if explicit_run_dir else "run folder")
    try:
        return _start(rd, config, overrides, clock, speed, day, dry_run, live_args, resolved, guard_overrides, panel,
                      console, broker_plugin, pm, market, stop_after_bars, flatten, exit_when_flat)
    except BaseException:
        from strikebench.engine.runner import _run_started

        if created and not _run_started(rd):  # a failed start leaves nothing behind
            import shutil

            shutil.rmtree(rd, ignore_errors=True)
            remove_created(created[:-1])
        raise


def _start(rd, config, overrides, clock, speed, day, dry_run, live_args, resolved, guard_overrides, panel, console,
           broker_plugin, pm, market, stop_after_bars, flatten, exit_when_flat) -> dict:
    from strikebench.live.clock import ReplayClock, WallClock

    if live_args is None:
        (rd / LIVE_FILE).write_text(json.dumps({
            "config": str(Path(config).resolve()), "overrides": list(overrides), "clock": clock, "speed": speed,
            "day": str(day), "dry_run": dry_run}, indent=2))
    gcfg = {**_guard_defaults(resolved), "dry_run": dry_run, **(guard_overrides or {})}
    if clock == "wall":
        clk = WallClock()
    else:
        clk = ReplayClock(pd.Timestamp(day).tz_localize(NY) + pd.Timedelta(hours=9, minutes=30), speed=speed)
    the_panel = None
    if panel:
        from strikebench.live.panel import LivePanel

        the_panel = LivePanel(console=console)
    rt = LiveRuntime(resolved, run_dir=rd, broker_plugin=broker_plugin, clock=clk, day=day, pm=pm, market=market,
                     guards=GuardConfig(**gcfg), panel=the_panel)
    try:
        summary = rt.run(stop_after_bars=stop_after_bars, flatten_first=flatten, exit_when_flat=exit_when_flat)
    finally:
        if the_panel is not None:
            the_panel.stop(rt)
        rt.close()
    summary = dict(summary)
    summary["run_dir"] = str(rd)
    summary["stopped"] = rt.stopped_reason
    summary["reconciled"] = list(rt.reconciled)
    return summary


def refuse_password_in_overrides(overrides, what: str = "a paper run") -> None:
    """``--set journal.url=...`` with a password is refused for paper runs and accounts: their options are stored in
    their folder (live.json, account.json) to resume with, and a secret is never written there. The password goes to
    PGPASSWORD or ~/.pgpass, or the whole URL to an environment variable the YAML names."""
    from strikebench.errors import ConfigError
    from strikebench.journal_db import has_password, mask_url

    for o in overrides or ():
        key, _, value = str(o).partition("=")
        if key.strip() == "journal.url" and has_password(value.strip()):
            raise ConfigError(f"--set journal.url={mask_url(value.strip())}: {what} stores its options in its folder "
                              f"to resume with, and a password is never written there; put it in PGPASSWORD or "
                              f"~/.pgpass, or name an environment variable in the YAML: "
                              f"journal: {{url: \"${{JOURNAL_URL}}\"}}")


def paper_status(run_dir, run_id: str | None = None) -> dict:
    """What a paper run folder says: running or not, bar, switches, open trades, working orders, last log lines.

    ``run_dir`` may be a journal URL (``postgresql://...``): then ``run_id`` (or ``#RUN_ID``) names the
    run, else the latest; there is no folder, so no pid, kill or flatten file."""
    from strikebench.journal import find_journal, open_read_only, split_run
    from strikebench.journal_db import mask_url
    from strikebench.userfiles import read_text

    url = "://" in str(run_dir)
    if url:
        run_dir, run_id = split_run(run_dir)[0], run_id or split_run(run_dir)[1]
    rd = None if url else Path(run_dir)
    path = find_journal(run_dir)
    j = open_read_only(path)  # checked whole first; `status` never writes
    try:
        runs = j.runs()
        want = run_id or (rd.name if rd is not None else None)
        run = next((r for r in runs if r["run_id"] == want), None)
        if run is None and run_id is not None:
            raise StrikebenchError(f"{mask_url(str(run_dir))}: no run '{run_id}' in this journal")
        run = run or (runs[-1] if runs else None)
        if run is None:
            raise StrikebenchError(f"{mask_url(str(run_dir))}: the journal holds no run")
        rid = run["run_id"]
        st = _StateView(j, rid)
        bar = st.get("bar_done")
        trades = [dict(r) for r in j.execute("SELECT trade_id, strategy, opened_at, contracts, entry_credit FROM trades"
                                             " WHERE run_id = ? AND closed_at IS NULL", (rid,))]
        working = [dict(r) for r in j.execute(
            "SELECT order_id, status, filled_quantity, quantity, opens FROM orders WHERE run_id = ? AND status IN"
            " ('submitted', 'accepted', 'partially_filled')", (rid,))]
        # exact: each trade's decimal text summed as Decimal (a REAL sum is a float4 on PostgreSQL)
        realized = sum((Decimal(r[0]) for r in j.execute("SELECT realized_pnl FROM trades WHERE run_id = ? AND"
                                                         " closed_at IS NOT NULL AND realized_pnl IS NOT NULL",
                                                         (rid,))), Decimal(0))
        out = {"run_id": rid, "running_pid": None if url else running_pid(rd),
               "completed": bool(run["completed"] or st.get("completed")),
               "last_bar_done": bar, "kill_switch": st.get("kill_reason") or (
                   read_text(rd / KILL_FILE, what="kill file", error=StrikebenchError, max_bytes=65536,
                             allow_empty=True).strip() or "kill file present" if rd and (rd / KILL_FILE).exists()
                   else None),
               "new_risk_stopped": st.get("fail_closed"), "open_trades": trades, "working_orders": working,
               "realized_pnl": round(float(realized), 2),
               "flatten_requested": rd is not None and (rd / FLATTEN_FILE).exists(),
               "log": st.logs(12)}
        st.close()
        return out
    finally:
        j.close()


class _StateView:
    """The runtime's ``live_state`` and ``live_log`` rows read through a read-only journal
    (:class:`LiveState` itself creates its tables); a journal without them reads as empty."""

    def __init__(self, journal, run_id: str):
        self._db, self.run_id = journal._db, run_id
        from strikebench.journal_db import table_names

        names = table_names(self._db)
        self._has = {"live_state", "live_log"} <= names

    def get(self, key: str, default=None):
        return LiveState.get(self, key, default) if self._has else default  # type: ignore[arg-type]

    def logs(self, limit: int = 20) -> list[dict]:
        return LiveState.logs(self, limit) if self._has else []  # type: ignore[arg-type]

    def close(self) -> None:
        pass


def request_kill(run_dir, reason: str = "kill switch by command") -> Path:
    from strikebench.userfiles import check_dir, write_atomic

    check_dir(run_dir, what="run folder", error=StrikebenchError)
    f = Path(run_dir) / KILL_FILE
    write_atomic(f, reason + "\n")
    return f


def request_flatten(run_dir) -> Path:
    request_kill(run_dir, "flatten requested")
    f = Path(run_dir) / FLATTEN_FILE
    from strikebench.userfiles import write_atomic

    write_atomic(f, "flatten\n")
    return f
