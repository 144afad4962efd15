"""Fuzz the live annotation API from its own OpenAPI schema with schemathesis, on SQLite and on
PostgreSQL, as an annotator, as an admin and without a token: no 5xx, and every answer (status,
content type, headers, body) matches the schema. Deterministic (derandomized) and bounded
(``FUZZ_EXAMPLES`` per operation) so it takes a few minutes on two cores."""

from __future__ import annotations

import json
import os

import httpx
import pytest
import schemathesis
from conftest import drop_postgres_schema, fresh_postgres_url
from hypothesis import HealthCheck, settings
from serverkit import Served, serve_project

FUZZ_EXAMPLES = int(os.environ.get("PREFLOOP_FUZZ_EXAMPLES", "25"))
AUTHS = ("annotator", "admin", "anonymous")
#: for benchmarks/fuzz_api.py: append one JSON line per request (database, auth, operation, status)
REPORT = os.environ.get("PREFLOOP_FUZZ_REPORT")
#: for benchmarks/fuzz_api.py on older code: send and record, validate nothing
COUNT_ONLY = os.environ.get("PREFLOOP_FUZZ_COUNT_ONLY") == "1"


def seed_queue(served: Served) -> None:
    """Tasks of every kind, so that claims return real tasks and submits meet real leases."""
    q = served.queue
    for i in range(40):
        q.add_comparison(f"compare {i}", [f"left {i}", f"right {i}"])
        q.add_rating(f"rate {i}", f"answer {i}")
        q.add_ranking(f"rank {i}", [f"one {i}", f"two {i}", f"three {i}"])
        q.add_edit(f"edit {i}", f"draft {i}")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request, tmp_path_factory):  # noqa: ANN001, ANN201
    """One real server per database for the whole module, with a seeded queue and two tokens."""
    root = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    url = f"sqlite:///{root / 'store.db'}" if request.param == "sqlite" else fresh_postgres_url()
    try:
        # a generous sign-in limit: the anonymous run sends many bad tokens on purpose
        with serve_project(root / "proj", url, server={"signin_attempts": 10_000}) as served:
            seed_queue(served)
            served.tokens = {"annotator": served.token("fuzz-annotator"), "admin": served.token("fuzz-admin", admin=True)}
            served.database = request.param
            yield served
    finally:
        if request.param == "postgresql":
            drop_postgres_schema(url)


@pytest.fixture(params=AUTHS)
def auth(request, live) -> tuple[str, dict[str, str]]:  # noqa: ANN001
    token = live.tokens.get(request.param)
    return request.param, ({"Authorization": f"Bearer {token}"} if token else {})


def _schema() -> dict:
    """The API's OpenAPI document, as the server builds it (no database is opened for this)."""
    from prefloop.config import ProjectConfig
    from prefloop.feedback.server import create_app
    from prefloop.feedback.store.db import Store

    return create_app(Store("sqlite://"), ProjectConfig()).openapi()


OPENAPI = _schema()
schema = schemathesis.openapi.from_dict(OPENAPI)


def test_the_live_server_serves_this_schema(live) -> None:  # noqa: ANN001
    assert httpx.get(live.url + "/api/openapi.json").json() == OPENAPI


@schemathesis.check
def refusals_name_the_field(ctx, response, case) -> bool | None:  # noqa: ANN001
    """Every 4xx is the error shape; a 422 names at least one field."""
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body.get("error"), str) and body["error"], body
        if response.status_code == 422:
            assert body["fields"] and all(f["loc"] for f in body["fields"]), body
    return None


SUBMIT = "POST /api/tasks/{task_id}/submit"


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_live_api_matches_its_schema(case, live, auth) -> None:  # noqa: ANN001
    who, headers = auth
    if COUNT_ONLY:
        record(live, who, case, case.call(base_url=live.url, headers=headers).status_code)
        return
    excluded = []
    if case.operation.label == SUBMIT:
        # A schema-valid answer may still not fit the task it answers (its kind, scale, shown ids
        # are the task's, not the schema's): the server says 422 naming body.value, checked above.
        excluded.append(schemathesis.checks.positive_data_acceptance)
    response = case.call_and_validate(base_url=live.url, headers=headers, excluded_checks=excluded,
                                      additional_checks=[refusals_name_the_field])
    record(live, who, case, response.status_code)


def record(live, who: str, case, status: int) -> None:  # noqa: ANN001
    if REPORT:
        row = {"database": live.database, "auth": who, "operation": case.operation.label, "status": status}
        with open(REPORT, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
