"""Shared fixtures: a fresh store on SQLite and on a real PostgreSQL server for every store test.

PostgreSQL comes from ``PREFLOOP_TEST_POSTGRES_URL`` (``scripts/test`` starts a server and sets
it). Without it the PostgreSQL half is skipped with the reason shown, except in CI, where a
missing server is a failure.
"""

from __future__ import annotations

import os
import uuid

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from prefloop.feedback.queue import Queue
from prefloop.feedback.store.db import Store, open_store, postgres_schema_url

POSTGRES_URL = os.environ.get("PREFLOOP_TEST_POSTGRES_URL")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def postgres_url_or_skip() -> str:
    if POSTGRES_URL:
        return POSTGRES_URL
    if IN_CI:
        pytest.fail("CI must test PostgreSQL: PREFLOOP_TEST_POSTGRES_URL is not set (scripts/test starts a server)")
    pytest.skip("no PostgreSQL server: set PREFLOOP_TEST_POSTGRES_URL (scripts/test starts one)")


def fresh_postgres_url() -> str:
    """A URL whose connections use a new, empty schema: isolation without CREATE DATABASE."""
    return postgres_schema_url(postgres_url_or_skip(), f"t_{uuid.uuid4().hex[:12]}", recreate=False)


def drop_postgres_schema(url: str) -> None:
    parsed = make_url(url)
    schema = parsed.query["options"].split("=", 1)[1]
    admin = create_engine(parsed.difference_update_query(["options"]))
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:  # noqa: ANN001
    """A fresh, empty database URL, once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    url = fresh_postgres_url()
    yield url
    drop_postgres_schema(url)


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # noqa: ANN001
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def store(db_url: str) -> Store:
    s = open_store(db_url)
    yield s
    s.dispose()


@pytest.fixture
def queue(store: Store) -> Queue:
    return Queue(store, overlap=1, lease_seconds=60)
