"""A task plug-in, worked end to end: short arithmetic and unit questions.

A reply must end with a line ``Answer: <number>`` and the number must be right. The policy is never
told the format (its prompt is "You are a helpful assistant." and the question): it has to learn it
from feedback. The parts:

- ``prompts.jsonl``: 48 train and 24 eval questions; each record's ``meta`` holds the ``answer``
  and a one-line worked ``explanation`` (the oracle and the fix read them).
- :func:`oracle`: half a point for the format, half for the right number (taken from the ``Answer:``
  line, or from the reply's last number when it answers in prose). It measures the model and is
  what the scripted humans know.
- :func:`fix`: what a careful person writes in an edit task — the worked solution and the answer line.
- ``config``: a rule judge that checks the format only. It is blind to correctness, the humans are
  not: the case where judges see part of what people know.

Use it as ``task: arithmetic`` in an experiment, ``training.evaluation.oracle: arithmetic`` in a
project, or ``prefloop simulate-annotators --oracle arithmetic``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefloop.sim.task import TaskSpec

#: The format the rule judge checks and the oracle gives half a point for.
ANSWER_LINE = r"Answer:\s*(-?\d[\d,]*(?:\.\d+)?)\s*$"
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _value(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def answered(reply: str) -> tuple[bool, float | None]:
    """(whether the reply ends with ``Answer: <number>``, the number it answers with, if any)."""
    m = re.search(ANSWER_LINE, reply)
    if m:
        return True, _value(m.group(1))
    numbers = _NUMBER.findall(reply)
    return False, _value(numbers[-1]) if numbers else None


def oracle(meta: dict[str, Any], messages: list[dict[str, str]], reply: str) -> float:
    """0.5 for the format + 0.5 for the right number: 0, 0.5 or 1."""
    del messages
    formatted, number = answered(reply)
    expected = float(meta["answer"])
    correct = number is not None and abs(number - expected) <= 1e-6 * max(1.0, abs(expected))
    return 0.5 * formatted + 0.5 * correct


def _show(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def fix(meta: dict[str, Any], reply: str) -> str:
    """A careful person's correction: the worked solution, then the answer line."""
    del reply
    return f"{meta['explanation']}\nAnswer: {_show(float(meta['answer']))}"


TASK = TaskSpec(
    name="arithmetic",
    prompts=Path(__file__).with_name("prompts.jsonl"),
    oracle=oracle,
    fix=fix,
    description="Short arithmetic and unit questions; a reply ends with 'Answer: <number>'.",
    config={
        "judges.default": "answer-format",
        "judges.panel": [{"name": "answer-format", "backend": "rules", "rules": [{"type": "regex", "pattern": ANSWER_LINE}]}],
        "training.judges": ["answer-format"],
        "training.evaluation.judge": "answer-format",
        "training.generation.max_new_tokens": 64,
        "annotation.guidelines": "Prefer the reply whose number is right and that ends with a line 'Answer: <number>'.",
    },
)
