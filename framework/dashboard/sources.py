"""What the dashboard shows, read from the folders a user names: a backtest run, a paper/live account, a sweep.

Everything here reads; nothing writes (the kill and flatten actions live in :mod:`strikebench.dashboard.app` and
go through the CLI's own functions). Journals are opened through :mod:`strikebench.journal`'s public readers
(``find_journal``, ``open_read_only``, ``pick_run``, ``trades``, ``decisions``, ``load_snapshot`` ...).

A live account is watched by :class:`LiveSource`: one read-only SQLite connection that notices a writer's commit
through ``PRAGMA data_version`` and then reads only the rows added since the ids it already holds (fills,
decisions, order events, log lines, state rows), never the whole journal again.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import sqlite3
import threading
from decimal import Decimal
from pathlib import Path

import numpy as np

from strikebench.errors import StrikebenchError

__all__ = ["DashboardError", "open_source", "RunSource", "LiveSource", "SweepSource", "decimate"]


class DashboardError(StrikebenchError):
    """A dashboard argument that is not a run, an account or a sweep (or cannot be read)."""

    exit_code = 2


def _cents(text) -> int:
    return int((Decimal(str(text)) * 100).to_integral_value())


def _money(cents: int) -> float:
    return cents / 100.0


def _json_or(text, default):
    if text is None:
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


# ------------------------------------------------------------------ decimation
def decimate(t: np.ndarray, y: np.ndarray, buckets: int, *, lo=None, hi=None) -> tuple[np.ndarray, np.ndarray]:
    """At most ``2 * buckets`` points of (t, y) between ``lo`` and ``hi`` that keep each bucket's minimum and
    maximum, in time order (so no peak, trough or drawdown is lost when the chart draws them as a line)."""
    if lo is not None or hi is not None:
        a = 0 if lo is None else int(np.searchsorted(t, lo, side="left"))
        b = len(t) if hi is None else int(np.searchsorted(t, hi, side="right"))
        a, b = max(a - 1, 0), min(b + 1, len(t))  # one point either side: the line reaches the edges
        t, y = t[a:b], y[a:b]
    n = len(t)
    if n <= 2 * buckets:
        return t, y
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    starts = edges[:-1]
    lens = np.diff(edges)
    # argmin/argmax per bucket with reduceat (vectorized; buckets are never empty since n > 2 * buckets)
    mins = np.minimum.reduceat(y, starts)
    maxs = np.maximum.reduceat(y, starts)
    bucket_of = np.repeat(np.arange(buckets), lens)
    is_min = y == mins[bucket_of]
    is_max = y == maxs[bucket_of]
    # first index of the min and of the max in each bucket
    idx = np.arange(n)
    big = n + 1
    first_min = np.minimum.reduceat(np.where(is_min, idx, big), starts)
    first_max = np.minimum.reduceat(np.where(is_max, idx, big), starts)
    keep = np.unique(np.concatenate([first_min, first_max, [0, n - 1]]))
    return t[keep], y[keep]


def _drawdown(y: np.ndarray, start: float | None) -> np.ndarray:
    base = y if start is None else np.r_[start, y]
    peak = np.maximum.accumulate(base)
    dd = base - peak
    return dd if start is None else dd[1:]


# ------------------------------------------------------------------ opening
def open_source(arg: str):
    """The source a command-line argument names: a run folder, a journal file or URL, an account or a sweep."""
    from strikebench.journal import JOURNAL_FILE, JOURNAL_URL_FILE, JournalError

    text = os.fspath(arg)
    if "://" in text:
        return RunSource(text, text)  # open_sources opens one per run of the URL
    p = Path(text)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise DashboardError(f"{text}: no such run folder, account, sweep folder or journal") from None
    except OSError as exc:
        from strikebench.userfiles import os_problem

        raise DashboardError(f"{text}: {os_problem(exc, want='folder')}") from None
    import stat as _stat

    if _stat.S_ISDIR(st.st_mode):
        if not os.access(p, os.R_OK | os.X_OK):
            raise DashboardError(f"{text}: permission denied")
        if (p / "account.json").is_file():
            return LiveSource(p, account=True)
        if (p / "live.json").is_file():
            return LiveSource(p, account=False)
        if (p / "sweep.json").is_file() or (p / "trials.csv").is_file():
            return SweepSource(p)
        if os.path.lexists(p / JOURNAL_FILE) or os.path.lexists(p / JOURNAL_URL_FILE):
            return RunSource(text, text)
        raise DashboardError(f"{text}: not a run folder, an account or a sweep folder (no journal.sqlite, "
                             f"account.json or sweep.json in it)")
    if _stat.S_ISREG(st.st_mode):
        try:
            return RunSource(text, text)
        except JournalError as exc:
            raise DashboardError(str(exc)) from None
    raise DashboardError(f"{text}: not a folder or a journal file")


# ------------------------------------------------------------------ backtest run
class RunSource:
    """A backtest (or finished paper) run: its journal read-only, and its per-bar equity file when there is one."""

    kind = "run"

    def __init__(self, arg: str, label: str, run_id: str | None = None):
        from concurrent.futures import ThreadPoolExecutor

        from strikebench.journal_db import mask_url

        self.arg, self.label = arg, mask_url(label)  # a journal URL's password is never shown
        # an SQLite connection is used by the thread that made it: every journal read runs on this one thread
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard-journal")
        try:
            self.journal, self.run = self._worker.submit(_open_run, arg, run_id).result()
        except BaseException:
            self._worker.shutdown(wait=False)
            raise
        self.run_id = self.run["run_id"]
        folder = Path(arg) if "://" not in arg else None
        if folder is not None and folder.is_file():
            folder = folder.parent
        if folder is None and self.run.get("output_dir") and Path(self.run["output_dir"]).is_dir():
            folder = Path(self.run["output_dir"])  # a journal URL: its run folder, when here, holds the bar curve
        self.folder = folder
        self._lock = threading.Lock()  # one sqlite connection, requests in threads
        self._equity = None
        self._summary = None
        self._trades = None

    def warm(self) -> None:
        """Read what the page asks first (equity curve, summary, trades, days), so the first load is fast."""
        self._equity_series()
        self.summary()
        self.trades()
        self.days()

    def describe(self) -> dict:
        return {"kind": self.kind, "label": self.label, "run_id": self.run_id, "name": self.run["name"],
                "completed": bool(self.run["completed"])}

    def close(self) -> None:
        self._worker.submit(self.journal.close).result()
        self._worker.shutdown(wait=True)

    def _read(self, fn, *args):
        return self._worker.submit(fn, *args).result()

    # -------------------------------------------------------------- figures
    def summary(self) -> dict:
        if self._summary is None:
            from strikebench.report import journal_summary

            s = self._read(journal_summary, self.journal, self.run)
            s.pop("run_dir", None)
            self._summary = s
        return self._summary

    def _equity_series(self):
        """(t ns UTC int64, equity float dollars, what) -- per bar from equity_bars.parquet, else per session."""
        if self._equity is not None:
            return self._equity
        from strikebench.engine.runner import EQUITY_BARS_FILE

        initial = float(Decimal(self.run["initial_cash"])) if self.run.get("initial_cash") else None
        path = self.folder / EQUITY_BARS_FILE if self.folder is not None else None
        if path is not None and path.is_file():
            import pyarrow.parquet as pq

            try:
                table = pq.read_table(path, columns=["time", "equity"])
                t = table.column("time").cast("int64").to_numpy()
                y = table.column("equity").to_numpy()
                self._equity = (np.ascontiguousarray(t, dtype=np.int64), np.ascontiguousarray(y, dtype=np.float64),
                                "bar", initial)
                return self._equity
            except Exception as exc:  # noqa: BLE001 - a damaged file: say so, draw the journal's daily curve
                self._equity_problem = f"{path}: unreadable ({type(exc).__name__}); daily equity shown"
        eq = self._read(self.journal.equity, self.run_id)
        import pandas as pd

        days = pd.DatetimeIndex([f"{d} 16:00" for d in eq["day"]]).tz_localize("America/New_York")
        t = days.tz_convert("UTC").asi8.astype(np.int64) if len(eq) else np.zeros(0, dtype=np.int64)
        y = np.array([_cents(x) / 100.0 for x in eq["equity"]], dtype=np.float64)
        self._equity = (t, y, "session", initial)
        return self._equity

    def equity(self, *, points: int = 1500, lo: float | None = None, hi: float | None = None) -> dict:
        """Equity and drawdown, decimated to at most ``2 * points`` points of each in [lo, hi] (seconds)."""
        t, y, what, initial = self._equity_series()
        points = max(50, min(int(points), 20000))
        dd = _drawdown(y, initial)
        lo_ns = None if lo is None else int(lo * 1e9)
        hi_ns = None if hi is None else int(hi * 1e9)
        te, ye = decimate(t, y, points, lo=lo_ns, hi=hi_ns)
        td, yd = decimate(t, dd, points, lo=lo_ns, hi=hi_ns)
        # one time axis for the chart: the union, each series filled where the other has a point
        tt = np.union1d(te, td)
        ie = np.searchsorted(t, tt)
        return {"what": what, "points_total": int(len(t)), "points": int(len(tt)), "initial_cash": initial,
                "t": (tt / 1e9).round(3).tolist(), "equity": y[ie].round(2).tolist(), "drawdown": dd[ie].round(2).tolist(),
                "max_drawdown": round(float(-dd.min()), 2) if len(dd) else 0.0,
                "note": getattr(self, "_equity_problem", None)}

    def trades(self) -> list[dict]:
        if self._trades is None:
            tr = self._read(self.journal.trades, self.run_id)
            legs = self._read(self.journal.trade_legs, self.run_id)
            by_trade: dict[str, list] = {}
            for r in legs.itertuples(index=False):
                by_trade.setdefault(r.trade_id, []).append(
                    {"occ": r.occ_symbol, "ratio": int(r.ratio), "strike": r.strike, "right": r.option_right,
                     "expiry": r.expiry, "entry": r.entry_price, "exit": r.exit_price})
            out = []
            for r in tr.to_dict("records"):
                out.append({k: r.get(k) for k in ("trade_id", "strategy", "decision_id", "opened_at", "closed_at",
                                                  "expiry", "contracts", "entry_credit", "exit_debit", "fees",
                                                  "realized_pnl", "max_loss", "exit_reason")}
                           | {"legs": by_trade.get(r["trade_id"], [])})
            self._trades = out
        return self._trades

    def days(self) -> list[dict]:
        rows = self._read(self.journal.execute,
                          "SELECT substr(decided_at, 1, 10) AS day, COUNT(*) AS n, SUM(action = 'TRADE') AS trade FROM"
                          " trade_decisions WHERE run_id = ? GROUP BY day ORDER BY day", (self.run_id,))
        return [{"day": r[0], "decisions": int(r[1]), "trades": int(r[2] or 0)} for r in rows]

    def decisions(self, day: str) -> list[dict]:
        try:
            dt.date.fromisoformat(day)
        except ValueError:
            raise DashboardError(f"day '{day}' is not a date (YYYY-MM-DD)") from None
        rows = self._read(self.journal.decisions, self.run_id, day)
        return [_decision_row(r) for r in rows]

    def chain(self, decision_id: str, expiry: str | None = None) -> dict:
        """One decision's stored chain slice: for one expiry (the chosen one by default) every strike's put and
        call quotes, IV and delta, and the chosen legs (their ratios from the trade the decision opened)."""
        return self._read(chain_from_journal, self.journal, self.run_id, decision_id, expiry)


def chain_from_journal(journal, run_id: str, decision_id: str, expiry: str | None) -> dict:
    from strikebench.journal import JournalError

    try:
        d = journal.decision(decision_id, run_id)
        if d["snapshot_id"] is None:
            raise DashboardError(f"decision {decision_id} stored no chain snapshot")
        snap = journal.load_snapshot(d["snapshot_id"])
    except JournalError as exc:
        raise DashboardError(str(exc)) from None
    legs = journal.execute(
        "SELECT l.occ_symbol, l.ratio FROM trade_legs l JOIN trades t ON t.run_id = l.run_id AND"
        " t.trade_id = l.trade_id WHERE t.run_id = ? AND t.decision_id = ? ORDER BY l.leg", (run_id, decision_id))
    return chain_slice(snap, d, [(r[0], int(r[1])) for r in legs], expiry)


def _open_run(arg: str, run_id: str | None):
    """(journal, run row): a run folder or journal file through report.open_run; a journal URL opened as is, the
    run named by ``run_id``."""
    if "://" not in arg:
        from strikebench.report import open_run

        return open_run(arg)
    from strikebench.journal import open_read_only

    journal = open_read_only(arg)
    try:
        run = journal.run(run_id) if run_id else journal.pick_run(None)
    except Exception:
        journal.close()
        raise
    return journal, run


def journal_url_runs(url: str) -> list[str]:
    """The run ids a journal URL holds (a shared journal may hold many)."""
    from strikebench.journal import open_read_only

    journal = open_read_only(url)
    try:
        return [r["run_id"] for r in journal.runs()]
    finally:
        journal.close()


def url_sources(url: str, newest: int = 50) -> list:
    """One source per run of a journal URL (``URL#RUN_ID``: that run; else the newest ``newest``): a backtest is shown
    as a run (:class:`RunSource`); a paper run or an account is watched live (:class:`LiveSource`: only the rows added
    since the last look are read), with its switch files when its folder is on this machine."""
    from strikebench.journal import open_read_only, split_run
    from strikebench.journal_db import mask_url, table_names

    base, only = split_run(url)
    journal = open_read_only(base)
    try:
        runs = journal.runs()
        accounts = set()
        if "account_sessions" in table_names(journal._db):
            accounts = {r[0] for r in journal.execute("SELECT DISTINCT run_id FROM account_sessions")}
    finally:
        journal.close()
    if only is not None:
        runs = [r for r in runs if r["run_id"] == only]
        if not runs:
            raise DashboardError(f"{mask_url(base)}: no run '{only}' in this journal")
    if not runs:
        raise DashboardError(f"{mask_url(base)}: the journal holds no run")
    out = []
    for r in runs[-newest:]:
        rid = r["run_id"]
        if r["mode"] == "backtest":
            out.append(RunSource(base, f"{base} [{rid}]", rid))
            continue
        folder = Path(r["output_dir"]) if r["output_dir"] and Path(r["output_dir"]).is_dir() else None
        account = rid in accounts or (folder is not None and (folder / "account.json").is_file())
        out.append(LiveSource(folder, account=account, url=base, run_id=rid))
    return out


def _decision_row(r: dict) -> dict:
    return {"decision_id": r["decision_id"], "decided_at": r["decided_at"], "strategy": r["strategy"],
            "action": r["action"], "reason": r["reason"], "chosen": r["chosen"], "chosen_expiry": r["chosen_expiry"],
            "snapshot_id": r["snapshot_id"], "candidates": r["candidates"]}


def chain_slice(snap, decision: dict, trade_legs: list[tuple[str, int]], expiry: str | None) -> dict:
    cands = decision["candidates"] or []
    chosen = cands[decision["chosen"]] if decision["chosen"] is not None and 0 <= decision["chosen"] < len(cands) \
        else None
    marked = {occ.strip(): ratio for occ, ratio in trade_legs}
    if not marked and chosen and chosen.get("legs"):
        marked = {str(occ).strip(): None for occ in chosen["legs"]}
    expiries = [str(e) for e in snap.expiries]
    want = expiry or decision.get("chosen_expiry") or (expiries[0] if expiries else None)
    if want not in expiries and expiries:
        want = expiries[0]
    rows = snap.rows(expiry=dt.date.fromisoformat(want)) if want else np.zeros(0, dtype=np.int64)
    ladder: dict[float, dict] = {}
    for i in np.asarray(rows):
        c = snap.contract(int(i))
        side = "call" if bool(snap.is_call[i]) else "put"
        k = float(snap.strike[i])
        bid, ask = float(snap.bid[i]), float(snap.ask[i])
        occ = c.occ_symbol.strip()
        ladder.setdefault(k, {"strike": k})[side] = {
            "occ": occ, "bid": _num(bid), "ask": _num(ask), "mid": _num((bid + ask) / 2), "iv": _num(snap.iv[i], 4),
            "delta": _num(snap.delta[i], 4), "chosen": occ in marked, "ratio": marked.get(occ)}
    return {"decision_id": decision["decision_id"], "decided_at": decision["decided_at"],
            "action": decision["action"], "reason": decision["reason"], "underlying": snap.underlying,
            "underlying_price": float(snap.underlying_price), "taken_at": str(snap.timestamp),
            "expiry": want, "expiries": expiries, "chosen": chosen, "marked": marked,
            "strikes": [ladder[k] for k in sorted(ladder)]}


def _num(v, places: int = 2):
    v = float(v)
    return None if not math.isfinite(v) else round(v, places)


# ------------------------------------------------------------------ live account
_WORKING = ("submitted", "accepted", "partially_filled", "new")


class LiveSource:
    """A paper run folder or an account, watched: :meth:`poll` reads only what changed since the last call."""

    kind = "live"

    def __init__(self, folder: Path | None, *, account: bool, url: str | None = None, run_id: str | None = None):
        """``folder``: the paper run folder or account (its journal, switches and account.json); ``url`` and
        ``run_id``: a run of a journal URL (PostgreSQL), its folder (``output_dir``) used when it is on this machine."""
        from strikebench.journal import JOURNAL_FILE, find_journal, open_read_only
        from strikebench.journal_db import POSTGRES, backend_of, mask_url

        self.folder, self.account = (Path(folder) if folder is not None else None), account
        self.label = mask_url(url) + f" [{run_id}]" if url is not None else str(folder)
        self.meta = {}
        if account and self.folder is not None and (self.folder / "account.json").is_file():
            from strikebench.userfiles import read_text

            try:
                self.meta = json.loads(read_text(self.folder / "account.json", what="account file",
                                                 error=DashboardError, max_bytes=1 << 20))
            except ValueError:
                raise DashboardError(f"{self.folder / 'account.json'}: damaged account file") from None
        self.run_id = run_id or self.folder.name
        self.url = url
        if url is None:
            path = self.folder / JOURNAL_FILE
            self.url = str(path)
            if os.path.lexists(path) or os.path.lexists(self.folder / "journal.url"):  # none yet: watched till made
                self.url = find_journal(self.folder)  # the folder's file, or the URL its journal.url names
        self.postgres = backend_of(self.url) == POSTGRES
        from strikebench.journal_db import sqlite_path

        self.path = sqlite_path(self.url) if not self.postgres else None
        if self.postgres or self.path.exists():
            j = open_read_only(self.url)  # checked whole, known schema at head; then watched on our own connection
            try:
                runs = j.runs()
                if run_id is None and not account and runs and not any(r["run_id"] == self.run_id for r in runs):
                    self.run_id = runs[-1]["run_id"]
            finally:
                j.close()
        self._db = None
        self._lock = threading.Lock()
        self._reset()

    def journal_exists(self) -> bool:
        return self.postgres or self.path.exists()

    def describe(self) -> dict:
        return {"kind": self.kind, "label": self.label, "run_id": self.run_id, "account": self.account}

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _reset(self) -> None:
        self.version = 0
        self._data_version = None
        self.ids = {"fills": 0, "decisions": 0, "order_events": 0, "log": 0, "state": 0, "equity": 0}
        self.cash_c = 0
        self.premium_c: dict[str, int] = {}  # per trade: the premium its fills moved so far, fees left out
        self.initial_c = None
        self.trades: dict[str, dict] = {}
        self.orders: dict[str, dict] = {}
        self.decisions: list[dict] = []
        self.log: list[dict] = []
        self.state: dict = {}
        self.sessions: list[dict] = []
        self.equity: list[dict] = []
        self.rows_read = 0  # rows read from the journal since start (what the tests check: only what changed)

    def _connect(self):
        if self._db is not None:
            return self._db
        if self.postgres:  # read-only session, autocommit: each query sees what was committed when it ran
            from strikebench.journal_db import PgConnection

            self._db = PgConnection(self.url, read_only=True)
            return self._db
        if not self.path.exists():
            return None
        from urllib.parse import quote

        db = sqlite3.connect(f"file:{quote(str(self.path.resolve()))}?mode=ro", uri=True, isolation_level=None,
                             timeout=5.0, check_same_thread=False)
        db.row_factory = sqlite3.Row
        self._db = db
        return db

    def _q(self, sql: str, params=()) -> list:
        try:
            rows = self._db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise  # (on PostgreSQL the journal is at head: every table is there)
        self.rows_read += len(rows)
        return rows

    def poll(self) -> bool:
        """Read what the writer added since the last poll; True when anything changed (``version`` moves on)."""
        with self._lock:
            from strikebench.journal import JournalError

            try:
                return self._poll()
            except (sqlite3.DatabaseError, JournalError):
                # the writer is mid-checkpoint or the file was replaced: reopen on the next poll
                if self._db is not None:
                    self._db.close()
                self._db = None
                return False

    def _files_state(self) -> tuple:
        from strikebench.live.runtime import FLATTEN_FILE, KILL_FILE

        if self.folder is None:  # a run of a journal URL whose folder is not on this machine: no switch files
            return (None, False)
        kill = self.folder / KILL_FILE
        text = None
        if kill.exists():
            try:
                text = kill.read_text(encoding="utf-8", errors="replace").strip()[:500] or "kill file present"
            except OSError:
                text = "kill file present"
        return (text, (self.folder / FLATTEN_FILE).exists())

    def _poll(self) -> bool:
        files = self._files_state()
        changed = files != getattr(self, "_files", None)
        self._files = files
        db = self._connect()
        if db is None:
            if changed:
                self.version += 1
            return changed
        # has anything been committed since the last look? SQLite: the file's data_version; PostgreSQL: the
        # server's WAL position (any commit moves it; then the queries below read only rows past the ids held)
        dv = db.execute("SELECT pg_current_wal_lsn()::text" if self.postgres else "PRAGMA data_version").fetchone()[0]
        if dv == self._data_version and self.version:
            if changed:
                self.version += 1
            return changed
        self._data_version = dv
        rid = self.run_id
        if self.initial_c is None:
            run = self._q("SELECT initial_cash, COALESCE(config_resolved, config_yaml) AS cfg FROM runs"
                          " WHERE run_id = ?", (rid,))
            if run and run[0]["initial_cash"] is not None:
                self.initial_c = _cents(run[0]["initial_cash"])
                self.limits = _guard_limits(run[0]["cfg"])
                changed = True
        # fills: new rows only; the trades they touch are read again (a closing fill or a settlement closes one)
        touched: set[str] = set()
        for r in self._q("SELECT rowid, * FROM fills WHERE run_id = ? AND rowid > ? ORDER BY rowid",
                         (rid, self.ids["fills"])):
            self.ids["fills"] = r["rowid"]
            self.cash_c += _cents(r["cash"])
            if r["trade_id"]:
                touched.add(r["trade_id"])
                if r["kind"] == "fill":
                    self.premium_c[r["trade_id"]] = (self.premium_c.get(r["trade_id"], 0)
                                                     + _cents(r["cash"]) + _cents(r["fees"]))
        if touched or not self._loaded_trades():
            where = "" if not self._loaded_trades() else \
                f" AND trade_id IN ({','.join('?' * len(touched))})"
            params = (rid,) if not where else (rid, *sorted(touched))
            for r in self._q(f"SELECT * FROM trades WHERE run_id = ?{where}", params):
                self.trades[r["trade_id"]] = dict(r)
            self._trades_loaded = True
            if touched:
                changed = True
        # order events: new rows only; their orders read again
        orders: set[str] = set()
        for r in self._q("SELECT event_id, order_id FROM order_events WHERE run_id = ? AND event_id > ?"
                         " ORDER BY event_id", (rid, self.ids["order_events"])):
            self.ids["order_events"] = r["event_id"]
            orders.add(r["order_id"])
        if orders:
            for r in self._q(f"SELECT * FROM orders WHERE run_id = ? AND order_id IN ({','.join('?' * len(orders))})",
                             (rid, *sorted(orders))):
                self.orders[r["order_id"]] = dict(r)
            changed = True
        for r in self._q("SELECT rowid, * FROM trade_decisions WHERE run_id = ? AND rowid > ? ORDER BY rowid",
                         (rid, self.ids["decisions"])):
            self.ids["decisions"] = r["rowid"]
            d = dict(r)
            d["candidates"] = _json_or(d["candidates"], [])
            self.decisions.append(_decision_row(d))
            changed = True
        for r in self._q("SELECT log_id, at, wall, kind, message FROM live_log WHERE run_id = ? AND log_id > ?"
                         " ORDER BY log_id", (rid, self.ids["log"])):
            self.ids["log"] = r["log_id"]
            self.log.append(dict(r))
            changed = True
        del self.log[:-500]
        # live_state rows are rewritten with INSERT OR REPLACE, which gives the new row a higher rowid
        for r in self._q("SELECT rowid, key, value FROM live_state WHERE run_id = ? AND rowid > ? ORDER BY rowid",
                         (rid, self.ids["state"])):
            self.ids["state"] = max(self.ids["state"], r["rowid"])
            self.state[r["key"]] = _json_or(r["value"], r["value"])
            changed = True
        for r in self._q("SELECT rowid, day, equity FROM equity WHERE run_id = ? AND rowid > ? ORDER BY rowid",
                         (rid, self.ids["equity"])):
            self.ids["equity"] = max(self.ids["equity"], r["rowid"])
            self.equity = [e for e in self.equity if e["day"] != r["day"]] + [{"day": r["day"], "equity": r["equity"]}]
            changed = True
        if self.account and changed:
            # one row a session: small, read again when anything moved
            self.sessions = [dict(r) for r in self._q("SELECT day, started, ended, completed FROM account_sessions"
                                                      " WHERE run_id = ? ORDER BY day", (rid,))]
        if changed or not self.version:
            self.version += 1
        return changed

    def chain(self, decision_id: str, expiry: str | None = None) -> dict:
        from strikebench.journal import open_read_only

        j = open_read_only(self.url)
        try:
            return chain_from_journal(j, self.run_id, decision_id, expiry)
        finally:
            j.close()

    def _loaded_trades(self) -> bool:
        return getattr(self, "_trades_loaded", False)

    # -------------------------------------------------------------- the view
    def view(self) -> dict:
        with self._lock:
            return self._view()

    def _day(self) -> str | None:
        days = [s["day"] for s in self.sessions]
        done = self.state.get(f"{days[-1]}:bar_done_at") if days else self.state.get("bar_done_at")
        if done:
            return str(done)[:10]
        if days:
            return days[-1]
        if self.decisions:
            return self.decisions[-1]["decided_at"][:10]
        return None

    def _view(self) -> dict:
        day = self._day()
        pre = f"{day}:" if self.account and day else ""
        positions = self.state.get("positions") or {}
        marks = {p["trade_id"]: p for p in positions.get("trades", [])} if isinstance(positions, dict) else {}
        spot = positions.get("spot") if isinstance(positions, dict) else None
        open_rows, mark_value_c, greeks_total = [], 0, {"delta_shares": 0.0, "delta_dollars": 0.0, "gamma_dollars": 0.0,
                                                        "theta_dollars": 0.0, "vega_dollars": 0.0}
        unreal_total_c, marked_all = 0, True
        for t in sorted((t for t in self.trades.values() if t.get("closed_at") is None), key=lambda t: t["opened_at"]):
            m = marks.get(t["trade_id"])
            row = {k: t.get(k) for k in ("trade_id", "strategy", "opened_at", "expiry", "contracts", "entry_credit",
                                         "entry_price", "fees", "max_loss")}
            row.update({"mark": None, "unrealized": None, "legs": [], "greeks": None})
            if m:
                qty = int(m.get("contracts") or t["contracts"])
                mult = int(t.get("multiplier") or 100)
                legs = m.get("legs", [])
                if legs and all(leg.get("mark") is not None for leg in legs):
                    combo = sum(leg["ratio"] * leg["mark"] for leg in legs)
                    row["mark"] = round(combo, 4)
                    value_c = int(round(combo * mult * qty * 100))
                    # what its fills moved (the entry; a partly closed trade's exit too, its no-bid wing left
                    # to settle) + what it holds now, fees left out: (mark - entry) x contracts x multiplier
                    # for a trade no exit has touched
                    unreal_c = value_c + self.premium_c.get(t["trade_id"], 0)
                    row["unrealized"] = _money(unreal_c)
                    mark_value_c += value_c
                    unreal_total_c += unreal_c
                else:
                    marked_all = False
                g = _position_greeks(legs, qty, spot)
                row["greeks"] = g
                if g:
                    for k in greeks_total:
                        greeks_total[k] += g[k]
                row["legs"] = legs
            else:
                marked_all = False
            open_rows.append(row)
        closed = [t for t in self.trades.values() if t.get("closed_at") is not None and t.get("realized_pnl") is not None]
        realized_c = sum(_cents(t["realized_pnl"]) for t in closed)
        realized_today_c = sum(_cents(t["realized_pnl"]) for t in closed if day and str(t["closed_at"])[:10] == day)
        cash_c = None if self.initial_c is None else self.initial_c + self.cash_c
        equity_c = None if cash_c is None else cash_c + mark_value_c
        kill_file, flatten_file = getattr(self, "_files", (None, False))
        day_start = self.state.get(f"{pre}day_start_equity") if pre or not self.account else None
        today_pnl = None if equity_c is None or day_start is None else round(_money(equity_c) - float(day_start), 2)
        guards = getattr(self, "limits", {})
        working = [o for o in self.orders.values() if o["status"] in _WORKING]
        risk = {
            "kill_switch": kill_file or self.state.get(f"{pre}kill_reason") or self.state.get("kill_reason"),
            "kill_file": kill_file, "flatten_requested": flatten_file,
            "fail_closed": self.state.get("fail_closed"),
            "notch": _notches(positions),
            "limits": [],
        }
        if guards.get("daily_loss_cap") is not None:
            used = None if today_pnl is None else max(0.0, -today_pnl)
            risk["limits"].append({"limit": "daily loss cap", "used": used, "of": guards["daily_loss_cap"]})
        if guards.get("max_open_trades") is not None:
            risk["limits"].append({"limit": "open trades", "used": len(open_rows), "of": guards["max_open_trades"]})
        if guards.get("max_new_trades_per_day") is not None:
            opened_today = sum(1 for t in self.trades.values() if day and str(t["opened_at"])[:10] == day)
            risk["limits"].append({"limit": "new trades today", "used": opened_today,
                                   "of": guards["max_new_trades_per_day"]})
        return {
            "version": self.version, "run_id": self.run_id, "folder": None if self.folder is None else str(self.folder),
            "account": self.account,
            "day": day, "bar_done_at": self.state.get(f"{pre}bar_done_at") or self.state.get("bar_done_at"),
            "completed_today": bool(self.state.get(f"{pre}completed")),
            "marks_at": positions.get("at") if isinstance(positions, dict) else None, "spot": spot,
            "cash": None if cash_c is None else _money(cash_c),
            "initial_cash": None if self.initial_c is None else _money(self.initial_c),
            "equity": None if equity_c is None or not marked_all else _money(equity_c),
            "realized_pnl": _money(realized_c), "realized_today": _money(realized_today_c),
            "unrealized_pnl": _money(unreal_total_c) if marked_all else None, "today_pnl": today_pnl,
            "closed_trades": len(closed), "open": open_rows, "greeks": greeks_total if open_rows else None,
            "working_orders": sorted(working, key=lambda o: o.get("created_at") or ""),
            "decisions": [d for d in self.decisions if day and d["decided_at"][:10] == day],
            "risk": risk, "log": self.log[-200:], "sessions": self.sessions[-30:],
            "daily_equity": self.equity[-400:], "rows_read": self.rows_read, "ids": dict(self.ids),
        }


def _position_greeks(legs: list[dict], qty: int, spot) -> dict | None:
    """Dollar greeks of one position from its legs' per-contract greeks (delta, gamma, theta/day, vega/vol point):
    delta in shares and dollars (x spot), gamma in dollars of delta per 1 % move, theta $/day, vega $/vol point."""
    if not legs or spot is None or any(not leg.get("greeks") for leg in legs):
        return None
    d = g = th = v = 0.0
    for leg in legs:
        w = leg["ratio"] * qty * leg.get("multiplier", 100)
        dl, gm, tt, vg = leg["greeks"]
        d, g, th, v = d + w * dl, g + w * gm, th + w * tt, v + w * vg
    return {"delta_shares": round(d, 2), "delta_dollars": round(d * spot, 2),
            "gamma_dollars": round(g * spot * spot * 0.01, 2), "theta_dollars": round(th, 2),
            "vega_dollars": round(v, 2)}


def _guard_limits(config_text: str | None) -> dict:
    """The configured limits a trader watches, from the run's stored resolved config (no plugin is built)."""
    out: dict = {}
    if not config_text:
        return out
    from strikebench.safe_yaml import load_value

    try:
        cfg = load_value(config_text)
    except Exception:  # noqa: BLE001 - shown without limits
        return out
    for rm in (cfg.get("risk") or []) if isinstance(cfg, dict) else []:
        if not isinstance(rm, dict):
            continue
        params = rm.get("params") or {}
        if rm.get("name") == "daily_loss_cap" and "cap" in params:
            out["daily_loss_cap"] = float(params["cap"])
        if rm.get("name") in ("max_open_trades", "max_new_trades_per_day") and "limit" in params:
            out[rm["name"]] = int(params["limit"])
    return out


def _notches(positions) -> list[dict]:
    """The risk ladders' notches as the runtime publishes them each bar (``positions.ladders`` in live_state)."""
    if not isinstance(positions, dict):
        return []
    return [x for x in positions.get("ladders") or [] if isinstance(x, dict)]


# ------------------------------------------------------------------ sweep
class SweepSource:
    """A sweep folder: ``sweep.json``, ``trials.csv`` and the Optuna study beside them."""

    kind = "sweep"

    def __init__(self, folder: Path):
        self.folder, self.label = Path(folder), str(folder)
        self._importance = None
        self.load()

    def describe(self) -> dict:
        return {"kind": self.kind, "label": self.label, "study": self.meta.get("study")}

    def close(self) -> None:
        pass

    def load(self) -> dict:
        from strikebench.userfiles import read_text

        meta = {}
        if (self.folder / "sweep.json").is_file():
            try:
                meta = json.loads(read_text(self.folder / "sweep.json", what="sweep file", error=DashboardError,
                                            max_bytes=16 << 20))
            except ValueError:
                raise DashboardError(f"{self.folder / 'sweep.json'}: damaged sweep file (not JSON)") from None
        self.meta = meta
        rows = []
        if (self.folder / "trials.csv").is_file():
            text = read_text(self.folder / "trials.csv", what="trials file", error=DashboardError, max_bytes=64 << 20,
                             allow_empty=True)
            rows = list(csv.DictReader(text.splitlines()))
        self.rows = rows
        return meta

    def view(self) -> dict:
        objectives = self.meta.get("objectives") or []
        names = [o["name"] for o in objectives]
        columns = list(self.rows[0].keys()) if self.rows else []
        fixed = {"trial", "state", "final_equity", "trades", "seconds", "error", *names}
        params = [c for c in columns if c not in fixed]
        trials = []
        for r in self.rows:
            vals = [_float(r.get(n)) for n in names]
            trials.append({"trial": int(r["trial"]), "state": r.get("state"), "values": vals,
                           "params": {p: r.get(p) for p in params}, "final_equity": _float(r.get("final_equity")),
                           "trades": r.get("trades"), "seconds": _float(r.get("seconds")), "error": r.get("error")})
        complete = [t for t in trials if t["state"] == "complete" and all(v is not None for v in t["values"])]
        front = _pareto_front(complete, [o.get("direction", "maximize") for o in objectives])
        return {"meta": {k: v for k, v in self.meta.items() if k != "best"}, "best": self.meta.get("best", []),
                "objectives": objectives, "params": params, "trials": trials, "pareto": front}

    def importance(self) -> dict:
        """Parameter importances (Optuna's default evaluator) per objective, from the study; computed once."""
        if self._importance is not None:
            return self._importance
        out: dict = {"objectives": {}, "note": None}
        storage = self.meta.get("storage") or ""
        study_file = self.folder / "study.sqlite3"
        if not study_file.is_file() or "***" in storage:
            out["note"] = "no study file in the folder"
            self._importance = out
            return out
        try:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            from urllib.parse import quote

            # read-only: the study's SQLite file opened with mode=ro through SQLAlchemy's creator
            url = f"sqlite:///file:{quote(str(study_file.resolve()))}?mode=ro&uri=true"
            storage_obj = optuna.storages.RDBStorage(url, skip_compatibility_check=True, skip_table_creation=True)
            study = optuna.load_study(study_name=self.meta.get("study"), storage=storage_obj)
            done = [t for t in study.trials if t.state.name == "COMPLETE"]
            if len(done) < 2 or len(study.trials[0].distributions) < 1:
                out["note"] = "fewer than two complete trials"
            else:
                import warnings

                from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

                for i, o in enumerate(self.meta.get("objectives") or []):
                    try:  # the evaluator `sweep` draws importance.png with (no scikit-learn needed)
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            imp = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator(),
                                                        target=(lambda t, i=i: t.values[i]))
                    except (RuntimeError, ValueError, ZeroDivisionError):
                        continue
                    out["objectives"][o["name"]] = {k: round(float(v), 4) for k, v in imp.items()}
        except Exception as exc:  # noqa: BLE001 - the table and front still show
            out["note"] = f"importances unavailable: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        self._importance = out
        return out


def _float(x):
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _pareto_front(trials: list[dict], directions: list[str]) -> list[int]:
    if not trials or not directions:
        return []
    signs = [1 if d == "minimize" else -1 for d in directions]
    keyed = [(t["trial"], [s * v for s, v in zip(signs, t["values"])]) for t in trials]

    def dominated(a, b):
        return all(y <= x for x, y in zip(a, b)) and any(y < x for x, y in zip(a, b))

    if len(directions) == 1:
        best = min(v[0] for _, v in keyed)
        return [k for k, v in keyed if v[0] == best]
    return sorted(k for k, v in keyed if not any(dominated(v, w) for _, w in keyed))
