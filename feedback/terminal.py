"""``prefloop annotate``: one annotator labels in the terminal with single keys.

Model outputs and prompts are untrusted: they are printed as rich ``Text`` objects, never parsed
as markup, so ``[bold]`` in an output shows literally; and every character that could erase,
move or hide text on a terminal (ANSI/OSC escapes, carriage returns, bidi overrides, zero-width
characters) is shown as a visible escape such as ``\x1b`` (see ``prefloop.visible``), so the
annotator judges what is stored. The whole conversation is shown, each turn with its role.
Keys read from a real
terminal come through ``click.getchar``; when stdin is a pipe (scripts, tests), one character
at a time from stdin.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

import click
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.text import Text

from prefloop.errors import InvalidAnswer
from prefloop.kinds import KeyState, TaskView, get_kind
from prefloop.visible import visible_parts

from .passages import task_sources
from .queue import ClaimedTask, Queue


def read_key() -> str:
    if sys.stdin.isatty():
        return click.getchar()
    ch = sys.stdin.read(1)
    if ch == "":
        return "q"  # end of input: stop cleanly
    return ch


def read_text(initial: str, console: Console) -> str:
    if sys.stdin.isatty():
        edited = click.edit(initial)
        return edited if edited is not None else initial
    console.print("type the corrected answer; end with a line holding only '.'")
    lines = []
    for line in sys.stdin:
        if line.rstrip("\n") == ".":
            break
        lines.append(line.rstrip("\n"))
    return "\n".join(lines)


#: How a hidden character's escape stands out from text that merely looks like one.
MARKER_STYLE = "reverse"


def shown(text: str, style: str = "") -> Text:
    """Untrusted text as the terminal should show it: literal, hidden characters as marked escapes."""
    out = Text(style=style)
    for part, marker in visible_parts(text):
        out.append(part, style=MARKER_STYLE if marker else None)
    return out


def conversation(messages: list[dict[str, str]]) -> RenderableType:
    """The prompt: a single user turn as its text, a longer conversation turn by turn with roles."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return shown(messages[0]["content"])
    return Group(*(line for m in messages for line in (shown(m["role"], style="bold cyan"), shown(m["content"]))))


def source_list(sources: list[dict[str, Any]]) -> RenderableType:
    """The passages retrieval placed in the outputs' prompt: each with its number, title, origin
    and score, then its text (untrusted, shown like outputs)."""
    lines: list[RenderableType] = []
    for p in sources:
        where = " — ".join(str(x) for x in (p.get("title"), p.get("source") or p.get("document_key")) if x)
        score = f" · score {p['score']:.3f}" if isinstance(p.get("score"), (int, float)) else ""
        number = p.get("number") if p.get("number") is not None else "?"
        lines.append(shown(f"[{number}] {where}{score}{' · cut to fit' if p.get('truncated') else ''}", style="bold"))
        lines.append(shown(str(p.get("text") or "")))
    return Group(*lines)


def render(task: ClaimedTask, guidelines: str, progress: dict[str, int], sources: list[dict[str, Any]] | None = None) -> Group:
    parts: list[RenderableType] = [
        Text(f"task {task.task_id} · {task.kind} · done {progress['done']} · remaining {progress['remaining']}", style="dim"),
        Panel(shown(guidelines), title="guidelines", border_style="blue"),
        Panel(conversation(task.prompt_messages), title="prompt", border_style="cyan"),
    ]
    if sources:  # a person judging a RAG answer must see its sources
        parts.append(Panel(source_list(sources), title="sources (placed in the model's prompt)", border_style="magenta"))
    for i, c in enumerate(task.candidates, 1):
        parts.append(Panel(shown(c.text), title=f"output {i}", border_style="green"))
    parts.append(Text(get_kind(task.kind).keys_line(task.scale), style="bold"))
    return Group(*parts)


def answer(task: ClaimedTask, key: Callable[[], str], console: Console) -> dict[str, Any] | Literal["skip", "quit"]:
    """Read keys until the task's kind says they form an answer; returns it, or "skip" / "quit"."""
    kind = get_kind(task.kind)
    view = TaskView([c.generation_id for c in task.candidates], [c.text for c in task.candidates], task.scale, task.allow_tie)
    state = KeyState(read_text=lambda initial: read_text(initial, console), say=lambda line: console.print(Text(line)))
    while True:
        k = key()
        if k in ("s", "q"):
            return "skip" if k == "s" else "quit"
        result = kind.on_key(k, view, state)
        if result is not None:
            return result


def run(queue: Queue, annotator_id: int, *, guidelines: str, round_id: int | None = None, console: Console | None = None) -> dict[str, int]:
    """Serve tasks until the queue is empty or the annotator quits; returns counts."""
    console = console or Console()
    counts = {"submitted": 0, "skipped": 0}
    while True:
        task = queue.claim(annotator_id, round_id=round_id)
        if task is None:
            console.print(Text("No task left for you. Thank you!", style="bold green"))
            return counts
        with queue.store.session() as s:
            sources = task_sources(s, [c.generation_id for c in task.candidates])
        console.print(render(task, guidelines, queue.progress(annotator_id, round_id=round_id), sources))
        started = time.monotonic()
        while True:
            result = answer(task, read_key, console)
            if result == "quit":
                queue.release(annotator_id, task.task_id)
                console.print(Text("Stopped; the task was released.", style="yellow"))
                return counts
            if result == "skip":
                queue.skip(annotator_id, task.task_id)
                counts["skipped"] += 1
                break
            try:
                queue.submit(
                    annotator_id, task.task_id, result, idempotency_key=str(uuid.uuid4()),
                    duration_s=time.monotonic() - started, meta={"via": "terminal"},
                )
            except InvalidAnswer as exc:
                console.print(shown(f"not saved: {exc}", style="red"))
                continue
            counts["submitted"] += 1
            console.print(Text("saved", style="green"))
            break
