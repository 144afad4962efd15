"""The store's knowledge bases: a knowledge base holds documents, a document holds chunks.

Chunks are what retrievers return; each keeps its provenance (document key, source, title,
position, character span in the document) so that a passage placed in a prompt can be traced
back to the line of the file it came from. Every document and chunk carries the sha256 of its
content, and the knowledge base the hash of all of them: re-importing unchanged content changes
nothing, and indexes built outside the store (BM25, embeddings) know when they are stale.

On PostgreSQL, migration 0004 also gives ``kb_chunks`` a generated ``tsv`` column
(``to_tsvector('english', text)``, stored) with a GIN index for full-text search. It is not
mapped here: only :mod:`.postgres` reads it, through SQL, and SQLite has no such column.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from prefloop.feedback.store.models import Base, utcnow


class KnowledgeBase(Base):
    """A named collection of documents, chunked one way (``chunking``)."""

    __tablename__ = "knowledge_bases"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # {"unit": "words"|"tokens", "size": int, "overlap": int, "tokenizer": str|None}
    chunking: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # sha256 over the chunking and every (document key, document hash): equal content, equal hash.
    content_hash: Mapped[str] = mapped_column(String(64))
    # A fresh random token whenever the content changes: indexes built outside the store are keyed
    # by it, so a knowledge base deleted and imported again never reuses a stale index.
    revision: Mapped[str] = mapped_column(String(32))
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class KbDocument(Base):
    """One document of a knowledge base, identified by its ``key`` (the record's id or its path)."""

    __tablename__ = "kb_documents"
    __table_args__ = (UniqueConstraint("kb_id", "key", name="uq_kb_document_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(500))
    title: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)  # file path (and line) or the record's `source`
    text: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    content_hash: Mapped[str] = mapped_column(String(64))  # sha256 of text, title, source and meta
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class KbChunk(Base):
    """A passage of a document: ``text`` is exactly ``document.text[char_start:char_end]``."""

    __tablename__ = "kb_chunks"

    id: Mapped[int] = mapped_column(primary_key=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("kb_documents.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # 0, 1, … within the document
    char_start: Mapped[int] = mapped_column(Integer)
    char_end: Mapped[int] = mapped_column(Integer)
    n_units: Mapped[int] = mapped_column(Integer)  # words or tokens, per the KB's chunking
    text: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
