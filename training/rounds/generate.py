"""generating: ``candidates`` outputs per train prompt from the current policy (round N−1's adapter).

The round's prompts are drawn once (seeded by the round number) and recorded in the round state,
so a resumed round completes the same selection.
"""

from __future__ import annotations

import random

from ..generation import Sampling
from .context import PURPOSE_TRAIN, RoundContext, RoundError
from .sampling import fill_generations


def run(ctx: RoundContext) -> None:
    prompts = ctx.prompts("train")
    if not prompts:
        raise RoundError("the store has no train prompts", hint="import some: `prefloop import prompts.jsonl`")
    g = ctx.training.generation
    chosen = ctx.state().train_prompt_ids
    if chosen is None:
        ids = sorted(prompts)
        if g.prompts_per_round is not None and g.prompts_per_round < len(ids):
            ids = sorted(random.Random(f"{g.seed}:{ctx.number}").sample(ids, g.prompts_per_round))
        chosen = ids
        ctx.patch_state(train_prompt_ids=chosen)
    selected = {pid: prompts[pid] for pid in chosen if pid in prompts}
    sampling = Sampling.from_settings(g, seed=g.seed + ctx.number)
    fill_generations(ctx, selected, PURPOSE_TRAIN, sampling, ctx.policy_adapter(), "candidates")
