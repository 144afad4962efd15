"""edit: correct one output; the corrected text is an SFT target.

Answer ``{"text": str}``: storable, and not blank once invisible characters are removed. Every
distinct corrected text of a task becomes an SFT target (humans' if any answered). Judges do
not answer edit tasks.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from prefloop.errors import InvalidAnswer
from prefloop.text import check_text, is_blank

from .base import KeyState, SFTTarget, TaskKind, TaskLabels, TaskView, TextsOf

if TYPE_CHECKING:
    from collections.abc import Callable

    from prefloop.feedback.config import AggregationConfig


class EditKind(TaskKind):
    name = "edit"
    outputs = (1, 1)
    answer_field = "text"
    makes_sft = True
    key_help = "e = edit the output in $EDITOR (or type it, end with a line holding only '.') · s = skip · q = quit"
    argilla_question = "corrected"
    argilla_question_type = "text"

    # ---------------------------------------------------------------- answers
    def check(self, v: Any, generation_ids: list[int], *, scale: tuple[int, int] | None, allow_tie: bool, where: str) -> Any:
        """The text becomes an SFT target, so it must be storable, exportable and visible."""
        if not isinstance(v, str):
            raise InvalidAnswer(f"{where}: the edited text must be text, got {type(v).__name__}")
        check_text(v, f"{where}: the edited text", error=InvalidAnswer)
        if is_blank(v):
            raise InvalidAnswer(
                f"{where}: the edited text is empty (only spaces or invisible characters)",
                hint="write the corrected answer, or skip the task",
            )
        return v

    # ---------------------------------------------------------------- aggregation
    def sft_targets(self, tasks: list[TaskLabels], config: AggregationConfig, texts: TextsOf) -> list[SFTTarget]:
        """Each distinct corrected text (ignoring surrounding space) of each task."""
        out = []
        for t in tasks:
            seen: set[str] = set()
            for lab in t.voters():
                text = lab.value["text"]
                if text.strip() in seen:
                    continue
                seen.add(text.strip())
                out.append(SFTTarget(t.prompt_id, t.round_number, text, lab.kind, "edit", 1.0, [lab.annotator], [t.task_id]))
        return out

    # ---------------------------------------------------------------- scripted humans
    def best_answer(
        self, view: TaskView, score: Callable[[int, str], float | None], reference: Callable[[], str | None],
        *, tie_tolerance: float = 1e-9,
    ) -> dict[str, Any] | None:
        """The reference answer, when there is one."""
        text = reference()
        return {"text": text} if text else None

    def plausible_mistake(self, view: TaskView, best: dict[str, Any] | None, rng: random.Random) -> dict[str, Any]:
        """A careless human leaves the output as it was."""
        original = view.texts[0]
        return {"text": original if original.strip() else "(no answer)"}

    # ---------------------------------------------------------------- terminal
    def on_key(self, key: str, view: TaskView, state: KeyState) -> dict[str, Any] | None:
        return {"text": state.read_text(view.texts[0])} if key == "e" else None

    # ---------------------------------------------------------------- Argilla
    def argilla_main_question(self, options: tuple[Any, ...]) -> Any:
        import argilla as rg

        return rg.TextQuestion(self.argilla_question, title="Correct the response (it is prefilled: edit it)", use_markdown=False)

    def argilla_prefill(self, texts: list[str]) -> str | None:
        """The output itself, to be corrected in place (an empty output has nothing to prefill)."""
        return texts[0] if texts[0].strip() else None


EDIT = EditKind()
