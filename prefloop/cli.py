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
from prefloop.text import one_line

console = Console(stderr=True)
app = typer.Typer(
    name="prefloop",
    help="Turn human and LLM-judge feedback into better small models, round after round.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_state = {"debug": os.environ.get("PREFLOOP_DEBUG") == "1"}


def version() -> str:
    """The installed package's version (its metadata), or the source tree's when not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("prefloop")
    except PackageNotFoundError:
        from prefloop import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"prefloop {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    _version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                  help="Show prefloop's version and exit."),
) -> None:
    if debug:
        _state["debug"] = True


def _flags_without_a_type() -> None:
    """Show a flag as a flag in ``--help``: typer 0.29's rich help prints a ``<bool>`` type beside
    every boolean flag (``--quiet <bool>``, even ``--help <bool>``), as if it took a value. A flag
    takes none, so its type column stays empty; every other option keeps its type."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "prefloop_flags", False):
        return  # another typer (no such column), or already done

    def display_type_rich(self: TyperOption, ctx: object) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    display_type_rich.prefloop_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_without_a_type()


def _register() -> None:
    from prefloop.feedback import cli as feedback_cli

    feedback_cli.register(app)
    for module in ("prefloop.judges.cli", "prefloop.training.cli", "prefloop.feedback.server.cli", "prefloop.feedback.argilla.cli",
                   "prefloop.retrieval.cli", "prefloop.sim.cli", "prefloop.experiments.cli"):
        __import__(module, fromlist=["register"]).register(app)


_register()


def report(message: str, hint: str | None = None) -> None:
    """An error as one line on stderr (and its hint on a second), whatever the width of the
    terminal or log it lands in: never wrapped, control characters shown escaped."""
    console.print(f"[bold red]error:[/] {escape(one_line(message))}", highlight=False, soft_wrap=True)
    if hint:
        console.print(f"[yellow]hint:[/] {escape(one_line(hint))}", highlight=False, soft_wrap=True)


def database_error(exc: Exception) -> str:
    """A database driver's error as one line: its first sentence, never the SQL or parameters."""
    orig = getattr(exc, "orig", None) or exc.__cause__ or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return f"database error ({type(orig).__name__}): {text}"


def main() -> None:
    from sqlalchemy.exc import SQLAlchemyError

    # The click that typer runs on (typer ships its own copy): its usage errors come back here.
    click = sys.modules[typer.BadParameter.__module__]
    try:
        from prefloop.training.distributed import guard_launched_cli

        guard_launched_cli(console.print)  # under `accelerate launch`: rank 0 drives, the other ranks leave
        code = app(standalone_mode=False)  # errors come back here, to be printed on one line
    except click.NoArgsIsHelpError as exc:  # a bare group: its help, as before
        exc.show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # a usage error (a missing argument, a value of the wrong type)
        ctx = getattr(exc, "ctx", None)
        report(exc.format_message(), f"see `{ctx.command_path} --help`" if ctx is not None else None)
        sys.exit(exc.exit_code)
    except PrefloopError as exc:
        if _state["debug"]:
            raise
        report(exc.message, exc.hint)
        sys.exit(1)
    except (KeyboardInterrupt, typer.Abort):
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except SQLAlchemyError as exc:  # an IntegrityError or a driver error: one line, no SQL dump
        if _state["debug"]:
            raise
        report(database_error(exc), "run again with `prefloop --debug …` for the full traceback")
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - one line for users, the traceback with --debug
        if _state["debug"]:
            raise
        report(f"{type(exc).__name__}: {exc}", "run again with `prefloop --debug …` for the full traceback")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)  # typer.Exit(n) comes back as n


if __name__ == "__main__":
    main()
