"""Who is calling, as FastAPI dependencies.

Scripts send ``Authorization: Bearer TOKEN``; browsers sign in once and send the session cookie
(:mod:`.sessions`), plus the session's CSRF token on every state-changing request. A valid token
always passes; only failures are counted, and a flood of them is slowed down (:mod:`.limiter`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from prefloop.errors import AuthError

from .auth import Principal, authenticate
from .errors import Forbidden, RateLimited, SignInFirst
from .security import CSRF_HEADER, SAFE_METHODS, csrf_matches
from .sessions import SESSION_COOKIE, find_session
from .state import ServerState, ServerStateDep

#: declares the bearer scheme in the OpenAPI document; the check itself is :func:`caller`'s.
bearer = HTTPBearer(auto_error=False, description="a token from `prefloop annotators add NAME`")


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def sign_in(state: ServerState, request: Request, token: str) -> Principal:
    """The token's annotator. A valid token always passes; only failures are counted and limited."""
    try:
        return authenticate(state.store, token)
    except AuthError:
        wait = state.limiter.failed(client_address(request), token)
        if wait:
            raise RateLimited(wait) from None
        raise


def caller(
    request: Request, state: ServerStateDep, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    """The caller of an API request: bearer token, or session cookie plus CSRF token."""
    header = request.headers.get("authorization")
    if header:
        scheme, _sep, token = header.partition(" ")
        if scheme.lower() != "bearer":
            raise AuthError("unsupported authorization scheme", hint="send `Authorization: Bearer TOKEN`")
        return sign_in(state, request, token.strip())
    found = find_session(state.store, request.cookies.get(SESSION_COOKIE))
    if found is None:
        raise AuthError("not signed in", hint="sign in at /login, or send `Authorization: Bearer TOKEN`")
    principal, csrf = found
    if request.method not in SAFE_METHODS and not csrf_matches(request.headers.get(CSRF_HEADER, ""), csrf):
        raise Forbidden("missing or wrong CSRF token", hint=f"send the page's token in the {CSRF_HEADER} header")
    return principal


#: a route parameter that receives the caller of an API request.
CallerDep = Annotated[Principal, Depends(caller)]


def admin(principal: CallerDep) -> Principal:
    """The caller, who must be an admin."""
    if not principal.is_admin:
        raise Forbidden("this needs an admin", hint="ask an admin, or `prefloop annotators add NAME --admin`")
    return principal


def browser_session(request: Request, state: ServerState) -> tuple[Principal, str] | None:
    """The signed-in annotator and CSRF token of the request's session cookie, if it is a live session."""
    return find_session(state.store, request.cookies.get(SESSION_COOKIE))


def page_user(request: Request, state: ServerStateDep) -> tuple[Principal, str]:
    """The signed-in annotator of a page, and their CSRF token; without a session, a redirect to /login."""
    who = browser_session(request, state)
    if who is None:
        raise SignInFirst
    return who


#: a route parameter that receives a page's signed-in annotator and their CSRF token.
PageUserDep = Annotated[tuple[Principal, str], Depends(page_user)]
