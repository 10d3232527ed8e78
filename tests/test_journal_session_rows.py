"""A backtest's fills, trades, trade legs, equity and breaker rows are kept in memory and written at the session's
commit (``Journal._buffered``), with the reads they need (does the trade exist, its fills) answered from memory:
every table ends exactly as a journal writing each event at once leaves it. And the journal's exact-text fast
paths (``points_text``, ``dollars_text`` of a float with at most 2 decimals) give the Decimal path's text."""

from __future__ import annotations

import io
import math
import random
import re
import sqlite3
from contextlib import contextmanager
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import numpy as np
import pytest

from strikebench import journal as J

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"runs", "journal_meta", "alembic_version"}
DIGEST = re.compile(r"-[0-9a-f]{10}\b")  # trade and order ids carry a digest of the run id


def _text(v):
    return v if not isinstance(v, str) else DIGEST.sub("-H", v)


def _dump(db: Path) -> dict[str, list[tuple]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (run_id,) = con.execute("SELECT run_id FROM runs").fetchone()
        out = {}
        for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
            if t in SKIP:
                continue
            out[t] = [tuple(_text(v.replace(run_id, "RUN")) if isinstance(v, str) else v for v in row)
                      for row in con.execute(f"SELECT * FROM {t} ORDER BY rowid")]
        return out
    finally:
        con.close()


def _backtest(out_dir: Path, market, resolved, pm) -> Path:
    from rich.console import Console

    from strikebench.engine.runner import Backtest

    bt = Backtest(resolved, console=Console(file=io.StringIO()), progress=False, pm=pm, out_dir=str(out_dir),
                  market=market)
    bt.loop()
    return bt.run_dir / J.JOURNAL_FILE


def test_a_backtests_session_rows_written_at_the_commit_equal_the_rows_written_at_once(tmp_path, monkeypatch):
    """The four shipped strategies over two weeks (opening fills, exit fills of open trades, trades settled at
    expiry and partly closed ones, equity rows): every journal table, row by row in rowid order, equals the same
    run journaled one event at a time (``commit_per_session`` turned off)."""
    from strikebench.config import load_config
    from strikebench.plugin_manager import get_plugin_manager

    pm = get_plugin_manager()
    resolved = load_config(ROOT / "configs" / "all_strategies.yaml", ["data.end=2023-01-20", "output.plots=false"],
                           registry=pm.registry)
    market = resolved.data.build().open()
    buffered = _dump(_backtest(tmp_path / "buffered", market, resolved, pm))
    with monkeypatch.context() as m:
        m.setattr(J.Journal, "commit_per_session", lambda self: None)
        at_once = _dump(_backtest(tmp_path / "at_once", market, resolved, pm))
    assert buffered.keys() == at_once.keys()
    for table in at_once:
        assert buffered[table] == at_once[table], table
    fills = at_once["fills"]
    kinds = [f[4] for f in fills]
    assert kinds.count("settlement") > 0 and kinds.count("fill") > 100  # settlements and fills of both sides
    assert sum(1 for f in fills if f[4] == "fill" and f[5] == 0) > 20  # exit fills: trades refreshed from fills
    assert len(at_once["equity"]) == 13 and len(at_once["trades"]) > 50


# ------------------------------------------------------------------------------------------- exact text
def _points_reference(value):
    """points_text before its fast path (the Decimal path for every value)."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    d = J._decimal(round(float(value), 6) if not isinstance(value, Decimal) else value)
    two = d.quantize(J._CENT, rounding=ROUND_HALF_EVEN)
    if two == d:
        return "0.00" if two == 0 else format(two, "f")
    text = format(d.quantize(J._POINT_PLACES, rounding=ROUND_HALF_EVEN), "f")
    while text[-1] == "0" and len(text.partition(".")[2]) > 2:
        text = text[:-1]
    return text


def _dollars_reference(value):
    if value is None:
        return None
    d = J._decimal(value).quantize(J._CENT, rounding=ROUND_HALF_EVEN)
    return format(d, "f") if d != 0 else "0.00"


def _values() -> list:
    rng = random.Random(15)
    ticks = [k * 0.05 for k in range(-400, 401)] + [k * 0.01 for k in range(-300, 301)]
    out = [0.0, -0.0, 1.0, -1.0, 0.005, -0.005, 0.015, 0.025, 1.125, 2.675, 1e16, -1e16, 1e-7, 5e-324, 1e300,
           123456789012.34, 99999999999999.99, 0.1 + 0.2, 1.45 - 0.3 * 0.5, 4700.0, 4697.5, 392.996,
           math.inf, -math.inf, math.nan]
    out += ticks + [t + rng.choice([1e-12, -1e-12, 1e-9, -1e-9, 5e-7, -5e-7, 4.9999e-7]) for t in ticks]
    out += [rng.uniform(-1e4, 1e4) for _ in range(3000)] + [round(rng.uniform(-1e6, 1e6), rng.randint(0, 7))
                                                             for _ in range(3000)]
    out += [rng.randint(-10**6, 10**6) / 100 for _ in range(3000)] + [rng.randint(-10**6, 10**6) / 1000
                                                                       for _ in range(3000)]
    return out


def _outcome(f, v):
    """The text, or the kind of error (a non-finite dollar amount, a value Decimal cannot quantize)."""
    try:
        return f(v)
    except Exception as exc:  # noqa: BLE001 - the same error is the same outcome
        return type(exc)


def test_points_text_fast_path_gives_the_decimal_paths_text():
    values = _values()
    for v in values + [np.float64(v) for v in values]:
        assert _outcome(J.points_text, v) == _outcome(_points_reference, v), repr(v)
    for v in (None, 3, -7, Decimal("1.2345"), Decimal("2"), np.float32(1.5), np.int64(4)):
        assert _outcome(J.points_text, v) == _outcome(_points_reference, v), repr(v)


def test_dollars_text_fast_path_gives_the_decimal_paths_text():
    for v in _values() + [None, 3, -7, Decimal("1.235"), np.float64(2.5), np.int64(4)]:
        assert _outcome(J.dollars_text, v) == _outcome(_dollars_reference, v), repr(v)
    assert _outcome(J.dollars_text, math.nan) is J.JournalError


def test_the_texts_kept_by_value_are_each_values_own_text_whatever_came_before():
    """points_text and dollars_text keep the text of each float they wrote, by value: asked again in any order (as
    floats and np.float64, 0.0 next to -0.0, NaN/inf between, past the memo's size), every value gets the text the
    Decimal path gives it, and a non-finite dollar amount still raises."""
    rng = random.Random(16)
    values = _values()
    values += [-v for v in values] + [0.0, -0.0] * 50
    mixed = values + [np.float64(v) for v in values]
    rng.shuffle(mixed)
    J._POINTS.clear()
    J._DOLLARS.clear()
    for _ in range(2):
        for v in mixed:
            assert _outcome(J.points_text, v) == _outcome(_points_reference, v), repr(v)
            assert _outcome(J.dollars_text, v) == _outcome(_dollars_reference, v), repr(v)
        rng.shuffle(mixed)
    assert len(J._POINTS) <= J._TEXT_MEMO and len(J._DOLLARS) <= J._TEXT_MEMO
    for v in (0.0, -0.0):
        assert J.points_text(v) == J.dollars_text(v) == "0.00"
    assert J.points_text(math.nan) is None and _outcome(J.dollars_text, math.inf) is J.JournalError


_real_tx = J.Journal._tx


class _Interrupted:  # the first statement runs, then the signal lands
    def __init__(self, db):
        self.db = db

    def execute(self, *args):
        self.db.execute(*args)
        raise SystemExit(143)

    def executemany(self, *args):
        self.db.executemany(*args)
        raise SystemExit(143)


@contextmanager
def interrupted_tx(self):
    """``Journal._tx`` whose first statement runs, then a SystemExit lands (Ctrl-C or SIGTERM mid-commit)."""
    with _real_tx(self) as db:
        yield _Interrupted(db)


def test_an_interrupted_session_commit_leaves_its_rows_for_the_commit_at_exit(tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM (a SystemExit under ``strikebench backtest``) landing inside the session commit's write
    rolls that write back and keeps the rows in memory, so the commit at exit writes them all, once."""
    path = tmp_path / "j.sqlite"
    j = J.Journal(path)
    j.start_run("r", name="r", mode="backtest")
    j.commit_per_session()
    for day in ("2024-01-08", "2024-01-09", "2024-01-10"):
        j.record_equity("r", day, 100_000.5)
    with monkeypatch.context() as m:
        m.setattr(J.Journal, "_tx", interrupted_tx)
        with pytest.raises(SystemExit):
            j.commit()
    j.commit()  # what the exit's commit does
    j.close()
    con = sqlite3.connect(path)
    try:
        assert con.execute("SELECT day, equity FROM equity ORDER BY rowid").fetchall() == [
            ("2024-01-08", "100000.50"), ("2024-01-09", "100000.50"), ("2024-01-10", "100000.50")]
    finally:
        con.close()


def test_a_trades_refresh_after_a_closing_fill_waits_for_the_commit_and_its_decision_is_found_once(tmp_path):
    """A closing fill refreshes its trade's row (its fees) when the session's rows are written, or not at all when
    the trade's close (which sets the same columns) comes first: every table equals a journal writing each event at
    once, for a trade closed in two exits over two sessions, a trade partly exited whose row the run ends with, a
    trade exited and closed in one session, and a trade opened without a decision; a trade's decision, found at
    its opening fill, is the one its close names in a later session."""
    import datetime as dt

    from strikebench.api import Decision
    from strikebench.options.contracts import OptionContract
    from strikebench.options.orders import Fill, Leg, Order, OrderType, TradeRecord

    t0 = dt.datetime(2024, 1, 8, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    legs = (Leg(OptionContract("SPXW", dt.date(2024, 1, 12), 4700.0, "P"), -1),
            Leg(OptionContract("SPXW", dt.date(2024, 1, 12), 4695.0, "P"), 1))
    back = tuple(leg.reversed() for leg in legs)

    def fill(j, trade_id, n, opens, qty, price, minutes):
        order = Order(f"O-{trade_id}-{n}", legs if opens else back, qty, OrderType.LIMIT, price, strategy="s",
                      trade_id=trade_id, opens=opens, created_at=t0)
        j.record_fill("r", order, Fill(f"F-{trade_id}-{n}", order.client_id, t0 + dt.timedelta(minutes=minutes), qty,
                                       price, (price, 0.0) if opens else (0.0, price), 0.65 * qty,
                                       ((1.0, 1.1), (0.1, 0.2))))

    def closed(j, trade_id, qty, minutes):
        j.record_trade_closed("r", TradeRecord(
            trade_id, "s", legs, qty, t0, -1.25, (-1.25, 0.0), fees=2.6, closed_at=t0 + dt.timedelta(minutes=minutes),
            exit_price=0.5, leg_exit_prices=(0.5, 0.0), exit_reason="take_profit", realized_pnl=147.4, max_loss=375.0))

    def journal_all(path, per_session):
        j = J.Journal(path)
        j.start_run("r", name="r", mode="backtest")
        if per_session:
            j.commit_per_session()
        for n in (1, 2, 3):
            j.record_decision("r", Decision(strategy="s", decided_at=t0, action="TRADE", reason="t",
                                            decision_id=f"s-{n}"), None)
        fill(j, "T-s-1-aaa", 1, True, 2, -1.25, 0)
        fill(j, "T-s-2-bbb", 1, True, 2, -1.10, 1)
        fill(j, "T-s-3-ccc", 1, True, 1, -1.05, 2)
        fill(j, "T-s-9-zzz", 1, True, 1, -1.00, 3)  # no decision s-9
        fill(j, "T-s-1-aaa", 2, False, 1, 0.50, 10)  # a first exit: the trade stays open
        fill(j, "T-s-3-ccc", 2, False, 1, 0.40, 11)
        closed(j, "T-s-3-ccc", 1, 11)  # exited and closed in the session
        j.commit()
        fill(j, "T-s-1-aaa", 3, False, 1, 0.45, 60 * 24)  # the second exit, next session: closed
        closed(j, "T-s-1-aaa", 2, 60 * 24)
        closed(j, "T-s-9-zzz", 1, 60 * 24)
        fill(j, "T-s-2-bbb", 2, False, 1, 0.30, 60 * 24 + 5)  # partly exited when the run ends
        j.commit()
        out = {t: [tuple(r) for r in j.execute(f"SELECT * FROM {t} ORDER BY rowid")]
               for t in ("fills", "trades", "trade_legs", "orders")}
        j.close()
        return out

    at_once = journal_all(tmp_path / "at_once.sqlite", per_session=False)
    buffered = journal_all(tmp_path / "buffered.sqlite", per_session=True)
    assert buffered == at_once
    con = sqlite3.connect(tmp_path / "buffered.sqlite")
    try:
        trades = {r[0]: r[1:] for r in con.execute("SELECT trade_id, decision_id, contracts, fees, closed_at"
                                                      " FROM trades")}
    finally:
        con.close()
    assert trades["T-s-2-bbb"] == ("s-2", 2, "1.95", None)  # the exit's fees are on the open trade's row
    assert trades["T-s-1-aaa"][0] == "s-1" and trades["T-s-3-ccc"][0] == "s-3" and trades["T-s-9-zzz"][0] is None
