"""Agreement statistics: between humans, and between each judge and the humans.

Compare labels are made position-relative (``first`` / ``second`` / ``tie`` in the task's
stored order) so that categories mean the same across tasks. Cohen's κ comes from
scikit-learn, Krippendorff's α from the ``krippendorff`` package (nominal for choices,
ordinal for ratings).

A statistic that is undefined for the data (too few items, or one label category only, where
chance agreement is already perfect) is ``None``: stored as JSON null, shown as ``n/a``. It is
never NaN, which PostgreSQL cannot store in JSON.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from prefloop.errors import QueueError
from prefloop.kinds import KINDS, TIE, get_kind
from prefloop.kinds.base import AgreementLevel
from prefloop.kinds.compare import COMPARE, FIRST, SECOND
from prefloop.text import finite_or_none

from .aggregate import compare_outcome, load_task_labels
from .store.db import Store
from .store.models import AnnotatorKind


def cohen_kappa(a: list, b: list) -> float | None:
    """Cohen's κ; None when undefined (fewer than two items, or one category only)."""
    if len(a) < 2:
        return None
    from sklearn.metrics import cohen_kappa_score

    if len(set(a) | set(b)) < 2:
        return None  # one category only: chance agreement is 1 and κ is 0/0
    return finite_or_none(float(cohen_kappa_score([str(x) for x in a], [str(x) for x in b])))


def krippendorff_alpha(units: list[dict[str, str | int]], level: AgreementLevel) -> float | None:
    """α over units (task → {annotator: label}); None when undefined: fewer than two coders
    overlap, or one value only (expected disagreement is 0, α is 0/0 — as κ above)."""
    import numpy as np

    coders = sorted({c for u in units for c in u})
    usable = [u for u in units if len(u) >= 2]
    if len(coders) < 2 or not usable:
        return None
    values = sorted({v for u in usable for v in u.values()}, key=str)
    if len(values) < 2:
        return None
    index = {v: i for i, v in enumerate(values)}
    data = np.full((len(coders), len(usable)), np.nan)
    for j, u in enumerate(usable):
        for c, v in u.items():
            data[coders.index(c), j] = float(v) if level != "nominal" else index[v]
    import krippendorff

    return finite_or_none(float(krippendorff.alpha(reliability_data=data, level_of_measurement=level)))


@dataclass(frozen=True)
class PairAgreement:
    a: str
    b: str
    n: int
    observed: float  # raw share of identical labels
    kappa: float | None  # None when undefined


@dataclass(frozen=True)
class InterAnnotatorReport:
    kind: str
    n_tasks: int  # tasks with ≥ 2 human labels
    annotators: list[str]
    alpha: float | None  # None when undefined
    pairs: list[PairAgreement]


def inter_annotator(store: Store, *, kind: str = "compare", round_ids: list[int] | None = None) -> InterAnnotatorReport:
    """Agreement between human annotators on the tasks they share."""
    task_kind = get_kind(kind)
    if task_kind.agreement_level is None:
        raise QueueError(f"agreement is not measured on {kind} tasks",
                         hint=f"use one of {', '.join(k.name for k in KINDS.values() if k.agreement_level)}")
    tasks = load_task_labels(store, round_ids=round_ids, kinds=[kind])
    units: list[dict[str, str | int]] = []
    for t in tasks:
        humans = t.by(AnnotatorKind.HUMAN.value)
        if len(humans) >= 2:
            units.append({lab.annotator: task_kind.agreement_label(t, lab.value) for lab in humans})
    names = sorted({c for u in units for c in u})
    pairs = []
    for a, b in itertools.combinations(names, 2):
        shared = [(u[a], u[b]) for u in units if a in u and b in u]
        if not shared:
            continue
        la, lb = [x for x, _ in shared], [y for _, y in shared]
        pairs.append(PairAgreement(a, b, len(shared), sum(x == y for x, y in shared) / len(shared), cohen_kappa(la, lb)))
    return InterAnnotatorReport(kind, len(units), names, krippendorff_alpha(units, task_kind.agreement_level), pairs)


@dataclass(frozen=True)
class JudgeAgreement:
    judge: str
    n: int  # tasks with both this judge's verdict and a human majority
    agreement: float  # share identical, ties included
    n_without_ties: int  # tasks where neither side said tie
    agreement_without_ties: float | None  # None when there are no such tasks
    kappa: float | None  # Cohen's κ over all n (ties as a category); None when undefined


def judge_human_agreement(store: Store, *, round_ids: list[int] | None = None) -> list[JudgeAgreement]:
    """Each judge against the human majority on shared compare tasks."""
    tasks = load_task_labels(store, round_ids=round_ids, kinds=[COMPARE.name])
    pairs: dict[str, list[tuple[str, str]]] = {}
    for t in tasks:
        if not t.by(AnnotatorKind.HUMAN.value):
            continue
        human = compare_outcome(t)
        if human.status == "preferred":
            h = FIRST if human.winner == t.generation_ids[0] else SECOND
        elif human.status == "tie":
            h = TIE
        else:
            continue  # humans split: no reference label
        for lab in t.by(AnnotatorKind.JUDGE.value):
            pairs.setdefault(lab.annotator, []).append((COMPARE.agreement_label(t, lab.value, lab.consistent), h))
    out = []
    for judge, labs in sorted(pairs.items()):
        strict = [(j, h) for j, h in labs if TIE not in (j, h)]
        out.append(JudgeAgreement(
            judge,
            len(labs),
            sum(j == h for j, h in labs) / len(labs),
            len(strict),
            (sum(j == h for j, h in strict) / len(strict)) if strict else None,
            cohen_kappa([j for j, _ in labs], [h for _, h in labs]),
        ))
    return out
