"""From annotations to preferences and SFT targets, with provenance.

Rules (DESIGN.md): human labels outrank judge labels whenever a task has both; several humans
are combined by majority, and a split vote stays visible as a disagreement rather than being
resolved silently; judges alone count only position-consistent verdicts. Ratings of several
outputs of one prompt yield a pair (best vs worst) when the gap reaches a margin.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from prefloop.feedback.config import AggregationConfig
from sqlalchemy import case, select

from .answers import TIE
from .db import Store, rows_by_id
from .models import (
    Annotation,
    AnnotationStatus,
    Annotator,
    AnnotatorKind,
    Round,
    Task,
    TaskKind,
)

HUMAN, JUDGE, MIXED = "human", "judge", "mixed"


@dataclass(frozen=True)
class Label:
    annotator: str
    kind: str  # human | judge
    value: dict[str, Any]
    confidence: float | None
    consistent: bool = True


@dataclass
class TaskLabels:
    task_id: int
    kind: str
    prompt_id: int
    round_id: int | None
    round_number: int | None
    generation_ids: list[int]
    scale: tuple[int, int] | None
    labels: list[Label] = field(default_factory=list)

    def by(self, kind: str) -> list[Label]:
        return [lab for lab in self.labels if lab.kind == kind]


@dataclass(frozen=True)
class Outcome:
    """The combined verdict of one compare task."""

    task_id: int
    status: str  # "preferred" | "tie" | "disagreement" | "unlabelled"
    winner: int | None
    loser: int | None
    source: str | None
    confidence: float
    votes: dict[str, int]
    annotators: list[str]


@dataclass(frozen=True)
class Preference:
    prompt_id: int
    round_number: int | None
    chosen_id: int
    rejected_id: int
    source: str  # human | judge | mixed
    method: str  # majority | judge-panel | rating | ranking
    confidence: float
    n_annotators: int
    annotators: list[str]
    task_ids: list[int]


@dataclass(frozen=True)
class SFTTarget:
    prompt_id: int
    round_number: int | None
    text: str
    source: str
    method: str  # edit | rating
    confidence: float
    annotators: list[str]
    task_ids: list[int]
    generation_id: int | None = None


def load_task_labels(store: Store, *, round_ids: list[int] | None = None, kinds: list[str] | None = None,
                     exclude_judges: Collection[tuple[str, str]] = ()) -> list[TaskLabels]:
    """Every task (optionally of some rounds / kinds) with its submitted annotations.

    ``exclude_judges``: (judge, task kind) pairs whose labels are left out (untrusted judges:
    :mod:`prefloop.judges.trust`). Reads without taking SQLite's write lock (:meth:`Store.read`):
    annotators keep working.
    """
    def only_these(q):  # noqa: ANN001, ANN202 - the same filter on tasks and on their annotations
        if round_ids is not None:
            q = q.where(Task.round_id.in_(round_ids))
        if kinds is not None:
            q = q.where(Task.kind.in_(kinds))
        return q

    with store.read() as conn:
        q = select(Task.id, Task.kind, Task.prompt_id, Task.round_id, Task.generation_ids, Task.scale_min, Task.scale_max, Round.number).outerjoin(
            Round, Round.id == Task.round_id
        )
        tasks = {
            r.id: TaskLabels(
                r.id, r.kind, r.prompt_id, r.round_id, r.number, [int(g) for g in r.generation_ids],
                (r.scale_min, r.scale_max) if r.scale_min is not None else None,
            )
            for r in conn.execute(only_these(q).order_by(Task.id))
        }
        if not tasks:
            return []
        judge_meta = case((Annotator.kind == AnnotatorKind.JUDGE.value, Annotation.meta))  # humans' is never read
        aq = (
            select(Annotation.task_id, Annotation.value, Annotation.confidence, judge_meta.label("meta"), Annotator.name,
                   Annotator.kind)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .where(Annotation.status == AnnotationStatus.SUBMITTED.value)
            .order_by(Annotation.id)
        )
        if round_ids is not None or kinds is not None:
            aq = only_these(aq.join(Task, Task.id == Annotation.task_id))
        for r in conn.execute(aq):
            if r.task_id in tasks:
                if exclude_judges and r.kind == AnnotatorKind.JUDGE.value and (r.name, tasks[r.task_id].kind) in exclude_judges:
                    continue
                consistent = (r.meta or {}).get("consistent", True) is not False
                tasks[r.task_id].labels.append(Label(r.name, r.kind, r.value, r.confidence, consistent))
    return list(tasks.values())


def compare_outcome(t: TaskLabels) -> Outcome:
    """Majority of humans if any answered, else the position-consistent judges' vote."""
    humans = t.by(AnnotatorKind.HUMAN.value)
    if humans:
        voters, source = humans, HUMAN
    else:
        voters = t.by(AnnotatorKind.JUDGE.value)
        source = JUDGE
    if not voters:
        return Outcome(t.task_id, "unlabelled", None, None, None, 0.0, {}, [])
    # An inconsistent judge verdict (it flipped under position swap) counts as a tie.
    choices = [str(lab.value["choice"]) if lab.consistent else TIE for lab in voters]
    votes = Counter(choices) if len(choices) > 1 else {choices[0]: 1}  # one voter: most tasks, no Counter
    names = [lab.annotator for lab in voters]
    ranked = votes.most_common() if len(choices) > 1 else [(choices[0], 1)]
    top, n_top = ranked[0]
    if len(ranked) > 1 and ranked[1][1] == n_top:
        return Outcome(t.task_id, "disagreement", None, None, source, n_top / len(voters), dict(votes), names)
    share = n_top / len(voters)
    if source == JUDGE:
        confs = [lab.confidence for lab, c in zip(voters, choices, strict=True) if c == top and lab.confidence is not None]
        if confs:
            share *= sum(confs) / len(confs)
    if top == TIE:
        return Outcome(t.task_id, "tie", None, None, source, share, dict(votes), names)
    winner = int(top)
    loser = next(g for g in t.generation_ids if g != winner)
    return Outcome(t.task_id, "preferred", winner, loser, source, share, dict(votes), names)


