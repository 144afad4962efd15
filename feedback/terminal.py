"""``prefloop annotate``: one annotator labels in the terminal with single keys.

Model outputs are untrusted: they are printed as rich ``Text`` objects, never parsed as markup,
so ``[bold]`` or escape-looking strings in an output show literally. Keys read from a real
terminal come through ``click.getchar``; when stdin is a pipe (scripts, tests), one character
at a time from stdin.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable

import click
from rich.console import Console, Group
from rich.panel import Panel
from rich.text import Text

from prefloop.errors import InvalidAnswer

from .queue import ClaimedTask, Queue

KEYS_HELP = {
    "compare": "1 = first is better · 2 = second is better · t = tie · s = skip · q = quit",
    "rate": "{lo}…{hi} = rating · s = skip · q = quit",
    "rank": "press the outputs' numbers best first · u = undo · s = skip · q = quit",
    "edit": "e = edit the output in $EDITOR (or type it, end with a line holding only '.') · s = skip · q = quit",
}


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


def render(task: ClaimedTask, guidelines: str, progress: dict[str, int]) -> Group:
    prompt = Text(task.prompt_text)
    parts = [
        Text(f"task {task.task_id} · {task.kind} · done {progress['done']} · remaining {progress['remaining']}", style="dim"),
        Panel(Text(guidelines), title="guidelines", border_style="blue"),
        Panel(prompt, title="prompt", border_style="cyan"),
    ]
    for i, c in enumerate(task.candidates, 1):
        parts.append(Panel(Text(c.text), title=f"output {i}", border_style="green"))
    lo, hi = task.scale or (1, 5)
    parts.append(Text(KEYS_HELP[task.kind].format(lo=lo, hi=hi), style="bold"))
    return Group(*parts)


def answer(task: ClaimedTask, key: Callable[[], str], console: Console) -> dict | str:
    """Read keys until they form an answer; returns the answer, or "skip" / "quit"."""
    ids = [c.generation_id for c in task.candidates]
    if task.kind == "rank":
        order: list[int] = []
        while len(order) < len(ids):
            k = key()
            if k in ("s", "q"):
                return {"s": "skip", "q": "quit"}[k]
            if k == "u" and order:
                order.pop()
            elif k.isdigit() and 1 <= int(k) <= len(ids) and ids[int(k) - 1] not in order:
                order.append(ids[int(k) - 1])
            console.print(Text("ranking so far: " + " > ".join(str(ids.index(g) + 1) for g in order)))
        return {"ranking": order}
    while True:
        k = key()
        if k in ("s", "q"):
            return {"s": "skip", "q": "quit"}[k]
        if task.kind == "compare" and k in ("1", "2"):
            return {"choice": ids[int(k) - 1]}
        if task.kind == "compare" and k == "t" and task.allow_tie:
            return {"choice": "tie"}
        if task.kind == "rate" and k.isdigit():
            lo, hi = task.scale or (1, 5)
            if lo <= int(k) <= hi:
                return {"rating": int(k)}
        if task.kind == "edit" and k == "e":
            return {"text": read_text(task.candidates[0].text, console)}


def run(queue: Queue, annotator_id: int, *, guidelines: str, round_id: int | None = None, console: Console | None = None) -> dict[str, int]:
    """Serve tasks until the queue is empty or the annotator quits; returns counts."""
    console = console or Console()
    counts = {"submitted": 0, "skipped": 0}
    while True:
        task = queue.claim(annotator_id, round_id=round_id)
        if task is None:
            console.print(Text("No task left for you. Thank you!", style="bold green"))
            return counts
        console.print(render(task, guidelines, queue.progress(annotator_id, round_id=round_id)))
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
                console.print(Text(f"not saved: {exc}", style="red"))
                continue
            counts["submitted"] += 1
            console.print(Text("saved", style="green"))
            break
