"""The annotation server: a FastAPI app over the store, as routers (annotator API, admin API,
pages) behind security middleware. ``create_app`` builds it; ``serve_in_background`` runs it in a
thread (tests, the demo); ``prefloop serve`` runs it in the foreground (:mod:`.cli`).

The two names are resolved on first use, so that importing a light submodule (``.auth`` for
``prefloop annotators add``, ``.cli`` when the CLI registers its commands) does not load FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .run import serve_in_background

__all__ = ["create_app", "serve_in_background"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "serve_in_background":
        from .run import serve_in_background

        return serve_in_background
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
