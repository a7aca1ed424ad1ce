"""Alembic's entry point for the record store (``serve.records.migrate`` runs it; no alembic.ini needed)."""

from alembic import context

from orpo_deploy.serve.records import make_engine, metadata

config = context.config
engine = make_engine(config.get_main_option("sqlalchemy.url"))
with engine.connect() as connection:
    # render_as_batch: SQLite cannot ALTER most things; batch mode rebuilds the table instead
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
