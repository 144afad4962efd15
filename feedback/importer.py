"""Import prompts from JSONL, CSV, Parquet or a saved HF dataset, all or nothing.

Each record has ``prompt`` (text) or ``messages`` (chat turns), and optionally ``split``
(train / eval), ``tags`` (list, or comma-separated in CSV), ``reference`` (a reference answer)
and ``meta`` (an object). Any other field is kept in ``meta`` (task data an oracle may need).
Every record is checked before anything is written; one bad record names the file, the line
and the field, and nothing is imported. Re-importing the same prompt does not duplicate it.
Reading and checking live here; writing is :mod:`.bulk` (short transactions, all or nothing).
"""

from __future__ import annotations

import codecs
import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefloop.errors import DataError
from prefloop.kinds import KINDS
from prefloop.text import check_json, check_text, one_line

from . import bulk
from .enqueue import check_distinct_outputs
from .prompts import MAX_SOURCE, check_tags, normalise_messages
from .store.db import Store

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
    #: where this prompt came from, when the row says so (else the file's name or ``--source``)
    source: str | None = None


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
    """Yield ``(where, row)`` pairs, ``where`` naming the file and line (or row).

    The file must be what it says: valid UTF-8 (a UTF-8 BOM is accepted), one JSON object per
    line with no key given twice, or CSV rows with exactly as many cells as the header has
    columns. Anything else is a :class:`DataError` naming the file and the line. The fields'
    values are checked by :func:`parse_record` and :func:`parse_task`.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if path.is_dir():
        yield from _read_hf_dataset(path)
        return
    suffix = path.suffix.lower()
    readers = {".jsonl": _read_jsonl, ".ndjson": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet}
    if suffix not in readers:
        raise DataError(
            f"{path}: unsupported file type {suffix or '(none)'}",
            hint="use .jsonl, .csv, .parquet or a folder written by datasets' save_to_disk",
        )
    yield from readers[suffix](path)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a UTF-8 file, line endings kept and a leading BOM dropped."""
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            if n == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                yield n, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}:{n}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})",
                    hint="save the file as UTF-8",
                ) from None


class _RepeatedKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's ``object_pairs_hook``: a key given twice is an error, not a silent override."""
    out = dict(pairs)
    if len(out) != len(pairs):
        keys = [k for k, _ in pairs]
        raise _RepeatedKey(next(k for i, k in enumerate(keys) if k in keys[:i]))
    return out


_JSON = json.JSONDecoder(object_pairs_hook=_unique_keys)


