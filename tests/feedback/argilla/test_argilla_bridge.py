"""The Argilla integration (prefloop.feedback.argilla) against a real argilla-server 2.8 on loopback.

The server (its own venv, Redis, SQLite, and the TEST-ONLY in-memory search engine under
``tests/argilla_server/``) starts once per session. Annotators answer through the argilla SDK
and the server's HTTP API with their own API keys, exactly as the Argilla UI does.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from prefloop.errors import ConfigError
from prefloop.feedback import argilla as bridge
from prefloop.feedback.argilla import client as argilla_client
from prefloop.feedback.store.models import Annotation, Annotator, Round, Task
from prefloop.project import Project, init_project

pytestmark = pytest.mark.argilla
push_module = importlib.import_module("prefloop.feedback.argilla.push")  # `bridge.push` is the function

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_spec = importlib.util.spec_from_file_location(
    "prefloop_test_argilla_harness", Path(__file__).parents[2] / "argilla_server" / "harness.py"
)
harness = sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(harness)


@pytest.fixture(scope="session")
def argilla_server(tmp_path_factory, request):  # noqa: ANN001
    try:
        server = harness.start_server(tmp_path_factory.mktemp("argilla-server"))
    except harness.Unavailable as exc:
        if IN_CI:
            pytest.fail(f"CI must run the Argilla tests: {exc}")
        pytest.skip(f"no argilla-server on this machine: {exc}")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"argilla-server at {server.url}: venv check/build {server.timings['venv_s']:.1f} s, "
            f"redis + server start {server.timings['start_s']:.1f} s"
        )
    yield server
    server.stop()


def sdk(server, key: str):  # noqa: ANN001, ANN201
    import argilla as rg

    return rg.Argilla(api_url=server.url, api_key=key, timeout=30, retries=0)


@pytest.fixture(scope="session")
def owner(argilla_server):  # noqa: ANN001, ANN201
    return sdk(argilla_server, argilla_server.owner_key)


@pytest.fixture(scope="session")
def annotators(argilla_server):  # noqa: ANN001, ANN201
    return {name: sdk(argilla_server, key) for name, key in argilla_server.annotator_keys.items()}


def make_project(root: Path, server, db_url: str | None = None, **overrides) -> Project:  # noqa: ANN001
    """A project pointed at the test server, with its own dataset prefix (tests share the server)."""
    init_project(root)
    project = Project(root)
    cfg = project.config.model_copy(deep=True)
    cfg.argilla.api_url = server.url
    cfg.argilla.workspace = server.workspace
    cfg.argilla.dataset_prefix = f"t{uuid.uuid4().hex[:10]}"
    cfg.argilla.retries = 0
    cfg.argilla.timeout_s = 20
    cfg.queue.overlap = 2
    cfg.annotation.guidelines = "Pick the answer that is correct and short."
    cfg.annotation.show_judge_suggestions = True
    if db_url is not None:
        cfg.store.url = db_url
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        setattr(getattr(cfg, section), key, value)
    (root / "prefloop.yaml").write_text(cfg.to_yaml())
    return Project(root)


def add_round(project: Project, number: int = 1) -> int:
    with project.store.session() as s:
        r = Round(number=number, state="collecting")
        s.add(r)
        s.flush()
        return r.id


def add_compare(project: Project, round_id: int, i: int, chat: bool = False) -> tuple[int, list[int]]:
    q = project.queue
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"What is {i} + {i}?"}] if chat else f"What is {i} + {i}?"
    with project.store.session() as s:
        gids = q.add_generations(prompt, [f"{2 * i}", f"{2 * i + 1} <b>bold?</b>"], round_id=round_id, model="policy-r1", session=s)
        return q.add_task("compare", gids, round_id=round_id, session=s), gids


def counts(project: Project) -> tuple[int, int]:
    with project.store.session() as s:
        return s.scalar(select(func.count()).select_from(Annotation)), s.scalar(select(func.count()).select_from(Annotator))


def ann(project: Project, task_id: int, name: str) -> Annotation | None:
    with project.store.session() as s:
        return s.scalar(
            select(Annotation).join(Annotator, Annotator.id == Annotation.annotator_id)
            .where(Annotation.task_id == task_id, Annotator.name == name)
        )


def dataset_of(client, project: Project, name: str):  # noqa: ANN001, ANN201
    return client.datasets(name=f"{project.config.argilla.dataset_prefix}-{name}", workspace=project.config.argilla.workspace)


def queue_of(client, dataset_id, status: str = "pending") -> list[dict]:  # noqa: ANN001
    """What the Argilla UI asks for: this user's records with a response status, via the search engine."""
    r = client.http_client.post(
        f"/api/v1/me/datasets/{dataset_id}/records/search",
        params={"include": ["responses"], "limit": 1000},
        json={"filters": {"and": [{"type": "terms", "scope": {"entity": "response", "property": "status"}, "values": [status]}]}},
    )
    r.raise_for_status()
    return [item["record"] for item in r.json()["items"]]


def answer(client, record_id, values: dict | None, status: str = "submitted") -> None:  # noqa: ANN001
    from argilla._models import UserResponseModel

    client.api.records.create_record_response(
        record_id,
        UserResponseModel(values={q: {"value": v} for q, v in (values or {}).items()}, status=status, user_id=client.me.id),
    )


def task_of(record: dict) -> int:
    return int(record["external_id"].removeprefix(bridge.EXTERNAL_ID_PREFIX))


