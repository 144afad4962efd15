"""Import prompts from JSONL, CSV, Parquet or a saved HF dataset, all or nothing.

Each record has ``prompt`` (text) or ``messages`` (chat turns), and optionally ``split``
(train / eval), ``tags`` (list, or comma-separated in CSV), ``reference`` (a reference answer)
and ``meta`` (an object). Any other field is kept in ``meta`` (task data an oracle may need).
Every record is checked before anything is written; one bad record names the file, the line
and the field, and nothing is imported. Re-importing the same prompt does not duplicate it.
Reading and checking live here; writing is :mod:`.bulk` (short transactions, all or nothing).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefloop.errors import DataError

from . import bulk
from .db import Store
from .prompts import normalise_messages

SPLITS = ("train", "eval")
KNOWN = {"prompt", "text", "messages", "split", "tags", "reference", "meta", "source"}


@dataclass(frozen=True)
class PromptRecord:
    prompt: str | list[dict[str, str]]
    split: str
    tags: list[str]
    reference: str | None
    meta: dict[str, Any]
    where: str


@dataclass(frozen=True)
class TaskRecord:
    """One line of a ``queue add`` file: a prompt, its outputs, the task's kind and priority."""

    prompt: PromptRecord
    outputs: list[str]
    kind: str
    priority: float

    @property
    def where(self) -> str:
        return self.prompt.where


@dataclass(frozen=True)
class ImportResult:
    created: int
    existing: int

    @property
    def total(self) -> int:
        return self.created + self.existing


def read_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(where, row)`` pairs, ``where`` naming the file and line (or row)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if path.is_dir():
        yield from _read_hf_dataset(path)
        return
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{n}: not valid JSON ({exc.msg} at column {exc.colno})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{n}: each line must be a JSON object, got {type(row).__name__}")
                yield f"{path}:{n}", row
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            for n, row in enumerate(csv.DictReader(f), 2):  # line 1 is the header
                yield f"{path}:{n}", {k: v for k, v in row.items() if k is not None and v not in (None, "")}
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for n, row in enumerate(pq.read_table(path).to_pylist(), 1):
            yield f"{path} row {n}", row
    else:
        raise DataError(
            f"{path}: unsupported file type {suffix or '(none)'}",
            hint="use .jsonl, .csv, .parquet or a folder written by datasets' save_to_disk",
        )


def _read_hf_dataset(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    from datasets import Dataset, DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises several types here
        raise DataError(f"{path}: not a saved HF dataset ({exc})") from None
    parts = ds.items() if isinstance(ds, DatasetDict) else [(None, ds)]
    for split_name, part in parts:
        assert isinstance(part, Dataset)
        for n, row in enumerate(part, 1):
            if split_name is not None and "split" not in row:
                row = {**row, "split": "eval" if split_name in ("eval", "test", "validation") else "train"}
            yield f"{path}[{split_name or 'data'}] row {n}", row


def parse_record(where: str, row: dict[str, Any], *, default_split: str, extra_tags: list[str]) -> PromptRecord:
    text = row.get("prompt", row.get("text"))
    messages = row.get("messages")
    if isinstance(messages, str):  # CSV cells hold JSON text
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError:
            raise DataError(f"{where}: field 'messages' is not valid JSON") from None
    if text is not None and messages is not None:
        raise DataError(f"{where}: give either 'prompt' or 'messages', not both")
    if messages is not None:
        prompt: str | list[dict[str, str]] = normalise_messages(messages, where=f"{where}: field 'messages'")
    elif isinstance(text, str) and text.strip():
        prompt = text
    elif text is None:
        raise DataError(f"{where}: no 'prompt' or 'messages' field", hint="each record needs the prompt text or chat messages")
    else:
        raise DataError(f"{where}: field 'prompt' is empty or not text")
    split = row.get("split") or default_split
    if split not in SPLITS:
        raise DataError(f"{where}: field 'split' is {split!r}; expected one of {', '.join(SPLITS)}")
    tags = row.get("tags") or []
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",") if t.strip()]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise DataError(f"{where}: field 'tags' must be a list of strings")
    reference = row.get("reference")
    if reference is not None and not isinstance(reference, str):
        raise DataError(f"{where}: field 'reference' must be text")
    meta = row.get("meta") or {}
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            raise DataError(f"{where}: field 'meta' is not valid JSON") from None
    if not isinstance(meta, dict):
        raise DataError(f"{where}: field 'meta' must be an object")
    meta = {**{k: v for k, v in row.items() if k not in KNOWN}, **meta}
    return PromptRecord(prompt, split, sorted({*tags, *extra_tags}), reference, meta, where)


def import_prompts(
    store: Store,
    path: str | Path,
    *,
    split: str = "train",
    tags: list[str] | None = None,
    source: str | None = None,
    batch_rows: int = bulk.DEFAULT_BATCH_ROWS,
    progress: bulk.ProgressFn | None = None,
) -> ImportResult:
    """Validate every record of ``path``, then store them all or none (see :mod:`.bulk`)."""
    path = Path(path)
    if split not in SPLITS:
        raise DataError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    records = [parse_record(w, r, default_split=split, extra_tags=list(tags or [])) for w, r in read_rows(path)]
    if not records:
        raise DataError(f"{path}: no records found")
    created = bulk.write_prompts(store, records, source=source or path.name, batch_rows=batch_rows, progress=progress)
    return ImportResult(created, len(records) - created)


def read_tasks(path: str | Path, *, kind: str = "compare", priority: float = 0.0) -> list[TaskRecord]:
    """Every line of a ``queue add`` file, checked: a prompt (as for an import) and its ``outputs``.

    ``kind`` and ``priority`` are the defaults for lines that do not give their own.
    """
    out = []
    for where, row in read_rows(Path(path)):
        outputs = row.pop("outputs", None)
        task_kind = row.pop("kind", kind)
        task_priority = row.pop("priority", priority)
        if not isinstance(outputs, list) or not outputs or not all(isinstance(o, str) and o.strip() for o in outputs):
            raise DataError(f"{where}: field 'outputs' must be a non-empty list of non-empty strings")
        if not isinstance(task_kind, str):
            raise DataError(f"{where}: field 'kind' must be text")
        if isinstance(task_priority, bool) or not isinstance(task_priority, (int, float)) or not math.isfinite(task_priority):
            raise DataError(f"{where}: field 'priority' must be a finite number")
        record = parse_record(where, row, default_split="train", extra_tags=[])
        out.append(TaskRecord(record, outputs, task_kind, float(task_priority)))
    if not out:
        raise DataError(f"{path}: no records found")
    return out
