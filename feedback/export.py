"""Export preferences and SFT targets as ``datasets.Dataset`` in TRL's conversational formats.

- DPO: ``prompt`` (chat messages), ``chosen`` / ``rejected`` (one assistant message each);
- SFT: ``messages`` (the prompt's turns followed by the target as the assistant turn).

A row whose generation was made with retrieval has the prompt as the model saw it (the passages
placed in it, so that training with retrieval in the prompt teaches the model to use its
context, RAFT-style) and the passages in a ``passages`` column (empty without retrieval).
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
from .models import Generation, Prompt, Task
from .passages import generation_metas, merged_passages, prompted_messages

Format = Literal["disk", "jsonl", "parquet"]

DPO_COLUMNS = ["prompt", "chosen", "rejected", "prompt_id", "chosen_id", "rejected_id", "source", "method",
               "confidence", "n_annotators", "annotators", "task_ids", "round", "passages"]
SFT_COLUMNS = ["messages", "prompt_id", "generation_id", "source", "method", "confidence", "n_annotators",
               "annotators", "task_ids", "round", "passages"]


def _features(kind: str):  # noqa: ANN202 - datasets.Features
    from datasets import Features, List, Value

    msg = List({"role": Value("string"), "content": Value("string")})
    common = {
        "prompt_id": Value("int64"), "source": Value("string"), "method": Value("string"),
        "confidence": Value("float64"), "n_annotators": Value("int64"), "annotators": List(Value("string")),
        "task_ids": List(Value("int64")), "round": Value("int64"),
        "passages": List({"number": Value("int64"), "chunk_id": Value("int64"), "kb": Value("string"),
                          "document_key": Value("string"), "title": Value("string"), "source": Value("string"),
                          "score": Value("float64"), "rank": Value("int64"), "truncated": Value("bool"),
                          "text": Value("string")}),
    }
    if kind == "dpo":
        return Features({"prompt": msg, "chosen": msg, "rejected": msg, "chosen_id": Value("int64"),
                         "rejected_id": Value("int64"), **common})
    return Features({"messages": msg, "generation_id": Value("int64"), **common})


def _prompts_and_texts(store: Store, prompt_ids: set[int], gen_ids: set[int]) -> tuple[dict[int, list], dict[int, str]]:
    with store.session() as s:
        prompts = {p.id: p.as_messages() for p in s.scalars(select(Prompt).where(Prompt.id.in_(prompt_ids)))}
        texts = dict(s.execute(select(Generation.id, Generation.text).where(Generation.id.in_(gen_ids))).all())
    return prompts, texts


def _contexts(store: Store, gen_ids: set[int]) -> dict[int, dict[str, Any]]:
    """generation id → its meta, for the prompt as given and the passages (retrieval only)."""
    with store.session() as s:
        return generation_metas(s, gen_ids)


def _answered_generations(store: Store, targets: list[Any]) -> dict[int, int]:
    """target index → the generation whose prompt it answers: its own, or the one its edit task corrected."""
    out = {i: t.generation_id for i, t in enumerate(targets) if t.generation_id is not None}
    edits = {i: t.task_ids[0] for i, t in enumerate(targets) if t.generation_id is None and t.task_ids}
    with store.session() as s:
        gens = dict(s.execute(select(Task.id, Task.generation_ids).where(Task.id.in_(set(edits.values())))).all())
    out.update({i: int(gens[tid][0]) for i, tid in edits.items() if gens.get(tid)})
    return out


def _prompted(prompt: list[dict[str, str]], meta: dict[str, Any] | None) -> dict[str, Any]:
    """A row's prompt as the model saw it, and its ``passages`` column."""
    return {"prompt": prompted_messages(prompt, meta), "passages": merged_passages([meta])}


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
    metas = _contexts(store, {p.chosen_id for p in prefs})
    rows: dict[str, list[Any]] = {c: [] for c in DPO_COLUMNS}
    for p in prefs:
        row = {
            **_prompted(prompts[p.prompt_id], metas.get(p.chosen_id)),
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
):  # noqa: ANN201 - datasets.Dataset
    """Human edits and top-rated outputs as a TRL SFT dataset (``messages``)."""
    from datasets import Dataset

    targets = [t for t in sft_targets(store, round_ids=round_ids, config=config) if sources is None or t.source in sources]
    prompts, _ = _prompts_and_texts(store, {t.prompt_id for t in targets}, set())
    answered = _answered_generations(store, targets)
    metas = _contexts(store, set(answered.values()))
    rows: dict[str, list[Any]] = {c: [] for c in SFT_COLUMNS}
    for i, t in enumerate(targets):
        given = _prompted(prompts[t.prompt_id], metas.get(answered[i]) if i in answered else None)
        row = {
            "messages": [*given["prompt"], {"role": "assistant", "content": t.text}], "passages": given["passages"],
            "prompt_id": t.prompt_id, "generation_id": -1 if t.generation_id is None else t.generation_id,
            "source": t.source, "method": t.method, "confidence": t.confidence,
            "n_annotators": len(t.annotators), "annotators": t.annotators, "task_ids": t.task_ids,
            "round": -1 if t.round_number is None else t.round_number,
        }
        for c in SFT_COLUMNS:
            rows[c].append(row[c])
    return Dataset.from_dict(rows, features=_features("sft"))


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
