"""Client input the API must refuse with a 4xx that names the field, never a 500 (issue 9, item 5),
over a real server on SQLite and on PostgreSQL. Each case was a 500 (or a silently stored NUL)
before: huge integers overflowed SQLite, and FastAPI's own validation handler failed while
echoing NaN or a lone surrogate back to the client."""

from __future__ import annotations

import httpx
import pytest
from serverkit import serve_project

BIG = 10**30
I64 = 2**63  # over the API bound (2^31 - 1) and over SQLite's int64
CASES: list[tuple[str, str, str, bytes | None, str]] = [
    # (name, method, path, raw JSON body, the field the answer must name)
    ("task id 2^63 in path", "POST", f"/api/tasks/{I64}/submit", b'{"value": {"text": "x"}}', "task_id"),
    ("task id 10^30 skip", "POST", f"/api/tasks/{BIG}/skip", None, "task_id"),
    ("task id -2^63-1 release", "POST", f"/api/tasks/-{I64 + 1}/release", None, "task_id"),
    ("round_id 2^31 progress (PostgreSQL ids are 32-bit)", "GET", f"/api/me/progress?round_id={2**31}", None,
     "round_id"),
    ("unknown query parameter", "GET", "/api/me/progress?round=2", None, "round"),
    ("round_id 10^30 progress", "GET", f"/api/me/progress?round_id={BIG}", None, "round_id"),
    ("round_id 10^30 agreement", "GET", f"/api/admin/agreement?round_id={BIG}", None, "round_id"),
    ("round_id 2^63 export", "GET", f"/api/admin/export/dpo.jsonl?round_id={I64}", None, "round_id"),
    ("hours 10^30", "GET", f"/api/admin/throughput?hours={BIG}", None, "hours"),
    ("round_id 10^30 in claim body", "POST", "/api/tasks/next", b'{"round_id": %d}' % BIG, "round_id"),
    ("duration NaN", "POST", "/api/tasks/{task}/submit", b'{"value": {"text": "x"}, "duration_s": NaN}', "duration_s"),
    ("duration Infinity", "POST", "/api/tasks/{task}/submit", b'{"value": {"text": "x"}, "duration_s": Infinity}',
     "duration_s"),
    ("duration -Infinity", "POST", "/api/tasks/{task}/submit", b'{"value": {"text": "x"}, "duration_s": -Infinity}',
     "duration_s"),
    ("duration 1e400", "POST", "/api/tasks/{task}/submit", b'{"value": {"text": "x"}, "duration_s": 1e400}', "duration_s"),
    ("NaN inside value", "POST", "/api/tasks/{task}/submit", b'{"value": {"rating": NaN}}', "value"),
    ("surrogate in edit text", "POST", "/api/tasks/{task}/submit", b'{"value": {"text": "a\\ud800b"}}', "value"),
    ("surrogate key in value", "POST", "/api/tasks/{task}/submit", b'{"value": {"\\udfff": "x"}}', "value"),
    ("NUL in edit text", "POST", "/api/tasks/{task}/submit", b'{"value": {"text": "a\\u0000b"}}', "value"),
    ("surrogate in rationale", "POST", "/api/tasks/{task}/submit", b'{"value": {"text": "x"}, "rationale": "\\ud800"}',
     "rationale"),
    ("NUL in rationale", "POST", "/api/tasks/{task}/submit", b'{"value": {"text": "x"}, "rationale": "a\\u0000"}',
     "rationale"),
    ("surrogate in idempotency key", "POST", "/api/tasks/{task}/submit",
     b'{"value": {"text": "x"}, "idempotency_key": "key-\\ud800-0001"}', "idempotency_key"),
    ("NUL in idempotency key", "POST", "/api/tasks/{task}/submit",
     b'{"value": {"text": "x"}, "idempotency_key": "key-\\u0000-0001"}', "idempotency_key"),
    ("surrogate in skip reason", "POST", "/api/tasks/{task}/skip", b'{"reason": "\\ud800"}', "reason"),
    ("NUL in skip reason", "POST", "/api/tasks/{task}/skip", b'{"reason": "x\\u0000"}', "reason"),
    ("surrogate as a task kind", "POST", "/api/tasks/next", b'{"kinds": ["\\ud800"]}', "kinds"),
    ("surrogate as an unknown key", "POST", "/api/tasks/next", b'{"\\ud800": 1}', "body"),
    ("NUL in a query integer", "GET", "/api/me/progress?round_id=%00", None, "round_id"),
    ("invalid UTF-8 in a query integer", "GET", "/api/me/progress?round_id=%ED%A0%80", None, "round_id"),
]


@pytest.fixture
def served(db_url, tmp_path):  # noqa: ANN001, ANN201
    with serve_project(tmp_path / "proj", db_url) as s:
        yield s


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_client_input_gets_a_4xx_naming_the_field(served, case) -> None:  # noqa: ANN001
    _, method, path, body, field = case
    task = served.queue.add_edit("Fix the spelling", "brokn")
    token = served.token("ann", admin=True)  # an admin, so that admin endpoints validate their input too
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.post(served.url + "/api/tasks/next", headers=headers).status_code == 200
    if body is not None:
        headers["content-type"] = "application/json"
    r = httpx.request(method, served.url + path.replace("{task}", str(task)), content=body, headers=headers)
    assert r.status_code == 422, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-content-type-options"] == "nosniff"
    payload = r.json()
    assert set(payload) == {"error", "hint", "fields"}
    assert field in payload["error"]
    assert any(field in [str(part) for part in f["loc"]] for f in payload["fields"]), payload
    assert served.annotations() == []  # nothing was stored
    # the server is fine afterwards: the same annotator still answers the task
    ok = httpx.post(f"{served.url}/api/tasks/{task}/submit", json={"value": {"text": "broken"}},
                    headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200, ok.text


def test_refusals_never_echo_the_input(served) -> None:  # noqa: ANN001
    """The answer says what is wrong, without the offending bytes (which may not even be encodable)."""
    served.queue.add_edit("Fix", "brokn")
    c = served.client(served.token("bea"))
    secret = "do-not-echo-" + "x" * 50
    r = c.post("/api/tasks/next", content=b'{"kinds": ["%s"]}' % secret.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 422 and secret not in r.text


def test_unknown_paths_and_bad_bodies_answer_in_the_error_shape(served) -> None:  # noqa: ANN001
    c = served.client(served.token("cy"))
    r = c.get("/api/nothing-here")
    assert r.status_code == 404 and set(r.json()) == {"error", "hint"}
    r = c.post("/api/tasks/1/submit", content=b'{"value": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["fields"][0]["loc"][0] == "body"


@pytest.mark.parametrize("token", [b"%00", b"%ED%A0%80", b"%FF%FE", b"a&token=b"], ids=["NUL", "surrogate", "not UTF-8", "twice"])
def test_the_sign_in_form_refuses_odd_tokens_with_401(sqlite_url, tmp_path, token) -> None:  # noqa: ANN001
    with serve_project(tmp_path / "proj", sqlite_url) as served:
        c = served.client()
        csrf = c.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]
        r = c.post("/login", content=b"token=" + token + b"&csrf_token=" + csrf.encode(),
                   headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 401 and "Unknown or revoked token" in r.text
