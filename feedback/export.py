"""Export preferences and SFT targets as ``datasets.Dataset`` in TRL's conversational formats.

- DPO: ``prompt`` (chat messages), ``chosen`` / ``rejected`` (one assistant message each);
- SFT, by default TRL's conversational *prompt-completion* type: ``prompt`` (the prompt's turns)
  and ``completion`` (the target as one assistant message). ``SFTTrainer`` then puts the loss on
  the completion only (``completion_only_loss``), so the policy learns its replies, not the
  prompts — with any chat template, no ``{% generation %}`` markers needed. The older
  *language-modeling* type ``messages`` (the prompt's turns followed by the target) is one
  argument away; trained as it is, every token of it carries loss.

A row whose generation was made with retrieval has the prompt as the model saw it (the passages
placed in it, so that training with retrieval in the prompt teaches the model to use its
context, RAFT-style) and the passages in a ``passages`` column (empty without retrieval).
Every row carries its provenance: ``source`` (human / judge / mixed), ``method``,
``confidence``, ``n_annotators``, ``annotators``, ``task_ids``, ``round`` and the ids involved.
:func:`dataset_hash` gives a content hash that rounds register with their artifacts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import case

from prefloop.atomic import atomic_dir, atomic_path
from prefloop.errors import DataError
from prefloop.feedback.config import AggregationConfig

from .aggregate import preferences, sft_targets
from .passages import merged_passages, prompted_messages
from .store.db import Store, rows_by_id
from .store.models import Generation, Prompt, Task, chat_messages

Format = Literal["disk", "jsonl", "parquet"]
#: the two shapes of an SFT row (TRL's dataset types).
SFTType = Literal["prompt-completion", "messages"]
SFT_TYPES: tuple[str, ...] = ("prompt-completion", "messages")

DPO_COLUMNS = ["prompt", "chosen", "rejected", "prompt_id", "chosen_id", "rejected_id", "source", "method",
               "confidence", "n_annotators", "annotators", "task_ids", "round", "passages"]
SFT_PROVENANCE = ["prompt_id", "generation_id", "source", "method", "confidence", "n_annotators", "annotators",
                  "task_ids", "round", "passages"]
SFT_COLUMNS = ["prompt", "completion", *SFT_PROVENANCE]
SFT_MESSAGES_COLUMNS = ["messages", *SFT_PROVENANCE]


def _features(dataset: str, sft_type: SFTType = "prompt-completion"):  # noqa: ANN202 - datasets.Features
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
    if dataset == "dpo":
        return Features({"prompt": msg, "chosen": msg, "rejected": msg, "chosen_id": Value("int64"),
                         "rejected_id": Value("int64"), **common})
    text = {"messages": msg} if sft_type == "messages" else {"prompt": msg, "completion": msg}
    return Features({**text, "generation_id": Value("int64"), **common})


def _prompts_and_texts(store: Store, prompt_ids: set[int], gen_ids: set[int]) -> tuple[dict[int, list], dict[int, str]]:
    """Prompts as chat messages and output texts, by id (without SQLite's write lock: :meth:`Store.read`)."""
    chat = case((Prompt.text.is_(None), Prompt.messages))  # decode JSON only for chat prompts
    with store.read() as conn:
        prompts = {i: chat_messages(text, messages)
                   for i, text, messages in rows_by_id(conn, (Prompt.id, Prompt.text, chat), prompt_ids)}
        texts = dict(rows_by_id(conn, (Generation.id, Generation.text), gen_ids))
    return prompts, texts


def _dataset(rows: dict[str, list[Any]], dataset: str, sft_type: SFTType = "prompt-completion"):  # noqa: ANN202
    """Columns → Dataset through one Arrow conversion: ``Dataset.from_dict`` encodes row by row (5× slower)."""
    import pyarrow as pa
    from datasets import Dataset, DatasetInfo

    features = _features(dataset, sft_type)
    return Dataset(pa.Table.from_pydict(rows, schema=features.arrow_schema), info=DatasetInfo(features=features))


def _contexts(store: Store, gen_ids: set[int]) -> dict[int, dict[str, Any]]:
    """generation id → its meta, for the prompt as given and the passages (retrieval only)."""
    with store.read() as conn:
        return {gid: dict(meta or {}) for gid, meta in rows_by_id(conn, (Generation.id, Generation.meta), gen_ids)}


def _answered_generations(store: Store, targets: list[Any]) -> dict[int, int]:
    """target index → the generation whose prompt it answers: its own, or the one its edit task corrected."""
    out = {i: t.generation_id for i, t in enumerate(targets) if t.generation_id is not None}
    edits = {i: t.task_ids[0] for i, t in enumerate(targets) if t.generation_id is None and t.task_ids}
    with store.read() as conn:  # a snapshot: never waits for SQLite's write lock
        gens = dict(rows_by_id(conn, (Task.id, Task.generation_ids), set(edits.values())))
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
    sources: Sequence[str] | None = None,
    exclude_judges: Collection[tuple[str, str]] = (),
):  # noqa: ANN201 - datasets.Dataset
    """Preference pairs as a TRL DPO dataset (conversational), provenance included; ``exclude_judges``:
    (judge, task kind) pairs whose labels are left out (untrusted judges)."""
    config = config or AggregationConfig()
    floor = config.min_confidence if min_confidence is None else min_confidence
    prefs = [p for p in preferences(store, round_ids=round_ids, config=config, exclude_judges=exclude_judges)
             if p.confidence >= floor and (sources is None or p.source in sources)]
    prompts, texts = _prompts_and_texts(store, {p.prompt_id for p in prefs}, {g for p in prefs for g in (p.chosen_id, p.rejected_id)})
    metas = _contexts(store, {p.chosen_id for p in prefs})
    given = [_prompted(prompts[p.prompt_id], metas.get(p.chosen_id)) for p in prefs]
    rows: dict[str, list[Any]] = {
        "prompt": [g["prompt"] for g in given],
        "passages": [g["passages"] for g in given],
        "chosen": [[{"role": "assistant", "content": texts[p.chosen_id]}] for p in prefs],
        "rejected": [[{"role": "assistant", "content": texts[p.rejected_id]}] for p in prefs],
        "round": [-1 if p.round_number is None else p.round_number for p in prefs],
    }
    for c in ("prompt_id", "chosen_id", "rejected_id", "source", "method", "confidence", "n_annotators", "annotators",
              "task_ids"):
        rows[c] = [getattr(p, c) for p in prefs]
    return _dataset({c: rows[c] for c in DPO_COLUMNS}, "dpo")


