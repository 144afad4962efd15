"""Judging a round end to end: verdicts land in the store (SQLite and PostgreSQL) with identity,
tokens, cost and latency; re-runs come from the cache; failures are recorded with their reason;
task priorities follow the judges' doubts; the agreement report and the CLI work on the result."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from chat_server import ChatServer, error, prefer
from sqlalchemy import select
from typer.testing import CliRunner

from prefloop.cli import app
from prefloop.config import parse_config
from prefloop.feedback.store.models import Annotation, Annotator, Generation, JudgeCache, Task
from prefloop.judges import judges_from_config
from prefloop.judges.runner import judge_round
from prefloop.project import Project

TINY = "tiny:llama-tiny"
KEY = "sk-runner-secret-987654321"


def make_project(tmp_path, db_url: str, judges: list[dict], **judges_extra) -> Project:  # noqa: ANN001
    data = {"name": "t", "store": {"url": db_url}, "judges": {"panel": judges, **judges_extra}}
    (tmp_path / "prefloop.yaml").write_text(yaml.safe_dump(data))
    return Project(tmp_path)


def add_tasks(project: Project) -> dict[str, list[int]]:
    q = project.queue
    compare = [
        q.add_comparison("What is 2 + 2?", ["4, that is correct", "5"]),
        q.add_comparison([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}], ["Lyon", "Paris is correct"]),
    ]
    rate = [q.add_rating("Say hi.", "Hi!", scale=(1, 5)), q.add_rating("Count to 3.", "1 2 3", scale=(1, 10))]
    rank = [q.add_ranking("Name a prime.", ["7 is correct", "8", "9"])]
    edit = [q.add_edit("Fix: teh cat", "the cat")]
    return {"compare": compare, "rate": rate, "rank": rank, "edit": edit}


def judge_rows(project: Project, name: str) -> dict[int, Annotation]:
    with project.store.session() as s:
        rows = s.scalars(select(Annotation).join(Annotator).where(Annotator.name == name)).all()
        return {r.task_id: r for r in rows}


def test_local_judge_writes_verdicts_with_identity_and_cost(tmp_path, db_url) -> None:  # noqa: ANN001
    project = make_project(tmp_path, db_url, [{"name": "tiny", "backend": "local", "model": TINY, "price_prompt_per_1k": 0.01}])
    ids = add_tasks(project)
    judge = judges_from_config(project.config)["tiny"]
    stats = judge_round(project, judge, progress=False)
    assert stats.tasks == 6 and stats.unsupported == 1  # the edit task
    assert stats.verdicts == 2 + 2 + 3 and stats.cached == 0 and stats.failed + stats.recorded == 5
    assert stats.prompt_tokens > 0 and math.isclose(stats.cost, stats.prompt_tokens / 1000 * 0.01)

    rows = judge_rows(project, "tiny")
    assert set(rows) == set(ids["compare"] + ids["rate"] + ids["rank"])
    with project.store.session() as s:
        annotator = s.scalar(select(Annotator).where(Annotator.name == "tiny"))
        assert annotator.kind == "judge" and annotator.meta["template_hash"] == judge.identity["template_hash"]
    for tid in ids["compare"]:
        r = rows[tid]
        assert r.status == "submitted" and r.meta["name"] == "tiny" and r.meta["model"] == TINY
        assert r.meta["template_hash"] == judge.identity["template_hash"] and r.meta["backend"] == "local"
        with project.store.session() as s:
            gens = s.get(Task, tid).generation_ids
        assert r.meta["positions"] == {"A": gens[0], "B": gens[1]}
        expected = "tie" if r.meta["winner"] == "tie" else gens[0 if r.meta["winner"] == "A" else 1]
        assert r.value == {"choice": expected}
        if not r.meta["consistent"]:
            assert r.value == {"choice": "tie"} and r.confidence == 0.0
        assert r.prompt_tokens > 0 and r.duration_s > 0 and math.isclose(r.cost, r.prompt_tokens / 1000 * 0.01)
    rate10 = rows[ids["rate"][1]]
    assert 1 <= rate10.value["rating"] <= 10
    assert rate10.meta["judge_scale"] == [1, 5] and math.isclose(rate10.meta["score"], 1 + (rate10.meta["judge_score"] - 1) / 4 * 9)
    assert rate10.value["rating"] == math.floor(rate10.meta["score"] + 0.5)
    rank = rows[ids["rank"][0]]
    with project.store.session() as s:
        rank_gens = s.get(Task, ids["rank"][0]).generation_ids
    if rank.status == "submitted":
        assert sorted(rank.value["ranking"]) == sorted(rank_gens)
    assert len(rank.meta["pairs"]) == 3 and {(p["a"], p["b"]) for p in rank.meta["pairs"]} == {
        (rank_gens[0], rank_gens[1]), (rank_gens[0], rank_gens[2]), (rank_gens[1], rank_gens[2])}

    # A re-run asks the model nothing and changes nothing.
    calls = judge.model_calls
    again = judge_round(project, judge, progress=False)
    assert judge.model_calls == calls
    assert again.cached == again.verdicts == 7 and again.recorded == 0 and again.cost == 0
    with project.store.session() as s:
        assert s.scalar(select(JudgeCache.judge).limit(1)) == "tiny"
    # A new judge object (another process) finds the same verdicts in the store's cache.
    fresh = judges_from_config(project.config)["tiny"]
    fresh._tok, fresh._model = judge._tok, judge._model
    judge_round(project, fresh, progress=False)
    assert fresh.model_calls == 0
    project.store.dispose()


def test_remote_failures_are_recorded_and_never_replace_good_verdicts(tmp_path, db_url, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("RUNNER_TEST_KEY", KEY)
    spec = {"name": "remote", "backend": "openai", "model": "m", "api_key_env": "RUNNER_TEST_KEY",
            "max_retries": 0, "price_prompt_per_1k": 1.0, "price_completion_per_1k": 2.0}
    with ChatServer(lambda body, n: error(500, "boom")) as down:
        project = make_project(tmp_path, db_url, [{**spec, "base_url": down.base_url}])
        ids = add_tasks(project)
        stats = judge_round(project, "remote", progress=False)
    assert stats.failed == 5 and stats.recorded == 5 and "HTTP 500: boom" in stats.errors[0]
    rows = judge_rows(project, "remote")
    for tid in ids["compare"] + ids["rate"] + ids["rank"]:
        assert rows[tid].status == "skipped" and rows[tid].value == {} and "HTTP 500: boom" in rows[tid].rationale
        assert "HTTP 500" in rows[tid].meta["error"]
    with project.store.session() as s:
        assert s.scalar(select(JudgeCache).limit(1)) is None  # failures are not cached

    with ChatServer(prefer("correct")) as up:
        project = make_project(tmp_path, db_url, [{**spec, "base_url": up.base_url}])
        stats = judge_round(project, "remote", progress=False)
    assert stats.failed == 0
    rows = judge_rows(project, "remote")
    with project.store.session() as s:
        gens = {t: s.get(Task, t).generation_ids for t in ids["compare"]}
    assert rows[ids["compare"][0]].value == {"choice": gens[ids["compare"][0]][0]}
    assert rows[ids["compare"][1]].value == {"choice": gens[ids["compare"][1]][1]}
    assert rows[ids["compare"][0]].history[-1]["status"] == "skipped"
    with project.store.session() as s:
        best = s.scalar(select(Generation.id).where(Generation.text == "7 is correct"))
    assert rows[ids["rank"][0]].value["ranking"][0] == best
    c = rows[ids["compare"][0]]
    assert c.prompt_tokens == 200 and c.completion_tokens == 2 and math.isclose(c.cost, 0.2 + 0.004)

    # The server goes down again: the good verdicts stay.
    with ChatServer(lambda body, n: error(503, "down")) as down2:
        project = make_project(tmp_path, db_url, [{**spec, "base_url": down2.base_url}])
        with project.store.session() as s:
            s.execute(JudgeCache.__table__.delete())
        stats = judge_round(project, "remote", progress=False)
    assert stats.failed == 5
    rows = judge_rows(project, "remote")
    assert all(rows[t].status == "submitted" for t in ids["compare"])

    # The key is nowhere in the store.
    with project.store.session() as s:
        dump = json.dumps([
            [(a.meta, a.rationale, a.history) for a in s.scalars(select(Annotation))],
            [a.meta for a in s.scalars(select(Annotator))],
            [c.verdict for c in s.scalars(select(JudgeCache))],
        ], default=str)
    assert KEY not in dump
    project.store.dispose()


def test_priorities_serve_doubtful_tasks_first(tmp_path, sqlite_url, monkeypatch) -> None:  # noqa: ANN001
    """A task the judges disagree on is claimed before one they agree on."""
    monkeypatch.setenv("RUNNER_TEST_KEY", KEY)

    def biased(body, n):  # noqa: ANN001, ANN202 - a position-biased judge: always "A"
        from chat_server import completion

        return completion("A", top={"A": math.log(0.9), "B": math.log(0.1)})

    common = {"backend": "openai", "model": "m", "api_key_env": "RUNNER_TEST_KEY"}
    with ChatServer(prefer("correct")) as good, ChatServer(biased) as bad:
        project = make_project(tmp_path, sqlite_url, [
            {**common, "name": "good", "base_url": good.base_url},
            {**common, "name": "bad", "base_url": bad.base_url},
        ])
        q = project.queue
        settled = q.add_comparison("Q1", ["correct", "nope"])
        doubtful = q.add_comparison("Q2", ["nope", "correct"])
        judge_round(project, "good", progress=False, task_ids=[settled, doubtful])
        judge_round(project, "bad", progress=False, task_ids=[doubtful])
    with project.store.session() as s:
        t_settled, t_doubt = s.get(Task, settled), s.get(Task, doubtful)
        assert t_settled.meta["selection"]["inconsistency"] == 0 and t_settled.meta["selection"]["disagreement"] == 0
        assert t_doubt.meta["selection"]["inconsistency"] == 0.5  # the biased judge flipped
        assert t_doubt.meta["selection"]["disagreement"] == 0.5  # good says B, bad says tie
        assert t_doubt.priority > t_settled.priority and t_settled.meta["base_priority"] == 0.0
    human = q.ensure_annotator("alice")
    assert q.claim(human).task_id == doubtful
    project.store.dispose()


def test_agreement_report_and_cli(tmp_path, sqlite_url, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("RUNNER_TEST_KEY", KEY)
    with ChatServer(prefer("correct")) as srv:
        project = make_project(tmp_path, sqlite_url, [
            {"name": "remote", "backend": "openai", "model": "m", "api_key_env": "RUNNER_TEST_KEY", "base_url": srv.base_url},
            {"name": "long-is-good", "backend": "rules", "rules": [{"type": "length", "min": 6}]},
        ])
        q = project.queue
        alice, bob = q.ensure_annotator("alice"), q.ensure_annotator("bob")
        tasks = [q.add_comparison(f"Q{i}", ["correct!", "no"] if i % 2 else ["no", "correct!"], overlap=2) for i in range(4)]
        with project.store.session() as s:
            gens = {t: s.get(Task, t).generation_ids for t in tasks}
        runner = CliRunner()
        for name in ("remote", "long-is-good"):
            res = runner.invoke(app, ["judge", "run", "--judge", name, "--project", str(tmp_path), "-q"])
            assert res.exit_code == 0, res.output
            assert "recorded (new or changed)" in res.output
    # Humans: the output containing "correct!" is better; bob once prefers the other.
    with project.store.session() as s:
        texts = {g.id: g.text for g in s.scalars(select(Generation))}
    for i, t in enumerate(tasks):
        good = next(g for g in gens[t] if texts[g] == "correct!")
        other = next(g for g in gens[t] if g != good)
        q.record(alice, t, {"choice": good})
        q.record(bob, t, {"choice": other if i == 0 else good})
    res = CliRunner().invoke(app, ["judge", "agreement", "--project", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["judge"]: r for r in json.loads(res.output)}
    # Task 0 has a split human vote (no reference label): three tasks count.
    assert rows["remote"]["n"] == 3 and rows["remote"]["agreement"] == 1.0 and rows["remote"]["consistency"] == 1.0
    assert rows["long-is-good"]["n"] == 3 and rows["long-is-good"]["agreement"] == 1.0
    res = CliRunner().invoke(app, ["judge", "agreement", "--project", str(tmp_path), "--png", str(tmp_path / "a.png")])
    assert res.exit_code == 0, res.output
    assert "κ" in res.output and "remote" in res.output
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = CliRunner().invoke(app, ["judge", "list", "--project", str(tmp_path)])
    assert res.exit_code == 0 and "long-is-good" in res.output and "remote" in res.output
    project.store.dispose()


def test_config_errors_name_the_problem() -> None:
    from prefloop.errors import ConfigError

    cases = [
        ({"panel": [{"name": "x", "backend": "openai"}]}, "needs 'base_url'"),
        ({"panel": [{"name": "x"}, {"name": "x"}]}, "repeated: ['x']"),
        ({"panel": [{"name": "p", "backend": "panel", "members": ["x", "y"]}]}, "unknown member(s) ['x', 'y']"),
        ({"panel": [{"name": "x", "backend": "openai", "base_url": "http://h/v1", "model": "m", "api_key_env": "sk-abcdefgh"}]}, "must name an environment variable"),
        ({"panel": [{"name": "x", "scale": [1, 10]}]}, "scale must lie within 0–9"),
        ({"panel": [{"name": "x", "backend": "rules", "rules": [{"type": "regex", "pattern": "("}]}]}, "invalid regex"),
        ({"panel": [{"name": "x", "temperature": 0}]}, "unknown key 'judges.panel.0.temperature'"),
        ({"panel": [{"name": "x"}], "default": "y"}, "judges.default 'y' is not a judge"),
    ]
    for judges, message in cases:
        with pytest.raises(ConfigError) as info:
            parse_config({"judges": judges})
        assert message in info.value.message, info.value.message
        assert "sk-abcdefgh" not in info.value.message


def test_run_unknown_judge_and_round(tmp_path, sqlite_url) -> None:  # noqa: ANN001
    make_project(tmp_path, sqlite_url, [{"name": "r", "backend": "rules", "rules": [{"type": "length", "max": 5}]}])
    res = CliRunner().invoke(app, ["judge", "run", "--judge", "nope", "--project", str(tmp_path)])
    assert res.exit_code != 0 and "no judge named 'nope'" in str(res.exception)
    res = CliRunner().invoke(app, ["judge", "run", "--round", "7", "--project", str(tmp_path)])
    assert res.exit_code != 0 and "no round 7" in str(res.exception)


def test_a_verdict_whose_rationale_cannot_be_stored_is_a_recorded_failure(tmp_path, db_url) -> None:  # noqa: ANN001
    """A judge's words are untrusted model output: a NUL or a lone surrogate in a rationale would
    be refused by PostgreSQL (and break every export), so that verdict fails with the reason and
    the run goes on, on both databases alike."""
    from prefloop.judges.rules import CallableJudge

    project = make_project(tmp_path, db_url, [])
    ids = add_tasks(project)
    judge = CallableJudge("odd", lambda p, o, r: (4, "fine") if o == "Hi!" else (2, "bad\x00bytes \ud800"))
    judge.cache = None
    stats = judge_round(project, judge, progress=False, task_ids=ids["rate"])
    assert (stats.verdicts, stats.recorded, stats.failed) == (2, 2, 1)
    rows = judge_rows(project, "odd")
    good, bad = rows[ids["rate"][0]], rows[ids["rate"][1]]
    assert (good.status, good.rationale) == ("submitted", "fine")
    assert bad.status == "skipped" and "rationale holds an invalid character (lone surrogate U+D800)" in bad.meta["error"]
