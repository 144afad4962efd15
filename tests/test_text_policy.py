"""One text policy at every entry point of the queue's Python API (the HTTP server, the terminal,
judges and the Argilla bridge all write through it), on SQLite and on PostgreSQL alike.

Text that cannot be stored the same way on both databases, or exported afterwards (a lone
surrogate, a NUL), is refused with the caller's error class and nothing is written; an edit made
only of invisible characters is empty; a compare task over two identical outputs is refused.
"""

from __future__ import annotations

import math

import pytest
from sqlalchemy import func, select

from prefloop.errors import ConfigError, DataError, InvalidAnswer, QueueError
from prefloop.feedback.queue import Queue
from prefloop.feedback.store.db import Store
from prefloop.feedback.store.models import Annotation, Annotator, Generation, Prompt, Task

SURROGATE, NUL = "x\ud800y", "a\x00b"


def counts(store: Store) -> tuple[int, ...]:
    with store.session() as s:
        return tuple(s.scalar(select(func.count()).select_from(m)) for m in (Prompt, Generation, Task, Annotation, Annotator))


# ------------------------------------------------------------------------------ enqueue
@pytest.mark.parametrize("bad", [SURROGATE, NUL])
def test_unstorable_prompts_outputs_and_meta_are_refused_and_nothing_is_written(queue: Queue, bad: str) -> None:
    before = counts(queue.store)
    attempts = [
        lambda: queue.add_comparison(bad, ["a", "b"]),
        lambda: queue.add_comparison([{"role": "system", "content": bad}, {"role": "user", "content": "q"}], ["a", "b"]),
        lambda: queue.add_comparison("q", ["a", bad]),
        lambda: queue.add_rating("q", bad),
        lambda: queue.add_edit("q", "fine", meta={"note": bad}),
        lambda: queue.add_edit("q", "fine", meta={bad: 1}),
    ]
    for attempt in attempts:
        with pytest.raises((DataError, QueueError)) as exc:
            attempt()
        assert "\n" not in str(exc.value)
    assert counts(queue.store) == before


def test_blank_prompts_and_bad_numbers_are_refused(queue: Queue) -> None:
    with pytest.raises(DataError, match="prompt is empty"):
        queue.add_rating("\u200b\ufeff \u2060", "x")
    with pytest.raises(DataError, match=r"messages\[0\]\.content is empty"):
        queue.add_rating([{"role": "user", "content": "\u200b"}], "x")
    for bad in (math.nan, math.inf):
        with pytest.raises(QueueError, match="priority"):
            queue.add_rating("q", "x", priority=bad)
        with pytest.raises(QueueError, match=r"meta\.score is"):
            queue.add_rating("q", "x", meta={"score": bad})
    with pytest.raises(DataError, match=r"model is 501 characters long"), queue.store.session() as s:
        queue.add_generations("q", ["x"], model="m" * 501, session=s)
    assert counts(queue.store) == (0, 0, 0, 0, 0)


def test_a_compare_or_rank_task_over_identical_outputs_is_refused(queue: Queue) -> None:
    with pytest.raises(QueueError, match="outputs 1 and 2 are identical"):
        queue.add_comparison("q", ["same", "same"])
    with pytest.raises(QueueError, match="outputs 1 and 3 are identical"):
        queue.add_ranking("q", ["a", "b", "a"])
    with queue.store.session() as s:  # stored separately, then put in one task
        ids = queue.add_generations("q", ["twin", "twin"], session=s)
    with pytest.raises(QueueError, match="identical"):
        queue.add_task("compare", ids)
    assert queue.add_comparison("q", ["same", "same "]) > 0  # a trailing space is a different output
    with queue.store.session() as s:
        assert s.scalar(select(func.count()).select_from(Task)) == 1


# ------------------------------------------------------------------------------ annotators
@pytest.mark.parametrize("name", ["", "  ", "\u200b", NUL, SURROGATE, "n" * 201])
def test_annotator_names_follow_the_policy(queue: Queue, name: str) -> None:
    with pytest.raises(QueueError, match="annotator name"):
        queue.ensure_annotator(name)
    with pytest.raises(QueueError, match="annotator name"):
        queue.ensure_annotator(name, kind="judge")
    assert counts(queue.store)[4] == 0


def test_annotator_meta_follows_the_policy(queue: Queue) -> None:
    with pytest.raises(QueueError, match=r"meta\.model holds a NUL"):
        queue.ensure_annotator("judge-1", kind="judge", meta={"model": NUL})
    assert queue.ensure_annotator("Zoë 👩‍🔬 שלום") > 0  # any visible name is fine


