"""Judge trust: how far each judge's verdicts agree with the humans, per task kind, measured on the
tasks both answered — and whether its verdicts (and, apart, its ties) may stand in for people.

Per (judge, kind), against the human majority of each task (tasks where humans split are left out):

- ``agree``: same label (for compare: same side, or both tie);
- ``wrong_side``: both chose, opposite sides (rate: more than one scale point apart);
- ``blind_ties``: the judge said tie (or flipped under position swap) where humans chose — it
  cannot see what decided them;
- ``chose_on_tie``: the judge chose where humans said tie.

``rate`` = agree / n with its Wilson interval. Two decisions follow (:class:`~.config.TrustConfig`):
the judge's *verdicts* (where it chose a side) are trusted when at least ``min_n`` of them were
compared and the Wilson lower bound of their agreement reaches ``threshold``; its *ties* are trusted
by the same rule applied to its ties alone. A judge is *blind* on a kind when at least
``blind_tie_share`` of its ties were tasks humans decided: its ties are then *unknown*, never
"the judge is unsure". Status ``untrusted`` (measured, below the bar) keeps its labels out of
training; ``unmeasured`` (fewer than ``min_n``) does not, but selection sends such tasks to people.

Per-kind rules live in :data:`REFERENCE_RULES` (compare and rate; other kinds are not measured).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from prefloop.feedback.aggregate import TaskLabels, compare_outcome, load_task_labels
from prefloop.feedback.answers import TIE
from prefloop.feedback.store.db import Store
from prefloop.feedback.store.models import AnnotatorKind
from prefloop.kinds.compare import COMPARE

from .config import TrustConfig

TRUSTED, UNTRUSTED, UNMEASURED = "trusted", "untrusted", "unmeasured"
AGREE, TIE_AGREE, WRONG_SIDE, BLIND_TIE, CHOSE_ON_TIE = "agree", "tie_agree", "wrong_side", "blind_tie", "chose_on_tie"
#: a rating within this many scale points of the humans' mean agrees with them.
RATE_TOLERANCE = 1.0


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of k successes in n (SciPy's); None for n = 0."""
    if n == 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def _compare_outcomes(t: TaskLabels) -> Iterator[tuple[str, str]]:
    human = compare_outcome(t)
    if human.source != "human" or human.status not in ("preferred", "tie"):
        return  # no human label, or humans split: no reference
    h = TIE if human.status == "tie" else COMPARE.position_label(t, {"choice": human.winner})
    for lab in t.by(AnnotatorKind.JUDGE.value):
        j = COMPARE.position_label(t, lab.value) if lab.consistent else TIE
        if j == h:
            yield lab.annotator, TIE_AGREE if j == TIE else AGREE
        elif j == TIE:
            yield lab.annotator, BLIND_TIE
        elif h == TIE:
            yield lab.annotator, CHOSE_ON_TIE
        else:
            yield lab.annotator, WRONG_SIDE


def _rate_outcomes(t: TaskLabels) -> Iterator[tuple[str, str]]:
    humans = t.by(AnnotatorKind.HUMAN.value)
    if not humans:
        return
    mean = sum(float(lab.value["rating"]) for lab in humans) / len(humans)
    for lab in t.by(AnnotatorKind.JUDGE.value):
        yield lab.annotator, AGREE if abs(float(lab.value["rating"]) - mean) <= RATE_TOLERANCE else WRONG_SIDE


def _compare_is_tie(t: TaskLabels | None, verdict: dict[str, Any]) -> bool:
    del t
    return str((verdict.get("value") or {}).get("choice")) == TIE or (verdict.get("meta") or {}).get("consistent") is False


#: per task kind: how a task's judge labels compare with its humans (→ (judge, outcome)), and
#: which verdict is a tie. Kinds not listed are not measured. (Moves to prefloop.kinds later.)
REFERENCE_RULES: dict[str, Callable[[TaskLabels], Iterator[tuple[str, str]]]] = {
    "compare": _compare_outcomes,
    "rate": _rate_outcomes,
}
TIE_RULES: dict[str, Callable[[TaskLabels | None, dict[str, Any]], bool]] = {"compare": _compare_is_tie}


def is_tie(kind: str, verdict: dict[str, Any]) -> bool:
    """Whether a judge verdict (``value``, ``meta``) is a tie for its kind (kinds without ties: never)."""
    rule = TIE_RULES.get(kind)
    return rule is not None and rule(None, verdict)


