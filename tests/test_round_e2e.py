"""A whole loop end to end on the tiny model, on SQLite and on PostgreSQL: round 0 (baseline) and two
rounds with scripted humans through the real annotation server, a rule judge, SFT + DPO with LoRA,
evaluation, the report, and wandb offline runs — then the store, the files and the metrics are
checked. Also: a round whose judge–human κ is undefined, and a round that fails in ``evaluating``
and is finished by ``prefloop round resume``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from roundkit import BROKEN_ORACLE_FLAG, TIE_JUDGE, label_counts, make_project, undecided_humans
from sqlalchemy import select

pytestmark = pytest.mark.slow


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):  # noqa: ANN001, ANN201
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # artifact staging, out of $HOME
    (tmp_path / "wandb-dir").mkdir()
    return tmp_path / "wandb-dir"


@pytest.fixture
def project_on(tmp_path: Path, db_url: str):  # noqa: ANN201
    """``make_project`` on the test's database (SQLite or PostgreSQL); its store is closed afterwards."""
    made = []

    def make(**kw):  # noqa: ANN003, ANN202
        made.append(make_project(tmp_path / "proj", db_url, **kw))
        return made[-1]

    yield make
    for project in made:
        project.store.dispose()


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "prefloop.cli", *args], capture_output=True, text=True, env=env, timeout=timeout)


