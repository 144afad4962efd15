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
- **CPU-safe settings**: TRL defaults to bf16 and gradient checkpointing; both are off on CPU. The
  GPU throughput settings (bf16, Liger kernels, flash/flex attention, packing) resolve through
  :func:`resolve_throughput`: refused on CPU with a one-line error, or a fallback that is logged and
  recorded in the phase's result — never silently ignored;
- **what SFT learns**: with ``sft.loss: completion`` (the default) the loss is on the reply only —
  prompt/completion rows and TRL's ``completion_only_loss``, which needs no ``{% generation %}``
  markers in the chat template (SmolLM2's and Qwen's have none); ``all`` trains every token;
- **several processes**: under ``accelerate launch`` (see :mod:`prefloop.training.distributed`)
  every rank trains and only the main process writes the adapter and ``result.json``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from prefloop.atomic import atomic_dir, atomic_write_text
from prefloop.errors import ConfigError, PrefloopError
from prefloop.text import finite_or_none

from .config import DPOSettings, SFTSettings, TrainingConfig
from .generation import model_load_error, resolve_device

logger = logging.getLogger("prefloop.training")
#: the trainer's logs (loss, learning rate, …) one line per logging step: the round's train.log, not the terminal.
trainer_log = logging.getLogger("prefloop.trainer")

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
    metrics: dict[str, float | None] = field(default_factory=dict)  # the last logged training metrics
    tokens: int = 0
    processes: int = 1  # training processes (accelerate world size)
    notes: list[str] = field(default_factory=list)  # settings that fell back on this machine

    def to_json(self) -> dict[str, Any]:
        """As stored in round metrics: a metric TRL logged as NaN/inf (a diverged loss) becomes None."""
        return finite_or_none(asdict(self))


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


@dataclass(frozen=True)
class Throughput:
    """What the speed-oriented settings resolve to on this machine."""

    dtype: str
    bf16: bool
    fp16: bool
    gradient_checkpointing: bool
    attn_implementation: str | None
    liger_kernel: bool
    packing: bool
    notes: tuple[str, ...] = ()


def resolve_throughput(cfg: TrainingConfig, device: str, phase: Phase = "sft") -> Throughput:
    """The GPU settings for ``device``: CUDA-only kernels are refused without CUDA (a one-line
    :class:`ConfigError`); mixed precision on CPU falls back to float32 and says so in ``notes``."""
    m, t = cfg.model, cfg.trainer
    cuda = device.startswith("cuda")
    notes: list[str] = []
    if t.liger_kernel:
        if not cuda:
            raise ConfigError("training.trainer.liger_kernel needs a CUDA GPU (Liger's kernels are Triton GPU kernels)",
                              hint="set liger_kernel: false on a CPU machine")
        if importlib.util.find_spec("liger_kernel") is None:
            raise ConfigError("training.trainer.liger_kernel is on but liger-kernel is not installed", hint="pip install liger-kernel")
    attn = m.attn_implementation
    if attn in ("flash_attention_2", "flash_attention_3"):
        if not cuda:
            raise ConfigError(f"training.model.attn_implementation {attn} needs a CUDA GPU", hint="leave it unset (sdpa) on CPU")
        package = "flash_attn" if attn == "flash_attention_2" else "flash_attn_interface"
        if importlib.util.find_spec(package) is None:
            raise ConfigError(f"training.model.attn_implementation {attn} needs the {package} package",
                              hint="install flash-attn for your CUDA, or use flex_attention or sdpa")
    if attn == "flex_attention" and not cuda:
        raise ConfigError("training.model.attn_implementation flex_attention needs a CUDA GPU to train "
                          "(PyTorch's FlexAttention has no backward pass on CPU)", hint="leave it unset (sdpa) on CPU")
    dtype = m.dtype
    if not cuda and dtype != "float32":
        notes.append(f"training.model.dtype is {dtype} but there is no CUDA GPU: training runs in float32 "
                     "(bf16/fp16 mixed precision needs CUDA)")
        dtype = "float32"
    packing = phase == "sft" and cfg.sft.packing
    if packing and cuda and attn is None:
        # A packed batch is one long sequence: a varlen or block-sparse kernel keeps attention per conversation.
        attn = "flash_attention_2" if importlib.util.find_spec("flash_attn") is not None else "flex_attention"
        notes.append(f"sft.packing: attention kernel {attn} (training.model.attn_implementation was unset)")
    elif packing and attn in (None, "sdpa", "eager"):
        notes.append(
            f"sft.packing with {attn} attention: a packed batch is one sequence under a dense block-diagonal mask "
            "(correct, but attention work grows with the square of the batch); use flash_attention_2 or flex_attention"
            if cuda else "sft.packing on CPU: correct (block-diagonal masks), no speed-up expected"
        )
    return Throughput(
        dtype=dtype,
        # QLoRA computes in bf16 unless fp16 was asked for.
        bf16=cuda and (dtype == "bfloat16" or (m.quantization is not None and dtype != "float16")),
        fp16=cuda and dtype == "float16",
        gradient_checkpointing=t.gradient_checkpointing if t.gradient_checkpointing is not None else cuda,
        attn_implementation=attn,
        liger_kernel=t.liger_kernel,
        packing=packing,
        notes=tuple(notes),
    )


