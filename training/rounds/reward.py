"""reward_model: train each reward-model judge (``backend: reward_model``) on the human pairs so far,
then let it label this round's tasks that no human answered, so that what the humans know
reaches the tasks they never see.

It runs after ``waiting`` (this round's human labels count) and before ``building_datasets`` (its
labels become pairs), and only in rounds whose config has such a judge (:func:`applies`); other
rounds skip it, so old stores and configs run exactly as before.

Per judge, once per round and recorded in the round state (a resume keeps the plan): the pairs and
held-out tasks (:mod:`prefloop.training.reward_model`); retrain when at least ``min_new_pairs``
pairs are new since the previous adapter, else reuse it. A finished training is never repeated
and a killed one resumes from its last checkpoint. The adapter is registered as a round artifact
with its sha256. The judge then labels this round's tasks without a human label, and its held-out
human compare tasks: there its agreement with the human majority is measured exactly as any
judge's (``judge_human_agreement``), this round's and over all rounds so far, with a 95 % Wilson
interval, in the metrics under ``reward_model``.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import select

from prefloop.atomic import atomic_dir
from prefloop.config import ProjectConfig
from prefloop.feedback.agreement import judge_human_agreement
from prefloop.feedback.export import _no_progress_bars
from prefloop.feedback.store.models import Annotation, AnnotationStatus, Annotator, AnnotatorKind, Task, TaskKind
from prefloop.judges.config import JudgeSpec
from prefloop.judges.reward_model import RewardModelJudge, artifact_kind, is_reward_model, latest_adapter
from prefloop.judges.runner import judge_round

from ..generation import resolve_device
from ..reward_model import held_out, reward_pairs, train_reward_model
from ..trainers import ADAPTER_WEIGHTS
from .context import RoundContext
from .files import sha256_file
from .state import RewardModelRef


def reward_specs(cfg: ProjectConfig) -> list[JudgeSpec]:
    return [s for s in cfg.judges.panel if is_reward_model(s)]


def applies(cfg: ProjectConfig) -> bool:
    """Whether a round with this config enters the ``reward_model`` state."""
    return bool(reward_specs(cfg))


def run(ctx: RoundContext) -> None:
    for spec in reward_specs(ctx.cfg):
        _plan(ctx, spec)
        _train(ctx, spec)
        _label_and_measure(ctx, spec)


def _out(ctx: RoundContext, spec: JudgeSpec):  # noqa: ANN202 - a Path
    return ctx.dir / "reward_model" / spec.name


def _plan(ctx: RoundContext, spec: JudgeSpec) -> None:
    if spec.name in ctx.state().reward_models:
        return
    pairs = reward_pairs(ctx.store, spec, ctx.cfg.aggregation, round_ids=None)
    previous = latest_adapter(ctx.store, spec.name, max_round=ctx.number - 1)
    new = len(set(pairs.keys) - (previous.trained_keys() if previous else set()))
    retrain = new >= spec.min_new_pairs
    ref = RewardModelRef(pairs=len(pairs.keys), new_pairs=new, held_out=len(pairs.held_out_tasks), retrain=retrain)
    if retrain:
        path = _out(ctx, spec) / "pairs"
        with atomic_dir(path) as tmp, _no_progress_bars():
            pairs.dataset().save_to_disk(str(tmp))
        ref.dataset = str(path)
    ctx.write(change=lambda st: st.update(reward_models={**st.reward_models, spec.name: ref}))


def _train(ctx: RoundContext, spec: JudgeSpec) -> None:
    ref = ctx.state().reward_models[spec.name]
    if not ref.retrain or ref.adapter is not None:
        return
    from datasets import load_from_disk

    base = spec.model or ctx.training.model.source
    ctx.say(f"reward model {spec.name}: training on {ref.pairs} pair(s) ({ref.new_pairs} new)")
    res = train_reward_model(spec, base, load_from_disk(ref.dataset), _out(ctx, spec), device=resolve_device(ctx.training.model),
                             save_steps=ctx.training.trainer.save_steps, callbacks=[ctx.tracker.callback("reward_model")])
    adapter = _out(ctx, spec) / "adapter"
    digest = sha256_file(adapter / ADAPTER_WEIGHTS)
    ctx.register_artifact(artifact_kind(spec.name), adapter, digest, {"judge": spec.name, "base_model": base, "pairs": res.pairs})
    done = ref.model_copy(update={"adapter": str(adapter), "sha256": digest, "result": res.to_json()})
    ctx.write(change=lambda st: st.update(reward_models={**st.reward_models, spec.name: done}))


def _label_and_measure(ctx: RoundContext, spec: JudgeSpec) -> None:
    ref = ctx.state().reward_models[spec.name]
    report: dict[str, Any] = {"pairs": ref.pairs, "new_pairs": ref.new_pairs, "held_out": ref.held_out, "retrained": ref.retrain,
                              "train_seconds": (ref.result or {}).get("train_seconds", 0.0) if ref.retrain else 0.0}
    if ref.result:
        report["train"] = {k: ref.result.get(k) for k in ("steps", "resumed_from")} | {
            k: (ref.result.get("metrics") or {}).get(k) for k in ("loss", "accuracy", "margin")}
    trained = latest_adapter(ctx.store, spec.name, max_round=ctx.number)
    if trained is None:
        report["note"] = f"not trained yet: {ref.new_pairs} new pair(s), fewer than min_new_pairs {spec.min_new_pairs}"
        _report(ctx, spec, report)
        return
    if not ref.retrain:
        report["note"] = f"{ref.new_pairs} new pair(s), fewer than min_new_pairs {spec.min_new_pairs}: the previous adapter is reused"
    report["adapter_sha256"] = trained.sha256
    judge = RewardModelJudge(spec, adapter=trained)
    stats = judge_round(ctx.project, judge, ctx.round_id, task_ids=_tasks_to_label(ctx, spec), include_cancelled=True,
                        progress=ctx.reporter.enabled)
    report["labelled"] = {"tasks": stats.tasks - stats.unsupported, "failed": stats.failed, "cached": stats.cached,
                          "seconds": round(stats.seconds, 3)}
    report["agreement"] = _agreement(ctx, spec, [ctx.round_id])
    report["agreement_all_rounds"] = _agreement(ctx, spec, None)
    _report(ctx, spec, report)


def _tasks_to_label(ctx: RoundContext, spec: JudgeSpec) -> list[int]:
    """This round's tasks without a submitted human label, and its held-out human compare tasks."""
    with ctx.store.session() as s:
        tasks = s.execute(select(Task.id, Task.kind).where(Task.round_id == ctx.round_id)).all()
        answered = set(s.scalars(
            select(Annotation.task_id).join(Annotator, Annotator.id == Annotation.annotator_id)
            .join(Task, Task.id == Annotation.task_id)
            .where(Task.round_id == ctx.round_id, Annotator.kind == AnnotatorKind.HUMAN.value,
                   Annotation.status == AnnotationStatus.SUBMITTED.value)))
    return [t for t, kind in tasks if t not in answered
            or (kind == TaskKind.COMPARE.value and held_out(t, spec.holdout, spec.seed))]


