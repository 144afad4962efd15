"""The command line, run as a user runs it: real processes, one-line errors, keyboard annotate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PREFLOOP = str(Path(sys.executable).parent / "prefloop")


def run(*args, cwd, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("PREFLOOP_DATABASE_URL", None)
    proc = subprocess.run([PREFLOOP, *args], cwd=cwd, input=stdin, capture_output=True, text=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"prefloop {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def project(tmp_path):
    run("init", "proj", cwd=tmp_path)
    return tmp_path / "proj"


def test_help_lists_the_spine_commands(tmp_path):
    out = run("--help", cwd=tmp_path).stdout
    for cmd in ("init", "import", "queue", "annotate", "export", "stats"):
        assert cmd in out


def test_init_import_queue_annotate_export_stats(project):
    (project / "prompts.jsonl").write_text('{"prompt": "Say hi"}\n{"prompt": "Say bye", "split": "eval"}\n')
    assert "imported 2 new prompt(s)" in run("import", "prompts.jsonl", cwd=project).stdout
    tasks = [
        {"prompt": "Say hi", "outputs": ["hi", "[bold red]<script>x</script>[/]"]},
        {"prompt": "Rate me", "outputs": ["fine"], "kind": "rate"},
        {"prompt": "Rank", "outputs": ["a", "b", "c"], "kind": "rank"},
        {"prompt": "Fix", "outputs": ["teh"], "kind": "edit"},
    ]
    (project / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
    assert "queued 4 task(s)" in run("queue", "add", "tasks.jsonl", cwd=project).stdout
    status = run("queue", "status", cwd=project).stdout
    assert "compare" in status and "open slots 4" in status
    # keys: compare → 2 (the second output), rate → 4, rank → 3,1,2, edit → e + text + '.'
    session = run("annotate", "--annotator", "ada", cwd=project, stdin="2" "4" "312" "ethe\n.\n").stdout
    assert "[bold red]<script>x</script>[/]" in session  # untrusted output shown literally
    assert "submitted 4" in session and "No task left" in session
    out = run("export", "dpo", "dpo.jsonl", "--min-confidence", "0", cwd=project).stdout
    assert "wrote 2 DPO rows" in out
    rows = [json.loads(x) for x in (project / "dpo.jsonl").read_text().splitlines()]
    chosen = {r["chosen"][0]["content"] for r in rows}
    assert chosen == {"[bold red]<script>x</script>[/]", "c"}
    # the edit, and the output rated 4 (≥ aggregation.sft_min_rating)
    assert "wrote 2 SFT rows" in run("export", "sft", "sft.jsonl", cwd=project).stdout
    sft = [json.loads(x) for x in (project / "sft.jsonl").read_text().splitlines()]
    assert sorted(r["messages"][-1]["content"] for r in sft) == ["fine", "the"]
    assert "human" in run("stats", cwd=project).stdout


def test_quit_releases_the_task_and_skip_is_remembered(project):
    (project / "t.jsonl").write_text('{"prompt": "p", "outputs": ["a", "b"]}\n{"prompt": "q", "outputs": ["c", "d"]}\n')
    run("queue", "add", "t.jsonl", cwd=project)
    assert "Stopped; the task was released" in run("annotate", "-a", "bo", cwd=project, stdin="q").stdout
    out = run("annotate", "-a", "bo", cwd=project, stdin="s1").stdout
    assert "submitted 1 · skipped 1" in out
    assert "No task left" in run("annotate", "-a", "bo", cwd=project, stdin="").stdout


def test_errors_are_one_line_with_hint_and_debug_shows_traceback(project, tmp_path):
    (project / "bad.jsonl").write_text('{"prompt": "ok"}\n{"prompt": \n')
    proc = run("import", "bad.jsonl", cwd=project, check=False)
    assert proc.returncode == 1
    assert "bad.jsonl:2: not valid JSON" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("--debug", "import", "bad.jsonl", cwd=project, check=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    (tmp_path / "elsewhere").mkdir()
    proc = run("queue", "status", cwd=tmp_path / "elsewhere", check=False)
    assert proc.returncode == 1 and "no prefloop.yaml" in proc.stderr and "prefloop init" in proc.stderr
    (project / "prefloop.yaml").write_text("queue:\n  overlapp: 2\n")
    proc = run("queue", "status", cwd=project, check=False)
    assert "unknown key 'queue.overlapp'" in proc.stderr and "did you mean 'overlap'" in proc.stderr
    assert run("init", str(project), cwd=tmp_path, check=False).returncode == 1


def test_export_of_nothing_says_what_to_do(project):
    proc = run("export", "dpo", "x.jsonl", cwd=project, check=False)
    assert proc.returncode == 1 and "empty" in proc.stderr and "label some tasks first" in proc.stderr