def _common_args(cfg: TrainingConfig, s: SFTSettings | DPOSettings, out: Path, device: str, plan: Throughput) -> dict[str, Any]:
    t = cfg.trainer
    cuda = device.startswith("cuda")
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
        # bf16 only on CUDA (TRL's default of bf16=True fails or crawls on CPU).
        "bf16": plan.bf16,
        "fp16": plan.fp16,
        "use_cpu": not cuda,
        "gradient_checkpointing": plan.gradient_checkpointing,
        "use_liger_kernel": plan.liger_kernel,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": cuda,
        "disable_tqdm": True,  # prefloop's bar instead (rounds/progress.py); the logs go to the round's train.log
        "save_only_model": False,
        # LoRA leaves most parameters frozen: DDP must not wait for their gradients.
        "ddp_find_unused_parameters": False,
    }
    if plan.gradient_checkpointing:
        args["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    return args


def load_base(cfg: TrainingConfig, device: str, plan: Throughput | None = None) -> Any:
    """The base model for training; a quantized one is prepared for k-bit training (QLoRA)."""
    from .distributed import local_device
    from .loading import load_causal_lm

    plan = plan or resolve_throughput(cfg, device)
    if cfg.model.quantization is not None:
        if device != "cuda":
            raise ConfigError(
                f"training.model.quantization is {cfg.model.quantization} but there is no CUDA GPU",
                hint="QLoRA needs a CUDA GPU: use the offline-cpu or smollm2-135m preset on CPU",
            )
        from peft import prepare_model_for_kbit_training

        model = load_causal_lm(cfg.model.source, dtype=plan.dtype, quantization=cfg.model.quantization,
                               device=local_device("cuda"), attn_implementation=plan.attn_implementation)
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=plan.gradient_checkpointing)
    try:
        # Each rank of a multi-process run loads onto its own GPU.
        return load_causal_lm(cfg.model.source, dtype=plan.dtype, device=local_device(device),
                              attn_implementation=plan.attn_implementation)
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


def sft_rows(dataset: Any, loss: str) -> Any:
    """The columns SFTTrainer trains on: ``prompt``/``completion`` (the loss then follows ``loss``), or
    an older ``messages`` dataset — split into prompt and reply when only the reply may carry loss."""
    from prefloop.feedback.export import messages_as_prompt_completion

    columns = set(dataset.column_names)
    if {"prompt", "completion"} <= columns:
        return dataset.select_columns(["prompt", "completion"])
    if "messages" in columns:
        rows = dataset.select_columns(["messages"])
        return messages_as_prompt_completion(rows) if loss == "completion" else rows
    raise TrainingError(f"sft: the dataset has neither prompt/completion nor messages columns ({', '.join(sorted(columns))})",
                        hint="build it with prefloop export sft")


