"""Alembic revisions of the journal schema (see strikebench.journal_schema and strikebench.journal_admin)."""
