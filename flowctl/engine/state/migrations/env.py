"""Alembic environment: flowctl passes the connection in (see migrate.py)."""

from alembic import context

from flowctl.engine.state.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()
