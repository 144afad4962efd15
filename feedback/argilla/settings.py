"""What prefloop expects an Argilla dataset to look like: names, fields, questions, settings.

One dataset per round and task kind, named ``<prefix>-round-<n>-<kind>`` (plus a variant when a
task's options differ from the project's defaults). The question and field names below are
prefloop's contract with the datasets it creates; :func:`settings_differences` checks an existing
dataset against it before a push writes anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefloop.errors import NotFoundError
from prefloop.kinds import COMPARE, EDIT, RANK, RATE, get_kind

from ..store.models import Round

if TYPE_CHECKING:
    from prefloop.project import Project

EXTERNAL_ID_PREFIX = "prefloop-task-"

# Question names: prefloop's contract with the datasets it creates. Each kind declares its main
# question (prefloop.kinds); these names stay for callers of the package.
Q_PREFERENCE, Q_RANKING, Q_RATING, Q_CORRECTED = (k.argilla_question for k in (COMPARE, RANK, RATE, EDIT))
Q_COMMENT = "comment"
#: The built-in kinds' main questions (a kind's own: ``get_kind(name).argilla_question``).
MAIN_QUESTION = {k.name: k.argilla_question for k in (COMPARE, RANK, RATE, EDIT)}


@dataclass(frozen=True)
class DatasetSpec:
    """The settings prefloop creates for one (round, kind) group, in comparable form."""

    name: str
    kind: str
    round_number: int | None
    candidate_fields: tuple[str, ...]
    question_options: tuple[str, ...] | tuple[int, ...]  # labels, ranking values, or rating values
    min_submitted: int
    chat_prompt: bool

    def questions(self) -> dict[str, tuple[str, tuple[Any, ...] | None]]:
        """question name → (Argilla type, options)."""
        kind = get_kind(self.kind)
        return {
            kind.argilla_question: (kind.argilla_question_type, tuple(self.question_options) or None),
            Q_COMMENT: ("text", None),
        }

    def fields(self) -> dict[str, set[str]]:
        """field name → accepted Argilla types (the prompt may be chat or text)."""
        return {"prompt": {"chat", "text"}, **{f: {"text"} for f in self.candidate_fields}}


def dataset_name(prefix: str, round_number: int | None, kind: str, variant: str = "") -> str:
    where = f"round-{round_number}" if round_number is not None else "no-round"
    return f"{prefix}-{where}-{kind}{('-' + variant) if variant else ''}"


_NAME_RE = r"^{prefix}-(?:round-(?P<round>\d+)|no-round)-(?P<kind>compare|rank|rate|edit)(?:-.*)?$"


def parse_name(prefix: str, name: str) -> tuple[int | None, str] | None:
    m = re.match(_NAME_RE.format(prefix=re.escape(prefix)), name)
    if m is None:
        return None
    return (int(m["round"]) if m["round"] is not None else None), m["kind"]


def build_settings(spec: DatasetSpec, guidelines: str) -> Any:
    """The ``rg.Settings`` for a spec."""
    import argilla as rg

    prompt = (
        rg.ChatField("prompt", title="Prompt", use_markdown=False)
        if spec.chat_prompt
        else rg.TextField("prompt", title="Prompt", use_markdown=False)
    )
    titles = {"response_a": "Response A", "response_b": "Response B", "response": "Response"}
    fields = [prompt] + [
        rg.TextField(f, title=titles.get(f, f.replace("_", " ").capitalize()), use_markdown=False)
        for f in spec.candidate_fields
    ]
    main = get_kind(spec.kind).argilla_main_question(tuple(spec.question_options))
    comment = rg.TextQuestion(Q_COMMENT, title="Comment (optional)", required=False, use_markdown=False)
    return rg.Settings(
        guidelines=guidelines.strip() or None,
        fields=fields,
        questions=[main, comment],
        metadata=[
            rg.IntegerMetadataProperty("task_id", title="prefloop task", visible_for_annotators=False),
            rg.IntegerMetadataProperty("round", title="prefloop round", visible_for_annotators=False),
        ],
        allow_extra_metadata=True,
        distribution=rg.TaskDistribution(min_submitted=spec.min_submitted),
    )


def settings_differences(spec: DatasetSpec, dataset: Any) -> list[str]:
    """How an existing Argilla dataset's settings differ from what prefloop would create."""
    diffs: list[str] = []
    have_fields = {f.name: f.type for f in dataset.settings.fields}
    for name, types in spec.fields().items():
        if name not in have_fields:
            diffs.append(f"field {name!r} is missing")
        elif have_fields[name] not in types:
            diffs.append(f"field {name!r} is a {have_fields[name]} field, expected {' or '.join(sorted(types))}")
    for name in sorted(set(have_fields) - set(spec.fields())):
        diffs.append(f"field {name!r} is not one prefloop creates")
    have_q = {q.name: q for q in dataset.settings.questions}
    for name, (qtype, options) in spec.questions().items():
        q = have_q.get(name)
        if q is None:
            diffs.append(f"question {name!r} is missing")
            continue
        if q.type != qtype:
            diffs.append(f"question {name!r} is a {q.type} question, expected {qtype}")
            continue
        got = _question_options(q)
        if options is not None and tuple(got or ()) != tuple(options):
            diffs.append(f"question {name!r} has options {list(got or [])}, expected {list(options)}")
    for name in sorted(set(have_q) - set(spec.questions())):
        diffs.append(f"question {name!r} is not one prefloop creates")
    from argilla import IntegerMetadataProperty

    have_meta = {m.name: m for m in dataset.settings.metadata}
    for name in ("task_id", "round"):
        if name in have_meta and not isinstance(have_meta[name], IntegerMetadataProperty):
            diffs.append(f"metadata property {name!r} is a {type(have_meta[name]).__name__}, expected an integer property")
    if not dataset.settings.allow_extra_metadata and "generation_ids" not in have_meta:
        diffs.append("extra metadata is not allowed (prefloop keeps each record's generation_ids there)")
    k = getattr(dataset.settings.distribution, "min_submitted", None)
    if k != spec.min_submitted:
        diffs.append(f"task distribution min_submitted is {k}, expected {spec.min_submitted} (queue overlap)")
    return diffs


def _question_options(q: Any) -> tuple[Any, ...] | None:
    for attr in ("labels", "values"):
        v = getattr(q, attr, None)
        if v is not None:
            return tuple(v)
    return None


def round_number(project: Project, round_id: int | None) -> int | None:
    """The number of round ``round_id`` (None for every round); an unknown id is an error."""
    if round_id is None:
        return None
    with project.store.session() as s:
        r = s.get(Round, round_id)
        if r is None:
            raise NotFoundError(f"round id {round_id} does not exist")
        return r.number
