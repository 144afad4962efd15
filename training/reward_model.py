"""Training the reward-model judge (:mod:`prefloop.judges.reward_model`): its pairs, its held-out
human tasks, and one run of TRL's ``RewardTrainer`` with LoRA on a sequence-classification head.

- **pairs**: the store's preference pairs (``prefloop export dpo``, conversational rows as TRL
  takes them) from the judge's ``sources`` (default: human) and ``include``d task kinds
  (:data:`METHODS_BY_KIND`; edits give "the corrected text over the original");
- **held out**: a share (``holdout``) of the human-labelled compare tasks, chosen by a hash of
  the task id and ``seed``: the same tasks stay held out as data grows, so they are never trained
  on and measure the judge's agreement with the humans round after round;
- **training**: from the base each time, on all pairs so far (the model is small; no drift from
  round to round); checkpoints every ``save_steps``, a killed run resumes from the last complete
  one, a finished one (``result.json`` + adapter) is never trained again. The adapter is written
  atomically, with :data:`~prefloop.judges.reward_model.INFO_FILE` (base model, pair keys).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from prefloop.atomic import atomic_dir, atomic_write_text
from prefloop.feedback.aggregate import load_task_labels
from prefloop.feedback.config import AggregationConfig
from prefloop.feedback.export import _no_progress_bars, build_dpo_dataset
from prefloop.feedback.store.models import AnnotatorKind, Generation, TaskKind
from prefloop.judges.config import JudgeSpec
from prefloop.judges.reward_model import INFO_FILE
from prefloop.text import finite_or_none

from .trainers import ADAPTER, ADAPTER_WEIGHTS, RESULT, TrainingError, _skip_final_checkpoint, last_complete_checkpoint

#: the per-kind table: which export ``method`` each included task kind contributes ("edit" pairs are
#: built here, from the edited text and the original output).
METHODS_BY_KIND: dict[str, tuple[str, ...]] = {
    TaskKind.COMPARE.value: ("majority", "judge-panel"),
    TaskKind.RANK.value: ("ranking",),
    TaskKind.RATE.value: ("rating",),
}
COLUMNS = ("prompt", "chosen", "rejected", "key", "method", "source", "round")


def held_out(task_id: int, share: float, seed: int) -> bool:
    """Whether a compare task is held out: a stable hash of (seed, task id) below ``share``."""
    digest = hashlib.sha256(f"{seed}:{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


@dataclass
class RewardPairs:
    rows: dict[str, list[Any]]  #: columns of the training set (TRL's conversational preference format)
    held_out_tasks: list[int]  #: human-labelled compare tasks never trained on

    @property
    def keys(self) -> list[str]:
        return self.rows["key"]

    def dataset(self) -> Any:
        from datasets import Dataset

        return Dataset.from_dict(self.rows)


def reward_pairs(store: Any, spec: JudgeSpec, aggregation: AggregationConfig, *, round_ids: list[int] | None) -> RewardPairs:
    """The judge's training pairs and held-out tasks from the labels of ``round_ids`` (None: all)."""
    tasks = load_task_labels(store, round_ids=round_ids, kinds=[TaskKind.COMPARE.value, TaskKind.EDIT.value])
    held = sorted(t.task_id for t in tasks if t.kind == TaskKind.COMPARE.value and t.by(AnnotatorKind.HUMAN.value)
                  and held_out(t.task_id, spec.holdout, spec.seed))
    held_set = set(held)
    methods = {m for k in spec.include for m in METHODS_BY_KIND.get(k, ())}
    rows: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    ds = build_dpo_dataset(store, round_ids=round_ids, config=aggregation, sources=list(spec.sources))
    for r in ds:
        if r["method"] not in methods or (r["method"] in METHODS_BY_KIND["compare"] and r["task_ids"][0] in held_set):
            continue
        _add(rows, r["prompt"], r["chosen"][0]["content"], r["rejected"][0]["content"],
             ",".join(map(str, r["task_ids"])), r["method"], r["source"], r["round"])
    if TaskKind.EDIT.value in spec.include:
        _edit_pairs(store, [t for t in tasks if t.kind == TaskKind.EDIT.value], spec, rows)
    return RewardPairs(rows, held)


def _add(rows: dict[str, list[Any]], prompt: list[dict[str, str]], chosen: str, rejected: str, key: str, method: str,
         source: str, round_number: int) -> None:
    for c, v in zip(COLUMNS, (prompt, [{"role": "assistant", "content": chosen}], [{"role": "assistant", "content": rejected}],
                              key, method, source, round_number), strict=True):
        rows[c].append(v)


