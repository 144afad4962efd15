"""What a person sees in the terminal: prefloop's own lines and bars; the libraries' output goes to a log file.

Training a round pulls in transformers, datasets, TRL, PEFT, accelerate, bitsandbytes and wandb,
each with its own way to talk: ``logging`` handlers of their own, ``print`` (TRL's ``{'loss': …}``
dicts, transformers' "[INFO] Running in WANDB offline mode"), tqdm bars on stderr, and Python
warnings. :func:`library_output` sends all of it to a log file (``runs/round-N/train.log``) for
the duration of a block, and with ``verbose`` also shows it on the terminal, above prefloop's own
progress display. prefloop's console keeps writing to the real terminal.

Two warnings that never apply to the run they appear in are dropped outright (:data:`NOT_APPLICABLE`,
matched by message and module); everything else still reaches the log. Control characters in what
the libraries write (they may quote model text) are shown escaped, in the file and on the terminal.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.text import Text

from prefloop.visible import visible_parts

#: prefloop's loggers whose INFO lines belong in the log (the trainer's loss lines; shown too with ``verbose``).
LOGGED_AT_INFO = ("prefloop.trainer",)
#: libraries whose warnings belong in the log even when a quiet command turned them down to errors
#: before (``TRANSFORMERS_VERBOSITY=error``: the terminal stays clean, the log keeps the warnings)
LOGGED_AT_WARNING = ("transformers", "trl", "peft", "datasets", "accelerate")

#: Warnings that do not apply to the run where they appear: (message regex, module regex, category).
NOT_APPLICABLE: tuple[tuple[str, str, type[Warning]], ...] = (
    # TRL/transformers/torch announce changes to gradient checkpointing's defaults, whether or not it is on:
    # prefloop always passes use_reentrant explicitly when it turns checkpointing on.
    (r"(?s).*use_reentrant", r"torch\.utils\.checkpoint|transformers(\..*)?|trl(\..*)?|peft(\..*)?", FutureWarning),
    (r"(?s).*gradient[_ ]checkpointing", r"transformers(\..*)?|trl(\..*)?|peft(\..*)?", FutureWarning),
)
#: bitsandbytes' CPU backend logs this on import; it only matters to a 4-bit (QLoRA) run on a CPU.
BNB_CPU_KERNEL = ("bitsandbytes.backends.cpu.ops", "gemm_4bit_forward")


class _DropMessage(logging.Filter):
    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle

    def filter(self, record: logging.LogRecord) -> bool:
        return self.needle not in str(record.msg)


def ignore_not_applicable(*, quantized: bool = False) -> None:
    """Drop the warnings of :data:`NOT_APPLICABLE` (and bitsandbytes' CPU-kernel note unless the run is
    ``quantized``). Idempotent; called by :func:`library_output` and by the CLI before heavy imports."""
    for message, module, category in NOT_APPLICABLE:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    name, needle = BNB_CPU_KERNEL
    log = logging.getLogger(name)  # the logger exists before bitsandbytes is imported: the filter catches its import
    if not quantized and not any(isinstance(f, _DropMessage) for f in log.filters):
        log.addFilter(_DropMessage(needle))
    elif quantized:
        for f in [f for f in log.filters if isinstance(f, _DropMessage)]:
            log.removeFilter(f)


def quiet_progress_bars() -> None:
    """datasets' and the hub's tqdm bars off (prefloop shows its own); their env vars for a later import."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "datasets" in sys.modules:
        from datasets.utils import logging as ds_logging

        ds_logging.disable_progress_bar()


class _Sink(io.TextIOBase):
    """A text stream that appends to the log file and, when ``echo`` is set, shows whole lines on the
    console (above any live display, control characters made visible: library output may quote
    model text)."""

    def __init__(self, log: IO[str], lock: threading.Lock, echo: Console | None) -> None:
        self.log, self.lock, self.echo = log, lock, echo
        self.pending = ""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, data: str) -> int:
        with self.lock:  # the file gets control characters escaped too: `cat train.log` must not run them
            self.log.write("".join(part for part, _ in visible_parts(data)))
            self.log.flush()
        if self.echo is not None:
            self.pending += data
            *lines, self.pending = self.pending.split("\n")
            for line in lines:
                shown = line.rstrip("\r").split("\r")[-1]  # what a terminal would leave of a redrawn bar
                if shown:
                    self.echo.print(_visible(shown), soft_wrap=True, highlight=False)
        return len(data)

    def flush(self) -> None:
        with self.lock:
            self.log.flush()

    def isatty(self) -> bool:
        return False


def _visible(line: str) -> Text:
    text = Text(style="dim")
    for part, marker in visible_parts(line):
        text.append(part, style="reverse" if marker else None)
    return text


def _terminal_handlers(streams: tuple[Any, ...]) -> list[tuple[logging.Logger, logging.StreamHandler]]:
    """Handlers that write to the terminal, found on every logger that exists now: those on one of
    ``streams``, and a library's own default handler on its non-propagating root logger
    (transformers' and datasets' hold whatever ``sys.stderr`` was when they were first configured,
    which need not be today's)."""
    loggers = [logging.getLogger(), *(lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger))]
    return [(lg, h) for lg in loggers for h in lg.handlers
            if type(h) is logging.StreamHandler
            and (any(h.stream is s for s in streams) or (lg is not logging.root and not lg.propagate))]


@contextlib.contextmanager
def library_output(log_path: Path, console: Console, *, verbose: bool = False, quantized: bool = False) -> Iterator[Path]:
    """Within the block, libraries write to ``log_path`` (appended; shown on ``console`` too when
    ``verbose``): their log records (INFO and up), ``print``s, tqdm bars and warnings. ``console``
    itself keeps writing where it wrote before. Everything is restored on exit, also after an error."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    ignore_not_applicable(quantized=quantized)
    if not verbose:
        quiet_progress_bars()
    lock = threading.Lock()
    with open(log_path, "a", encoding="utf-8", errors="backslashreplace") as log:
        sink = _Sink(log, lock, console if verbose else None)
        handler = logging.StreamHandler(sink)
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        console_file: Any = console._file  # noqa: SLF001 - None means "follow sys.stdout/sys.stderr"
        console.file = console.file  # pinned now: it must not follow sys.stderr into the log
        old_out, old_err = sys.stdout, sys.stderr
        swapped = _terminal_handlers((old_out, old_err, sys.__stdout__, sys.__stderr__))
        for lg, h in swapped:
            lg.removeHandler(h)
            if handler not in lg.handlers:
                lg.addHandler(handler)
        root = logging.getLogger()
        root.addHandler(handler)  # what propagates (most libraries) lands here
        levels = {name: logging.getLogger(name).level for name in (*LOGGED_AT_INFO, *LOGGED_AT_WARNING)}
        for name in LOGGED_AT_INFO:
            logging.getLogger(name).setLevel(logging.INFO)
        for name in LOGGED_AT_WARNING:
            if logging.getLogger(name).getEffectiveLevel() > logging.WARNING:
                logging.getLogger(name).setLevel(logging.WARNING)
        logging.captureWarnings(True)  # warnings become records of `py.warnings`: to the file, whoever shows them now
        sys.stdout = sys.stderr = sink  # type: ignore[assignment]
        try:
            yield log_path
        finally:
            sys.stdout, sys.stderr = old_out, old_err
            logging.captureWarnings(False)
            root.removeHandler(handler)
            for lg, h in swapped:
                lg.removeHandler(handler)
                lg.addHandler(h)
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
            console._file = console_file  # noqa: SLF001
            if sink.pending and verbose:
                sink.write("\n")
