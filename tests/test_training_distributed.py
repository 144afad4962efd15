"""Training a phase on 2 CPU processes (accelerate launch, gloo) on the tiny model: the same optimizer
steps as one process with the same global batch, one adapter, a kill -9 of the round that leaves no
worker behind and resumes from the distributed run's checkpoint, and a whole round whose store rows
and wandb run exist once."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from roundkit import make_project

pytestmark = pytest.mark.slow

PROMPT = [{"role": "user", "content": "Hi, I'm Ann. My order is late."}]


def _cfg(**trainer):  # noqa: ANN003, ANN202
    from roundkit import deep_merge

    from prefloop.training.config import TrainingConfig

    base = {
        "model": {"source": "tiny:llama-tiny", "device": "cpu"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "sft": {"learning_rate": 5e-3, "epochs": 1, "batch_size": 4, "max_length": 64},
        "trainer": {"save_steps": 2},
    }
    return TrainingConfig.model_validate(deep_merge(base, {"trainer": trainer}))


def _dataset(folder: Path, rows: int = 16) -> Path:
    from datasets import Dataset

    Dataset.from_list([
        {"messages": [*PROMPT, {"role": "assistant", "content": f"Hi Ann! Sorry about that. It ships in {i} days. Anything else?"}],
         "source": "human"} for i in range(rows)
    ]).save_to_disk(str(folder))
    return folder


class Recorder:
    """Stands in for the round's wandb tracker: records what would be logged."""

    def __init__(self) -> None:
        self.phases: list[str] = []
        self.rows: list[tuple[int, dict]] = []
        self.configs: dict[str, tuple[dict, dict | None]] = {}

    def define_phase(self, phase: str) -> None:
        self.phases.append(phase)

    def record_phase_config(self, phase: str, args: dict, model_config: dict | None) -> None:
        self.configs[phase] = (args, model_config)

    def log_phase(self, phase: str, step: int, logs: dict) -> None:
        self.rows.append((step, logs))

    def callback(self, phase: str):  # noqa: ANN201 - the in-process path's TrainerCallback
        from prefloop.training.tracking import PhaseCallback

        return PhaseCallback(self, phase)  # type: ignore[arg-type]


def test_two_processes_take_the_steps_of_one_with_the_same_global_batch(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from prefloop.training.distributed import run_phase

    ds = _dataset(tmp_path / "ds")
    one, two = Recorder(), Recorder()
    single = run_phase("sft", _cfg(), ds, tmp_path / "one", tracker=one)
    # 2 processes × 2 rows = the global batch of 4 that one process takes alone.
    cfg2 = _cfg(num_processes=2).model_copy(update={"sft": _cfg().sft.model_copy(update={"batch_size": 2})})
    said: list[str] = []
    double = run_phase("sft", cfg2, ds, tmp_path / "two", tracker=two, say=said.append)

    assert (single.processes, double.processes) == (1, 2)
    assert single.steps == double.steps == 4  # 16 rows / global batch 4, one epoch
    assert math.isfinite(double.metrics["loss"]) and double.metrics["loss"] > 0
    assert any("2 processes" in s for s in said)
    # The main rank wrote one adapter and one result; nothing half-written is left.
    out = tmp_path / "two"
    assert sorted(p.name for p in out.iterdir() if "adapter" in p.name) == ["adapter"]
    assert json.loads((out / "result.json").read_text())["processes"] == 2
    weights = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert weights.keys() == load_file(str(tmp_path / "one" / "adapter" / "adapter_model.safetensors")).keys()
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in weights.items())
    assert not (out / "checkpoints").exists()
    # TRL's metrics reached the round's tracker once per logged step, from the main rank only.
    steps = [s for s, logs in two.rows if "loss" in logs]
    assert two.phases == ["sft"] and steps == [s for s, logs in one.rows if "loss" in logs] == [1, 2, 3, 4]
    # and so did the trainer's arguments and the model's config, for the run config (once, from the main rank)
    for recorder, batch in ((one, _cfg().sft.batch_size), (two, 2)):
        args, model = recorder.configs["sft"]
        assert args["per_device_train_batch_size"] == batch and model["model_type"] == "llama"