def pushed_round(tmp_path: Path, server, owner, number: int, n: int = 2, db_url: str | None = None):  # noqa: ANN001, ANN201
    """A project whose round ``number`` has ``n`` compare tasks (k=1), pushed: (project, round id, task ids, dataset)."""
    project = make_project(tmp_path, server, db_url, queue__overlap=1)
    rid = add_round(project, number)
    tasks = [add_compare(project, rid, i)[0] for i in range(n)]
    bridge.push(project, round_id=rid)
    return project, rid, tasks, dataset_of(owner, project, f"round-{number}-compare")


# ---------------------------------------------------------------------------------------------
def test_round_trip_push_answer_pull_repull_change_repush(tmp_path, db_url, argilla_server, owner, annotators, monkeypatch):
    from prefloop.feedback.aggregate import compare_outcome, load_task_labels, preferences
    from prefloop.feedback.agreement import cohen_kappa, inter_annotator, judge_human_agreement

    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.owner_key)
    monkeypatch.setattr(argilla_client, "_LIST_PAGE", 7)  # records are listed and logged in several pages
    monkeypatch.setattr(push_module, "_LOG_BATCH", 8)
    project = make_project(tmp_path, argilla_server, db_url)
    rid = add_round(project)
    q = project.queue
    judge = q.ensure_annotator("judge:tiny-panel", kind="judge")

    # 20 compare tasks: the right answer is A for even i, B for odd i. The judge is wrong on 3.
    compare = [add_compare(project, rid, i) for i in range(20)]
    truth = {tid: gids[0] if i % 2 == 0 else gids[1] for i, (tid, gids) in enumerate(compare)}
    for i, (tid, gids) in enumerate(compare):
        choice = truth[tid] if i not in (2, 5, 11) else next(g for g in gids if g != truth[tid])
        q.record(judge, tid, {"choice": choice}, confidence=0.5 + i / 100)
    # 5 rate tasks over one chat prompt (5 outputs), so ratings form a best-vs-worst pair.
    chat = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a prime number."}]
    with project.store.session() as s:
        outs = q.add_generations(chat, ["2", "3", "4", "nine", "I don't know"], round_id=rid, session=s)
        rate = [q.add_task("rate", [g], round_id=rid, session=s) for g in outs]
    for j, tid in enumerate(rate):
        q.record(judge, tid, {"rating": 5 - j}, confidence=0.9)

    # ---- push
    report = bridge.push(project, round_id=rid)
    assert sorted((d.name.split("-", 1)[1], d.created, d.added, d.already_there) for d in report.datasets) == [
        ("round-1-compare", True, 20, 0), ("round-1-rate", True, 5, 0),
    ]
    ds_c, ds_r = dataset_of(owner, project, "round-1-compare"), dataset_of(owner, project, "round-1-rate")
    assert ds_c.settings.distribution.min_submitted == 2 and ds_r.settings.distribution.min_submitted == 2
    assert ds_c.settings.guidelines == "Pick the answer that is correct and short."
    assert list(ds_c.settings.questions["preference"].labels) == ["A", "B", "tie"]
    assert list(ds_r.settings.questions["rating"].values) == [1, 2, 3, 4, 5]
    assert {f.name: f.type for f in ds_c.settings.fields} == {"prompt": "text", "response_a": "text", "response_b": "text"}
    assert {f.name: f.type for f in ds_r.settings.fields}["prompt"] == "chat"
    records = {r.id: r for r in ds_c.records(with_suggestions=True)}
    assert len(records) == 20
    tid0, gids0 = compare[0]
    rec0 = records[f"prefloop-task-{tid0}"]
    assert rec0.metadata["task_id"] == tid0 and rec0.metadata["generation_ids"] == gids0 and rec0.metadata["round"] == 1
    assert rec0.fields["response_b"] == "1 <b>bold?</b>"  # untrusted text travels verbatim, as plain text
    sug = rec0.suggestions["preference"]
    assert (sug.value, sug.agent, sug.type, sug.score) == ("A", "judge:tiny-panel", "model", pytest.approx(0.5))
    rec2 = records[f"prefloop-task-{compare[2][0]}"]
    assert rec2.suggestions["preference"].value == "B"  # the judge's (wrong) verdict travels as it is
    rate_recs = {r.id: r for r in ds_r.records(with_suggestions=True)}
    assert rate_recs[f"prefloop-task-{rate[1]}"].suggestions["rating"].value == 4
    assert rate_recs[f"prefloop-task-{rate[0]}"].fields["prompt"][-1].content == "Name a prime number."

    # ---- two annotators answer through Argilla, with disagreements
    alice, bob = annotators["alice"], annotators["bob"]
    label = {tid: ("A" if truth[tid] == gids[0] else "B") for tid, gids in compare}
    flip = {"A": "B", "B": "A"}
    idx = {tid: i for i, (tid, _) in enumerate(compare)}
    alice_queue = queue_of(alice, ds_c.id)
    assert len(alice_queue) == 20
    for rec in alice_queue:
        tid = task_of(rec)
        if idx[tid] == 19:
            answer(alice, rec["id"], None, status="discarded")
        else:
            values = {"preference": label[tid]}
            if idx[tid] == 0:
                values["comment"] = "clear winner"
            answer(alice, rec["id"], values)
    assert queue_of(alice, ds_c.id) == []  # the UI queue is empty for alice now
    bob_labels = {}
    for rec in queue_of(bob, ds_c.id):
        tid = task_of(rec)
        i = idx[tid]
        value = flip[label[tid]] if i in (1, 4, 7) else ("tie" if i == 10 else label[tid])
        bob_labels[tid] = value
        answer(bob, rec["id"], {"preference": value}, status="draft" if i == 18 else "submitted")
    alice_ratings, bob_ratings = [5, 4, 3, 2, 1], [5, 4, 2, 2, 1]
    for who, ratings in ((alice, alice_ratings), (bob, bob_ratings)):
        for rec in queue_of(who, ds_r.id):
            answer(who, rec["id"], {"rating": ratings[rate.index(task_of(rec))]})
    progress = ds_c.progress()
    assert progress["total"] == 20 and progress["completed"] == 18  # k=2 submitted: all but #18 (draft) and #19 (discarded)

    # ---- pull
    before = counts(project)
    pulled = bridge.pull(project, round_id=rid)
    assert sorted(pulled.new_annotators) == ["argilla:alice", "argilla:bob"]
    assert (pulled.created, pulled.skipped, pulled.drafts, pulled.updated, pulled.problems) == (19 + 19 + 10, 1, 1, 0, [])
    a0 = ann(project, tid0, "argilla:alice")
    assert a0.value == {"choice": gids0[0]} and a0.rationale == "clear winner" and a0.status == "submitted"
    assert a0.meta["argilla"]["user_id"] == str(alice.me.id) and a0.meta["argilla"]["response_status"] == "submitted"
    assert a0.meta["argilla"]["external_id"] == f"prefloop-task-{tid0}"
    assert ann(project, compare[19][0], "argilla:alice").status == "skipped"
    assert ann(project, compare[18][0], "argilla:bob") is None  # a draft is not imported
    assert ann(project, compare[10][0], "argilla:bob").value == {"choice": "tie"}
    assert ann(project, rate[2], "argilla:bob").value == {"rating": 2}
    with project.store.session() as s:
        people = {a.name: a for a in s.scalars(select(Annotator).where(Annotator.name.like("argilla:%")))}
        assert {a.kind for a in people.values()} == {"human"}
        assert people["argilla:bob"].meta["argilla"]["user_id"] == str(bob.me.id)
        t18 = s.get(Task, compare[18][0])
        assert (t18.n_done, t18.status) == (1, "open")
        assert s.get(Task, compare[0][0]).status == "complete"

    # per-task preferences: agreement → preferred (= truth); split votes and the tie stay disagreements
    outcomes = {t.task_id: compare_outcome(t) for t in load_task_labels(project.store, round_ids=[rid], kinds=["compare"])}
    for i, (tid, _) in enumerate(compare):
        o = outcomes[tid]
        if i in (1, 4, 7, 10):
            assert o.status == "disagreement", (i, o)
        else:
            assert (o.status, o.winner, o.source) == ("preferred", truth[tid], "human"), (i, o)
    prefs = preferences(project.store, round_ids=[rid], config=project.config.aggregation)
    compare_prefs = [p for p in prefs if p.method == "majority"]
    assert len(compare_prefs) == 16 and all(p.chosen_id == truth[p.task_ids[0]] for p in compare_prefs)
    rating_pairs = [p for p in prefs if p.method == "rating"]
    assert [(p.chosen_id, p.rejected_id, p.source) for p in rating_pairs] == [(outs[0], outs[4], "human")]

    # inter-annotator agreement on the 18 tasks both submitted
    ia = inter_annotator(project.store, kind="compare", round_ids=[rid])
    both = [tid for tid, _ in compare if idx[tid] not in (18, 19)]
    (pair,) = ia.pairs
    assert (pair.a, pair.b, pair.n, ia.n_tasks) == ("argilla:alice", "argilla:bob", 18, 18)
    assert pair.observed == pytest.approx(14 / 18)
    pos = {"A": "first", "B": "second", "tie": "tie"}
    expected_kappa = cohen_kappa([pos[label[t]] for t in both], [pos[bob_labels[t]] for t in both])
    assert pair.kappa == pytest.approx(expected_kappa) and 0 < pair.kappa < 1
    ia_rate = inter_annotator(project.store, kind="rate", round_ids=[rid])
    assert ia_rate.n_tasks == 5 and ia_rate.pairs[0].observed == pytest.approx(4 / 5) and ia_rate.alpha is not None
    (jh,) = judge_human_agreement(project.store, round_ids=[rid])
    assert jh.judge == "judge:tiny-panel" and jh.n == 16 and jh.agreement == pytest.approx(13 / 16)

    # ---- pull again: nothing new, nothing duplicated
    after = counts(project)
    assert after[0] == before[0] + 19 + 19 + 10 + 1 and after[1] == before[1] + 2
    again = bridge.pull(project, round_id=rid)
    assert (again.created, again.updated, again.skipped, again.unchanged, again.new_annotators) == (0, 0, 0, 49, [])
    assert counts(project) == after

    # ---- bob changes his mind on task 1 in Argilla (the UI's PUT /responses/{id})
    t1 = compare[1][0]
    mine = {task_of(r): r for r in queue_of(bob, ds_c.id, status="submitted")}
    (resp,) = [x for x in mine[t1]["responses"] if x["user_id"] == str(bob.me.id)]
    r = bob.http_client.put(f"/api/v1/responses/{resp['id']}", json={"values": {"preference": {"value": label[t1]}}, "status": "submitted"})
    assert r.status_code == 200, r.text
    changed = bridge.pull(project, round_id=rid)
    assert (changed.created, changed.updated, changed.unchanged) == (0, 1, 48)
    b1 = ann(project, t1, "argilla:bob")
    assert b1.value == {"choice": truth[t1]}
    assert [h["value"] for h in b1.history] == [{"choice": next(g for g in compare[1][1] if g != truth[t1])}]
    assert counts(project) == after
    assert compare_outcome(next(t for t in load_task_labels(project.store, round_ids=[rid]) if t.task_id == t1)).status == "preferred"

    # ---- new tasks, push again: only they are added (complete tasks are not re-sent)
    new = [add_compare(project, rid, 100 + i) for i in range(3)]
    repush = bridge.push(project, round_id=rid)
    assert [(d.created, d.added, d.already_there) for d in repush.datasets] == [(False, 3, 2)]  # 18 and 19 are still open
    ids = [r.id for r in ds_c.records(with_suggestions=False, with_responses=False)]
    assert len(ids) == len(set(ids)) == 23
    assert {f"prefloop-task-{tid}" for tid, _ in new} <= set(ids)
    assert len(list(ds_r.records(with_responses=False))) == 5


