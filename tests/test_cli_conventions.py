"""One command line: --version, flags shown as flags, -q/-v with the same meaning everywhere,
every preset in `init --help`, and `export --source`."""

from __future__ import annotations

import json
import re
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import typer
import yaml
from test_cli import run
from typer.testing import CliRunner

from prefloop.cli import app
from prefloop.config import PRESETS

#: Commands that work for a while: each takes -q/--quiet and -v/--verbose.
QUIET_VERBOSE = [
    ("import",), ("queue", "add"), ("export", "dpo"), ("export", "sft"), ("judge", "run"),
    ("round", "run"), ("round", "resume"), ("demo",), ("kb", "import"), ("kb", "search"), ("kb", "eval"),
    ("compare",), ("experiment", "run"),
]


def commands(group=None, path=()):  # noqa: ANN001, ANN201
    """Every visible (command path, click command) of the CLI."""
    group = group or typer.main.get_command(app)
    for name, cmd in group.commands.items():
        if cmd.hidden:
            continue
        if hasattr(cmd, "commands"):
            yield from commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


def help_text(path: tuple[str, ...], width: int = 120) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(width), "NO_COLOR": "1", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    return result.output


def test_version_comes_from_the_package_metadata(tmp_path: Path) -> None:
    proc = run("--version", cwd=tmp_path)
    assert proc.stdout.strip() == f"prefloop {version('prefloop')}"


def test_help_shows_every_flag_as_a_flag() -> None:
    """typer 0.29 printed `--quiet <bool>` and `--help <bool>`, as if a flag took a value."""
    paths = [()] + [p for p, _ in commands()]
    assert len(paths) >= 30
    for path in paths:
        text = help_text(path)
        assert "<bool>" not in text, f"prefloop {' '.join(path)} --help:\n{text}"
    # and options that take a value still say which
    assert "<path>" in help_text(("import",)) and "<int" in help_text(("round", "run"))


def test_quiet_and_verbose_are_one_flag_style_across_commands() -> None:
    found = {path: cmd for path, cmd in commands()}
    for path in QUIET_VERBOSE:
        opts = {o for p in found[path].params for o in p.opts}
        assert {"--quiet", "-q", "--verbose", "-v"} <= opts, path
    for path, cmd in found.items():
        for p in cmd.params:
            names = set(p.opts) | set(p.secondary_opts)
            if names & {"-q", "--quiet"}:
                assert sorted(p.opts) == ["--quiet", "-q"] and p.is_flag, path
            if names & {"-v", "--verbose"}:
                assert sorted(p.opts) == ["--verbose", "-v"] and p.is_flag, path
            # the old --progress/--no-progress lives on only as a hidden alias of -q
            assert not (names & {"--progress", "--no-progress"}) or p.hidden, path


def test_quiet_and_verbose_together_are_a_one_line_error(tmp_path: Path) -> None:
    proc = run("import", "nothing.jsonl", "-q", "-v", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == "error: -q/--quiet and -v/--verbose exclude each other"


def test_init_help_lists_every_preset() -> None:
    text = help_text(("init",), width=250)
    for name in PRESETS:
        assert re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-]|\.\w)", text), f"{name} missing from init --help:\n{text}"


def _judged_project(root: Path, db_url: str):  # noqa: ANN202
    """A project with a compare task and an edit labelled by a human, and a compare task left to a rule judge."""
    from prefloop.project import CONFIG_NAME, Project, init_project

    init_project(root)
    cfg = yaml.safe_load((root / CONFIG_NAME).read_text())
    cfg["store"]["url"] = db_url
    cfg["judges"] = {"panel": [{"name": "short", "backend": "rules", "rules": [{"type": "length", "max": 8}]}]}
    (root / CONFIG_NAME).write_text(yaml.safe_dump(cfg, sort_keys=False))
    project = Project(root)
    q = project.queue
    q.add_comparison("Say hi.", ["hi", "hello there, my friend"])
    ada = q.ensure_annotator("ada")
    task = q.claim(ada)
    q.submit(ada, task.task_id, {"choice": task.candidates[0].generation_id})
    q.add_edit("Fix the typo: teh cat.", "teh cat")
    task = q.claim(ada)
    q.submit(ada, task.task_id, {"text": "the cat"})
    q.add_comparison("Say bye.", ["bye", "goodbye and farewell, friend"])
    return project


def test_export_source_filters_human_judge_or_mixed_pairs(tmp_path: Path, db_url: str) -> None:
    project = _judged_project(tmp_path / "p", db_url)
    run("judge", "run", "-q", cwd=project.root)

    def sources(name: str) -> list[str]:
        return sorted(json.loads(x)["source"] for x in (project.root / name).read_text().splitlines())

    run("export", "dpo", "all.jsonl", cwd=project.root)
    assert sources("all.jsonl") == ["human", "judge"]
    assert "wrote 1 DPO rows" in run("export", "dpo", "h.jsonl", "--source", "human", cwd=project.root).stdout
    assert sources("h.jsonl") == ["human"]
    run("export", "dpo", "j.jsonl", "--source", "judge", "--source", "mixed", cwd=project.root)
    assert sources("j.jsonl") == ["judge"]
    assert "wrote 1 SFT rows" in run("export", "sft", "s.jsonl", "--source", "human", cwd=project.root).stdout
    assert "empty" in run("export", "sft", "none.jsonl", "--source", "judge", cwd=project.root, check=False).stderr
    proc = run("export", "dpo", "bad.jsonl", "--source", "humans", cwd=project.root, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 2  # the error and its hint
    assert "'humans' is not one of 'human', 'judge', 'mixed'" in proc.stderr
    assert not (project.root / "bad.jsonl").exists()


def test_judge_run_no_progress_still_works_as_a_deprecated_alias_of_quiet(tmp_path: Path, db_url: str) -> None:
    project = _judged_project(tmp_path / "p", db_url)
    proc = run("judge", "run", "--no-progress", cwd=project.root)
    assert "deprecated" in proc.stderr and "-q" in proc.stderr
    assert "recorded" in proc.stdout
    assert "--no-progress" not in help_text(("judge", "run"))
    assert "deprecated" not in run("judge", "run", "-q", cwd=project.root).stderr


@pytest.mark.skipif(sys.platform != "linux", reason="the installed console script")
def test_flags_in_a_real_process_help(tmp_path: Path) -> None:
    out = run("judge", "run", "--help", cwd=tmp_path).stdout
    assert "<bool>" not in out and "--quiet" in out and "--verbose" in out
