"""Cached folders (the converted SmolLM2, tiny models, the unzipped MiniLM) are built once, by one
process, and are complete or absent: a build that raises or is killed leaves nothing that a later
call would take for the finished folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from prefloop.cache import cached_folder

#: a process that builds ``target`` through ``cached_folder``. Its build appends a line to
#: ``builds.txt``, then waits for ``release`` before it writes the marker. A handler on filelock's
#: log touches ``attempt-PID`` when the process goes for the lock (so: after it found the folder
#: incomplete), which lets the test hold the first build until the other process is past its check.
WORKER = """
import logging, os, sys, time
from pathlib import Path
from prefloop.cache import cached_folder

target, signals = Path(sys.argv[1]), Path(sys.argv[2])

class Attempt(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("Attempting to acquire lock"):
            (signals / f"attempt-{os.getpid()}").touch()

log = logging.getLogger("filelock")
log.setLevel(logging.DEBUG)
log.addHandler(Attempt())

def build(folder):
    with open(signals / "builds.txt", "a") as f:
        f.write(f"{os.getpid()}\\n")
    (folder / "half-written.bin").write_bytes(b"x" * 1000)
    deadline = time.monotonic() + 120
    while not (signals / "release").exists():
        if time.monotonic() > deadline:
            sys.exit("never released")
        time.sleep(0.01)
    (folder / "done.txt").write_text("ok")

print(cached_folder(target, "done.txt", build), flush=True)
"""


def start_worker(target: Path, signals: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WORKER, str(target), str(signals)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(condition: Callable[[], bool], what: str, procs: list[subprocess.Popen[str]], deadline_s: float = 120) -> None:
    """Poll ``condition`` until it holds; fail (with the workers' errors) at the deadline or if one exits."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"a worker exited ({p.returncode}) before {what}: {p.stderr.read() if p.stderr else ''}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {deadline_s} s")
        time.sleep(0.01)


def siblings(target: Path) -> list[str]:
    """What lies beside ``target`` apart from its lock file."""
    return sorted(p.name for p in target.parent.iterdir() if p.name != target.name + ".lock")


def test_a_folder_is_built_once_and_then_reused(tmp_path: Path) -> None:
    target = tmp_path / "models" / "m"
    calls: list[Path] = []

    def build(folder: Path) -> None:
        calls.append(folder)
        (folder / "config.json").write_text("{}")

    assert cached_folder(target, "config.json", build) == target
    assert cached_folder(target, "config.json", build) == target
    assert len(calls) == 1 and calls[0] != target  # built beside the target, then renamed into place
    assert (target / "config.json").read_text() == "{}"
    assert siblings(target) == ["m"]


def test_every_marker_must_be_there(tmp_path: Path) -> None:
    """A folder missing one of its markers (left by an older prefloop) is rebuilt and replaced."""
    target = tmp_path / "m"
    target.mkdir()
    (target / "config.json").write_text("{}")  # weights missing

    def build(folder: Path) -> None:
        (folder / "config.json").write_text('{"new": 1}')
        (folder / "model.safetensors").write_bytes(b"w")

    cached_folder(target, ("config.json", "model.safetensors"), build)
    assert (target / "config.json").read_text() == '{"new": 1}'
    assert siblings(target) == ["m"]


@pytest.mark.parametrize("failure", ["raises", "forgets the marker"])
def test_a_failed_build_leaves_nothing_and_the_next_call_builds(tmp_path: Path, failure: str) -> None:
    target = tmp_path / "m"

    def broken(folder: Path) -> None:
        (folder / "half-written.bin").write_bytes(b"x" * 1000)
        if failure == "raises":
            raise OSError("disk full")

    with pytest.raises(OSError if failure == "raises" else RuntimeError, match="disk full|left no config.json"):
        cached_folder(target, "config.json", broken)
    assert siblings(target) == []

    def build(folder: Path) -> None:
        (folder / "config.json").write_text("{}")

    assert cached_folder(target, "config.json", build) == target
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]


def test_a_killed_build_leaves_no_folder_and_its_leftover_is_removed(tmp_path: Path) -> None:
    target, signals = tmp_path / "models" / "m", tmp_path / "signals"
    signals.mkdir()
    proc = start_worker(target, signals)
    try:
        wait_until(lambda: (signals / "builds.txt").exists(), "build start", [proc])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert not target.exists()
    assert siblings(target) != []  # the killed build's temporary folder ...

    def build(folder: Path) -> None:
        (folder / "done.txt").write_text("ok")

    assert cached_folder(target, "done.txt", build) == target
    assert sorted(p.name for p in target.iterdir()) == ["done.txt"]
    assert siblings(target) == ["m"]  # ... is swept by the next build


def test_two_processes_racing_for_a_folder_build_it_once(tmp_path: Path) -> None:
    target, signals = tmp_path / "models" / "m", tmp_path / "signals"
    signals.mkdir()
    procs = [start_worker(target, signals) for _ in range(2)]
    try:
        # hold the first build until both processes found the folder missing and went for the lock
        wait_until(lambda: (signals / "builds.txt").exists() and len(list(signals.glob("attempt-*"))) == 2,
                   "build with both processes at the lock", procs)
        (signals / "release").touch()
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    assert [out.strip() for out, _ in outputs] == [str(target)] * 2
    assert len((signals / "builds.txt").read_text().splitlines()) == 1
    assert sorted(p.name for p in target.iterdir()) == ["done.txt", "half-written.bin"]
    assert siblings(target) == ["m"]
