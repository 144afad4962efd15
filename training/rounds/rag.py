"""Retrieval for a round's sampling (``rag.enabled``): the passages each prompt is given.

A prompt that already has samples of this round and purpose keeps the passages stored with them
(a resumed round reuses them, never retrieves again); the others are retrieved now, in one
search, with the budget measured by the policy's tokenizer.
"""

from __future__ import annotations

from sqlalchemy import select

from prefloop.feedback.models import Generation, Prompt
from prefloop.retrieval.context import PromptRetriever, RetrievedPrompt, project_index_dir

from .context import RoundContext


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
        from ..models import load_tokenizer

        retriever = PromptRetriever(ctx.cfg.rag, ctx.store, index_dir=project_index_dir(ctx.project),
                                    tokenizer=load_tokenizer(ctx.training.model.source))
        out.update(retriever.retrieve(todo))
    return out
