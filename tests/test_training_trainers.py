"""SFT and DPO with LoRA on the tiny model: CPU-safe settings, continuation from a previous
adapter with the base model as DPO reference, checkpoints and finished phases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PROMPT = [{"role": "system", "content": "You are a customer support agent for Acme."},
          {"role": "user", "content": "Hi, I'm Ann. My order is late."}]
GOOD = "Hi Ann! Sorry about your order. It ships tomorrow. Is there anything else I can help you with?"
BAD = "The customer is frustrated because the order was not delivered."


def _cfg(**patch):  # noqa: ANN003, ANN202
    from roundkit import deep_merge

    from prefloop.training.config import TrainingConfig

    base = {
        "model": {"source": "tiny:llama-tiny", "device": "cpu"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "sft": {"learning_rate": 5e-3, "max_steps": 6, "batch_size": 2, "max_length": 96},
        "dpo": {"learning_rate": 5e-3, "max_steps": 4, "batch_size": 2, "max_length": 96, "precompute_ref_log_probs": True},
        "trainer": {"save_steps": 2},
    }
    return TrainingConfig.model_validate(deep_merge(base, patch))


def _datasets(tmp_path: Path):  # noqa: ANN202
    from datasets import Dataset, load_from_disk

    rows = [{"prompt": PROMPT, "chosen": [{"role": "assistant", "content": GOOD}],
             "rejected": [{"role": "assistant", "content": BAD}], "source": "human"}] * 6
    Dataset.from_list([{"messages": r["prompt"] + r["chosen"], "source": "human"} for r in rows]).save_to_disk(str(tmp_path / "sft-ds"))
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "dpo-ds"))
    return load_from_disk(str(tmp_path / "sft-ds")), load_from_disk(str(tmp_path / "dpo-ds"))


def _sequence_logps(model, batch):  # noqa: ANN001, ANN202
    """Sum of the completion tokens' log-probs under ``model`` (chosen half, rejected half)."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    per_seq = (logp * batch["completion_mask"][:, 1:]).sum(-1)
    return per_seq.chunk(2)


def test_sft_then_dpo_continues_the_adapter_and_keeps_the_base_model_as_reference(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from prefloop.training.loading import load_causal_lm
    from prefloop.training.trainers import build_trainer, train_phase

    cfg = _cfg()
    sft_ds, dpo_ds = _datasets(tmp_path)
    sft = train_phase("sft", cfg, sft_ds, tmp_path / "sft")
    assert sft.steps == 6 and sft.examples == 6 and sft.resumed_from is None
    sft_weights = load_file(str(Path(sft.adapter_dir) / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in sft_weights.items()), "SFT must move lora_B off zero"

    trainer = build_trainer("dpo", cfg, dpo_ds, tmp_path / "dpo-probe", init_adapter=Path(sft.adapter_dir))
    # CPU-safe settings, whatever TRL's defaults are.
    assert trainer.args.bf16 is False and trainer.args.gradient_checkpointing is False and trainer.args.use_cpu is True
    assert trainer.ref_model is None  # no second copy of the model
    # The policy starts from the SFT adapter…
    state = {k: v for k, v in trainer.model.state_dict().items() if "lora_" in k}
    for k, v in sft_weights.items():
        match = [sv for sk, sv in state.items() if sk.replace(".default", "") == k]
        assert match and torch.equal(match[0], v), k
    # …while the reference log-probs (precomputed) are the plain base model's.
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    base = load_causal_lm("tiny:llama-tiny")
    base_chosen, base_rejected = _sequence_logps(base, batch)
    assert torch.allclose(base_chosen, batch["ref_chosen_logps"], atol=1e-4)
    assert torch.allclose(base_rejected, batch["ref_rejected_logps"], atol=1e-4)
    with torch.no_grad():
        ids = batch["input_ids"][:1]
        assert not torch.allclose(trainer.model(input_ids=ids).logits, base(input_ids=ids).logits, atol=1e-5)
    del trainer

    dpo = train_phase("dpo", cfg, dpo_ds, tmp_path / "dpo", init_adapter=sft.adapter_dir)
    assert dpo.steps == 4 and "rewards/margins" in dpo.metrics
    assert (tmp_path / "dpo" / "adapter" / "adapter_model.safetensors").is_file()
    # A finished phase is not trained again.
    mtime = (tmp_path / "dpo" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
    again = train_phase("dpo", cfg, dpo_ds, tmp_path / "dpo", init_adapter=sft.adapter_dir)
    assert again.train_seconds == 0.0 and again.steps == 4
    assert (tmp_path / "dpo" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns == mtime


def test_a_phase_resumes_from_its_last_complete_checkpoint(tmp_path: Path) -> None:
    from transformers import TrainerCallback

    from prefloop.training.trainers import last_complete_checkpoint, train_phase

    class Crash(TrainerCallback):
        """Dies at step 5, after checkpoint 4 was saved (a kill during training)."""

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            if state.global_step == 5:
                raise KeyboardInterrupt("simulated crash")

    cfg = _cfg(sft={"max_steps": 6})
    sft_ds, _ = _datasets(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        train_phase("sft", cfg, sft_ds, tmp_path / "sft", callbacks=[Crash()])
    ckpts = tmp_path / "sft" / "checkpoints"
    assert last_complete_checkpoint(ckpts).name == "checkpoint-4"
    assert not (tmp_path / "sft" / "result.json").exists() and not (tmp_path / "sft" / "adapter").exists()
    resumed = train_phase("sft", cfg, sft_ds, tmp_path / "sft")
    assert resumed.resumed_from.endswith("checkpoint-4") and resumed.steps == 6
    state = json.loads((tmp_path / "sft" / "result.json").read_text())
    assert state["steps"] == 6 and (tmp_path / "sft" / "adapter" / "adapter_model.safetensors").is_file()
    assert not ckpts.exists()  # a finished phase keeps its adapter, not its optimizer checkpoints


def test_last_complete_checkpoint_skips_half_written_ones(tmp_path: Path) -> None:
    from prefloop.training.trainers import last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path / "missing") is None
    for n, state in ((2, {"global_step": 2}), (10, None), (7, "{broken")):
        d = tmp_path / f"checkpoint-{n}"
        d.mkdir()
        if isinstance(state, dict):
            (d / "trainer_state.json").write_text(json.dumps(state))
        elif isinstance(state, str):
            (d / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-x").mkdir()
    assert last_complete_checkpoint(tmp_path).name == "checkpoint-2"


def test_qlora_needs_cuda_and_says_so(tmp_path: Path) -> None:
    import torch

    from prefloop.errors import ConfigError
    from prefloop.training.trainers import load_base

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the QLoRA path would load")
    cfg = _cfg(model={"quantization": "4bit", "dtype": "bfloat16"})
    with pytest.raises(ConfigError, match="QLoRA needs a CUDA GPU|no CUDA GPU"):
        load_base(cfg, "cpu")


def test_an_adapter_of_another_shape_is_refused(tmp_path: Path) -> None:
    from prefloop.training.trainers import TrainingError, build_trainer, train_phase

    sft_ds, dpo_ds = _datasets(tmp_path)
    small = train_phase("sft", _cfg(lora={"r": 2, "alpha": 4}, sft={"max_steps": 1}), sft_ds, tmp_path / "small")
    with pytest.raises(TrainingError, match="does not fit the model"):
        build_trainer("dpo", _cfg(), dpo_ds, tmp_path / "dpo", init_adapter=Path(small.adapter_dir))
