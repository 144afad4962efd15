"""The annotation server: one JSON API (documented at ``/api/openapi.json``) for the web page and
for scripts, plus server-rendered pages (sign-in, annotate, admin dashboard).

Safety, in order of the threats:

- model outputs and prompts are untrusted: the page receives them as JSON and puts them in the
  DOM with ``textContent`` only; templates autoescape; a Content-Security-Policy forbids inline
  script, plugins, framing and foreign origins;
- identity: scripts send ``Authorization: Bearer TOKEN``; browsers sign in once and get an
  HttpOnly, SameSite=Strict session cookie (kept server-side: signing out ends it), and every
  state-changing request made with that cookie must carry the session's CSRF token; floods of
  failed sign-ins are slowed down, never a valid token (:mod:`.signin_limiter`);
- isolation: an annotator only ever sees the task the queue leased to them, and every write
  names the caller's own id, so another annotator's token reaches nothing of theirs;
- input: request bodies larger than ``server.max_body_bytes`` are refused before they are read;
  every field is validated against :mod:`.api_models` (storable text, finite numbers, 64-bit ids)
  and every failure answers in one JSON shape (:mod:`.http_errors`); every response, a 500
  included, carries the security headers;
- SQL goes through SQLAlchemy with bound parameters only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader
from sqlalchemy import select

from prefloop.errors import (
    AuthError,
    DuplicateSubmission,
    InvalidAnswer,
    NotAssigned,
    NotFoundError,
    PrefloopError,
    QueueError,
)

from .. import activity
from . import errors as http_errors
from .schemas import (
    AgreementOut,
    AnnotatorOut,
    CandidateOut,
    ClaimIn,
    MeOut,
    MessageOut,
    OkOut,
    ProgressOut,
    PromptOut,
    QueueOut,
    ReceiptOut,
    RoundIdQuery,
    SkipIn,
    SubmitIn,
    SuggestionOut,
    TaskIdPath,
    TaskOut,
    ThroughputOut,
    error_responses,
)
from .auth import Principal, authenticate, list_annotators
from ..db import Store
from ..models import Annotation, AnnotationStatus, Annotator, AnnotatorKind, Task
from ..queue import ClaimedTask, Queue
from .sessions import end_session, find_session, open_session
from .limiter import SignInLimiter

HERE = Path(__file__).parent
SESSION_COOKIE = "prefloop_session"
LOGIN_CSRF_COOKIE = "prefloop_login_csrf"
CSRF_HEADER = "x-csrf-token"
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
LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ---------------------------------------------------------------------------------------- ASGI layers
class SecurityHeaders:
    """Adds the CSP and friends to every response; pages and API answers are never cached."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = scope["path"].startswith("/static/")

        async def send_with_headers(message: dict) -> None:
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

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Any) -> None:
        body = b'{"error":"request body too large","hint":"the server accepts at most %d bytes"}' % self.max_bytes
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
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


def _replay(messages: list[dict], receive: Any) -> Any:
    """An ASGI ``receive`` that hands out ``messages`` first, then defers to the real one."""
    pending = list(messages)

    async def replayed() -> dict:
        return pending.pop(0) if pending else await receive()

    return replayed


class RateLimited(PrefloopError):
    def __init__(self, seconds: float) -> None:
        super().__init__("too many failed sign-ins", hint=f"wait {seconds:.0f} s and try again")
        self.retry_after = max(1, int(seconds + 0.999))


class Forbidden(PrefloopError):
    """Signed in, but not allowed (role, or a missing CSRF token)."""


class _SignInFirst(Exception):
    """A page was asked for without a valid session: the answer is a redirect to /login."""


# ---------------------------------------------------------------------------------------- helpers
def display_order(annotator_id: int, task_id: int, generation_ids: list[int]) -> list[int]:
    """The order this annotator sees a task's outputs in: random, but stable for (annotator, task).

    Stable so that a reloaded page shows the same order and the server can record, at submit
    time, exactly what was shown without trusting the client.
    """
    seed = int.from_bytes(hashlib.sha256(f"{annotator_id}:{task_id}".encode()).digest()[:8], "big")
    order = list(generation_ids)
    random.Random(seed).shuffle(order)
    return order