def _edit_pairs(store: Any, tasks: list[Any], spec: JudgeSpec, rows: dict[str, list[Any]]) -> None:
    """An edit is a preference: the corrected text over the output it corrects (when they differ)."""
    from prefloop.feedback.store.models import Prompt

    wanted = [(t, lab) for t in tasks for lab in t.labels if lab.kind in spec.sources]
    if not wanted:
        return
    with store.session() as s:
        texts = dict(s.execute(select(Generation.id, Generation.text)
                               .where(Generation.id.in_({t.generation_ids[0] for t, _ in wanted}))).all())
        prompts = {p.id: p.as_messages() for p in s.scalars(select(Prompt).where(Prompt.id.in_({t.prompt_id for t, _ in wanted})))}
    for t, lab in wanted:
        original, edited = texts[t.generation_ids[0]], lab.value["text"]
        if edited.strip() != original.strip():
            _add(rows, prompts[t.prompt_id], edited, original, f"edit:{t.task_id}:{lab.annotator}", "edit", lab.kind,
                 -1 if t.round_number is None else t.round_number)


@dataclass
class RewardTrainResult:
    adapter_dir: str
    pairs: int  #: pairs given (TRL leaves out those longer than ``train_max_length``)
    steps: int
    train_seconds: float  #: wall time of ``trainer.train()`` in this process (0 when already done)
    resumed_from: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)  #: the last logged (loss, accuracy, margin…)

    def to_json(self) -> dict[str, Any]:
        return finite_or_none(asdict(self))


def train_reward_model(spec: JudgeSpec, base_source: str, dataset: Any, out: str | Path, *, device: str = "cpu",
                       save_steps: int = 10, callbacks: list[Any] | None = None) -> RewardTrainResult:
    """Train (or resume, or skip when finished) the reward model on ``dataset`` (:meth:`RewardPairs.dataset`);
    the adapter ends in ``<out>/adapter``."""
    out = Path(out)
    done = out / RESULT
    if done.is_file() and (out / ADAPTER / ADAPTER_WEIGHTS).is_file():
        return RewardTrainResult(**{**json.loads(done.read_text()), "train_seconds": 0.0})
    keys = list(dataset["key"]) if len(dataset) else []
    if not keys:
        raise TrainingError(f"reward model {spec.name!r}: no pairs to train on")
    trainer = _trainer(spec, base_source, dataset.select_columns(["prompt", "chosen", "rejected"]), out, device=device,
                       save_steps=save_steps, callbacks=callbacks)
    resume = last_complete_checkpoint(out / "checkpoints")
    start = time.perf_counter()
    with _no_progress_bars():
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - start
    logs = [h for h in trainer.state.log_history if "loss" in h]
    last: dict[str, float | None] = {k: float(v) for k, v in (logs[-1] if logs else {}).items() if isinstance(v, (int, float))}
    result = RewardTrainResult(str(out / ADAPTER), len(keys), int(trainer.state.global_step), seconds,
                               str(resume) if resume else None, last)
    with atomic_dir(out / ADAPTER) as tmp:
        trainer.model.save_pretrained(str(tmp))
        (tmp / INFO_FILE).write_text(json.dumps({"base_model": base_source, "keys": sorted(keys)}))
    atomic_write_text(done, json.dumps(result.to_json(), indent=2))
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # finished: the optimizer states are dead weight
    return result


def _trainer(spec: JudgeSpec, base_source: str, dataset: Any, out: Path, *, device: str, save_steps: int,
             callbacks: list[Any] | None) -> Any:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification, PrinterCallback
    from transformers.utils import logging as hf_logging
    from trl import RewardConfig, RewardTrainer

    from .loading import load_tokenizer, resolve_model

    cuda = device.startswith("cuda")
    tok = load_tokenizer(base_source)
    tok.padding_side = "right"
    args = RewardConfig(
        output_dir=str(out / "checkpoints"), per_device_train_batch_size=spec.train_batch_size,
        learning_rate=spec.learning_rate, num_train_epochs=spec.epochs,
        max_steps=spec.max_steps if spec.max_steps is not None else -1, max_length=spec.train_max_length,
        center_rewards_coefficient=spec.center_rewards, logging_steps=1, save_strategy="steps", save_steps=save_steps,
        save_total_limit=1, seed=spec.seed, data_seed=spec.seed, report_to="none",
        # TRL's defaults (bf16, gradient checkpointing) are wrong on CPU and slow for a small model.
        bf16=False, fp16=False, use_cpu=not cuda, gradient_checkpointing=False, dataloader_num_workers=0,
        dataloader_pin_memory=cuda, disable_tqdm=True,
    )
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the new head's "newly initialized" warning is expected
    try:
        model = AutoModelForSequenceClassification.from_pretrained(resolve_model(base_source), num_labels=1, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.pad_token_id = tok.pad_token_id
    lora = LoraConfig(r=spec.lora_r, lora_alpha=2 * spec.lora_r, lora_dropout=0.0, target_modules="all-linear",
                      task_type="SEQ_CLS")
    with _no_progress_bars():
        trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok, peft_config=lora,
                                callbacks=[*(callbacks or []), _skip_final_checkpoint()])
    trainer.remove_callback(PrinterCallback)  # prefloop reports the result; the logs go to wandb
    kept = trainer.train_dataset
    assert isinstance(kept, Dataset)  # the Dataset given, less what TRL filtered out
    if len(kept) == 0:
        raise TrainingError(f"reward model {spec.name!r}: every pair is longer than train_max_length {spec.train_max_length}",
                            hint="raise the judge's train_max_length")
    return trainer
