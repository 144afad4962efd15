"""The server-rendered pages: sign-in, sign-out, the annotation page and the admin dashboard.

Browsers sign in once with their token through a form (itself CSRF-protected by a short-lived
cookie) and get an HttpOnly, SameSite=Strict session cookie kept server-side (:mod:`.sessions`):
signing out ends it. Templates autoescape; the page's script reads data from the API only.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from prefloop.errors import AuthError

from .errors import RateLimited
from .identity import PageUserDep, browser_session, sign_in
from .security import csrf_matches
from .sessions import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    end_session,
    find_session,
    open_session,
)
from .state import ServerState, ServerStateDep

router = APIRouter(include_in_schema=False)


def _set_cookie(state: ServerState, request: Request, response: Response, name: str, value: str,
                max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, httponly=True, samesite="strict", path="/",
        secure=state.config.server.secure_cookies or request.url.scheme == "https",
    )


def _login_page(state: ServerState, request: Request, error: str | None = None, status_code: int = 200,
                headers: dict[str, str] | None = None) -> HTMLResponse:
    csrf = secrets.token_urlsafe(24)
    response = state.render("login.html", status_code, csrf=csrf, error=error)
    response.headers.update(headers or {})
    _set_cookie(state, request, response, LOGIN_CSRF_COOKIE, csrf, 3600)
    return response


@router.get("/")
def index(request: Request, state: ServerStateDep) -> Response:
    return RedirectResponse("/annotate" if browser_session(request, state) else "/login", status_code=303)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/login")
def login_form(request: Request, state: ServerStateDep) -> Response:
    if browser_session(request, state):
        return RedirectResponse("/annotate", status_code=303)
    return _login_page(state, request)


@router.post("/login")
def login(
    request: Request,
    state: ServerStateDep,
    token: Annotated[str, Form(max_length=500)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not csrf_matches(csrf_token, expected):
        return _login_page(state, request, "This form expired. Please sign in again.", 403)
    try:
        principal = sign_in(state, request, token.strip())
    except RateLimited as exc:
        return _login_page(state, request, f"Too many failed sign-ins. Wait {exc.retry_after} s and try again.", 429,
                           headers={"Retry-After": str(exc.retry_after)})
    except AuthError:
        return _login_page(state, request, "Unknown or revoked token.", 401)
    cookie, _ = open_session(state.store, principal, state.session_seconds)
    response = RedirectResponse("/annotate", status_code=303)
    _set_cookie(state, request, response, SESSION_COOKIE, cookie, state.session_seconds)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


@router.post("/logout")
def logout(request: Request, state: ServerStateDep, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    found = find_session(state.store, cookie)
    if found is not None and not csrf_matches(csrf_token, found[1]):
        return Response("missing or wrong CSRF token", status_code=403, media_type="text/plain")
    end_session(state.store, cookie)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/annotate")
def annotate_page(who: PageUserDep, state: ServerStateDep) -> Response:
    principal, csrf = who
    return state.render("annotate.html", principal=principal, csrf=csrf, guidelines=state.config.annotation.guidelines)


@router.get("/admin")
def admin_page(who: PageUserDep, state: ServerStateDep) -> Response:
    principal, csrf = who
    if not principal.is_admin:
        return state.render("forbidden.html", 403, principal=principal, csrf=csrf)
    from .dashboard import (
        dashboard_context,  # on first use: it pulls in the statistics code
    )

    return state.render("admin.html", principal=principal, csrf=csrf, **dashboard_context(state.store, state.queue,
                                                                                   trust_config=state.config.judges.trust))
