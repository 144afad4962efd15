"""How much a command prints: one flag style for every command that works for a while.

``-q/--quiet`` drops prefloop's progress display (results and errors are still printed);
``-v/--verbose`` lets the libraries speak too (their logs, warnings and progress bars), which are
otherwise kept out of a person's terminal. Commands declare the two options with
:data:`QuietOpt` and :data:`VerboseOpt` and call :func:`verbosity` first.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass

import typer

from prefloop.errors import PrefloopError

QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress display: results and errors only.")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="Also show the libraries' logs, warnings and progress bars.")


@dataclass(frozen=True)
class Verbosity:
    quiet: bool = False
    verbose: bool = False

    @property
    def progress(self) -> bool:
        """Whether prefloop shows its own progress display."""
        return not self.quiet


def verbosity(quiet: bool, verbose: bool) -> Verbosity:
    """The command's output level; unless verbose, library chatter is silenced before it starts."""
    if quiet and verbose:
        raise PrefloopError("-q/--quiet and -v/--verbose exclude each other", hint="give one of them")
    if not verbose:
        quiet_libraries()
    return Verbosity(quiet=quiet, verbose=verbose)


def quiet_libraries() -> None:
    """Keep library chatter (progress bars, deprecation notes, hub hints) out of the output.

    Environment variables first: the libraries read them when they are imported, which the CLI
    does lazily, inside the command."""
    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
    try:  # already imported (a test, or a second command in one process): tell them directly
        if "datasets" in sys.modules:
            sys.modules["datasets"].disable_progress_bars()
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.set_verbosity_error()
    except AttributeError:
        pass