def test_rank_and_edit_kinds_and_suggestions_off(tmp_path, argilla_server, owner, annotators, monkeypatch):
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.owner_key)
    project = make_project(tmp_path, argilla_server, annotation__show_judge_suggestions=False, queue__overlap=1)
    rid = add_round(project, 3)
    q = project.queue
    judge = q.ensure_annotator("judge:x", kind="judge")
    with project.store.session() as s:
        g = q.add_generations("Sort these: 3 1 2", ["1 2 3", "3 2 1", "2 1 3"], round_id=rid, session=s)
        rank = q.add_task("rank", g, round_id=rid, session=s)
        g2 = q.add_generations("Fix: teh cat", ["teh cat"], round_id=rid, model="policy-r3", session=s)
        edit = q.add_task("edit", g2, round_id=rid, session=s)
    q.record(judge, rank, {"ranking": [g[0], g[2], g[1]]}, confidence=0.7)

    report = bridge.push(project, round_id=rid)
    assert sorted(d.name.split("-", 1)[1] for d in report.datasets) == ["round-3-edit", "round-3-rank-3"]
    ds_rank = dataset_of(owner, project, "round-3-rank-3")
    ds_edit = dataset_of(owner, project, "round-3-edit")
    assert ds_rank.settings.questions["ranking"].type == "ranking"
    (rec,) = list(ds_rank.records(with_suggestions=True))
    assert len(rec.suggestions) == 0  # judge hints are off in this project
    (erec,) = list(ds_edit.records(with_suggestions=True))
    assert (erec.suggestions["corrected"].value, erec.suggestions["corrected"].agent) == ("teh cat", "policy-r3")

    alice, bob = annotators["alice"], annotators["bob"]
    (r,) = queue_of(alice, ds_rank.id)
    answer(alice, r["id"], {"ranking": [{"value": "response_3", "rank": 1}, {"value": "response_1", "rank": 2}, {"value": "response_2", "rank": 3}]})
    (r,) = queue_of(bob, ds_rank.id)
    answer(bob, r["id"], {"ranking": [{"value": "response_1", "rank": 1}, {"value": "response_2", "rank": 1}, {"value": "response_3", "rank": 2}]})
    (e,) = queue_of(alice, ds_edit.id)
    answer(alice, e["id"], {"corrected": "the cat", "comment": "typo"})

    pulled = bridge.pull(project)  # every round
    assert pulled.created == 2
    assert ann(project, rank, "argilla:alice").value == {"ranking": [g[2], g[0], g[1]]}
    ed = ann(project, edit, "argilla:alice")
    assert (ed.value, ed.rationale) == ({"text": "the cat"}, "typo")
    (problem,) = pulled.problems  # bob's tied ranking is refused, with where and why
    assert "bob" in problem and "same rank" in problem and f"prefloop-task-{rank}" in problem
    assert ann(project, rank, "argilla:bob") is None


