"""Export preferences and SFT targets as ``datasets.Dataset`` in TRL's conversational formats.

- DPO: ``prompt`` (chat messages), ``chosen`` / ``rejected`` (one assistant message each);
- SFT, by default TRL's conversational *prompt-completion* type: ``prompt`` (the prompt's turns)
  and ``completion`` (the target as one assistant message). ``SFTTrainer`` then puts the loss on
  the completion only (``completion_only_loss``), so the policy learns its replies, not the
  prompts — with any chat template, no ``{% generation %}`` markers needed. The older
  *language-modeling* type ``messages`` (the prompt's turns followed by the target) is one
  argument away; trained as it is, every token of it carries loss.

Every row carries its provenance: ``source`` (human / judge / mixed), ``method``,
``confidence``, ``n_annotators``, ``annotators``, ``task_ids``, ``round`` and the ids involved.
:func:`dataset_hash` gives a content hash that rounds register with their artifacts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select

from prefloop.atomic import atomic_dir, atomic_path
from prefloop.errors import DataError
from prefloop.feedback.config import AggregationConfig

from .aggregate import preferences, sft_targets
from .db import Store
from .models import Generation, Prompt

Format = Literal["disk", "jsonl", "parquet"]
#: the two shapes of an SFT row (TRL's dataset types).
SFTType = Literal["prompt-completion", "messages"]
SFT_TYPES: tuple[str, ...] = ("prompt-completion", "messages")

DPO_COLUMNS = ["prompt", "chosen", "rejected", "prompt_id", "chosen_id", "rejected_id", "source", "method",
               "confidence", "n_annotators", "annotators", "task_ids", "round"]
SFT_PROVENANCE = ["prompt_id", "generation_id", "source", "method", "confidence", "n_annotators", "annotators",
                  "task_ids", "round"]
SFT_COLUMNS = ["prompt", "completion", *SFT_PROVENANCE]
SFT_MESSAGES_COLUMNS = ["messages", *SFT_PROVENANCE]


def _features(kind: str, sft_type: SFTType = "prompt-completion"):  # noqa: ANN202 - datasets.Features
    from datasets import Features, List, Value

    msg = List({"role": Value("string"), "content": Value("string")})
    common = {
        "prompt_id": Value("int64"), "source": Value("string"), "method": Value("string"),
        "confidence": Value("float64"), "n_annotators": Value("int64"), "annotators": List(Value("string")),
        "task_ids": List(Value("int64")), "round": Value("int64"),
    }
    if kind == "dpo":
        return Features({"prompt": msg, "chosen": msg, "rejected": msg, "chosen_id": Value("int64"),
                         "rejected_id": Value("int64"), **common})
    text = {"messages": msg} if sft_type == "messages" else {"prompt": msg, "completion": msg}
    return Features({**text, "generation_id": Value("int64"), **common})


def _prompts_and_texts(store: Store, prompt_ids: set[int], gen_ids: set[int]) -> tuple[dict[int, list], dict[int, str]]:
    with store.session() as s:
        prompts = {p.id: p.as_messages() for p in s.scalars(select(Prompt).where(Prompt.id.in_(prompt_ids)))}
        texts = dict(s.execute(select(Generation.id, Generation.text).where(Generation.id.in_(gen_ids))).all())
    return prompts, texts


def build_dpo_dataset(
    store: Store,
    *,
    round_ids: list[int] | None = None,
    config: AggregationConfig | None = None,
    min_confidence: float | None = None,
    sources: list[str] | None = None,
):  # noqa: ANN201 - datasets.Dataset
    """Preference pairs as a TRL DPO dataset (conversational), provenance included."""
    from datasets import Dataset

    config = config or AggregationConfig()
    floor = config.min_confidence if min_confidence is None else min_confidence
    prefs = [p for p in preferences(store, round_ids=round_ids, config=config)
             if p.confidence >= floor and (sources is None or p.source in sources)]
    prompts, texts = _prompts_and_texts(store, {p.prompt_id for p in prefs}, {g for p in prefs for g in (p.chosen_id, p.rejected_id)})
    rows: dict[str, list[Any]] = {c: [] for c in DPO_COLUMNS}
    for p in prefs:
        row = {
            "prompt": prompts[p.prompt_id],
            "chosen": [{"role": "assistant", "content": texts[p.chosen_id]}],
            "rejected": [{"role": "assistant", "content": texts[p.rejected_id]}],
            "prompt_id": p.prompt_id, "chosen_id": p.chosen_id, "rejected_id": p.rejected_id,
            "source": p.source, "method": p.method, "confidence": p.confidence,
            "n_annotators": p.n_annotators, "annotators": p.annotators, "task_ids": p.task_ids,
            "round": -1 if p.round_number is None else p.round_number,
        }
        for c in DPO_COLUMNS:
            rows[c].append(row[c])
    return Dataset.from_dict(rows, features=_features("dpo"))


def build_sft_dataset(
    store: Store,
    *,
    round_ids: list[int] | None = None,
    config: AggregationConfig | None = None,
    sources: list[str] | None = None,
    dataset_type: SFTType = "prompt-completion",
):  # noqa: ANN201 - datasets.Dataset
    """Human edits and top-rated outputs as a TRL SFT dataset: ``prompt``/``completion`` (loss on the
    reply only), or ``messages`` with ``dataset_type="messages"``; provenance columns either way."""
    from datasets import Dataset

    if dataset_type not in SFT_TYPES:
        raise DataError(f"unknown SFT dataset type {dataset_type!r}", hint=f"use one of {', '.join(SFT_TYPES)}")
    targets = [t for t in sft_targets(store, round_ids=round_ids, config=config) if sources is None or t.source in sources]
    prompts, _ = _prompts_and_texts(store, {t.prompt_id for t in targets}, set())
    columns = SFT_MESSAGES_COLUMNS if dataset_type == "messages" else SFT_COLUMNS
    rows: dict[str, list[Any]] = {c: [] for c in columns}
    for t in targets:
        reply = {"role": "assistant", "content": t.text}
        row = {
            "messages": [*prompts[t.prompt_id], reply], "prompt": prompts[t.prompt_id], "completion": [reply],
            "prompt_id": t.prompt_id, "generation_id": -1 if t.generation_id is None else t.generation_id,
            "source": t.source, "method": t.method, "confidence": t.confidence,
            "n_annotators": len(t.annotators), "annotators": t.annotators, "task_ids": t.task_ids,
            "round": -1 if t.round_number is None else t.round_number,
        }
        for c in columns:
            rows[c].append(row[c])
    return Dataset.from_dict(rows, features=_features("sft", dataset_type))


def messages_as_prompt_completion(ds):  # noqa: ANN001, ANN201 - datasets.Dataset
    """A ``messages`` SFT dataset as ``prompt``/``completion`` (the last turn, the assistant's, is the
    completion), other columns kept: what completion-only loss needs from an older export."""
    bad = next((i for i, m in enumerate(ds["messages"]) if not m or m[-1]["role"] != "assistant"), None)
    if bad is not None:
        raise DataError(f"SFT row {bad}: the conversation does not end with an assistant turn, so it has no reply to learn",
                        hint="each row's messages must end with the assistant's reply")
    return ds.map(lambda row: {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]},
                  remove_columns=["messages"], keep_in_memory=True)


def dataset_hash(ds) -> str:  # noqa: ANN001
    """sha256 of the rows as canonical JSON: equal content, equal hash, whatever the file format."""
    h = hashlib.sha256()
    for row in ds:
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def save_dataset(ds, path: str | Path, fmt: Format = "jsonl") -> Path:  # noqa: ANN001
    """Write ``ds`` as a ``save_to_disk`` folder, JSON lines or Parquet; returns the path.

    Atomically (:mod:`prefloop.atomic`): a previous export at ``path`` is replaced whole, or
    stays as it was if the writer dies half-way.
    """
    if len(ds) == 0:
        raise DataError(
            "the dataset is empty: nothing to export",
            hint="label some tasks first (prefloop annotate / judge run), or lower aggregation.min_confidence",
        )
    if fmt not in ("disk", "jsonl", "parquet"):
        raise DataError(f"unknown format {fmt!r}", hint="use disk, jsonl or parquet")
    path = Path(path)
    if fmt == "disk":
        with atomic_dir(path) as tmp:
            ds.save_to_disk(str(tmp))
    else:
        with atomic_path(path) as tmp:
            if fmt == "jsonl":
                ds.to_json(str(tmp), lines=True, force_ascii=False)
            else:
                ds.to_parquet(str(tmp))
    return path
