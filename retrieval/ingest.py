"""``prefloop kb import``: documents from files into a knowledge base, all or nothing.

Sources:

- a folder of ``.txt`` / ``.md`` files (searched recursively, hidden files skipped): one document
  per file, keyed by its path inside the folder; a Markdown file's first ``# heading`` is its title;
- a single ``.txt`` / ``.md`` file;
- JSONL, CSV or Parquet, or a folder written by ``datasets``' ``save_to_disk``: one document per
  record with ``text`` and optionally ``id`` (the document's key), ``title``, ``source`` and
  ``meta`` (an object); other fields are kept in ``meta``. A record without ``id`` is keyed by
  its file name and line, so re-importing an edited file replaces the documents whose lines changed.

Every record is read, checked (``prefloop.text``) and chunked before anything is written; one bad
record names the file, the line and the field, and nothing is imported. Re-importing unchanged
documents writes nothing; a changed document (same key, other content) has its chunks replaced;
``prune`` removes the documents of the knowledge base that the import did not contain. Changing
the chunking re-chunks every document of the knowledge base.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from prefloop.errors import DataError
from prefloop.feedback.store.db import Store
from prefloop.text import check_json, check_text

from .chunking import Chunking, Span, chunk_spans
from .kb import analyze, content_hash, sha256_json
from .models import KbChunk, KbDocument, KnowledgeBase, utcnow

TEXT_SUFFIXES = (".txt", ".md")
KNOWN_FIELDS = {"text", "id", "title", "source", "meta"}
MAX_KEY = 500  # kb_documents.key is a String(500)
_HEADING = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.M)
_BATCH = 500  # ids per IN (…) list


@dataclass(frozen=True)
class DocumentRecord:
    key: str
    text: str
    title: str | None
    source: str
    meta: dict[str, Any]
    where: str  # file:line, for error messages

    @property
    def content_hash(self) -> str:
        return sha256_json({"text": self.text, "title": self.title, "source": self.source, "meta": self.meta})


@dataclass(frozen=True)
class KbImportResult:
    kb: str
    created: int
    changed: int
    unchanged: int
    removed: int
    rechunked: int  # unchanged documents re-chunked because the chunking changed
    chunks_written: int
    documents: int  # in the knowledge base after the import
    chunks: int
    content_hash: str


# ----------------------------------------------------------------------------------------- reading
def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte {exc.start})", hint="save the file as UTF-8") from None


def _is_hf_dataset(folder: Path) -> bool:
    return any((folder / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json"))


def _text_file_record(path: Path, key: str) -> DocumentRecord:
    text = _decode(path, path.read_bytes())
    where = f"{path}:1"
    check_text(text, f"{path}: text", allow_blank=False)
    title = None
    if path.suffix.lower() == ".md":
        m = _HEADING.search(text)
        title = m.group(1) if m else None
    return DocumentRecord(key, text, title or path.stem, key, {}, where)


def _folder_records(folder: Path) -> list[DocumentRecord]:
    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    unsupported = [p for p in files if p.suffix.lower() not in TEXT_SUFFIXES]
    if unsupported:
        raise DataError(
            f"{unsupported[0]}: unsupported file type {unsupported[0].suffix or '(none)'} in a folder of documents",
            hint="a folder may hold only .txt and .md files (hidden files are skipped); move the others out",
        )
    if not files:
        raise DataError(f"{folder}: no .txt or .md files found")
    return [_text_file_record(p, f"{folder.name}/{p.relative_to(folder).as_posix()}") for p in files]


def _row_record(path: Path, where: str, row: dict[str, Any]) -> DocumentRecord:
    text = row.get("text")
    if text is None:
        raise DataError(f"{where}: no 'text' field", hint="each record needs the document's text in 'text'")
    check_text(text, f"{where}: field 'text'", allow_blank=False)
    doc_id = row.get("id")
    if doc_id is not None and (isinstance(doc_id, bool) or not isinstance(doc_id, (str, int))):
        raise DataError(f"{where}: field 'id' must be text or an integer")
    title, source = row.get("title"), row.get("source")
    for name, value in (("title", title), ("source", source)):
        if value is not None:
            check_text(value, f"{where}: field {name!r}")
    meta = row.get("meta") or {}
    if not isinstance(meta, dict):
        raise DataError(f"{where}: field 'meta' must be an object")
    check_json(meta, f"{where}: field 'meta'")
    extras = {k: v for k, v in row.items() if k not in KNOWN_FIELDS}
    for k, v in extras.items():
        check_text(k, f"{where}: a field name")
        check_json(v, f"{where}: field {k!r}")
    meta = {**extras, **meta}
    # read_rows names a record "<path>:3" (JSONL, CSV), "<path> row 3" (Parquet) or "<path>[train] row 3".
    position = path.name + where[len(str(path)):]
    key = str(doc_id) if doc_id is not None else position
    check_text(key, f"{where}: field 'id'", allow_blank=False)
    return DocumentRecord(key, text, title, source if source is not None else position, meta, where)


def read_documents(path: str | Path) -> list[DocumentRecord]:
    """Every document of ``path``, checked; one bad record raises a :class:`DataError` naming it."""
    from prefloop.feedback.importer import read_rows

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if path.is_dir() and not _is_hf_dataset(path):
        records = _folder_records(path)
    elif path.is_file() and path.suffix.lower() in TEXT_SUFFIXES:
        records = [_text_file_record(path, path.name)]
    else:
        try:
            records = [_row_record(path, where, row) for where, row in read_rows(path)]
        except UnicodeDecodeError as exc:  # read_rows decodes JSONL/CSV as UTF-8
            raise DataError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})", hint="save the file as UTF-8") from None
    if not records:
        raise DataError(f"{path}: no documents found")
    seen: dict[str, str] = {}
    for rec in records:
        if len(rec.key) > MAX_KEY:
            raise DataError(f"{rec.where}: the document key is {len(rec.key)} characters long; at most {MAX_KEY} are allowed")
        if rec.key in seen:
            raise DataError(f"{rec.where}: document key {rec.key!r} already used at {seen[rec.key]}",
                            hint="give every record a distinct 'id'")
        seen[rec.key] = rec.where
    return records


# ----------------------------------------------------------------------------------------- writing
def load_chunk_tokenizer(chunking: Chunking) -> Any:
    """The tokenizer that ``unit: tokens`` counts with (``None`` for words)."""
    if chunking.unit != "tokens":
        return None
    from prefloop.training.loading import load_tokenizer

    return load_tokenizer(chunking.tokenizer or "")


def _chunk_rows(kb_id: int, doc_id: int, text: str, spans: list[Span]) -> list[dict[str, Any]]:
    rows = []
    for sp in spans:
        piece = text[sp.char_start:sp.char_end]
        rows.append({
            "kb_id": kb_id, "document_id": doc_id, "position": sp.position, "char_start": sp.char_start,
            "char_end": sp.char_end, "n_units": sp.n_units, "text": piece,
            "content_hash": sha256_json(piece),
        })
    return rows


def _batches(items: list[Any]) -> list[list[Any]]:
    return [items[i:i + _BATCH] for i in range(0, len(items), _BATCH)]


def import_kb(
    store: Store,
    path: str | Path,
    *,
    kb: str = "default",
    chunking: Chunking | None = None,
    prune: bool = False,
    tokenizer: Any = None,
) -> KbImportResult:
    """Read and chunk every document of ``path``, then apply the changes in one transaction.

    ``chunking=None`` keeps the knowledge base's chunking (the defaults for a new one).
    """
    check_text(kb, "knowledge base name", error=DataError, allow_blank=False, max_length=200)
    records = read_documents(path)
    with store.session() as s:
        row = s.scalars(select(KnowledgeBase).where(KnowledgeBase.name == kb)).first()
        current = Chunking.model_validate(row.chunking) if row is not None else None
    chunking = chunking or current or Chunking()
    if tokenizer is None:
        tokenizer = load_chunk_tokenizer(chunking)
    spans = {rec.key: chunk_spans(rec.text, chunking, tokenizer) for rec in records}
    for rec in records:
        if not spans[rec.key]:
            raise DataError(f"{rec.where}: field 'text' has no {chunking.unit} to index")
    try:
        return _apply(store, kb, records, spans, chunking, prune, tokenizer)
    except IntegrityError:
        raise DataError(
            f"knowledge base {kb!r} was changed by another import at the same time; nothing was imported",
            hint="run the import again",
        ) from None


def _apply(
    store: Store, kb: str, records: list[DocumentRecord], spans: dict[str, list[Span]], chunking: Chunking,
    prune: bool, tokenizer: Any,
) -> KbImportResult:
    current: Chunking | None = None
    chunking_json = chunking.model_dump(mode="json")
    with store.session() as s:
        # One import of a knowledge base at a time: on PostgreSQL a second one waits here and then
        # reads the first one's result (SQLite's BEGIN IMMEDIATE already serialises writers).
        kb_row = s.scalars(select(KnowledgeBase).where(KnowledgeBase.name == kb).with_for_update()).first()
        if kb_row is not None:
            current = Chunking.model_validate(kb_row.chunking)
        else:
            kb_row = KnowledgeBase(name=kb, chunking=chunking_json, content_hash="", revision=uuid.uuid4().hex, meta={})
            s.add(kb_row)
            s.flush()
        kb_id = kb_row.id
        existing = {key: (doc_id, h) for doc_id, key, h in s.execute(
            select(KbDocument.id, KbDocument.key, KbDocument.content_hash).where(KbDocument.kb_id == kb_id))}
        rechunk_all = current is not None and current != chunking
        new = [r for r in records if r.key not in existing]
        changed = [r for r in records if r.key in existing and existing[r.key][1] != r.content_hash]
        unchanged = [r for r in records if r.key in existing and existing[r.key][1] == r.content_hash]
        imported = {r.key for r in records}
        gone = [doc_id for key, (doc_id, _) in existing.items() if key not in imported] if prune else []
        now = utcnow()

        # Documents whose chunks are (re)written: changed ones, and every kept one when the chunking changed.
        stale_ids = [existing[r.key][0] for r in changed]
        rewrite: list[tuple[int, str, list[Span]]] = [(existing[r.key][0], r.text, spans[r.key]) for r in changed]
        if rechunk_all:
            for r in unchanged:
                stale_ids.append(existing[r.key][0])
                rewrite.append((existing[r.key][0], r.text, spans[r.key]))
            gone_ids = set(gone)
            others = [doc_id for key, (doc_id, _) in existing.items() if key not in imported and doc_id not in gone_ids]
            for ids in _batches(others):
                for doc_id, text in s.execute(select(KbDocument.id, KbDocument.text).where(KbDocument.id.in_(ids))):
                    stale_ids.append(doc_id)
                    rewrite.append((doc_id, text, chunk_spans(text, chunking, tokenizer)))
        for ids in _batches(stale_ids + gone):
            s.execute(delete(KbChunk).where(KbChunk.document_id.in_(ids)))
        for ids in _batches(gone):
            s.execute(delete(KbDocument).where(KbDocument.id.in_(ids)))
        if changed:
            s.execute(update(KbDocument), [
                {"id": existing[r.key][0], "text": r.text, "title": r.title, "source": r.source, "meta": r.meta,
                 "content_hash": r.content_hash, "updated_at": now} for r in changed])
        if new:
            created = s.execute(
                insert(KbDocument).returning(KbDocument.id, sort_by_parameter_order=True),
                [{"kb_id": kb_id, "key": r.key, "text": r.text, "title": r.title, "source": r.source, "meta": r.meta,
                  "content_hash": r.content_hash, "created_at": now, "updated_at": now} for r in new],
            ).scalars().all()
            rewrite.extend((doc_id, r.text, spans[r.key]) for doc_id, r in zip(created, new, strict=True))
        chunk_rows = [row for doc_id, text, sp in rewrite for row in _chunk_rows(kb_id, doc_id, text, sp)]
        if chunk_rows:
            s.execute(insert(KbChunk), chunk_rows)

        docs = s.execute(select(KbDocument.key, KbDocument.content_hash).where(KbDocument.kb_id == kb_id)).all()
        new_hash = content_hash(chunking_json, [(k, h) for k, h in docs])
        if new_hash != kb_row.content_hash:
            kb_row.content_hash = new_hash
            kb_row.chunking = chunking_json
            kb_row.revision = uuid.uuid4().hex
            kb_row.updated_at = now
        n_chunks = s.scalar(select(func.count()).select_from(KbChunk).where(KbChunk.kb_id == kb_id)) or 0
    if chunk_rows:
        analyze(store)
    return KbImportResult(
        kb, len(new), len(changed), len(unchanged), len(gone), len(rewrite) - len(changed) - len(new),
        len(chunk_rows), len(docs), n_chunks, new_hash,
    )
