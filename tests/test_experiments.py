"""`prefloop experiment`: spec errors before anything runs, the bootstrap recomputed by hand, and a
tiny 2-arm × 2-seed × 1-round experiment on the tiny model — killed, re-run (finished runs are
skipped, the others resume), and its table checked against the runs' stores."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from roundkit import TINY_CONFIG

from prefloop.errors import ConfigError

PREFLOOP = [sys.executable, "-m", "prefloop.cli"]


def _env() -> dict[str, str]:
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "WANDB_MODE": "offline"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    return env


def _write_spec(folder: Path, **changes: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    spec = {
        "name": "tiny", "task": "support-desk", "base": "tiny.yaml", "rounds": 1, "seeds": [1, 2], "jobs": 2,
        "target": [0.05, 0.99], "humans": {"annotators": 2, "accuracy": 0.8}, "bootstrap": {"resamples": 400, "seed": 3},
        "arms": [{"name": "default"}, {"name": "sft-only", "overrides": {"training.dpo.enabled": False}}],
        **changes,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# ------------------------------------------------------------------------------------ spec errors
@pytest.mark.parametrize(("arm", "expected"), [
    ({"name": "bad", "overrides": {"training.sft.epoch": 4}}, "arm 'bad': unknown key 'training.sft.epoch'; did you mean 'epochs'?"),
    ({"name": "bad", "overrides": {"training.sft.epochs": "many"}}, "arm 'bad': training.sft.epochs: Input should be a valid number"),
    ({"name": "bad", "overrides": {"trainin.sft.epochs": 4}}, "arm 'bad': unknown key 'trainin'; did you mean 'training'?"),
    ({"name": "bad", "overrides": {"training.generation.seed": 4}}, "arm 'bad': 'training.generation.seed' is set by the experiment"),
    ({"name": "bad", "overrides": {"store.url": "sqlite:///x.db"}}, "arm 'bad': 'store.url' is set by the experiment"),
    ({"name": "bad", "overrides": {"training.sft.max_steps.x": 4}}, "'training.sft.max_steps' is a value, not a section"),
])
def test_a_bad_arm_is_one_line_before_anything_runs(tmp_path: Path, arm: dict, expected: str) -> None:
    from prefloop.experiments import Experiment, load_spec

    spec = load_spec(_write_spec(tmp_path, arms=[{"name": "default"}, arm]))
    with pytest.raises(ConfigError) as err:
        Experiment(spec, tmp_path / "out")
    assert expected in err.value.message and "\n" not in err.value.message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("changes", "expected"), [
    ({"arms": [{"name": "a"}, {"name": "a"}]}, "arm names must be unique"),
    ({"target": 1.5}, "target scores lie in [0, 1]"),
    ({"seeds": []}, "seeds"),
    ({"reference": "nobody"}, "reference 'nobody' is not an arm"),
    ({"rounds": 0}, "rounds"),
    ({"arms": [{"name": "../escape"}]}, "arms.0.name"),
    ({"task": "nowhere"}, "unknown task 'nowhere'"),
    ({"base": "missing.yaml"}, "missing.yaml does not exist"),
    ({"humans": {"annotators": 2, "acuracy": 0.9}}, "unknown key 'humans.acuracy'; did you mean 'accuracy'?"),
])
def test_spec_errors_name_the_key(tmp_path: Path, changes: dict, expected: str) -> None:
    from prefloop.experiments import Experiment, load_spec

    with pytest.raises(ConfigError) as err:
        Experiment(load_spec(_write_spec(tmp_path, **changes)), tmp_path / "out")
    assert expected in err.value.message


def test_the_shipped_specs_are_all_found() -> None:
    from prefloop.experiments.spec import shipped_specs

    assert {"allocation", "allocation-support-desk", "feedback-sources", "feedback-sources-support-desk",
            "reward-model"} <= set(shipped_specs())


@pytest.mark.parametrize("name", sorted({p.stem for p in (Path(__file__).parents[1] / "configs" / "experiments").glob("*.yaml")}))
def test_every_shipped_spec_builds_a_valid_config_for_each_arm(tmp_path: Path, name: str) -> None:
    from prefloop.experiments import Experiment, load_spec
    from prefloop.experiments.spec import shipped_spec

    path = shipped_spec(name)
    assert path is not None, name
    spec = load_spec(path)
    experiment = Experiment(spec, tmp_path / "out")  # validates every (arm, seed) config
    assert len(experiment.runs) == len(spec.arms) * len(spec.seeds) and len(spec.seeds) >= 3


def test_cli_prints_a_bad_spec_as_one_line_and_creates_nothing(tmp_path: Path) -> None:
    spec = _write_spec(tmp_path, arms=[{"name": "bad", "overrides": {"training.sft.epoch": 4}}])
    out = subprocess.run([*PREFLOOP, "experiment", "run", str(spec), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, env=_env(), timeout=120)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "unknown key 'training.sft.epoch'" in lines[0], out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ the bootstrap
def bootstrap_by_hand(groups: list[list[float]], resamples: int, seed: int, confidence: float) -> tuple[float, float, float]:
    """The documented procedure, written out with loops."""
    rng = np.random.default_rng(seed)
    s, p = len(groups), max(len(g) for g in groups)
    picks = rng.integers(0, s, size=(resamples, s))
    u = rng.random((resamples, s, p))
    replicates = []
    for b in range(resamples):
        means = []
        for j in range(s):
            g = groups[picks[b, j]]
            means.append(sum(g[int(u[b, j, k] * len(g))] for k in range(len(g))) / len(g))
        replicates.append(sum(means) / s)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha])
    return sum(sum(g) / len(g) for g in groups) / s, float(low), float(high)


def test_the_bootstrap_is_the_documented_procedure() -> None:
    from prefloop.experiments import hierarchical_bootstrap

    groups = [[0.0, 0.25, 1.0, 0.5], [0.75, 1.0, 0.5], [0.25, 0.25, 0.5, 0.0, 1.0]]
    est = hierarchical_bootstrap(groups, resamples=300, seed=5, confidence=0.9)
    assert (est.mean, est.low, est.high) == pytest.approx(bootstrap_by_hand(groups, 300, 5, 0.9), abs=1e-12)
    assert est.low <= est.mean <= est.high
    again = hierarchical_bootstrap(groups, resamples=300, seed=5, confidence=0.9)
    assert again == est  # a fixed seed: the same table every time
    one = hierarchical_bootstrap([[0.5] * 10], resamples=200)
    assert (one.low, one.mean, one.high) == (0.5, 0.5, 0.5)  # no spread, no interval
    wide = hierarchical_bootstrap([[0.0, 1.0] * 3], resamples=2000)
    narrow = hierarchical_bootstrap([[0.0, 1.0] * 300], resamples=2000)
    assert narrow.high - narrow.low < wide.high - wide.low  # more prompts, less noise
    assert hierarchical_bootstrap([[], []]) is None


# ------------------------------------------------------------------------------------ a tiny experiment
def _rounds_done(folder: Path) -> int:
    from prefloop.experiments.runner import Experiment

    return Experiment.rounds_done(folder)


def _store_snapshot(folder: Path) -> list[tuple]:
    """What a finished run's store says about its rounds (a skipped run must not change it)."""
    from prefloop.project import Project
    from prefloop.training.rounds import Orchestrator

    project = Project(folder)
    try:
        return [(r.number, r.state, json.dumps(r.metrics, sort_keys=True)) for r in Orchestrator(project, progress=False).rounds()]
    finally:
        project.store.dispose()