def _ranking_pairs(t: TaskLabels) -> Preference | None:
    """Borda count over rankings (humans first); chosen = top, rejected = bottom."""
    voters = t.by(AnnotatorKind.HUMAN.value) or t.by(AnnotatorKind.JUDGE.value)
    if not voters:
        return None
    n = len(t.generation_ids)
    points: Counter[int] = Counter()
    for lab in voters:
        for pos, g in enumerate(lab.value["ranking"]):
            points[int(g)] += n - 1 - pos
    order = sorted(t.generation_ids, key=lambda g: (-points[g], t.generation_ids.index(g)))
    if points[order[0]] == points[order[-1]]:
        return None
    top_votes = sum(1 for lab in voters if int(lab.value["ranking"][0]) == order[0])
    return Preference(
        t.prompt_id, t.round_number, order[0], order[-1], voters[0].kind, "ranking", top_votes / len(voters),
        len(voters), [lab.annotator for lab in voters], [t.task_id],
    )


def _rating_means(tasks: list[TaskLabels]) -> dict[tuple[int, int | None], dict[int, tuple[float, str, list[str], int]]]:
    """(prompt, round) → generation → (mean rating, source, annotators, task id), humans first."""
    groups: dict[tuple[int, int | None], dict[int, tuple[float, str, list[str], int]]] = defaultdict(dict)
    for t in tasks:
        voters = t.by(AnnotatorKind.HUMAN.value) or t.by(AnnotatorKind.JUDGE.value)
        if not voters:
            continue
        mean = sum(float(lab.value["rating"]) for lab in voters) / len(voters)
        groups[(t.prompt_id, t.round_number)][t.generation_ids[0]] = (mean, voters[0].kind, [lab.annotator for lab in voters], t.task_id)
    return groups


