"""Running an experiment: every (arm, seed) is a prefloop project of its own under the experiment
folder, run by the ordinary orchestrator with scripted humans, in worker processes.

    DIR/experiment.yaml              the spec, as run
    DIR/baselines/KEY/               round 0 (the base model's evaluation), once per KEY (see below)
    DIR/runs/ARM/seed-S/             the run's project: prefloop.yaml, prefloop.db, runs/round-N/
                                     (and runs/compare/round-N.json when the spec's ``compare`` is on)
    DIR/logs/*.log                   each worker's output (library chatter included)

Round 0 depends only on the model, the generation and evaluation settings, the seed and the task
(:func:`~prefloop.experiments.spec.baseline_key`); it is computed once per key and copied into
every run that shares the key (its SQLite store and ``runs/round-0``) before the run's round 1.
A task with a knowledge base (``TaskSpec.knowledge``) has it imported with the prompts, so every
run's copy of round 0's store holds it. With ``compare`` on, a run is finished when its last round
is done and its side-by-side comparison (``prefloop compare`` of that round) is written.
Re-running skips finished runs and resumes the others where they stopped.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.markup import escape

from prefloop.config import ProjectConfig
from prefloop.errors import ConfigError, PrefloopError

from .processes import WorkerProcesses, sigterm_as_exit
from .spec import ExperimentSpec, base_config, baseline_key, changed_keys, run_config

SPEC_NAME = "experiment.yaml"
DB_NAME = "prefloop.db"


class ExperimentError(PrefloopError):
    """Runs of an experiment failed (the others finished; their logs say why)."""


@dataclass(frozen=True)
class Run:
    """One (arm, seed): its project folder, its config and the round 0 it shares."""

    arm: str
    seed: int
    folder: Path
    config: ProjectConfig
    baseline: str

    @property
    def label(self) -> str:
        return f"{self.arm} · seed {self.seed}"

    @property
    def log(self) -> Path:
        return self.folder.parents[2] / "logs" / f"{self.arm}-seed-{self.seed}.log"


@dataclass(frozen=True)
class Job:
    """What one worker process does: compute a shared round 0, or run an (arm, seed) to the last round."""

    kind: str  # "baseline" or "run"
    run: Run

    @property
    def folder(self) -> Path:
        return self.run.folder if self.kind == "run" else self.run.folder.parents[2] / "baselines" / self.run.baseline

    @property
    def log(self) -> Path:
        return self.run.log if self.kind == "run" else self.folder.parents[1] / "logs" / f"baseline-{self.run.baseline}.log"

    @property
    def label(self) -> str:
        return self.run.label if self.kind == "run" else f"round 0 for seed {self.run.seed} ({self.run.baseline[:8]})"

    def argv(self) -> list[str]:
        return [self.kind, self.run.arm, str(self.run.seed)]


class Experiment:
    """A spec bound to its output folder: the planned runs and where each one stands."""

    def __init__(self, spec: ExperimentSpec, out: str | Path) -> None:
        from prefloop.sim.task import load_task
        from prefloop.training.rounds import sha256_file
        from prefloop.training.rounds.rag import check_budget

        self.spec = spec
        self.out = Path(out).resolve()
        self.task = load_task(spec.task)
        base = base_config(spec)
        prompts_sha = sha256_file(Path(self.task.prompts))
        self.runs: list[Run] = []
        for arm in spec.arms:  # every config is validated here, before anything runs
            for seed in spec.seeds:
                cfg = run_config(spec, arm, seed, base=base, task=self.task)
                self.runs.append(Run(arm.name, seed, self.out / "runs" / arm.name / f"seed-{seed}", cfg,
                                     baseline_key(cfg, spec.task, prompts_sha)))
        for r in self.runs:  # what a round would refuse at its start, refused before anything runs
            try:
                check_budget(r.config)
            except ConfigError as exc:
                raise ConfigError(f"arm {r.arm!r}: {exc.message}", hint=exc.hint) from None
        retrieves = [f"arm {r.arm!r} retrieves passages (rag.enabled)" for r in self.runs if r.config.rag.enabled]
        if spec.compare.enabled and any(c.endswith("+rag") for c in spec.compare.conditions):
            retrieves.append("the compare stage's +rag conditions retrieve passages")
        if retrieves and self.task.knowledge is None:
            raise ConfigError(f"{retrieves[0]}, but task {spec.task!r} has no knowledge base",
                              hint="give the task one (TaskSpec.knowledge), or compare without the +rag conditions")

    @classmethod
    def open(cls, out: str | Path) -> Experiment:
        """The experiment in ``out`` (as its spec was last run)."""
        from .spec import parse_spec

        path = Path(out) / SPEC_NAME
        if not path.is_file():
            raise ConfigError(f"{out} holds no experiment ({SPEC_NAME} is missing)", hint="run one with `prefloop experiment run SPEC.yaml --out DIR`")
        return cls(parse_spec(yaml.safe_load(path.read_text()), str(path)), out)

    def run(self, arm: str, seed: int) -> Run:
        return next(r for r in self.runs if r.arm == arm and r.seed == seed)

    # ----------------------------------------------------------------------------- state
    def check_unchanged(self) -> None:
        """A run folder keeps the config it started with: a changed arm is an error, not a silent mix."""
        for r in self.runs:
            saved = r.folder / "prefloop.yaml"
            if not saved.is_file():
                continue
            old = yaml.safe_load(saved.read_text()) or {}
            diff = changed_keys(old, r.config.model_dump(mode="json"))
            if diff:
                raise ConfigError(
                    f"arm {r.arm!r} changed since {r.folder} started ({', '.join(diff[:5])}{' …' if len(diff) > 5 else ''})",
                    hint="give the changed arm a new name, or use another --out",
                )

    def write_spec(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        write_atomic(self.out / SPEC_NAME, yaml.safe_dump(self.spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True))

    @staticmethod
    def rounds_done(folder: Path) -> int:
        """The last round N such that rounds 0…N are all done in the project at ``folder`` (−1: none)."""
        if not (folder / DB_NAME).is_file():
            return -1
        done = -1
        for r in _rounds(folder):
            if r.number != done + 1 or r.state != "done":
                break
            done = r.number
        return done

    def compare_path(self, run: Run) -> Path:
        """Where ``run``'s side-by-side comparison of its last round is written."""
        return run.folder / "runs" / "compare" / f"round-{self.spec.rounds}.json"

    def comparison(self, run: Run) -> dict[str, Any] | None:
        """``run``'s comparison, if it is written with the spec's conditions, seeds and samples (a
        changed compare stage compares again; the answers already sampled are reused)."""
        import json

        path, c = self.compare_path(run), self.spec.compare
        if not path.is_file():
            return None
        done: dict[str, Any] = json.loads(path.read_text())
        same = (sorted(a["arm"] for a in done["arms"]) == sorted(c.conditions) and done["seeds"] == c.seeds
                and (c.samples is None or done["samples"] == c.samples))
        return done if same else None

    def finished(self, run: Run) -> bool:
        if self.rounds_done(run.folder) < self.spec.rounds:
            return False
        return not self.spec.compare.enabled or self.comparison(run) is not None

    def pending_jobs(self) -> tuple[list[Job], list[Job]]:
        """(the shared round-0 jobs needed, the runs not finished), in spec order."""
        runs = [r for r in self.runs if not self.finished(r)]
        baselines: dict[str, Job] = {}
        for r in runs:
            if not (r.folder / "prefloop.yaml").is_file() and r.baseline not in baselines:
                job = Job("baseline", r)
                if self.rounds_done(job.folder) < 0:
                    baselines[r.baseline] = job
        return list(baselines.values()), [Job("run", r) for r in runs]