def _status_for(exc: PrefloopError) -> int:
    for cls, code in (
        (RateLimited, 429), (AuthError, 401), (Forbidden, 403), (NotFoundError, 404), (InvalidAnswer, 422),
        (NotAssigned, 409), (DuplicateSubmission, 409), (QueueError, 409),
    ):
        if isinstance(exc, cls):
            return code
    return 400


def _query_names(dependant: Any) -> set[str]:
    names = {f.alias for f in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _no_unknown_query_parameters(request: Request) -> None:
    """Refuse a query parameter the operation does not declare, as bodies refuse unknown keys:
    a misspelt ``round_id`` must not silently mean "all rounds"."""
    route = request.scope.get("route")
    known = _query_names(route.dependant) if route is not None else set()
    unknown = sorted(k for k in request.query_params if k not in known)
    if unknown:
        raise RequestValidationError(
            [{"type": "extra_forbidden", "loc": ("query", k), "msg": "unknown query parameter"} for k in unknown]
        )


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class _App:
    """The state behind one app: the store, the queue, the config, the sign-in limiter."""

    def __init__(self, store: Store, config: Any) -> None:
        self.store = store
        self.config = config
        self.queue = Queue.from_config(store, config.queue)
        srv = config.server
        self.limiter = SignInLimiter(srv.signin_attempts, srv.signin_overall_attempts, srv.signin_window_seconds)
        self.session_seconds = int(srv.session_hours * 3600)
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)

    # -------------------------------------------------------------- identity
    def sign_in(self, request: Request, token: str) -> Principal:
        """The token's annotator. A valid token always passes; only failures are counted and limited."""
        try:
            return authenticate(self.store, token)
        except AuthError:
            wait = self.limiter.failed(_client_address(request), token)
            if wait:
                raise RateLimited(wait) from None
            raise

    def principal(self, request: Request) -> Principal:
        """The caller of an API request: bearer token, or session cookie plus CSRF token."""
        header = request.headers.get("authorization")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer":
                raise AuthError("unsupported authorization scheme", hint="send `Authorization: Bearer TOKEN`")
            return self.sign_in(request, token.strip())
        found = find_session(self.store, request.cookies.get(SESSION_COOKIE))
        if found is None:
            raise AuthError("not signed in", hint="sign in at /login, or send `Authorization: Bearer TOKEN`")
        principal, csrf = found
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not secrets.compare_digest(sent.encode(), csrf.encode()):
                raise Forbidden("missing or wrong CSRF token", hint=f"send the page's token in the {CSRF_HEADER} header")
        return principal

    def page_principal(self, request: Request) -> tuple[Principal, str] | None:
        return find_session(self.store, request.cookies.get(SESSION_COOKIE))

    def set_cookie(self, request: Request, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name, value, max_age=max_age, httponly=True, samesite="strict", path="/",
            secure=self.config.server.secure_cookies or request.url.scheme == "https",
        )

    # -------------------------------------------------------------- tasks
    def task_out(self, principal: Principal, claimed: ClaimedTask) -> TaskOut:
        texts = {c.generation_id: c.text for c in claimed.candidates}
        order = display_order(principal.id, claimed.task_id, list(texts))
        return TaskOut(
            task_id=claimed.task_id,
            kind=claimed.kind,
            round_id=claimed.round_id,
            prompt=PromptOut(text=claimed.prompt_text, messages=[MessageOut(**m) for m in claimed.prompt_messages]),
            candidates=[CandidateOut(generation_id=g, label=LABELS[i % 26], text=texts[g]) for i, g in enumerate(order)],
            scale=list(claimed.scale) if claimed.scale else None,
            allow_tie=claimed.allow_tie,
            lease_expires_at=claimed.lease_expires_at,
            suggestions=self.suggestions(claimed.task_id) if self.config.annotation.show_judge_suggestions else None,
        )

    def suggestions(self, task_id: int) -> list[SuggestionOut]:
        q = (
            select(Annotator.name, Annotation.value, Annotation.rationale, Annotation.confidence)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .where(
                Annotation.task_id == task_id, Annotator.kind == AnnotatorKind.JUDGE.value,
                Annotation.status == AnnotationStatus.SUBMITTED.value,
            )
            .order_by(Annotator.name)
        )
        with self.store.session() as s:
            return [SuggestionOut(judge=n, value=v, rationale=r, confidence=c) for n, v, r, c in s.execute(q)]

    def shown_order(self, principal: Principal, task_id: int) -> list[int]:
        with self.store.session() as s:
            ids = s.scalar(select(Task.generation_ids).where(Task.id == task_id))
        return display_order(principal.id, task_id, list(ids or []))

    def progress(self, principal: Principal, round_id: int | None = None) -> ProgressOut:
        p = self.queue.progress(principal.id, round_id=round_id)
        return ProgressOut(**p, streak=activity.streak(self.store, principal.id))