def build_sft_dataset(
    store: Store,
    *,
    round_ids: list[int] | None = None,
    config: AggregationConfig | None = None,
    sources: Sequence[str] | None = None,
    dataset_type: SFTType = "prompt-completion",
    exclude_judges: Collection[tuple[str, str]] = (),
):  # noqa: ANN201 - datasets.Dataset
    """Human edits and top-rated outputs as a TRL SFT dataset: ``prompt``/``completion`` (loss on the
    reply only), or ``messages`` with ``dataset_type="messages"``; provenance columns either way; ``exclude_judges``: (judge, task kind) pairs whose labels are left out."""
    if dataset_type not in SFT_TYPES:
        raise DataError(f"unknown SFT dataset type {dataset_type!r}", hint=f"use one of {', '.join(SFT_TYPES)}")
    targets = [t for t in sft_targets(store, round_ids=round_ids, config=config, exclude_judges=exclude_judges)
               if sources is None or t.source in sources]
    prompts, _ = _prompts_and_texts(store, {t.prompt_id for t in targets}, set())
    answered = _answered_generations(store, targets)
    metas = _contexts(store, set(answered.values()))
    columns = SFT_MESSAGES_COLUMNS if dataset_type == "messages" else SFT_COLUMNS
    rows: dict[str, list[Any]] = {c: [] for c in columns}
    for i, t in enumerate(targets):
        given = _prompted(prompts[t.prompt_id], metas.get(answered[i]) if i in answered else None)
        reply = {"role": "assistant", "content": t.text}
        row = {
            "messages": [*given["prompt"], reply], "prompt": given["prompt"], "completion": [reply],
            "passages": given["passages"],
            "prompt_id": t.prompt_id, "generation_id": -1 if t.generation_id is None else t.generation_id,
            "source": t.source, "method": t.method, "confidence": t.confidence,
            "n_annotators": len(t.annotators), "annotators": t.annotators, "task_ids": t.task_ids,
            "round": -1 if t.round_number is None else t.round_number,
        }
        for c in columns:
            rows[c].append(row[c])
    return _dataset(rows, "sft", dataset_type)


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
    with _no_progress_bars():
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


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """datasets draws its own bars on every write; prefloop reports what it wrote itself."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()