def _rounds(folder: Path) -> list[Any]:
    from prefloop.project import Project
    from prefloop.training.rounds import Orchestrator

    project = Project(folder)
    try:
        return Orchestrator(project, progress=False).rounds()
    finally:
        project.store.dispose()


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------- one job
def execute(exp: Experiment, job: Job, *, console: Any = None) -> None:
    """Do one job in this process (a worker calls this)."""
    from prefloop.feedback.importer import import_prompts
    from prefloop.project import CONFIG_NAME, Project
    from prefloop.training.demo import run_loop, scripted_humans

    folder = job.folder
    if job.kind == "baseline":
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / CONFIG_NAME).is_file():
            write_atomic(folder / CONFIG_NAME, job.run.config.to_yaml())
        project = Project(folder)
        if exp.task.knowledge is not None:
            from prefloop.retrieval.ingest import import_kb

            import_kb(project.store, Path(exp.task.knowledge), kb=project.config.rag.kb)  # idempotent
        import_prompts(project.store, Path(exp.task.prompts))
        run_loop(project, 0, humans=None, progress=console is not None, console=console)
        project.store.dispose()
        return
    if not (folder / CONFIG_NAME).is_file():
        start_from_baseline(job.run, Job("baseline", job.run).folder)
    project = Project(folder)
    h = exp.spec.humans
    humans = scripted_humans(n=h.annotators, accuracy=h.accuracy, seed=job.run.seed, seconds=h.seconds, task=exp.task,
                             order="round-robin", prefix="human")
    run_loop(project, exp.spec.rounds, humans=humans, progress=console is not None, console=console)
    c = exp.spec.compare
    if c.enabled and exp.comparison(job.run) is None:
        from prefloop.training.compare import run_compare

        run_compare(project, round_number=exp.spec.rounds, seeds=c.seeds, samples=c.samples, arms=c.conditions,
                    progress=console is not None, console=console)
    project.store.dispose()