def _by_hand(folder: Path, rates: dict[str, float]) -> dict[int, dict[str, Any]]:
    """Per round, straight from the store and eval.json: labels, minutes, cost, per-prompt scores."""
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{folder / 'prefloop.db'}")
    out: dict[int, dict[str, Any]] = {}
    with engine.connect() as c:
        for rid, number, metrics, control in c.execute(text("SELECT id, number, metrics, state_data FROM rounds ORDER BY number")):
            metrics, control = json.loads(metrics), json.loads(control)
            human = c.execute(text(
                "SELECT COUNT(*), COALESCE(SUM(a.duration_s), 0) FROM annotations a JOIN annotators n ON n.id = a.annotator_id "
                "JOIN tasks t ON t.id = a.task_id WHERE t.round_id = :r AND n.kind = 'human' AND a.status = 'submitted'"),
                {"r": rid}).one()
            judge_cost = c.execute(text(
                "SELECT COALESCE(SUM(a.cost), 0) FROM annotations a JOIN annotators n ON n.id = a.annotator_id "
                "JOIN tasks t ON t.id = a.task_id WHERE t.round_id = :r AND n.kind = 'judge'"), {"r": rid}).scalar()
            compute_s = sum(control["seconds"].get(k, 0) for k in ("generating", "judging", "building_datasets", "training", "evaluating"))
            scores: dict[int, list[float]] = {}
            for pid, meta in c.execute(text("SELECT prompt_id, meta FROM generations WHERE round_id = :r ORDER BY id"), {"r": rid}):
                meta = json.loads(meta or "{}")
                if meta.get("purpose") == "eval":
                    scores.setdefault(pid, []).append(meta["oracle_score"])
            details = json.loads((folder / "runs" / f"round-{number}" / "eval.json").read_text())["details"]
            wins = {}
            for d in details.get("vs_base", []):
                wins.setdefault(d["prompt_id"], []).append({"win": 1.0, "tie": 0.5, "loss": 0.0}[d["outcome"]])
            out[number] = {
                "human_labels": human[0], "human_minutes": human[1] / 60,
                "cost": human[1] * rates["human"] / 3600 + judge_cost + (metrics["eval"].get("judge_cost") or 0)
                        + compute_s * rates["compute"] / 3600,
                "oracle": [sum(v) / len(v) for _, v in sorted(scores.items())],
                "oracle_metric": metrics["eval"]["oracle_score"],
                "win_base": [sum(v) / len(v) for _, v in sorted(wins.items())],
            }
    engine.dispose()
    return out