def test_sync_until_waits_for_k_labels(tmp_path, argilla_server, owner, annotators, monkeypatch):
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.owner_key)
    project, rid, tasks, ds = pushed_round(tmp_path, argilla_server, owner, 2)
    alice = annotators["alice"]
    first, second = sorted(queue_of(alice, ds.id), key=task_of)
    answer(alice, first["id"], {"preference": "A"})

    now = [0.0]  # a simulated clock: only the waits between pulls move it, however slow a pull is
    timed_out = bridge.sync_until(project, rid, timeout=0.6, interval=0.25, push_first=False,
                                  clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    # pulls at t = 0, 0.25 and 0.5; a fourth wait would end past the timeout
    assert not timed_out.done and timed_out.waiting_tasks == [tasks[1]] and timed_out.pulls == 3

    result: dict = {}
    seen: list[int] = []
    t = threading.Thread(target=lambda: result.update(r=bridge.sync_until(
        project, rid, timeout=60, interval=0.2, on_pull=lambda rep, waiting: seen.append(len(waiting)),
    )))
    t.start()
    deadline = time.monotonic() + 60  # until its first pull has been seen, not for a guessed time
    while not seen and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert t.is_alive()  # still waiting on the second task
    answer(alice, second["id"], {"preference": "B"})
    t.join(30)
    assert not t.is_alive()
    assert result["r"].done and result["r"].waiting_tasks == [] and seen[0] == 1 and seen[-1] == 0
    assert bridge.tasks_short_of_labels(project, rid) == []
    assert bridge.tasks_short_of_labels(project, rid, min_submitted=2) == tasks


# ---------------------------------------------------------------------------------------------
# Errors: each is one clear message, and nothing is written on either side.
def _error_project(tmp_path, server, **kw) -> tuple[Project, int]:  # noqa: ANN001
    project = make_project(tmp_path, server, **kw)
    rid = add_round(project)
    add_compare(project, rid, 1)
    with project.store.session() as s:
        g = project.queue.add_generations("Rate me", ["ok"], round_id=rid, session=s)
        project.queue.add_task("rate", g, round_id=rid, session=s)
    return project, rid


def _prefix_datasets(owner, project: Project) -> list[str]:  # noqa: ANN001
    prefix = project.config.argilla.dataset_prefix
    return sorted(m.name for m in owner.api.datasets.list() if m.name.startswith(prefix))


def test_error_server_down(tmp_path, argilla_server, monkeypatch):
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.owner_key)
    project, rid = _error_project(tmp_path, argilla_server)
    cfg = project.config.model_copy(deep=True)
    cfg.argilla.api_url = f"http://127.0.0.1:{harness.free_port()}"
    project = Project(project.root, cfg)
    before = counts(project)
    for op in (bridge.push, bridge.pull):
        with pytest.raises(bridge.ArgillaBridgeError) as exc:
            op(project, round_id=rid)
        assert "cannot reach Argilla at http://127.0.0.1:" in exc.value.message and "api_url" in exc.value.hint
    assert counts(project) == before


