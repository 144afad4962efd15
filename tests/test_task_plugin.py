"""The task plug-in contract and its worked example, ``arithmetic``: the oracle sees format and
correctness, the shipped rule judge only the format, a careful human's fix scores 1; a TaskSpec is
reachable by name or ``package.module:NAME`` from the evaluation config and from
``prefloop simulate-annotators --oracle`` (old forms still work)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from serverkit import serve_project
from sqlalchemy import select
from typer.testing import CliRunner

from prefloop.errors import ConfigError
from prefloop.sim.task import TaskSpec, load_task

ARITHMETIC = load_task("arithmetic")
ROWS = [json.loads(line) for line in Path(ARITHMETIC.prompts).read_text().splitlines()]


def make_task() -> TaskSpec:
    """A task factory (``package.module:function`` returning a TaskSpec)."""
    return TaskSpec(name="made", prompts=ARITHMETIC.prompts, oracle=lambda meta, messages, reply: 1.0)


NOT_A_TASK = 42


def old_style_factory(project: Any) -> Any:
    """The old ``--oracle module:factory`` form: called with the project, returns an oracle."""
    from prefloop.sim import ScoreOracle

    old_style_factory.called_with = project.root
    return ScoreOracle(lambda task, gid, text: 1.0 if text.endswith("4") else 0.0)


def test_the_oracle_sees_format_and_correctness_and_the_fix_scores_one() -> None:
    from prefloop.configs.tasks.arithmetic.task import oracle

    assert len([r for r in ROWS if r["split"] == "train"]) == 48 and len([r for r in ROWS if r["split"] == "eval"]) == 24
    for r in ROWS:
        meta, msgs = r["meta"], r["messages"]
        fixed = ARITHMETIC.fix(meta, "whatever the model said")
        assert oracle(meta, msgs, fixed) == 1.0, fixed
        assert fixed.endswith(f"Answer: {fixed.rsplit(' ', 1)[1]}")
    meta = {"answer": 3500}
    assert oracle(meta, [], "3.5 km is 3,500 meters.") == 0.5  # right, in prose
    assert oracle(meta, [], "That is 3500 m. I hope this helps!\nAnswer: 3500") == 1.0
    assert oracle(meta, [], "Answer: 350") == 0.5  # the format, a wrong number
    assert oracle(meta, [], "Answer: 3500 meters") == 0.5  # the number is right; the line is not the format
    assert oracle(meta, [], "I do not know.") == 0.0
    assert oracle({"answer": 10.5}, [], "1.5 weeks is 10.5 days") == 0.5


def test_the_shipped_rule_judge_is_blind_to_correctness() -> None:
    from prefloop.config import ProjectConfig, load_preset
    from prefloop.experiments.spec import apply_overrides
    from prefloop.judges import judges_from_config

    cfg = ProjectConfig.model_validate(apply_overrides(load_preset("default").model_dump(mode="json"), ARITHMETIC.config, "task"))
    judge = judges_from_config(cfg)["answer-format"]
    msgs = ROWS[0]["messages"]
    right, wrong, prose = "70 days.\nAnswer: 70", "Answer: 71", "That is 70 days."
    verdicts = judge.compare([msgs, msgs, msgs], [right, wrong, prose], [wrong, prose, right])
    assert [v.winner for v in verdicts] == ["tie", "A", "B"]  # the judge: format only
    meta = ROWS[0]["meta"]
    assert ARITHMETIC.oracle(meta, msgs, right) > ARITHMETIC.oracle(meta, msgs, wrong)  # the oracle (and humans): both


def test_tasks_are_found_by_name_or_path_and_errors_are_one_line() -> None:
    from prefloop.configs.tasks.arithmetic.task import oracle
    from prefloop.training.evaluation import load_oracle

    assert load_oracle("arithmetic") is oracle
    assert load_oracle("prefloop.configs.tasks.arithmetic.task:TASK") is oracle
    assert load_oracle("prefloop.configs.tasks.arithmetic.task:oracle") is oracle  # a plain function, as before
    assert load_task("support-desk").fix is not None
    assert load_task("test_task_plugin:make_task").name == "made"
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        load_task("nope")
    with pytest.raises(ConfigError, match="cannot load task 'nowhere.at.all:TASK'"):
        load_task("nowhere.at.all:TASK")
    with pytest.raises(ConfigError, match="is a int, not a prefloop.sim.task.TaskSpec"):
        load_task("test_task_plugin:NOT_A_TASK")
    with pytest.raises(ConfigError, match="oracle 'test_task_plugin:NOT_A_TASK' is not callable"):
        load_oracle("test_task_plugin:NOT_A_TASK")


def test_the_prompts_import_with_their_meta(store) -> None:  # noqa: ANN001
    from prefloop.feedback.importer import import_prompts
    from prefloop.feedback.store.models import Prompt

    assert import_prompts(store, ARITHMETIC.prompts).created == 72
    with store.session() as s:
        prompts = s.scalars(select(Prompt)).all()
        assert sorted({p.split for p in prompts}) == ["eval", "train"]
        assert all(isinstance(p.meta["answer"], (int, float)) and p.meta["explanation"] for p in prompts)


def _fill(served: Any) -> list[tuple[int, dict, str]]:
    """For 4 questions: a compare task (right vs wrong number, both formatted) and an edit task (prose)."""
    from prefloop.feedback.importer import import_prompts
    from prefloop.feedback.store.models import Prompt

    import_prompts(served.store, ARITHMETIC.prompts)
    q, edits = served.queue, []
    with served.store.session() as s:
        for p in s.scalars(select(Prompt).where(Prompt.split == "eval").order_by(Prompt.id).limit(4)):
            answer = p.meta["answer"]
            right, wrong = q.add_generations(p.id, [f"Answer: {answer}", f"Answer: {answer + 1}"], session=s)
            q.add_task("compare", [wrong, right], session=s)
            (prose,) = q.add_generations(p.id, [f"I think it is {answer}."], session=s)
            edits.append((q.add_task("edit", [prose], session=s), dict(p.meta), f"I think it is {answer}."))
    return edits


def test_simulate_annotators_with_a_task_knows_what_the_task_knows(tmp_path: Path, db_url: str) -> None:
    from prefloop.cli import app
    from prefloop.feedback.store.models import Annotation, Generation, Task

    with serve_project(tmp_path / "p", db_url, queue={"overlap": 1}) as served:
        edits = _fill(served)
        out = CliRunner().invoke(app, ["simulate-annotators", "--n", "2", "--accuracy", "1.0", "--oracle", "arithmetic",
                                       "--seconds", "compare=25,edit=60", "--order", "round-robin", "--url", served.url,
                                       "-p", str(served.project.root)])
        assert out.exit_code == 0, out.output
        with served.store.session() as s:
            rows = s.execute(select(Annotation, Task.kind).join(Task, Task.id == Annotation.task_id)).all()
            texts = dict(s.execute(select(Generation.id, Generation.text)).all())
        assert len(rows) == 8
        for a, kind in rows:
            if kind == "compare":
                assert texts[a.value["choice"]] in {f"Answer: {m['answer']}" for _, m, _ in edits}  # the right number
                assert 25 * 0.7 <= a.duration_s <= 25 * 1.3
            else:
                task_id, meta, _ = next(e for e in edits if e[0] == a.task_id)
                assert a.value["text"] == ARITHMETIC.fix(meta, "")
                assert 60 * 0.7 <= a.duration_s <= 60 * 1.3


def test_simulate_annotators_keeps_the_old_factory_form(tmp_path: Path, sqlite_url: str) -> None:
    from prefloop.cli import app

    with serve_project(tmp_path / "p", sqlite_url, queue={"overlap": 1}) as served:
        _fill(served)
        out = CliRunner().invoke(app, ["simulate-annotators", "--n", "1", "--accuracy", "1.0", "--oracle",
                                       "test_task_plugin:old_style_factory", "--url", served.url, "-p", str(served.project.root)])
        assert out.exit_code == 0, out.output
        assert old_style_factory.called_with == served.project.root
        assert len(served.annotations()) == 8