@dataclass(frozen=True)
class JudgeTrust:
    """One judge on one task kind, measured against the humans."""

    judge: str
    kind: str
    n: int  # tasks with this judge's verdict and a human reference
    agree: int
    wrong_side: int
    blind_ties: int
    chose_on_tie: int
    ties: int  # the judge's ties among the n (agreeing or blind)
    rate: float | None  # agree / n
    low: float | None  # Wilson interval of rate
    high: float | None
    verdict_low: float | None  # Wilson lower bound of agreement where the judge chose a side
    tie_low: float | None  # Wilson lower bound of agreement where the judge said tie
    status: str  # trusted | untrusted | unmeasured (its verdicts)
    ties_trusted: bool
    blind: bool

    @property
    def trusted(self) -> bool:
        return self.status == TRUSTED

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def assess(judge: str, kind: str, counts: Counter[str], cfg: TrustConfig) -> JudgeTrust:
    """The trust record of one (judge, kind) from its outcome counts."""
    n = sum(counts.values())
    agree = counts[AGREE] + counts[TIE_AGREE]
    ties = counts[TIE_AGREE] + counts[BLIND_TIE]
    decided = n - ties
    ci = wilson(agree, n, cfg.level)
    verdict_ci = wilson(counts[AGREE], decided, cfg.level)
    tie_ci = wilson(counts[TIE_AGREE], ties, cfg.level)
    verdict_low = verdict_ci[0] if verdict_ci else None
    tie_low = tie_ci[0] if tie_ci else None
    if decided < cfg.min_n:
        status = UNMEASURED
    else:
        status = TRUSTED if verdict_low is not None and verdict_low >= cfg.threshold else UNTRUSTED
    return JudgeTrust(
        judge=judge, kind=kind, n=n, agree=agree, wrong_side=counts[WRONG_SIDE], blind_ties=counts[BLIND_TIE],
        chose_on_tie=counts[CHOSE_ON_TIE], ties=ties, rate=agree / n if n else None,
        low=ci[0] if ci else None, high=ci[1] if ci else None, verdict_low=verdict_low, tie_low=tie_low, status=status,
        ties_trusted=ties >= cfg.min_n and tie_low is not None and tie_low >= cfg.threshold,
        blind=ties > 0 and counts[BLIND_TIE] / ties >= cfg.blind_tie_share,
    )


class TrustTable(dict[tuple[str, str], JudgeTrust]):
    """(judge, kind) → :class:`JudgeTrust`; a missing pair is unmeasured."""

    def status(self, judge: str, kind: str) -> str:
        t = self.get((judge, kind))
        return t.status if t is not None else UNMEASURED

    def blind(self, judge: str, kind: str) -> bool:
        t = self.get((judge, kind))
        return t is not None and t.blind

    def counts_verdict(self, judge: str, kind: str, verdict: dict[str, Any]) -> bool:
        """Whether a judge's verdict counts as a trusted one: a tie only if its ties are trusted."""
        t = self.get((judge, kind))
        if t is None:
            return False
        return t.ties_trusted if is_tie(kind, verdict) else t.trusted

    def untrusted(self) -> set[tuple[str, str]]:
        """The (judge, kind) pairs whose labels stay out of training."""
        return {key for key, t in self.items() if t.status == UNTRUSTED}

    def to_metrics(self) -> dict[str, dict[str, dict[str, Any]]]:
        """judge → kind → the record (what rounds store under ``metrics.trust``)."""
        out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        for (judge, kind), t in sorted(self.items()):
            out[judge][kind] = {k: v for k, v in t.to_dict().items() if k not in ("judge", "kind")}
        return dict(out)


#: what a round logs to wandb per judge and kind (``round/trust/<judge>/<kind>/<key>``).
WANDB_KEYS = ("n", "rate", "low", "high", "wrong_side", "blind_ties", "chose_on_tie")


def wandb_view(trust_metrics: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The numbers of ``metrics.trust`` that go to wandb, plus ``trusted``/``blind`` as 0/1."""
    return {judge: {kind: {**{k: t.get(k) for k in WANDB_KEYS}, "trusted": int(t.get("status") == TRUSTED),
                           "blind": int(bool(t.get("blind")))}
                    for kind, t in kinds.items()} for judge, kinds in trust_metrics.items()}


def task_outcomes(store: Store, *, round_ids: list[int] | None = None) -> Iterator[tuple[int, str, str, str]]:
    """(task id, kind, judge, outcome) for every judge label on a task with a human reference."""
    for t in load_task_labels(store, round_ids=round_ids, kinds=list(REFERENCE_RULES)):
        if not t.by(AnnotatorKind.HUMAN.value):
            continue
        for judge, outcome in REFERENCE_RULES[t.kind](t):
            yield t.task_id, t.kind, judge, outcome


def measure_trust(store: Store, cfg: TrustConfig | None = None, *, round_ids: list[int] | None = None) -> TrustTable:
    """Every judge's trust per kind, from all tasks (of ``round_ids``) with human and judge labels."""
    cfg = cfg or TrustConfig()
    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for _, kind, judge, outcome in task_outcomes(store, round_ids=round_ids):
        counts[(judge, kind)][outcome] += 1
    return TrustTable({key: assess(*key, c, cfg) for key, c in counts.items()})


def excluded_labels(store: Store, pairs: set[tuple[str, str]], *, round_ids: list[int] | None = None) -> dict[str, dict[str, int]]:
    """judge → kind → how many of its submitted labels (of ``round_ids``) ``pairs`` leave out of training."""
    from sqlalchemy import func, select

    from prefloop.feedback.store.models import Annotation, AnnotationStatus, Annotator, Task

    if not pairs:
        return {}
    q = (select(Annotator.name, Task.kind, func.count()).join(Annotation, Annotation.annotator_id == Annotator.id)
         .join(Task, Task.id == Annotation.task_id)
         .where(Annotator.name.in_({j for j, _ in pairs}), Annotation.status == AnnotationStatus.SUBMITTED.value)
         .group_by(Annotator.name, Task.kind))
    if round_ids is not None:
        q = q.where(Task.round_id.in_(round_ids))
    out: dict[str, dict[str, int]] = defaultdict(dict)
    with store.read() as conn:
        for judge, kind, n in conn.execute(q):
            if (judge, kind) in pairs:
                out[judge][kind] = int(n)
    return dict(out)


def untrusted_judges(store: Store, cfg: TrustConfig) -> set[tuple[str, str]]:
    """The (judge, kind) pairs whose labels training and exports leave out (none when
    ``judges.trust.exclude_untrusted`` is off)."""
    return measure_trust(store, cfg).untrusted() if cfg.exclude_untrusted else set()
