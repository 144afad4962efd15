"""The demo: a support desk whose style guide a program can check.

Acme's support replies must (1) greet the customer by name, (2) stay between 8 and 40 words,
(3) end with a question, and (4) address the customer's issue (mention one of its keywords).
The policy (SmolLM2-135M-Instruct) is never told the guide: it has to learn it from feedback.

- :func:`support_desk_oracle` scores a reply: the share of the four rules it follows. It is the
  *measurement* (eval oracle score) and what the scripted humans know — never a judge.
- The scripted humans answer through the real annotation server (HTTP, tokens, leases) as
  deliberately imperfect annotators: right with probability ``accuracy``, otherwise a plausible
  mistake; their edits fix a reply the way a support lead would (and a careless one leaves it).
- The judge is cheap and imperfect: a rule judge that checks only the length and a greeting word
  (an LLM judge of SmolLM2-135M's size showed no signal on this task: P(A better) 0.49–0.51).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from prefloop.sim.humans import TYPICAL_SECONDS

STYLE_GUIDE = (
    "Acme's support style guide: greet the customer by name, answer in 8 to 40 words, "
    "address their issue, and end with a question."
)
MIN_WORDS, MAX_WORDS = 8, 40
CLOSING = "Is there anything else I can help you with?"
#: simulated seconds a support lead spends per label (the ROI report prices them).
HUMAN_SECONDS = dict(TYPICAL_SECONDS)


def data_path() -> Path:
    """The demo prompts shipped with prefloop (48 train, 24 eval)."""
    return Path(str(resources.files("prefloop.configs") / "data" / "support_desk.jsonl"))


def _words(text: str) -> list[str]:
    return text.split()


def checks(meta: dict[str, Any], text: str) -> dict[str, bool]:
    """The four rules of the style guide, each passed or not."""
    name = str(meta.get("customer", ""))
    words = _words(text.strip())
    lead = " ".join(words[:8])
    keywords = [str(k).lower() for k in meta.get("keywords", [])]
    max_words = int(meta.get("max_words", MAX_WORDS))
    low = text.lower()
    return {
        "greets_by_name": bool(name) and re.search(r"(?<!\w)" + re.escape(name) + r"(?!\w)", lead, re.I) is not None,
        "length": MIN_WORDS <= len(words) <= max_words,
        "ends_with_question": text.strip().endswith("?"),
        "on_topic": any(k in low for k in keywords),
    }


def support_desk_oracle(meta: dict[str, Any], messages: list[dict[str, str]], text: str) -> float:
    """The share of the style guide's rules a reply follows (0, 0.25, …, 1)."""
    del messages
    c = checks(meta, text)
    return sum(c.values()) / len(c)


def fix_reply(meta: dict[str, Any], text: str) -> str:
    """What a support lead writes when asked to correct a reply: its statements, trimmed to fit,
    with a greeting by name, a line on the issue if it had none, and a closing question."""
    name = str(meta.get("customer") or "there")
    keywords = [str(k) for k in meta.get("keywords", [])]
    max_words = int(meta.get("max_words", MAX_WORDS))
    body = re.sub(r"^(hi|hello|hey|dear)\b[^,.!?]*[,.!]?\s*", "", " ".join(text.split()), flags=re.I)
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", body) if s and not s.endswith("?")]
    greeting = f"Hi {name}!"
    topic = f"I'm sorry about the trouble with your {keywords[0]}." if keywords else ""
    budget = max_words - len(_words(greeting)) - len(_words(topic)) - len(_words(CLOSING))
    kept: list[str] = []
    for s in sentences:
        if len(_words(" ".join([*kept, s]))) > budget:
            break
        kept.append(s[0].upper() + s[1:] + ("" if s[-1] in ".!" else "."))
    if any(k.lower() in " ".join(kept).lower() for k in keywords):
        topic = ""
    return " ".join(x for x in (greeting, topic, *kept, CLOSING) if x)


# ------------------------------------------------------------------------------------------- the task
def _support_desk() -> Any:
    from prefloop.sim.task import TaskSpec

    return TaskSpec(
        name="support-desk",
        prompts=data_path(),
        oracle=support_desk_oracle,
        fix=fix_reply,
        description=STYLE_GUIDE,
        config={
            "judges.default": "style-rules",
            # Rules a support lead wrote down: only part of the guide (length and a greeting word).
            "judges.panel": [{"name": "style-rules", "backend": "rules", "rules": [
                {"type": "length", "unit": "words", "max": 60},
                {"type": "regex", "pattern": r"(?i)^\W*(hi|hello|hey|dear|good (morning|afternoon|evening))\b"},
            ]}],
            "training.judges": ["style-rules"],
            "training.evaluation.judge": "style-rules",
            "annotation.guidelines": STYLE_GUIDE + " Prefer the reply that follows more of it.",
        },
    )


