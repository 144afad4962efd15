"""The command line, run as a user runs it: real processes, one-line errors, keyboard annotate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PREFLOOP = str(Path(sys.executable).parent / "prefloop")


def run(*args, cwd, stdin: str | None = None, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """``prefloop ARGS`` in a real process; the project's own store unless ``env`` names another."""
    full = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    full.pop("PREFLOOP_DATABASE_URL", None)
    full.update(env or {})
    proc = subprocess.run([PREFLOOP, *args], cwd=cwd, input=stdin, capture_output=True, text=True, env=full, timeout=300)
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
    assert sorted(r["completion"][0]["content"] for r in sft) == ["fine", "the"]  # prompt/completion by default
    assert all(r["completion"][0]["role"] == "assistant" and r["prompt"][-1]["role"] == "user" for r in sft)
    assert "messages" in run("export", "sft", "old.jsonl", "--type", "messages", cwd=project).stdout
    old = [json.loads(x) for x in (project / "old.jsonl").read_text().splitlines()]
    assert [r["messages"] for r in old] == [r["prompt"] + r["completion"] for r in sft]
    bad = run("export", "sft", "x.jsonl", "--type", "text", cwd=project, check=False)
    assert bad.returncode == 1 and "unknown SFT dataset type 'text'" in bad.stderr and not (project / "x.jsonl").exists()
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


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The error line of a failed command, checked to be the only one (a hint line may follow)."""
    assert proc.returncode == 1, proc
    lines = proc.stderr.splitlines()
    assert lines and lines[0].startswith("error: "), proc.stderr
    assert all(line.startswith("hint: ") for line in lines[1:]), proc.stderr
    assert "Traceback" not in proc.stderr and "[SQL:" not in proc.stderr
    return lines[0]


def test_queue_add_errors_are_one_line_naming_file_line_and_field_and_nothing_is_written(project, db_url):
    """The issue's cases, on SQLite and PostgreSQL: wrong types, NaN, a bogus kind, binary input, a NUL."""
    env = {"PREFLOOP_DATABASE_URL": db_url, "COLUMNS": "80"}  # 80 columns: what rich assumes without a terminal
    good = b'{"prompt": "fine", "outputs": ["x", "y"]}\n'
    cases = [
        (b'{"prompt": "p", "outputs": ["a", "b"], "priority": [1]}', "t.jsonl:2: field 'priority' must be a number, got list"),
        (b'{"prompt": "p", "outputs": ["a", "b"], "priority": NaN}', "t.jsonl:2: field 'priority' is nan"),
        (b'{"prompt": "p", "outputs": ["a", "b"], "kind": "bogus"}', "t.jsonl:2: field 'kind' is 'bogus'; expected one of"),
        (b'{"prompt": "p", "outputs": ["same", "same"]}', "t.jsonl:2: field 'outputs': outputs 1 and 2 are identical"),
        (b'{"prompt": "p\\u0000", "outputs": ["a", "b"]}', "t.jsonl:2: field 'prompt' holds a NUL character (U+0000)"),
        (b'{"prompt": "p", "outputs": ["a", "b\\ud800"]}', "t.jsonl:2: field 'outputs'[1] holds an invalid character"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "t.jsonl:2: not valid UTF-8 (byte 0x89 at column 1)"),
    ]
    for line, message in cases:
        (project / "t.jsonl").write_bytes(good + line + b"\n")
        error = one_line_error(run("queue", "add", "t.jsonl", cwd=project, check=False, env=env))
        assert message in error, (message, error)
    assert "open slots 0" in run("queue", "status", cwd=project, env=env).stdout


def test_errors_stay_on_one_line_without_a_terminal_and_database_errors_hide_sql(project, tmp_path):
    long_name = "a-file-name-long-enough-to-wrap-any-80-column-console-" * 2 + ".jsonl"
    (project / long_name).write_text('{"prompt": "ok"}\n{"prompt": "x", "split": "test"}\n')
    error = one_line_error(run("import", long_name, cwd=project, check=False, env={"COLUMNS": ""}))
    assert f"{long_name}:2: field 'split' is 'test'" in error
    unreachable = {"PREFLOOP_DATABASE_URL": "postgresql+psycopg://nobody:secret-pw@127.0.0.1:1/none"}
    error = one_line_error(run("queue", "status", cwd=project, check=False, env=unreachable))
    assert "database" in error and "secret-pw" not in error


def test_usage_errors_are_one_line_too(project):
    proc = run("queue", "add", "--priority", "abc", "t.jsonl", cwd=project, check=False, env={"COLUMNS": ""})
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 2, proc.stderr
    assert lines[0].startswith("error: Invalid value for '--priority'") and lines[1] == "hint: see `prefloop queue add --help`"
    proc = run("queue", cwd=project, check=False)  # a group without a command still shows its help
    assert "add" in proc.stdout + proc.stderr and "status" in proc.stdout + proc.stderr
