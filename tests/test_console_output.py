"""What a person sees: prefloop's own lines on the terminal, the libraries' output in the round's log.

A real round of the tiny model through the CLI (a subprocess, as a user runs it) prints only
prefloop's lines, states in order, a round's ``done`` before the next round starts; the trainer's
loss lines are in ``runs/round-N/train.log``. :func:`prefloop.console.library_output` itself is
checked directly: prints, log records and warnings go to the file (and, with ``verbose``, to the
console), the warnings that never apply are dropped, and everything is restored afterwards.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from rich.console import Console
from roundkit import make_project

from prefloop.console import library_output

#: what libraries print on their own: TRL's log dicts, datasets' and tqdm's bars, HF and bitsandbytes notes.
LIBRARY_LINE = re.compile(r"\{'loss'|Map:|Saving the dataset|it/s\]|examples/s\]|Tokenizing|\[INFO\]|gemm_4bit|Warning")
#: a judge that prefers the shorter of two random outputs, so that the round has DPO pairs to train on.
DECISIVE_JUDGE = {"judges": {"panel": [{"name": "style-rules", "backend": "rules",
                                        "rules": [{"type": "length", "unit": "chars", "max": 78}]}]}}


@pytest.mark.slow
def test_a_round_through_the_cli_prints_only_prefloops_lines(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", patch={"training": {"wait": {"enabled": False}}, **DECISIVE_JUDGE}, prompts=4)
    project.store.dispose()
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wandb"),
           "WANDB_DATA_DIR": str(tmp_path / "wandb-data"), "OMP_NUM_THREADS": "1"}
    env.pop("HF_DATASETS_DISABLE_PROGRESS_BARS", None)  # the command itself must turn datasets' bars off
    run = subprocess.run([sys.executable, "-m", "prefloop.cli", "round", "run", "-p", str(project.root)],
                         capture_output=True, text=True, env=env, timeout=900, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    progress = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert not [ln for ln in (progress + run.stdout.splitlines()) if LIBRARY_LINE.search(ln)], run.stderr + run.stdout
    assert all(ln.startswith("round ") for ln in progress), progress  # all of them prefloop's
    assert all(len(ln) <= 80 for ln in progress), progress
    states = [m.group(1, 2) for m in (re.match(r"round (\d+) · (\w[\w ]*?)\s{2,}", ln) for ln in progress) if m]
    assert states == [("0", "evaluating"), ("1", "generating"), ("1", "judging"), ("1", "human labels"), ("1", "datasets"),
                      ("1", "training"), ("1", "evaluating")], progress
    assert progress[0].endswith("· done") and progress[-1].endswith("· done")  # round 0 is done before round 1 starts
    assert sum(ln.endswith("· done") for ln in progress) == 2
    assert re.search(r"dpo \d+ steps, loss \d", next(ln for ln in progress if "· training" in ln))
    # The libraries' output is in the round's log: the trainer's loss lines among it.
    log = (project.root / "runs" / "round-1" / "train.log").read_text()
    assert re.search(r"prefloop\.trainer: dpo step 1/\d+: \{\"loss\": ", log), log[-2000:]
    assert "[INFO] Running in WANDB offline mode" in log  # transformers' print at import, caught


def _records(verbose: bool, tmp_path: Path, *, quantized: bool = False) -> tuple[str, str]:
    shown = io.StringIO()
    console = Console(file=shown, width=200, force_terminal=False)
    log = tmp_path / f"train-{verbose}-{quantized}.log"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with library_output(log, console, verbose=verbose, quantized=quantized):
            print("a library print")
            sys.stderr.write("a bar 10%\ra bar 100%\n")
            logging.getLogger("transformers.trainer").warning("a transformers warning")
            logging.getLogger("prefloop.trainer").info("sft step 1/2: {\"loss\": 1.5}")
            logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to load CPU gemm_4bit_forward from kernels-community")
            warnings.warn("something else is deprecated", DeprecationWarning, stacklevel=1)
            warnings.warn_explicit("`use_reentrant` will default to False", FutureWarning, "checkpoint.py", 1,
                                   module="torch.utils.checkpoint")
            console.print("prefloop's own line")
            hostile = "model text \x1b[2Kerased"
            print(hostile)
    return log.read_text(), shown.getvalue()


def test_library_output_goes_to_the_log_file_and_only_with_verbose_to_the_terminal(tmp_path: Path) -> None:
    out, err = sys.stdout, sys.stderr
    log, shown = _records(False, tmp_path)
    for needle in ("a library print", "a bar 100%", "a transformers warning", "sft step 1/2", "something else is deprecated"):
        assert needle in log, needle
    assert "gemm_4bit_forward" not in log  # a non-quantized run: bitsandbytes' CPU-kernel note does not apply
    assert "use_reentrant" not in log  # nor does gradient checkpointing's FutureWarning
    assert "\x1b" not in log and "\\x1b[2Kerased" in log
    assert shown == "prefloop's own line\n"  # the console still writes where it did
    assert (sys.stdout, sys.stderr) == (out, err)  # restored

    log, shown = _records(True, tmp_path)
    for needle in ("a library print", "a bar 100%", "a transformers warning", "something else is deprecated"):
        assert needle in shown, needle
    assert "a bar 10%" not in shown  # a redrawn bar shows as its last state
    assert "\x1b" not in shown and "\\x1b[2Kerased" in shown  # quoted model text cannot erase the terminal
    assert "sft step 1/2" in log and "sft step 1/2" in shown  # the trainer's loss lines

    log, _ = _records(False, tmp_path, quantized=True)
    assert "gemm_4bit_forward" in log  # a 4-bit run: the note applies


def test_library_output_is_restored_after_an_error(tmp_path: Path) -> None:
    root_handlers = list(logging.getLogger().handlers)
    out = sys.stdout
    with pytest.raises(RuntimeError), library_output(tmp_path / "x.log", Console(file=io.StringIO())):
        raise RuntimeError("boom")
    assert sys.stdout is out and logging.getLogger().handlers == root_handlers


def test_a_librarys_handler_made_under_another_stderr_is_caught_too(tmp_path: Path) -> None:
    """transformers configures its logger once, holding whatever ``sys.stderr`` was then (in a test
    run, an earlier test's capture): its records still go to the log, not to that old stream."""
    old_stderr = io.StringIO()
    library = logging.getLogger("a_library_configured_elsewhere")
    own = logging.StreamHandler(old_stderr)
    library.addHandler(own)
    library.propagate = False
    try:
        with library_output(tmp_path / "x.log", Console(file=io.StringIO())):
            library.warning("a library warning")
        assert "a library warning" in (tmp_path / "x.log").read_text() and old_stderr.getvalue() == ""
        assert library.handlers == [own]  # restored
    finally:
        library.removeHandler(own)


def test_a_quiet_command_keeps_transformers_warnings_in_the_log(tmp_path: Path) -> None:
    """A command without -v turns transformers down to errors (its warnings off the terminal);
    inside a round's library output they still reach the log, and the level comes back afterwards."""
    library = logging.getLogger("transformers")
    before = library.level
    library.setLevel(logging.ERROR)  # what quiet_libraries() does through transformers' own API
    try:
        with library_output(tmp_path / "x.log", Console(file=io.StringIO())):
            logging.getLogger("transformers.trainer").warning("a transformers warning")
        assert "a transformers warning" in (tmp_path / "x.log").read_text()
        assert library.level == logging.ERROR
    finally:
        library.setLevel(before)
