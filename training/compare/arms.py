"""The four arms of ``prefloop compare`` and how each one answers the eval prompts.

- ``base``: the base model;
- ``base+rag``: the base model with the retrieved passages placed in its prompts;
- ``ft``: the base model with the adapter of round N (the last finished round by default);
- ``ft+rag``: that adapter with the passages.

Each answer is stored as a generation (``round_id`` empty, ``meta.purpose = "compare"``) with what
was measured while it was made: seconds per answer (the batch's wall time over its answers),
prompt and completion tokens (the policy's tokenizer), the oracle's score, and for a RAG arm the
passages and the prompt as given (:mod:`prefloop.feedback.passages`). Answers are keyed by
everything that decides them (arm, model, adapter weights, retrieval settings and knowledge base,
sampling, seed): running compare again reuses them and samples only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from prefloop.config import ProjectConfig
from prefloop.errors import ConfigError, NotFoundError
from prefloop.feedback.store.models import Generation, Prompt, Round
from prefloop.project import Project
from prefloop.retrieval.context import RetrievedPrompt

from .. import generation
from ..evaluation import Oracle, oracle_score

ARMS = ("base", "base+rag", "ft", "ft+rag")
PURPOSE_COMPARE = "compare"


@dataclass(frozen=True)
class Arm:
    name: str
    adapter: str | None
    rag: bool


def tuned_round(project: Project, number: int | None) -> tuple[int, str]:
    """The round whose adapter the ``ft`` arms use: ``number``, or the last finished one with an adapter."""
    with project.store.session() as s:
        rows = [(r.number, r.state, r.adapter_path) for r in s.scalars(select(Round).where(Round.number >= 1).order_by(Round.number))]
    if number is not None:
        found = next((r for r in rows if r[0] == number), None)
        if found is None:
            raise NotFoundError(f"no round {number}", hint=f"rounds with an adapter: {[r[0] for r in rows if r[2]] or 'none yet'}")
        if found[1] != "done" or not found[2]:
            raise ConfigError(f"round {number} has no finished adapter (state {found[1]})",
                              hint="finish it with `prefloop round resume`, or pick another with --round")
        return number, found[2]
    done = [r for r in rows if r[1] == "done" and r[2]]
    if not done:
        raise ConfigError("no fine-tuned round to compare yet", hint="run `prefloop round run` first")
    return done[-1][0], done[-1][2]


def check_arms(names: list[str]) -> None:
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        raise ConfigError(f"unknown arm(s) {unknown}", hint=f"arms: {', '.join(ARMS)}")
    if "base" not in names:
        raise ConfigError("the arms must include 'base': win rates and break-even are against it")


def make_arms(names: list[str], adapter: str) -> list[Arm]:
    check_arms(names)
    return [Arm(n, adapter if n.startswith("ft") else None, n.endswith("+rag")) for n in ARMS if n in names]


def sampling_key(arm: Arm, model: str, sampling: generation.Sampling, rag_signature: dict[str, Any] | None) -> str:
    """What decides an arm's answers, hashed: equal key, reusable answers."""
    payload = {"arm": arm.name, "model": model, "adapter": generation.adapter_fingerprint(arm.adapter),
               "rag": rag_signature if arm.rag else None, "sampling": sampling.as_params()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def stored_answers(project: Project, key: str, prompt_ids: list[int]) -> dict[int, list[Generation]]:
    """prompt id → the stored answers of one key, in the order they were made."""
    out: dict[int, list[Generation]] = {}
    with project.store.session() as s:
        for g in s.scalars(select(Generation).where(Generation.round_id.is_(None), Generation.prompt_id.in_(prompt_ids))
                           .order_by(Generation.id)):
            if (g.meta or {}).get("compare_key") == key:
                s.expunge(g)
                out.setdefault(g.prompt_id, []).append(g)
    return out


def stored_contexts(project: Project, keys: list[str], prompt_ids: list[int]) -> dict[int, RetrievedPrompt]:
    """The retrieval records already stored with a RAG arm's answers (reused: retrieval is not repeated)."""
    out: dict[int, RetrievedPrompt] = {}
    for key in keys:
        for pid, gens in stored_answers(project, key, prompt_ids).items():
            found = RetrievedPrompt.from_meta(gens[0].meta)
            if found is not None:
                out.setdefault(pid, found)
    return out


@dataclass
class Sampler:
    """Samples arms into the store, measuring each answer."""

    project: Project
    cfg: ProjectConfig
    prompts: dict[int, Prompt]
    oracle: Oracle | None
    tokenizer: Any
    advance: Callable[[int], None] = lambda n: None

    def fill(self, arm: Arm, key: str, sampling: generation.Sampling, contexts: dict[int, RetrievedPrompt]) -> None:
        """Generate what is missing of ``sampling.n`` answers per prompt (one transaction per batch)."""
        have = {pid: len(v) for pid, v in stored_answers(self.project, key, list(self.prompts)).items()}
        missing = [pid for pid in self.prompts if have.get(pid, 0) < sampling.n]
        self.advance(sum(min(have.get(pid, 0), sampling.n) for pid in self.prompts))
        if not missing:
            return
        t = self.cfg.training
        policy = generation.Policy(t.model, Path(arm.adapter) if arm.adapter else None)
        model = t.model.source + (f"@adapter:{generation.adapter_fingerprint(arm.adapter)[:12]}" if arm.adapter else "")  # type: ignore[index]
        per_call = max(1, t.generation.batch_size // sampling.n)
        try:
            for start in range(0, len(missing), per_call):
                chunk = missing[start : start + per_call]
                msgs = [contexts[pid].messages if arm.rag else self.prompts[pid].as_messages() for pid in chunk]
                began = time.perf_counter()
                outs = generation.generate(policy, msgs, sampling, batch_size=t.generation.batch_size)
                per_answer = (time.perf_counter() - began) / (len(chunk) * sampling.n)
                prompt_tokens = [len(ids) for ids in self.tokenizer(generation.render_prompts(self.tokenizer, msgs),
                                                                    add_special_tokens=False)["input_ids"]]
                self._store(arm, key, sampling, chunk, outs, per_answer, prompt_tokens, model, contexts, have)
                self.advance(sum(sampling.n - have.get(pid, 0) for pid in chunk))
        finally:
            policy.unload()

    def _store(self, arm: Arm, key: str, sampling: generation.Sampling, chunk: list[int], outs: list[list[str]],
               per_answer: float, prompt_tokens: list[int], model: str, contexts: dict[int, RetrievedPrompt],
               have: dict[int, int]) -> None:
        params = {**sampling.as_params(), "adapter": arm.adapter}
        parts = getattr(self.oracle, "components", None)
        with self.project.store.session() as s:
            for pid, texts, n_prompt in zip(chunk, outs, prompt_tokens, strict=True):
                p = self.prompts[pid]
                for j, text in enumerate(texts[have.get(pid, 0) : sampling.n], start=have.get(pid, 0)):
                    meta: dict[str, Any] = {
                        "purpose": PURPOSE_COMPARE, "compare_key": key, "arm": arm.name, "seed": sampling.seed, "sample": j,
                        "latency_s": round(per_answer, 6), "prompt_tokens": n_prompt,
                        "completion_tokens": len(self.tokenizer(text, add_special_tokens=False)["input_ids"]),
                        **(contexts[pid].meta() if arm.rag else {}),
                    }
                    if self.oracle is not None:
                        meta["oracle_score"] = oracle_score(self.oracle, p.meta or {}, p.as_messages(), text,
                                                            f"a {arm.name} answer to prompt {pid}")
                        if parts is not None:
                            meta["oracle_parts"] = {k: float(v) for k, v in parts(p.meta or {}, p.as_messages(), text).items()}
                    s.add(Generation(prompt_id=pid, round_id=None, text=text, model=model, params=params, meta=meta))
