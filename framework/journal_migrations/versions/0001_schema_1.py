"""Schema 1: every table of strikebench.journal_schema as it stood when Alembic took over.

Revision ID: 0001
Revises:
A journal SQLite wrote before Alembic (no ``alembic_version``) is brought here too: its missing
tables are created and the columns added to schema 1 after it shipped are added (empty).
A later schema change is a NEW revision making that change; this one is never edited.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# columns added to schema 1 after it shipped (journals written before them lack them)
_ADDED_COLUMNS = (("runs", "config_resolved"), ("runs", "config_overrides"), ("fills", "leg_quotes"),
                  ("trades", "settlement_note"))


def tables_at_0001():
    """The tables as they stood at this revision: today's definition less what later revisions added (0002: the
    live tables and the ``rowid`` columns). A later revision that CHANGES a column must freeze its old form here."""
    from strikebench.journal_schema import TABLES, TABLES_0002, Table

    return tuple(Table(t.name, tuple(c for c in t.columns if c.kind != "rowid"), t.primary_key, t.indexes)
                 for t in TABLES if t.name not in TABLES_0002)


def upgrade():
    from strikebench.journal_schema import metadata

    bind = op.get_bind()
    md = metadata(tables_at_0001(), dialect=bind.dialect.name)
    md.create_all(bind, checkfirst=True)
    inspector = sa.inspect(bind)
    for table, column in _ADDED_COLUMNS:
        if column not in {c["name"] for c in inspector.get_columns(table)}:
            op.add_column(table, sa.Column(column, md.tables[table].c[column].type, nullable=True))
    meta = md.tables["journal_meta"]
    if bind.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).first() is None:
        bind.execute(meta.insert().values(key="schema_version", value="1"))


def downgrade():
    raise NotImplementedError("the journal's schema is never downgraded: copy the run to a new journal instead")
