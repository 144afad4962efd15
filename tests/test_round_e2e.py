"""A whole loop end to end on the tiny model: round 0 (baseline) and two rounds with scripted
humans through the real annotation server, a rule judge, SFT + DPO with LoRA, evaluation, the
report, and wandb offline runs — then the store, the files and the metrics are checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from roundkit import label_counts, make_project
from sqlalchemy import select

pytestmark = pytest.mark.slow


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):  # noqa: ANN001, ANN201
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # artifact staging, out of $HOME
    (tmp_path / "wandb-dir").mkdir()
    return tmp_path / "wandb-dir"


def test_two_rounds_end_to_end(tmp_path: Path, wandb_offline: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datasets import load_from_disk

    from prefloop.feedback.export import dataset_hash
    from prefloop.feedback.models import Artifact, Generation, Round, Task
    from prefloop.training.demo import scripted_humans
    from prefloop.training.report import collect, plot
    from prefloop.training.rounds import BASELINE_STATES, STATES, Orchestrator

    project = make_project(tmp_path / "proj", prompts=6)
    monkeypatch.setenv("OPENAI_API_KEY", "s3cret-test-key")  # an API key in the environment never reaches wandb
    calls: list[tuple[int, list[int]]] = []
    humans = scripted_humans(n=2, accuracy=0.9, seed=1)

    def spy(p, round_id, task_ids):  # noqa: ANN001
        calls.append((round_id, list(task_ids)))
        humans(p, round_id, task_ids)

    orch = Orchestrator(project, progress=False, humans=spy)
    first = orch.run_next()
    assert [r.number for r in first] == [0, 1]
    second = orch.run_next()
    assert [r.number for r in second] == [2]
    rounds = {r.number: r for r in orch.rounds()}
    assert sorted(rounds) == [0, 1, 2] and all(r.state == "done" for r in rounds.values())

    # Every state was entered, in order, once.
    for number, r in rounds.items():
        visited = [t["state"] for t in r.metrics["transitions"]]
        assert visited == list(BASELINE_STATES if number == 0 else STATES), (number, visited)
        assert not any(t.get("resumed") for t in r.metrics["transitions"])

    with project.store.session() as s:
        by_number = {r.number: r for r in s.scalars(select(Round))}
        for number in (1, 2):
            r = by_number[number]
            # Generation: 4 train prompts × 3 candidates, sampling parameters recorded on each.
            gens = s.scalars(select(Generation).where(Generation.round_id == r.id)).all()
            train = [g for g in gens if g.meta["purpose"] == "train"]
            assert len(train) == 4 * 3
            assert {g.params["temperature"] for g in train} == {1.0}
            assert all(g.params["max_new_tokens"] == 12 and g.params["backend"] == "transformers" for g in train)
            assert all(0.0 <= g.meta["oracle_score"] <= 1.0 for g in gens)
            # Round 2 sampled with round 1's adapter, round 1 with the base model.
            if number == 2:
                assert all("@adapter:" in g.model for g in train)
            else:
                assert all("@adapter:" not in g.model for g in train)
            tasks = s.scalars(select(Task).where(Task.round_id == r.id)).all()
            kinds = sorted(t.kind for t in tasks)
            assert kinds.count("compare") == 4 * 2 and kinds.count("edit") == 4
            # Datasets: registered with the hash of what is on disk.
            arts = {a.kind: a for a in s.scalars(select(Artifact).where(Artifact.round_id == r.id))}
            assert {"dpo-dataset", "sft-dataset", "adapter"} <= set(arts)
            for kind in ("dpo", "sft"):
                ds = load_from_disk(arts[f"{kind}-dataset"].path)
                assert len(ds) == r.metrics["datasets"][kind]["rows"] > 0
                assert dataset_hash(ds) == arts[f"{kind}-dataset"].sha256 == r.metrics["datasets"][kind]["sha256"]
            sft = load_from_disk(arts["sft-dataset"].path)
            assert set(sft["source"]) == {"human"}  # the support leads' edits
            assert any(m[-1]["content"].startswith("Hi ") for m in sft["messages"])  # corrected replies
            # Training: both phases ran; the adapter is registered with its hash.
            phases = r.metrics["training"]["phases"]
            assert set(phases) == {"sft", "dpo"}
            assert phases["sft"]["steps"] == 4 and phases["dpo"]["steps"] == 3
            from prefloop.training.rounds import sha256_file

            assert arts["adapter"].sha256 == r.adapter_hash == sha256_file(Path(r.adapter_path) / "adapter_model.safetensors")
        # data_rounds: 0 → round 2 trains on both rounds' labels.
        assert by_number[2].metrics["datasets"]["dpo"]["rows"] >= by_number[1].metrics["datasets"]["dpo"]["rows"]
        assert by_number[1].adapter_hash != by_number[2].adapter_hash

    # Humans were asked for the 6 top-priority tasks of each round: the 4 edits first.
    assert [len(ids) for _, ids in calls] == [6, 6]
    counts = label_counts(project.store)
    assert counts["human/edit/submitted"] == 8
    assert counts["human/compare/submitted"] == 4
    assert counts["judge/compare/submitted"] == 16

    # Evaluation: oracle score on every round, win rates against round N−1 and round 0.
    ev1, ev2 = rounds[1].metrics["eval"], rounds[2].metrics["eval"]
    assert rounds[0].metrics["eval"]["oracle_score"] is not None
    assert ev1["vs_previous"]["against"] == 0 and ev2["vs_previous"]["against"] == 1 and ev2["vs_base"]["against"] == 0
    for ev in (ev1, ev2):
        assert ev["vs_base"]["judged"] == 4 and 0.0 <= ev["vs_base"]["win_rate"] <= 1.0
    assert json.loads((project.runs_dir / "round-2" / "eval.json").read_text())["summary"]["oracle_score"] == ev2["oracle_score"]

    # Cost: human seconds priced at the hourly rate, compute seconds recorded.
    c1 = rounds[1].metrics["cost"]
    assert c1["human_labels"] == 6 and c1["human_seconds"] > 6 * 10
    assert c1["human_cost"] == pytest.approx(c1["human_seconds"] * 30.0 / 3600)
    assert c1["compute_seconds"] > 0

    # Report: rows for every round, and a PNG.
    rows = collect(project)
    assert [r.number for r in rows] == [0, 1, 2] and rows[2].human_labels == 6
    png = plot(rows, tmp_path / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The CLI, as a user runs it: the report (tables + PNG) and the rounds' states.
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}
    rep = subprocess.run([sys.executable, "-m", "prefloop.cli", "report", "-p", str(project.root), "--plot", str(tmp_path / "cli.png")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert rep.returncode == 0, rep.stderr
    for needle in ("oracle", "win vs r0", "human labels", "per point: human", "cli.png"):
        assert needle in rep.stdout, needle
    assert (tmp_path / "cli.png").read_bytes()[:4] == b"\x89PNG"
    st = subprocess.run([sys.executable, "-m", "prefloop.cli", "round", "status", "-p", str(project.root)],
                        capture_output=True, text=True, env=env, timeout=60)
    assert st.returncode == 0 and st.stdout.count(" done ") == 3, st.stdout

    # wandb: one offline run per round, with its .wandb file, in WANDB_DIR.
    runs = sorted((wandb_offline / "wandb").glob("offline-run-*"))
    loop = rounds[0].metrics["loop_id"]
    assert {p.name.split("-", 3)[3] for p in runs} == {f"{loop}-r0", f"{loop}-r1", f"{loop}-r2"}
    for p in runs:
        assert list(p.glob("run-*.wandb")), p
    r2 = next(p for p in runs if p.name.endswith(f"{loop}-r2"))
    log = next(r2.glob("run-*.wandb")).read_bytes()
    for key in (b"sft/loss", b"dpo/rewards/margins", b"round/oracle_score", b"round/win_rate_vs_base",
                b"round/labels/human", b"round/cost/human_cost", b"dpo-dataset-round-2", b"adapter-round-2"):
        assert key in log, key  # TRL's metrics, the round's metrics, the artifacts
    table = json.loads(next((r2 / "files" / "media" / "table").glob("samples_*.table.json")).read_text())
    assert table["columns"][:3] == ["prompt", "candidate_a", "candidate_b"] and "chosen" in table["columns"]
    assert len(table["data"]) == 8  # the round's compare tasks
    assert b"s3cret-test-key" not in log


def test_round_refuses_a_second_start_while_one_is_unfinished(tmp_path: Path, wandb_offline: Path) -> None:
    from prefloop.training.rounds import Orchestrator, RoundError

    project = make_project(tmp_path / "proj", prompts=2)
    orch = Orchestrator(project, progress=False)
    orch._create_round(0)
    with pytest.raises(RoundError, match="round 0 is unfinished"):
        orch.run_next()


def test_a_round_on_postgresql(tmp_path: Path, wandb_offline: Path) -> None:
    """One round on PostgreSQL: the orchestrator's store work (claims, labels, datasets, artifacts)."""
    from conftest import drop_postgres_schema, fresh_postgres_url

    from prefloop.training.demo import scripted_humans
    from prefloop.training.rounds import STATES, Orchestrator

    url = fresh_postgres_url()
    try:
        project = make_project(tmp_path / "proj", url, prompts=3)
        orch = Orchestrator(project, progress=False, humans=scripted_humans(n=2, accuracy=1.0))
        orch.run_next()
        r1 = next(r for r in orch.rounds() if r.number == 1)
        assert r1.state == "done" and [t["state"] for t in r1.metrics["transitions"]] == list(STATES)
        assert r1.metrics["datasets"]["sft"]["rows"] == 3  # the 3 edits, all corrected (accuracy 1)
        assert set(r1.metrics["training"]["phases"]) == {"sft", "dpo"} and Path(r1.adapter_path).is_dir()
        assert label_counts(project.store)["human/edit/submitted"] == 3
        assert r1.metrics["eval"]["vs_base"]["judged"] == 3
        project.store.dispose()
    finally:
        drop_postgres_schema(url)