# ------------------------------------------------------------------------------ submit / skip / record
@pytest.fixture
def claimed(queue: Queue):  # noqa: ANN201
    """An annotator holding the lease on an edit task."""
    queue.add_edit("Fix the typo", "teh cat")
    me = queue.ensure_annotator("ada")
    task = queue.claim(me)
    assert task is not None
    return me, task.task_id


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"value": {"text": SURROGATE}}, r"text holds an invalid character \(lone surrogate U\+D800\) at position 1"),
        ({"value": {"text": NUL}}, "text holds a NUL character"),
        ({"value": {"text": "\u200b\u200c\ufeff \u2060\n"}}, "edited text is empty"),
        ({"value": {"text": "\x00"}}, "NUL"),
        ({"value": {"text": "ok"}, "rationale": SURROGATE}, "rationale holds an invalid character"),
        ({"value": {"text": "ok"}, "idempotency_key": NUL + "-key-123"}, "idempotency key holds a NUL"),
        ({"value": {"text": "ok"}, "idempotency_key": "k" * 201}, "idempotency key is 201 characters long"),
        ({"value": {"text": "ok"}, "idempotency_key": "   "}, "idempotency key is empty"),
        ({"value": {"text": "ok"}, "duration_s": math.nan}, "duration_s is nan"),
        ({"value": {"text": "ok"}, "duration_s": -1.0}, "duration_s"),
        ({"value": {"text": "ok"}, "meta": {"x": math.inf}}, r"meta\.x is inf"),
    ],
)
def test_submit_refuses_unstorable_answers_and_keeps_the_lease(queue: Queue, claimed, kw, message) -> None:  # noqa: ANN001
    me, tid = claimed
    with pytest.raises(InvalidAnswer, match=message):
        queue.submit(me, tid, **kw)
    assert counts(queue.store)[3] == 0
    receipt = queue.submit(me, tid, {"text": "the cat"}, idempotency_key="good-key-1")  # the lease is still held
    assert not receipt.duplicate


@pytest.mark.parametrize("reason", [SURROGATE, NUL])
def test_skip_reason_follows_the_policy(queue: Queue, claimed, reason: str) -> None:  # noqa: ANN001
    me, tid = claimed
    with pytest.raises(InvalidAnswer, match="reason"):
        queue.skip(me, tid, reason=reason)
    assert counts(queue.store)[3] == 0
    queue.skip(me, tid, reason="Not sure; \u202eRTL and 👍 are fine")
    with queue.store.session() as s:
        assert s.scalar(select(Annotation.rationale)) == "Not sure; \u202eRTL and 👍 are fine"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"value": {"text": SURROGATE}}, "text holds an invalid character"),
        ({"value": {"text": "\u200b"}}, "edited text is empty"),
        ({"value": {"text": "ok"}, "rationale": NUL}, "rationale holds a NUL"),
        ({"value": {"text": "ok"}, "confidence": math.nan}, "confidence is nan"),
        ({"value": {"text": "ok"}, "cost": math.inf}, "cost is inf"),
        ({"value": {"text": "ok"}, "meta": {"why": SURROGATE}}, r"meta\.why holds an invalid character"),
    ],
)
def test_record_follows_the_policy(queue: Queue, kw, message) -> None:  # noqa: ANN001
    tid = queue.add_edit("Fix the typo", "teh cat")
    judge = queue.ensure_annotator("judge-a", kind="judge")
    with pytest.raises(InvalidAnswer, match=message):
        queue.record(judge, tid, **kw)
    assert counts(queue.store)[3] == 0


# ------------------------------------------------------------------------------ config
@pytest.mark.parametrize("bad", ["a\\0b", "x\\ud800"])
def test_guidelines_in_the_config_follow_the_policy(tmp_path, bad: str) -> None:  # noqa: ANN001
    from prefloop.config import load_config

    f = tmp_path / "prefloop.yaml"
    f.write_text(f'annotation:\n  guidelines: "Be kind. {bad}"\n')
    with pytest.raises(ConfigError, match="annotation.guidelines"):
        load_config(f)


def test_model_output_with_nul_is_stored_replaced_and_counted_on_both_databases(queue: Queue) -> None:
    """A round cannot refuse its own model's output: NUL and lone surrogates become U+FFFD, counted."""
    from prefloop.text import storable

    text, replaced = storable("Paris\x00 is\ud800 the capital")
    assert (text, replaced) == ("Paris\ufffd is\ufffd the capital", 2)
    assert storable("plain") == ("plain", 0)
    with queue.store.session() as s:
        queue.add_generations("Capital of France?", [text], session=s)
    with queue.store.session() as s:
        assert s.scalar(select(Generation.text)) == text
