"""Indexes kept beside the store (BM25 matrices, embeddings), one folder per knowledge-base revision.

A folder is named after the knowledge base's id and its ``revision``, which changes with every
change of content, so a stale index is never read: the next retriever builds a new one and the
old folders of that knowledge base are removed. A folder is built under a file lock in a
temporary folder and renamed into place when complete, so a reader sees a whole index or none,
and two processes never build the same one twice.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from prefloop.feedback.store.db import Store

from .kb import KbInfo, kb_info
from .models import KbChunk, KnowledgeBase

META = "meta.json"
FORMAT = 1


def load_chunks(store: Store, kb: KbInfo) -> tuple[list[int], list[str]] | None:
    """Every chunk (ids ascending, texts) of ``kb`` as of its revision; ``None`` if it changed since."""
    with store.session() as s:
        ids, texts = [], []
        for cid, text in s.execute(select(KbChunk.id, KbChunk.text).where(KbChunk.kb_id == kb.id).order_by(KbChunk.id)):
            ids.append(cid)
            texts.append(text)
        revision = s.scalar(select(KnowledgeBase.revision).where(KnowledgeBase.id == kb.id))
    # Re-read after the chunks: under READ COMMITTED an import may have committed in between.
    return (ids, texts) if revision == kb.revision else None


def index_folder(root: Path, kind: str, kb: KbInfo, variant: str = "") -> Path:
    return Path(root) / kind / f"kb{kb.id}-{kb.revision}{('-' + variant) if variant else ''}"


def read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return None


def ensure_index(
    store: Store,
    root: Path,
    kind: str,
    kb: KbInfo,
    build: Callable[[Path, list[int], list[str]], dict[str, Any]],
    variant: str = "",
) -> tuple[Path, KbInfo]:
    """The folder of ``kind``'s index of ``kb``, built with ``build(tmp, ids, texts)`` if missing.

    Returns the folder and the knowledge base as indexed (refreshed if it changed meanwhile).
    """
    from filelock import FileLock

    for _ in range(5):
        folder = index_folder(root, kind, kb, variant)
        meta = read_meta(folder)
        if meta is not None and meta.get("content_hash") == kb.content_hash and meta.get("format") == FORMAT:
            return folder, kb
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):
            meta = read_meta(folder)
            if meta is not None and meta.get("content_hash") == kb.content_hash and meta.get("format") == FORMAT:
                return folder, kb
            loaded = load_chunks(store, kb)
            if loaded is None:  # the knowledge base changed while we read it: index the new revision
                kb = kb_info(store, kb.name)
                continue
            ids, texts = loaded
            tmp = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
            tmp.mkdir()
            try:
                extra = build(tmp, ids, texts)
                meta = {"format": FORMAT, "kb": kb.name, "kb_id": kb.id, "revision": kb.revision,
                        "content_hash": kb.content_hash, "chunks": len(ids), **extra}
                (tmp / META).write_text(json.dumps(meta, indent=1))
                if folder.exists():  # an unreadable leftover (e.g. a crash before this code existed)
                    shutil.rmtree(folder)
                os.replace(tmp, folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        _remove_stale(folder, kb)
        return folder, kb
    raise RuntimeError(f"knowledge base {kb.name!r} kept changing while it was being indexed")


def _remove_stale(current: Path, kb: KbInfo) -> None:
    """Drop the other revisions' folders of this knowledge base (never the one just built)."""
    prefix = f"kb{kb.id}-"
    for p in current.parent.glob(prefix + "*"):
        if p == current or p.name == current.name + ".lock" or ".tmp-" in p.name:
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.suffix == ".lock":
            p.unlink(missing_ok=True)


def drop_indexes(root: Path, kb_id: int) -> None:
    """Remove every index folder of knowledge base ``kb_id`` under ``root`` (after deleting it)."""
    for p in Path(root).glob(f"*/kb{kb_id}-*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
