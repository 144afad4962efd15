"""CLI of the annotation server: ``serve``, ``annotators add|list|revoke``, ``simulate-annotators``."""

from __future__ import annotations

import ipaddress
import math
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.table import Table

from prefloop.errors import PrefloopError

from ..cli import ProjectOpt, open_project, round_ids

if TYPE_CHECKING:
    from prefloop.project import Project

    from prefloop.sim import Oracle

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
    from .auth import list_annotators

    project = open_project(project_dir)
    table = Table("name", "kind", "role", "status", "answered", "skipped")
    for a in list_annotators(project.store):
        status = "active" if a.active and (a.has_token or a.kind == "judge") else "revoked" if not a.active else "no token"
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


def _load_oracle(spec: str, project: Project) -> Oracle:
    """``store`` or ``package.module:factory`` (called with the project, returns an oracle)."""
    from prefloop.sim import store_oracle

    if spec == "store":
        return store_oracle(project.store)
    module, _, attr = spec.partition(":")
    if not attr:
        raise PrefloopError(f"--oracle {spec!r} is neither 'store' nor 'module:factory'",
                            hint="e.g. --oracle prefloop.training.tasks:oracle_for")
    import importlib

    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise PrefloopError(f"cannot load oracle {spec!r}: {exc}", hint="check the module path and name") from None
    return factory(project)


def cmd_simulate(
    n: int = typer.Option(8, "--n", min=1, max=512, help="How many annotators run at once."),
    accuracy: float = typer.Option(0.8, min=0.0, max=1.0, help="Chance that an answer matches the oracle."),
    url: Optional[str] = typer.Option(None, help="Server URL (default: http://server.host:server.port)."),
    oracle: str = typer.Option("store", help="'store' (generation meta oracle_score / prompt reference) or module:factory."),
    max_tasks: Optional[int] = typer.Option(None, help="Stop each annotator after this many answers."),
    think: float = typer.Option(0.0, help="Mean seconds each annotator thinks per task (exponential)."),
    skip_rate: float = typer.Option(0.0, min=0.0, max=1.0, help="Chance of skipping a task."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives the same answers."),
    prefix: str = typer.Option("sim", help="Annotators are named PREFIX-1 … PREFIX-N."),
    round_number: Optional[int] = typer.Option(None, "--round", "-r", help="Only tasks of this round."),
    project_dir: Optional[Path] = ProjectOpt,
) -> None:
    """Run N scripted annotators against a running server, over HTTP, until the queue is empty."""
    from prefloop.sim import provision_annotators, simulate

    project = open_project(project_dir)
    url = url or f"http://{project.config.server.host}:{project.config.server.port}"
    rids = round_ids(project, [round_number] if round_number is not None else None)
    rid = rids[0] if rids else None
    tokens = provision_annotators(project.store, n, prefix=prefix)
    err.print(f"{n} scripted annotator(s) of accuracy {accuracy:.0%} labelling at {url} …")
    report = simulate(url, tokens, _load_oracle(oracle, project), accuracy=accuracy, seed=seed, max_tasks=max_tasks,
                      think_s=think, skip_rate=skip_rate, round_id=rid)
    table = Table("submissions", "skips", "retries", "per second", "p50 ms", "p99 ms", "oracle agreement", title="scripted annotators")
    acc = report.accuracy
    table.add_row(
        str(report.submissions), str(report.skips), str(report.retries), f"{report.per_second:.1f}",
        _ms(report.latency(50)), _ms(report.latency(99)), "–" if acc is None else f"{acc:.0%}",
    )
    console.print(table)


def _ms(seconds: float) -> str:
    return "–" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def register(app: typer.Typer) -> None:
    app.command("serve")(cmd_serve)
    app.add_typer(annotators_app, name="annotators")
    app.command("simulate-annotators")(cmd_simulate)
