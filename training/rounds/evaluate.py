"""evaluating: sample the round's policy on the held-out ``eval`` prompts, score the samples with
the oracle, and compare them with round N−1's and round 0's through the evaluation judge.

Eval samples are stored like candidates (a resumed round samples only what is missing) and the
judge's verdicts come from the store's cache. The summary goes to the metrics; the per-sample
details to ``round-N/eval.json``.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from prefloop.atomic import atomic_write_text
from prefloop.config import ProjectConfig
from prefloop.errors import ConfigError
from prefloop.feedback.db import Store
from prefloop.feedback.models import Generation, Round
from prefloop.feedback.passages import first_prompted
from prefloop.judges import Judge, PairwiseJudge
from prefloop.judges.reward_model import is_reward_model
from prefloop.judges.runner import use_store_cache

from ..evaluation import mean_or_none, win_rate
from ..generation import Sampling
from .context import PURPOSE_EVAL, RoundContext
from .sampling import fill_generations

#: added to the generation seed for eval samples, so that they differ from the train candidates.
EVAL_SEED_OFFSET = 7919


def eval_judge(ctx: RoundContext, judges: dict[str, Judge]) -> tuple[str | None, PairwiseJudge | None]:
    """The judge that compares two rounds' answers: ``evaluation.judge``, the default, or the first pairwise one."""
    return pick_eval_judge(ctx.cfg, judges, ctx.store)


def pick_eval_judge(cfg: ProjectConfig, judges: dict[str, Judge], store: Store) -> tuple[str | None, PairwiseJudge | None]:
    """:func:`eval_judge` for any caller with a config (``prefloop compare`` uses the same judge)."""
    name = cfg.training.evaluation.judge or cfg.judges.default
    if name is None:
        name = next((n for n, j in judges.items() if isinstance(j, PairwiseJudge) and not is_reward_model(cfg.judges.get(n))),
                    None)
    if name is None:
        return None, None
    judge = judges[name]
    if not isinstance(judge, PairwiseJudge):
        raise ConfigError(f"the evaluation judge {name!r} cannot compare two answers", hint="set training.evaluation.judge")
    use_store_cache(judge, store)  # eval verdicts are cached like labelling ones
    return name, judge


def run(ctx: RoundContext) -> None:
    t = ctx.training
    ev = t.evaluation
    if not ev.enabled:
        return
    prompts = ctx.prompts("eval")
    if ev.max_prompts is not None:
        prompts = dict(list(prompts.items())[: ev.max_prompts])
    if not prompts:
        ctx.patch_metrics(eval={"note": "no eval prompts (import some with split eval)"})
        return
    sampling = Sampling.from_settings(t.generation, n=ev.samples_per_prompt, temperature=ev.temperature,
                                      max_new_tokens=ev.max_new_tokens, seed=t.generation.seed + EVAL_SEED_OFFSET)
    adapter = ctx.row().adapter_path if ctx.number > 0 else None
    fill_generations(ctx, prompts, PURPOSE_EVAL, sampling, adapter, "eval samples")
    mine = {pid: v[: ev.samples_per_prompt] for pid, v in ctx.generations(PURPOSE_EVAL).items() if pid in prompts}
    result: dict[str, Any] = {"prompts": len(prompts), "samples": sum(len(v) for v in mine.values())}
    with ctx.store.session() as s:
        gmeta = dict(s.execute(select(Generation.id, Generation.meta).where(Generation.round_id == ctx.round_id)).all())
    oracle_values = [float(gmeta[g]["oracle_score"]) for v in mine.values() for g, _ in v if "oracle_score" in (gmeta[g] or {})]
    result["oracle_score"] = mean_or_none(oracle_values)
    details: dict[str, Any] = {}
    if ctx.number > 0:
        name, judge = eval_judge(ctx, ctx.judges())
        result["judge"] = name
        cost = 0.0
        if judge is not None:
            # the judge reads the prompt as this round's samples were given it (passages placed, with rag)
            msgs = {pid: first_prompted(p.as_messages(), (gmeta[g] for g, _ in mine.get(pid, []))) for pid, p in prompts.items()}
            refs = {pid: p.reference for pid, p in prompts.items()}
            with ctx.store.session() as s:
                others = {x.number: x.id for x in s.scalars(select(Round).where(Round.number.in_([0, ctx.number - 1])))}
            for label, number in (("vs_previous", ctx.number - 1), ("vs_base", 0)):
                if number not in others:
                    continue
                wr = win_rate(judge, msgs, mine, ctx.generations(PURPOSE_EVAL, others[number]), number, refs)
                result[label] = wr.summary()
                details[label] = wr.details
                cost += wr.cost
        result["judge_cost"] = cost
    ctx.patch_metrics(eval=result)  # first: the store names a non-finite number
    atomic_write_text(ctx.dir / "eval.json", json.dumps({"summary": result, "details": details}, indent=2, default=str,
                                                        allow_nan=False))
