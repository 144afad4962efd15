"""What guards every request around the routes: the security headers on every answer (a 500
included), a cap on the body size, no unknown query parameters, and the CSRF check that a
cookie-authenticated write must pass.

The two ASGI layers are plain classes rather than Starlette middleware: the headers layer sits
outside FastAPI's own error layer (see :mod:`.app`), and the body limit reads the body itself.
"""

from __future__ import annotations

import secrets

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: the header a page's script sends its session's CSRF token in, on every state-changing request.
CSRF_HEADER = "x-csrf-token"
#: methods that change nothing: a cookie alone may make them.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
]


class SecurityHeaders:
    """Adds the CSP and friends to every response; pages and API answers are never cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += SECURITY_HEADERS
                if not cacheable:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """Refuses (413) a request whose declared or streamed body exceeds ``max_bytes``.

    The body is read here, up to the limit, before the app sees the request: a refusal can then
    never be mistaken for a parse error further in, and a chunked body gets no more room than a
    declared one.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Send) -> None:
        body = b'{"error":"request body too large","hint":"the server accepts at most %d bytes"}' % self.max_bytes
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await self._refuse(send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """An ASGI ``receive`` that hands out ``messages`` first, then defers to the real one."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


def csrf_matches(sent: str, expected: str) -> bool:
    """Whether a request carries its session's CSRF token (compared in constant time)."""
    return secrets.compare_digest(sent.encode(), expected.encode())


def _query_names(dependant: Dependant) -> set[str]:
    names = {f.alias for f in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def reject_unknown_query_parameters(request: Request) -> None:
    """Refuse a query parameter the operation does not declare, as bodies refuse unknown keys:
    a misspelt ``round_id`` must not silently mean "all rounds"."""
    route = request.scope.get("route")
    known = _query_names(route.dependant) if route is not None else set()
    unknown = sorted(k for k in request.query_params if k not in known)
    if unknown:
        raise RequestValidationError(
            [{"type": "extra_forbidden", "loc": ("query", k), "msg": "unknown query parameter"} for k in unknown]
        )
