"""Journal administration: migrate a journal's schema to head, copy runs between journals.

``strikebench journal migrate URL_OR_PATH`` and ``strikebench journal copy SRC DST`` call these.
Migrations are Alembic revisions (``strikebench/journal_migrations``) run on a SQLAlchemy
connection; the copy goes through :class:`~strikebench.journal.Journal` on both sides, so it reads
and writes exactly the text the journal stores (money included) on either backend.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from strikebench.journal import Journal, JournalError, open_read_only
from strikebench.journal_db import POSTGRES, PgConnection, backend_of, libpq_url, mask_url, revision, sqlite_path
from strikebench.journal_schema import BY_NAME, HEAD_REVISION

__all__ = ["migrate", "upgrade_postgres", "copy_runs", "RUN_TABLES"]

#: tables holding a run's rows, in the order a copy writes them (parents first)
RUN_TABLES = ("runs", "trade_decisions", "orders", "order_events", "fills", "trades", "trade_legs", "breaker_trips",
              "equity", "live_state", "live_log", "account_sessions")
_LOCK_KEY = zlib.crc32(b"strikebench journal migrations")  # one advisory lock for every migrating process


def _engine(url: str):
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    if backend_of(url) == POSTGRES:
        import psycopg

        target = libpq_url(url)
        return sa.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(target), poolclass=NullPool)
    return sa.create_engine(f"sqlite:///{sqlite_path(url).resolve()}", poolclass=NullPool)


def _upgrade(url: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parent / "journal_migrations"))
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # two runs starting on one database migrate one after the other
                import sqlalchemy as sa

                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except JournalError:
        raise
    except Exception as exc:  # a SQLAlchemy/psycopg error: one line, password masked
        text = " ".join(str(exc).split()).split(" [SQL:")[0].split(" (Background on this error")[0]
        raise JournalError(f"{mask_url(url)}: migrating the journal failed: {_scrub(url, text)}") from None
    finally:
        engine.dispose()


def _scrub(url: str, text: str) -> str:
    from urllib.parse import unquote, urlsplit

    password = urlsplit(libpq_url(url) if "://" in url else "x://").password
    return text.replace(unquote(password), "***").replace(password, "***") if password else text


def upgrade_postgres(url: str) -> None:
    """Bring a PostgreSQL journal (an empty database included) to :data:`HEAD_REVISION`."""
    _upgrade(url)


def migrate(url: str | os.PathLike) -> tuple[str | None, str]:
    """Bring a journal's schema to head; returns (revision before, revision after).

    A SQLite journal must exist and be a whole strikebench journal (a damaged or foreign file is
    refused before anything is written); a PostgreSQL database may be empty (the tables are created).
    """
    url = os.fspath(url)
    if backend_of(url) == POSTGRES:
        db = PgConnection(url)
        try:
            before = revision(db)
        finally:
            db.close()
    else:
        path = sqlite_path(url)
        if not os.path.lexists(path):
            raise JournalError(f"{path}: no journal file")
        reader = open_read_only(path)  # whole, known, not newer: else one line and nothing written
        try:
            before = revision(reader._db)
        finally:
            reader.close()
    from strikebench.journal import _check_revision

    _check_revision(mask_url(url), before)
    if before != HEAD_REVISION:
        _upgrade(url)
    return before, HEAD_REVISION


def _rows(journal: Journal, sql: str, params=()):
    return journal._db.execute(sql, params)


def copy_runs(src: str | os.PathLike, dst: str | os.PathLike, *, run_ids: list[str] | None = None,
              force: bool = False, progress=None) -> list[str]:
    """Copy runs (all, or ``run_ids``) from journal ``src`` to journal ``dst``, row for row, in one
    transaction on ``dst``; returns the run ids copied.

    Every value is copied as the journal stores it (money as exact decimal text on SQLite, NUMERIC
    on PostgreSQL: the same digits), chain and context snapshots once per checksum with their keys
    re-assigned by ``dst``. A ``dst`` already holding runs is refused unless ``force``; with ``force``
    a run already there is replaced, the others are left alone. ``src`` is opened read-only.
    """
    source = open_read_only(src)
    try:
        available = [r["run_id"] for r in source.runs()]
        if not available:
            raise JournalError(f"{source.path}: the journal holds no run")
        wanted = list(run_ids or available)
        unknown = [r for r in wanted if r not in available]
        if unknown:
            raise JournalError(f"{source.path}: no run {', '.join(repr(u) for u in unknown)} "
                               f"(it holds {', '.join(available)})")
        if backend_of(dst) != POSTGRES and not os.path.lexists(sqlite_path(dst)):
            from strikebench.journal import check_journal_target

            check_journal_target(dst, key="DST")
        target = Journal(dst)
        try:
            there = [r["run_id"] for r in target.runs()]
            if there and not force:
                raise JournalError(f"{target.path}: already holds {len(there)} run(s) ({', '.join(there[:5])}"
                                   f"{', ...' if len(there) > 5 else ''}); refusing to copy into it without --force")
            with target._tx() as db:
                snap_ids: dict[int, int] = {}
                ctx_ids: dict[int, int] = {}
                for run_id in wanted:
                    if run_id in there:
                        for table in reversed(RUN_TABLES):
                            db.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
                    _copy_run(source, db, run_id, snap_ids, ctx_ids)
                    if progress is not None:
                        progress(run_id)
        finally:
            target.close()
    finally:
        source.close()
    return wanted


def _columns(table: str) -> list[str]:
    return [c.name for c in BY_NAME[table].columns if c.kind not in ("id", "rowid")]  # keys the target assigns


def _copy_run(source: Journal, db, run_id: str, snap_ids: dict, ctx_ids: dict) -> None:
    from strikebench.journal_db import column_names, table_names

    have_tables = table_names(source._db)
    for table in RUN_TABLES:
        if table not in have_tables:  # a journal written before the table existed (breaker_trips)
            continue
        cols = _columns(table)
        have = column_names(source._db, table)
        picked = ", ".join(c if c in have else "NULL" for c in cols)  # columns added later read as empty
        # in the order written (the target numbers its own keys and rowids in that order)
        key = next((c.name for c in BY_NAME[table].columns if c.kind in ("id", "rowid")), None)
        order = f" ORDER BY {key}" if key else ""
        insert = f"INSERT INTO {table}({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        for row in _rows(source, f"SELECT {picked} FROM {table} WHERE run_id = ?{order}", (run_id,)):
            values = list(row)
            if table == "trade_decisions":
                i, j = cols.index("snapshot_id"), cols.index("context_id")
                if values[i] is not None:
                    values[i] = _snapshot(source, db, int(values[i]), snap_ids)
                if values[j] is not None:
                    values[j] = _context(source, db, int(values[j]), ctx_ids)
            db.execute(insert, values)


def _snapshot(source: Journal, db, old: int, ids: dict) -> int:
    from strikebench.journal_db import insert_id

    if old not in ids:
        cols = _columns("chain_snapshots")
        row = _rows(source, f"SELECT {', '.join(cols)} FROM chain_snapshots WHERE snapshot_id = ?", (old,)).fetchone()
        if row is None:
            raise JournalError(f"{source.path}: a decision names chain snapshot {old}, which is not there")
        found = db.execute("SELECT snapshot_id FROM chain_snapshots WHERE checksum = ?", (row["checksum"],)).fetchone()
        values = [bytes(v) if isinstance(v, (memoryview, bytearray)) else v for v in row]
        ids[old] = int(found[0]) if found else insert_id(
            db, f"INSERT INTO chain_snapshots({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", values,
            "snapshot_id")
    return ids[old]


def _context(source: Journal, db, old: int, ids: dict) -> int:
    from strikebench.journal_db import insert_id

    if old not in ids:
        row = _rows(source, "SELECT checksum, context FROM context_snapshots WHERE context_id = ?", (old,)).fetchone()
        if row is None:
            raise JournalError(f"{source.path}: a decision names context snapshot {old}, which is not there")
        found = db.execute("SELECT context_id FROM context_snapshots WHERE checksum = ?", (row[0],)).fetchone()
        ids[old] = int(found[0]) if found else insert_id(
            db, "INSERT INTO context_snapshots(checksum, context) VALUES (?, ?)", (row[0], row[1]), "context_id")
    return ids[old]
