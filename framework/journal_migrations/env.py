"""Alembic environment of the journal: run on the connection strikebench.journal_admin hands over."""

from alembic import context

from strikebench.journal_schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata(dialect=connection.dialect.name),
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
