"""Judge verdicts → annotations: what a judge is asked about a chunk of tasks, the answer its
verdicts make for each task (the task's kind decides: :meth:`prefloop.kinds.TaskKind.judge_answer`),
and the chunk written at once through :meth:`Queue.record_many` (one statement per kind of write,
see :mod:`prefloop.feedback.writer`) instead of one session round trip per verdict.

A failed verdict is recorded too (status ``skipped``, the reason in ``rationale`` and
``meta.error``), but never replaces an earlier successful one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefloop.feedback.writer import NewAnnotation
from prefloop.kinds import PAIRWISE, TaskView, get_kind

if TYPE_CHECKING:
    from prefloop.feedback.queue import Queue

    from .base import PairwiseVerdict, PointwiseVerdict
    from .runner import JudgeRunStats

#: the first failure reasons a run keeps for its report
MAX_ERRORS = 5


@dataclass
class JudgedTask:
    """A task as a judge sees it: its outputs in stored order, the prompt, the reference answer."""

    id: int
    kind: str
    gens: list[int]
    texts: list[str]
    prompt: list[dict[str, str]]
    reference: str | None
    scale: tuple[int, int] | None
    allow_tie: bool

    @property
    def view(self) -> TaskView:
        return TaskView(self.gens, self.texts, self.scale, self.allow_tie)


PairQuestion = tuple[JudgedTask, int, int]  # the task and the positions of the two outputs compared


def questions(chunk: list[JudgedTask]) -> tuple[list[PairQuestion], list[JudgedTask]]:
    """Every pairwise question (a compare task asks one, a rank task one per pair) and every
    pointwise one (a rate task) of a chunk, so that each kind goes to the judge in one batched call."""
    pairs: list[PairQuestion] = []
    singles: list[JudgedTask] = []
    for t in chunk:
        kind = get_kind(t.kind)
        if kind.judge_mode == PAIRWISE:
            pairs.extend((t, i, j) for i, j in kind.judge_pairs(len(t.gens)))
        else:
            singles.append(t)
    return pairs, singles


def answers(
    chunk: list[JudgedTask], pairs: list[PairQuestion], pair_verdicts: list[PairwiseVerdict],
    singles: list[JudgedTask], score_verdicts: list[PointwiseVerdict],
) -> list[tuple[JudgedTask, dict[str, Any]]]:
    """Each task's annotation from its verdicts: the pairwise tasks in chunk order, then the pointwise ones."""
    by_task: dict[int, list[tuple[tuple[int, int], PairwiseVerdict]]] = {}
    for (t, i, j), v in zip(pairs, pair_verdicts, strict=True):
        by_task.setdefault(t.id, []).append(((i, j), v))
    out = []
    for t in chunk:
        kind = get_kind(t.kind)
        if kind.judge_mode == PAIRWISE:
            got = by_task.get(t.id, [])
            out.append((t, kind.judge_answer(t.view, [v for _, v in got], [p for p, _ in got])))
    for t, score in zip(singles, score_verdicts, strict=True):
        out.append((t, get_kind(t.kind).judge_answer(t.view, [score])))
    return out


def record(
    queue: Queue, annotator_id: int, identity: dict[str, Any], records: list[tuple[JudgedTask, dict[str, Any]]],
    prior: dict[int, str], stats: JudgeRunStats,
) -> list[int]:
    """Write a chunk's annotations in one batch (each carries the judge's identity in its meta);
    count them in ``stats``; returns the ids of the tasks written."""
    batch: list[NewAnnotation] = []
    failures: list[bool] = []
    for t, rec in records:
        failed = rec["status"] == "skipped" and "error" in rec["meta"]
        if failed:
            stats.failed += 1
            if len(stats.errors) < MAX_ERRORS:
                stats.errors.append(f"task {t.id}: {rec['meta']['error']}")
            if prior.get(t.id) == "submitted":
                continue  # never replace a good verdict with a failure
        batch.append(NewAnnotation(
            annotator_id, t.id, rec["value"], status=rec["status"], rationale=rec["rationale"],
            confidence=rec["confidence"], duration_s=rec["duration_s"], prompt_tokens=rec["prompt_tokens"],
            completion_tokens=rec["completion_tokens"], cost=rec["cost"], meta={**identity, **rec["meta"]},
        ))
        failures.append(failed)
    for failed, (_, changed) in zip(failures, queue.record_many(batch), strict=True):
        if changed:
            stats.recorded += 1
        elif not failed:
            stats.unchanged += 1
    return [a.task_id for a in batch]
