"""The journal's database layer: which backend a URL names, and a connection that speaks one SQL.

:class:`strikebench.journal.Journal` writes its SQL once, in the dialect both backends share
(``?`` placeholders, ``INSERT .. ON CONFLICT``, ``SAVEPOINT``, ``substr``). This module gives it
a connection for each backend:

* **SQLite** (``sqlite:///path``, ``sqlite:////abs/path`` or a file path): the raw
  :class:`sqlite3.Connection`, untouched. A backtest's journal is on the hot path, so nothing sits
  between the journal and the sqlite3 module.
* **PostgreSQL** (``postgresql://user[:password]@host[:port]/db[?libpq options]``, also
  ``postgres://`` and ``postgresql+psycopg://``): :class:`PgConnection`, a thin wrapper of a psycopg 3
  connection with the sqlite3 connection's surface the journal uses (``execute`` returning a
  cursor, rows readable by index and by name, ``in_transaction``, ``close``). It rewrites ``?`` to
  ``%s`` (and ``BEGIN IMMEDIATE`` to ``BEGIN``), reads ``NUMERIC`` back as the exact text PostgreSQL
  prints (``0.50`` stays ``'0.50'``, as SQLite's text column holds it), and turns every database
  error into a one-line :class:`~strikebench.journal.JournalError` with the URL's password masked.

What differs by backend beyond SQL (listing tables and columns, the schema's revision, a read-only
session) is a function here taking either connection.
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

__all__ = ["SQLITE", "POSTGRES", "backend_of", "mask_url", "has_password", "strip_password", "sqlite_path", "connect_postgres",
           "PgConnection", "table_names", "column_names", "insert_id", "is_postgres", "DatabaseError", "connect",
           "replace_sql"]

SQLITE, POSTGRES = "sqlite", "postgresql"
_PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


def _error(message: str):
    from strikebench.journal import JournalError

    return JournalError(message)


def backend_of(url: str | os.PathLike) -> str:
    """``'sqlite'`` or ``'postgresql'`` for a journal URL or path; any other scheme is one line."""
    text = os.fspath(url)
    if "://" not in text:
        return SQLITE
    scheme = text.partition("://")[0].lower()
    if scheme in ("sqlite", "sqlite3"):
        return SQLITE
    if scheme in _PG_SCHEMES:
        return POSTGRES
    raise _error(f"journal URL scheme '{scheme}' is not supported; use sqlite:///path/to/journal.sqlite, "
                 f"a file path, or postgresql://user@host/db")


def is_postgres(url) -> bool:
    return backend_of(url) == POSTGRES


_PASSWORD_PARAM = re.compile(r"(?i)(password=)[^&;\s]*")


def mask_url(url: str | os.PathLike) -> str:
    """The URL as it may be shown: a password (in the netloc or a ``password=`` option) becomes ``***``."""
    text = os.fspath(url)
    if "://" not in text:
        return text
    try:
        parts = urlsplit(text)
    except ValueError:
        return re.sub(r"//[^@/]*@", "//***@", text)
    netloc = parts.netloc
    if not has_password(text):
        return text  # nothing to hide: as given (urlunsplit would turn sqlite:///x into sqlite:/x)
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        if ":" in user:
            user = user.partition(":")[0] + ":***"
        netloc = f"{user}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, _PASSWORD_PARAM.sub(r"\1***", parts.query),
                       parts.fragment))


def has_password(url: str | os.PathLike) -> bool:
    """The URL carries a password (``user:pw@`` or a ``password=`` option)."""
    text = os.fspath(url)
    if "://" not in text:
        return False
    try:
        parts = urlsplit(text)
        in_netloc = parts.password is not None
    except ValueError:
        return "@" in text
    return in_netloc or bool(_PASSWORD_PARAM.search(parts.query))


def strip_password(url: str) -> str:
    """The URL without its password (libpq then takes it from PGPASSWORD or ~/.pgpass)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}@{host}"
    query = "&".join(p for p in parts.query.split("&") if p and not p.lower().startswith("password="))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def libpq_url(url: str) -> str:
    """``postgres://`` and ``postgresql+psycopg://`` as the ``postgresql://`` libpq reads."""
    scheme, _, rest = url.partition("://")
    return "postgresql://" + rest


def sqlite_path(url_or_path: str | os.PathLike) -> Path:
    text = os.fspath(url_or_path)
    if "://" not in text:
        return Path(text)
    if backend_of(text) != SQLITE:
        raise _error(f"{mask_url(text)}: not an SQLite journal")
    rest = text.partition("://")[2]
    # sqlite:///relative/path  ->  'relative/path';  sqlite:////abs/path -> '/abs/path'
    if not rest.startswith("/"):
        raise _error(f"journal URL '{text}': expected sqlite:///path (three slashes)")
    path = rest[1:]
    if not path or path == ":memory:":
        raise _error(f"journal URL '{text}' names no file; a journal must outlive the process")
    return Path(path)


# ------------------------------------------------------------------ PostgreSQL
class DatabaseError(Exception):
    """Marker base for callers that want sqlite3's and psycopg's errors alike (see :data:`DB_ERRORS`)."""


def _db_errors() -> tuple[type[BaseException], ...]:
    try:
        import psycopg

        return (sqlite3.DatabaseError, psycopg.Error)
    except ImportError:
        return (sqlite3.DatabaseError,)


class _Row(tuple):
    """A result row readable as ``row[0]``, ``row["name"]`` and ``dict(row)``, like :class:`sqlite3.Row`."""

    __slots__ = ()
    _index: dict = {}
    _names: tuple = ()

    def __getitem__(self, key):
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self):
        return list(self._names)


_ROW_CLASSES: dict[tuple, type] = {}


