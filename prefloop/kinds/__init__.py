"""The task-kind registry: everything prefloop knows about a kind of question, in one place per kind.

A task asks one kind of question about one or more outputs of a prompt: ``compare`` two,
``rate`` one, ``rank`` several, ``edit`` one. Each kind is a :class:`~prefloop.kinds.base.TaskKind`
subclass in its own module here; the queue, the answer writer, aggregation, export, agreement,
the terminal, the judges and active selection look a kind up with :func:`get_kind` and ask it,
instead of testing its name.

Adding a task kind
------------------
Write one module with one subclass of :class:`TaskKind` and register an instance::

    from prefloop.errors import InvalidAnswer
    from prefloop.kinds import TaskKind, register_kind

    class YesNoKind(TaskKind):
        name = "yesno"                 # stored in tasks.kind (at most 16 characters)
        outputs = (1, 1)               # how many outputs a task shows (least, most)
        answer_field = "ok"            # answers are {"ok": ...}

        def check(self, v, generation_ids, *, scale, allow_tie, where):
            if not isinstance(v, bool):
                raise InvalidAnswer(f"{where}: 'ok' must be true or false")
            return v

    register_kind(YesNoKind())

That is enough for the queue (add, claim, submit, skip), the writer (leased submits and
lease-free records, with history) and export (it contributes no rows until it says how). Then
override what the kind supports, each a method or class attribute of :class:`TaskKind` with a
docstring: ``preferences`` / ``sft_targets`` (with ``makes_pairs`` / ``makes_sft``) to feed
export; ``judge_mode``, ``judge_pairs``, ``judge_answer`` and ``doubt`` for judges and active
selection; ``agreement_label`` (with ``agreement_level``); ``best_from_scores`` and
``plausible_mistake`` for scripted humans; ``key_help`` and ``on_key`` for ``prefloop annotate``;
the ``argilla_*`` methods for the Argilla bridge. A built-in kind (``compare.py``, ``rate.py``,
``rank.py``, ``edit.py``) is the model to copy; ``tests/test_kinds.py`` has a plug-in kind that
goes from the queue to an exported dataset. Not yet: the annotation server (web page and HTTP
API) and the Argilla bridge know the four built-in kinds only, so answer a plug-in kind's tasks
from Python or ``prefloop annotate``, and keep them out of rounds that people label on the page.

``import prefloop.kinds`` stays light: heavy libraries are imported inside the methods that use them.
"""

from __future__ import annotations

import enum
import re

from prefloop.errors import QueueError

from .base import (
    PAIRWISE,
    POINTWISE,
    TIE,
    KeyState,
    Preference,
    SFTTarget,
    TaskKind,
    TaskLabels,
    TaskView,
)
from .compare import COMPARE
from .edit import EDIT
from .rank import RANK
from .rate import RATE

#: name → kind, in the order kinds are listed (built-ins first, then plug-ins as registered).
KINDS: dict[str, TaskKind] = {k.name: k for k in (COMPARE, RATE, RANK, EDIT)}
_BUILT_IN = frozenset(KINDS)
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,15}$")  # tasks.kind holds 16 characters


def kind_names() -> list[str]:
    """The names of every registered kind."""
    return list(KINDS)


def get_kind(name: str | TaskKind | enum.Enum) -> TaskKind:
    """The registered kind called ``name``; an unknown name is a one-line :class:`QueueError`."""
    if isinstance(name, TaskKind):
        name = name.name
    elif isinstance(name, enum.Enum):  # the store's TaskKind enum of built-in names
        name = name.value
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise QueueError(f"unknown task kind {str(name)[:40]!r}", hint=f"use one of {', '.join(KINDS)}")
    return kind


def register_kind(kind: TaskKind, *, replace: bool = False) -> TaskKind:
    """Make ``kind`` known everywhere prefloop handles tasks; returns it.

    Refuses a name that is taken (unless ``replace``; a built-in kind is never replaced), not a
    short lowercase word, or a kind without its shape.
    """
    if not isinstance(kind, TaskKind):
        raise TypeError(f"register_kind takes a TaskKind instance, got {type(kind).__name__}")
    name = getattr(kind, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"task kind name {name!r} must be a lowercase word of at most 16 characters")
    if name in _BUILT_IN or (name in KINDS and not replace):
        raise ValueError(f"task kind {name!r} is already registered")
    lo, hi = getattr(kind, "outputs", (0, 0))
    if not 1 <= lo <= hi:
        raise ValueError(f"task kind {name!r}: outputs must be (least, most) with 1 ≤ least ≤ most, got {(lo, hi)}")
    if not isinstance(getattr(kind, "answer_field", None), str):
        raise ValueError(f"task kind {name!r} needs an answer_field")  # noqa: TRY004 - one error type for every bad registration
    KINDS[name] = kind
    return kind


def unregister_kind(name: str) -> None:
    """Forget a plug-in kind (tasks of that kind already stored stay, and cannot be answered)."""
    if name in _BUILT_IN:
        raise ValueError(f"the built-in task kind {name!r} cannot be unregistered")
    KINDS.pop(name, None)


__all__ = [
    "COMPARE", "EDIT", "KINDS", "PAIRWISE", "POINTWISE", "RANK", "RATE", "TIE", "KeyState", "Preference",
    "SFTTarget", "TaskKind", "TaskLabels", "TaskView", "get_kind", "kind_names", "register_kind", "unregister_kind",
]
