"""The one annotation writer: leased submits, skips and lease-free records (one by one or in a
batch) keep ``tasks.n_done`` equal to the submitted answers that count, keep history, and write
a batch all or nothing — on SQLite and PostgreSQL."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import func, select

from prefloop.errors import InvalidAnswer, NotFoundError, QueueError
from prefloop.feedback.queue import Queue, Receipt
from prefloop.feedback.store.models import Annotation, Annotator, Task
from prefloop.feedback.writer import NewAnnotation


def stored(q: Queue) -> dict[tuple[int, str], tuple]:
    """(task, annotator name) → (status, value, rationale, number of history entries, meta)."""
    with q.store.session() as s:
        rows = s.execute(select(Annotation.task_id, Annotator.name, Annotation.status, Annotation.value,
                                Annotation.rationale, Annotation.history, Annotation.meta).join(Annotator)).all()
    return {(r.task_id, r.name): (r.status, r.value, r.rationale, len(r.history), r.meta) for r in rows}


def counts_hold(q: Queue) -> None:
    """Every task's n_done is its number of submitted human answers; complete exactly when full."""
    with q.store.session() as s:
        humans = dict(s.execute(
            select(Annotation.task_id, func.count()).join(Annotator)
            .where(Annotator.kind == "human", Annotation.status == "submitted").group_by(Annotation.task_id)
        ).all())
        for t in s.scalars(select(Task)):
            assert t.n_done == humans.get(t.id, 0), f"task {t.id}: n_done {t.n_done}, {humans.get(t.id, 0)} human answers"
            assert t.status == ("complete" if t.n_done >= t.overlap else "open"), f"task {t.id}: {t.status} at {t.n_done}/{t.overlap}"


def test_both_paths_keep_n_done_exact(store) -> None:
    """A random mix of leased submits and skips, human records (answers, changes, withdrawals) and
    judge verdicts, one by one and in batches: n_done never drifts from the stored answers."""
    q = Queue(store, overlap=2, lease_seconds=60)
    rng = random.Random(7)
    tasks = {q.add_comparison(f"p{i}", [f"a{i}", f"b{i}"]): None for i in range(6)}
    gens = {}
    with store.session() as s:
        for tid in tasks:
            gens[tid] = list(s.get(Task, tid).generation_ids)
    humans = [q.ensure_annotator(f"h{i}") for i in range(4)]
    judge = q.ensure_annotator("judge", kind="judge")

    def value(tid: int) -> dict:
        return {"choice": rng.choice([*gens[tid], "tie"])}

    for _ in range(80):
        op = rng.choice(["submit", "skip", "record", "withdraw", "batch", "judge"])
        who = rng.choice(humans)
        if op in ("submit", "skip"):
            claimed = q.claim(who)
            if claimed is None:
                continue
            if op == "submit":
                q.submit(who, claimed.task_id, value(claimed.task_id))
            else:
                q.skip(who, claimed.task_id)
        elif op in ("record", "withdraw"):
            tid = rng.choice(list(tasks))
            if op == "record":
                q.record(who, tid, value(tid))
            else:
                q.record(who, tid, None, status="skipped")
        elif op == "batch":  # several humans, some twice, answers and withdrawals mixed
            batch = []
            for _ in range(rng.randint(1, 8)):
                tid, a = rng.choice(list(tasks)), rng.choice(humans)
                batch.append(NewAnnotation(a, tid, value(tid)) if rng.random() < 0.7 else NewAnnotation(a, tid, None, status="skipped"))
            q.record_many(batch)
        else:
            q.record_many([NewAnnotation(judge, tid, value(tid), confidence=0.5) for tid in tasks])
        counts_hold(q)


