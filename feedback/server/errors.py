"""How the server answers when a request fails: one JSON shape, the right status, no echo.

- The client's fault is a 4xx ``{"error", "hint"}``; an invalid field adds ``"fields": [{"loc",
  "msg"}]``. FastAPI's own validation answer echoes the input, which fails outright for NaN or a
  lone surrogate (JSON cannot encode them): here nothing the client sent is repeated except
  field names, escaped when they are not printable.
- A database that is briefly busy (SQLite's write lock held past the busy timeout, a PostgreSQL
  lock or connection problem, an exhausted pool) is a 503 with ``Retry-After``: the request
  changed nothing and can be sent again as it is.
- prefloop's own errors map to their status (:func:`status_for`): a bad token 401, a sign-in flood
  429 with ``Retry-After``, a wrong role or CSRF token 403, a missing object 404, an answer that
  does not fit its task 422 (naming ``body.value``), a task that is not the caller's to answer 409.
- A page asked for without a session is a redirect to ``/login``.
- Anything else is a bug: a 500 ``{"error": "internal error"}``, the traceback only in the log.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from prefloop.errors import (
    AuthError,
    DuplicateSubmission,
    InvalidAnswer,
    NotAssigned,
    NotFoundError,
    PrefloopError,
    QueueError,
)

#: seconds a client should wait before retrying when the database was busy.
BUSY_RETRY_AFTER_S = 1
#: what FastAPI raises (400) for a body it cannot even decode; answered as the 422 it is.
FASTAPI_UNPARSABLE_BODY = "There was an error parsing the body"
#: PostgreSQL error classes that mean "not now" rather than "never": connection exception (08),
#: transaction rollback (40: serialization failure, deadlock), insufficient resources (53),
#: lock not available (55), operator intervention (57: canceled, shutting down).
_PG_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "55", "57"})


class RateLimited(PrefloopError):
    """Too many failed sign-ins: wait ``retry_after`` seconds."""

    def __init__(self, seconds: float) -> None:
        super().__init__("too many failed sign-ins", hint=f"wait {seconds:.0f} s and try again")
        self.retry_after = max(1, int(seconds + 0.999))


class Forbidden(PrefloopError):
    """Signed in, but not allowed (role, or a missing CSRF token)."""


class SignInFirst(Exception):
    """A page was asked for without a valid session: the answer is a redirect to /login."""


def status_for(exc: PrefloopError) -> int:
    """The HTTP status of one of prefloop's errors (400 for any not listed)."""
    for cls, code in (
        (RateLimited, 429), (AuthError, 401), (Forbidden, 403), (NotFoundError, 404), (InvalidAnswer, 422),
        (NotAssigned, 409), (DuplicateSubmission, 409), (QueueError, 409),
    ):
        if isinstance(exc, cls):
            return code
    return 400


def printable(text: str, limit: int = 200) -> str:
    """``text`` safe to put in a JSON answer and a log line: control characters and lone
    surrogates escaped (``\\x00``, ``\\ud800``), cut to ``limit`` characters."""
    out = []
    for ch in text[:limit]:
        code = ord(ch)
        if code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out) + ("…" if len(text) > limit else "")


def error_body(error: str, hint: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": printable(error, 2000), "hint": printable(hint, 2000) if hint else None, **extra}


def invalid_request(errors: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The 422 body for pydantic/FastAPI validation errors, without their ``input``."""
    fields = []
    for e in errors:
        loc = [part if isinstance(part, int) else printable(str(part), 100) for part in e.get("loc", ())]
        fields.append({"loc": loc, "msg": printable(str(e.get("msg", "invalid")), 500)})
    if not fields:
        fields = [{"loc": ["body"], "msg": "invalid request"}]
    first = fields[0]
    where = ".".join(str(p) for p in first["loc"]) or "request"
    more = f" (and {len(fields) - 1} more, see fields)" if len(fields) > 1 else ""
    return error_body(f"invalid {where}: {first['msg']}{more}", "fix the named field(s); the schema is at "
                      "/api/openapi.json", fields=fields)


def database_busy(exc: BaseException) -> bool:
    """True when ``exc`` says the database could not serve the request now, but may in a moment."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        message = str(orig).lower()
        return "locked" in message or "busy" in message
    sqlstate = getattr(orig, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in _PG_TRANSIENT_CLASSES


def busy_response() -> JSONResponse:
    body = error_body("the database is busy", f"nothing was changed; retry in {BUSY_RETRY_AFTER_S} s")
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(BUSY_RETRY_AFTER_S)})


def prefloop_error_response(exc: PrefloopError) -> JSONResponse:
    code = status_for(exc)
    headers: dict[str, str] = {}
    if code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    extra: dict[str, Any] = {}
    if isinstance(exc, InvalidAnswer):  # the answer does not fit its task
        extra["fields"] = [{"loc": ["body", "value"], "msg": printable(exc.message, 500)}]
    return JSONResponse(error_body(exc.message, exc.hint, **extra), status_code=code, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""

    @app.exception_handler(PrefloopError)
    async def _prefloop_error(request: Request, exc: PrefloopError) -> JSONResponse:
        return prefloop_error_response(exc)

    @app.exception_handler(SignInFirst)
    async def _sign_in_first(request: Request, exc: SignInFirst) -> RedirectResponse:
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(invalid_request(exc.errors()), status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == FASTAPI_UNPARSABLE_BODY:  # e.g. not UTF-8
            problem = {"loc": ["body"], "msg": "the body is not valid JSON in UTF-8"}
            return JSONResponse(invalid_request([problem]), status_code=422)
        body = error_body(str(exc.detail), "see /api/openapi.json for the API's paths and methods")
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        if database_busy(exc):
            return busy_response()
        raise exc  # a real fault: the 500 handler answers, and the server logs the traceback

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        body = error_body("internal error", "the server logged the details; try again, or tell the admin")
        return JSONResponse(body, status_code=500)
