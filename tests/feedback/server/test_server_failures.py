"""How the server fails, on SQLite and PostgreSQL: a bug is a JSON 500 without a traceback, a
busy database is a 503 with Retry-After, and every answer (these included) carries the
security headers (issue 9, items 6 and 13)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

import httpx
import pytest
from serverkit import make_project, serve_project
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from prefloop.feedback.server import create_app, serve_in_background
from prefloop.feedback.server.auth import add_annotator
from prefloop.feedback.server.security import CSP


def assert_security_headers(r: httpx.Response) -> None:
    assert r.headers["content-security-policy"] == CSP, r.status_code
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-store"


def test_a_bug_is_a_json_500_with_security_headers(db_url, tmp_path) -> None:  # noqa: ANN001
    project = make_project(tmp_path / "p", db_url)
    app = create_app(project)

    @app.get("/api/boom")
    def boom() -> None:
        raise RuntimeError("secret detail that belongs in the log only")

    token = add_annotator(project.store, "al")
    project.queue.add_edit("Fix", "brokn")
    try:
        with serve_in_background(app) as url:
            r = httpx.get(url + "/api/boom")
            assert r.status_code == 500
            assert r.headers["content-type"] == "application/json"
            assert r.json()["error"] == "internal error" and "secret" not in r.text and "Traceback" not in r.text
            assert_security_headers(r)
            # a real fault in the store (a table gone) is a 500 too, not a 503 "busy"
            with project.store.transaction() as conn:
                conn.execute(text("DROP TABLE leases"))
            r = httpx.post(url + "/api/tasks/next", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 500 and r.json()["error"] == "internal error"
            assert_security_headers(r)
    finally:
        project.store.dispose()


def test_refusals_outside_the_routes_carry_the_headers_too(sqlite_url, tmp_path) -> None:  # noqa: ANN001
    with serve_project(tmp_path / "p", sqlite_url, server={"max_body_bytes": 2048}) as served:
        c = served.client(served.token("bo"))
        too_big = c.post("/api/tasks/1/submit", content=b"x" * 5000, headers={"content-type": "application/json"})
        assert too_big.status_code == 413 and "too large" in too_big.json()["error"]
        missing = c.get("/api/no-such-thing")
        wrong_method = c.delete("/api/me")
        assert missing.status_code == 404 and wrong_method.status_code == 405
        for r in (too_big, missing, wrong_method):
            assert_security_headers(r)
            assert r.headers["content-type"] == "application/json" and set(r.json()) == {"error", "hint"}


@contextlib.contextmanager
def database_held_busy(db_url: str) -> Iterator[None]:
    """Another connection holds the lock a submit needs: SQLite's write lock (BEGIN IMMEDIATE),
    or on PostgreSQL an EXCLUSIVE lock on ``tasks`` (reads go on, writes wait)."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(url.database, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.rollback()
            conn.close()
        return
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("LOCK TABLE tasks IN EXCLUSIVE MODE"))
            yield
            conn.rollback()
    finally:
        engine.dispose()


def test_a_busy_database_answers_503_with_retry_after(db_url, tmp_path) -> None:  # noqa: ANN001
    with serve_project(tmp_path / "p", db_url, server={"busy_timeout_seconds": 0.2}) as served:
        task = served.queue.add_edit("Fix the spelling", "brokn")
        c = served.client(served.token("cy"))
        assert c.post("/api/tasks/next").status_code == 200
        answer = {"value": {"text": "broken"}, "idempotency_key": "cy-answer-0001"}
        with database_held_busy(db_url):
            r = c.post(f"/api/tasks/{task}/submit", json=answer)
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            assert r.json()["error"] == "the database is busy"
            assert_security_headers(r)
        assert served.annotations() == []  # the refused request changed nothing
        r = c.post(f"/api/tasks/{task}/submit", json=answer)  # the client's retry, as told
        assert r.status_code == 200 and r.json()["duplicate"] is False
        assert len(served.annotations()) == 1


@pytest.mark.parametrize(("asked", "served"), [(500, 50), (8, 8)])
def test_request_threads_never_outnumber_pooled_connections(db_url, tmp_path, asked, served) -> None:  # noqa: ANN001
    """Each request thread holds at most one connection at a time: with no more threads than the
    pool's connections (50 on both databases), no request ever waits for the pool."""
    project = make_project(tmp_path / "p", db_url, server={"threads": asked})
    app = create_app(project)

    @app.get("/threads")
    async def threads() -> int:
        import anyio.to_thread

        return int(anyio.to_thread.current_default_thread_limiter().total_tokens)

    try:
        with serve_in_background(app) as url:
            assert httpx.get(url + "/threads").json() == served
        assert project.store.pool_capacity == 50
    finally:
        project.store.dispose()
