"""Alembic migrations of the prefloop store (run with ``Store.migrate()`` or ``prefloop init``)."""
