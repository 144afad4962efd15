"""The app factory: one JSON API (documented at ``/api/openapi.json``) for the web page and for
scripts, plus server-rendered pages (sign-in, annotate, admin dashboard), assembled from the
routers :mod:`.pages`, :mod:`.annotator_api` and :mod:`.admin_api`.

Safety, in order of the threats, and where each defence lives:

- model outputs and prompts are untrusted: the page receives them as JSON and puts them in the
  DOM with ``textContent`` only; templates autoescape; a Content-Security-Policy forbids inline
  script, plugins, framing and foreign origins (:mod:`.security`);
- identity: scripts send ``Authorization: Bearer TOKEN``; browsers sign in once and get an
  HttpOnly, SameSite=Strict session cookie (kept server-side: signing out ends it), and every
  state-changing request made with that cookie must carry the session's CSRF token; floods of
  failed sign-ins are slowed down, never a valid token (:mod:`.identity`, :mod:`.sessions`,
  :mod:`.limiter`);
- isolation: an annotator only ever sees the task the queue leased to them, and every write
  names the caller's own id, so another annotator's token reaches nothing of theirs
  (:mod:`.annotator_api`);
- input: request bodies larger than ``server.max_body_bytes`` are refused before they are read;
  every field is validated against :mod:`.schemas` (storable text, finite numbers, 64-bit ids)
  and every failure answers in one JSON shape (:mod:`.errors`); every response, a 500
  included, carries the security headers;
- SQL goes through SQLAlchemy with bound parameters only.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp

from ..store.db import Store
from . import admin_api, annotator_api, errors, pages
from .security import BodyLimit, SecurityHeaders
from .state import ServerState

if TYPE_CHECKING:
    from prefloop.config import ProjectConfig
    from prefloop.project import Project

STATIC = Path(__file__).parent / "static"
DESCRIPTION = (
    "Claim a task, answer it, skip it, see your progress; admins read queue and agreement statistics. "
    "Authenticate with `Authorization: Bearer TOKEN` (from `prefloop annotators add NAME`). Every refusal is "
    'JSON `{"error", "hint"}` (422 adds `fields`); 429 and 503 carry `Retry-After`.'
)


class _PrefloopAPI(FastAPI):
    """FastAPI with the security headers outside everything, its own error middleware included,
    so that a 500 carries them too (a plain middleware sits inside Starlette's error layer)."""

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())


def _store_and_config(source: Project | Store, config: ProjectConfig | None) -> tuple[Store, ProjectConfig]:
    if isinstance(source, Store):
        if config is None:
            from prefloop.config import ProjectConfig

            config = ProjectConfig()
        return source, config
    return source.store, config if config is not None else source.config


def request_threads(config: ProjectConfig, store: Store) -> int:
    """Request threads: ``server.threads``, never more than the store's pool can serve at once
    (each request thread holds at most one connection at a time, so none waits for the pool)."""
    return max(1, min(config.server.threads, store.pool_capacity))


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """While serving: no more request threads than pooled connections, and a short wait for
    a busy database (then 503) rather than the bulk writers' long one."""
    import anyio.to_thread

    state: ServerState = app.state.prefloop
    anyio.to_thread.current_default_thread_limiter().total_tokens = app.state.threads
    before = state.store.busy_timeout_s
    state.store.set_busy_timeout(state.config.server.busy_timeout_seconds)
    try:
        yield
    finally:
        state.store.set_busy_timeout(before)


def create_app(source: Project | Store, config: ProjectConfig | None = None) -> FastAPI:
    """The FastAPI app over a :class:`~prefloop.project.Project` (its store and config), or over a
    :class:`Store` and a ``ProjectConfig`` (the defaults when none is given)."""
    store, config = _store_and_config(source, config)
    app = _PrefloopAPI(
        title="prefloop annotation API",
        version="1",
        description=DESCRIPTION,
        docs_url=None,  # the interactive docs load scripts from a CDN: the schema is at /api/openapi.json
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=_lifespan,
    )
    app.state.prefloop = ServerState(store, config)
    app.state.threads = request_threads(config, store)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, max_bytes=config.server.max_body_bytes)
    errors.install(app)
    for router in (pages.router, annotator_api.router, admin_api.router):
        app.include_router(router)
    return app
