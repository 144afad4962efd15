"""The state one app serves from, built once by :func:`~.app.create_app` and kept on
``app.state.prefloop``; routers reach it through the :func:`server_state` dependency rather than
closures, so each router is a plain module that any app can include."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader

from ..queue import Queue
from ..store.db import Store
from .limiter import SignInLimiter

if TYPE_CHECKING:
    from prefloop.config import ProjectConfig

TEMPLATES = Path(__file__).parent / "templates"


class ServerState:
    """The store, the queue over it, the project config, the sign-in limiter and the page templates."""

    def __init__(self, store: Store, config: ProjectConfig) -> None:
        self.store = store
        self.config = config
        self.queue = Queue.from_config(store, config.queue)
        from prefloop.judges.selection import PriorityRefresher

        self.priorities = PriorityRefresher(store, config.judges)  # claims follow what new labels teach
        srv = config.server
        self.limiter = SignInLimiter(srv.signin_attempts, srv.signin_overall_attempts, srv.signin_window_seconds)
        self.session_seconds = int(srv.session_hours * 3600)
        self.templates = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True)

    def render(self, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        """A page from ``templates/`` (autoescaped), with the project's name."""
        html = self.templates.get_template(name).render(project=self.config.name, **context)
        return HTMLResponse(html, status_code)


def server_state(request: Request) -> ServerState:
    """FastAPI dependency: the state of the app serving ``request``."""
    state: ServerState = request.app.state.prefloop
    return state


#: a route parameter that receives the app's :class:`ServerState`.
ServerStateDep = Annotated[ServerState, Depends(server_state)]
