"""The store: one SQLAlchemy schema (SQLite by default, PostgreSQL for teams), its Alembic migrations,
and the pre-compiled statements of the queue's hot path. Everything else reads and writes through it."""

from .db import Store, open_store, postgres_schema_url

__all__ = ["Store", "open_store", "postgres_schema_url"]
