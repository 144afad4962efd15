"""SFT and DPO with TRL and a PEFT LoRA adapter (QLoRA when the model is loaded in 4 bits).

One function, :func:`train_phase`, runs either phase so that both share the same guarantees:

- **continuation**: round N+1 starts from round N's adapter. The trainer is built with a fresh
  LoRA config on the *base* model and the previous adapter's weights are then loaded into it, so
  DPO's reference stays the base model with the adapter disabled (TRL's PEFT path: no second copy
  of the model in memory, and no drift of the reference from round to round);
- **resumability**: checkpoints every ``save_steps`` under ``<out>/checkpoints``; a killed run
  resumes from the last *complete* checkpoint (one whose ``trainer_state.json`` — written last —
  exists); a finished phase leaves ``<out>/adapter`` and ``<out>/result.json``, drops its
  checkpoints, and is never trained again;
- **CPU-safe settings**: TRL defaults to bf16 and gradient checkpointing; both are off on CPU.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from prefloop.atomic import atomic_dir, atomic_write_text
from prefloop.errors import ConfigError, PrefloopError

from .config import DPOSettings, SFTSettings, TrainingConfig
from .generation import model_load_error, resolve_device

Phase = Literal["sft", "dpo"]
RESULT = "result.json"
ADAPTER = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class TrainingError(PrefloopError):
    """Training could not run (bad data, an adapter that does not fit the model…)."""


@dataclass
class PhaseResult:
    phase: str
    adapter_dir: str
    steps: int
    examples: int
    train_seconds: float  # wall time of trainer.train() in this process (0 when already done)
    resumed_from: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # the last logged training metrics
    tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The highest ``checkpoint-N`` whose trainer state was written (it is saved last)."""
    if not folder.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for p in folder.iterdir():
        if not (p.is_dir() and p.name.startswith("checkpoint-") and p.name[11:].isdigit()):
            continue
        state = p / "trainer_state.json"
        try:
            json.loads(state.read_text())
        except (OSError, ValueError):
            continue  # killed while saving: not usable
        step = int(p.name[11:])
        if best is None or step > best[0]:
            best = (step, p)
    return best[1] if best else None


def lora_config(cfg: TrainingConfig) -> Any:
    from peft import LoraConfig

    lc = cfg.lora
    return LoraConfig(
        r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules=lc.target_modules,
        bias="none", task_type="CAUSAL_LM",
    )


def _common_args(cfg: TrainingConfig, s: SFTSettings | DPOSettings, out: Path, device: str, n_rows: int) -> dict[str, Any]:
    t = cfg.trainer
    cuda = device == "cuda"
    gc = t.gradient_checkpointing if t.gradient_checkpointing is not None else cuda
    args: dict[str, Any] = {
        "output_dir": str(out / "checkpoints"),
        "per_device_train_batch_size": s.batch_size,
        "gradient_accumulation_steps": s.grad_accum,
        "learning_rate": s.learning_rate,
        "lr_scheduler_type": s.lr_scheduler,
        "warmup_steps": s.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        "num_train_epochs": s.epochs,
        "max_steps": s.max_steps if s.max_steps is not None else -1,
        "max_length": s.max_length,
        "logging_steps": t.logging_steps,
        "save_strategy": "steps",
        "save_steps": t.save_steps,
        "save_total_limit": t.save_total_limit,
        "seed": t.seed,
        "data_seed": t.seed,
        "report_to": "none",  # prefloop's own callback logs to the round's wandb run
        # bf16 only on CUDA (TRL's default of bf16=True fails or crawls on CPU); QLoRA computes in bf16.
        "bf16": cuda and (cfg.model.dtype == "bfloat16" or (cfg.model.quantization is not None and cfg.model.dtype != "float16")),
        "fp16": cuda and cfg.model.dtype == "float16",
        "use_cpu": not cuda,
        "gradient_checkpointing": gc,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": cuda,
        "disable_tqdm": False,
        "save_only_model": False,
    }
    if gc:
        args["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    return args


def planned_steps(s: SFTSettings | DPOSettings, n_rows: int) -> int:
    """Optimizer steps a phase will take on ``n_rows`` examples."""
    if s.max_steps is not None:
        return s.max_steps
    batches = math.ceil(n_rows / s.batch_size)
    return max(1, math.ceil(batches * s.epochs / s.grad_accum)) if n_rows else 0


def load_base(cfg: TrainingConfig, device: str) -> Any:
    """The base model for training; a quantized one is prepared for k-bit training (QLoRA)."""
    from .models import load_causal_lm

    if cfg.model.quantization is not None:
        if device != "cuda":
            raise ConfigError(
                f"training.model.quantization is {cfg.model.quantization} but there is no CUDA GPU",
                hint="QLoRA needs a CUDA GPU: use the offline-cpu or smollm2-135m preset on CPU",
            )
        from peft import prepare_model_for_kbit_training

        model = load_causal_lm(cfg.model.source, dtype=cfg.model.dtype, quantization=cfg.model.quantization, device="cuda:0")
        gc = cfg.trainer.gradient_checkpointing if cfg.trainer.gradient_checkpointing is not None else True
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc)
    try:
        return load_causal_lm(cfg.model.source, dtype=cfg.model.dtype, device=device)
    except OSError as exc:
        raise model_load_error(cfg.model.source, exc) from None


