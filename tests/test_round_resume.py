"""``kill -9`` during training, then ``prefloop round resume``: the round finishes from the last
checkpoint, with the same tasks, generations and labels it had, and a trained adapter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from roundkit import label_counts, make_project
from sqlalchemy import func, select
from waitkit import wait_until

pytestmark = pytest.mark.slow
PREFLOOP = [sys.executable, "-m", "prefloop.cli"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(WANDB_MODE="offline", WANDB_DIR=str(tmp_path), WANDB_DATA_DIR=str(tmp_path / "wandb-data"),
               OMP_NUM_THREADS="1", PREFLOOP_DEBUG="1")
    env.pop("WANDB_API_KEY", None)
    env.pop("WANDB_SERVICE", None)  # each CLI process gets its own wandb service, as from a shell
    return env


def _state(project, number: int) -> str | None:  # noqa: ANN001
    from prefloop.feedback.store.models import Round

    with project.store.session() as s:
        return s.scalar(select(Round.state).where(Round.number == number))


def _counts(project) -> dict[str, int]:  # noqa: ANN001
    from prefloop.feedback.store.models import Artifact, Generation, Task

    with project.store.session() as s:
        counts = {
            # eval samples come after training; what exists before must stay as it was
            "train_generations": sum(1 for m in s.scalars(select(Generation.meta)) if m.get("purpose") == "train"),
            "tasks": s.scalar(select(func.count()).select_from(Task)),
            "dataset_artifacts": s.scalar(select(func.count()).select_from(Artifact).where(Artifact.kind.like("%-dataset"))),
        }
    return {**counts, **label_counts(project.store)}


def _wait_for(predicate, what: str, proc: subprocess.Popen, timeout: float = 240.0) -> None:  # noqa: ANN001
    try:
        wait_until(lambda: predicate() or proc.poll() is not None, what, timeout=timeout, interval=0.1)
    except AssertionError:
        proc.kill()
        raise
    if not predicate():
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        raise AssertionError(f"the round process exited ({proc.returncode}) before {what}:\n{out[-3000:]}")


def test_kill_9_during_training_then_resume(tmp_path: Path) -> None:
    from prefloop.training.demo import scripted_humans
    from prefloop.training.trainers import last_complete_checkpoint

    project = make_project(
        tmp_path / "proj", prompts=4,
        patch={"training": {"sft": {"max_steps": 40}, "trainer": {"save_steps": 2}, "wait": {"poll_seconds": 0.2}}},
    )
    proc = subprocess.Popen([*PREFLOOP, "round", "run", "-p", str(project.root), "--quiet"], env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # The round waits for humans: scripted support leads answer through the HTTP API from here.
        _wait_for(lambda: _state(project, 1) == "waiting", "round 1 waits for humans", proc)
        from prefloop.feedback.store.models import Round

        with project.store.session() as s:
            rid = s.scalar(select(Round.id).where(Round.number == 1))
        targets = list(_poll_targets(project, rid))
        scripted_humans(n=1, accuracy=0.9)(project, rid, targets)
        ckpts = project.runs_dir / "round-1" / "sft" / "checkpoints"
        _wait_for(lambda: _state(project, 1) == "training" and last_complete_checkpoint(ckpts) is not None,
                  "a training checkpoint", proc)
        before = _counts(project)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert _state(project, 1) == "training"
    killed_at = last_complete_checkpoint(ckpts)
    assert not (project.runs_dir / "round-1" / "sft" / "result.json").exists()

    done = subprocess.run([*PREFLOOP, "round", "resume", "-p", str(project.root), "--quiet"], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "round 1: done" in done.stdout

    after = _counts(project)
    assert after == before  # nothing regenerated, re-queued, relabelled or lost
    with project.store.session() as s:
        r1 = s.scalar(select(Round).where(Round.number == 1))
        m, control = r1.metrics, r1.state_data
        assert r1.state == "done" and r1.adapter_path and Path(r1.adapter_path, "adapter_model.safetensors").is_file()
    # The wait ends at its budget of labelled tasks; how many more the scripted human answered
    # before the round closed its open tasks depends on timing, never beyond the waited-for tasks.
    humans = after["human/edit/submitted"] + after["human/compare/submitted"]
    assert control["wait_budget"] <= humans <= len(targets)
    sft = m["training"]["phases"]["sft"]
    assert sft["steps"] == 40
    assert sft["resumed_from"] is not None and int(sft["resumed_from"].rsplit("-", 1)[1]) >= int(killed_at.name.split("-")[1])
    resumed = [t for t in control["transitions"] if t.get("resumed")]
    assert [t["state"] for t in resumed] == ["training"]
    assert [t["state"] for t in control["transitions"] if not t.get("resumed")] == [
        "created", "generating", "judging", "waiting", "building_datasets", "training", "evaluating", "done"]


def _poll_targets(project, round_id: int, timeout: float = 30.0):  # noqa: ANN001, ANN202
    """The tasks the waiting round recorded as waited for."""
    from prefloop.feedback.store.models import Round

    control: dict = {}

    def recorded() -> bool:
        with project.store.session() as s:
            control.update(s.get(Round, round_id).state_data or {})
        return "wait_tasks" in control

    wait_until(recorded, "the round to record its waited-for tasks", timeout=timeout, interval=0.1)
    return control["wait_tasks"]


def test_generation_interrupted_midway_resumes_without_duplicates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash between two generation batches: the stored batch stays, only the rest is generated."""
    from collections import Counter

    from prefloop.feedback.store.models import Generation, Round
    from prefloop.training import generation as gen_mod
    from prefloop.training.rounds import Orchestrator

    monkeypatch.setenv("WANDB_MODE", "disabled")
    project = make_project(tmp_path / "proj", prompts=4,
                           patch={"training": {"generation": {"batch_size": 6}, "wait": {"enabled": False},
                                               "evaluation": {"enabled": False}, "sft": {"enabled": False},
                                               "dpo": {"enabled": False}}})
    real = gen_mod.generate
    calls = {"n": 0}

    def flaky(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("power cut")
        return real(*args, **kwargs)

    monkeypatch.setattr(gen_mod, "generate", flaky)
    orch = Orchestrator(project, progress=False)
    orch.ensure_baseline()
    rid = orch.create_round(1)
    with pytest.raises(RuntimeError, match="power cut"):
        orch.run(rid)
    with project.store.session() as s:
        r = s.get(Round, rid)
        assert r.state == "generating" and "power cut" in r.error
        first = Counter(g.prompt_id for g in s.scalars(select(Generation).where(Generation.round_id == rid)))
    assert sorted(first.values()) == [3, 3]  # one batch = 2 prompts × 3 candidates, stored whole
    summary = orch.resume(1)
    assert summary.state == "done"
    with project.store.session() as s:
        after = Counter(g.prompt_id for g in s.scalars(select(Generation).where(Generation.round_id == rid)))
        assert s.get(Round, rid).error is None
    assert sorted(after.values()) == [3, 3, 3, 3] and all(after[p] == 3 for p in first)
    assert calls["n"] == 3  # the resumed round generated only the missing batch
    states = [t.state for t in summary.control.transitions]
    assert states.count("generating") == 2 and summary.control.transitions[2].resumed