def test_error_bad_or_missing_key(tmp_path, argilla_server, owner, monkeypatch):
    project, rid = _error_project(tmp_path, argilla_server)
    before = counts(project)
    monkeypatch.setenv("ARGILLA_API_KEY", "not.a.real.key.12345")
    for op in (bridge.push, bridge.pull):
        with pytest.raises(bridge.ArgillaBridgeError) as exc:
            op(project, round_id=rid)
        assert "refused the API key in ARGILLA_API_KEY" in exc.value.message
        assert "not.a.real.key" not in str(exc.value)  # the secret never lands in a message
    monkeypatch.delenv("ARGILLA_API_KEY")
    with pytest.raises(ConfigError, match="ARGILLA_API_KEY is not set"):
        bridge.push(project, round_id=rid)
    assert counts(project) == before and _prefix_datasets(owner, project) == []


def test_error_missing_workspace(tmp_path, argilla_server, owner, monkeypatch):
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.owner_key)
    project, rid = _error_project(tmp_path, argilla_server, argilla__workspace="no-such-team")
    before = counts(project)
    for op in (bridge.push, bridge.pull):
        with pytest.raises(bridge.ArgillaBridgeError) as exc:
            op(project, round_id=rid)
        assert "workspace 'no-such-team' does not exist" in exc.value.message and "prefloop" in exc.value.message
        assert "argilla.workspace" in exc.value.hint
    assert counts(project) == before and _prefix_datasets(owner, project) == []


def test_error_incompatible_existing_dataset(tmp_path, argilla_server, owner, monkeypatch):
    import argilla as rg

    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.owner_key)
    project, rid = _error_project(tmp_path, argilla_server)
    name = f"{project.config.argilla.dataset_prefix}-round-1-compare"
    other = rg.Dataset(
        name=name, workspace=argilla_server.workspace, client=owner,
        settings=rg.Settings(
            fields=[rg.TextField("prompt"), rg.TextField("response_a"), rg.TextField("response_b")],
            questions=[rg.LabelQuestion("preference", labels=["good", "bad"])],
        ),
    )
    other.create()
    with pytest.raises(bridge.ArgillaBridgeError) as exc:
        bridge.push(project, round_id=rid)
    msg = exc.value.message
    assert name in msg and "cannot change after a dataset is created" in msg
    assert "question 'preference' has options ['good', 'bad'], expected ['A', 'B', 'tie']" in msg
    assert "question 'comment' is missing" in msg and "min_submitted is 1, expected 2" in msg
    assert "dataset_prefix" in exc.value.hint and "delete" in exc.value.hint
    # nothing written: the rate dataset was not created, the foreign one got no records
    assert _prefix_datasets(owner, project) == [name]
    assert list(other.records) == []


def test_error_rating_scale_argilla_cannot_show(tmp_path, argilla_server, owner, monkeypatch):
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.owner_key)
    project = make_project(tmp_path, argilla_server, queue__rating_scale=(1, 20))
    rid = add_round(project)
    with project.store.session() as s:
        g = project.queue.add_generations("Rate me", ["ok"], round_id=rid, session=s)
        project.queue.add_task("rate", g, round_id=rid, session=s)
    with pytest.raises(ConfigError, match="rating scale 1–20 cannot be shown in Argilla"):
        bridge.push(project, round_id=rid)
    assert _prefix_datasets(owner, project) == []