def _log_lines(phase: str) -> Any:
    """Instead of transformers' PrinterCallback (``print(logs)`` on stdout): one log line per logging step."""
    from transformers import TrainerCallback

    class LogLines(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
            if logs and state.is_local_process_zero:
                shown = {k: v for k, v in logs.items() if k != "total_flos"}
                trainer_log.info("%s step %d/%d: %s", phase, state.global_step, state.max_steps, json.dumps(shown, default=str))

    return LogLines()


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
    from .loading import load_tokenizer

    device = resolve_device(cfg.model)
    s = cfg.sft if phase == "sft" else cfg.dpo
    plan = resolve_throughput(cfg, device, phase)
    from .distributed import is_main_process

    if is_main_process():
        for note in plan.notes:
            logger.warning("%s: %s", phase, note)
    tok = tokenizer if tokenizer is not None else load_tokenizer(cfg.model.source)
    tok.padding_side = "right"
    base = model if model is not None else load_base(cfg, device, plan)
    args = _common_args(cfg, s, out, device, plan)
    callbacks = [*(callbacks or []), _skip_final_checkpoint()]
    trainer: Any  # TRL's SFTTrainer or DPOTrainer, which also carries prefloop_notes (see train_phase)
    if phase == "sft":
        from trl import SFTConfig, SFTTrainer

        train = sft_rows(dataset, cfg.sft.loss)
        args["completion_only_loss"] = cfg.sft.loss == "completion"
        if plan.packing:
            # Best-fit-decreasing packing implies padding-free batches with per-conversation positions.
            args.update(packing=True, packing_strategy="bfd")
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
            precompute_ref_log_probs=d.precompute_ref_log_probs, precompute_ref_batch_size=d.precompute_ref_batch_size,
        )
        # ref_model=None + peft_config: the reference is the base model with the adapter disabled.
        trainer = DPOTrainer(
            model=base, ref_model=None, args=dpo_args, train_dataset=train, processing_class=tok,
            peft_config=lora_config(cfg), callbacks=callbacks,
        )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)
    trainer.add_callback(_log_lines(phase))
    if init_adapter is not None:
        load_adapter_weights(trainer.model, init_adapter)
    trainer.prefloop_notes = list(plan.notes)
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
    acc = trainer.accelerator
    logs = [h for h in trainer.state.log_history if "loss" in h]
    last = {k: float(v) for k, v in (logs[-1] if logs else {}).items() if isinstance(v, (int, float))}
    tokens = int(getattr(trainer.state, "num_input_tokens_seen", 0) or last.get("num_tokens", 0))
    # Collective under DeepSpeed ZeRO-3 / FSDP (every rank takes part); the main process writes.
    state = acc.get_state_dict(trainer.model_wrapped)
    result = PhaseResult(
        phase=phase, adapter_dir=str(out / ADAPTER), steps=int(trainer.state.global_step), examples=len(dataset),
        train_seconds=seconds, resumed_from=str(resume) if resume else None, metrics=dict(last), tokens=tokens,
        processes=acc.num_processes, notes=list(getattr(trainer, "prefloop_notes", [])),
    )
    if acc.is_main_process:
        with atomic_dir(out / ADAPTER) as tmp:
            trainer.model.save_pretrained(str(tmp), state_dict=state)
        atomic_write_text(done, json.dumps(result.to_json(), indent=2))
    acc.wait_for_everyone()  # no rank returns before the adapter is there
    del trainer, state
    if acc.is_main_process:
        # The phase is finished: its checkpoints (optimizer state, tens of MB each) are no longer needed.
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return result
