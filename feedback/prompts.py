"""Prompt identity: one row per distinct prompt content, whichever path created it.

Readers list prompts through :func:`visible_prompts`: the rows of a bulk write that has not
committed yet (see :mod:`.bulk`) are already in the table but belong to nobody yet.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import Select, exists, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from prefloop.errors import DataError
from prefloop.text import check_json, check_text

from .store.models import BulkWrite, Prompt

#: The state of a bulk write whose rows nobody may see yet.
STAGING = "staging"

PromptInput = str | list[dict[str, str]]
#: the longest ``source`` label the prompts table holds (PostgreSQL refuses longer ones).
MAX_SOURCE = 500


def normalise_messages(messages: Any, *, where: str = "prompt") -> list[dict[str, str]]:
    """Check chat messages: a non-empty list of {role, content} with storable text, ending with a user turn."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: messages[{i}] must be an object with string 'role' and 'content'")
        if m["role"] not in ("system", "user", "assistant"):
            raise DataError(f"{where}: messages[{i}].role is {m['role'][:40]!r}; expected system, user or assistant")
        check_text(m["content"], f"{where}: messages[{i}].content")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] == "assistant":
        raise DataError(f"{where}: the last message is the assistant's; a prompt must end with a user turn")
    check_text(out[-1]["content"], f"{where}: messages[{len(out) - 1}].content", allow_blank=False)
    return out


def check_prompt(prompt: Any, *, where: str = "prompt") -> PromptInput:
    """``prompt`` if it is storable: non-blank text, or chat messages (see :func:`normalise_messages`)."""
    if isinstance(prompt, str):
        return check_text(prompt, where, allow_blank=False)
    if isinstance(prompt, list):
        return normalise_messages(prompt, where=where)
    raise DataError(f"{where}: expected text or a list of chat messages, got {type(prompt).__name__}")


def check_tags(tags: Any, *, where: str = "tags") -> list[str]:
    """A list of non-blank, storable tag strings."""
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise DataError(f"{where} must be a list of strings")
    for i, t in enumerate(tags):
        check_text(t, f"{where}[{i}]", allow_blank=False)
    return tags


def prompt_hash(text: str | None, messages: list[dict[str, str]] | None) -> str:
    if messages is None and text is not None:  # the common case, written out: 3× faster for bulk imports
        payload = '{"messages": null, "text": ' + json.dumps(text, ensure_ascii=False) + "}"
    else:
        payload = json.dumps({"text": text, "messages": messages}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def prompt_fields(
    prompt: PromptInput,
    *,
    source: str | None = None,
    split: str = "train",
    tags: list[str] | None = None,
    meta: dict[str, Any] | None = None,
    reference: str | None = None,
    checked: bool = False,
) -> dict[str, Any]:
    """The column values of a prompt row, content hash included (one insert or a bulk one).

    Every field is checked against the text policy (:mod:`prefloop.text`) first — a prompt that
    could not be stored alike on both databases, or exported afterwards, is refused — unless
    ``checked``: the bulk path passes records that :func:`prefloop.feedback.importer.parse_record`
    has checked already, field by field, with file and line in its messages.
    """
    if not checked:
        prompt = check_prompt(prompt)
        if source is not None:
            check_text(source, "source", max_length=MAX_SOURCE)
        check_tags(list(tags or []))
        if reference is not None:
            check_text(reference, "reference")
        check_json(dict(meta or {}), "meta")
    text, messages = (prompt, None) if isinstance(prompt, str) else (None, prompt)
    return {
        "text": text, "messages": messages, "source": source, "split": split, "tags": list(tags or []),
        "meta": dict(meta or {}), "reference": reference, "content_hash": prompt_hash(text, messages),
    }


def visible() -> ColumnElement[bool]:
    """True for prompts that are not part of a bulk write still staging."""
    return ~exists().where(BulkWrite.id == Prompt.bulk_id, BulkWrite.state == STAGING)


def visible_prompts(split: str | None = None) -> Select:
    """Prompts a reader may use (optionally of one split), in the order they were stored."""
    q = select(Prompt).where(visible())
    if split is not None:
        q = q.where(Prompt.split == split)
    return q.order_by(Prompt.id)


def get_or_create_prompt(
    session: Session,
    prompt: PromptInput,
    *,
    source: str | None = None,
    split: str = "train",
    tags: list[str] | None = None,
    meta: dict[str, Any] | None = None,
    reference: str | None = None,
) -> tuple[Prompt, bool]:
    """Return the stored prompt with this content, creating it if new (``(prompt, created)``).

    A prompt that a bulk write has staged but not committed is adopted: it becomes visible now
    and no longer the bulk write's to delete if that write fails.
    """
    fields = prompt_fields(prompt, source=source, split=split, tags=tags, meta=meta, reference=reference)
    existing = session.scalar(select(Prompt).where(Prompt.content_hash == fields["content_hash"]))
    if existing is not None:
        if existing.bulk_id is not None and session.scalar(
            select(BulkWrite.state).where(BulkWrite.id == existing.bulk_id)
        ) == STAGING:
            existing.bulk_id = None
            session.flush()
        return existing, False
    row = Prompt(**fields)
    session.add(row)
    session.flush()
    return row, True
