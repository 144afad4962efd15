"""``prefloop kb`` as a user runs it: import, list, search (untrusted text shown visibly), eval,
and one-line errors that change nothing — on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PREFLOOP = str(Path(sys.executable).parent / "prefloop")


def run(*args, cwd, env_extra=None, check=True):
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env_extra or {})}
    if not env_extra:
        env.pop("PREFLOOP_DATABASE_URL", None)
    proc = subprocess.run([PREFLOOP, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"prefloop {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def project(tmp_path, db_url):
    run("init", "proj", cwd=tmp_path, env_extra={"PREFLOOP_DATABASE_URL": db_url})
    root = tmp_path / "proj"
    docs = root / "kb"
    docs.mkdir()
    (docs / "refunds.md").write_text("# Refunds\nRefunds are paid within 14 days.\x1b[2K\x1b[1GRefunds are never paid.\u202e\n")
    (docs / "shipping.md").write_text("# Shipping\nShipping to Canada takes 5 to 7 business days.\n")
    return root, {"PREFLOOP_DATABASE_URL": db_url}


def test_import_list_search_eval(project):
    root, env = project
    out = run("kb", "import", "kb", "--kb", "policies", cwd=root, env_extra=env).stdout
    assert "2 new, 0 changed, 0 unchanged document(s); 2 chunk(s) written" in out
    assert "0 new, 0 changed, 2 unchanged" in run("kb", "import", "kb", "--kb", "policies", cwd=root, env_extra=env).stdout
    listing = run("kb", "list", cwd=root, env_extra=env).stdout
    assert "policies" in listing and "120 words, overlap 20" in listing

    out = run("kb", "search", "when are refunds paid", "--kb", "policies", "-k", "2", cwd=root, env_extra=env).stdout
    assert "kb/refunds.md #0" in out
    assert "\x1b" not in out and "\u202e" not in out  # no raw escape reaches the terminal…
    assert "\\x1b[2K" in out and "\\u202e" in out  # …it is shown instead
    assert ("postgres ·" if env["PREFLOOP_DATABASE_URL"].startswith("postgresql") else "bm25 ·") in out  # the default

    q = root / "queries.jsonl"
    q.write_text(json.dumps({"query": "refund days", "relevant": ["kb/refunds.md"]}) + "\n"
                 + json.dumps({"query": "Canada delivery time", "relevant": "kb/shipping.md"}) + "\n")
    out = run("kb", "eval", "queries.jsonl", "--kb", "policies", "-k", "1", "-r", "bm25", cwd=root, env_extra=env).stdout
    row = next(line for line in out.splitlines() if line.startswith("bm25 "))
    assert row.split()[:4] == ["bm25", "1.000", "1.000", "1.000"]


def test_bad_input_is_one_line_and_changes_nothing(project):
    root, env = project
    run("kb", "import", "kb", cwd=root, env_extra=env)
    before = run("kb", "list", cwd=root, env_extra=env).stdout
    bad = root / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": "nul \\u0000"}\n')
    proc = run("kb", "import", "bad.jsonl", cwd=root, env_extra=env, check=False)
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert err.startswith("error: ") and "bad.jsonl:2: field 'text' holds a NUL" in err and "Traceback" not in err
    proc = run("kb", "import", "kb", "--chunk-size", "5", "--chunk-overlap", "9", cwd=root, env_extra=env, check=False)
    assert proc.returncode == 1 and "overlap (9) must be smaller than size (5)" in proc.stderr
    proc = run("kb", "search", "x", "--kb", "nope", cwd=root, env_extra=env, check=False)
    assert proc.returncode == 1 and "no knowledge base named 'nope'" in proc.stderr
    assert run("kb", "list", cwd=root, env_extra=env).stdout == before
    run("kb", "search", "refunds", cwd=root, env_extra=env)
    indexes = list((root / ".prefloop" / "index").glob("*/kb*"))
    assert bool(indexes) == env["PREFLOOP_DATABASE_URL"].startswith("sqlite")  # bm25 files on SQLite only
    out = run("kb", "delete", "default", "--yes", cwd=root, env_extra=env).stdout
    assert "deleted knowledge base 'default': 2 document(s), 2 chunk(s)" in out
    assert "no knowledge bases yet" in run("kb", "list", cwd=root, env_extra=env).stdout
    assert not list((root / ".prefloop" / "index").glob("*/kb*"))