def _row_factory(cursor):
    desc = cursor.description
    if desc is None:
        return tuple
    names = tuple(c.name for c in desc)
    cls = _ROW_CLASSES.get(names)
    if cls is None:
        cls = _ROW_CLASSES[names] = type("Row", (_Row,), {"__slots__": (), "_names": names,
                                                         "_index": {n: i for i, n in enumerate(names)}})
    return cls


_SQL_CACHE: dict[str, str] = {}


def _translate(sql: str) -> str:
    out = _SQL_CACHE.get(sql)
    if out is None:
        out = sql.replace("%", "%%").replace("?", "%s")
        if out.lstrip().upper().startswith("BEGIN IMMEDIATE"):
            out = "BEGIN"
        _SQL_CACHE[sql] = out
    return out


class PgConnection:
    """A psycopg 3 connection with the sqlite3 surface :class:`~strikebench.journal.Journal` uses."""

    dialect = POSTGRES

    def __init__(self, url: str, *, read_only: bool = False, connect_timeout: int = 10):
        try:
            import psycopg
            from psycopg.types.string import TextLoader
        except ImportError:
            raise _error(f"{mask_url(url)}: a PostgreSQL journal needs psycopg: pip install 'strikebench[postgres]'") \
                from None
        self.url = url
        self.label = mask_url(url)
        self._psycopg = psycopg
        try:
            conn = psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=connect_timeout,
                                   row_factory=_row_factory)
        except psycopg.Error as exc:
            raise _error(f"{self.label}: cannot connect to the journal database: {self._clean(exc)}") from None
        conn.adapters.register_loader("numeric", TextLoader)  # exact decimal text, as SQLite stores it
        self._conn = conn
        if read_only:
            self.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")

    def _clean(self, exc) -> str:
        text = " ".join(str(exc).split()) or type(exc).__name__
        parts = urlsplit(libpq_url(self.url))
        if parts.password:
            text = text.replace(unquote(parts.password), "***").replace(parts.password, "***")
        return text

    def execute(self, sql: str, params=()):
        try:
            return self._conn.execute(_translate(sql), tuple(params) if params else None)
        except self._psycopg.errors.ReadOnlySqlTransaction:
            raise _error(f"{self.label}: opened read-only; a reading command never writes") from None
        except self._psycopg.Error as exc:
            raise _error(f"{self.label}: {self._clean(exc)}") from None

    def executemany(self, sql: str, rows) -> None:
        try:
            with self._conn.cursor() as cur:
                cur.executemany(_translate(sql), [tuple(r) for r in rows])
        except self._psycopg.errors.ReadOnlySqlTransaction:
            raise _error(f"{self.label}: opened read-only; a reading command never writes") from None
        except self._psycopg.Error as exc:
            raise _error(f"{self.label}: {self._clean(exc)}") from None

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self._conn.info.transaction_status != TransactionStatus.IDLE

    def close(self) -> None:
        self._conn.close()


def connect_postgres(url: str, *, read_only: bool = False) -> PgConnection:
    return PgConnection(url, read_only=read_only)


# ---------------------------------------------------------------- either backend
def table_names(db) -> set[str]:
    if isinstance(db, PgConnection):
        return {r[0] for r in db.execute("SELECT table_name FROM information_schema.tables"
                                         " WHERE table_schema = current_schema()")}
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def column_names(db, table: str) -> set[str]:
    if isinstance(db, PgConnection):
        return {r[0] for r in db.execute("SELECT column_name FROM information_schema.columns"
                                         " WHERE table_schema = current_schema() AND table_name = ?", (table,))}
    return {r[1] for r in db.execute(f"PRAGMA table_info({table})")}


def insert_id(db, sql: str, params, key: str) -> int:
    """Run an INSERT and return the key the database assigned."""
    if isinstance(db, PgConnection):
        return int(db.execute(f"{sql} RETURNING {key}", params).fetchone()[0])
    return int(db.execute(sql, params).lastrowid)


def revision(db) -> str | None:
    """The schema's Alembic revision (``alembic_version``), None when the journal predates it."""
    if "alembic_version" not in table_names(db):
        return None
    row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else str(row[0])


def connect(url: str | os.PathLike):
    """A writing connection to an existing journal of either backend (its tables made by
    :class:`~strikebench.journal.Journal`): the raw sqlite3 connection (WAL, rows by name) or a :class:`PgConnection`.
    For the live runtime's and the account's own rows, beside the journal's."""
    text = os.fspath(url)
    if backend_of(text) == POSTGRES:
        return PgConnection(text)
    db = sqlite3.connect(str(sqlite_path(text)), isolation_level=None, timeout=30.0)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # as the journal: durable across a process crash
    return db


def replace_sql(db, table: str, columns: tuple[str, ...], key: tuple[str, ...]) -> str:
    """``INSERT OR REPLACE`` of one row keyed by ``key``, such that the row's ``rowid`` moves to the newest (the
    order a watcher reads rows in): SQLite's REPLACE deletes and inserts; PostgreSQL's upsert sets the identity
    column to the insert's new value (``excluded.rowid``)."""
    marks = ", ".join("?" * len(columns))
    if isinstance(db, PgConnection):
        rest = [c for c in columns if c not in key]
        return (f"INSERT INTO {table}({', '.join(columns)}) VALUES ({marks}) ON CONFLICT ({', '.join(key)}) DO UPDATE"
                f" SET {', '.join(f'{c} = excluded.{c}' for c in rest)}, rowid = excluded.rowid")
    return f"INSERT OR REPLACE INTO {table}({', '.join(columns)}) VALUES ({marks})"


def quote_sqlite_uri(path: Path) -> str:
    return quote(str(path.resolve()))
