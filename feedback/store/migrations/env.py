"""Alembic environment: runs on the connection that ``Store.migrate()`` hands over."""

from alembic import context
from sqlalchemy import create_engine

import prefloop.retrieval.models  # noqa: E402,F401 - the knowledge-base tables share Base's metadata
from prefloop.feedback.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # plain `alembic` command line: connect from the configured URL
        url = config.get_main_option("sqlalchemy.url")
        assert url is not None  # alembic_config() sets it
        engine = create_engine(url)
        with engine.begin() as conn:
            _run(conn)
        return
    _run(connection)


def _run(connection) -> None:  # noqa: ANN001
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
