"""Finishing a round (before it enters ``done``): its cost, judge–human agreement and judge trust
(the running estimate over all rounds so far, :mod:`prefloop.judges.trust`) go to the metrics, and its numbers, a table of samples, its datasets and its adapter to its wandb run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from prefloop.feedback.aggregate import compare_outcome, load_task_labels
from prefloop.feedback.agreement import judge_human_agreement
from prefloop.feedback.store.models import Generation, Prompt
from prefloop.judges.trust import measure_trust, wandb_view

from ..roi import round_cost
from .context import RoundContext


def run(ctx: RoundContext) -> None:
    r = ctx.row()
    st = ctx.state()
    m = dict(r.metrics or {})
    cost = round_cost(ctx.store, ctx.round_id, ctx.cfg.cost, seconds=st.seconds,
                      eval_judge_cost=(m.get("eval") or {}).get("judge_cost") or 0.0)
    agreement = {a.judge: {"n": a.n, "agreement": a.agreement, "kappa": a.kappa}
                 for a in judge_human_agreement(ctx.store, round_ids=[ctx.round_id])} if ctx.number > 0 else {}
    trust = measure_trust(ctx.store, ctx.cfg.judges.trust).to_metrics() if ctx.number > 0 else {}
    ctx.patch_metrics(cost=cost.to_dict(), agreement=agreement, trust=trust)
    tr = ctx.tracker
    if not tr.active:
        return
    m = ctx.metrics()
    ev = m.get("eval") or {}
    tr.log_round({
        **eval_numbers(ev),
        "labels/human": cost.human_labels, "labels/judge": cost.judge_labels,
        "cost": cost.to_dict(),
        "agreement": {k: v["agreement"] for k, v in agreement.items()},
        "trust": wandb_view(trust),
        "datasets": {k: v.get("rows") for k, v in (m.get("datasets") or {}).items()},
        "reward_model": {k: {"agreement": (v.get("agreement") or {}).get("agreement"), "pairs": v.get("pairs"),
                             "train_seconds": v.get("train_seconds")} for k, v in (m.get("reward_model") or {}).items()},
        "seconds": st.seconds,
    })
    tr.log_samples(sample_rows(ctx))
    for kind, ref in st.datasets.items():
        if ref.rows:
            tr.log_artifact(f"{kind}-dataset-round-{ctx.number}", "dataset", Path(ref.path),
                            {"sha256": ref.sha256, "rows": ref.rows})
    if r.adapter_path and Path(r.adapter_path).parent == ctx.dir:
        tr.log_artifact(f"adapter-round-{ctx.number}", "model", Path(r.adapter_path),
                        {"sha256": r.adapter_hash, "base_model": ctx.training.model.source})
    tr.log_report(ctx.project, ctx.dir / "report.png")  # the report so far, as a wandb image


def _bounds(ci: list[float] | None) -> dict[str, float] | None:
    return None if ci is None else {"low": ci[0], "high": ci[1]}


def eval_numbers(ev: dict[str, Any]) -> dict[str, Any]:
    """The evaluation's numbers for wandb: oracle score and win rates with their 95 % intervals
    (``…_ci/low``, ``…_ci/high``), and the oracle score's change since round N−1 and round 0."""
    out: dict[str, Any] = {"oracle_score": ev.get("oracle_score"), "oracle_score_ci": _bounds(ev.get("oracle_score_ci"))}
    for label, key in (("vs_previous", "win_rate_vs_previous"), ("vs_base", "win_rate_vs_base")):
        wr = ev.get(label) or {}
        out[key], out[f"{key}_ci"] = wr.get("win_rate"), _bounds(wr.get("win_rate_ci"))
        change = (ev.get("oracle_change") or {}).get(label) or {}
        out[f"oracle_change_{label}"], out[f"oracle_change_{label}_ci"] = change.get("diff"), _bounds(change.get("ci"))
    return out


def _choice(value: dict[str, Any], a: int, b: int) -> str:
    choice = str(value.get("choice"))
    return "A" if choice == str(a) else "B" if choice == str(b) else "tie"


def sample_rows(ctx: RoundContext) -> list[dict[str, Any]]:
    """prompt, candidates, verdicts and the chosen candidate of the round's compare tasks
    (without compare tasks: prompts and outputs)."""
    limit = ctx.training.wandb.log_samples
    tasks = load_task_labels(ctx.store, round_ids=[ctx.round_id], kinds=["compare"])[:limit]
    if not tasks:
        with ctx.store.session() as s:
            found = s.execute(select(Prompt, Generation.text, Generation.meta).join(Generation, Generation.prompt_id == Prompt.id)
                              .where(Generation.round_id == ctx.round_id).order_by(Generation.id).limit(limit)).all()
            return [{"prompt": p.display_text, "output": text, "oracle": (meta or {}).get("oracle_score")}
                    for p, text, meta in found]
    gen_ids = {g for t in tasks for g in t.generation_ids}
    with ctx.store.session() as s:
        texts = dict(s.execute(select(Generation.id, Generation.text).where(Generation.id.in_(gen_ids))).all())
        oracle = {gid: (meta or {}).get("oracle_score") for gid, meta in
                  s.execute(select(Generation.id, Generation.meta).where(Generation.id.in_(gen_ids))).all()}
        prompts = {p.id: p.display_text for p in s.scalars(select(Prompt).where(Prompt.id.in_({t.prompt_id for t in tasks})))}
    rows = []
    for t in tasks:
        a, b = t.generation_ids
        o = compare_outcome(t)
        rows.append({
            "prompt": prompts[t.prompt_id], "candidate_a": texts[a], "candidate_b": texts[b],
            "oracle_a": oracle.get(a), "oracle_b": oracle.get(b),
            "verdicts": "; ".join(f"{lab.annotator}={_choice(lab.value, a, b)}" for lab in t.labels),
            "chosen": "A" if o.winner == a else "B" if o.winner == b else o.status, "source": o.source,
        })
    return rows
