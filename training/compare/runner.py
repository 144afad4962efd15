"""``run_compare``: answer the eval prompts with every arm, judge them against base, and report.

Same prompts (the ``eval`` split, ``training.evaluation.max_prompts`` of them), same sampling
(``training.evaluation``'s temperature and length, ``samples`` per prompt, once per seed), same
oracle and evaluation judge for every arm; the RAG arms share one retrieval per prompt (the
``rag:`` section, whether or not ``rag.enabled`` is on for the rounds). The result is written to
``runs/compare/round-N.json`` (atomically) and returned.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from sqlalchemy import select

from prefloop.atomic import atomic_write_text
from prefloop.errors import ConfigError, NotFoundError
from prefloop.feedback.store.models import Prompt
from prefloop.project import Project
from prefloop.retrieval.context import PromptRetriever, RetrievedPrompt, project_index_dir
from prefloop.text import finite_or_none

from .. import generation
from ..evaluation import load_oracle
from .arms import ARMS, Arm, Sampler, check_arms, make_arms, sampling_key, stored_answers, stored_contexts, tuned_round
from .economics import BreakEven, Prices
from .results import Answers, ArmResult, OneOff, arm_result, break_evens, judge_vs_base


@dataclass
class CompareResult:
    round: int
    adapter: str
    seeds: list[int]
    samples: int
    prompts: int
    judge: str | None
    judge_cost: float
    quality: str  #: "oracle" or "win rate vs base"
    currency: str
    prices: Prices
    one_off: OneOff
    arms: list[ArmResult]
    break_even: list[BreakEven]
    rag: dict[str, Any] | None
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    path: Path | None = None

    def arm(self, name: str) -> ArmResult:
        return next(a for a in self.arms if a.arm == name)

    def to_dict(self) -> dict[str, Any]:
        return finite_or_none({
            "round": self.round, "adapter": self.adapter, "seeds": self.seeds, "samples": self.samples, "prompts": self.prompts,
            "judge": self.judge, "judge_cost": self.judge_cost, "quality": self.quality, "currency": self.currency,
            "prices": vars(self.prices), "one_off": self.one_off.to_dict(), "rag": self.rag,
            "arms": [a.to_dict() for a in self.arms], "break_even": [b.to_dict() for b in self.break_even],
            "created_at": self.created_at,
        })


def eval_prompts(project: Project) -> dict[int, Prompt]:
    ev = project.config.training.evaluation
    with project.store.session() as s:
        rows = list(s.scalars(select(Prompt).where(Prompt.split == "eval").order_by(Prompt.id)))
        for p in rows:
            s.expunge(p)
    if ev.max_prompts is not None:
        rows = rows[: ev.max_prompts]
    if not rows:
        raise ConfigError("no eval prompts to compare on", hint="import some with split eval")
    return {p.id: p for p in rows}


def one_off_cost(project: Project, number: int) -> OneOff:
    """The cost records of rounds 1…``number`` (what made the adapter), by source."""
    from ..report import collect

    out = OneOff()
    for r in collect(project):
        if 1 <= r.number <= number:
            out.rounds.append(r.number)
            out.human += r.human_cost
            out.judge += r.judge_cost
            out.compute += r.compute_cost
            out.human_labels += r.human_labels
    return out


def _retriever(project: Project, tokenizer: Any) -> PromptRetriever:
    rag = project.config.rag
    try:
        return PromptRetriever(rag, project.store, index_dir=project_index_dir(project), tokenizer=tokenizer)
    except NotFoundError as exc:
        raise ConfigError(f"the RAG arms need the knowledge base {rag.kb!r} (rag.kb): {exc.message}",
                          hint="import it with `prefloop kb import PATH --kb NAME`, or compare without them: "
                               "--arms base,ft") from None


def run_compare(
    project: Project,
    *,
    round_number: int | None = None,
    seeds: Sequence[int] | None = None,
    samples: int | None = None,
    arms: Sequence[str] = ARMS,
    progress: bool = True,
    console: Console | None = None,
) -> CompareResult:
    """Evaluate base, base+RAG, fine-tuned and fine-tuned+RAG side by side (see the module doc)."""
    from prefloop.judges import judges_from_config

    from ..loading import load_tokenizer
    from ..rounds.evaluate import pick_eval_judge

    cfg = project.config
    t, ev = cfg.training, cfg.training.evaluation
    check_arms(list(arms))
    number, adapter = tuned_round(project, round_number)
    chosen = make_arms(list(arms), adapter)
    seeds = list(seeds) if seeds else [t.generation.seed]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds repeat: {seeds}")
    k = samples or ev.samples_per_prompt
    if k < 1:
        raise ConfigError(f"samples must be at least 1, got {k}")
    prompts = eval_prompts(project)
    oracle = load_oracle(ev.oracle) if ev.oracle else None
    judge_name, judge = pick_eval_judge(cfg, judges_from_config(cfg, base_dir=project.root), project.store)
    tokenizer = load_tokenizer(t.model.source)
    retriever = _retriever(project, tokenizer) if any(a.rag for a in chosen) else None
    signature = retriever.signature() if retriever else None

    keys: dict[tuple[str, int], str] = {}
    samplings: dict[int, generation.Sampling] = {}
    for seed in seeds:
        samplings[seed] = generation.Sampling.from_settings(t.generation, n=k, temperature=ev.temperature,
                                                            max_new_tokens=ev.max_new_tokens, seed=seed)
        for arm in chosen:
            keys[(arm.name, seed)] = sampling_key(arm, t.model.source, samplings[seed], signature)
    contexts: dict[int, RetrievedPrompt] = {}
    if retriever is not None:
        contexts = stored_contexts(project, [v for (a, _), v in keys.items() if a.endswith("+rag")], list(prompts))
        todo = {pid: p.as_messages() for pid, p in prompts.items() if pid not in contexts}
        contexts.update(retriever.retrieve(todo) if todo else {})

    reporter = Progress(TextColumn("compare · {task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("answers"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console or Console(stderr=True),
                        disable=not progress)
    with reporter as bar:
        job = bar.add_task("sampling", total=len(chosen) * len(seeds) * len(prompts) * k)
        sampler = Sampler(project, cfg, prompts, oracle, tokenizer, advance=lambda n: bar.advance(job, n))
        for arm in chosen:
            bar.update(job, description=arm.name)
            for seed in seeds:
                sampler.fill(arm, keys[(arm.name, seed)], samplings[seed], contexts)
        bar.update(job, description="judging")
        result = _results(project, number, adapter, chosen, seeds, k, prompts, keys, judge_name, judge, bool(oracle), signature)
    path = project.runs_dir / "compare" / f"round-{number}.json"
    atomic_write_text(path, json.dumps(result.to_dict(), indent=2, allow_nan=False))
    result.path = path
    return result


def _answers(project: Project, keys: dict[tuple[str, int], str], arm: Arm, seeds: list[int], prompts: dict[int, Prompt],
             k: int) -> Answers:
    out: Answers = {}
    for seed in seeds:
        stored = stored_answers(project, keys[(arm.name, seed)], list(prompts))
        out[seed] = {pid: gens[:k] for pid, gens in stored.items()}
    return out


def _results(project: Project, number: int, adapter: str, chosen: list[Arm], seeds: list[int], k: int,
             prompts: dict[int, Prompt], keys: dict[tuple[str, int], str], judge_name: str | None, judge: Any,
             has_oracle: bool, signature: dict[str, Any] | None) -> CompareResult:
    cfg = project.config
    prices = Prices.from_config(cfg.cost)
    one_off = one_off_cost(project, number)
    answers = {arm.name: _answers(project, keys, arm, seeds, prompts, k) for arm in chosen}
    plain = {pid: p.as_messages() for pid, p in prompts.items()}
    refs = {pid: p.reference for pid, p in prompts.items()}
    spent = 0.0
    results = []
    for arm in chosen:
        win = judged = None
        if arm.name != "base" and judge is not None:
            win, judged, cost = judge_vs_base(judge, plain, refs, answers[arm.name], answers["base"])
            spent += cost
        results.append(arm_result(arm.name, answers[arm.name], prices=prices, one_off=one_off.total if arm.adapter else 0.0,
                                  win=win, judged=judged))
    quality = "oracle" if has_oracle else "win rate vs base"
    return CompareResult(number, adapter, seeds, k, len(prompts), judge_name, spent, quality, cfg.cost.currency, prices,
                         one_off, results, break_evens(results, prices), signature)