def test_cli_push_pull_and_one_line_error(tmp_path, argilla_server, owner, annotators):
    project = make_project(tmp_path, argilla_server, queue__overlap=1)
    rid = add_round(project, 7)
    tid, _ = add_compare(project, rid, 3, chat=True)
    exe = Path(sys.executable).parent / "prefloop"
    env = {**os.environ, "ARGILLA_API_KEY": argilla_server.owner_key, "COLUMNS": "200"}

    out = subprocess.run([exe, "argilla", "push", "--round", "7", "-p", str(tmp_path)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "round-7-compare" in out.stdout and "yes" in out.stdout
    ds = dataset_of(owner, project, "round-7-compare")
    assert {f.name: f.type for f in ds.settings.fields}["prompt"] == "chat"
    (rec,) = queue_of(annotators["bob"], ds.id)
    answer(annotators["bob"], rec["id"], {"preference": "tie"})
    out = subprocess.run([exe, "argilla", "pull", "-p", str(tmp_path)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "new annotations" in out.stdout and "argilla:bob" in out.stdout
    assert ann(project, tid, "argilla:bob").value == {"choice": "tie"}
    waited = subprocess.run(
        [exe, "argilla", "wait", "--round", "7", "--timeout", "10", "--interval", "0.2", "-p", str(tmp_path)],
        env=env, capture_output=True, text=True,
    )
    assert waited.returncode == 0 and "round 7 is fully labelled" in waited.stdout, waited.stdout + waited.stderr

    bad = subprocess.run(
        [exe, "argilla", "pull", "-p", str(tmp_path)], env={**env, "ARGILLA_API_KEY": "wrong-key-999"}, capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert "error: Argilla at" in bad.stderr and "refused the API key" in bad.stderr and "Traceback" not in bad.stderr
    assert "wrong-key-999" not in bad.stderr + bad.stdout
    unknown = subprocess.run([exe, "argilla", "push", "--round", "99", "-p", str(tmp_path)], env=env, capture_output=True, text=True)
    assert unknown.returncode == 1 and "no round numbered [99]" in unknown.stderr


def test_renamed_argilla_user_stays_one_annotator(tmp_path, argilla_server, owner, monkeypatch):
    import argilla as rg

    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.owner_key)
    project, rid, tasks, ds = pushed_round(tmp_path, argilla_server, owner, 4)
    name = f"carol{uuid.uuid4().hex[:6]}"
    user = rg.User(username=name, password="carol-password-1", role="annotator", client=owner).create()
    owner.workspaces(argilla_server.workspace).add_user(user)
    records = sorted(ds.records(with_suggestions=False), key=lambda r: r.id)

    def answer_for_carol(rec, label: str) -> None:  # noqa: ANN001 - the SDK's way to log a user's response
        ds.records.log([rg.Record(
            id=rec.id, fields=dict(rec.fields), metadata=dict(rec.metadata),
            responses=[rg.Response("preference", label, user_id=user.id, status="submitted")],
        )])

    answer_for_carol(records[0], "A")
    assert bridge.pull(project, round_id=rid).new_annotators == [f"argilla:{name}"]

    r = owner.http_client.patch(f"/api/v1/users/{user.id}", json={"username": f"{name}x"})
    assert r.status_code == 200, r.text
    answer_for_carol(records[1], "B")
    again = bridge.pull(project, round_id=rid)
    assert again.new_annotators == [] and again.created == 1
    both = [ann(project, t, f"argilla:{name}") for t in tasks]
    assert all(a is not None for a in both) and both[0].annotator_id == both[1].annotator_id


def test_error_annotator_key_cannot_manage_datasets(tmp_path, argilla_server, owner, monkeypatch):
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.annotator_keys["alice"])
    project, rid = _error_project(tmp_path, argilla_server)
    before = counts(project)
    with pytest.raises(bridge.ArgillaBridgeError, match="may not create datasets in workspace 'prefloop'") as exc:
        bridge.push(project, round_id=rid)
    assert "owner" in exc.value.hint
    assert _prefix_datasets(owner, project) == []
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.owner_key)
    bridge.push(project, round_id=rid)
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.annotator_keys["alice"])
    with pytest.raises(bridge.ArgillaBridgeError, match=r"refused a request \(HTTP 403\)"):
        bridge.pull(project, round_id=rid)  # an annotator may not read everyone's responses
    assert counts(project) == before


def test_hf_token_goes_only_to_hugging_face_spaces(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert bridge.space_headers("https://team-argilla.hf.space") == {"Authorization": "Bearer hf_secret"}
    assert bridge.space_headers("https://argilla.example.com") == {}
    assert bridge.space_headers("https://evil.hf.space.example.com") == {}
    monkeypatch.delenv("HF_TOKEN")
    assert bridge.space_headers("https://team-argilla.hf.space") == {}


# ---------------------------------------------------------------------------------------------
# Issue 9 item 10: every kind's suggestions are accepted, pushes complete, drafts withdraw answers.
def test_judge_suggestions_of_every_kind_are_accepted(tmp_path, db_url, argilla_server, owner, monkeypatch):
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.owner_key)
    project = make_project(tmp_path, argilla_server, db_url, queue__overlap=1)
    rid = add_round(project, 4)
    q = project.queue
    # A judge name Argilla's agent pattern refuses, and a confidence outside its 0–1 score range.
    odd = q.ensure_annotator("judge:gpt-4o (t=0) ✓", kind="judge")
    calibrated = q.ensure_annotator("judge:panel", kind="judge")
    tc, gc = add_compare(project, rid, 1)
    with project.store.session() as s:
        gk = q.add_generations("Sort: 3 1 2", ["1 2 3", "3 2 1", "2 1 3"], round_id=rid, session=s)
        tk = q.add_task("rank", gk, round_id=rid, session=s)
        gr = q.add_generations("Rate me", ["fine"], round_id=rid, session=s)
        tr = q.add_task("rate", gr, round_id=rid, session=s)
        ge = q.add_generations("Fix: teh cat", ["teh cat"], round_id=rid, model="org/model@rev 2 (beta)", session=s)
        te = q.add_task("edit", ge, round_id=rid, session=s)
    q.record(calibrated, tc, {"choice": gc[1]}, confidence=0.8)
    q.record(calibrated, tk, {"ranking": [gk[0], gk[2], gk[1]]}, confidence=0.7)
    q.record(odd, tr, {"rating": 4}, confidence=1.7)
    q.record(odd, te, {"text": "the cat"}, confidence=0.9)

    report = bridge.push(project, round_id=rid)
    assert sorted((d.name.split("-", 1)[1], d.added) for d in report.datasets) == [
        ("round-4-compare", 1), ("round-4-edit", 1), ("round-4-rank-3", 1), ("round-4-rate", 1),
    ]

    def suggestion(name: str, question: str):  # noqa: ANN202
        (rec,) = list(dataset_of(owner, project, name).records(with_suggestions=True))
        return rec.suggestions[question]

    s = suggestion("round-4-compare", "preference")
    assert (s.value, s.score, s.agent) == ("B", pytest.approx(0.8), "judge:panel")
    s = suggestion("round-4-rank-3", "ranking")  # a list of values takes a list of scores
    assert (s.value, s.score, s.agent) == (["response_1", "response_3", "response_2"], [pytest.approx(0.7)] * 3, "judge:panel")
    s = suggestion("round-4-rate", "rating")  # 1.7 is not a score Argilla takes: the hint goes without one
    assert (s.value, s.score) == (4, None)
    assert s.agent.startswith("judge:gpt-4o") and "✓" not in s.agent and "(" not in s.agent
    s = suggestion("round-4-edit", "corrected")  # the prefill is the output, by its model
    assert s.value == "teh cat" and s.agent.startswith("org/model") and "@" not in s.agent


def _record_ids(owner, project: Project, name: str) -> list[str]:  # noqa: ANN001
    return [r.id for r in dataset_of(owner, project, name).records(with_suggestions=False, with_responses=False)]


@pytest.mark.parametrize(("cut_at", "nth", "added"), [
    ("records/bulk", 2, 3),  # the first dataset half filled, the second not created
    ("records/bulk", 3, 2),  # the first dataset complete, the second created and empty
    ("/questions", 3, 2),  # the second dataset created without its questions (a draft)
    ("/publish", 2, 2),  # the second dataset with all its settings, never published (a draft)
])
def test_interrupted_push_is_completed_by_the_next_push(tmp_path, db_url, argilla_server, owner, monkeypatch, cut_at, nth, added):
    """The connection dies in the middle of a push; the next push completes it, with no duplicates
    and every dataset published (Argilla accepts records into a draft dataset that nobody can see)."""
    import httpx

    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.owner_key)
    monkeypatch.setattr(push_module, "_LOG_BATCH", 2)  # compare: 2 writes (2 + 1 records); rate: 1 write
    project = make_project(tmp_path, argilla_server, db_url, queue__overlap=1)
    rid = add_round(project, 6)
    compare = [add_compare(project, rid, i)[0] for i in range(3)]
    with project.store.session() as s:
        g = project.queue.add_generations("Rate me", ["ok", "fine"], round_id=rid, session=s)
        rate = [project.queue.add_task("rate", [x], round_id=rid, session=s) for x in g]

    send = httpx.Client.send
    seen = {"n": 0, "down": False}

    def flaky_send(self, request, **kw):  # noqa: ANN001, ANN202 - the network goes down at one request, for good
        if cut_at in request.url.path and request.method in ("PUT", "POST"):
            seen["n"] += 1
            seen["down"] = seen["down"] or seen["n"] == nth
        if seen["down"]:
            raise httpx.ConnectError("connection lost (test)", request=request)
        return send(self, request, **kw)

    monkeypatch.setattr(httpx.Client, "send", flaky_send)
    with pytest.raises(bridge.ArgillaBridgeError) as exc:
        bridge.push(project, round_id=rid)
    assert "Traceback" not in str(exc.value) and "safe to repeat" in (exc.value.hint or "")
    monkeypatch.setattr(httpx.Client, "send", send)

    report = bridge.push(project, round_id=rid)
    assert sum(d.added + d.already_there for d in report.datasets) == 5
    assert report.added == added
    for name, tasks in (("round-6-compare", compare), ("round-6-rate", rate)):
        ids = _record_ids(owner, project, name)
        assert sorted(ids) == sorted(f"prefloop-task-{t}" for t in tasks), name
    assert bridge.push(project, round_id=rid).added == 0
    prefix = project.config.argilla.dataset_prefix
    assert sorted((m.name, m.status) for m in owner.api.datasets.list() if m.name.startswith(prefix)) == [
        (f"{prefix}-round-6-compare", "ready"), (f"{prefix}-round-6-rate", "ready"),
    ]


