"""Browser sessions, kept in the store so that signing out really ends them.

The cookie carries 256 random bits; the ``sessions`` table keeps only their sha256 (someone who
reads the database cannot sign in with it), who signed in, a fingerprint of the token they used
(rotating or revoking it ends the session) and the session's CSRF token. Signing out deletes
the row, so a copied cookie stops working at once; sessions survive a server restart.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import delete, select

from ..store.db import Store
from ..store.models import Annotator, AnnotatorKind, BrowserSession, utcnow
from .auth import Principal

#: the cookie that holds a browser's session (HttpOnly, SameSite=Strict).
SESSION_COOKIE = "prefloop_session"
#: the cookie that holds the sign-in form's CSRF token until the form is sent.
LOGIN_CSRF_COOKIE = "prefloop_login_csrf"
FINGERPRINT_CHARS = 16
MAX_COOKIE_CHARS = 100


def _key(cookie: str) -> str:
    return hashlib.sha256(cookie.encode("utf-8", "surrogateescape")).hexdigest()


def open_session(store: Store, principal: Principal, seconds: int) -> tuple[str, str]:
    """Start a session for ``principal``; returns (cookie value, CSRF token). Expired rows go too."""
    cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    now = utcnow()
    with store.session() as s:
        s.execute(delete(BrowserSession).where(BrowserSession.expires_at < now))
        s.add(BrowserSession(
            id=_key(cookie), annotator_id=principal.id, token_fingerprint=principal.token_hash[:FINGERPRINT_CHARS],
            csrf=csrf, created_at=now, expires_at=now + dt.timedelta(seconds=seconds),
        ))
    return cookie, csrf


def find_session(store: Store, cookie: str | None) -> tuple[Principal, str] | None:
    """The signed-in annotator and CSRF token of ``cookie``; None if it is no live session."""
    if not cookie or len(cookie) > MAX_COOKIE_CHARS:
        return None
    q = (
        select(Annotator.id, Annotator.name, Annotator.role, Annotator.token_hash, BrowserSession.token_fingerprint,
               BrowserSession.csrf)
        .join(Annotator, Annotator.id == BrowserSession.annotator_id)
        .where(
            BrowserSession.id == _key(cookie), BrowserSession.expires_at > utcnow(), Annotator.active.is_(True),
            Annotator.kind == AnnotatorKind.HUMAN.value, Annotator.token_hash.is_not(None),
        )
    )
    with store.session() as s:
        row = s.execute(q).first()
    if row is None or not secrets.compare_digest(row.token_hash[:FINGERPRINT_CHARS], row.token_fingerprint):
        return None
    return Principal(id=row.id, name=row.name, role=row.role, token_hash=row.token_hash), row.csrf


def end_session(store: Store, cookie: str | None) -> None:
    """Sign out: the cookie no longer opens anything, wherever it was copied to."""
    if cookie and len(cookie) <= MAX_COOKIE_CHARS:
        with store.session() as s:
            s.execute(delete(BrowserSession).where(BrowserSession.id == _key(cookie)))