def start_from_baseline(run: Run, baseline: Path) -> None:
    """Create ``run``'s project from the shared round 0: a copy of its store and ``runs/round-0``
    (made in a side folder, then renamed: a run folder is complete or absent)."""
    from prefloop.project import CONFIG_NAME, Project

    if Experiment.rounds_done(baseline) < 0:
        raise ExperimentError(f"round 0 in {baseline} is not done", hint="re-run the experiment: it computes round 0 first")
    tmp = run.folder.with_name(run.folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "runs").mkdir(parents=True)
    (tmp / CONFIG_NAME).write_text(run.config.to_yaml())
    src, dst = sqlite3.connect(f"file:{baseline / DB_NAME}?mode=ro", uri=True), sqlite3.connect(tmp / DB_NAME)
    try:
        src.backup(dst)  # a consistent copy, whatever the source's WAL holds
    finally:
        src.close()
        dst.close()
    shutil.copytree(baseline / "runs" / "round-0", tmp / "runs" / "round-0", ignore=shutil.ignore_patterns(".lock"))
    project = Project(tmp)
    fresh_loop_id(project.store)
    project.store.dispose()
    os.replace(tmp, run.folder)


def fresh_loop_id(store: Any) -> None:
    """A copied round 0 carries the baseline's loop id; each run gets its own (wandb run ids derive from it)."""
    from sqlalchemy import select

    from prefloop.feedback.store.models import Round
    from prefloop.training.rounds.state import RoundState

    with store.session() as s:
        zero = s.scalar(select(Round).where(Round.number == 0))
        state = RoundState.of(zero)
        state.loop_id = uuid.uuid4().hex[:10]
        zero.state_data = state.to_json()


# --------------------------------------------------------------------------------------- many jobs
def worker_env() -> dict[str, str]:
    """One thread per worker (on small CPUs OpenMP spinning costs 10–50×); the parent's import path."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONPATH": os.pathsep.join(p for p in sys.path if p and Path(p).exists())})
    return env


@dataclass
class Outcome:
    job: Job
    ok: bool
    seconds: float
    error: str | None = None


def run_jobs(exp: Experiment, jobs: list[Job], workers: int, say: Callable[[str], None]) -> list[Outcome]:
    """Each job in its own worker process, ``workers`` at once; a failed job does not stop the others."""
    outcomes: list[Outcome] = []
    if not jobs:
        return outcomes

    processes = WorkerProcesses()

    def one(job: Job) -> Outcome:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with open(job.log, "a", encoding="utf-8") as log:
            log.write(f"\n=== {job.label}: {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n")
            log.flush()
            rc = processes.call([sys.executable, "-m", "prefloop.experiments.worker", str(exp.out), *job.argv()],
                                log=log, env=worker_env())
        return Outcome(job, rc == 0, time.perf_counter() - start, None if rc == 0 else failure(rc, job.log))

    # Ctrl-C or SIGTERM: no worker outlives the experiment (the pool's exit waits for its threads,
    # so the workers are stopped before it, and the queued jobs find the pool stopping)
    with sigterm_as_exit(), ThreadPoolExecutor(max_workers=max(1, workers)) as pool, processes.stopped_on_exit():
        futures = [pool.submit(one, j) for j in jobs]
        for i, fut in enumerate(as_completed(futures), 1):
            o = fut.result()
            outcomes.append(o)
            status = f"done in {o.seconds / 60:.1f} min" if o.ok else f"[red]failed[/]: {escape(o.error or '')} (log: {o.job.log})"
            say(f"[{i}/{len(jobs)}] {o.job.label}: {status}")
    return outcomes


def failure(returncode: int, log: Path) -> str:
    """Why a worker failed: its last ``error:`` line, or the signal that killed it (a worker killed by
    the kernel for lack of memory leaves no line of its own: its log ends mid-round)."""
    if returncode >= 0:
        return last_error(log)
    import signal

    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    why = " — out of memory? (`dmesg` says; fewer --jobs use less)" if -returncode == signal.SIGKILL else ""
    return f"the worker was killed by {name}{why}; its log ends: {last_error(log)}"


def last_error(log: Path) -> str:
    """The line of a worker's log that says what went wrong (its last ``error:`` line, else its last line)."""
    lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["no output"])[-1][:300]
