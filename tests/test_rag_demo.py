"""The knowledge demo (``prefloop demo --rag``): its preset, its prompts (eval customers and policies
never seen in training), its oracle (half style, half facts) and its scripted leads' corrections;
and, slow, one round of the real demo on SmolLM2-135M followed by ``compare``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefloop.config import load_preset
from prefloop.retrieval.demo_data import load_facts
from prefloop.training.demo_rag import (
    data_path,
    fix_reply_rag,
    oracle_parts,
    support_desk_rag_oracle,
)
from prefloop.training.evaluation import load_oracle

ROWS = [json.loads(line) for line in data_path().read_text(encoding="utf-8").splitlines() if line.strip()]


def test_the_preset_turns_retrieval_on_with_room_for_the_passages() -> None:
    from prefloop.training.rounds import check_config

    cfg = load_preset("demo-rag")
    assert cfg.rag.enabled and cfg.rag.kb == "support" and cfg.rag.k == 2
    assert cfg.training.evaluation.oracle == "support-desk-rag" and cfg.training.evaluation.judge == "style-rules"
    assert load_oracle("support-desk-rag") is support_desk_rag_oracle
    check_config(cfg)  # the trainers' max_length holds a prompt with its passages and a reply


def test_eval_customers_and_policies_are_never_seen_in_training() -> None:
    splits = {s: [r for r in ROWS if r["split"] == s] for s in ("train", "eval")}
    assert (len(splits["train"]), len(splits["eval"])) == (38, 20)
    customers = {s: {r["meta"]["customer"] for r in rows} for s, rows in splits.items()}
    documents = {s: {r["meta"]["document"] for r in rows} for s, rows in splits.items()}
    assert not customers["train"] & customers["eval"] and len(customers["eval"]) == 20
    assert not documents["train"] & documents["eval"] and len(documents["train"] | documents["eval"]) == 29
    facts = load_facts()
    for r in ROWS:
        meta = r["meta"]
        assert meta["customer"] in r["messages"][-1]["content"]
        assert meta["facts"] and all(facts[f].document == meta["document"] for f in meta["facts"])
        assert (Path(str(data_path().parent)) / meta["document"]).is_file()


@pytest.mark.parametrize("row", ROWS, ids=[r["meta"]["customer"] for r in ROWS])
def test_a_leads_correction_scores_full_marks(row: dict) -> None:
    meta = row["meta"]
    fixed = fix_reply_rag(meta, "Whatever the model said.")
    assert fixed.startswith(f"Hi {meta['customer']}!") and fixed.endswith("?")
    assert oracle_parts(meta, row["messages"], fixed) == {"style": 1.0, "facts": 1.0}
    assert support_desk_rag_oracle(meta, row["messages"], fixed) == 1.0


def test_the_oracle_weighs_style_and_facts_half_each() -> None:
    meta = next(r["meta"] for r in ROWS if r["meta"]["facts"] == ["refund-time", "refund-bank-time"])
    name = meta["customer"]
    styled = f"Hi {name}! Your refund is on its way and should arrive soon. Anything else I can help with?"
    assert oracle_parts(meta, [], styled) == {"style": 1.0, "facts": 0.0}
    assert support_desk_rag_oracle(meta, [], styled) == 0.5
    one_fact = f"Hi {name}! Refunds are issued within 5 business days of receiving your return. Anything else?"
    assert oracle_parts(meta, [], one_fact) == {"style": 1.0, "facts": 0.5}
    bare = "refund within 5 business days; the bank adds 3 to 7 business days"  # facts, no style
    assert oracle_parts(meta, [], bare) == {"style": 0.5, "facts": 1.0}  # on topic and 8–50 words only
    assert support_desk_rag_oracle(meta, [], bare) == 0.75


def test_bm25_finds_each_eval_question_s_policy_within_k(tmp_path: Path) -> None:
    from prefloop.feedback.store.db import open_store
    from prefloop.retrieval.demo_data import support_kb_path
    from prefloop.retrieval.ingest import import_kb
    from prefloop.retrieval.retrievers import build_retriever

    store = open_store(f"sqlite:///{tmp_path / 'kb.db'}")
    import_kb(store, support_kb_path(), kb="support")
    k = load_preset("demo-rag").rag.k
    evals = [r for r in ROWS if r["split"] == "eval"]
    found = build_retriever("bm25", store, "support", index_dir=tmp_path / "index").search_many(
        [r["messages"][-1]["content"] for r in evals], k)
    hits = sum(any(p.document_key == r["meta"]["document"] for p in ps) for r, ps in zip(evals, found, strict=True))
    assert hits == len(evals)  # measured: 20 of 20 (train: 35 of 38)
    store.dispose()


@pytest.mark.slow
def test_demo_rag_one_round_then_compare(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path),
           "WANDB_DATA_DIR": str(tmp_path / "wandb-data")}
    out = subprocess.run([sys.executable, "-m", "prefloop.cli", "demo", str(tmp_path / "demo"), "--rag", "--rounds", "1", "-q"],
                         capture_output=True, text=True, env=env, timeout=3000)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "demo" / "runs" / "compare" / "round-1.json").read_text())
    assert [a["arm"] for a in result["arms"]] == ["base", "base+rag", "ft", "ft+rag"]
    assert all(a["answers"] == 20 and set(a["parts"]) == {"style", "facts"} for a in result["arms"])
    assert "does fine-tuning pay for itself?" in out.stdout
