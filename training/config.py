"""Config section owned by ``prefloop.training``: the policy model, LoRA, generation, pairing,
SFT, DPO, the round's human wait, evaluation and wandb.

Defaults are the safe, portable choice (fp32, LoRA, no gradient checkpointing on CPU); the presets
in ``prefloop/configs`` pick sizes for a 2-core CPU, the hub model, or a CUDA GPU with QLoRA.
No secret is ever a config key: wandb reads ``WANDB_API_KEY`` from the environment.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from prefloop.strict import StrictModel
from prefloop.training.loading import SMOLLM2_HUB

#: loss types DPOTrainer (TRL 1.16) accepts; several are combined with ``loss_weights``.
DPO_LOSSES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)
Source = Literal["human", "judge", "mixed"]


class ModelSettings(StrictModel):
    #: hub name, local folder, ``offline:smollm2-135m-instruct`` (the packaged SmolLM2) or ``tiny:NAME``.
    source: str = SMOLLM2_HUB
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    #: ``4bit`` (QLoRA, NF4) or ``8bit`` through bitsandbytes; needs a CUDA GPU.
    quantization: Literal["4bit", "8bit"] | None = None
    #: ``auto``: CUDA when present, else CPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: attention kernels for training; null = transformers' default (sdpa), except for SFT packing on
    #: CUDA, which takes flash_attention_2 when flash-attn is installed, else flex_attention (logged).
    #: ``flash_attention_2``/``_3`` need CUDA and flash-attn, ``flex_attention`` CUDA (refused otherwise).
    attn_implementation: Literal["sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3"] | None = None


class LoraSettings(StrictModel):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    #: module names, or ``all-linear``.
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class GenerationSettings(StrictModel):
    """How the policy samples candidates each round (recorded on every generation)."""

    candidates: int = Field(4, ge=1, le=64, description="samples per prompt")
    #: train prompts sampled per round (a different sample each round); null = all of them.
    prompts_per_round: int | None = Field(None, ge=1)
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.8, ge=0, description="0 = greedy")
    top_p: float = Field(0.95, gt=0, le=1)
    #: sample among the k likeliest tokens before top-p (null: top-p alone, slower over a large vocabulary).
    top_k: int | None = Field(50, ge=1)
    batch_size: int = Field(16, ge=1, description="sequences per generate call")
    #: ``auto``: vLLM when it is installed and a CUDA GPU is present, transformers otherwise.
    backend: Literal["auto", "transformers", "vllm"] = "auto"
    seed: int = 0


class PairingSettings(StrictModel):
    """Which tasks a round's candidates become."""

    #: ``all_pairs``: compare tasks for pairs of candidates (up to ``max_pairs_per_prompt``);
    #: ``best_vs_worst``: rate every candidate with a pointwise judge, then compare the best with the worst.
    strategy: Literal["all_pairs", "best_vs_worst"] = "all_pairs"
    max_pairs_per_prompt: int = Field(3, ge=1)
    #: best_vs_worst: the pointwise judge (a name in judges.panel); default: the first judge that scores.
    scorer: str | None = None
    #: distinct humans per compare task; null = queue.overlap (0 = judges only).
    overlap: int | None = Field(None, ge=0)
    #: also ask humans to rate each candidate (rate tasks).
    rate_tasks: bool = False
    #: ask humans to correct this many candidates per prompt (edit tasks → SFT targets).
    edit_tasks_per_prompt: int = Field(0, ge=0)
    #: base priority of edit tasks (compare/rate tasks get theirs from active selection).
    edit_priority: float = 1.0


class HumanWaitSettings(StrictModel):
    """The round's optional pause for human labels (builtin queue or Argilla)."""

    enabled: bool = False
    #: human labels each waited-for task needs; null = the task's overlap.
    labels_per_task: int | None = Field(None, ge=1)
    #: the human budget: wait until N tasks have their labels (served by priority, which moves as labels arrive); null = all.
    max_tasks: int | None = Field(None, ge=1)
    #: stop waiting after this long; null = wait until done.
    deadline_minutes: float | None = Field(None, gt=0)
    poll_seconds: float = Field(5.0, gt=0)
    #: when the wait ends, take the round's tasks that no human labelled off the queue.
    cancel_unlabelled: bool = True


class _PhaseSettings(StrictModel):
    enabled: bool = True
    learning_rate: float = Field(2e-4, gt=0)
    epochs: float = Field(1.0, gt=0)
    #: overrides ``epochs`` when set.
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(512, ge=16)
    #: train only on labels from these sources; null = all.
    sources: list[Source] | None = None
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    lr_scheduler: Literal["linear", "constant", "cosine"] = "linear"


class SFTSettings(_PhaseSettings):
    #: skip SFT when the round has fewer targets than this.
    min_examples: int = Field(1, ge=1)
    #: ``completion``: the loss is on the reply only (the policy learns its replies, not the prompts;
    #: TRL's completion-only loss on prompt/completion rows). ``all``: on every token, system and user turns too.
    loss: Literal["completion", "all"] = "completion"
    #: padding-free packing (TRL's best-fit-decreasing packing into ``max_length`` blocks, each
    #: conversation keeping its own positions and attention): no compute on padding. Correct on any
    #: attention kernel; fast with flash_attention_2/3 or flex_attention. On CPU it trains (logged: no
    #: speed-up expected there).
    packing: bool = False


