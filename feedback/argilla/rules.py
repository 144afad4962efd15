"""What an Argilla 2.8 server accepts in a record, checked before a push writes anything.

argilla-server validates each record of a bulk write and refuses the whole batch (HTTP 422) for
one bad value; a push that met such a refusal half-way had already created and filled other
datasets. The rules below are the server's own (``argilla_server`` 2.8.0:
``api/schemas/v1/suggestions.py``, ``api/schemas/v1/chat.py``, ``validators/response_values.py``,
``validators/suggestions.py``), so that :func:`record_problems` finds every such value first and
the push can refuse before its first write, naming dataset, record and field.

Values that prefloop chooses (a suggestion's agent and score) are made to fit instead of refused:
an agent name keeps its allowed characters, a confidence outside 0–1 is left out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

#: ``AGENT_REGEX`` of argilla-server: letters, digits, ``-_:./`` and spaces, at least one letter or digit.
_AGENT_CHAR = re.compile(r"[A-Za-z0-9\-_:./ ]")
_AGENT_OK = re.compile(r"^[a-zA-Z0-9\-_:./ ]*[a-zA-Z0-9][a-zA-Z0-9\-_:./ ]*$")
AGENT_MAX_LENGTH = 200
#: A suggestion's score (or each of its scores) lies in 0–1.
SCORE_RANGE = (0.0, 1.0)
#: A chat field's message: role 1–20 characters, content 1–20,000 (the server's defaults).
CHAT_ROLE_LENGTH = (1, 20)
CHAT_CONTENT_LENGTH = (1, 20_000)


@dataclass
class Hint:
    """One suggestion: the value of a question, shown pre-filled to annotators."""

    question: str
    value: Any
    score: float | list[float] | None
    agent: str


@dataclass
class RecordPayload:
    """One record as it will be written: checked first, turned into an ``rg.Record`` only to write."""

    id: str
    fields: dict[str, Any]
    metadata: dict[str, Any]
    hints: list[Hint] = field(default_factory=list)

    def to_argilla(self) -> Any:
        import argilla as rg

        return rg.Record(
            id=self.id, fields=self.fields, metadata=self.metadata,
            suggestions=[rg.Suggestion(h.question, h.value, score=h.score, agent=h.agent, type="model") for h in self.hints],
        )


def agent_name(name: str | None, default: str) -> str:
    """``name`` as an agent Argilla accepts: other characters become ``_``, at most 200 characters."""
    out = "".join(ch if _AGENT_CHAR.fullmatch(ch) else "_" for ch in (name or ""))[:AGENT_MAX_LENGTH]
    return out if _AGENT_OK.match(out) else default


def suggestion_score(confidence: Any, value: Any) -> float | list[float] | None:
    """A confidence as the score Argilla takes with ``value``: one number for one value, one per item
    for a list (a ranking); ``None`` when the confidence is missing, not finite or outside 0–1."""
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
        return None
    c = float(confidence)
    if not math.isfinite(c) or not SCORE_RANGE[0] <= c <= SCORE_RANGE[1]:
        return None
    return [c] * len(value) if isinstance(value, list) else c


def chat_problem(messages: list[dict[str, Any]]) -> str | None:
    """Why ``messages`` cannot be an Argilla chat field value, or ``None``."""
    (rlo, rhi), (clo, chi) = CHAT_ROLE_LENGTH, CHAT_CONTENT_LENGTH
    for i, m in enumerate(messages, 1):
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or not rlo <= len(role) <= rhi:
            return f"message {i} has a role Argilla's chat fields cannot show (they take {rlo}–{rhi} characters)"
        if not isinstance(content, str) or not clo <= len(content) <= chi:
            n = len(content) if isinstance(content, str) else 0
            return f"message {i} has {n} characters; Argilla's chat fields take {clo}–{chi}"
    return None


def hint_problem(hint: Hint, qtype: str, options: tuple[Any, ...] | None) -> str | None:
    """Why Argilla would refuse ``hint`` for a question of type ``qtype`` with ``options``, or ``None``."""
    v = hint.value
    if qtype == "text" and not isinstance(v, str):
        return "a text question takes a text value"
    if qtype == "label_selection" and v not in (options or ()):
        return f"{v!r} is not one of the labels {list(options or ())}"
    if qtype == "rating" and (isinstance(v, bool) or not isinstance(v, int) or v not in (options or ())):
        return f"{v!r} is not one of the ratings {list(options or ())}"
    if qtype == "ranking":
        if not isinstance(v, list) or not v:
            return "a ranking question takes a list of values"
        if len(set(v)) != len(v) or not set(v) <= set(options or ()):
            return f"ranking {v} is not a list of distinct values among {list(options or ())}"
    if hint.score is not None:
        scores = hint.score if isinstance(hint.score, list) else [hint.score]
        if isinstance(v, list) != isinstance(hint.score, list) or (isinstance(v, list) and len(scores) != len(v)):
            return "a list value takes one score per item, a single value one score"
        if not all(SCORE_RANGE[0] <= s <= SCORE_RANGE[1] for s in scores):
            return f"score {hint.score} is outside {SCORE_RANGE[0]}–{SCORE_RANGE[1]}"
    if not _AGENT_OK.match(hint.agent) or len(hint.agent) > AGENT_MAX_LENGTH:
        return f"agent {hint.agent!r} is not a name Argilla accepts"
    return None


def record_problems(
    payload: RecordPayload, field_types: dict[str, str], questions: dict[str, tuple[str, tuple[Any, ...] | None]]
) -> list[str]:
    """Every value of ``payload`` that Argilla would refuse, as ``"field …: why"`` lines.

    ``field_types``: field name → Argilla type (``text``/``chat``); ``questions``: question name →
    (Argilla type, options), as in :meth:`DatasetSpec.questions`.
    """
    problems: list[str] = []
    for name, value in payload.fields.items():
        ftype = field_types.get(name)
        if ftype is None:
            problems.append(f"field {name!r}: the dataset has no such field")
        elif ftype == "chat":
            why = chat_problem(value) if isinstance(value, list) else "a chat field takes a list of messages"
            if why:
                problems.append(f"field {name!r}: {why}")
        elif not isinstance(value, str):
            problems.append(f"field {name!r}: a text field takes text")
    for hint in payload.hints:
        if hint.question not in questions:
            problems.append(f"suggestion for {hint.question!r}: the dataset has no such question")
            continue
        why = hint_problem(hint, *questions[hint.question])
        if why:
            problems.append(f"suggestion for {hint.question!r}: {why}")
    return problems
