"""The :class:`TaskKind` contract, and the vocabulary its methods speak.

A task kind (compare, rate, rank, edit, or a plug-in's) is one subclass of :class:`TaskKind`,
declared in one module: its shape, how its answers are checked, how they aggregate into
preference pairs and SFT targets, how a judge answers it and how much a human label would
teach, how scripted humans answer it, which keys answer it in the terminal, and how it maps to
Argilla. Everything else in prefloop asks the registry (:mod:`prefloop.kinds`) instead of
testing a kind's name.

This module imports nothing heavy: ``rich`` and ``argilla`` are imported inside the methods
that draw or build with them.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeAlias

from prefloop.errors import InvalidAnswer

if TYPE_CHECKING:
    from prefloop.feedback.config import AggregationConfig
    from prefloop.judges.base import PairwiseVerdict, PointwiseVerdict

    Verdict: TypeAlias = PairwiseVerdict | PointwiseVerdict

#: The compare answer for "about the same".
TIE = "tie"
#: Where a label came from (``annotators.kind``), and a pair built from both.
HUMAN, JUDGE, MIXED = "human", "judge", "mixed"
#: How a judge answers a kind: by comparing two outputs, or by scoring one.
PAIRWISE, POINTWISE = "pairwise", "pointwise"
#: Krippendorff's levels of measurement (how far apart two different answers are).
AgreementLevel = Literal["nominal", "ordinal", "interval", "ratio"]


# ------------------------------------------------------------------------------ labels and their products
@dataclass(frozen=True)
class Label:
    """One submitted answer to a task, as aggregation reads it."""

    annotator: str
    kind: str  # human | judge
    value: dict[str, Any]
    confidence: float | None
    consistent: bool = True  # False: a judge verdict that flipped under position swap


@dataclass
class TaskLabels:
    """A task with every submitted answer to it."""

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

    def voters(self) -> list[Label]:
        """The labels that decide: the humans' if any answered, else the judges'."""
        return self.by(HUMAN) or self.by(JUDGE)


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


@dataclass(frozen=True)
class TaskView:
    """One task as an annotator, a judge or a scripted human sees it: its outputs in display
    order (ids and texts), the rating scale if it has one, and whether a tie is allowed."""

    generation_ids: list[int]
    texts: list[str] = field(default_factory=list)
    scale: tuple[int, int] | None = None
    allow_tie: bool = True


@dataclass
class KeyState:
    """What the terminal keeps between the keys of one answer, and what a kind may ask of it."""

    read_text: Callable[[str], str]  # the annotator edits a text (given the initial one)
    say: Callable[[str], None]  # a line of feedback (untrusted parts already safe to show)
    picked: list[int] = field(default_factory=list)  # rank: outputs chosen so far, best first


#: A task's outputs → texts, read from the store only when a kind needs them (rating → SFT).
TextsOf = Callable[[list[int]], dict[int, str]]


class TaskKind:
    """One kind of question a task asks. Subclass it, set the class attributes, override what
    differs, and :func:`prefloop.kinds.register_kind` an instance."""

    # ---------------------------------------------------------------- identity and shape
    #: the name stored in ``tasks.kind`` and used in files, the API and the CLI
    name: ClassVar[str]
    #: how many outputs a task of this kind shows (least, most)
    outputs: ClassVar[tuple[int, int]]
    #: the one field of an answer object (``{"choice": …}``)
    answer_field: ClassVar[str]
    #: a task carries a rating scale (``tasks.scale_min/scale_max``)
    needs_scale: ClassVar[bool] = False
    #: "about the same" is a possible answer (when the task allows it)
    allows_tie: ClassVar[bool] = False
    #: how a judge answers it: PAIRWISE, POINTWISE, or None (judges cannot)
    judge_mode: ClassVar[str | None] = None
    #: a judge's verdicts on it may flip when the outputs swap places (``meta.consistent``)
    counts_position_flips: ClassVar[bool] = True
    #: its answers yield preference pairs / SFT targets
    makes_pairs: ClassVar[bool] = False
    makes_sft: ClassVar[bool] = False
    #: its pairs and targets are computed over all its tasks together (the ratings of one prompt's
    #: outputs), so they come after those of kinds that answer task by task
    combines_tasks: ClassVar[bool] = False
    #: Krippendorff's level for agreement between annotators ("nominal", "ordinal"), None: not measured
    agreement_level: ClassVar[AgreementLevel | None] = None
    #: the keys line under a task in ``prefloop annotate`` (``{lo}``/``{hi}``: the scale)
    key_help: ClassVar[str] = "s = skip · q = quit"
    #: the Argilla question that carries the answer, and its Argilla type
    argilla_question: ClassVar[str]
    argilla_question_type: ClassVar[str]

    def __repr__(self) -> str:
        return f"<task kind {self.name!r}>"

    def outputs_text(self) -> str:
        """"2", "2–64": how many outputs, for messages."""
        lo, hi = self.outputs
        return f"{lo}" if lo == hi else f"{lo}–{hi}"

    # ---------------------------------------------------------------- answers
    def validate(
        self, value: Any, generation_ids: list[int], *, scale: tuple[int, int] | None = None,
        allow_tie: bool = True, where: str = "answer",
    ) -> dict[str, Any]:
        """The normalised answer, or :class:`InvalidAnswer` naming what is wrong (``where`` first)."""
        if not isinstance(value, dict):
            raise InvalidAnswer(f"{where}: the answer must be an object, got {type(value).__name__}")
        expected = self.answer_field
        if expected not in value:
            raise InvalidAnswer(f"{where}: a {self.name} answer needs the field {expected!r}", hint=f"send {{{expected!r}: ...}}")
        extra = set(value) - {expected}
        if extra:
            raise InvalidAnswer(f"{where}: unexpected field(s) {sorted(extra)} in a {self.name} answer")
        return {expected: self.check(value[expected], generation_ids, scale=scale, allow_tie=allow_tie, where=where)}

    def check(
        self, v: Any, generation_ids: list[int], *, scale: tuple[int, int] | None, allow_tie: bool, where: str,
    ) -> Any:
        """The answer field's value, normalised, or :class:`InvalidAnswer`."""
        raise NotImplementedError

    # ---------------------------------------------------------------- aggregation
    def preferences(self, tasks: list[TaskLabels], config: AggregationConfig) -> list[Preference]:
        """Preference pairs from this kind's tasks (all of them, of every prompt and round)."""
        return []

    def sft_targets(self, tasks: list[TaskLabels], config: AggregationConfig, texts: TextsOf) -> list[SFTTarget]:
        """SFT targets from this kind's tasks."""
        return []

    def agreement_label(self, t: TaskLabels, value: dict[str, Any], consistent: bool = True) -> str | int:
        """One answer as a category (or an ordinal) that means the same across tasks."""
        raise NotImplementedError(f"agreement is not measured on {self.name} tasks")

    # ---------------------------------------------------------------- judges
    def judge_pairs(self, n_outputs: int) -> list[tuple[int, int]]:
        """PAIRWISE kinds: the (i, j) output positions a judge compares for one task."""
        return []

    def judge_answer(
        self, view: TaskView, verdicts: Sequence[Verdict], pairs: Sequence[tuple[int, int]] = (),
    ) -> dict[str, Any]:
        """The annotation a judge's verdicts make (``status``, ``value``, ``rationale``,
        ``confidence``, ``meta`` and spend): one verdict, or one per pair of :meth:`judge_pairs`."""
        raise NotImplementedError(f"judges do not answer {self.name} tasks")

    def signals(self, verdicts: list[dict[str, Any]], scale: tuple[int, int] | None) -> dict[str, float]:
        """How much a human label would teach (each in [0, 1]), from the task's judge annotations
        (``status``, ``value``, ``meta``, ``confidence``); ``{}`` without any. See
        :mod:`prefloop.judges.selection`."""
        if not verdicts:
            return {}
        ok = [v for v in verdicts if v["status"] == "submitted"]
        failed = [v for v in verdicts if v["status"] != "submitted" and (v["meta"] or {}).get("error")]
        flags = []  # a panel's members count as verdicts of their own for position flips
        for v in verdicts:
            members = (v["meta"] or {}).get("members") or {}
            if members and self.counts_position_flips:
                flags += [m.get("consistent") for m in members.values() if m.get("error") is None]
            else:
                flags.append((v["meta"] or {}).get("consistent"))
        out = {
            "failure": len(failed) / len(verdicts),
            "inconsistency": sum(f is False for f in flags) / len(flags) if self.counts_position_flips and flags else 0.0,
            "disagreement": 0.0,
            "low_margin": 0.0,
        }
        out.update(self.doubt(ok, scale))
        panel = [float(v["meta"]["disagreement"]) for v in ok if (v["meta"] or {}).get("disagreement") is not None]
        if panel:
            out["disagreement"] = max(out["disagreement"], statistics.fmean(panel))
        return out

    def doubt(self, ok: list[dict[str, Any]], scale: tuple[int, int] | None) -> dict[str, float]:
        """``disagreement`` and ``low_margin`` from the successful judge annotations (where known)."""
        return {}

    def position_checks(self, meta: dict[str, Any]) -> list[bool]:
        """Whether each pairwise verdict behind one judge annotation survived a position swap."""
        return []

    # ---------------------------------------------------------------- scripted humans
    def best_answer(
        self, view: TaskView, score: Callable[[int, str], float | None], reference: Callable[[], str | None],
        *, tie_tolerance: float = 1e-9,
    ) -> dict[str, Any] | None:
        """The answer an oracle gives from a score per output (higher is better; None: unknown),
        or None when it cannot tell."""
        scores = [score(g, t) for g, t in zip(view.generation_ids, view.texts, strict=True)]
        if any(s is None for s in scores):
            return None
        return self.best_from_scores(view, [float(s) for s in scores if s is not None], tie_tolerance)

    def best_from_scores(self, view: TaskView, scores: list[float], tie_tolerance: float) -> dict[str, Any] | None:
        raise NotImplementedError

    def plausible_mistake(self, view: TaskView, best: dict[str, Any] | None, rng: random.Random) -> dict[str, Any]:
        """A wrong answer a careless human might give (``best``: the right one, if known)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- terminal
    def keys_line(self, scale: tuple[int, int] | None) -> str:
        lo, hi = scale or (1, 5)
        return self.key_help.format(lo=lo, hi=hi)

    def on_key(self, key: str, view: TaskView, state: KeyState) -> dict[str, Any] | None:
        """The answer this key completes, or None (``s`` and ``q`` never reach a kind)."""
        return None

    # ---------------------------------------------------------------- Argilla
    def argilla_fields(self, n_outputs: int) -> tuple[str, ...]:
        """The record's text fields that hold the outputs, in task order."""
        return ("response",)

    def argilla_options(
        self, view: TaskView, *, default_scale: tuple[int, int], default_ties: bool,
    ) -> tuple[tuple[Any, ...], str]:
        """(the main question's options, the dataset-name variant) for one task: tasks whose
        options differ go to different datasets (Argilla settings cannot change)."""
        return (), ""

    def argilla_check_options(self, dataset: str, options: tuple[Any, ...]) -> None:
        """Refuse (ConfigError) options Argilla cannot show."""

    def argilla_main_question(self, options: tuple[Any, ...]) -> Any:
        raise NotImplementedError

    def argilla_prefill(self, texts: list[str]) -> str | None:
        """A value to pre-fill the main question with, from the outputs themselves (edit)."""
        return None

    def argilla_suggestion(self, value: dict[str, Any], generation_ids: list[int], options: tuple[Any, ...],
                           fields: tuple[str, ...]) -> Any:
        """A stored (judge) answer as a value of the main question, or None when it cannot be shown."""
        return None

    def argilla_answer(self, values: dict[str, Any], generation_ids: list[int], fields: tuple[str, ...]) -> dict[str, Any]:
        """An Argilla response's values (question → ``{"value": …}``) as a prefloop answer,
        validated later by the writer; :class:`InvalidAnswer` when it cannot be one."""
        main = (values.get(self.argilla_question) or {}).get("value")
        if main is None:
            raise InvalidAnswer(f"the response has no value for question {self.argilla_question!r}")
        return self.from_argilla(main, generation_ids, fields)

    def from_argilla(self, main: Any, generation_ids: list[int], fields: tuple[str, ...]) -> dict[str, Any]:
        return {self.answer_field: main}