def _source(source: Any, config: Any) -> tuple[Store, Any]:
    if isinstance(source, Store):
        if config is None:
            from prefloop.config import ProjectConfig

            config = ProjectConfig()
        return source, config
    store = source.store  # a prefloop.project.Project
    return store, config if config is not None else source.config


class _PrefloopAPI(FastAPI):
    """FastAPI with the security headers outside everything, its own error middleware included,
    so that a 500 carries them too (a plain middleware sits inside Starlette's error layer)."""

    def build_middleware_stack(self) -> Any:
        return SecurityHeaders(super().build_middleware_stack())


def _worker_threads(config: Any, store: Store) -> int:
    """Request threads: ``server.threads``, never more than the store's pool can serve at once
    (each request thread holds at most one connection at a time, so none waits for the pool)."""
    return max(1, min(config.server.threads, store.pool_capacity))


# ---------------------------------------------------------------------------------------- the app
def create_app(source: Any, config: Any = None) -> FastAPI:
    """The FastAPI app over a :class:`~prefloop.project.Project` or a :class:`Store` and a ``ProjectConfig``."""
    store, config = _source(source, config)
    st = _App(store, config)
    threads = _worker_threads(config, store)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        """While serving: no more request threads than pooled connections, and a short wait for
        a busy database (then 503) rather than the bulk writers' long one."""
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        before = store.busy_timeout_s
        store.set_busy_timeout(config.server.busy_timeout_seconds)
        try:
            yield
        finally:
            store.set_busy_timeout(before)

    app = _PrefloopAPI(
        title="prefloop annotation API",
        version="1",
        description="Claim a task, answer it, skip it, see your progress; admins read queue and agreement statistics. "
        "Authenticate with `Authorization: Bearer TOKEN` (from `prefloop annotators add NAME`). Every refusal is "
        'JSON `{"error", "hint"}` (422 adds `fields`); 429 and 503 carry `Retry-After`.',
        docs_url=None,  # the interactive docs load scripts from a CDN: the schema is at /api/openapi.json
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.prefloop = st
    app.state.threads = threads
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_middleware(BodyLimit, max_bytes=config.server.max_body_bytes)
    http_errors.install(app)

    @app.exception_handler(PrefloopError)
    async def _prefloop_error(request: Request, exc: PrefloopError) -> JSONResponse:
        code = _status_for(exc)
        headers = {}
        if code == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(exc.retry_after)
        extra = {}
        if isinstance(exc, InvalidAnswer):  # the answer does not fit its task
            extra["fields"] = [{"loc": ["body", "value"], "msg": http_errors.printable(exc.message, 500)}]
        body = http_errors.error_body(exc.message, exc.hint, **extra)
        return JSONResponse(body, status_code=code, headers=headers)

    bearer = HTTPBearer(auto_error=False, description="a token from `prefloop annotators add NAME`")

    def me(request: Request, _: Any = Depends(bearer)) -> Principal:
        return st.principal(request)

    def admin(principal: Principal = Depends(me)) -> Principal:
        if not principal.is_admin:
            raise Forbidden("this needs an admin", hint="ask an admin, or `prefloop annotators add NAME --admin`")
        return principal

    def render(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(st.templates.get_template(name).render(project=config.name, **context), status_code)

    # -------------------------------------------------------------- pages
    @app.get("/", include_in_schema=False)
    def index(request: Request) -> Response:
        return RedirectResponse("/annotate" if st.page_principal(request) else "/login", status_code=303)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    def login_page(request: Request, error: str | None = None, status_code: int = 200,
                   headers: dict[str, str] | None = None) -> HTMLResponse:
        csrf = secrets.token_urlsafe(24)
        response = render("login.html", status_code, csrf=csrf, error=error)
        response.headers.update(headers or {})
        st.set_cookie(request, response, LOGIN_CSRF_COOKIE, csrf, 3600)
        return response

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request) -> Response:
        if st.page_principal(request):
            return RedirectResponse("/annotate", status_code=303)
        return login_page(request)

    @app.post("/login", include_in_schema=False)
    def login(request: Request, token: str = Form("", max_length=500), csrf_token: str = Form("", max_length=200)) -> Response:
        expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not expected or not secrets.compare_digest(csrf_token.encode(), expected.encode()):
            return login_page(request, "This form expired. Please sign in again.", 403)
        try:
            principal = st.sign_in(request, token.strip())
        except RateLimited as exc:
            return login_page(request, f"Too many failed sign-ins. Wait {exc.retry_after} s and try again.", 429,
                              headers={"Retry-After": str(exc.retry_after)})
        except AuthError:
            return login_page(request, "Unknown or revoked token.", 401)
        cookie, _ = open_session(st.store, principal, st.session_seconds)
        response = RedirectResponse("/annotate", status_code=303)
        st.set_cookie(request, response, SESSION_COOKIE, cookie, st.session_seconds)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, csrf_token: str = Form("", max_length=200)) -> Response:
        cookie = request.cookies.get(SESSION_COOKIE)
        found = find_session(st.store, cookie)
        if found is not None and not secrets.compare_digest(csrf_token.encode(), found[1].encode()):
            return Response("missing or wrong CSRF token", status_code=403, media_type="text/plain")
        end_session(st.store, cookie)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    def page_user(request: Request) -> tuple[Principal, str]:
        who = st.page_principal(request)
        if who is None:
            raise _SignInFirst
        return who

    @app.exception_handler(_SignInFirst)
    async def _sign_in_first(request: Request, exc: _SignInFirst) -> Response:
        return RedirectResponse("/login", status_code=303)

    @app.get("/annotate", include_in_schema=False)
    def annotate_page(who: tuple[Principal, str] = Depends(page_user)) -> Response:
        principal, csrf = who
        return render("annotate.html", principal=principal, csrf=csrf, guidelines=config.annotation.guidelines)

    @app.get("/admin", include_in_schema=False)
    def admin_page(who: tuple[Principal, str] = Depends(page_user)) -> Response:
        principal, csrf = who
        if not principal.is_admin:
            return render("forbidden.html", 403, principal=principal, csrf=csrf)
        from .dashboard import dashboard_context

        return render("admin.html", principal=principal, csrf=csrf, **dashboard_context(st.store, st.queue))

    # -------------------------------------------------------------- annotator API
    api = APIRouter(dependencies=[Depends(_no_unknown_query_parameters)])
    # Every operation can meet a bad token (401), a cookie without its CSRF token on a write or a
    # non-admin on admin data (403), an oversized body (413), an invalid field (422), a sign-in
    # flood (429) and a busy database (503).
    common = (401, 403, 413, 422, 429, 503)
    task_refusals = error_responses(*common, 404, 409)

    @api.get("/api/me", response_model=MeOut, tags=["annotator"], responses=error_responses(*common))
    def api_me(principal: Principal = Depends(me)) -> MeOut:
        """Who the token belongs to, and the guidelines to show."""
        return MeOut(
            name=principal.name, role=principal.role, guidelines=config.annotation.guidelines,
            show_judge_suggestions=config.annotation.show_judge_suggestions,
        )

    @api.get("/api/me/progress", response_model=ProgressOut, tags=["annotator"], responses=error_responses(*common))
    def api_progress(round_id: RoundIdQuery = None, principal: Principal = Depends(me)) -> ProgressOut:
        """Your own counts: answered, skipped, still available to you, and your current streak."""
        return st.progress(principal, round_id)

    @api.post(
        "/api/tasks/next", response_model=TaskOut, tags=["annotator"],
        responses={204: {"description": "no task is left for you"}, **error_responses(*common)},
    )
    def api_claim(body: ClaimIn | None = None, principal: Principal = Depends(me)) -> Any:
        """Claim your next task (a lease); claiming again while you hold one returns the same task."""
        body = body or ClaimIn()
        claimed = st.queue.claim(principal.id, round_id=body.round_id, kinds=body.kinds)
        if claimed is None:
            return Response(status_code=204)
        return st.task_out(principal, claimed)

    @api.post("/api/tasks/{task_id}/submit", response_model=ReceiptOut, tags=["annotator"], responses=task_refusals)
    def api_submit(task_id: TaskIdPath, body: SubmitIn, request: Request, principal: Principal = Depends(me)) -> ReceiptOut:
        """Answer a task you claimed. Send an ``idempotency_key``: a retry with it never duplicates."""
        meta = {
            "shown_order": st.shown_order(principal, task_id),
            "via": "token" if request.headers.get("authorization") else "page",
        }
        r = st.queue.submit(
            principal.id, task_id, body.value, idempotency_key=body.idempotency_key,
            duration_s=body.duration_s, rationale=body.rationale, meta=meta,
        )
        return ReceiptOut(annotation_id=r.annotation_id, task_id=r.task_id, late=r.late, duplicate=r.duplicate)

    @api.post("/api/tasks/{task_id}/skip", response_model=OkOut, tags=["annotator"], responses=task_refusals)
    def api_skip(task_id: TaskIdPath, body: SkipIn | None = None, principal: Principal = Depends(me)) -> OkOut:
        """Decline a task you claimed; it is never served to you again."""
        st.queue.skip(principal.id, task_id, reason=(body.reason if body else None))
        return OkOut()

    @api.post("/api/tasks/{task_id}/release", response_model=OkOut, tags=["annotator"], responses=task_refusals)
    def api_release(task_id: TaskIdPath, principal: Principal = Depends(me)) -> OkOut:
        """Give a claimed task back unanswered (it may come back to you later)."""
        if not st.queue.release(principal.id, task_id):
            raise NotAssigned(f"task {task_id} is not assigned to you")
        return OkOut()

    # -------------------------------------------------------------- admin API
    admin_refusals = error_responses(*common)

    @api.get("/api/admin/queue", response_model=QueueOut, tags=["admin"], responses=admin_refusals)
    def api_queue(_: Principal = Depends(admin)) -> Any:
        """Queue state overall and progress per round."""
        from .dashboard import queue_json

        return queue_json(st.store, st.queue)

    @api.get("/api/admin/throughput", response_model=ThroughputOut, tags=["admin"], responses=admin_refusals)
    def api_throughput(hours: int = Query(24, ge=1, le=168, description="how many hours back (1–168)"),
                       _: Principal = Depends(admin)) -> Any:
        """Submitted labels per annotator per hour over the last ``hours`` hours."""
        t = activity.throughput(st.store, hours=hours)
        return {
            "hours": t.hours,
            "annotators": [
                {"name": n, "counts": c, "total": sum(c), "mean_duration_s": t.mean_duration_s.get(n)}
                for n, c in sorted(t.counts.items())
            ],
        }

    @api.get("/api/admin/annotators", response_model=list[AnnotatorOut], tags=["admin"], responses=admin_refusals)
    def api_annotators(_: Principal = Depends(admin)) -> Any:
        """Every annotator (human and judge) with their counts; never a token."""
        return [a.__dict__ for a in list_annotators(st.store)]

    @api.get("/api/admin/agreement", response_model=AgreementOut, tags=["admin"], responses=admin_refusals)
    def api_agreement(round_id: RoundIdQuery = None, _: Principal = Depends(admin)) -> Any:
        """Inter-annotator agreement and judge–human agreement."""
        from .dashboard import agreement_json

        return agreement_json(st.store, round_id)

    @api.get(
        "/api/admin/export/{dataset}.jsonl", tags=["admin"], response_class=Response,
        responses={200: {"description": "one JSON object per line", "content": {"application/x-ndjson": {
            "schema": {"type": "string"}}}}, **admin_refusals},
    )
    def api_export(dataset: Literal["dpo", "sft"], round_id: RoundIdQuery = None, _: Principal = Depends(admin)) -> Response:
        """The aggregated DPO pairs or SFT targets as JSON lines (TRL conversational format, with provenance)."""
        from ..export import build_dpo_dataset, build_sft_dataset

        build = build_dpo_dataset if dataset == "dpo" else build_sft_dataset
        ds = build(st.store, round_ids=[round_id] if round_id is not None else None, config=config.aggregation)
        body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in ds)
        return Response(body, media_type="application/x-ndjson",
                        headers={"content-disposition": f'attachment; filename="{dataset}.jsonl"'})

    app.include_router(api)
    return app


# ---------------------------------------------------------------------------------------- running it
@contextlib.contextmanager
def serve_in_background(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread (tests, the demo); yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="prefloop-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the annotation server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