def test_push_checks_every_record_before_writing(tmp_path, db_url, argilla_server, owner, monkeypatch):
    """A prompt Argilla's chat field cannot hold (a message over 20,000 characters, an empty one):
    a new dataset shows prompts as text instead; an existing chat dataset refuses the push, which
    names dataset, record and field and writes nothing anywhere."""
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.owner_key)
    project = make_project(tmp_path, argilla_server, db_url, queue__overlap=1)
    rid = add_round(project, 8)
    q = project.queue
    add_compare(project, rid, 1, chat=True)
    bridge.push(project, round_id=rid)  # a chat dataset now exists
    long_chat = [{"role": "system", "content": ""}, {"role": "user", "content": "x" * 20_001}]
    tid, _ = add_compare(project, rid, 2)
    with project.store.session() as s:
        g = q.add_generations(long_chat, ["a", "b"], round_id=rid, session=s)
        bad = q.add_task("compare", g, round_id=rid, session=s)
        gr = q.add_generations(long_chat, ["ok"], round_id=rid, session=s)
        rate = q.add_task("rate", gr, round_id=rid, session=s)
    before = _prefix_datasets(owner, project)

    with pytest.raises(bridge.ArgillaBridgeError) as exc:
        bridge.push(project, round_id=rid)
    msg = exc.value.message
    name = f"{project.config.argilla.dataset_prefix}-round-8-compare"
    assert name in msg and f"prefloop-task-{bad}" in msg and "prompt" in msg and "20000" in msg
    assert _prefix_datasets(owner, project) == before  # the rate dataset was not created
    assert len(_record_ids(owner, project, "round-8-compare")) == 1  # the good new task was not sent either

    with project.store.session() as s:  # without the bad task, the push goes through
        s.get(Task, bad).status = "cancelled"
    report = bridge.push(project, round_id=rid)
    assert sorted((d.name.split("-", 1)[1], d.added) for d in report.datasets) == [("round-8-compare", 1), ("round-8-rate", 1)]
    ds_rate = dataset_of(owner, project, "round-8-rate")
    assert {f.name: f.type for f in ds_rate.settings.fields}["prompt"] == "text"  # shown as text, in full
    (rec,) = list(ds_rate.records)
    assert rec.fields["prompt"].endswith("x" * 20_001) and "[system]" in rec.fields["prompt"]
    assert tid and rate


