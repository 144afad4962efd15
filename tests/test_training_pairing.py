"""Tasks from candidates: all pairs up to a cap, best-vs-worst after pointwise judging, edit tasks
for humans — created once, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from roundkit import make_project
from sqlalchemy import select


def _round_with_candidates(project, texts_per_prompt: list[list[str]]):  # noqa: ANN001, ANN202
    from prefloop.feedback.store.models import Generation, Prompt, Round

    with project.store.session() as s:
        r = Round(number=1, state="judging", config={}, metrics={})
        s.add(r)
        s.flush()
        prompts = s.scalars(select(Prompt).where(Prompt.split == "train").order_by(Prompt.id)).all()[: len(texts_per_prompt)]
        cands: dict[int, list[int]] = {}
        for p, texts in zip(prompts, texts_per_prompt, strict=True):
            rows = [Generation(prompt_id=p.id, round_id=r.id, text=t, model="m", params={}, meta={"purpose": "train"}) for t in texts]
            s.add_all(rows)
            s.flush()
            cands[p.id] = [g.id for g in rows]
        return r.id, cands


def _tasks(project, round_id: int):  # noqa: ANN001, ANN202
    from prefloop.feedback.store.models import Task

    with project.store.session() as s:
        return [(t.kind, list(t.generation_ids), t.overlap, t.priority, dict(t.meta), t.prompt_id)
                for t in s.scalars(select(Task).where(Task.round_id == round_id).order_by(Task.id))]


def test_all_pairs_with_a_cap_and_edit_tasks(tmp_path: Path, db_url: str) -> None:
    from prefloop.training.pairing import create_pair_tasks

    project = make_project(tmp_path / "p", db_url, prompts=3,
                           patch={"queue": {"overlap": 2}, "training": {"pairing": {"max_pairs_per_prompt": 3, "edit_tasks_per_prompt": 1}}})
    t = project.config.training
    rid, cands = _round_with_candidates(project, [["a", "b", "c", "d"], ["e", "f"], ["g"]])
    stats = create_pair_tasks(project, t, rid, 1, cands)
    assert (stats.compare, stats.edit, stats.created) == (3 + 1, 3, True)
    tasks = _tasks(project, rid)
    compares = [x for x in tasks if x[0] == "compare"]
    by_prompt: dict[int, list[frozenset]] = {}
    for _, ids, overlap, _, meta, pid in compares:
        assert overlap == 2 and meta["purpose"] == "train" and set(ids) <= set(cands[pid])
        by_prompt.setdefault(pid, []).append(frozenset(ids))
    first = next(iter(cands))
    assert len(by_prompt[first]) == 3 == len(set(by_prompt[first]))  # 3 distinct pairs of the 6 possible
    edits = [x for x in tasks if x[0] == "edit"]
    assert all(x[3] == 10.0 and x[2] == 2 for x in edits)  # edit_priority from roundkit; humans only
    # Idempotent: a resumed round creates nothing more.
    again = create_pair_tasks(project, t, rid, 1, cands)
    assert not again.created and len(_tasks(project, rid)) == len(tasks)
    # Seeded: the same pairs for the same round and prompt.
    import random

    from prefloop.training.pairing import _pairs

    assert _pairs([1, 2, 3, 4], 3, random.Random("x")) == _pairs([1, 2, 3, 4], 3, random.Random("x"))


def test_best_vs_worst_after_pointwise_judging(tmp_path: Path, db_url: str) -> None:
    from prefloop.judges import judges_from_config
    from prefloop.judges.runner import judge_round
    from prefloop.training.pairing import create_pair_tasks, create_score_tasks, judge_scores, scorer_name

    project = make_project(tmp_path / "p", db_url, prompts=2,
                           patch={"training": {"pairing": {"strategy": "best_vs_worst", "edit_tasks_per_prompt": 0}}})
    t = project.config.training
    good, short_bad, long_bad = "Hi Ann, sorry!", "Sorry about that.", " ".join(["word"] * 30)
    rid, cands = _round_with_candidates(project, [[short_bad, good, long_bad], ["Hello there", "Hello again"]])
    assert create_score_tasks(project, t, rid, cands) == 5
    assert create_score_tasks(project, t, rid, cands) == 0  # once
    judges = judges_from_config(project.config)
    name = scorer_name(project, t, judges)
    assert name == "style-rules"
    judge_round(project, judges[name], rid, progress=False)
    scores = judge_scores(project.store, rid, name)
    assert len(scores) == 5
    stats = create_pair_tasks(project, t, rid, 1, cands, scores)
    assert stats.compare == 1 and stats.skipped_prompts == 1  # the second prompt's candidates score the same
    (kind, ids, overlap, _, meta, pid), = [x for x in _tasks(project, rid) if x[0] == "compare"]
    first = cands[pid]
    assert set(ids) == {first[1], first[2]}  # best (greets, short) vs worst (long, no greeting)
    rates = [x for x in _tasks(project, rid) if x[0] == "rate"]
    assert all(x[2] == 0 and x[4]["purpose"] == "score" for x in rates)  # judge-only scoring tasks


def test_identical_candidates_are_never_paired(tmp_path: Path, db_url: str) -> None:
    """A small policy often samples the same answer twice: nobody can prefer it over itself, and
    the queue refuses such a compare task, so pairing compares distinct texts only."""
    from prefloop.training.pairing import create_pair_tasks

    project = make_project(tmp_path / "p", db_url, prompts=2,
                           patch={"training": {"pairing": {"max_pairs_per_prompt": 10, "edit_tasks_per_prompt": 0}}})
    rid, cands = _round_with_candidates(project, [["same", "same", "other"], ["twin", "twin"]])
    stats = create_pair_tasks(project, project.config.training, rid, 1, cands)
    compares = [x for x in _tasks(project, rid) if x[0] == "compare"]
    first = next(iter(cands))
    assert stats.compare == 1 and [set(x[1]) for x in compares] == [{cands[first][0], cands[first][2]}]