def _strict_json(text: str):  # noqa: ANN202
    """Parse as strict JSON: NaN and Infinity are errors, as on PostgreSQL."""

    def refuse(token: str):  # noqa: ANN202
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_two_rounds_end_to_end(tmp_path: Path, project_on, wandb_offline: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from datasets import load_from_disk

    from prefloop.feedback.export import dataset_hash
    from prefloop.feedback.store.models import Artifact, Generation, Round, Task
    from prefloop.training.demo import scripted_humans
    from prefloop.training.report import collect, plot
    from prefloop.training.rounds import Orchestrator, round_states

    project = project_on(prompts=6, patch={"training": {"evaluation": {"samples_per_prompt": 2, "bootstrap_resamples": 500}}})
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
        visited = [t.state for t in r.control.transitions]
        assert visited == list(round_states(project.config, number)), (number, visited)
        assert "reward_model" not in visited  # no reward-model judge configured: the state is skipped
        assert not any(t.resumed for t in r.control.transitions)
        # The control state lives apart from what the round reports.
        assert not {"loop_id", "transitions", "seconds", "wait_tasks", "wait_started_at", "train_prompt_ids",
                    "data_rounds"} & set(r.metrics)
        assert all("path" not in d for d in r.metrics.get("datasets", {}).values())

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
            assert any(c[0]["content"].startswith("Hi ") for c in sft["completion"])  # corrected replies
            assert all(p[-1]["role"] == "user" and c[0]["role"] == "assistant" for p, c in zip(sft["prompt"], sft["completion"], strict=True))
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

    # Evaluation: 2 samples on each of 4 eval prompts, each scored by the oracle; sample k against
    # sample k of round N−1 and of round 0; 95 % intervals over the prompts.
    ev1, ev2 = rounds[1].metrics["eval"], rounds[2].metrics["eval"]
    assert rounds[0].metrics["eval"]["oracle_score"] is not None
    assert ev1["vs_previous"]["against"] == 0 and ev2["vs_previous"]["against"] == 1 and ev2["vs_base"]["against"] == 0
    assert "oracle_change" not in rounds[0].metrics["eval"] and set(ev2["oracle_change"]) == {"vs_previous", "vs_base"}
    for r in rounds.values():
        ev = r.metrics["eval"]
        assert (ev["prompts"], ev["samples"], ev["samples_per_prompt"]) == (4, 8, 2)
        assert ev["bootstrap"] == {"resamples": 500, "seed": 0, "confidence": 0.95}
        lo, hi = ev["oracle_score_ci"]
        assert 0.0 <= lo <= ev["oracle_score"] <= hi <= 1.0
        saved = _strict_json((project.runs_dir / f"round-{r.number}" / "eval.json").read_text())
        assert saved["summary"] == ev
        per_prompt = saved["per_prompt"]
        assert len(per_prompt) == 4 and all(len(p["generation_ids"]) == len(p["oracle"]) == 2 for p in per_prompt)
        # the summary is the per-prompt results' mean
        assert ev["oracle_score"] == pytest.approx(sum(sum(p["oracle"]) for p in per_prompt) / 8)
        with project.store.session() as s:
            for p in per_prompt:
                stored = [g.meta["oracle_score"] for g in s.scalars(select(Generation).where(Generation.id.in_(p["generation_ids"])))]
                assert sorted(stored) == sorted(p["oracle"])
        if r.number == 0:
            assert "vs_base" not in ev and all(set(p) == {"prompt_id", "generation_ids", "oracle"} for p in per_prompt)
            continue
        for label in ("vs_previous", "vs_base"):
            wr = ev[label]
            assert wr["judged"] + wr["failed"] == 8 and 0.0 <= wr["win_rate"] <= 1.0
            lo, hi = wr["win_rate_ci"]
            assert 0.0 <= lo <= wr["win_rate"] <= hi <= 1.0 and wr["within_noise"] == (lo <= 0.5 <= hi)
            assert all(len(p[label]) == 2 for p in per_prompt)
            outcomes = [x for p in per_prompt for x in p[label] if x is not None]
            assert wr["win_rate"] == pytest.approx(sum(outcomes) / len(outcomes))
            change = ev["oracle_change"][label]
            assert change["against"] == wr["against"] and change["prompts"] == 4
            assert change["within_noise"] == (change["ci"][0] <= 0.0 <= change["ci"][1])
        json.dumps(r.metrics, allow_nan=False)
    # the change since round 1 is the per-prompt difference of the two rounds' stored scores
    r1_scores = {p["prompt_id"]: p["oracle"] for p in _strict_json((project.runs_dir / "round-1" / "eval.json").read_text())["per_prompt"]}
    r2_scores = {p["prompt_id"]: p["oracle"] for p in _strict_json((project.runs_dir / "round-2" / "eval.json").read_text())["per_prompt"]}
    assert ev2["oracle_change"]["vs_previous"]["diff"] == pytest.approx(
        sum(sum(r2_scores[k]) / 2 - sum(r1_scores[k]) / 2 for k in r2_scores) / 4)

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
    for needle in ("oracle", "win vs", "Δ oracle", "human", "labels", "per point", "cli.png",  # headers of two lines
                   f"{ev2['oracle_score']:.3f} [{ev2['oracle_score_ci'][0]:.2f}, {ev2['oracle_score_ci'][1]:.2f}]"):
        assert needle in rep.stdout, needle
    assert (tmp_path / "cli.png").read_bytes()[:4] == b"\x89PNG"
    st = subprocess.run([sys.executable, "-m", "prefloop.cli", "round", "status", "-p", str(project.root)],
                        capture_output=True, text=True, env=env, timeout=60)
    assert st.returncode == 0 and st.stdout.count(" done ") == 3, st.stdout

    # wandb: one offline run per round, with its .wandb file, in WANDB_DIR.
    runs = sorted((wandb_offline / "wandb").glob("offline-run-*"))
    loop = rounds[0].control.loop_id
    assert {p.name.split("-", 3)[3] for p in runs} == {f"{loop}-r0", f"{loop}-r1", f"{loop}-r2"}
    for p in runs:
        assert list(p.glob("run-*.wandb")), p
    r2 = next(p for p in runs if p.name.endswith(f"{loop}-r2"))
    log = next(r2.glob("run-*.wandb")).read_bytes()
    for key in (b"sft/loss", b"dpo/rewards/margins", b"round/oracle_score", b"round/win_rate_vs_base",
                b"round/oracle_score_ci/low", b"round/win_rate_vs_base_ci/high", b"round/oracle_change_vs_previous",
                b"round/labels/human", b"round/cost/human_cost", b"dpo-dataset-round-2", b"adapter-round-2",
                b"sft/args", b"dpo/args", b"model/config"):
        assert key in log, key  # TRL's metrics, the round's metrics, the artifacts, TRL's arguments and the model config
    assert b"cache-" not in log  # the datasets' artifacts carry their data, not the caches TRL's map left beside it
    table = json.loads(next((r2 / "files" / "media" / "table").glob("samples_*.table.json")).read_text())
    assert table["columns"][:3] == ["prompt", "candidate_a", "candidate_b"] and "chosen" in table["columns"]
    assert len(table["data"]) == 8  # the round's compare tasks
    assert b"s3cret-test-key" not in log


def test_round_refuses_a_second_start_while_one_is_unfinished(tmp_path: Path, wandb_offline: Path) -> None:
    from prefloop.training.rounds import Orchestrator, RoundError

    project = make_project(tmp_path / "proj", prompts=2)
    orch = Orchestrator(project, progress=False)
    orch.create_round(0)
    with pytest.raises(RoundError, match="round 0 is unfinished"):
        orch.run_next()


def test_a_round_where_kappa_is_undefined(tmp_path: Path, project_on, wandb_offline: Path) -> None:  # noqa: ANN001
    """Humans and the judge both call every pair a tie: Cohen's κ is undefined. The round finishes on
    both databases, κ is stored as null and shown as n/a (PostgreSQL refused the NaN this used to be)."""
    from prefloop.feedback.agreement import judge_human_agreement
    from prefloop.training.rounds import Orchestrator

    project = project_on(prompts=3, patch=TIE_JUDGE)
    orch = Orchestrator(project, progress=False, humans=undecided_humans())
    orch.run_next()
    r1 = next(r for r in orch.rounds() if r.number == 1)
    assert r1.state == "done"
    (judge,) = judge_human_agreement(project.store, round_ids=[r1.id])
    assert judge.n == 3 and judge.agreement == 1.0 and judge.kappa is None
    assert judge.n_without_ties == 0 and judge.agreement_without_ties is None
    assert r1.metrics["agreement"] == {"style-rules": {"n": 3, "agreement": 1.0, "kappa": None}}
    trust = r1.metrics["trust"]["style-rules"]["compare"]  # three agreeing ties: too few to trust (min_n 10)
    assert (trust["n"], trust["agree"], trust["ties"], trust["blind_ties"], trust["status"]) == (3, 3, 3, 0, "unmeasured")
    assert trust["high"] == 1.0 and trust["rate"] == 1.0 and not trust["blind"]
    assert _strict_json((project.runs_dir / "round-1" / "eval.json").read_text())["summary"]["vs_base"]["win_rate"] == 0.5

    root = str(project.root)
    stats = _cli("stats", "-p", root)
    assert stats.returncode == 0, stats.stderr
    row = next(line for line in stats.stdout.splitlines() if "style-rules" in line)
    assert row.split()[-1] == "n/a", row  # the κ column
    agreement = _cli("judge", "agreement", "--json", "-p", root)
    assert agreement.returncode == 0, agreement.stderr
    (shown,) = _strict_json(agreement.stdout)
    assert (shown["kappa"], shown["agreement_without_ties"], shown["agreement"]) == (None, None, 1.0)
    table = _cli("judge", "agreement", "--png", str(tmp_path / "agreement.png"), "-p", root)
    assert table.returncode == 0 and "n/a" in table.stdout, table.stdout + table.stderr
    assert (tmp_path / "agreement.png").read_bytes()[:4] == b"\x89PNG"
    report = _cli("report", "-p", root, "--plot", str(tmp_path / "report.png"))
    assert report.returncode == 0, report.stderr
    assert "n/a" in report.stdout  # round 0 has no win rate
    assert "judge trust vs humans" in report.stdout and "unmeasured" in report.stdout


def test_a_failure_in_evaluating_then_round_resume(tmp_path: Path, project_on, wandb_offline: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """The oracle breaks (scores NaN) once the labels are in: round 1 stops in ``evaluating`` with the
    same one-line error on both databases, stores nothing of the broken step, and
    ``prefloop round resume`` finishes it once the oracle works again."""
    from prefloop.errors import ConfigError
    from prefloop.feedback.store.models import Generation, Round
    from prefloop.training.demo import scripted_humans
    from prefloop.training.rounds import Orchestrator, round_states

    broken = tmp_path / "oracle-broken"
    monkeypatch.setenv(BROKEN_ORACLE_FLAG, str(broken))
    project = project_on(prompts=3, patch={"training": {"evaluation": {"oracle": "roundkit:switchable_oracle"}}})
    humans = scripted_humans(n=2, accuracy=1.0)

    def then_break_the_oracle(p, round_id, task_ids):  # noqa: ANN001, ANN202
        humans(p, round_id, task_ids)
        broken.touch()

    with pytest.raises(ConfigError, match=r"oracle returned nan .* oracles must score in \[0, 1\]"):
        Orchestrator(project, progress=False, humans=then_break_the_oracle).run_next()
    with project.store.session() as s:
        r1 = s.scalar(select(Round).where(Round.number == 1))
        assert r1.state == "evaluating" and "oracle returned nan" in r1.error and "\n" not in r1.error
        eval_samples = [m for m in s.scalars(select(Generation.meta).where(Generation.round_id == r1.id))
                        if m["purpose"] == "eval"]
        assert eval_samples == []  # the failed batch left nothing behind
    before = label_counts(project.store)

    broken.unlink()
    tests_dir = str(Path(__file__).parent)
    env = {"PYTHONPATH": os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    resumed = _cli("round", "resume", "-p", str(project.root), "--quiet", env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "round 1: done" in resumed.stdout
    with project.store.session() as s:
        r1 = s.scalar(select(Round).where(Round.number == 1))
        assert (r1.state, r1.error) == ("done", None)
        visited = [t["state"] for t in r1.state_data["transitions"]]
        assert visited == [*round_states(project.config, 1)[:-1], "evaluating", "done"]
        assert r1.state_data["transitions"][-2].get("resumed") is True
        assert 0.0 <= r1.metrics["eval"]["oracle_score"] <= 1.0 and r1.metrics["eval"]["vs_base"]["judged"] == 3
        assert set(r1.metrics["agreement"]) <= {"style-rules"} and r1.metrics["cost"]["human_labels"] == 6
        json.dumps(r1.metrics, allow_nan=False)
    assert label_counts(project.store) == before  # the resume relabelled nothing
