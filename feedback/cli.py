"""CLI commands of the feedback package: init, import, queue, annotate, export, stats."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