@pytest.mark.slow
def test_a_tiny_experiment_killed_rerun_and_checked_against_the_stores(tmp_path: Path) -> None:
    spec_path = _write_spec(tmp_path)
    out = tmp_path / "out"
    runs = {(arm, seed): out / "runs" / arm / f"seed-{seed}" for arm in ("default", "sft-only") for seed in (1, 2)}
    cmd = [*PREFLOOP, "experiment", "run", str(spec_path), "--out", str(out)]
    # 1. Run one job at a time and kill everything once the first (arm, seed) has finished.
    first = subprocess.Popen([*cmd, "--jobs", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(),
                             start_new_session=True)
    deadline = time.monotonic() + 900
    try:
        while not any(f.is_dir() and _rounds_done(f) >= 1 for f in runs.values()):
            assert first.poll() is None, "the experiment ended before any run finished"
            assert time.monotonic() < deadline, "no run finished in 15 minutes"
            time.sleep(0.5)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    finished = {k: _store_snapshot(f) for k, f in runs.items() if f.is_dir() and _rounds_done(f) >= 1}
    assert finished and len(finished) < 4
    # 2. Run it again, two at a time: the finished runs are skipped, the others finish.
    again = subprocess.run([*cmd, "--jobs", "2"], capture_output=True, text=True, env=_env(), timeout=1200)
    assert again.returncode == 0, again.stdout + again.stderr
    header = [line for line in again.stderr.splitlines() if line.startswith("experiment ")]
    assert len(header) == 1 and f"{len(finished)} run(s) finished already" in header[0] and header[0].endswith("at a time")
    for key, snapshot in finished.items():
        assert _store_snapshot(runs[key]) == snapshot  # not run again
    assert all(_rounds_done(f) == 1 for f in runs.values())
    assert len(list((out / "baselines").iterdir())) == 2  # round 0 once per seed, shared by both arms
    # 3. The table's numbers, recomputed from the stores.
    from prefloop.experiments import hierarchical_bootstrap, load_results

    results = json.loads((out / "results.json").read_text())
    rates = {"human": TINY_CONFIG["cost"]["human_hourly_rate"], "compute": TINY_CONFIG["cost"]["compute_hourly_rate"]}
    hand = {key: _by_hand(folder, rates) for key, folder in runs.items()}
    per_run = {(r["arm"], r["seed"], r["round"]): r for r in results["runs"]}
    for (arm, seed), rounds in hand.items():
        for number, h in rounds.items():
            r = per_run[(arm, seed, number)]
            assert r["human_labels"] == h["human_labels"]
            assert r["human_minutes"] == pytest.approx(h["human_minutes"])
            assert r["cost"] == pytest.approx(h["cost"])
            assert r["oracle"] == pytest.approx(h["oracle_metric"])  # as the round itself recorded it
    assert hand[("default", 1)][0]["oracle"] == hand[("sft-only", 1)][0]["oracle"]  # the shared round 0
    assert all(hand[k][1]["human_labels"] == TINY_CONFIG["training"]["wait"]["max_tasks"] for k in hand)
    b = results["bootstrap"]
    for a in results["arms"]:
        seeds = a["seeds"]
        assert seeds == [1, 2]
        groups = [hand[(a["arm"], s)][a["round"]]["oracle"] for s in seeds]
        mean, low, high = bootstrap_by_hand(groups, b["resamples"], b["seed"], b["confidence"])
        assert (a["oracle"]["mean"], a["oracle"]["low"], a["oracle"]["high"]) == pytest.approx((mean, low, high), abs=1e-9)
        if a["round"] == 1:
            groups = [hand[(a["arm"], s)][1]["win_base"] for s in seeds]
            assert a["win_base"]["mean"] == pytest.approx(bootstrap_by_hand(groups, b["resamples"], b["seed"], b["confidence"])[0])
        for k in ("human_labels", "human_minutes", "cost"):
            assert a[k] == pytest.approx(np.mean([hand[(a["arm"], s)][a["round"]][k] for s in seeds]))
    zero = {a["arm"]: a for a in results["arms"] if a["round"] == 0}
    assert zero["default"]["vs_reference"] == "ref" and zero["sft-only"]["vs_reference"] == "≈"  # the same round 0
    for e in results["efficiency"]:
        arm_rounds = [a for a in results["arms"] if a["arm"] == e["arm"]]
        hit = next((a for a in arm_rounds if a["oracle"]["mean"] >= e["target"]), None)
        assert e["round"] == (hit["round"] if hit else None)
        if hit:
            assert e["human_labels"] == pytest.approx(np.mean([sum(hand[(e["arm"], s)][n]["human_labels"]
                                                                   for n in range(1, hit["round"] + 1)) for s in (1, 2)]))
    # 4. The files, the table, the plot, the wandb group; and `report` re-aggregates the same numbers.
    for name in ("results.json", "runs.csv", "summary.csv", "experiment.png", "report.txt", "experiment.yaml"):
        assert (out / name).is_file(), name
    assert (out / "experiment.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    offline = sorted(p.name for p in (out / "wandb").glob("offline-run-*"))
    assert len(offline) == 5 and sum("summary" in n for n in offline) == 1
    table = again.stdout
    assert max(len(line) for line in table.splitlines()) <= 80
    for a in results["arms"]:
        assert f"{a['oracle']['mean']:.3f}" in table and f"{a['oracle']['low']:.2f}–{a['oracle']['high']:.2f}" in table
    reported = subprocess.run([*PREFLOOP, "experiment", "report", str(out)], capture_output=True, text=True, env=_env(), timeout=300)
    assert reported.returncode == 0, reported.stderr
    assert json.loads((out / "results.json").read_text())["arms"] == results["arms"]
    assert load_results(out).arm_round("default", 1).oracle.mean == pytest.approx(
        hierarchical_bootstrap([hand[("default", s)][1]["oracle"] for s in (1, 2)]).mean)


@pytest.mark.slow
def test_two_runs_of_the_same_arm_label_identically(tmp_path: Path) -> None:
    """The same arm twice (under two names), run at the same time in two processes, three scripted
    humans each: the annotation rows (who, which task, what, how long) are the same."""
    from sqlalchemy import create_engine, text

    from prefloop.experiments import run_experiment

    spec = _write_spec(tmp_path, seeds=[4], humans={"annotators": 3, "accuracy": 0.7}, target=[],
                       arms=[{"name": "once"}, {"name": "twice"}], wandb={"enabled": False})
    run_experiment(spec, tmp_path / "out", jobs=2, quiet=True)
    rows = []
    for arm in ("once", "twice"):
        engine = create_engine(f"sqlite:///{tmp_path / 'out' / 'runs' / arm / 'seed-4' / 'prefloop.db'}")
        with engine.connect() as c:
            rows.append([  # a judge's duration is its real time; a scripted human's is simulated
                (r.name, r.kind, r.task_id, r.value, r.duration_s if r.kind == "human" else None, r.status)
                for r in c.execute(text("SELECT n.name, n.kind, a.task_id, a.value, a.duration_s, a.status FROM annotations a "
                                        "JOIN annotators n ON n.id = a.annotator_id ORDER BY a.task_id, n.name"))])
        engine.dispose()
    assert rows[0] == rows[1]
    humans = [r for r in rows[0] if r[1] == "human"]
    assert len(humans) == TINY_CONFIG["training"]["wait"]["max_tasks"] and len({r[0] for r in humans}) == 3


def _processes(field: int, value: int) -> list[int]:
    """The live processes whose /proc stat field (counted after the command's ')': 1 the parent, 3
    the session) is ``value``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended while we looked
        if int(fields[field]) == value and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _children(pid: int) -> list[int]:
    return _processes(1, pid)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


STUCK_TASK = """
import threading
from pathlib import Path

from prefloop.sim.task import TaskSpec
from prefloop.training.demo import data_path

HERE = Path(__file__).parent


def oracle(meta, messages, reply):
    (HERE / "scoring").touch()  # the worker is busy: tell the test, then never finish
    threading.Event().wait()


TASK = TaskSpec(name="stuck", prompts=data_path(), oracle=oracle)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc (Linux)")
def test_sigterm_to_the_experiment_stops_its_workers(tmp_path: Path) -> None:
    """``kill PID`` reaches only the experiment process, not its group: its workers must stop with it.
    The task's oracle never returns, so a worker outlives its experiment unless the experiment stops it."""
    (tmp_path / "stuck_task.py").write_text(STUCK_TASK)
    spec_path = _write_spec(tmp_path, task="stuck_task:TASK")
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    parent = subprocess.Popen([*PREFLOOP, "experiment", "run", str(spec_path), "--out", str(tmp_path / "out"), "--jobs", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "scoring").exists():
            assert parent.poll() is None, "the experiment ended before a worker scored an answer"
            assert time.monotonic() < deadline, "no worker reached the oracle in 5 minutes"
            time.sleep(0.1)
        workers = _children(parent.pid)
        assert workers
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=120) != 0
        deadline = time.monotonic() + 60
        while any(_alive(w) for w in workers):
            assert time.monotonic() < deadline, "a worker outlived its experiment"
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


KILLED_TASK = STUCK_TASK.replace("threading.Event().wait()", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")


def test_a_worker_killed_by_a_signal_is_reported_as_such(tmp_path: Path) -> None:
    """What the kernel's out-of-memory killer does to a worker: a SIGKILL, no error line of its own."""
    (tmp_path / "killed_task.py").write_text(KILLED_TASK)
    spec_path = _write_spec(tmp_path, task="killed_task:TASK", seeds=[1], arms=[{"name": "default"}])
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    out = subprocess.run([*PREFLOOP, "experiment", "run", str(spec_path), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 1
    said = " ".join(out.stderr.split())
    assert "round 0 for seed 1" in said and "failed: the worker was killed by SIGKILL — out of memory?" in said, out.stderr
    assert "Traceback" not in out.stderr


STOPPABLE_POOL = """
import sys
from concurrent.futures import ThreadPoolExecutor
from prefloop.experiments.processes import WorkerProcesses, sigterm_as_exit

processes = WorkerProcesses()
sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
with open(sys.argv[1], "a") as log:
    # as run_jobs composes them: two workers that never end on their own, a third queued behind them
    with sigterm_as_exit(), ThreadPoolExecutor(max_workers=2) as pool, processes.stopped_on_exit():
        futures = [pool.submit(processes.call, sleeper, log=log, env={}) for _ in range(3)]
        print("started", flush=True)
        for fut in futures:
            fut.result()
"""


def test_a_terminated_pool_stops_its_workers_and_starts_no_queued_one(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", STOPPABLE_POOL, str(tmp_path / "log")], stdout=subprocess.PIPE,
                              text=True, env=_env(), start_new_session=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline() == "started\n"
        deadline = time.monotonic() + 120
        while len(workers := _children(parent.pid)) < 2:
            assert time.monotonic() < deadline, f"{len(workers)} of 2 workers started in 2 minutes"
            time.sleep(0.05)
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=120) == 128 + signal.SIGTERM
        assert not any(_alive(w) for w in workers)  # stop() waited for them: nothing left to poll for
        assert not _processes(3, parent.pid)  # nor did the queued job start a worker on the way out
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


def test_the_efficiency_table_tells_a_miss_from_an_arm_not_run_yet(tmp_path: Path) -> None:
    """An experiment stopped early (or still running) reports per arm how far it got, and the arm
    names stay whole in 80 columns."""
    from rich.console import Console

    from prefloop.experiments import Experiment, load_spec
    from prefloop.experiments.display import efficiency_table
    from prefloop.experiments.results import ArmRound, Efficiency, ExperimentResults
    from prefloop.stats import Estimate

    spec = load_spec(_write_spec(tmp_path, rounds=3, arms=[{"name": "default"}, {"name": "a-rather-long-arm-name"},
                                                           {"name": "late"}]))
    score = Estimate(0.4, 0.3, 0.5, 24)

    def reached(arm: str, rounds: int) -> list[ArmRound]:
        return [ArmRound(arm, n, [1, 2], score, None, None, {}, {}) for n in range(rounds + 1)]

    res = ExperimentResults(Experiment(spec, tmp_path / "out"), [], reached("default", 3) + reached("a-rather-long-arm-name", 2),
                            [Efficiency(arm, 0.5, None, None, None, None) for arm in ("default", "a-rather-long-arm-name", "late")])
    console = Console(width=80, record=True, force_terminal=False)
    console.print(efficiency_table(res))
    lines = console.export_text().splitlines()
    row = {name: next(ln for ln in lines if ln.lstrip().startswith(name)) for name in ("default", "a-rather-long-arm-name", "late")}
    assert "not in 3 rounds" in row["default"] and "not by round 2" in row["a-rather-long-arm-name"]
    assert "not run yet" in row["late"]
