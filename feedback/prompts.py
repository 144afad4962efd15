"""Prompt identity: one row per distinct prompt content, whichever path created it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from prefloop.errors import DataError

from .models import Prompt

PromptInput = str | list[dict[str, str]]


def normalise_messages(messages: Any, *, where: str = "prompt") -> list[dict[str, str]]:
    """Check chat messages: a non-empty list of {role, content} with string values."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: messages[{i}] must be an object with string 'role' and 'content'")
        if m["role"] not in ("system", "user", "assistant"):
            raise DataError(f"{where}: messages[{i}].role is {m['role']!r}; expected system, user or assistant")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] == "assistant":
        raise DataError(f"{where}: the last message is the assistant's; a prompt must end with a user turn")
    return out


def prompt_hash(text: str | None, messages: list[dict[str, str]] | None) -> str:
    payload = json.dumps({"text": text, "messages": messages}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


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
    """Return the stored prompt with this content, creating it if new (``(prompt, created)``)."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise DataError("prompt text is empty")
        text, messages = prompt, None
    else:
        text, messages = None, normalise_messages(prompt)
    digest = prompt_hash(text, messages)
    existing = session.scalar(select(Prompt).where(Prompt.content_hash == digest))
    if existing is not None:
        return existing, False
    row = Prompt(
        text=text,
        messages=messages,
        source=source,
        split=split,
        tags=list(tags or []),
        meta=dict(meta or {}),
        reference=reference,
        content_hash=digest,
    )
    session.add(row)
    session.flush()
    return row, True
