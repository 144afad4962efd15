"""Answer validation: an answer must fit the task it answers, or it is refused with a reason.

Answers are plain dicts so that the HTTP API, the terminal mode, judges and Argilla share them;
each task kind (:mod:`prefloop.kinds`) declares and checks its own shape:

- rate:    ``{"rating": int}`` inside the task's scale
- compare: ``{"choice": generation_id}`` (one of the two shown) or ``{"choice": "tie"}``
- rank:    ``{"ranking": [generation_id, ...]}``, best first, a permutation of the shown ids
- edit:    ``{"text": str}``, storable and not blank once invisible characters are removed
  (the corrected answer, an SFT target)

Every stored answer passes through :mod:`prefloop.feedback.writer`, which validates it this way.
"""

from __future__ import annotations

from typing import Any

from prefloop.kinds import TIE, get_kind

__all__ = ["TIE", "validate_answer"]


def validate_answer(
    kind: str,
    generation_ids: list[int],
    value: Any,
    *,
    scale: tuple[int, int] | None = None,
    allow_tie: bool = True,
    task_id: int | None = None,
) -> dict[str, Any]:
    """Return the normalised answer or raise :class:`~prefloop.errors.InvalidAnswer` naming what is wrong."""
    where = f"task {task_id}" if task_id is not None else "answer"
    return get_kind(kind).validate(value, generation_ids, scale=scale, allow_tie=allow_tie, where=where)
