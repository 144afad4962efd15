"""Programmatic judges, for domains where quality is checkable: built-in rule checks (regex,
length, JSON schema, keyword presence) and any Python callable.

Both score one output at a time (pointwise) and compare two by their scores, so their pairwise
verdicts cannot depend on the order shown: always position-consistent.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
import time
from collections.abc import Callable
from typing import Any, cast

from prefloop.errors import ConfigError

from .base import Messages, PointwiseVerdict, ScoreBasedPairwise
from .config import JudgeSpec, RuleSpec

_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n\s*```\s*$", re.S)


def check_rule(rule: RuleSpec, text: str) -> tuple[bool, str]:
    """``(passed, why)`` for one rule on one output."""
    if rule.type == "regex":
        assert rule.pattern is not None  # RuleSpec requires it for a regex rule
        found = re.search(rule.pattern, text) is not None
        ok = found != rule.negate
        return ok, f"regex {rule.pattern!r} {'found' if found else 'not found'}"
    if rule.type == "length":
        n = len(text.split()) if rule.unit == "words" else len(text)
        ok = (rule.min is None or n >= rule.min) and (rule.max is None or n <= rule.max)
        ok = ok != rule.negate
        bounds = f"{rule.min if rule.min is not None else 0}–{rule.max if rule.max is not None else '∞'}"
        return ok, f"length {n} {rule.unit} (allowed {bounds})"
    if rule.type == "json_schema":
        from jsonschema.validators import validator_for

        m = _FENCE.match(text)
        raw = m.group(1) if m else text
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            return rule.negate, f"not JSON ({exc.msg} at line {exc.lineno})"
        except ValueError as exc:  # valid syntax Python will not parse: an integer over sys.get_int_max_str_digits()
            return rule.negate, f"not JSON ({exc})"
        errors = sorted(validator_for(rule.schema_)(rule.schema_).iter_errors(data), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "(top level)"
            return rule.negate, f"JSON schema: {where}: {errors[0].message}"
        return not rule.negate, "valid JSON for the schema"
    # keywords
    low = text.casefold()
    hits = [k for k in rule.keywords if re.search(r"(?<!\w)" + re.escape(k.casefold()) + r"(?!\w)", low)]
    ok = (len(hits) == len(rule.keywords)) if rule.mode == "all" else bool(hits)
    ok = ok != rule.negate
    missing = [k for k in rule.keywords if k not in hits]
    return ok, f"keywords ({rule.mode}): found {hits}" + (f", missing {missing}" if missing else "")


class _ScoreJudge(ScoreBasedPairwise):
    def __init__(self, name: str, scale: tuple[int, int], tie_margin: float) -> None:
        self.name = name
        self.scale = cast("tuple[int, int]", tuple(scale))  # a list from a caller becomes a tuple
        self.tie_margin = tie_margin

    def _to_scale(self, fraction: float) -> float:
        lo, hi = self.scale
        return lo + (hi - lo) * fraction


class RuleJudge(_ScoreJudge):
    """Score = the weighted share of rules passed, on the judge's scale."""

    backend = "rules"

    def __init__(self, spec: JudgeSpec) -> None:
        super().__init__(spec.name, spec.scale, spec.tie_margin)
        self.spec = spec
        self.rules = list(spec.rules)

    @property
    def identity(self) -> dict[str, Any]:
        rules = [r.model_dump(mode="json", by_alias=True) for r in self.rules]
        digest = hashlib.sha256(json.dumps({"rules": rules, "scale": list(self.scale)}, sort_keys=True).encode()).hexdigest()[:16]
        return {"name": self.name, "backend": self.backend, "model": "rules", "template_hash": digest}

    def _score_uncached(self, prompts: list[Messages], outputs: list[str], refs: list[str | None]) -> list[PointwiseVerdict]:
        out = []
        total = sum(r.weight for r in self.rules)
        for text in outputs:
            t0 = time.perf_counter()
            passed, notes = 0.0, []
            for r in self.rules:
                ok, why = check_rule(r, text)
                passed += r.weight if ok else 0.0
                notes.append(f"{'✓' if ok else '✗'} {why}")
            out.append(PointwiseVerdict(
                score=self._to_scale(passed / total), rationale="; ".join(notes), confidence=1.0,
                scale=self.scale, latency_s=time.perf_counter() - t0,
            ))
        return out


