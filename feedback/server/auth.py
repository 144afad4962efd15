"""Annotator identity: tokens shown once, stored only as their sha256, and looked up by hash.

A token is 256 random bits (``secrets.token_urlsafe``): a hash without salt is enough, since
nobody can guess such a token from its hash, and it lets a request find its annotator with one
indexed lookup. Revoking clears the hash, which also ends every browser session signed with it
(sessions keep a fingerprint of the hash, see :mod:`.sessions`).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, func, select, update

from prefloop.errors import AuthError, NotFoundError, QueueError
from prefloop.text import text_problem

from ..store.db import Store
from ..store.models import Annotation, AnnotationStatus, Annotator, AnnotatorKind, Role

TOKEN_PREFIX = "pfl_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a signed-in human annotator."""

    id: int
    name: str
    role: str
    token_hash: str

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN.value


@dataclass(frozen=True)
class AnnotatorInfo:
    name: str
    kind: str
    role: str
    active: bool
    has_token: bool
    submitted: int
    skipped: int


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def add_annotator(store: Store, name: str, *, admin: bool = False, rotate: bool = False) -> str:
    """Create a human annotator (or give an existing one a new token with ``rotate``); returns the token.

    The token is returned once and never stored: only its hash is.
    """
    name = name.strip()
    if not name or len(name) > 200:
        raise QueueError("an annotator name must have 1 to 200 characters", hint="e.g. `prefloop annotators add alice`")
    token = new_token()
    role = Role.ADMIN.value if admin else Role.ANNOTATOR.value
    with store.session() as s:
        row = s.scalar(select(Annotator).where(Annotator.name == name))
        if row is not None:
            if row.kind != AnnotatorKind.HUMAN.value:
                raise QueueError(f"{name!r} is a {row.kind}, not a human annotator", hint="pick another name")
            if row.active and row.token_hash and not rotate:
                raise QueueError(
                    f"annotator {name!r} already exists",
                    hint="pass --rotate to issue a new token (the old one stops working)",
                )
            row.token_hash = hash_token(token)
            row.active = True
            if admin:
                row.role = role
            return token
        s.add(Annotator(name=name, kind=AnnotatorKind.HUMAN.value, role=role, token_hash=hash_token(token), meta={}))
    return token


def revoke_annotator(store: Store, name: str) -> None:
    """Disable an annotator's token and sessions; their answers stay in the store."""
    with store.session() as s:
        res = cast("CursorResult[Any]", s.execute(  # an UPDATE's result: it counts the rows it changed
            update(Annotator).where(Annotator.name == name, Annotator.kind == AnnotatorKind.HUMAN.value)
            .values(active=False, token_hash=None)
        ))
        if res.rowcount == 0:
            raise NotFoundError(f"no human annotator called {name!r}", hint="see `prefloop annotators list`")


def list_annotators(store: Store) -> list[AnnotatorInfo]:
    with store.session() as s:
        counts: dict[tuple[int, str], int] = {
            (a, st): n
            for a, st, n in s.execute(
                select(Annotation.annotator_id, Annotation.status, func.count()).group_by(
                    Annotation.annotator_id, Annotation.status
                )
            )
        }
        rows = s.scalars(select(Annotator).order_by(Annotator.kind, Annotator.name)).all()
        return [
            AnnotatorInfo(
                name=r.name, kind=r.kind, role=r.role, active=r.active, has_token=r.token_hash is not None,
                submitted=counts.get((r.id, AnnotationStatus.SUBMITTED.value), 0),
                skipped=counts.get((r.id, AnnotationStatus.SKIPPED.value), 0),
            )
            for r in rows
        ]


def authenticate(store: Store, token: str) -> Principal:
    """The active human annotator holding ``token``, or :class:`AuthError`."""
    if not token or len(token) > 200 or text_problem(token) is not None:
        raise AuthError("missing or malformed token")
    return _principal_where(store, Annotator.token_hash == hash_token(token))


def _principal_where(store: Store, condition: ColumnElement[bool]) -> Principal:
    with store.session() as s:
        row = s.execute(
            select(Annotator.id, Annotator.name, Annotator.role, Annotator.token_hash).where(
                condition, Annotator.active.is_(True), Annotator.kind == AnnotatorKind.HUMAN.value,
                Annotator.token_hash.is_not(None),
            )
        ).first()
    if row is None:
        raise AuthError("unknown or revoked token", hint="ask an admin for a token: `prefloop annotators add NAME`")
    return Principal(id=row.id, name=row.name, role=row.role, token_hash=row.token_hash)
