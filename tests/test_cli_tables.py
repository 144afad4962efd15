"""The tables a person reads, at 80 columns: text wraps, numbers are never cut or folded."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from test_cli import run

#: A whole number as a table shows it: a count, a share, a cost, a percentage, a date or time.
NUMBER = re.compile(r"^[-+]?\d[\d.,:%-]*$")
TABLE_COMMANDS = [("judge", "list"), ("report",), ("queue", "status"), ("stats",), ("round", "status"), ("kb", "list")]


def numbers(text: str) -> Counter[str]:
    """Every whitespace-separated token of ``text`` that is a number (box characters are spaces)."""
    tokens = re.split(r"[\s│┃║|]+", text)
    return Counter(t for t in tokens if NUMBER.match(t))


@pytest.fixture
def busy_project(tmp_path: Path, db_url: str) -> Path:
    """A project whose tables are wide: a long judge model name, four-digit costs, a long knowledge
    base name, an unfinished round with a long error, two humans and a judge on the same tasks."""
    from sqlalchemy import select

    from prefloop.feedback.store.models import Round
    from prefloop.project import CONFIG_NAME, Project, init_project
    from prefloop.retrieval.ingest import import_kb

    root = tmp_path / "busy"
    init_project(root)
    cfg = yaml.safe_load((root / CONFIG_NAME).read_text())
    cfg["store"]["url"] = db_url
    cfg["judges"] = {"default": "style-rules", "panel": [
        {"name": "style-rules", "backend": "rules", "rules": [{"type": "length", "unit": "words", "max": 12}]},
        {"name": "llama-70b-turbo-remote", "backend": "openai", "base_url": "http://127.0.0.1:9/v1",
         "model": "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo-with-a-long-suffix", "api_key_env": None},
    ]}
    (root / CONFIG_NAME).write_text(yaml.safe_dump(cfg, sort_keys=False))
    project = Project(root)
    with project.store.session() as s:
        s.add(Round(number=0, state="done", config={}, metrics={"eval": {"oracle_score": 0.385}, "seconds": {"evaluating": 13.2}}))
        s.add(Round(number=1, state="done", adapter_path=str(root / "runs" / "round-1" / "adapter"), config={}, metrics={
            "eval": {"oracle_score": 0.396, "vs_previous": {"win_rate": 0.667}, "vs_base": {"win_rate": 0.875}},
            "datasets": {"dpo": {"rows": 1919}, "sft": {"rows": 1212}},
            "training": {"phases": {"sft": {"steps": 600}, "dpo": {"steps": 511}}},
            "seconds": {"generating": 21.5, "training": 60000.0, "evaluating": 13.0}}))
        s.add(Round(number=2, state="building_datasets", config={}, metrics={},
                    error="TrainingError: dpo: the dataset is empty (hint: label more tasks, or lower aggregation.min_confidence)"))
    with project.store.session() as s:
        round_1 = s.scalar(select(Round.id).where(Round.number == 1))
    q = project.queue
    ada, bo = q.ensure_annotator("ada-lovelace-with-a-long-name"), q.ensure_annotator("bo")
    judge = q.ensure_annotator("llama-70b-turbo-remote", kind="judge")
    for i in range(14):
        q.add_comparison(f"prompt {i}", [f"a{i}", f"b{i}"], round_id=round_1, overlap=2)
    for i in range(14):
        task = q.claim(ada, round_id=round_1)
        q.submit(ada, task.task_id, {"choice": task.candidates[i % 2].generation_id}, duration_s=12345.6)
        task = q.claim(bo, round_id=round_1)
        q.submit(bo, task.task_id, {"choice": task.candidates[0].generation_id}, duration_s=25)
        q.record(judge, task.task_id, {"choice": task.candidates[(i // 3) % 2].generation_id}, cost=98.7654321,
                 meta={"winner": "A", "consistent": i % 3 != 0})
    for i in range(3):
        q.add_rating(f"rate {i}", f"out {i}")
    docs = root / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"doc{i}.txt").write_text(f"Document {i} about the refunds and returns policy of Acme.\n")
    import_kb(project.store, docs, kb="support-knowledge-base-with-a-long-name")
    project.store.dispose()
    return root


def test_tables_fit_80_columns_with_every_number_whole(busy_project: Path) -> None:
    for command in TABLE_COMMANDS:
        wide = run(*command, cwd=busy_project, env={"COLUMNS": "250"}).stdout
        narrow = run(*command, cwd=busy_project, env={"COLUMNS": "80"}).stdout
        where = f"prefloop {' '.join(command)} at 80 columns:\n{narrow}"
        assert max(len(line) for line in narrow.splitlines()) <= 80, where
        assert "…" not in narrow, where
        expected = numbers(wide)
        assert len(expected) >= 3, f"the wide table shows too few numbers to test:\n{wide}"
        missing = expected - numbers(narrow)
        assert not missing, f"numbers cut or folded: {sorted(missing)}\n{where}"
