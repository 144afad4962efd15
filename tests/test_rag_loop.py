"""Retrieval as a condition of the loop, on the tiny model: with ``rag.enabled`` a round samples each
prompt with its passages placed and stores them with every sample; a resumed round reuses what
was stored (never retrieves again for a prompt that has samples); and a whole round with
retrieval trains RAFT-style (its datasets' prompts hold the passages) and is evaluated with them."""

from __future__ import annotations

from pathlib import Path

import pytest
from roundkit import deep_merge, make_project
from sqlalchemy import delete, select

from prefloop.feedback.store.models import Generation, Round
from prefloop.retrieval.demo_data import support_kb_path
from prefloop.retrieval.ingest import import_kb

pytestmark = pytest.mark.slow

RAG = {"rag": {"enabled": True, "kb": "support", "retriever": "bm25", "k": 2, "max_context_tokens": 60},
       "training": {"sft": {"max_length": 160}, "dpo": {"max_length": 160}}}


def _context(project, number: int):  # noqa: ANN001, ANN202
    from rich.console import Console

    from prefloop.training.rounds.context import Reporter, RoundContext
    from prefloop.training.rounds.machine import _round_config, _tracker, create_round

    rid = create_round(project, number)
    with project.store.session() as s:
        row = s.get(Round, rid)
        s.expunge(row)
    cfg = _round_config(project, row)
    return RoundContext(project=project, cfg=cfg, round_id=rid, number=number, tracker=_tracker(project, cfg, row),
                        reporter=Reporter(Console(stderr=True), enabled=False))


def _train_samples(project, round_id: int) -> dict[int, list[Generation]]:  # noqa: ANN001
    out: dict[int, list[Generation]] = {}
    with project.store.session() as s:
        for g in s.scalars(select(Generation).where(Generation.round_id == round_id).order_by(Generation.id)):
            if g.meta.get("purpose") == "train":
                s.expunge(g)
                out.setdefault(g.prompt_id, []).append(g)
    return out


def test_rag_generation_stores_passages_and_resume_reuses_them(tmp_path: Path, db_url: str) -> None:
    from prefloop.training.loading import load_tokenizer
    from prefloop.training.rounds import generate

    project = make_project(tmp_path / "proj", db_url, prompts=4, patch=RAG)
    try:
        import_kb(project.store, support_kb_path(), kb="support")
        ctx = _context(project, 1)
        generate.run(ctx)
        samples = _train_samples(project, ctx.round_id)
        assert len(samples) == 4 and all(len(v) == 3 for v in samples.values())
        tok = load_tokenizer("tiny:llama-tiny")
        with_passages = 0
        for pid, gens in samples.items():
            first = gens[0].meta
            assert all(g.meta["prompt_messages"] == first["prompt_messages"] for g in gens)  # one retrieval per prompt
            info = first["rag"]
            assert info["kb"] == "support" and info["retriever"] == "bm25" and info["k"] == 2 and info["tokens"] == "tokenizer"
            placed = first["passages"]
            with_passages += bool(placed)
            system = first["prompt_messages"][0]["content"]
            for p in placed:
                assert f"[{p['number']}] " in system and p["text"] in system and p["kb"] == "support"
            if placed:  # the budget holds in the policy's tokens
                context = system.split("\n\n", 1)[1]
                assert len(tok(context, add_special_tokens=False)["input_ids"]) == info["context_tokens"] <= 60
        assert with_passages >= 3

        # A crash left prompt A with one sample and prompt B with none; the knowledge base changed since.
        a, b = sorted(samples)[:2]
        with project.store.session() as s:
            s.execute(delete(Generation).where(Generation.id.in_([g.id for g in samples[a][1:]] + [g.id for g in samples[b]])))
        kb = tmp_path / "kb2"
        kb.mkdir()
        (kb / "all.md").write_text("# Everything\n\nEvery order ships in 1 day, refunds take 1 day, and shipping is free.\n")
        import_kb(project.store, kb, kb="support", prune=True)
        generate.run(ctx)  # the generating state, entered again
        after = _train_samples(project, ctx.round_id)
        assert all(len(v) == 3 for v in after.values())
        kept = samples[a][0].meta
        assert [g.meta["passages"] for g in after[a]] == [kept["passages"]] * 3  # reused, not retrieved again
        assert [g.meta["prompt_messages"] for g in after[a]] == [kept["prompt_messages"]] * 3
        fresh = after[b][0].meta
        assert fresh["rag"]["kb_hash"] != kept["rag"]["kb_hash"]  # B had nothing stored: retrieved now
        assert all(p["document_key"] == "kb2/all.md" for p in fresh["passages"])
    finally:
        project.store.dispose()


def test_a_round_with_retrieval_trains_on_prompts_that_hold_the_passages(tmp_path: Path) -> None:
    from datasets import load_from_disk

    from prefloop.sim import ScoreOracle
    from prefloop.training.demo import scripted_humans
    from prefloop.training.rounds import Orchestrator

    # A decisive scripted lead (the longer reply wins), so that the round has pairs to learn from.
    lead = ScoreOracle(lambda task, gid, text: len(text) / 1000.0,
                       lambda task: "Hi there! Refunds are issued within 5 business days. Anything else?")

    project = make_project(tmp_path / "proj", prompts=4, patch=deep_merge(RAG, {"training": {"wandb": {"enabled": False}}}))
    try:
        import_kb(project.store, support_kb_path(), kb="support")
        orch = Orchestrator(project, progress=False, humans=scripted_humans(n=1, accuracy=1.0, oracle=lead))
        done = orch.run_next()
        assert [r.state for r in done] == ["done", "done"]
        one = done[1]
        with project.store.session() as s:
            gens = list(s.scalars(select(Generation).where(Generation.round_id.in_([r.id for r in done]))))
        assert gens and all("prompt_messages" in g.meta and "rag" in g.meta for g in gens)  # train and eval samples
        for kind in ("sft", "dpo"):
            ds = load_from_disk(one.control.datasets[kind].path)
            assert len(ds) > 0
            prompts = [row["prompt"] for row in ds]  # SFT rows are prompt/completion too
            rows_with = [i for i, row in enumerate(ds) if row["passages"]]
            assert rows_with, kind
            for i in rows_with:
                system = prompts[i][0]["content"]
                assert all(p["text"] in system for p in ds[i]["passages"])
        assert set(one.metrics["training"]["phases"]) == {"sft", "dpo"}  # TRL trained on them as they are
        assert one.metrics["eval"]["samples"] > 0
    finally:
        project.store.dispose()
