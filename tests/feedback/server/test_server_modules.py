"""The server package's boundary: the old module paths keep working for one release (with a
DeprecationWarning), and the CLI can register its commands without loading FastAPI."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import pytest


@pytest.mark.parametrize(("old", "new", "name"), [
    ("prefloop.feedback.auth", "prefloop.feedback.server.auth", "add_annotator"),
    ("prefloop.feedback.server_cli", "prefloop.feedback.server.cli", "register"),
])
def test_old_paths_reexport_with_a_deprecation_warning(old: str, new: str, name: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, old, raising=False)  # import it afresh, so that it warns again
    with pytest.warns(DeprecationWarning, match=re.escape(f"{old} moved to {new}; the old path goes away in 0.3")):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


def test_the_package_exports_the_factory_and_the_runner() -> None:
    from prefloop.feedback import server
    from prefloop.feedback.server.app import create_app
    from prefloop.feedback.server.run import serve_in_background

    assert server.create_app is create_app
    assert server.serve_in_background is serve_in_background
    with pytest.raises(AttributeError):
        server.no_such_name  # noqa: B018


def test_registering_the_cli_commands_does_not_load_fastapi() -> None:
    """`prefloop --help` and `prefloop annotators add` stay quick: FastAPI loads only to serve."""
    code = ("import sys, prefloop.cli, prefloop.feedback.server.auth; "
            "print(sorted(m for m in sys.modules if m.startswith('fastapi'))[:3])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout
