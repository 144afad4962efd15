"""Knowledge bases in the store: look one up, list them, delete one, fingerprint its content."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from prefloop.errors import NotFoundError
from prefloop.feedback.store.db import Store

from .models import KbChunk, KbDocument, KnowledgeBase


@dataclass(frozen=True)
class KbInfo:
    """What ``prefloop kb list`` shows, and what retrievers key their indexes by."""

    id: int
    name: str
    chunking: dict[str, Any]
    content_hash: str
    revision: str
    documents: int
    chunks: int


def sha256_json(value: Any) -> str:
    """The sha256 of a JSON value written canonically (sorted keys, no spaces, UTF-8)."""
    payload = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def content_hash(chunking: dict[str, Any], documents: list[tuple[str, str]]) -> str:
    """The knowledge base's hash: its chunking and every (document key, document hash), in key order."""
    return sha256_json({"chunking": chunking, "documents": sorted(documents)})


def kb_names(session: Session) -> list[str]:
    return list(session.scalars(select(KnowledgeBase.name).order_by(KnowledgeBase.name)))


def get_kb_row(session: Session, name: str) -> KnowledgeBase:
    kb = session.scalars(select(KnowledgeBase).where(KnowledgeBase.name == name)).first()
    if kb is None:
        names = kb_names(session)
        raise NotFoundError(
            f"no knowledge base named {name!r}",
            hint=f"knowledge bases: {', '.join(names)}" if names else "import one with `prefloop kb import PATH --kb NAME`",
        )
    return kb


def _info(session: Session, kb: KnowledgeBase) -> KbInfo:
    docs = session.scalar(select(func.count()).select_from(KbDocument).where(KbDocument.kb_id == kb.id)) or 0
    chunks = session.scalar(select(func.count()).select_from(KbChunk).where(KbChunk.kb_id == kb.id)) or 0
    return KbInfo(kb.id, kb.name, dict(kb.chunking), kb.content_hash, kb.revision, docs, chunks)


def kb_info(store: Store, name: str) -> KbInfo:
    """The knowledge base ``name`` with its counts; a missing one is an error listing those that exist."""
    with store.session() as s:
        return _info(s, get_kb_row(s, name))


def list_kbs(store: Store) -> list[KbInfo]:
    with store.session() as s:
        return [_info(s, kb) for kb in s.scalars(select(KnowledgeBase).order_by(KnowledgeBase.name))]


def delete_kb(store: Store, name: str) -> KbInfo:
    """Delete a knowledge base with its documents and chunks (one transaction)."""
    with store.session() as s:
        kb = get_kb_row(s, name)
        info = _info(s, kb)
        # Explicit deletes rather than relying on ON DELETE CASCADE, which SQLite honours only
        # with foreign keys on (prefloop turns them on, a plain sqlite3 shell does not).
        s.execute(delete(KbChunk).where(KbChunk.kb_id == kb.id))
        s.execute(delete(KbDocument).where(KbDocument.kb_id == kb.id))
        s.execute(delete(KnowledgeBase).where(KnowledgeBase.id == kb.id))
    return info


def analyze(store: Store) -> None:
    """PostgreSQL: fresh planner statistics after a bulk import, so searches use the GIN index."""
    if store.dialect == "postgresql":
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE knowledge_bases, kb_documents, kb_chunks")