# ------------------------------------------------------------------------------ shared by kinds
def as_int(x: Any) -> int | None:
    """``x`` when it is a real int (not a bool), else None."""
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def pair_meta(v: PairwiseVerdict) -> dict[str, Any]:
    """What a pairwise verdict leaves in its annotation's meta."""
    m: dict[str, Any] = {"winner": v.winner, "consistent": v.consistent, "prob_a": v.prob_a if v.ok else None, "cached": v.cached}
    if v.orders is not None:
        m["orders"] = list(v.orders)
    if v.disagreement is not None:
        m["disagreement"] = v.disagreement
    if v.members:
        m["members"] = v.members
    return m


def spend(vs: Sequence[Verdict]) -> dict[str, Any]:
    """Tokens, cost and seconds of the verdicts behind one annotation."""
    return {
        "prompt_tokens": sum(v.prompt_tokens for v in vs),
        "completion_tokens": sum(v.completion_tokens for v in vs),
        "cost": sum(v.cost for v in vs),
        "duration_s": sum(v.latency_s for v in vs),
    }


def pair_margins(metas: list[dict[str, Any]]) -> list[float]:
    """How close each P(A better) is to a coin flip (1: even, 0: certain)."""
    return [1.0 - abs(2.0 * float(m["prob_a"]) - 1.0) for m in metas if m.get("prob_a") is not None]