def test_payload_refusal_names_dataset_record_and_field_not_the_key(tmp_path, db_url, argilla_server, owner, monkeypatch):
    """A hand-made dataset with prefloop's name bounds the round metadata: Argilla answers 422,
    and prefloop says which record and field, without blaming the API key."""
    import argilla as rg

    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.owner_key)
    project = make_project(tmp_path, argilla_server, db_url, queue__overlap=1)
    rid = add_round(project, 5)
    tid, _ = add_compare(project, rid, 1)
    spec = bridge.DatasetSpec(
        name=f"{project.config.argilla.dataset_prefix}-round-5-compare", kind="compare", round_number=5,
        candidate_fields=("response_a", "response_b"), question_options=("A", "B", "tie"), min_submitted=1, chat_prompt=False,
    )
    settings = bridge.build_settings(spec, project.config.annotation.guidelines)
    settings.metadata = [rg.IntegerMetadataProperty("round", min=1, max=3)]
    rg.Dataset(name=spec.name, workspace=argilla_server.workspace, settings=settings, client=owner).create()

    with pytest.raises(bridge.ArgillaBridgeError) as exc:
        bridge.push(project, round_id=rid)
    text = f"{exc.value.message} {exc.value.hint}"
    assert "HTTP 422" in text and spec.name in text and f"prefloop-task-{tid}" in text and "round" in text
    assert "key" not in text.lower() and "owner" not in text.lower()


def test_response_moved_back_to_draft_or_deleted_is_withdrawn(tmp_path, db_url, argilla_server, owner, annotators, monkeypatch):
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.owner_key)
    project, rid, tasks, ds = pushed_round(tmp_path, argilla_server, owner, 9, db_url=db_url)
    alice, bob = annotators["alice"], annotators["bob"]
    ra, rb = sorted(queue_of(alice, ds.id), key=task_of)
    answer(alice, ra["id"], {"preference": "A", "comment": "short and right"})
    answer(bob, rb["id"], {"preference": "B"})
    first = bridge.pull(project, round_id=rid)
    assert (first.created, first.withdrawn) == (2, 0) and bridge.tasks_short_of_labels(project, rid) == []
    a_value = ann(project, tasks[0], "argilla:alice").value

    def my_response(client, record_id: str) -> dict:  # noqa: ANN001
        (rec,) = [r for r in queue_of(client, ds.id, status="submitted") if r["id"] == record_id]
        (resp,) = [x for x in rec["responses"] if x["user_id"] == str(client.me.id)]
        return resp

    # alice takes her answer back to draft (the UI's "save as draft" on a submitted record); bob deletes his
    r = alice.http_client.put(
        f"/api/v1/responses/{my_response(alice, ra['id'])['id']}", json={"values": {"preference": {"value": "A"}}, "status": "draft"}
    )
    assert r.status_code == 200, r.text
    r = bob.http_client.delete(f"/api/v1/responses/{my_response(bob, rb['id'])['id']}")
    assert r.status_code == 200, r.text

    second = bridge.pull(project, round_id=rid)
    assert (second.withdrawn, second.created, second.updated) == (2, 0, 0)
    for tid, who in ((tasks[0], "alice"), (tasks[1], "bob")):
        a = ann(project, tid, f"argilla:{who}")
        assert a.status == "skipped" and a.value == {} and a.meta["argilla"]["withdrawn"] is True
        assert a.history[-1]["status"] == "submitted" and a.history[-1]["value"]
    assert ann(project, tasks[0], "argilla:alice").history[-1]["rationale"] == "short and right"
    assert bridge.tasks_short_of_labels(project, rid) == tasks  # both slots are open again
    with project.store.session() as s:
        assert [(s.get(Task, t).status, s.get(Task, t).n_done) for t in tasks] == [("open", 0), ("open", 0)]

    again = bridge.pull(project, round_id=rid)  # idempotent
    assert (again.withdrawn, again.created, again.updated) == (0, 0, 0)
    assert len(ann(project, tasks[0], "argilla:alice").history) == 1

    # alice submits again, now choosing B: the annotation counts again, both earlier states in its history
    r = alice.http_client.put(
        f"/api/v1/responses/{_draft_response_id(alice, ds.id, ra['id'])}", json={"values": {"preference": {"value": "B"}}, "status": "submitted"}
    )
    assert r.status_code == 200, r.text
    third = bridge.pull(project, round_id=rid)
    assert (third.updated, third.withdrawn) == (1, 0)
    a = ann(project, tasks[0], "argilla:alice")
    assert a.status == "submitted" and a.value != a_value and [h["status"] for h in a.history] == ["submitted", "skipped"]
    assert bridge.tasks_short_of_labels(project, rid) == [tasks[1]]


def _draft_response_id(client, dataset_id, record_id: str) -> str:  # noqa: ANN001
    (rec,) = [r for r in queue_of(client, dataset_id, status="draft") if r["id"] == record_id]
    (resp,) = [x for x in rec["responses"] if x["user_id"] == str(client.me.id)]
    return resp["id"]
