"""The ``prefloop`` command line (typer + rich).

Errors a user can fix print as one line with a hint; ``--debug`` (or ``PREFLOOP_DEBUG=1``)
shows the traceback instead. Sub-command groups live beside the code they drive
(``prefloop.feedback.cli``, ``prefloop.judges.cli``, ``prefloop.training.cli``) and keep heavy
imports (torch, transformers) inside their functions so that ``prefloop --help`` stays fast.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from prefloop.errors import PrefloopError

console = Console(stderr=True)
app = typer.Typer(
    name="prefloop",
    help="Turn human and LLM-judge feedback into better small models, round after round.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_state = {"debug": os.environ.get("PREFLOOP_DEBUG") == "1"}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    if debug:
        _state["debug"] = True


def _register() -> None:
    from prefloop.feedback import cli as feedback_cli

    feedback_cli.register(app)
    for module in ("prefloop.judges.cli", "prefloop.training.cli", "prefloop.feedback.server_cli", "prefloop.feedback.argilla_cli", "prefloop.retrieval.cli", "prefloop.sim.cli",
                   "prefloop.experiments.cli"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name == module:  # that part is not built yet
                continue
            raise
        mod.register(app)


_register()


def main() -> None:
    try:
        from prefloop.training.distributed import guard_launched_cli

        guard_launched_cli(console.print)  # under `accelerate launch`: rank 0 drives, the other ranks leave
        app()
    except PrefloopError as exc:
        if _state["debug"]:
            raise
        console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
        if exc.hint:
            console.print(f"[yellow]hint:[/] {escape(exc.hint)}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - one line for users, the traceback with --debug
        if _state["debug"]:
            raise
        console.print(f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}", highlight=False)
        console.print("[yellow]hint:[/] run again with `prefloop --debug …` for the full traceback", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