def _read_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for n, line in _lines(path):
        if not line.strip():
            continue
        try:
            row = _JSON.decode(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        except _RepeatedKey as exc:
            raise DataError(f"{path}:{n}: field {exc.key[:40]!r} appears twice in one object") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{n}: each line must be a JSON object, got {type(row).__name__}")
        yield f"{path}:{n}", row


def _read_csv(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows of a CSV file with a header line; an empty cell is a missing field."""
    reader = csv.reader((text for _, text in _lines(path)), strict=True)
    header: list[str] | None = None
    while True:
        start = reader.line_num + 1  # a quoted cell may span several lines: name the first
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"{path}:{start}: not valid CSV ({exc})") from None
        if not cells:
            continue  # a blank line
        if header is None:
            header = _csv_header(path, start, cells)
            continue
        if len(cells) != len(header):
            raise DataError(
                f"{path}:{start}: {len(cells)} cell{'s' if len(cells) != 1 else ''}, "
                f"but the header has {len(header)} column{'s' if len(header) != 1 else ''}",
                hint='put a cell that holds a comma in double quotes: "What is 2+2, exactly?"',
            )
        yield f"{path}:{start}", {k: v for k, v in zip(header, cells, strict=True) if v != ""}


def _csv_header(path: Path, line: int, cells: list[str]) -> list[str]:
    for i, name in enumerate(cells):
        if not name.strip():
            raise DataError(f"{path}:{line}: column {i + 1} of the header has no name")
        if name in cells[:i]:
            raise DataError(f"{path}:{line}: column {name[:40]!r} appears twice in the header")
    return cells


def _read_parquet(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({one_line(str(exc))})") from None
    n = 0
    for batch in table.to_batches():
        try:
            rows = batch.to_pylist()
        except UnicodeDecodeError:
            _raise_bad_utf8_cell(path, batch, n)
        for row in rows:
            n += 1
            yield f"{path} row {n}", row


def _raise_bad_utf8_cell(path: Path, batch: Any, before: int) -> None:  # noqa: ANN401 - a pyarrow RecordBatch
    """Name the row and column of the cell that holds invalid UTF-8 (pyarrow does not say)."""
    for i in range(batch.num_rows):
        for name in batch.schema.names:
            try:
                batch.slice(i, 1).column(name).to_pylist()
            except UnicodeDecodeError:
                raise DataError(f"{path} row {before + i + 1}: field {name!r} is not valid UTF-8") from None
    raise DataError(f"{path}: holds text that is not valid UTF-8")


def _read_hf_dataset(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    from datasets import Dataset, DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises several types here
        raise DataError(f"{path}: not a saved HF dataset ({one_line(str(exc))})") from None
    parts = ds.items() if isinstance(ds, DatasetDict) else [(None, ds)]
    for split_name, part in parts:
        assert isinstance(part, Dataset)
        for n, row in enumerate(part, 1):
            if split_name is not None and "split" not in row:
                row = {**row, "split": "eval" if split_name in ("eval", "test", "validation") else "train"}
            yield f"{path}[{split_name or 'data'}] row {n}", row


def parse_record(where: str, row: dict[str, Any], *, default_split: str, extra_tags: list[str]) -> PromptRecord:
    """A clean prompt record from one row of :func:`read_rows`, or a :class:`DataError` naming the field.

    Every field follows the text policy (:mod:`prefloop.text`): storable text, finite numbers,
    a visible prompt and visible tags.
    """
    text = row.get("prompt", row.get("text"))
    messages = row.get("messages")
    if isinstance(messages, str):  # CSV cells hold JSON text
        messages = _json_cell(where, "messages", messages)
    if text is not None and messages is not None:
        raise DataError(f"{where}: give either 'prompt' or 'messages', not both")
    if messages is not None:
        prompt: str | list[dict[str, str]] = normalise_messages(messages, where=f"{where}: field 'messages'")
    elif isinstance(text, str):
        prompt = check_text(text, f"{where}: field 'prompt'", allow_blank=False)
    elif text is None:
        raise DataError(f"{where}: no 'prompt' or 'messages' field", hint="each record needs the prompt text or chat messages")
    else:
        raise DataError(f"{where}: field 'prompt' is empty or not text")
    split = row.get("split") or default_split
    if split not in SPLITS:
        raise DataError(f"{where}: field 'split' is {str(split)[:40]!r}; expected one of {', '.join(SPLITS)}")
    tags = row.get("tags") or []
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",") if t.strip()]
    tags = check_tags(tags, where=f"{where}: field 'tags'")
    reference = row.get("reference")
    if reference is not None:
        if not isinstance(reference, str):
            raise DataError(f"{where}: field 'reference' must be text")
        check_text(reference, f"{where}: field 'reference'")
    meta = row.get("meta") or {}
    if isinstance(meta, str):
        meta = _json_cell(where, "meta", meta)
    if not isinstance(meta, dict):
        raise DataError(f"{where}: field 'meta' must be an object")
    check_json(meta, f"{where}: field 'meta'")
    extra = {k: v for k, v in row.items() if k not in KNOWN}
    for k, v in extra.items():  # kept in meta, named as the file names them
        check_text(k, f"{where}: field name {k[:40]!r}")
        check_json(v, f"{where}: field {k!r}")
    meta = {**extra, **meta}
    source = row.get("source")
    if source is not None:
        if not isinstance(source, str):
            raise DataError(f"{where}: field 'source' must be text")
        check_text(source, f"{where}: field 'source'", allow_blank=False, max_length=MAX_SOURCE)
    return PromptRecord(prompt, split, sorted({*tags, *extra_tags}), reference, meta, where, source)


def parse_task(where: str, row: dict[str, Any], *, default_kind: str, default_priority: float) -> TaskRecord:
    """A clean ``queue add`` record from one row of :func:`read_rows`, or a :class:`DataError` naming the field."""
    row = dict(row)
    outputs = row.pop("outputs", None)
    kind = row.pop("kind", default_kind)
    priority = row.pop("priority", default_priority)
    task_kind = KINDS.get(kind) if isinstance(kind, str) else None
    if task_kind is None:
        raise DataError(f"{where}: field 'kind' is {str(kind)[:40]!r}; expected one of {', '.join(KINDS)}")
    if isinstance(priority, bool) or not isinstance(priority, (int, float)):
        raise DataError(f"{where}: field 'priority' must be a number, got {type(priority).__name__}")
    if (isinstance(priority, int) and abs(priority) > 2**53) or not math.isfinite(priority):
        raise DataError(f"{where}: field 'priority' is {str(priority)[:40]}; expected a finite number up to ±2**53")
    if not isinstance(outputs, list) or not outputs:
        raise DataError(f"{where}: field 'outputs' must be a non-empty list of texts")
    for i, o in enumerate(outputs):
        if not isinstance(o, str):
            raise DataError(f"{where}: field 'outputs'[{i}] must be text, got {type(o).__name__}")
        check_text(o, f"{where}: field 'outputs'[{i}]", allow_blank=False)
    lo, hi = task_kind.outputs
    if not lo <= len(outputs) <= hi:
        raise DataError(f"{where}: field 'outputs': a {kind} task needs {task_kind.outputs_text()} outputs, got {len(outputs)}")
    check_distinct_outputs(outputs, where=f"{where}: field 'outputs'", error=DataError)
    record = parse_record(where, row, default_split="train", extra_tags=[])
    return TaskRecord(record, outputs, kind, float(priority))


def _json_cell(where: str, field: str, cell: str) -> Any:  # noqa: ANN401 - any JSON value
    """A CSV cell that holds JSON text, parsed with the same rules as a JSONL line."""
    try:
        value = _JSON.decode(cell)
    except json.JSONDecodeError:
        raise DataError(f"{where}: field {field!r} is not valid JSON") from None
    except _RepeatedKey as exc:
        raise DataError(f"{where}: field {field!r}: key {exc.key[:40]!r} appears twice in one object") from None
    return check_json(value, f"{where}: field {field!r}")


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
    extra_tags = check_tags(list(tags or []), where="tags given with --tag")
    records = [parse_record(w, r, default_split=split, extra_tags=extra_tags) for w, r in read_rows(path)]
    if not records:
        raise DataError(f"{path}: no records found")
    created = bulk.write_prompts(store, records, source=source or path.name, batch_rows=batch_rows, progress=progress)
    return ImportResult(created, len(records) - created)


def read_tasks(path: str | Path, *, kind: str = "compare", priority: float = 0.0) -> list[TaskRecord]:
    """Every line of a ``queue add`` file, checked by :func:`parse_task` before anything is written.

    ``kind`` and ``priority`` are the defaults for lines that do not give their own.
    """
    path = Path(path)
    out = [parse_task(w, r, default_kind=kind, default_priority=priority) for w, r in read_rows(path)]
    if not out:
        raise DataError(f"{path}: no records found")
    return out