class DPOSettings(_PhaseSettings):
    learning_rate: float = Field(5e-5, gt=0)
    beta: float = Field(0.1, gt=0)
    #: one loss or several combined (e.g. ``[sigmoid, sft]``, RPO-style).
    loss_type: list[str] = ["sigmoid"]
    loss_weights: list[float] | None = None
    #: compute the reference log-probs once before training (saves a forward per step).
    precompute_ref_log_probs: bool = False
    #: batch size of that precomputation (no gradients: it can be larger); null = ``batch_size``.
    precompute_ref_batch_size: int | None = Field(None, ge=1)
    #: skip DPO when the round has fewer pairs than this.
    min_pairs: int = Field(1, ge=1)

    @field_validator("loss_type", mode="before")
    @classmethod
    def _listify(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    @field_validator("loss_type")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("loss_type needs at least one loss")
        bad = [x for x in v if x not in DPO_LOSSES]
        if bad:
            raise ValueError(f"unknown DPO loss {bad}; choose from {', '.join(DPO_LOSSES)}")
        return v

    @model_validator(mode="after")
    def _weights(self) -> DPOSettings:
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(f"loss_weights has {len(self.loss_weights)} values for {len(self.loss_type)} loss types")
        return self


class TrainerSettings(StrictModel):
    #: checkpoint every N steps (a killed round resumes from the last one).
    save_steps: int = Field(10, ge=1)
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(1, ge=1)
    seed: int = 0
    #: null: on with CUDA, off on CPU (it only slows small models down there). Non-reentrant
    #: (``use_reentrant=False``), which works with LoRA and DDP.
    gradient_checkpointing: bool | None = None
    #: training processes (Hugging Face accelerate; gloo on CPU, NCCL on GPUs). With N > 1 each phase
    #: runs under ``accelerate launch`` on the saved dataset; batch_size is per process.
    num_processes: int = Field(1, ge=1)
    #: an accelerate config for those processes: a shipped preset (``ddp``, ``deepspeed-zero2``,
    #: ``deepspeed-zero3``, ``fsdp``) or a path to an accelerate YAML; null = plain DDP.
    accelerate_config: str | None = None
    #: Liger's Triton kernels (RMSNorm, RoPE, SwiGLU); needs CUDA and ``pip install liger-kernel``
    #: (refused otherwise).
    liger_kernel: bool = False
    #: train on the labels of the last N rounds (0 = every round so far).
    data_rounds: int = Field(1, ge=0)


class EvaluationSettings(StrictModel):
    """Round N vs N−1 and vs round 0 on the held-out ``eval`` prompts, plus the task's oracle."""

    enabled: bool = True
    #: the pairwise judge of win rates (a name in judges.panel); default: judges.default, else the first.
    judge: str | None = None
    max_prompts: int | None = Field(None, ge=1)
    #: samples per eval prompt: each gets an oracle score, and sample k is compared with sample k of
    #: round N−1 and of round 0. More samples → tighter intervals, proportionally longer evaluation.
    samples_per_prompt: int = Field(1, ge=1)
    #: intervals (oracle score, win rates, the change since the previous round): a 95 % bootstrap
    #: over eval prompts, each resampled with its samples; seeded, so the same results give the same interval.
    bootstrap_resamples: int = Field(2000, ge=100)
    bootstrap_seed: int = 0
    #: sampling for evaluation; null = the generation settings'.
    temperature: float | None = Field(None, ge=0)
    max_new_tokens: int | None = Field(None, ge=1)
    #: a program that scores an answer in [0, 1]: a task's (a shipped task name such as ``support-desk`` or
    #: ``arithmetic``, or ``package.module:NAME`` of a TaskSpec) or ``package.module:function``.
    oracle: str | None = None


class WandbSettings(StrictModel):
    """One wandb run per round, grouped per loop. The API key only ever comes from WANDB_API_KEY."""

    enabled: bool = True
    project: str = "prefloop"
    entity: str | None = None
    #: runs of one loop share this group; null = the project's name.
    group: str | None = None
    #: ``WANDB_MODE`` in the environment wins over this.
    mode: Literal["online", "offline", "disabled"] = "offline"
    #: rows of the per-round sample table.
    log_samples: int = Field(16, ge=0)
    log_artifacts: bool = True


class TrainingConfig(StrictModel):
    model: ModelSettings = ModelSettings()
    lora: LoraSettings = LoraSettings()
    generation: GenerationSettings = GenerationSettings()
    pairing: PairingSettings = PairingSettings()
    #: judges (names in judges.panel) that label every round's tasks; null = judges.default, else all.
    judges: list[str] | None = None
    wait: HumanWaitSettings = HumanWaitSettings()
    sft: SFTSettings = SFTSettings()
    dpo: DPOSettings = DPOSettings()
    trainer: TrainerSettings = TrainerSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    wandb: WandbSettings = WandbSettings()

    @model_validator(mode="after")
    def _distinct_eval_samples(self) -> TrainingConfig:
        ev = self.evaluation
        temperature = self.generation.temperature if ev.temperature is None else ev.temperature
        if ev.samples_per_prompt > 1 and temperature == 0:
            raise ValueError(f"evaluation.samples_per_prompt is {ev.samples_per_prompt} but evaluation samples greedily "
                             "(temperature 0): every sample would be the same; set a temperature > 0 or 1 sample")
        return self
