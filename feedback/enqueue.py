"""Adding work to the queue: store a prompt's outputs, and enqueue a task over them.

A task shows its kind's number of distinct outputs (:mod:`prefloop.kinds`), all of one prompt;
a kind with a scale gets the queue's default rating scale unless one is given. Kept apart from
:mod:`.queue` (claims, submits, reporting), whose :class:`~.queue.Queue` inherits these methods.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from prefloop.errors import DataError, NotFoundError, QueueError
from prefloop.kinds import TaskKind, get_kind
from prefloop.text import check_json, check_text

from .prompts import PromptInput, get_or_create_prompt
from .store.db import Store
from .store.models import Generation, Prompt, Task, TaskStatus

#: the longest model label the table holds (PostgreSQL refuses longer ones; SQLite would store them).
MAX_MODEL = 500


class Enqueue:
    """The enqueue half of :class:`~.queue.Queue`: needs its store and defaults."""

    store: Store
    overlap: int
    rating_scale: tuple[int, int]
    allow_ties: bool

    def add_task(
        self,
        kind: str | TaskKind,
        generation_ids: list[int],
        *,
        overlap: int | None = None,
        priority: float = 0.0,
        round_id: int | None = None,
        scale: tuple[int, int] | None = None,
        meta: dict[str, Any] | None = None,
        session: Session | None = None,
    ) -> int:
        """Enqueue a task over stored generations of one prompt; returns the task id."""
        if session is None:
            with self.store.session() as s:
                return self.add_task(
                    kind, generation_ids, overlap=overlap, priority=priority, round_id=round_id,
                    scale=scale, meta=meta, session=s,
                )
        ids = [int(g) for g in generation_ids]
        if len(set(ids)) != len(ids):
            raise QueueError(f"a task needs distinct outputs, got {ids}")
        fields = self.task_fields(kind, len(ids), overlap=overlap, priority=priority, scale=scale, meta=meta)
        gens = session.execute(
            select(Generation.id, Generation.prompt_id, Generation.text).where(Generation.id.in_(ids))
        ).all()
        if len(gens) != len(ids):
            missing = sorted(set(ids) - {g.id for g in gens})
            raise NotFoundError(f"generation(s) {missing} do not exist")
        prompt_ids = {g.prompt_id for g in gens}
        if len(prompt_ids) != 1:
            raise QueueError(f"the outputs of one task must answer the same prompt; got prompts {sorted(prompt_ids)}")
        texts = {g.id: g.text for g in gens}
        check_distinct_outputs([texts[i] for i in ids], error=QueueError)
        task = Task(prompt_id=prompt_ids.pop(), round_id=round_id, generation_ids=ids, **fields)
        session.add(task)
        session.flush()
        return task.id

    def task_fields(
        self,
        kind: str | TaskKind,
        n_outputs: int,
        *,
        overlap: int | None = None,
        priority: float = 0.0,
        scale: tuple[int, int] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The columns of a new task of ``kind`` over ``n_outputs`` outputs, with this queue's defaults.

        Raises :class:`QueueError` for a task that cannot be served (an unknown kind, the wrong
        number of outputs for it, negative overlap, an empty rating scale, a priority or meta that
        cannot be stored); one task or a bulk ``queue add`` alike.
        """
        task_kind = get_kind(kind)
        lo_n, hi_n = task_kind.outputs
        if not lo_n <= n_outputs <= hi_n:
            raise QueueError(f"a {task_kind.name} task needs {task_kind.outputs_text()} outputs, got {n_outputs}")
        if isinstance(priority, bool) or not isinstance(priority, (int, float)) or not math.isfinite(priority):
            raise QueueError(f"priority is {priority!r}; expected a finite number")
        check_json(dict(meta or {}), "meta", error=QueueError)
        k = self.overlap if overlap is None else overlap
        if k < 0:
            raise QueueError(f"overlap must be ≥ 0, got {k}")
        lo: int | None = None
        hi: int | None = None
        if task_kind.needs_scale:
            lo, hi = scale or self.rating_scale
            if not lo < hi:
                raise QueueError(f"rating scale must go from low to high, got {lo}–{hi}")
        return {
            "kind": task_kind.name, "overlap": k, "n_done": 0, "priority": float(priority),
            "status": TaskStatus.OPEN.value if k > 0 else TaskStatus.COMPLETE.value,
            "scale_min": lo, "scale_max": hi, "meta": {"allow_tie": self.allow_ties, **(meta or {})},
        }

    def add_generations(
        self,
        prompt: PromptInput | int,
        outputs: list[str],
        *,
        round_id: int | None = None,
        model: str | None = None,
        params: dict[str, Any] | None = None,
        session: Session,
    ) -> list[int]:
        """Store outputs of one prompt (created if new, or given by id); returns generation ids."""
        if not isinstance(outputs, list):
            raise DataError(f"outputs must be a list of texts, got {type(outputs).__name__}")
        for i, o in enumerate(outputs):
            check_text(o, f"outputs[{i}]", allow_blank=False)
        if model is not None:
            check_text(model, "model", max_length=MAX_MODEL)
        check_json(dict(params or {}), "params")
        if isinstance(prompt, int):
            if session.get(Prompt, prompt) is None:
                raise NotFoundError(f"prompt {prompt} does not exist")
            prompt_id = prompt
        else:
            prompt_id = get_or_create_prompt(session, prompt, source="api")[0].id
        rows = [
            Generation(prompt_id=prompt_id, round_id=round_id, text=o, model=model, params=dict(params or {}))
            for o in outputs
        ]
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]

    def _one_liner(self, kind: str, prompt: PromptInput | int, outputs: list[str], **kw: Any) -> int:
        with self.store.session() as s:
            ids = self.add_generations(prompt, outputs, round_id=kw.get("round_id"), model=kw.pop("model", None), session=s)
            return self.add_task(kind, ids, session=s, **kw)

    def add_comparison(self, prompt: PromptInput | int, outputs: list[str], **kw: Any) -> int:
        """One-liner: store the prompt and two outputs and enqueue an A/B task."""
        return self._one_liner("compare", prompt, outputs, **kw)

    def add_rating(self, prompt: PromptInput | int, output: str, **kw: Any) -> int:
        """One-liner: store the prompt and one output and enqueue a rate task."""
        return self._one_liner("rate", prompt, [output], **kw)

    def add_ranking(self, prompt: PromptInput | int, outputs: list[str], **kw: Any) -> int:
        """One-liner: store the prompt and several outputs and enqueue a rank task."""
        return self._one_liner("rank", prompt, outputs, **kw)

    def add_edit(self, prompt: PromptInput | int, output: str, **kw: Any) -> int:
        """One-liner: store the prompt and one output and enqueue an edit (correction) task."""
        return self._one_liner("edit", prompt, [output], **kw)


def check_distinct_outputs(
    texts: list[str], *, where: str | None = None, error: type[QueueError | DataError] = QueueError
) -> None:
    """Refuse a task whose outputs repeat one text: nobody can prefer an output over itself."""
    first: dict[str, int] = {}
    for i, text in enumerate(texts, 1):
        if text in first:
            raise error(
                f"{where + ': ' if where else ''}outputs {first[text]} and {i} are identical; "
                "a task compares different outputs",
                hint="drop the duplicate, or use a rate task for a single output",
            )
        first[text] = i