def load_adapter_weights(model: Any, adapter_dir: Path) -> None:
    """Copy a saved LoRA adapter's weights into the trainer's (same config) adapter."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    hint = "the previous round was trained with another model or LoRA config; keep them equal, or start a new project"
    weights = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    try:
        result = set_peft_model_state_dict(model, weights)
    except RuntimeError as exc:  # shape mismatch (another rank or model)
        first = str(exc).strip().splitlines()[-1][:200]
        raise TrainingError(f"adapter {adapter_dir} does not fit the model: {first}", hint=hint) from None
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise TrainingError(
            f"adapter {adapter_dir} does not fit the model: {len(unexpected)} unexpected weights (e.g. {unexpected[0]})", hint=hint,
        )


def _skip_final_checkpoint() -> Any:
    """A callback that cancels the checkpoint transformers writes after the last step: the phase
    saves its adapter itself, and a checkpoint of a finished phase is dead weight (time and disk)."""
    from transformers import TrainerCallback

    class SkipFinalCheckpoint(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            if state.max_steps and state.global_step >= state.max_steps:
                control.should_save = False
            return control

    return SkipFinalCheckpoint()


def build_trainer(
    phase: Phase,
    cfg: TrainingConfig,
    dataset: Any,
    out: Path,
    *,
    init_adapter: Path | None = None,
    callbacks: list[Any] | None = None,
    model: Any = None,
    tokenizer: Any = None,
) -> Any:
    """A ready-to-train TRL trainer for ``phase`` (the model is loaded unless given)."""
    from .models import load_tokenizer

    device = resolve_device(cfg.model)
    s = cfg.sft if phase == "sft" else cfg.dpo
    tok = tokenizer if tokenizer is not None else load_tokenizer(cfg.model.source)
    tok.padding_side = "right"
    base = model if model is not None else load_base(cfg, device)
    args = _common_args(cfg, s, out, device, len(dataset))
    callbacks = [*(callbacks or []), _skip_final_checkpoint()]
    if phase == "sft":
        from trl import SFTConfig, SFTTrainer

        train = dataset.select_columns(["messages"])
        trainer = SFTTrainer(
            model=base, args=SFTConfig(**args), train_dataset=train, processing_class=tok,
            peft_config=lora_config(cfg), callbacks=callbacks,
        )
    else:
        from trl import DPOConfig, DPOTrainer

        d = cfg.dpo
        train = dataset.select_columns(["prompt", "chosen", "rejected"])
        dpo_args = DPOConfig(
            **args, beta=d.beta, loss_type=list(d.loss_type), loss_weights=d.loss_weights,
            precompute_ref_log_probs=d.precompute_ref_log_probs,
        )
        # ref_model=None + peft_config: the reference is the base model with the adapter disabled.
        trainer = DPOTrainer(
            model=base, ref_model=None, args=dpo_args, train_dataset=train, processing_class=tok,
            peft_config=lora_config(cfg), callbacks=callbacks,
        )
    if init_adapter is not None:
        load_adapter_weights(trainer.model, init_adapter)
    return trainer


def train_phase(
    phase: Phase,
    cfg: TrainingConfig,
    dataset: Any,
    out: str | Path,
    *,
    init_adapter: str | Path | None = None,
    callbacks: list[Any] | None = None,
) -> PhaseResult:
    """Train (or resume, or skip when finished) one phase; the adapter ends in ``<out>/adapter``."""
    out = Path(out)
    done = out / RESULT
    if done.is_file() and (out / ADAPTER / ADAPTER_WEIGHTS).is_file():
        data = json.loads(done.read_text())
        data["train_seconds"] = 0.0
        return PhaseResult(**data)
    if len(dataset) == 0:
        raise TrainingError(f"{phase}: the dataset is empty", hint="label more tasks, or lower aggregation.min_confidence")
    out.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(phase, cfg, dataset, out, init_adapter=Path(init_adapter) if init_adapter else None, callbacks=callbacks)
    resume = last_complete_checkpoint(out / "checkpoints")
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - start
    logs = [h for h in trainer.state.log_history if "loss" in h]
    last = {k: float(v) for k, v in (logs[-1] if logs else {}).items() if isinstance(v, (int, float))}
    tokens = int(getattr(trainer.state, "num_input_tokens_seen", 0) or last.get("num_tokens", 0))
    with atomic_dir(out / ADAPTER) as tmp:
        trainer.model.save_pretrained(str(tmp))
    result = PhaseResult(
        phase=phase, adapter_dir=str(out / ADAPTER), steps=int(trainer.state.global_step), examples=len(dataset),
        train_seconds=seconds, resumed_from=str(resume) if resume else None, metrics=last, tokens=tokens,
    )
    atomic_write_text(done, json.dumps(result.to_json(), indent=2))
    del trainer
    # The phase is finished: its checkpoints (optimizer state, tens of MB each) are no longer needed.
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return result
