"""Retrieval for a round's sampling (``rag.enabled``): the passages each prompt is given.

A prompt that already has samples of this round and purpose keeps the passages stored with them
(a resumed round reuses them, never retrieves again); the others are retrieved now, in one
search, with the budget measured by the policy's tokenizer.
"""

from __future__ import annotations

from sqlalchemy import select

from prefloop.config import ProjectConfig
from prefloop.errors import ConfigError
from prefloop.feedback.store.models import Generation, Prompt
from prefloop.retrieval.context import PromptRetriever, RetrievedPrompt, project_index_dir

from .context import RoundContext

#: tokens a training row needs beside the passages and the reply: the chat template, the system
#: prompt and the customer's message (SmolLM2's template and the demo prompts use about 40).
PROMPT_ALLOWANCE = 64


def check_budget(cfg: ProjectConfig) -> None:
    """With retrieval on, a training row (prompt with passages, then the reply) must fit the
    trainers' ``max_length``: TRL truncates longer rows, and a DPO row cut inside its prompt has no
    reply left and is dropped — with every row dropped, training fails without saying why."""
    if not cfg.rag.enabled:
        return
    t = cfg.training
    need = cfg.rag.max_context_tokens + t.generation.max_new_tokens + PROMPT_ALLOWANCE
    for phase, settings in (("sft", t.sft), ("dpo", t.dpo)):
        if settings.enabled and settings.max_length < need:
            raise ConfigError(
                f"training.{phase}.max_length ({settings.max_length}) cannot hold a prompt with its passages "
                f"(rag.max_context_tokens {cfg.rag.max_context_tokens}) and a reply (generation.max_new_tokens "
                f"{t.generation.max_new_tokens})",
                hint=f"raise training.{phase}.max_length to at least {need}, or lower rag.max_context_tokens",
            )


def stored_contexts(ctx: RoundContext, purpose: str, prompt_ids: list[int]) -> dict[int, RetrievedPrompt]:
    """prompt id → the retrieval record stored with this round's samples of that prompt."""
    out: dict[int, RetrievedPrompt] = {}
    with ctx.store.session() as s:
        rows = s.execute(select(Generation.prompt_id, Generation.meta)
                         .where(Generation.round_id == ctx.round_id, Generation.prompt_id.in_(prompt_ids))
                         .order_by(Generation.id))
        for pid, meta in rows:
            if pid not in out and (meta or {}).get("purpose") == purpose:
                found = RetrievedPrompt.from_meta(meta)
                if found is not None:
                    out[pid] = found
    return out


def round_contexts(ctx: RoundContext, prompts: dict[int, Prompt], purpose: str) -> dict[int, RetrievedPrompt]:
    """The retrieval record of each prompt (none when ``rag`` is off)."""
    if not ctx.cfg.rag.enabled or not prompts:
        return {}
    out = stored_contexts(ctx, purpose, list(prompts))
    todo = {pid: p.as_messages() for pid, p in prompts.items() if pid not in out}
    if todo:
        from ..loading import load_tokenizer

        retriever = PromptRetriever(ctx.cfg.rag, ctx.store, index_dir=project_index_dir(ctx.project),
                                    tokenizer=load_tokenizer(ctx.training.model.source))
        out.update(retriever.retrieve(todo))
    return out