def test_a_batch_is_written_as_the_same_answers_one_by_one(tmp_path, db_url) -> None:
    """record_many = record in order: new rows, unchanged ones, changes with history, withdrawals,
    and a (task, annotator) that comes twice in one batch."""
    from prefloop.feedback.store.db import open_store

    one, many = Queue(open_store(f"sqlite:///{tmp_path / 'one.db'}")), Queue(open_store(db_url))
    answers = []
    for q in (one, many):
        t1 = q.add_comparison("p1", ["a", "b"], overlap=2)
        t2 = q.add_rating("p2", "c", overlap=1)
        t3 = q.add_edit("p3", "teh cat")
        h, j = q.ensure_annotator("h"), q.ensure_annotator("j", kind="judge")
        with q.store.session() as s:
            a, _ = s.get(Task, t1).generation_ids
        q.record(h, t1, {"choice": a})  # already there before the batch
        q.record(j, t2, {"rating": 2}, rationale="meh")
        answers.append([
            NewAnnotation(h, t1, {"choice": a}),  # the same again: unchanged
            NewAnnotation(j, t2, {"rating": 4}, rationale="better", meta={"round": 1}),  # changed: history
            NewAnnotation(h, t2, {"rating": 5}),  # new
            NewAnnotation(h, t1, None, status="skipped", rationale="withdrawn"),  # the pair again: after the first
            NewAnnotation(h, t3, {"text": "the cat"}),
            NewAnnotation(h, t3, {"text": "The cat."}),  # and again
        ])
    got_one = [one.record(x.annotator_id, x.task_id, x.value, status=x.status, rationale=x.rationale, meta=x.meta)
               for x in answers[0]]
    got_many = many.record_many(answers[1])
    assert [c for _, c in got_one] == [c for _, c in got_many] == [False, True, True, True, True, True]
    assert got_many[3][0] == got_many[0][0] and got_many[5][0] == got_many[4][0]  # the same rows, updated
    assert stored(one) == stored(many)
    assert stored(many)[(t2, "j")][3] == 1 and stored(many)[(t2, "j")][4] == {"round": 1}
    assert stored(many)[(t3, "h")] == ("submitted", {"text": "The cat."}, None, 1, {})
    for q in (one, many):
        counts_hold(q)
        q.store.dispose()


def test_a_batch_is_all_or_nothing(queue) -> None:
    tid = queue.add_comparison("p", ["a", "b"])
    judge = queue.ensure_annotator("j", kind="judge")
    with queue.store.session() as s:
        a, _ = s.get(Task, tid).generation_ids
    good = NewAnnotation(judge, tid, {"choice": a})
    for bad, error, message in [
        (NewAnnotation(judge, tid, {"choice": 999}), InvalidAnswer, f"task {tid}: choice 999 is not one of the shown outputs"),
        (NewAnnotation(judge, 999_999, {"choice": a}), NotFoundError, "task 999999 does not exist"),
        (NewAnnotation(999_999, tid, {"choice": a}), NotFoundError, "annotator 999999 does not exist"),
        (NewAnnotation(judge, tid, {"choice": a}, cost=float("nan")), InvalidAnswer, "cost is nan"),
    ]:
        with pytest.raises(error, match=message):
            queue.record_many([good, bad])
        assert stored(queue) == {}
    assert queue.record_many([]) == []


def test_a_record_status_is_submitted_or_skipped(queue) -> None:
    """Before the one writer, record stored any status string, which no count or export reads."""
    tid = queue.add_rating("p", "x")
    human = queue.ensure_annotator("h")
    with pytest.raises(InvalidAnswer, match="status 'done' is not one of submitted, skipped"):
        queue.record(human, tid, {"rating": 3}, status="done")
    assert stored(queue) == {}


def test_a_leased_submit_after_a_lease_free_skip_updates_it(queue) -> None:
    """An annotator's lease outlives a skip recorded for them elsewhere (an Argilla discard): the
    leased answer replaces the skip (kept in history) and fills the slot, instead of failing on the
    unique (task, annotator) row."""
    tid = queue.add_comparison("p", ["a", "b"])
    human = queue.ensure_annotator("h")
    claimed = queue.claim(human)
    queue.record(human, tid, None, status="skipped", rationale="discarded in Argilla")
    receipt = queue.submit(human, tid, {"choice": claimed.candidates[0].generation_id}, idempotency_key="k1")
    assert stored(queue)[(tid, "h")][:2] == ("submitted", {"choice": claimed.candidates[0].generation_id})
    assert stored(queue)[(tid, "h")][3] == 1  # the skip, in history
    assert queue.submit(human, tid, {"choice": "tie"}, idempotency_key="k1") == Receipt(receipt.annotation_id, tid, duplicate=True)
    counts_hold(queue)


def test_an_unknown_task_kind_is_a_queue_error(queue) -> None:
    with queue.store.session() as s:
        ids = queue.add_generations("p", ["a", "b"], session=s)
    with pytest.raises(QueueError, match="unknown task kind 'duel'"):
        queue.add_task("duel", ids)
