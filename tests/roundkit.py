"""Shared set-up of the round tests: a project on the tiny random-init Llama, the demo prompts,
a rule judge, and small sizes so that a whole round runs in seconds."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import yaml

TINY_CONFIG: dict[str, Any] = {
    "name": "round-test",
    "store": {"url": "sqlite:///prefloop.db"},
    "queue": {"overlap": 1, "lease_seconds": 600},
    "cost": {"currency": "USD", "human_hourly_rate": 30.0, "compute_hourly_rate": 0.05},
    "aggregation": {"min_confidence": 0.3},
    "judges": {
        "default": "style-rules",
        "panel": [{
            "name": "style-rules",
            "backend": "rules",
            "rules": [
                {"type": "length", "unit": "words", "max": 12},
                {"type": "regex", "pattern": "(?i)^\\W*(hi|hello)\\b"},
            ],
        }],
    },
    "training": {
        "model": {"source": "tiny:llama-tiny", "device": "cpu"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "generation": {"candidates": 3, "prompts_per_round": 4, "max_new_tokens": 12, "temperature": 1.0,
                       "batch_size": 12, "backend": "transformers"},
        "pairing": {"strategy": "all_pairs", "max_pairs_per_prompt": 2, "edit_tasks_per_prompt": 1, "edit_priority": 10.0},
        "judges": ["style-rules"],
        "wait": {"enabled": True, "max_tasks": 6, "poll_seconds": 0.2},
        "sft": {"learning_rate": 1e-3, "max_steps": 4, "batch_size": 2, "max_length": 96},
        "dpo": {"learning_rate": 1e-3, "max_steps": 3, "batch_size": 2, "max_length": 96, "loss_type": ["sigmoid", "sft"]},
        "trainer": {"save_steps": 2, "data_rounds": 0},
        "evaluation": {"max_prompts": 4, "oracle": "support-desk"},
        "wandb": {"project": "prefloop-tests", "mode": "offline"},
    },
}


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in patch.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_project(root: Path, db_url: str | None = None, *, patch: dict[str, Any] | None = None, prompts: int | None = None) -> Any:
    """A project in ``root`` with the tiny config (``patch`` merged in) and the demo prompts imported."""
    from prefloop.feedback.importer import import_prompts
    from prefloop.project import CONFIG_NAME, Project
    from prefloop.training.demo import data_path

    cfg = deep_merge(TINY_CONFIG, patch or {})
    if db_url is not None:
        cfg["store"]["url"] = db_url
    root.mkdir(parents=True, exist_ok=True)
    (root / CONFIG_NAME).write_text(yaml.safe_dump(cfg, sort_keys=False))
    project = Project(root)
    src = data_path()
    if prompts is not None:  # a smaller copy: the first `prompts` of each split
        rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
        keep = [r for r in rows if r["split"] == "train"][:prompts] + [r for r in rows if r["split"] == "eval"][:prompts]
        src = root / "prompts.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in keep))
    import_prompts(project.store, src)
    return project


def label_counts(store: Any) -> dict[str, int]:
    """Submitted annotations by annotator kind and task kind (what a resume must not change)."""
    from sqlalchemy import func, select

    from prefloop.feedback.store.models import Annotation, Annotator, Task

    with store.session() as s:
        rows = s.execute(
            select(Annotator.kind, Task.kind, Annotation.status, func.count())
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .join(Task, Task.id == Annotation.task_id)
            .group_by(Annotator.kind, Task.kind, Annotation.status)
        ).all()
    return {f"{a}/{t}/{st}": n for a, t, st, n in rows}


#: A judge panel whose one rule every output passes: every pair it judges is a tie.
TIE_JUDGE: dict[str, Any] = {"judges": {"panel": [{
    "name": "style-rules", "backend": "rules", "rules": [{"type": "length", "unit": "words", "max": 100000}],
}]}}


def undecided_humans() -> Any:
    """A round hook: a scripted support lead (through the real server) who finds every pair equally
    good ("tie") and corrects every edit to one fixed reply. With :data:`TIE_JUDGE` only one label
    category occurs, so the judge–human Cohen's κ is undefined."""
    from prefloop.sim import ScoreOracle
    from prefloop.training.demo import scripted_humans

    oracle = ScoreOracle(lambda task, gid, text: 0.5,
                         lambda task: "Hi there! Sorry for the trouble. Is there anything else I can do?")
    return scripted_humans(n=1, accuracy=1.0, oracle=oracle)


#: While the file this variable names exists, :func:`switchable_oracle` scores NaN (a broken oracle).
BROKEN_ORACLE_FLAG = "PREFLOOP_TEST_BROKEN_ORACLE"


def switchable_oracle(meta: dict[str, Any], messages: list[dict[str, str]], text: str) -> float:
    """The support-desk oracle, or NaN while the file named by ``$PREFLOOP_TEST_BROKEN_ORACLE`` exists:
    user code that misbehaves for a while (``training.evaluation.oracle: roundkit:switchable_oracle``)."""
    from prefloop.training.demo import support_desk_oracle

    flag = os.environ.get(BROKEN_ORACLE_FLAG)
    if flag and Path(flag).exists():
        return float("nan")
    return support_desk_oracle(meta, messages, text)
