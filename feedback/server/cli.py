"""CLI of the annotation server: ``serve``, ``annotators add|list|revoke`` (``simulate-annotators`` is in ``prefloop.sim.cli``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ..cli import ProjectOpt, open_project

console = Console()
err = Console(stderr=True)
annotators_app = typer.Typer(help="Manage annotators and their sign-in tokens.", no_args_is_help=True)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(
    host: Optional[str] = typer.Option(None, help="Address to listen on (default: server.host, 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, help="Port (default: server.port, 8765)."),
    log_level: str = typer.Option("info", help="uvicorn log level: critical, error, warning, info, debug."),
    project_dir: Optional[Path] = ProjectOpt,
) -> None:
    """Start the annotation server (web page + JSON API)."""
    import uvicorn

    from .app import create_app

    project = open_project(project_dir)
    host = host or project.config.server.host
    port = port or project.config.server.port
    app = create_app(project)
    err.print(f"[bold]prefloop[/] annotation server for {project.root} ({project.store.safe_url})")
    err.print(f"  open [link]http://{host}:{port}/[/link] and sign in with a token from `prefloop annotators add NAME`")
    err.print(f"  API schema: http://{host}:{port}/api/openapi.json")
    if not _is_loopback(host):
        err.print("[yellow]warning:[/] listening beyond this machine over plain HTTP: put an HTTPS proxy in front "
                  "and set server.secure_cookies: true")
    uvicorn.run(app, host=host, port=port, log_level=log_level, proxy_headers=False, server_header=False)


@annotators_app.command("add")
def annotators_add(
    name: str = typer.Argument(..., help="A unique name (shown on the dashboard)."),
    admin: bool = typer.Option(False, "--admin", help="May see the dashboard and export data."),
    rotate: bool = typer.Option(False, "--rotate", help="Give an existing annotator a new token (the old one stops working)."),
    project_dir: Optional[Path] = ProjectOpt,
) -> None:
    """Create an annotator and print their token (shown once; only its hash is stored)."""
    from .auth import add_annotator

    project = open_project(project_dir)
    token = add_annotator(project.store, name, admin=admin, rotate=rotate)
    err.print(f"[green]{'new token for' if rotate else 'added'}[/] {name}{' (admin)' if admin else ''}. "
              "This token is shown once; give it to them privately:")
    print(token)


@annotators_app.command("list")
def annotators_list(project_dir: Optional[Path] = ProjectOpt) -> None:
    """List annotators (humans and judges) with their label counts; tokens are never shown."""
    from ..store.models import AnnotatorKind
    from .auth import list_annotators

    project = open_project(project_dir)
    table = Table("name", "kind", "role", "status", "answered", "skipped")
    for a in list_annotators(project.store):
        status = "active" if a.active and (a.has_token or a.kind == AnnotatorKind.JUDGE.value) else "revoked" if not a.active else "no token"
        table.add_row(a.name, a.kind, a.role, status, str(a.submitted), str(a.skipped))
    console.print(table)


@annotators_app.command("revoke")
def annotators_revoke(
    name: str = typer.Argument(..., help="The annotator to sign out for good."),
    project_dir: Optional[Path] = ProjectOpt,
) -> None:
    """Revoke an annotator's token and end their sessions (their answers are kept)."""
    from .auth import revoke_annotator

    revoke_annotator(open_project(project_dir).store, name)
    err.print(f"[green]revoked[/] {name}: their token and sessions no longer work")


def register(app: typer.Typer) -> None:
    app.command("serve")(cmd_serve)
    app.add_typer(annotators_app, name="annotators")