ScoreFn = Callable[..., Any]


def exact_match(prompt_messages: Any, output: str, reference: str | None) -> tuple[bool, str]:
    """A ready function for ``backend: python`` (``prefloop.judges.rules:exact_match``): the output is
    the prompt's reference, ignoring case and surrounding spaces. A prompt without a reference has
    nothing to match: the verdict fails with that reason rather than guess."""
    del prompt_messages
    if reference is None:
        raise ValueError("the prompt has no reference answer")
    same = output.strip().casefold() == reference.strip().casefold()
    return same, "matches the reference" if same else "differs from the reference"


class CallableJudge(_ScoreJudge):
    """Any Python function as a judge: ``fn(prompt_messages, output, reference)`` returns a score on
    the scale, a bool (pass → top, fail → bottom), ``(score, reason)`` or ``{"score", "rationale"}``.

    An exception or an out-of-scale value is a failed verdict with the reason, not a crash.
    """

    backend = "python"

    def __init__(self, name: str, fn: ScoreFn, *, scale: tuple[int, int] = (1, 5), tie_margin: float = 0.0, version: str | None = None) -> None:
        super().__init__(name, scale, tie_margin)
        self.fn = fn
        self.spec: JudgeSpec | None = None
        qual = f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
        try:
            src = inspect.getsource(fn)
        except (OSError, TypeError):
            src = qual
        self._model = qual
        self._hash = hashlib.sha256(f"{src}|{version}|{list(self.scale)}".encode()).hexdigest()[:16]

    @classmethod
    def from_spec(cls, spec: JudgeSpec) -> CallableJudge:
        assert spec.function is not None  # JudgeSpec requires it for the python backend
        module, _, attr = spec.function.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"judge {spec.name!r}: cannot import {spec.function!r}: {exc}",
                hint="function must be 'package.module:function' importable from the project's environment",
            ) from None
        if not callable(fn):
            raise ConfigError(f"judge {spec.name!r}: {spec.function!r} is not callable")
        judge = cls(spec.name, fn, scale=spec.scale, tie_margin=spec.tie_margin)
        judge.spec = spec
        return judge

    @property
    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "backend": self.backend, "model": self._model, "template_hash": self._hash}

    def _score_uncached(self, prompts: list[Messages], outputs: list[str], refs: list[str | None]) -> list[PointwiseVerdict]:
        lo, hi = self.scale
        out = []
        for p, o, r in zip(prompts, outputs, refs, strict=True):
            t0 = time.perf_counter()
            try:
                got = self.fn(p, o, r)
            except Exception as exc:  # noqa: BLE001 - a user function's failure is a recorded verdict failure
                out.append(PointwiseVerdict.failed(f"{self._model} raised {type(exc).__name__}: {exc}", scale=self.scale))
                continue
            why = None
            if isinstance(got, dict):
                why = got.get("rationale")
                got = got.get("score")
            elif isinstance(got, tuple) and len(got) == 2:
                got, why = got
            if isinstance(got, bool):
                score: float = float(hi if got else lo)
            elif isinstance(got, int | float) and lo <= float(got) <= hi:
                score = float(got)
            else:
                out.append(PointwiseVerdict.failed(
                    f"{self._model} returned {got!r}: expected a number in {lo}–{hi} or a bool", scale=self.scale,
                ))
                continue
            out.append(PointwiseVerdict(score=score, rationale=why, confidence=1.0, scale=self.scale, latency_s=time.perf_counter() - t0))
        return out
