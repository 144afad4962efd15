"""Style and types are checked in the suite: ruff must find nothing; mypy may report no error that is
not in ``tests/mypy-baseline.txt`` (the errors the code had when type checking started, line numbers
dropped). Fixing one shrinks the baseline; a new one fails here with its file and message."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "tests" / "mypy-baseline.txt"


def _errors(text: str) -> Counter[str]:
    """mypy's error lines without their line and column numbers (a moved line is not a new error)."""
    return Counter(re.sub(r"^([^:]+):\d+(?::\d+)?: ", r"\1: ", line) for line in text.splitlines()
                   if ": error: " in line)


def test_ruff_finds_nothing() -> None:
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_mypy_reports_no_error_outside_the_baseline() -> None:
    run = subprocess.run(["bash", str(ROOT / "scripts" / "typecheck")], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHON": sys.executable})
    assert run.returncode in (0, 1), run.stdout + run.stderr  # 2: mypy itself failed
    new = _errors(run.stdout) - _errors(BASELINE.read_text())
    assert not new, "new mypy errors (fix them; the baseline only shrinks):\n" + "\n".join(sorted(new))
