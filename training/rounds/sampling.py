"""Sampling a policy into the store, shared by the generating and evaluating states.

What is stored is never generated again: each batch's outputs are written in one transaction, so
a crash between batches keeps the finished ones and a resumed round generates only the rest.
With ``rag.enabled`` each prompt is sampled with its retrieved passages placed (:mod:`.rag`),
and the passages and the prompt as given are stored with every sample.
"""

from __future__ import annotations

from typing import Any

from prefloop.feedback.store.models import Generation, Prompt
from prefloop.text import storable

# Through the module, not its names: loading a model imports torch and transformers inside these
# functions (``prefloop --help`` stays fast), and a test can replace ``generation.generate``.
from .. import generation
from ..evaluation import oracle_score
from .context import RoundContext
from .rag import round_contexts


def fill_generations(ctx: RoundContext, prompts: dict[int, Prompt], purpose: str, sampling: generation.Sampling,
                     adapter: str | None, description: str) -> None:
    """Generate what is missing: ``sampling.n`` outputs per prompt, one transaction per batch."""
    have = ctx.generations(purpose)
    missing = [pid for pid in prompts if len(have.get(pid, [])) < sampling.n]
    if not missing:
        return
    t = ctx.training
    oracle = ctx.oracle()
    contexts = round_contexts(ctx, {pid: prompts[pid] for pid in missing}, purpose)
    policy = generation.Policy(t.model, adapter)
    fingerprint = generation.adapter_fingerprint(adapter)
    model_name = t.model.source + (f"@adapter:{fingerprint[:12]}" if fingerprint else "")
    params = {**sampling.as_params(), "adapter": adapter, "round": ctx.number}
    per_call = max(1, t.generation.batch_size // sampling.n)
    with ctx.reporter.bar(f"round {ctx.number} · {description}", "samples") as bar:
        job = bar.add_task(description, total=len(missing) * sampling.n, info="")
        for start in range(0, len(missing), per_call):
            chunk = missing[start : start + per_call]
            need = {pid: sampling.n - len(have.get(pid, [])) for pid in chunk}
            msgs = [contexts[pid].messages if pid in contexts else prompts[pid].as_messages() for pid in chunk]
            outs = generation.generate(policy, msgs, sampling, batch_size=t.generation.batch_size)
            with ctx.store.session() as s:
                for pid, texts in zip(chunk, outs, strict=True):
                    for raw in texts[: need[pid]]:
                        text, replaced = storable(raw)
                        meta: dict[str, Any] = {"purpose": purpose, **(contexts[pid].meta() if pid in contexts else {})}
                        if replaced:  # NUL or a lone surrogate from the model: PostgreSQL cannot store it
                            meta["unstorable_replaced"] = replaced
                        if oracle is not None:
                            meta["oracle_score"] = oracle_score(oracle, prompts[pid].meta or {}, prompts[pid].as_messages(),
                                                                text, f"an answer to prompt {pid}")
                        s.add(Generation(prompt_id=pid, round_id=ctx.round_id, text=text, model=model_name, params=params,
                                         meta=meta))
            bar.advance(job, sum(need.values()))
    policy.unload()