def _agreement(ctx: RoundContext, spec: JudgeSpec, round_ids: list[int] | None) -> dict[str, Any]:
    """The judge against the human majority where it labelled human tasks (held out: never trained on)."""
    mine = next((a for a in judge_human_agreement(ctx.store, round_ids=round_ids) if a.judge == spec.name), None)
    if mine is None:
        return {"n": 0, "agreement": None, "interval": None, "kappa": None}
    return {"n": mine.n, "agreement": mine.agreement, "interval": wilson_interval(mine.agreement, mine.n), "kappa": mine.kappa}


def wilson_interval(share: float, n: int, z: float = 1.96) -> list[float] | None:
    """The 95 % Wilson score interval of a proportion (sensible for small n and shares near 0 or 1)."""
    if n <= 0:
        return None
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _report(ctx: RoundContext, spec: JudgeSpec, report: dict[str, Any]) -> None:
    ctx.write(metrics={"reward_model": {**(ctx.metrics().get("reward_model") or {}), spec.name: report}})
    ag = report.get("agreement") or {}
    if ag.get("n"):
        lo, hi = ag["interval"]
        ctx.say(f"reward model {spec.name}: agreement with held-out human labels {ag['agreement']:.2f} "
                f"[{lo:.2f}, {hi:.2f}] on {ag['n']} task(s)")
    elif "note" in report:
        ctx.say(f"[yellow]reward model {spec.name}: {report['note']}[/]")
