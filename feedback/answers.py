"""Answer validation: an answer must fit the task it answers, or it is refused with a reason.

Answers are plain dicts so that the HTTP API, the terminal mode, judges and Argilla share them:

- rate:    ``{"rating": int}`` inside the task's scale
- compare: ``{"choice": generation_id}`` (one of the two shown) or ``{"choice": "tie"}``
- rank:    ``{"ranking": [generation_id, ...]}``, best first, a permutation of the shown ids
- edit:    ``{"text": str}``, storable and not blank once invisible characters are removed
  (the corrected answer, an SFT target)
"""

from __future__ import annotations

from typing import Any

from prefloop.errors import InvalidAnswer
from prefloop.text import check_text, is_blank

from .models import TaskKind

TIE = "tie"


def validate_answer(
    kind: str,
    generation_ids: list[int],
    value: Any,
    *,
    scale: tuple[int, int] | None = None,
    allow_tie: bool = True,
    task_id: int | None = None,
) -> dict[str, Any]:
    """Return the normalised answer or raise :class:`InvalidAnswer` naming what is wrong."""
    where = f"task {task_id}" if task_id is not None else "answer"
    if not isinstance(value, dict):
        raise InvalidAnswer(f"{where}: the answer must be an object, got {type(value).__name__}")
    kind = TaskKind(kind).value
    expected = {"rate": "rating", "compare": "choice", "rank": "ranking", "edit": "text"}[kind]
    if expected not in value:
        raise InvalidAnswer(f"{where}: a {kind} answer needs the field {expected!r}", hint=f"send {{{expected!r}: ...}}")
    extra = set(value) - {expected}
    if extra:
        raise InvalidAnswer(f"{where}: unexpected field(s) {sorted(extra)} in a {kind} answer")
    v = value[expected]
    if kind == "rate":
        lo, hi = scale or (1, 5)
        if isinstance(v, bool) or not isinstance(v, int) and not (isinstance(v, float) and v.is_integer()):
            raise InvalidAnswer(f"{where}: rating must be an integer from {lo} to {hi}, got {v!r}")
        if not lo <= int(v) <= hi:
            raise InvalidAnswer(f"{where}: rating {v} is outside the scale {lo}–{hi}")
        return {"rating": int(v)}
    if kind == "compare":
        if v == TIE:
            if not allow_tie:
                raise InvalidAnswer(f"{where}: ties are not allowed for this task; choose one output")
            return {"choice": TIE}
        if isinstance(v, bool) or v not in generation_ids:
            raise InvalidAnswer(
                f"{where}: choice {v!r} is not one of the shown outputs {generation_ids}",
                hint="send the generation id of the better output, or 'tie'",
            )
        return {"choice": int(v)}
    if kind == "rank":
        if not isinstance(v, list) or sorted(map(_as_int, v)) != sorted(generation_ids) or len(v) != len(generation_ids):
            raise InvalidAnswer(
                f"{where}: ranking {v!r} must be a permutation of the shown outputs {generation_ids}, best first"
            )
        return {"ranking": [int(x) for x in v]}
    # edit: the text becomes an SFT target, so it must be storable, exportable and visible
    if not isinstance(v, str):
        raise InvalidAnswer(f"{where}: the edited text must be text, got {type(v).__name__}")
    check_text(v, f"{where}: the edited text", error=InvalidAnswer)
    if is_blank(v):
        raise InvalidAnswer(
            f"{where}: the edited text is empty (only spaces or invisible characters)",
            hint="write the corrected answer, or skip the task",
        )
    return {"text": v}


def _as_int(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        return -1  # never equal to a generation id: makes the permutation check fail cleanly
    return x
