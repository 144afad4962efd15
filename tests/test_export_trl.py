"""Exported datasets feed TRL's own trainers: one real optimisation step each catches format drift."""

from __future__ import annotations

import json

import pytest

from prefloop.errors import DataError
from prefloop.feedback.export import build_dpo_dataset, build_sft_dataset, dataset_hash, save_dataset
from prefloop.feedback.queue import Queue


@pytest.fixture
def labelled(sqlite_url):
    from prefloop.feedback.store.db import open_store

    store = open_store(sqlite_url)
    q = Queue(store, overlap=1)
    h = q.ensure_annotator("h")
    for i in range(4):
        q.add_comparison([{"role": "system", "content": "Be kind."}, {"role": "user", "content": f"Greet #{i}"}],
                         [f"Hello friend {i}, how can I help?", f"go away {i}"])
        q.add_edit(f"Thank customer {i}", f"thx {i}")
    while (t := q.claim(h)) is not None:
        if t.kind == "compare":
            q.submit(h, t.task_id, {"choice": t.candidates[0].generation_id})
        else:
            q.submit(h, t.task_id, {"text": f"Thank you very much! ({t.task_id})"})
    return store


def test_formats_provenance_save_and_hash(labelled, tmp_path):
    dpo = build_dpo_dataset(labelled)
    sft = build_sft_dataset(labelled)
    assert len(dpo) == 4 and len(sft) == 4
    row = dpo[0]
    assert row["prompt"][-1]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    assert row["chosen"][0]["content"].startswith("Hello friend") and row["rejected"][0]["content"].startswith("go away")
    assert (row["source"], row["method"], row["n_annotators"], row["annotators"]) == ("human", "majority", 1, ["h"])
    assert sft[0]["completion"] == [{"role": "assistant", "content": sft[0]["completion"][0]["content"]}]
    assert sft[0]["prompt"][-1]["role"] == "user"
    as_messages = build_sft_dataset(labelled, dataset_type="messages")
    assert as_messages.column_names == ["messages", *sft.column_names[2:]]  # the same provenance columns
    assert [r["messages"] for r in as_messages] == [r["prompt"] + r["completion"] for r in sft]
    with pytest.raises(DataError, match="unknown SFT dataset type"):
        build_sft_dataset(labelled, dataset_type="text")
    out = save_dataset(dpo, tmp_path / "dpo.jsonl", "jsonl")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 4 and lines[0]["chosen"] == row["chosen"]
    save_dataset(dpo, tmp_path / "dpo.parquet", "parquet")
    save_dataset(dpo, tmp_path / "dpo_disk", "disk")
    from datasets import load_from_disk

    assert dataset_hash(load_from_disk(str(tmp_path / "dpo_disk"))) == dataset_hash(dpo)
    assert dataset_hash(dpo) != dataset_hash(dpo.select(range(3)))
    with pytest.raises(DataError, match="empty"):
        save_dataset(dpo.select([]), tmp_path / "none.jsonl")


@pytest.mark.slow
def test_trl_trains_one_step_on_each_export(labelled, tmp_path):
    import torch
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from prefloop.training.loading import load_causal_lm, load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer("tiny:llama-tiny")
    common = dict(max_steps=1, per_device_train_batch_size=2, report_to=[], bf16=False, use_cpu=True,
                  gradient_checkpointing=False, save_strategy="no", logging_steps=1, max_length=128)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")

    sft_model = load_causal_lm("tiny:llama-tiny")
    before = {n: p.detach().clone() for n, p in sft_model.named_parameters()}
    sft = SFTTrainer(model=sft_model, args=SFTConfig(output_dir=str(tmp_path / "sft"), learning_rate=1e-2, **common),
                     train_dataset=build_sft_dataset(labelled), processing_class=tok)
    out = sft.train()
    assert out.global_step == 1 and out.training_loss > 0
    assert any(not torch.equal(before[n], p) for n, p in sft_model.named_parameters())

    dpo = DPOTrainer(model=load_causal_lm("tiny:llama-tiny"),
                     args=DPOConfig(output_dir=str(tmp_path / "dpo"), learning_rate=1e-3, beta=0.1, **common),
                     train_dataset=build_dpo_dataset(labelled), processing_class=tok, peft_config=lora)
    out = dpo.train()
    assert out.global_step == 1
    assert any("rewards" in k for k in dpo.state.log_history[0])
