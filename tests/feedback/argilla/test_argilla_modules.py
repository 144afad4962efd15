"""The Argilla package's boundary: the old module paths keep working for one release (with a
DeprecationWarning), the CLI registers its commands without loading the SDK, and the SDK's private
parts are reached from one place only."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "feedback" / "argilla"


@pytest.mark.parametrize(("old", "new", "names"), [
    ("prefloop.feedback.argilla_bridge", "prefloop.feedback.argilla",
     ("push", "pull", "sync_until", "tasks_short_of_labels", "ArgillaBridgeError", "DatasetSpec", "build_settings",
      "space_headers", "EXTERNAL_ID_PREFIX")),
    ("prefloop.feedback.argilla_cli", "prefloop.feedback.argilla.cli", ("register", "argilla_app")),
    ("prefloop.feedback.argilla_rules", "prefloop.feedback.argilla.rules", ("record_problems", "RecordPayload", "Hint")),
])
def test_old_paths_reexport_with_a_deprecation_warning(old: str, new: str, names: tuple[str, ...],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, old, raising=False)  # import it afresh, so that it warns again
    with pytest.warns(DeprecationWarning, match=re.escape(f"{old} moved to {new}; the old path goes away in 0.3")):
        module = importlib.import_module(old)
    for name in names:
        assert getattr(module, name) is getattr(importlib.import_module(new), name)


def test_the_package_exports_the_functions_not_the_modules_of_the_same_name() -> None:
    from prefloop.feedback import argilla

    assert callable(argilla.push) and callable(argilla.pull)
    assert argilla.push.__module__ == "prefloop.feedback.argilla.push"
    assert argilla.pull.__module__ == "prefloop.feedback.argilla.pull"


def test_registering_the_cli_does_not_import_the_sdk() -> None:
    code = "import sys, prefloop.cli; print(sorted(m for m in sys.modules if m == 'argilla' or m.startswith('argilla.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


_PRIVATE = re.compile(r"argilla\._|from argilla import _|\.api\b|\w\._[A-Za-z]")


def test_private_sdk_parts_are_reached_only_from_client_py() -> None:
    """argilla 2.8's exception classes live only in ``argilla._exceptions`` and a pull's record
    listing needs ``client.api``: both sit in one function each of client.py, nowhere else."""
    hits = [(path.name, n, line) for path in sorted(PACKAGE.glob("*.py"))
            for n, line in enumerate(path.read_text().splitlines(), 1) if _PRIVATE.search(line)]
    assert {name for name, _, _ in hits} == {"client.py"}, hits

    tree = ast.parse((PACKAGE / "client.py").read_text())
    allowed = {"sdk_errors", "record_models"}
    spans = {node.name: (node.lineno, node.end_lineno) for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert allowed <= set(spans)
    docstring = tree.body[0]
    assert isinstance(docstring, ast.Expr)
    for _, n, line in hits:
        inside = [name for name, (lo, hi) in spans.items() if lo <= n <= hi]
        assert inside in ([name] for name in allowed) or docstring.lineno <= n <= docstring.end_lineno, (n, line)
    code_hits = {name for _, n, _ in hits for name, (lo, hi) in spans.items() if lo <= n <= hi}
    assert code_hits == allowed  # each of the two still exists and is the one place of its kind