def preferences(store: Store, *, round_ids: list[int] | None = None, config: AggregationConfig | None = None,
                exclude_judges: Collection[tuple[str, str]] = ()) -> list[Preference]:
    """All preference pairs: compare majorities, ranking tops/bottoms, rating best-vs-worst
    (without the labels of ``exclude_judges``: (judge, task kind) pairs)."""
    config = config or AggregationConfig()
    tasks = load_task_labels(store, round_ids=round_ids, exclude_judges=exclude_judges)
    out: list[Preference] = []
    rate_tasks = []
    for t in tasks:
        if t.kind == TaskKind.COMPARE.value:
            o = compare_outcome(t)
            if o.status == "preferred":
                method = "majority" if o.source == HUMAN else "judge-panel"
                out.append(Preference(
                    t.prompt_id, t.round_number, o.winner, o.loser, o.source, method, o.confidence,
                    len(o.annotators), o.annotators, [t.task_id],
                ))
        elif t.kind == TaskKind.RANK.value:
            p = _ranking_pairs(t)
            if p is not None:
                out.append(p)
        elif t.kind == TaskKind.RATE.value:
            rate_tasks.append(t)
    scale_span = {t.task_id: (t.scale[1] - t.scale[0]) if t.scale else 4 for t in rate_tasks}
    for (prompt_id, round_number), gens in _rating_means(rate_tasks).items():
        if len(gens) < 2:
            continue
        best = max(gens, key=lambda g: (gens[g][0], -g))
        worst = min(gens, key=lambda g: (gens[g][0], g))
        gap = gens[best][0] - gens[worst][0]
        if gap <= 0 or gap < config.rating_margin:
            continue
        sources = {gens[best][1], gens[worst][1]}
        annotators = sorted({*gens[best][2], *gens[worst][2]})
        out.append(Preference(
            prompt_id, round_number, best, worst, sources.pop() if len(sources) == 1 else MIXED, "rating",
            min(1.0, gap / scale_span[gens[best][3]]), len(annotators), annotators, [gens[best][3], gens[worst][3]],
        ))
    return out


def sft_targets(store: Store, *, round_ids: list[int] | None = None, config: AggregationConfig | None = None,
                exclude_judges: Collection[tuple[str, str]] = ()) -> list[SFTTarget]:
    """Human (or judge) edits, and outputs whose mean rating reaches ``sft_min_rating``."""
    from .models import Generation

    config = config or AggregationConfig()
    tasks = load_task_labels(store, round_ids=round_ids, kinds=[TaskKind.EDIT.value, TaskKind.RATE.value],
                             exclude_judges=exclude_judges)
    out: list[SFTTarget] = []
    rated: list[tuple[TaskLabels, float, list[Label]]] = []
    for t in tasks:
        voters = t.by(AnnotatorKind.HUMAN.value) or t.by(AnnotatorKind.JUDGE.value)
        if not voters:
            continue
        if t.kind == TaskKind.EDIT.value:
            seen: set[str] = set()
            for lab in voters:
                text = lab.value["text"]
                if text.strip() in seen:
                    continue
                seen.add(text.strip())
                out.append(SFTTarget(t.prompt_id, t.round_number, text, lab.kind, "edit", 1.0, [lab.annotator], [t.task_id]))
        else:
            mean = sum(float(lab.value["rating"]) for lab in voters) / len(voters)
            if mean >= config.sft_min_rating:
                rated.append((t, mean, voters))
    if rated:
        with store.read() as conn:
            texts = dict(rows_by_id(conn, (Generation.id, Generation.text), [t.generation_ids[0] for t, _, _ in rated]))
        for t, mean, voters in rated:
            lo, hi = t.scale or (1, 5)
            out.append(SFTTarget(
                t.prompt_id, t.round_number, texts[t.generation_ids[0]], voters[0].kind, "rating",
                (mean - lo) / (hi - lo), [lab.annotator for lab in voters], [t.task_id], t.generation_ids[0],
            ))
    return out
