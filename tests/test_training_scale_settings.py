"""Scale-out settings without a GPU: the accelerate presets validate against accelerate's own schema,
each GPU-only knob is refused with one line or falls back with a recorded note, the GPU presets
load, vLLM's adapter parameters, and `accelerate launch -m prefloop …` leaving one rank to drive."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prefloop.errors import ConfigError
from prefloop.training.distributed import ACCELERATE_PRESETS

needs_no_cuda = pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="this machine has CUDA: the GPU-only settings would be accepted",
)


def _cfg(**patch):  # noqa: ANN003, ANN202
    from roundkit import deep_merge

    from prefloop.training.config import TrainingConfig

    base = {"model": {"source": "tiny:llama-tiny", "device": "cpu"}, "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "sft": {"learning_rate": 5e-3, "max_steps": 2, "batch_size": 2, "max_length": 64}}
    return TrainingConfig.model_validate(deep_merge(base, patch))


# ---------------------------------------------------------------------------- accelerate configs
@pytest.mark.parametrize("name", sorted(ACCELERATE_PRESETS))
def test_accelerate_presets_name_only_keys_accelerate_supports(name: str) -> None:
    from accelerate.commands.config.config_args import ClusterConfig

    from prefloop.training.distributed import accelerate_config_file, load_accelerate_config

    path = accelerate_config_file(name)
    raw = yaml.safe_load(path.read_text())
    assert set(raw) <= set(ClusterConfig.__dataclass_fields__), set(raw) - set(ClusterConfig.__dataclass_fields__)
    config = load_accelerate_config(path)
    assert config.num_machines == 1 and not config.use_cpu
    expected = {"ddp": "MULTI_GPU", "deepspeed-zero2": "DEEPSPEED", "deepspeed-zero3": "DEEPSPEED", "fsdp": "FSDP"}[name]
    assert config.distributed_type.value == expected
    if name.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == int(name[-1])


@pytest.mark.parametrize(("patch", "needle"), [
    ({"num_machine": 1}, "unknown keys (['num_machine'])"),  # a typo at the top level
    ({"deepspeed_config": {"zero_stag": 2}}, "unknown key deepspeed_config.zero_stag"),  # accelerate would ignore it
    ({"fsdp_config": {"fsdp_auto_wrap_polcy": "TRANSFORMER_BASED_WRAP"}}, "unknown key fsdp_config.fsdp_auto_wrap_polcy"),
])
def test_a_misspelt_accelerate_key_is_refused(tmp_path: Path, patch: dict, needle: str) -> None:
    from prefloop.training.distributed import accelerate_config_file, load_accelerate_config

    base = yaml.safe_load(accelerate_config_file("deepspeed-zero2").read_text())
    path = tmp_path / "accel.yaml"
    path.write_text(yaml.safe_dump({**base, **patch}))
    with pytest.raises(ConfigError) as err:
        load_accelerate_config(path)
    assert needle in err.value.message and "\n" not in err.value.message


def test_accelerate_config_names_a_preset_or_a_file(tmp_path: Path) -> None:
    from prefloop.training.distributed import accelerate_config_file

    assert accelerate_config_file(None) is None
    with pytest.raises(ConfigError, match="neither a preset nor a file") as err:
        accelerate_config_file("zero2")
    assert "deepspeed-zero2" in err.value.hint
    (tmp_path / "mine.yaml").write_text("distributed_type: MULTI_GPU\n")
    assert accelerate_config_file("mine.yaml", tmp_path) == tmp_path / "mine.yaml"


@needs_no_cuda
@pytest.mark.parametrize("preset", ["deepspeed-zero2", "deepspeed-zero3", "fsdp"])
def test_sharded_launches_need_cuda(preset: str) -> None:
    from prefloop.training.distributed import accelerate_config_file, check_launch

    cfg = _cfg(trainer={"num_processes": 2, "accelerate_config": preset})
    with pytest.raises(ConfigError, match="needs CUDA GPUs"):
        check_launch(cfg, accelerate_config_file(preset), cuda=False)
    check_launch(_cfg(trainer={"accelerate_config": "ddp"}), accelerate_config_file("ddp"), cuda=False)  # DDP runs on gloo


# ---------------------------------------------------------------------------- GPU knobs on CPU
@needs_no_cuda
@pytest.mark.parametrize(("patch", "needle"), [
    ({"trainer": {"liger_kernel": True}}, "training.trainer.liger_kernel needs a CUDA GPU"),
    ({"model": {"attn_implementation": "flash_attention_2"}}, "flash_attention_2 needs a CUDA GPU"),
    ({"model": {"attn_implementation": "flash_attention_3"}}, "flash_attention_3 needs a CUDA GPU"),
    ({"model": {"attn_implementation": "flex_attention"}}, "flex_attention needs a CUDA GPU"),
])
def test_cuda_only_kernels_are_refused_on_cpu_with_one_line(patch: dict, needle: str) -> None:
    from prefloop.training.trainers import resolve_throughput

    with pytest.raises(ConfigError) as err:
        resolve_throughput(_cfg(**patch), "cpu")
    assert needle in err.value.message and "\n" not in err.value.message and err.value.hint


@needs_no_cuda
def test_cpu_fallbacks_are_recorded() -> None:
    from prefloop.training.trainers import resolve_throughput

    plain = resolve_throughput(_cfg(), "cpu")
    assert (plain.dtype, plain.bf16, plain.fp16, plain.gradient_checkpointing, plain.notes) == ("float32", False, False, False, ())
    bf16 = resolve_throughput(_cfg(model={"dtype": "bfloat16"}, trainer={"gradient_checkpointing": True}), "cpu")
    assert bf16.dtype == "float32" and not bf16.bf16 and bf16.gradient_checkpointing  # asked-for checkpointing stays
    assert any("training runs in float32" in n for n in bf16.notes)
    packed = resolve_throughput(_cfg(sft={"packing": True}), "cpu")
    assert packed.packing and any("sft.packing on CPU" in n for n in packed.notes)
    assert not resolve_throughput(_cfg(sft={"packing": True}), "cpu", "dpo").packing  # packing is SFT's


def test_packing_on_cuda_picks_a_packed_attention_kernel() -> None:
    """Decided from the config alone (no GPU touched): unset attention + packing → a varlen/block-sparse kernel."""
    from prefloop.training.trainers import resolve_throughput

    plan = resolve_throughput(_cfg(sft={"packing": True}, model={"dtype": "bfloat16"}), "cuda")
    assert plan.attn_implementation in ("flash_attention_2", "flex_attention") and plan.bf16
    assert any("attention kernel" in n for n in plan.notes)
    sdpa = resolve_throughput(_cfg(sft={"packing": True}, model={"attn_implementation": "sdpa"}), "cuda")
    assert sdpa.attn_implementation == "sdpa" and any("dense block-diagonal mask" in n for n in sdpa.notes)
    assert resolve_throughput(_cfg(sft={"packing": True}), "cuda", "dpo").attn_implementation is None


@pytest.mark.parametrize(("training", "needle"), [
    ({"trainer": {"num_processes": 0}}, "training.trainer.num_processes"),
    ({"trainer": {"liger_kernels": True}}, "did you mean 'liger_kernel'"),
    ({"model": {"attn_implementation": "flash"}}, "training.model.attn_implementation"),
    ({"sft": {"packng": True}}, "did you mean 'packing'"),
    ({"dpo": {"precompute_ref_batch_size": 0}}, "training.dpo.precompute_ref_batch_size"),
])
def test_scale_settings_are_validated(training: dict, needle: str) -> None:
    from prefloop.config import parse_config

    with pytest.raises(ConfigError) as err:
        parse_config({"training": training}, "prefloop.yaml")
    assert needle in err.value.message


def test_gpu_presets_turn_the_throughput_settings_on() -> None:
    from prefloop.config import PRESETS, load_preset

    assert "qwen2.5-0.5b-lora-bf16" in PRESETS
    for name in ("qwen2.5-0.5b-lora-bf16", "qwen2.5-0.5b-qlora"):
        t = load_preset(name).training
        assert (t.model.dtype, t.model.device, t.generation.backend) == ("bfloat16", "cuda", "auto"), name
        assert t.sft.packing and t.trainer.liger_kernel and t.dpo.precompute_ref_log_probs, name
    bf16, qlora = load_preset("qwen2.5-0.5b-lora-bf16").training, load_preset("qwen2.5-0.5b-qlora").training
    assert bf16.model.quantization is None and bf16.trainer.gradient_checkpointing is False
    assert qlora.model.quantization == "4bit" and qlora.trainer.gradient_checkpointing is True


@needs_no_cuda
@pytest.mark.slow
def test_packing_and_bf16_train_on_cpu_with_their_notes(tmp_path: Path) -> None:
    import torch
    from datasets import Dataset

    from prefloop.training.trainers import build_trainer, train_phase

    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                          {"role": "assistant", "content": "An answer. " * (1 + i % 5)}], "source": "human"} for i in range(8)]
    ds = Dataset.from_list(rows)
    cfg = _cfg(sft={"packing": True}, model={"dtype": "bfloat16"})
    trainer = build_trainer("sft", cfg, ds, tmp_path / "probe")
    assert trainer.args.packing and trainer.args.padding_free is False and trainer.padding_free  # BFD → padding-free
    assert next(trainer.model.parameters()).dtype == torch.float32 and not trainer.args.bf16
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch  # one flattened row, no padding
    del trainer
    result = train_phase("sft", cfg, ds, tmp_path / "sft")
    assert result.steps == 2 and torch.isfinite(torch.tensor(result.metrics["loss"]))
    assert any("sft.packing on CPU" in n for n in result.notes) and any("float32" in n for n in result.notes)


# ---------------------------------------------------------------------------- vLLM
def test_vllm_adapter_parameters(tmp_path: Path) -> None:
    import json

    from prefloop.training.generation import vllm_lora

    def adapter(name: str, r: int, weights: bytes) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "adapter_config.json").write_text(json.dumps({"r": r}))
        (d / "adapter_model.safetensors").write_bytes(weights)
        return d

    a, b = vllm_lora(adapter("a", 4, b"round-1")), vllm_lora(adapter("b", 12, b"round-2"))
    assert (a["max_lora_rank"], b["max_lora_rank"]) == (8, 16)  # vLLM takes 8, 16, 32, … only
    assert a["name"] != b["name"] and a["id"] != b["id"] and min(a["id"], b["id"]) > 0  # vLLM caches adapters by name
    assert vllm_lora(adapter("a2", 4, b"round-1"))["name"] == a["name"]  # same weights, same adapter
    with pytest.raises(ConfigError, match="above vLLM's largest"):
        vllm_lora(adapter("huge", 1024, b"x"))


@needs_no_cuda
def test_evaluation_sampling_takes_the_generation_backend() -> None:
    from prefloop.training.config import GenerationSettings
    from prefloop.training.generation import Sampling

    g = GenerationSettings(backend="transformers")
    assert Sampling.from_settings(g, n=1, temperature=0.0, max_new_tokens=8, seed=7919).backend == "transformers"
    with pytest.raises(ConfigError, match="vllm"):  # evaluation asks for vLLM exactly like generation does
        Sampling.from_settings(GenerationSettings(backend="vllm"), n=1, temperature=0.0, seed=7919)


# ---------------------------------------------------------------------------- accelerate launch -m prefloop
def test_launcher_ranks_leave_and_rank_0_drives(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefloop.training import distributed as d

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    said: list[str] = []
    with pytest.raises(SystemExit) as leave:
        d.guard_launched_cli(said.append)
    assert leave.value.code == 0 and "rank 3" in said[0]
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.delenv(d.LAUNCHED_PROCESSES, raising=False)
    d.guard_launched_cli(said.append)
    assert not d.launched() and "MASTER_PORT" not in os.environ and "RANK" not in os.environ
    assert d.planned_processes(_cfg()) == 4  # the launcher's count wins over trainer.num_processes
    monkeypatch.delenv(d.LAUNCHED_PROCESSES)
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match="several machines"):
        d.guard_launched_cli(said.append)


@pytest.mark.slow
def test_accelerate_launch_of_the_cli_runs_it_once(tmp_path: Path) -> None:
    """The real launcher, 2 CPU processes: rank 1 leaves, rank 0 runs the command once."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    out = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1", "--multi_gpu",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0", "-m", "prefloop", "--help"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    both = out.stdout + out.stderr
    assert both.count("Turn human and LLM-judge feedback") == 1, both[-3000:]
    assert "rank 1: prefloop runs the round on rank 0" in both
