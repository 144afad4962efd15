"""`prefloop experiment` with its compare stage: every run compares base, base + RAG, its adapter
and adapter + RAG after its last round, and the report pools them over the training seeds. The
pooled numbers are recomputed here from the answers stored in each run's store."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml
from roundkit import TINY_CONFIG, deep_merge

from prefloop.errors import ConfigError

RAG = {"rag": {"enabled": True, "kb": "support", "retriever": "bm25", "k": 2, "max_context_tokens": 60},
       "training": {"sft": {"max_length": 160}, "dpo": {"max_length": 160}}}


def _spec(folder: Path, **changes: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.yaml").write_text(yaml.safe_dump(deep_merge(TINY_CONFIG, RAG)))
    (folder / "plain.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    spec = {
        "name": "tiny-compare", "task": "support-desk-rag", "base": "tiny.yaml", "rounds": 1, "seeds": [1, 2], "jobs": 2,
        "humans": {"annotators": 1, "accuracy": 1.0}, "bootstrap": {"resamples": 300, "seed": 4},
        "wandb": {"mode": "offline"},
        "compare": {"enabled": True, "seeds": [0, 1], "samples": 1},
        "arms": [{"name": "default"}],
        **changes,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize(("changes", "expected"), [
    ({"task": "support-desk"}, "arm 'default' retrieves passages (rag.enabled), but task 'support-desk' has no knowledge base"),
    ({"task": "support-desk", "base": "plain.yaml"},
     "the compare stage's +rag conditions retrieve passages, but task 'support-desk' has no knowledge base"),
    ({"arms": [{"name": "short", "overrides": {"training.dpo.max_length": 96}}]},
     "arm 'short': training.dpo.max_length (96) cannot hold a prompt with its passages"),
    ({"compare": {"enabled": True, "conditions": ["ft", "ft+rag"]}}, "compare.conditions must include 'base'"),
    ({"compare": {"enabled": True, "conditions": ["base", "rag"]}}, "compare.conditions.1"),
    ({"compare": {"enabled": True, "seeds": [0, 0]}}, "must not repeat"),
])
def test_compare_stage_errors_are_one_line_before_anything_runs(tmp_path: Path, changes: dict, expected: str) -> None:
    from prefloop.experiments import Experiment, load_spec

    with pytest.raises(ConfigError) as err:
        Experiment(load_spec(_spec(tmp_path, **changes)), tmp_path / "out")
    assert expected in err.value.message and "\n" not in err.value.message
    assert not (tmp_path / "out").exists()


def test_retrieval_in_the_loop_is_part_of_round_0s_key(tmp_path: Path) -> None:
    from prefloop.experiments import Experiment, load_spec

    def key(**rag: Any) -> str:
        base = deep_merge(TINY_CONFIG, {**RAG, "rag": {**RAG["rag"], **rag}})
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        path = _spec(folder)
        (folder / "tiny.yaml").write_text(yaml.safe_dump(base))
        return Experiment(load_spec(path), folder / "out").runs[0].baseline

    assert key(k=2) != key(k=3)  # other passages, other round 0
    assert key(enabled=False, k=2) == key(enabled=False, k=3)  # retrieval off: rag settings do not matter


def test_the_spec_names_the_conditions_of_prefloop_compare() -> None:
    from prefloop.experiments.spec import CONDITIONS
    from prefloop.training.compare import ARMS

    assert tuple(CONDITIONS) == tuple(ARMS)


def _stored_compare(folder: Path) -> list[dict[str, Any]]:
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{folder / 'prefloop.db'}")
    with engine.connect() as c:
        rows = [{**json.loads(meta), "prompt_id": pid}
                for pid, meta in c.execute(text("SELECT prompt_id, meta FROM generations WHERE round_id IS NULL"))]
    engine.dispose()
    return [m for m in rows if m.get("purpose") == "compare"]


def _grid_by_hand(metas_by_seed: dict[int, list[dict[str, Any]]], condition: str) -> dict[int, dict[int, float]]:
    """training seed → prompt → mean over sampling seeds of the mean over samples."""
    out: dict[int, dict[int, float]] = {}
    for seed, metas in metas_by_seed.items():
        cells: dict[int, dict[int, list[float]]] = {}
        for m in metas:
            if m["arm"] == condition:
                cells.setdefault(m["prompt_id"], {}).setdefault(m["seed"], []).append(m["oracle_score"])
        out[seed] = {pid: statistics.fmean(statistics.fmean(v) for v in by_seed.values()) for pid, by_seed in cells.items()}
    return out


@pytest.mark.slow
def test_a_tiny_experiment_compares_the_four_conditions_pooled_over_seeds(tmp_path: Path) -> None:
    from prefloop.experiments import run_experiment
    from prefloop.stats import grid_ci, grid_paired_diff_ci

    out = tmp_path / "out"
    run_experiment(_spec(tmp_path), out, quiet=True)
    runs = {seed: out / "runs" / "default" / f"seed-{seed}" for seed in (1, 2)}
    for folder in runs.values():
        assert (folder / "runs" / "compare" / "round-1.json").is_file()
    # the knowledge base came with the task: retrieval in the loop and in the +rag conditions used it
    metas = {seed: _stored_compare(folder) for seed, folder in runs.items()}
    for ms in metas.values():
        assert {m["arm"] for m in ms} == {"base", "base+rag", "ft", "ft+rag"} and {m["seed"] for m in ms} == {0, 1}
        assert all(("passages" in m) == m["arm"].endswith("+rag") for m in ms)
        assert any(m.get("passages") for m in ms if m["arm"].endswith("+rag"))

    pooled = json.loads((out / "compare.json").read_text())
    assert pooled["round"] == 1
    conditions = {c["condition"]: c for c in pooled["conditions"]}
    assert list(conditions) == ["base", "base+rag", "ft", "ft+rag"]
    ci = {"resamples": 300, "seed": 4, "confidence": 0.95}
    grids = {name: _grid_by_hand(metas, name) for name in conditions}
    for name, c in conditions.items():
        assert c["arm"] == "default" and c["seeds"] == [1, 2]
        expected = grid_ci(grids[name], **ci)
        assert (c["oracle"]["mean"], c["oracle"]["low"], c["oracle"]["high"]) == pytest.approx(
            (expected.mean, expected.low, expected.high), abs=1e-12)
        assert c["oracle"]["n"] == 2 * TINY_CONFIG["training"]["evaluation"]["max_prompts"]  # 2 runs × 4 eval prompts
        per_run = [json.loads((f / "runs" / "compare" / "round-1.json").read_text()) for f in runs.values()]
        assert c["one_off"] == pytest.approx(statistics.fmean(
            next(a for a in r["arms"] if a["arm"] == name)["one_off"] for r in per_run))
    assert conditions["ft"]["one_off"] > 0 and conditions["base"]["one_off"] == 0
    assert conditions["base+rag"]["prompt_tokens"] > conditions["base"]["prompt_tokens"]
    diff = next(d for d in pooled["differences"] if (d["a"], d["b"]) == ("ft+rag", "base"))
    expected = grid_paired_diff_ci(grids["ft+rag"], grids["base"], **ci)
    assert diff["oracle"]["mean"] == pytest.approx(expected.mean, abs=1e-12)
    assert diff["within_noise"] == (expected.low <= 0 <= expected.high)
    report = (out / "report.txt").read_text()
    assert "side by side after round 1" in report and "ft+rag − base" in report
    header = (out / "compare.csv").read_text().splitlines()[0].split(",")
    assert {"condition", "oracle", "oracle_low", "style", "facts", "win_vs_base", "cost_per_1000"} <= set(header)

    # the wandb summary run holds the pooled table beside the results table
    import wandb
    from wandbkit import records

    wandb.teardown()  # the offline file is whole once the service is down
    (summary,) = [p for p in (out / "wandb").glob("offline-run-*/run-*.wandb") if "summary" in p.parent.name]
    logged = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
              for rec in records(summary) if rec.WhichOneof("record_type") == "history" for item in rec.history.item}
    assert logged["compare/_type"] == "table-file" and logged["compare/nrows"] == 4
    assert logged["results/_type"] == "table-file"

    # a run whose rounds are done but whose comparison is missing is finished by comparing only
    (runs[1] / "runs" / "compare" / "round-1.json").unlink()
    from prefloop.experiments import load_spec
    from prefloop.experiments.runner import Experiment

    exp = Experiment.open(out)
    assert [j.run.seed for j in exp.pending_jobs()[1]] == [1] and exp.pending_jobs()[0] == []
    changed = Experiment(load_spec(_spec(tmp_path, compare={"enabled": True, "seeds": [0], "samples": 1})), out)
    assert [j.run.seed for j in changed.pending_jobs()[1]] == [1, 2]  # other sampling seeds: compared again
    from prefloop.experiments.sidebyside import side_by_side

    assert side_by_side(changed) is None  # and comparisons made with other seeds are not pooled
    rounds_before = (runs[1] / "runs" / "round-1" / "eval.json").read_text()
    run_experiment(_spec(tmp_path), out, quiet=True)
    assert (runs[1] / "runs" / "compare" / "round-1.json").is_file()
    assert (runs[1] / "runs" / "round-1" / "eval.json").read_text() == rounds_before
    assert json.loads((out / "compare.json").read_text())["conditions"][0]["oracle"] == conditions["base"]["oracle"]
