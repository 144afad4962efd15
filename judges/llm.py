"""What local and remote LLM judges share: prompts built from templates, identity, answer options
and the strict answer parser.

A judge model is asked for one token: ``A``/``B`` (pairwise) or a digit (pointwise). Backends that
see log-probabilities (the local one always, a remote one when the server returns them) turn the
answer tokens' probabilities into P(A better) or an expected score; otherwise the answer text must
pass :func:`parse_answer` exactly, or the judgement fails with the text as its reason.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

from .base import Messages, PairwiseJudge, PointwiseJudge, PointwiseVerdict
from .config import JudgeSpec
from .templates import JudgeTemplate, conversation_text

PAIR_OPTIONS = ("A", "B")


class MalformedAnswer(ValueError):
    """The judge's text is not one of the allowed answers."""


def parse_answer(text: str | None, options: list[str] | tuple[str, ...]) -> tuple[str, str | None]:
    """``(option, rationale)`` from an answer whose first line is exactly one option.

    Accepted: ``A``, ``A.``, ``**A**``, ``"A"``, ``Answer: A``, ``Score: 4`` (case-insensitive for
    letters). Anything else (``A or B``, ``I think A``, an empty reply) is malformed: guessing a
    verdict from free text is how silent wrong labels happen.
    """
    if text is None or not text.strip():
        raise MalformedAnswer("empty answer")
    lines = [ln.strip() for ln in text.strip().splitlines()]
    first = lines[0]
    core = re.sub(r"^(?:better answer|answer|score|verdict)\s*[:=]\s*", "", first, flags=re.I)
    core = core.strip().strip("*_`'\"[]()").rstrip(".!").strip().strip("*_`'\"[]()")
    lookup = {o.casefold(): o for o in options}
    if core.casefold() not in lookup:
        shown = first if len(first) <= 120 else first[:117] + "…"
        raise MalformedAnswer(f"malformed answer {shown!r}: expected exactly one of {', '.join(options)} on the first line")
    rest = "\n".join(ln for ln in lines[1:] if ln).strip()
    reason = re.sub(r"^reason\s*:\s*", "", rest, flags=re.I) or None
    return lookup[core.casefold()], reason


def normalise(logprobs: dict[str, float]) -> dict[str, float]:
    """Softmax restricted to the answer options."""
    m = max(logprobs.values())
    exp = {k: math.exp(v - m) for k, v in logprobs.items()}
    z = sum(exp.values())
    return {k: v / z for k, v in exp.items()}


def expected_score(probs: dict[str, float]) -> tuple[float, float]:
    """(expected score, probability of the most likely score) over digit options."""
    score = sum(int(k) * p for k, p in probs.items())
    return score, max(probs.values())


class LLMJudge(PairwiseJudge, PointwiseJudge):
    """Shared by :class:`~.local.LocalJudge` and :class:`~.openai_compat.OpenAIJudge`."""

    backend = "llm"

    def __init__(self, spec: JudgeSpec, *, base_dir: str | Path | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.scale = spec.scale  # a tuple already (JudgeSpec validates assignments too)
        self.tie_margin = spec.tie_margin
        self.pair_template = JudgeTemplate.load(spec.pairwise_template, base_dir)
        self.point_template = JudgeTemplate.load(spec.pointwise_template, base_dir)
        self.score_options = [str(d) for d in range(self.scale[0], self.scale[1] + 1)]

    # ------------------------------------------------------------------ identity
    def model_name(self) -> str:
        return self.spec.model or ""

    @property
    def template_hash(self) -> str:
        s = self.spec
        payload = {
            "pairwise": self.pair_template.hash,
            "pointwise": self.point_template.hash,
            "system": s.system_prompt,
            "rubric": s.rubric,
            "examples": s.examples,
            "use_reference": s.use_reference,
            "scale": list(s.scale),
            "rationale": s.rationale,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]

    @property
    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "backend": self.backend, "model": self.model_name(), "template_hash": self.template_hash}

    # ------------------------------------------------------------------ prompts
    def _wrap(self, user: str) -> Messages:
        msgs: Messages = []
        if self.spec.system_prompt:
            msgs.append({"role": "system", "content": self.spec.system_prompt})
        msgs.append({"role": "user", "content": user})
        return msgs

    def _common(self, prompt: Messages, ref: str | None, mode: str) -> dict[str, Any]:
        shape = "a" if mode == "pairwise" else "output"
        return {
            "rubric": self.spec.rubric,
            "examples": [{"reason": None, **ex} for ex in self.spec.examples if shape in ex],
            "request": conversation_text(prompt),
            "conversation": prompt,
            "reference": ref if self.spec.use_reference else None,
            "rationale": self.spec.rationale,
            "scale_min": self.scale[0],
            "scale_max": self.scale[1],
        }

    def pairwise_messages(self, prompt: Messages, first: str, second: str, ref: str | None = None) -> Messages:
        return self._wrap(self.pair_template.render(**self._common(prompt, ref, "pairwise"), output_a=first, output_b=second))

    def pointwise_messages(self, prompt: Messages, output: str, ref: str | None = None) -> Messages:
        return self._wrap(self.point_template.render(**self._common(prompt, ref, "pointwise"), output=output))

    def pointwise_from_probs(self, probs: dict[str, float], **kw: Any) -> PointwiseVerdict:
        if not all(math.isfinite(p) for p in probs.values()):  # a broken model (NaN logits): no verdict
            return PointwiseVerdict.failed(f"the model's probabilities are not numbers: {probs}", scale=self.scale, **kw)
        score, top = expected_score(probs)
        return PointwiseVerdict(score=score, confidence=top, scale=self.scale, distribution=probs, **kw)
