"""The annotation server's JSON API over a real uvicorn server, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re

import pytest
from serverkit import serve_project
from sqlalchemy import select
from typer.testing import CliRunner

from prefloop.cli import app as cli_app
from prefloop.errors import AuthError
from prefloop.feedback.agreement import inter_annotator
from prefloop.feedback.server.annotator_api import display_order
from prefloop.feedback.server.auth import authenticate, hash_token
from prefloop.feedback.store.models import Annotator, Generation, Task


@pytest.fixture
def served(db_url, tmp_path):  # noqa: ANN001, ANN201
    with serve_project(tmp_path / "proj", db_url, queue={"overlap": 1, "rating_scale": [1, 7]}) as s:
        yield s


def test_claim_submit_retry_and_store(served) -> None:  # noqa: ANN001
    q = served.queue
    task_id = q.add_comparison("What is 2+2?", ["4", "5"])
    alice = served.client(served.token("alice"))
    r = alice.post("/api/tasks/next")
    assert r.status_code == 200
    task = r.json()
    assert task["task_id"] == task_id and task["kind"] == "compare"
    assert task["prompt"]["text"] == "What is 2+2?"
    assert [c["label"] for c in task["candidates"]] == ["A", "B"]
    assert {c["text"] for c in task["candidates"]} == {"4", "5"}
    assert task["suggestions"] is None  # judge hints are off by default
    # claiming again while holding the lease returns the same task, in the same order
    assert alice.post("/api/tasks/next").json()["candidates"] == task["candidates"]

    shown_b = task["candidates"][1]["generation_id"]
    body = {"value": {"choice": shown_b}, "idempotency_key": "alice-answer-0001", "duration_s": 3.25,
            "rationale": "B is right"}
    first = alice.post(f"/api/tasks/{task_id}/submit", json=body)
    assert first.status_code == 200, first.text
    assert first.json()["duplicate"] is False
    retry = alice.post(f"/api/tasks/{task_id}/submit", json=body)  # a retried POST with the same key
    assert retry.status_code == 200
    assert retry.json() == {**first.json(), "duplicate": True}

    rows = served.annotations("alice")
    assert len(rows) == 1
    row = rows[0]
    assert row.value == {"choice": shown_b}
    assert row.duration_s == pytest.approx(3.25)
    assert row.rationale == "B is right"
    assert row.idempotency_key == "alice-answer-0001"
    assert row.meta["shown_order"] == [c["generation_id"] for c in task["candidates"]]
    assert row.meta["via"] == "token"

    # answering again under a new key is refused: one answer per annotator and task
    again = alice.post(f"/api/tasks/{task_id}/submit", json={**body, "idempotency_key": "alice-answer-0002"})
    assert again.status_code == 409
    assert alice.post("/api/tasks/next").status_code == 204
    assert alice.get("/api/me/progress").json() == {"done": 1, "skipped": 0, "remaining": 0, "streak": 1}


def test_every_task_kind_round_trips(served) -> None:  # noqa: ANN001
    q = served.queue
    q.add_rating("Rate this haiku", "leaves fall", priority=4)
    q.add_ranking("Synonyms of happy", ["glad", "sad", "joyful"], priority=3)
    q.add_edit("Capital of Australia?", "Sydney", priority=2)
    bob = served.client(served.token("bob"))

    rate = bob.post("/api/tasks/next").json()
    assert rate["kind"] == "rate" and rate["scale"] == [1, 7]
    bad = bob.post(f"/api/tasks/{rate['task_id']}/submit", json={"value": {"rating": 8}, "idempotency_key": "bob-rate-1"})
    assert bad.status_code == 422
    assert "outside the scale 1–7" in bad.json()["error"]
    assert bob.post(f"/api/tasks/{rate['task_id']}/submit", json={"value": {"rating": 6}, "idempotency_key": "bob-rate-1"}).status_code == 200

    rank = bob.post("/api/tasks/next").json()
    assert rank["kind"] == "rank" and len(rank["candidates"]) == 3
    order = [c["generation_id"] for c in rank["candidates"]][::-1]
    assert bob.post(f"/api/tasks/{rank['task_id']}/submit", json={"value": {"ranking": order}}).status_code == 200

    edit = bob.post("/api/tasks/next").json()
    assert edit["kind"] == "edit" and edit["candidates"][0]["text"] == "Sydney"
    r = bob.post(f"/api/tasks/{edit['task_id']}/submit", json={"value": {"text": "Canberra."}, "idempotency_key": "bob-edit-1"})
    assert r.status_code == 200

    values = [a.value for a in served.annotations("bob")]
    assert values == [{"rating": 6}, {"ranking": order}, {"text": "Canberra."}]
    assert bob.post("/api/tasks/next").status_code == 204


def test_skip_and_release(served) -> None:  # noqa: ANN001
    task_id = served.queue.add_comparison("Hard question", ["x", "y"])
    carol = served.client(served.token("carol"))
    dave = served.client(served.token("dave"))
    assert carol.post("/api/tasks/next").json()["task_id"] == task_id
    assert dave.post("/api/tasks/next").status_code == 204  # carol holds the only slot
    assert carol.post(f"/api/tasks/{task_id}/release").status_code == 200
    assert carol.post(f"/api/tasks/{task_id}/release").status_code == 409  # nothing left to release
    assert carol.post("/api/tasks/next").json()["task_id"] == task_id
    r = carol.post(f"/api/tasks/{task_id}/skip", json={"reason": "I cannot judge this"})
    assert r.status_code == 200
    assert carol.post("/api/tasks/next").status_code == 204  # never served to her again
    assert dave.post("/api/tasks/next").json()["task_id"] == task_id  # the slot is free for others
    skipped = served.annotations("carol")
    assert [(a.status, a.rationale) for a in skipped] == [("skipped", "I cannot judge this")]
    assert carol.get("/api/me/progress").json()["skipped"] == 1


def test_display_order_is_random_per_annotator_and_stable(served) -> None:  # noqa: ANN001
    q = served.queue
    ids = [q.add_comparison(f"prompt {i}", [f"a{i}", f"b{i}"]) for i in range(40)]
    orders = {}
    for name in ("erin", "frank"):
        served.token(name)
        orders[name] = [display_order(served.annotator_id(name), t, [1, 2]) for t in ids]
    for name, per_task in orders.items():
        swapped = sum(o == [2, 1] for o in per_task)
        assert 8 <= swapped <= 32, f"{name}: {swapped}/40 swapped is not a fair coin"
    assert orders["erin"] != orders["frank"]
    assert display_order(7, 3, [10, 11, 12]) == display_order(7, 3, [10, 11, 12])
    assert sorted(display_order(7, 3, [10, 11, 12])) == [10, 11, 12]


def test_admin_statistics_and_roles(served) -> None:  # noqa: ANN001
    q = served.queue
    tasks = [q.add_comparison(f"p{i}", [f"good {i}", f"bad {i}"], overlap=2) for i in range(6)]
    clients = {n: served.client(served.token(n)) for n in ("gina", "hugo")}
    for name, c in clients.items():
        for i in range(6):
            t = c.post("/api/tasks/next").json()
            good = next(x["generation_id"] for x in t["candidates"] if x["text"].startswith("good"))
            bad = next(x["generation_id"] for x in t["candidates"] if x["text"].startswith("bad"))
            choice = good if (name == "gina" or i % 3) else bad  # hugo disagrees on two tasks
            r = c.post(f"/api/tasks/{t['task_id']}/submit", json={"value": {"choice": choice}, "duration_s": 2.0})
            assert r.status_code == 200
    judge = q.ensure_annotator("judge-x", kind="judge")
    with served.store.session() as s:
        for t in tasks:
            q.record(judge, t, {"choice": s.get(Task, t).generation_ids[0]}, session=s)

    annot = clients["gina"]
    for path in ("/api/admin/queue", "/api/admin/throughput", "/api/admin/agreement", "/api/admin/annotators"):
        assert annot.get(path).status_code == 403, path
    admin = served.client(served.token("root", admin=True))
    queue = admin.get("/api/admin/queue").json()
    assert queue["tasks"] == {"compare": {"complete": 6}}
    assert queue["human_annotations"] == 12 and queue["judge_annotations"] == 6 and queue["open_slots"] == 0
    assert queue["rounds"] == [{"round_id": None, "round": None, "tasks": 6, "complete": 6, "slots": 12,
                                "answered": 12, "fraction": 1.0}]
    through = admin.get("/api/admin/throughput?hours=3").json()
    assert len(through["hours"]) == 3
    per = {a["name"]: a for a in through["annotators"]}
    assert per["gina"]["total"] == 6 and per["gina"]["counts"][-1] == 6 and per["gina"]["mean_duration_s"] == 2.0
    agreement = admin.get("/api/admin/agreement").json()
    expected = inter_annotator(served.store, kind="compare")
    compare = agreement["inter_annotator"]["compare"]
    assert compare["n_tasks"] == 6 and compare["annotators"] == ["gina", "hugo"]
    assert compare["pairs"][0]["observed"] == pytest.approx(4 / 6)
    assert compare["alpha"] == pytest.approx(expected.alpha)
    assert [j["judge"] for j in agreement["judge_human"]] == ["judge-x"]
    trust = admin.get("/api/admin/trust").json()  # 4 tasks with a human majority (2 split), the judge agrees on all
    assert annot.get("/api/admin/trust").status_code == 403
    [j] = trust["judges"]
    assert (j["judge"], j["kind"], j["n"], j["agree"], j["wrong_side"], j["blind_ties"]) == ("judge-x", "compare", 4, 4, 0, 0)
    assert j["status"] == "unmeasured" and trust["min_n"] == 10 and j["low"] == pytest.approx(0.5101, abs=1e-4)
    names = {a["name"]: a for a in admin.get("/api/admin/annotators").json()}
    assert names["gina"]["submitted"] == 6 and "token_hash" not in names["gina"]
    page = admin.get("/admin")  # the dashboard needs a browser session, not a bearer token
    assert page.status_code in (303, 307) or "Sign in" in page.text


def test_export_endpoint_gives_trl_rows(served) -> None:  # noqa: ANN001
    served.queue.add_comparison("Which is right?", ["right", "wrong"])
    served.queue.add_edit("Fix me", "brokn")
    ann = served.client(served.token("ivy"))
    for _ in range(2):
        t = ann.post("/api/tasks/next").json()
        value = ({"choice": next(c["generation_id"] for c in t["candidates"] if c["text"] == "right")}
                 if t["kind"] == "compare" else {"text": "fixed"})
        assert ann.post(f"/api/tasks/{t['task_id']}/submit", json={"value": value}).status_code == 200
    admin = served.client(served.token("boss", admin=True))
    assert ann.get("/api/admin/export/dpo.jsonl").status_code == 403
    dpo = admin.get("/api/admin/export/dpo.jsonl")
    assert dpo.status_code == 200 and dpo.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in dpo.text.splitlines()]
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"], r["source"]) for r in rows] == [("right", "wrong", "human")]
    sft = [json.loads(line) for line in admin.get("/api/admin/export/sft.jsonl").text.splitlines()]
    assert sft[0]["completion"] == [{"role": "assistant", "content": "fixed"}]  # loss on the reply only
    assert sft[0]["prompt"][-1] == {"role": "user", "content": "Fix me"} and sft[0]["source"] == "human"
    old = [json.loads(line) for line in admin.get("/api/admin/export/sft.jsonl?type=messages").text.splitlines()]
    assert old[0]["messages"] == [*sft[0]["prompt"], *sft[0]["completion"]] and "prompt" not in old[0]
    assert admin.get("/api/admin/export/sft.jsonl?type=text").status_code == 422


def test_judge_suggestions_only_when_configured(db_url, tmp_path) -> None:  # noqa: ANN001
    with serve_project(tmp_path / "p", db_url, annotation={"show_judge_suggestions": True}) as served:
        q = served.queue
        task_id = q.add_comparison("Q", ["one", "two"])
        judge = q.ensure_annotator("gpt-judge", kind="judge")
        with served.store.session() as s:
            first = s.get(Task, task_id).generation_ids[0]
        q.record(judge, task_id, {"choice": first}, rationale="one is shorter", confidence=0.9)
        t = served.client(served.token("jo")).post("/api/tasks/next").json()
        assert t["suggestions"] == [{"judge": "gpt-judge", "value": {"choice": first}, "rationale": "one is shorter",
                                     "confidence": 0.9}]


def test_openapi_documents_the_api(served) -> None:  # noqa: ANN001
    schema = served.client().get("/api/openapi.json").json()
    paths = set(schema["paths"])
    assert {"/api/tasks/next", "/api/tasks/{task_id}/submit", "/api/tasks/{task_id}/skip", "/api/me/progress",
            "/api/admin/queue", "/api/admin/agreement", "/api/admin/throughput", "/api/admin/trust"} <= paths
    assert "/login" not in paths
    assert "SubmitIn" in schema["components"]["schemas"]


def test_cli_add_list_revoke(sqlite_url, tmp_path) -> None:  # noqa: ANN001
    with serve_project(tmp_path / "p", sqlite_url) as served:
        runner = CliRunner()
        proj = str(served.project.root)
        out = runner.invoke(cli_app, ["annotators", "add", "kim", "--admin", "-p", proj])
        assert out.exit_code == 0, out.output
        token = re.search(r"pfl_[\w-]{40,}", out.stdout).group(0)
        assert authenticate(served.store, token).role == "admin"
        with served.store.session() as s:
            stored = s.scalars(select(Annotator.token_hash)).all()
        assert stored == [hash_token(token)] and token not in stored  # only the hash is kept
        listing = runner.invoke(cli_app, ["annotators", "list", "-p", proj])
        assert "kim" in listing.stdout and "admin" in listing.stdout and token not in listing.stdout
        dup = runner.invoke(cli_app, ["annotators", "add", "kim", "-p", proj])
        assert dup.exit_code != 0 and "already exists" in str(dup.exception)
        assert served.client(token).get("/api/me").json()["name"] == "kim"
        assert runner.invoke(cli_app, ["annotators", "revoke", "kim", "-p", proj]).exit_code == 0
        with pytest.raises(AuthError):
            authenticate(served.store, token)
        assert served.client(token).get("/api/me").status_code == 401


def test_simulate_annotators_cli_answers_like_the_oracle(sqlite_url, tmp_path) -> None:  # noqa: ANN001
    """`prefloop simulate-annotators` against a running server: perfect annotators answer every
    task as the store's oracle says (prompt references and generation oracle scores)."""
    from prefloop.feedback.prompts import get_or_create_prompt

    with serve_project(tmp_path / "p", sqlite_url, queue={"overlap": 2}) as served:
        q = served.queue
        with served.store.session() as s:
            for i in range(6):
                prompt, _ = get_or_create_prompt(s, f"What is {i} + {i}?", reference=str(2 * i))
                ids = q.add_generations(prompt.id, [f"{2 * i + 1}", f"{2 * i}"], session=s)
                q.add_task("compare", ids, session=s)
                ids = q.add_generations(prompt.id, ["wrong"], session=s)
                q.add_task("edit", ids, session=s)
            scored = q.add_generations("Rate me", ["meh"], session=s)
            s.get(Generation, scored[0]).meta = {"oracle_score": 0.5}
            q.add_task("rate", scored, session=s)
        out = CliRunner().invoke(cli_app, ["simulate-annotators", "--n", "3", "--accuracy", "1.0", "--url", served.url,
                                           "-p", str(served.project.root)])
        assert out.exit_code == 0, out.output
        assert "100%" in out.stdout  # agreement with the oracle
        texts = _texts(served)
        rows = [a for a in served.annotations() if a.annotator.name.startswith("sim-")]
        assert len(rows) == 13 * 2
        for a in rows:
            if "choice" in a.value:
                continue  # checked below, all at once
            if "text" in a.value:
                with served.store.session() as s:
                    assert a.value["text"] == s.get(Task, a.task_id).prompt.reference  # corrected to the reference
            else:
                assert a.value == {"rating": 3}  # 0.5 on a 1–5 scale
        choices = [texts[a.value["choice"]] for a in rows if "choice" in a.value]
        assert sorted(choices) == sorted(str(2 * i) for i in range(6) for _ in range(2))


def _texts(served) -> dict[int, str]:  # noqa: ANN001
    with served.store.session() as s:
        return dict(s.execute(select(Generation.id, Generation.text)).all())
