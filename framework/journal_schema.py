"""The journal's schema: ONE definition, rendered for SQLite and for PostgreSQL.

:data:`TABLES` lists every table, column, key and index once, with a logical type per
column. Two renderers read it:

* :func:`sqlite_ddl` writes the ``CREATE TABLE`` text a new SQLite journal runs. It is
  plain string work, so a backtest (whose journal is a new SQLite file every run) never
  imports SQLAlchemy: that import alone costs about half a CPU second;
* :func:`metadata` builds SQLAlchemy Core tables from the same list; the Alembic
  revisions in ``strikebench/journal_migrations`` create and alter PostgreSQL (and, through
  ``strikebench journal migrate``, SQLite) journals from it.

Logical types: ``text``; ``int``; ``money`` — exact decimal text on SQLite (``'-252.56'``,
``'0.50'``), ``NUMERIC`` on PostgreSQL (unconstrained, so the scale written is the scale kept:
``0.50`` stays ``0.50``); ``blob``; ``id`` — an integer key the database assigns. Text is
``COLLATE "C"`` on PostgreSQL so ``ORDER BY`` on times and ids sorts byte-wise, as SQLite does.

Changing the schema: edit :data:`TABLES`, add an Alembic revision that makes the same change,
bump :data:`HEAD_REVISION`; tests/test_journal_pg.py checks that a database migrated to head
matches :func:`metadata` on both backends.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Col", "Table", "TABLES", "HEAD_REVISION", "REVISIONS", "ALEMBIC_VERSION_DDL", "sqlite_ddl", "metadata", "MONEY_COLUMNS"]

#: the Alembic revision a journal written by this version is at (``alembic_version.version_num``)
HEAD_REVISION = "0001"
#: every revision this version knows, oldest first (a journal at another one is newer than this code)
REVISIONS = ("0001",)
#: the table Alembic keeps its revision in, as Alembic itself creates it (written here for a new SQLite journal)
ALEMBIC_VERSION_DDL = ("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL, "
                       "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))")


class Col(NamedTuple):
    name: str
    kind: str  # text | int | money | blob | id
    not_null: bool = False
    default: str | None = None  # SQL literal
    check: str | None = None  # SQL expression
    references: str | None = None  # "table(column)"
    unique: bool = False


class Table(NamedTuple):
    name: str
    columns: tuple[Col, ...]
    primary_key: tuple[str, ...] = ()
    indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()


def _c(name, kind="text", nn=False, default=None, check=None, ref=None, unique=False) -> Col:
    return Col(name, kind, nn, default, check, ref, unique)


_RUN = "runs(run_id)"

TABLES: tuple[Table, ...] = (
    Table("journal_meta", (_c("key", nn=True), _c("value", nn=True)), ("key",)),
    Table("runs", (
        _c("run_id", nn=True), _c("name", nn=True), _c("mode", nn=True), _c("started_at", nn=True),
        _c("ended_at"), _c("completed", "int", nn=True, default="0", check="completed IN (0, 1)"),
        _c("config_yaml"), _c("config_hash"), _c("config_path"), _c("config_resolved"), _c("config_overrides"),
        _c("code_version", nn=True), _c("git_commit"), _c("seed", "int"), _c("output_dir"),
        _c("initial_cash", "money"), _c("strategies"), _c("fill_model"), _c("summary"),
    ), ("run_id",)),
    Table("chain_snapshots", (
        _c("snapshot_id", "id"), _c("checksum", nn=True, unique=True), _c("underlying", nn=True),
        _c("taken_at", nn=True), _c("tz", nn=True), _c("underlying_price", nn=True), _c("n_rows", "int", nn=True),
        _c("format", nn=True), _c("data", "blob", nn=True), _c("first_run_id"),
    ), ("snapshot_id",)),
    Table("context_snapshots", (
        _c("context_id", "id"), _c("checksum", nn=True, unique=True), _c("context", nn=True),
    ), ("context_id",)),
    Table("trade_decisions", (
        _c("decision_id", nn=True), _c("run_id", nn=True, ref=_RUN), _c("seq", "int", nn=True),
        _c("strategy", nn=True), _c("decided_at", nn=True), _c("action", nn=True), _c("reason", nn=True),
        _c("snapshot_id", "int", ref="chain_snapshots(snapshot_id)"), _c("snapshot_checksum"),
        _c("context_id", "int", ref="context_snapshots(context_id)"), _c("candidates", nn=True),
        _c("chosen", "int"), _c("chosen_expiry"), _c("ruleset_version", nn=True, default="''"),
    ), ("run_id", "decision_id"), (("trade_decisions_time", ("run_id", "decided_at")),)),
    Table("orders", (
        _c("order_id", nn=True), _c("run_id", nn=True, ref=_RUN), _c("strategy", nn=True), _c("trade_id"),
        _c("decision_id"), _c("opens", "int", nn=True), _c("order_type", nn=True), _c("tif", nn=True),
        _c("quantity", "int", nn=True), _c("limit_price", "money"), _c("legs", nn=True),
        _c("reason", nn=True, default="''"), _c("created_at"), _c("status", nn=True),
        _c("status_reason", nn=True, default="''"), _c("filled_quantity", "int", nn=True, default="0"),
        _c("avg_fill_price", "money"), _c("updated_at"),
    ), ("run_id", "order_id")),
    Table("order_events", (
        _c("event_id", "id"), _c("run_id", nn=True, ref=_RUN), _c("order_id", nn=True), _c("at", nn=True),
        _c("previous", nn=True), _c("status", nn=True), _c("reason", nn=True, default="''"),
    ), ("event_id",), (("order_events_order", ("run_id", "order_id")),)),
    Table("fills", (
        _c("fill_id", nn=True), _c("run_id", nn=True, ref=_RUN), _c("order_id"), _c("trade_id"),
        _c("kind", nn=True, check="kind IN ('fill', 'settlement')"), _c("opens", "int", nn=True),
        _c("filled_at", nn=True), _c("price", "money", nn=True), _c("quantity", "int", nn=True),
        _c("multiplier", "int", nn=True), _c("fees", "money", nn=True), _c("cash", "money", nn=True),
        _c("leg_prices", nn=True), _c("leg_quotes"),
    ), ("run_id", "fill_id"), (("fills_trade", ("run_id", "trade_id")),)),
    Table("trades", (
        _c("trade_id", nn=True), _c("run_id", nn=True, ref=_RUN), _c("strategy", nn=True), _c("decision_id"),
        _c("opened_at", nn=True), _c("closed_at"), _c("expiry"), _c("contracts", "int", nn=True),
        _c("multiplier", "int", nn=True), _c("entry_price", "money", nn=True), _c("entry_credit", "money", nn=True),
        _c("exit_price", "money"), _c("exit_debit", "money"), _c("fees", "money", nn=True),
        _c("realized_pnl", "money"), _c("max_loss", "money"), _c("exit_reason", nn=True, default="''"),
        _c("settlement_note"),
    ), ("run_id", "trade_id")),
    Table("trade_legs", (
        _c("run_id", nn=True, ref=_RUN), _c("trade_id", nn=True), _c("leg", "int", nn=True),
        _c("occ_symbol", nn=True), _c("root", nn=True), _c("expiry", nn=True), _c("strike", "money", nn=True),
        _c("option_right", nn=True), _c("ratio", "int", nn=True), _c("entry_price", "money"),
        _c("exit_price", "money"),
    ), ("run_id", "trade_id", "leg")),
    Table("breaker_trips", (
        _c("trip_id", "id"), _c("run_id", nn=True, ref=_RUN), _c("rule", nn=True), _c("scope", nn=True),
        _c("tripped_at", nn=True), _c("reason", nn=True), _c("figures", nn=True), _c("resets", nn=True, default="''"),
    ), ("trip_id",), (("breaker_trips_run", ("run_id", "tripped_at")),)),
    Table("equity", (
        _c("run_id", nn=True, ref=_RUN), _c("day", nn=True), _c("equity", "money", nn=True),
    ), ("run_id", "day")),
)

BY_NAME = {t.name: t for t in TABLES}
#: (table, column) pairs holding money or prices: NUMERIC on PostgreSQL, exact text on SQLite
MONEY_COLUMNS = tuple((t.name, c.name) for t in TABLES for c in t.columns if c.kind == "money")

_SQLITE_TYPES = {"text": "TEXT", "int": "INTEGER", "money": "TEXT", "blob": "BLOB", "id": "INTEGER"}


def sqlite_column_type(table: str, column: str) -> str:
    return _SQLITE_TYPES[next(c.kind for c in BY_NAME[table].columns if c.name == column)]


def sqlite_ddl() -> list[str]:
    """``CREATE TABLE/INDEX IF NOT EXISTS`` statements of a SQLite journal (no SQLAlchemy import)."""
    out = []
    for t in TABLES:
        lines = []
        for c in t.columns:
            if c.kind == "id":
                lines.append(f"{c.name} INTEGER NOT NULL PRIMARY KEY")  # the rowid: assigned on insert
                continue
            parts = [c.name, _SQLITE_TYPES[c.kind]]
            if c.not_null:
                parts.append("NOT NULL")
            if c.unique:
                parts.append("UNIQUE")
            if c.default is not None:
                parts.append(f"DEFAULT {c.default}")
            if c.check:
                parts.append(f"CHECK ({c.check})")
            if c.references:
                parts.append(f"REFERENCES {c.references}")
            lines.append(" ".join(parts))
        if t.primary_key and not any(c.kind == "id" for c in t.columns):
            lines.append(f"PRIMARY KEY ({', '.join(t.primary_key)})")
        out.append(f"CREATE TABLE IF NOT EXISTS {t.name} (\n    " + ",\n    ".join(lines) + "\n)")
        for name, cols in t.indexes:
            out.append(f"CREATE INDEX IF NOT EXISTS {name} ON {t.name}({', '.join(cols)})")
    return out


def metadata(tables: tuple[Table, ...] = TABLES):
    """SQLAlchemy Core tables of :data:`TABLES` (for Alembic and PostgreSQL)."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql

    text = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
    types = {"text": text, "int": sa.Integer(), "blob": sa.LargeBinary(),
             "money": sa.Text().with_variant(postgresql.NUMERIC(), "postgresql")}
    md = sa.MetaData()
    for t in tables:
        cols = []
        for c in t.columns:
            if c.kind == "id":
                cols.append(sa.Column(c.name, sa.Integer(), primary_key=True, autoincrement=True))
                continue
            args = [sa.ForeignKey(c.references.replace("(", ".").rstrip(")"))] if c.references else []
            cols.append(sa.Column(c.name, types[c.kind], *args, nullable=not c.not_null, unique=c.unique or None,
                                  server_default=None if c.default is None else sa.text(c.default)))
        extra = []
        if t.primary_key and not any(c.kind == "id" for c in t.columns):
            extra.append(sa.PrimaryKeyConstraint(*t.primary_key))
        extra += [sa.CheckConstraint(c.check) for c in t.columns if c.check]
        table = sa.Table(t.name, md, *cols, *extra)
        for name, cols_ in t.indexes:
            sa.Index(name, *(table.c[x] for x in cols_))
    return md