#: The demo's task as a plug-in (``support-desk``): its prompts, oracle, fix and rule judge.
SUPPORT_DESK = _support_desk()


# ------------------------------------------------------------------------------------------- humans
def scripted_humans(
    *, n: int = 2, accuracy: float = 0.85, seed: int = 0, seconds: dict[str, float] | None = None,
    oracle: Callable[[Any], dict[str, Any] | None] | None = None, task: Any = None, order: str = "concurrent",
    prefix: str | None = None,
) -> Callable[[Any, int, list[int]], None]:
    """A round hook: ``n`` scripted annotators label the waited-for tasks through the real HTTP API.

    They claim by priority (active selection decides what they see), answer like ``oracle`` (default:
    what ``task`` — default the support desk — knows: its oracle and its fix) with probability
    ``accuracy``, and report ``seconds`` per label kind as their time on task. ``order``:
    ``concurrent`` (they race, as people do) or ``round-robin`` (reproducible: experiments).
    """
    from prefloop.sim import SimulatedSeconds

    time_on_task = SimulatedSeconds(dict(HUMAN_SECONDS if seconds is None else seconds))
    prefix = prefix or ("support-lead" if task is None else "human")
    task = task or SUPPORT_DESK

    def hook(project: Any, round_id: int, task_ids: list[int]) -> None:
        import asyncio

        from prefloop.feedback.server import create_app, serve_in_background
        from prefloop.sim import provision_annotators, run_simulation

        budget = labels_needed(project.store, task_ids, project.config.training.wait.labels_per_task)
        if not budget:
            return
        tokens = provision_annotators(project.store, n, prefix=prefix)
        with serve_in_background(create_app(project)) as url:
            asyncio.run(run_simulation(
                url, tokens, oracle or task.human_oracle(project.store), accuracy=accuracy, seed=seed, round_id=round_id,
                total_tasks=budget, seconds=time_on_task, order=order,
            ))

    return hook


def labels_needed(store: Any, task_ids: list[int], per_task: int | None) -> int:
    """Human labels the open tasks among ``task_ids`` still need (``per_task`` each, default their overlap):
    a resumed round asks only for what is missing."""
    from sqlalchemy import select

    from prefloop.feedback.store.models import Task, TaskStatus

    with store.session() as s:
        rows = s.execute(select(Task.overlap, Task.n_done)
                         .where(Task.id.in_(task_ids), Task.status == TaskStatus.OPEN.value)).all()
    return sum(max(0, (per_task or overlap) - done) for overlap, done in rows)


# ------------------------------------------------------------------------------------------- run it
def run_loop(project: Any, rounds: int, *, humans: Callable[[Any, int, list[int]], None] | None, progress: bool = True,
             console: Any = None, verbose: bool = False) -> Any:
    """Run ``project``'s loop up to round ``rounds``: finish an interrupted round, evaluate the base
    model (round 0) if that is not done yet, then run rounds until round ``rounds`` is done."""
    from .rounds import Orchestrator

    orch = Orchestrator(project, progress=progress, console=console, humans=humans, verbose=verbose)
    pending = orch.unfinished()
    if pending is not None:
        orch.resume(pending.number)
    orch.ensure_baseline()
    while max(r.number for r in orch.rounds()) < rounds:
        orch.run_next()
    return orch


def run_demo(directory: str | Path, *, rounds: int = 3, progress: bool = True, console: Any = None,
             humans: Callable[[Any, int, list[int]], None] | None = None, verbose: bool = False) -> Any:
    """Create (or continue) the demo project in ``directory`` and run rounds 0…``rounds``."""
    from rich.console import Console

    from prefloop.feedback.importer import import_prompts
    from prefloop.project import CONFIG_NAME, Project, init_project

    console = console or Console(stderr=True)
    root = Path(directory)
    project = init_project(root, preset="demo") if not (root / CONFIG_NAME).is_file() else Project(root)
    import_prompts(project.store, data_path())
    start = time.perf_counter()
    run_loop(project, rounds, humans=humans or scripted_humans(), progress=progress, console=console, verbose=verbose)
    return project, time.perf_counter() - start
