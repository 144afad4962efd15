"""The task plug-in contract: one object that says what a task is and what a good answer is.

A :class:`TaskSpec` names the prompts (a JSONL file with ``train`` and ``eval`` splits), the
**oracle** — ``oracle(meta, messages, reply) -> float`` in [0, 1], the measurement of evaluation
*and* what scripted humans know — and optionally **fix** — ``fix(meta, reply) -> str``, how a
careful person corrects a reply in an edit task — plus default config overrides (its judges, its
guidelines). ``meta`` is the prompt's ``meta`` object from the JSONL (with any extra fields of the
record), ``messages`` its chat turns.

Referenced everywhere by a shipped name (:data:`SHIPPED_TASKS`) or ``package.module:NAME``: in
``training.evaluation.oracle``, ``prefloop simulate-annotators --oracle`` and an experiment's
``task``. The module must be importable by the process that runs the loop (installed, or on
``PYTHONPATH``).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefloop.errors import ConfigError

#: ``oracle(prompt_meta, messages, reply) -> score in [0, 1]``
TaskOracle = Callable[[dict[str, Any], list[dict[str, str]], str], float]
#: ``fix(prompt_meta, reply) -> the corrected reply``
TaskFix = Callable[[dict[str, Any], str], str]

#: Tasks shipped with prefloop, by name.
SHIPPED_TASKS = {
    "support-desk": "prefloop.training.demo:SUPPORT_DESK",
    "support-desk-rag": "prefloop.training.demo_rag:SUPPORT_DESK_RAG",
    "arithmetic": "prefloop.configs.tasks.arithmetic.task:TASK",
}


@dataclass(frozen=True)
class TaskSpec:
    """A task: its prompts, its oracle, how a careful human fixes a reply, and its config defaults."""

    name: str
    prompts: Path
    oracle: TaskOracle
    fix: TaskFix | None = None
    #: config defaults for this task, as a nested mapping or ``{"dotted.key": value}`` (e.g. its judges);
    #: an experiment applies them over its base config, before its arms' overrides.
    config: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    #: documents (a folder, JSONL, Parquet or a saved dataset) imported into the knowledge base the
    #: config's ``rag.kb`` names before round 0, for tasks whose facts come from retrieval
    knowledge: Path | None = None

    def human_oracle(self, store: Any) -> Any:
        """What a scripted human knows (a :class:`~prefloop.sim.ScoreOracle`): each candidate's oracle
        score, and for edit tasks the reply as :attr:`fix` corrects it."""
        from prefloop.training.evaluation import oracle_score

        from .humans import ScoreOracle

        lookup = prompt_lookup(store)

        def score(task: Any, gid: int, text: str) -> float:
            meta, messages = lookup(gid)
            return oracle_score(self.oracle, meta, messages, text, f"generation {gid} (task {self.name})")

        def reference(task: Any) -> str | None:
            gid, text = task.candidates[0]
            return self.fix(lookup(gid)[0], text) if self.fix else None

        return ScoreOracle(score, reference)


def prompt_lookup(store: Any) -> Callable[[int], tuple[dict[str, Any], list[dict[str, str]]]]:
    """generation id → (its prompt's meta, its prompt's messages), cached."""
    from sqlalchemy import select

    from prefloop.feedback.store.models import Generation, Prompt

    @functools.lru_cache(maxsize=4096)
    def lookup(generation_id: int) -> tuple[dict[str, Any], list[dict[str, str]]]:
        with store.session() as s:
            prompt = s.scalar(select(Prompt).join(Generation, Generation.prompt_id == Prompt.id)
                              .where(Generation.id == generation_id))
            if prompt is None:
                return {}, []
            return dict(prompt.meta or {}), prompt.as_messages()

    return lookup


def resolve(ref: str, what: str = "task") -> Any:
    """The object a shipped task name or ``package.module:NAME`` points at."""
    target = SHIPPED_TASKS.get(ref, ref)
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"unknown {what} {ref!r}",
                          hint=f"use a shipped task ({', '.join(SHIPPED_TASKS)}) or 'package.module:NAME'")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load {what} {ref!r}: {exc}",
                          hint="the module must be importable (installed, or on PYTHONPATH)") from None
    return obj


def load_task(ref: str | TaskSpec) -> TaskSpec:
    """A :class:`TaskSpec` from a shipped name or ``package.module:NAME`` (a TaskSpec, or a function
    without arguments that returns one)."""
    if isinstance(ref, TaskSpec):
        return ref
    obj = resolve(ref)
    if not isinstance(obj, TaskSpec) and takes_no_arguments(obj):
        obj = obj()
    if not isinstance(obj, TaskSpec):
        raise ConfigError(f"task {ref!r} is a {type(obj).__name__}, not a prefloop.sim.task.TaskSpec",
                          hint="point at a TaskSpec object (see the README's task plug-in contract)")
    if not Path(obj.prompts).is_file():
        raise ConfigError(f"task {obj.name!r}: its prompts file {obj.prompts} does not exist")
    return obj


def takes_no_arguments(obj: Any) -> bool:
    """A function that can be called without arguments (a task factory), not a class."""
    if not callable(obj) or isinstance(obj, type):
        return False
    try:
        return not any(p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                       for p in inspect.signature(obj).parameters.values())
    except (TypeError, ValueError):
        return False