def _workers(job: Path) -> list[int]:
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if str(job) in " ".join(p.info["cmdline"] or []):
                found.append(p.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _wait(predicate, what: str, timeout: float = 300.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_kill_9_of_the_round_stops_the_workers_and_the_phase_resumes(tmp_path: Path) -> None:
    from prefloop.training.distributed import JOB, run_phase
    from prefloop.training.trainers import last_complete_checkpoint

    ds = _dataset(tmp_path / "ds", rows=8)
    cfg = _cfg(num_processes=2).model_copy(update={"sft": _cfg().sft.model_copy(update={"batch_size": 1, "max_steps": 40})})
    out = tmp_path / "sft"
    driver = f"""
import json, sys
from prefloop.training.config import TrainingConfig
from prefloop.training.distributed import run_phase
cfg = TrainingConfig.model_validate(json.loads(sys.argv[1]))
run_phase("sft", cfg, {str(ds)!r}, {str(out)!r})
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", driver, cfg.model_dump_json()], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: last_complete_checkpoint(out / "checkpoints") is not None or proc.poll() is not None, "a checkpoint")
        assert proc.poll() is None, "the driver ended before the first checkpoint"
        os.kill(proc.pid, signal.SIGKILL)  # the round dies; its workers must notice and stop
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    _wait(lambda: not _workers(out / JOB), "the orphaned workers to stop", timeout=120)
    killed_at = last_complete_checkpoint(out / "checkpoints")
    assert killed_at is not None and not (out / "result.json").exists()
    assert "the round that launched this run is gone" in (out / "train.log").read_text()

    resumed = run_phase("sft", cfg, ds, out)
    assert resumed.steps == 40 and resumed.processes == 2
    assert resumed.resumed_from is not None
    assert int(resumed.resumed_from.rsplit("-", 1)[1]) >= int(killed_at.name.split("-")[1])
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and not (out / "checkpoints").exists()


def test_a_round_on_two_processes_writes_its_rows_and_wandb_run_once(tmp_path: Path, db_url: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import func, select

    from prefloop.feedback.store.models import Artifact, Round
    from prefloop.training.demo import scripted_humans
    from prefloop.training.rounds import Orchestrator

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    (tmp_path / "wandb-dir").mkdir()
    project = make_project(tmp_path / "proj", db_url, prompts=2, patch={"training": {
        "trainer": {"num_processes": 2, "accelerate_config": "ddp"},
        "sft": {"max_steps": 2, "batch_size": 1},
        "dpo": {"max_steps": 2, "batch_size": 1, "precompute_ref_log_probs": True},  # as the GPU presets do
        "evaluation": {"max_prompts": 2},
    }})
    orch = Orchestrator(project, progress=False, humans=scripted_humans(n=1, accuracy=1.0))
    orch.run_next()
    r1 = next(r for r in orch.rounds() if r.number == 1)
    assert r1.state == "done"
    phases = r1.metrics["training"]["phases"]
    assert {p: (v["processes"], v["steps"]) for p, v in phases.items()} == {"sft": (2, 2), "dpo": (2, 2)}
    with project.store.session() as s:
        rid = s.scalar(select(Round.id).where(Round.number == 1))
        kinds = sorted(s.scalars(select(Artifact.kind).where(Artifact.round_id == rid)))
        assert kinds == ["adapter", "dpo-dataset", "sft-dataset"]  # one of each
        assert s.scalar(select(func.count()).select_from(Round)) == 2
    assert Path(r1.adapter_path, "adapter_model.safetensors").is_file()
    # One offline wandb run per round (rounds 0 and 1): the workers opened none; TRL's metrics,
    # replayed from the main rank's log lines, are in round 1's run.
    runs = sorted((tmp_path / "wandb-dir" / "wandb").glob("offline-run-*"))
    loop = r1.control.loop_id
    assert sorted(p.name.split("-", 3)[3] for p in runs) == [f"{loop}-r0", f"{loop}-r1"]
    log = next(next(p for p in runs if p.name.endswith("-r1")).glob("run-*.wandb")).read_bytes()
    assert b"sft/loss" in log and b"dpo/rewards/margins" in log
    assert b"sft/args" in log and b"dpo/args" in log and b"model/config" in log  # the workers' arguments, in the run config
    project.store.dispose()
