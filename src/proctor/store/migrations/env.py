"""Alembic environment: run by ``proctor.store.engine.migrate`` with an open connection."""

from __future__ import annotations

from alembic import context

from proctor.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - we always pass a connection
    raise RuntimeError("proctor migrations run through proctor.store.engine.migrate(), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
