"""evaluating: sample the round's policy on the held-out ``eval`` prompts, score the samples with
the oracle, and compare them with round N−1's and round 0's through the evaluation judge.

Eval samples are stored like candidates (a resumed round samples only what is missing) and the
judge's verdicts come from the store's cache. The summary — with 95 % bootstrap intervals over the
eval prompts and, against round N−1 and round 0, the paired change of the oracle score and whether
it is within the noise — goes to the metrics; the per-prompt results (each sample's oracle score
and comparison outcomes) and the per-comparison details to ``round-N/eval.json``.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from prefloop.atomic import atomic_write_text
from prefloop.config import ProjectConfig
from prefloop.errors import ConfigError
from prefloop.feedback.passages import first_prompted
from prefloop.feedback.store.db import Store
from prefloop.feedback.store.models import Generation, Round
from prefloop.judges import Judge, PairwiseJudge
from prefloop.judges.reward_model import is_reward_model
from prefloop.judges.runner import use_store_cache
from prefloop.stats import Bootstrap

from ..evaluation import mean_or_none, oracle_by_prompt, win_rate
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


def eval_samples(ctx: RoundContext, round_id: int, prompt_ids: set[int], k: int
                 ) -> tuple[dict[int, list[tuple[int, str]]], dict[int, list[float]]]:
    """A round's first ``k`` eval samples of each prompt, and their oracle scores per prompt."""
    samples = {pid: v[:k] for pid, v in ctx.generations(PURPOSE_EVAL, round_id).items() if pid in prompt_ids}
    with ctx.store.session() as s:
        metas: dict[int, dict[str, Any] | None] = dict(s.execute(select(Generation.id, Generation.meta).where(Generation.round_id == round_id)).all())
    return samples, oracle_by_prompt(samples, metas)


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
    k, ids = ev.samples_per_prompt, set(prompts)
    boot = Bootstrap(resamples=ev.bootstrap_resamples, seed=ev.bootstrap_seed)
    mine, scores = eval_samples(ctx, ctx.round_id, ids, k)
    result: dict[str, Any] = {"prompts": len(prompts), "samples": sum(len(v) for v in mine.values()),
                              "samples_per_prompt": k, "bootstrap": boot.to_json()}
    result["oracle_score"] = mean_or_none([x for v in scores.values() for x in v])
    ci = boot.ci(list(scores.values()))
    result["oracle_score_ci"] = None if ci is None else list(ci)
    details: dict[str, Any] = {}
    outcomes: dict[str, dict[int, list[float | None]]] = {}
    if ctx.number > 0:
        with ctx.store.session() as s:
            others = {x.number: x.id for x in s.scalars(select(Round).where(Round.number.in_([0, ctx.number - 1])))}
        against = {label: (number, others[number]) for label, number in (("vs_previous", ctx.number - 1), ("vs_base", 0))
                   if number in others}
        theirs = {label: eval_samples(ctx, rid, ids, k) for label, (_, rid) in against.items()}
        if scores:  # the oracle score's change, paired per prompt: is it more than noise?
            result["oracle_change"] = {label: {"against": against[label][0], **boot.change(scores, their_scores)}
                                       for label, (_, their_scores) in theirs.items()}
        name, judge = eval_judge(ctx, ctx.judges())
        result["judge"] = name
        cost = 0.0
        if judge is not None:
            # the judge reads the prompt as this round's samples were given it (passages placed, with rag)
            with ctx.store.session() as s:
                gmeta: dict[int, dict[str, Any] | None] = dict(s.execute(select(Generation.id, Generation.meta).where(Generation.round_id == ctx.round_id)).all())
            msgs = {pid: first_prompted(p.as_messages(), (gmeta[g] for g, _ in mine.get(pid, []))) for pid, p in prompts.items()}
            refs = {pid: p.reference for pid, p in prompts.items()}
            for label, (their_samples, _) in theirs.items():
                wr = win_rate(judge, msgs, mine, their_samples, against[label][0], refs)
                result[label] = wr.summary(boot)
                details[label] = wr.details
                outcomes[label] = wr.per_prompt()
                cost += wr.cost
        result["judge_cost"] = cost
    per_prompt = [{"prompt_id": pid, "generation_ids": [g for g, _ in mine[pid]], "oracle": scores.get(pid),
                   **{label: o.get(pid) for label, o in outcomes.items()}} for pid in sorted(mine)]
    ctx.patch_metrics(eval=result)  # first: the store names a non-finite number
    atomic_write_text(ctx.dir / "eval.json", json.dumps({"summary": result, "per_prompt": per_prompt, "details": details},
                                                        indent=2, default=str, allow_nan=False))
