"""``prefloop compare`` on the tiny model with the support knowledge base: four arms on the same eval
prompts, every number of the table recomputed from the stored answers, a second run that reuses
them, the CLI's tables, PNG, JSON and wandb run, and one-line errors."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from roundkit import deep_merge, make_project
from sqlalchemy import func, select

from prefloop.feedback.store.models import Generation
from prefloop.retrieval.demo_data import support_kb_path
from prefloop.retrieval.ingest import import_kb

PATCH = {
    "rag": {"kb": "support", "retriever": "bm25", "k": 2, "max_context_tokens": 60},  # off for the rounds
    "cost": {"compute_hourly_rate": 36.0, "price_prompt_per_1k_tokens": 0.01, "price_completion_per_1k_tokens": 0.03},
    "training": {"evaluation": {"max_prompts": 3}, "wandb": {"enabled": False}},
}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):  # noqa: ANN001, ANN201
    """A project whose round 1 finished with an adapter (rounds without retrieval), and its KB."""
    from prefloop.sim import ScoreOracle
    from prefloop.training.demo import scripted_humans
    from prefloop.training.rounds import Orchestrator

    root = tmp_path_factory.mktemp("compare") / "proj"
    project = make_project(root, prompts=3, patch=PATCH)
    import_kb(project.store, support_kb_path(), kb="support")
    lead = ScoreOracle(lambda task, gid, text: len(text) / 1000.0, lambda task: "Hi there! Sorry about that. Anything else?")
    Orchestrator(project, progress=False, humans=scripted_humans(n=1, accuracy=1.0, oracle=lead)).run_next()
    yield project
    project.store.dispose()


def _stored(project) -> list[Generation]:  # noqa: ANN001
    with project.store.session() as s:
        rows = [g for g in s.scalars(select(Generation).where(Generation.round_id.is_(None))) if g.meta.get("purpose") == "compare"]
        for g in rows:
            s.expunge(g)
    return rows


@pytest.mark.slow
def test_compare_four_arms_and_every_number_comes_from_the_stored_answers(tuned) -> None:  # noqa: ANN001
    from prefloop.training.compare import run_compare
    from prefloop.training.report import collect

    r = run_compare(tuned, seeds=[0, 1], samples=1, progress=False)
    assert [a.arm for a in r.arms] == ["base", "base+rag", "ft", "ft+rag"] and r.round == 1
    gens = _stored(tuned)
    assert len(gens) == 4 * 3 * 2
    by_arm: dict[str, list[Generation]] = {}
    for g in gens:
        by_arm.setdefault(g.meta["arm"], []).append(g)
    rate, p_in, p_out = 36.0 / 3600, 0.01 / 1000, 0.03 / 1000
    for a in r.arms:
        mine = by_arm[a.arm]
        assert a.answers == len(mine) == 6 and {g.meta["seed"] for g in mine} == {0, 1}
        # oracle: the mean of (seed, prompt) cells, each the mean of its samples (one here)
        assert a.oracle.mean == pytest.approx(statistics.fmean(g.meta["oracle_score"] for g in mine))
        assert a.oracle.low <= a.oracle.mean <= a.oracle.high and a.oracle.n == 6
        retrieval = statistics.fmean(g.meta.get("rag", {}).get("seconds", 0.0) for g in mine)
        latency = statistics.fmean(g.meta["latency_s"] for g in mine) + retrieval
        assert a.latency_s == pytest.approx(latency) and a.retrieval_s == pytest.approx(retrieval)
        assert a.prompt_tokens == pytest.approx(statistics.fmean(g.meta["prompt_tokens"] for g in mine))
        assert a.completion_tokens == pytest.approx(statistics.fmean(g.meta["completion_tokens"] for g in mine))
        assert a.cost_per_answer == pytest.approx(latency * rate + a.prompt_tokens * p_in + a.completion_tokens * p_out)
        assert ("@adapter:" in mine[0].model) == a.arm.startswith("ft")
        assert ("passages" in mine[0].meta) == a.arm.endswith("+rag")
        if a.arm != "base":
            assert sum(a.judged[k] for k in ("wins", "losses", "ties")) + a.judged["failed"] == 6
            assert 0.0 <= a.win_vs_base.low <= a.win_vs_base.mean <= a.win_vs_base.high <= 1.0
    # the RAG arms read longer prompts, the same passages for the same prompt
    assert r.arm("base+rag").prompt_tokens > r.arm("base").prompt_tokens
    rag_prompts = {(g.meta["arm"], g.prompt_id): g.meta["prompt_messages"] for g in gens if "passages" in g.meta}
    assert all(rag_prompts[("base+rag", pid)] == rag_prompts[("ft+rag", pid)] for _, pid in rag_prompts)
    # one-off: round 1's cost record; none for the arms without an adapter
    round1 = next(row for row in collect(tuned) if row.number == 1)
    assert round1.total_cost > 0 and r.one_off.total == pytest.approx(round1.total_cost) and r.one_off.rounds == [1]
    assert r.arm("ft").one_off == r.arm("ft+rag").one_off == pytest.approx(round1.total_cost)
    assert r.arm("base").one_off == r.arm("base+rag").one_off == 0.0
    # break-even rows from those numbers
    be = {(b.tuned, b.alternative): b for b in r.break_even}
    ft, base = r.arm("ft"), r.arm("base")
    b = be[("ft", "base")]
    assert b.quality_gain == pytest.approx(100 * (ft.oracle.mean - base.oracle.mean))
    assert b.advantage == pytest.approx(base.cost_per_answer - ft.cost_per_answer)
    if b.verdict == "pays_back":
        assert b.answers == pytest.approx(r.one_off.total / b.advantage)
    # the JSON written is the result
    saved = json.loads(r.path.read_text())
    assert saved["round"] == 1 and [a["arm"] for a in saved["arms"]] == [a.arm for a in r.arms]
    assert saved["arms"][2]["oracle"]["mean"] == pytest.approx(ft.oracle.mean)

    # A second run samples nothing new and reads the same numbers.
    again = run_compare(tuned, seeds=[0, 1], samples=1, progress=False)
    assert len(_stored(tuned)) == len(gens)
    assert [a.to_dict() for a in again.arms] == [a.to_dict() for a in r.arms]


@pytest.mark.slow
def test_cli_compare_prints_the_tables_and_writes_png_json_and_a_wandb_run(tuned, tmp_path: Path) -> None:  # noqa: ANN001
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path),
           "WANDB_DATA_DIR": str(tmp_path / "wandb-data")}
    cfg = tuned.root / "prefloop.yaml"
    saved = cfg.read_text()
    data = yaml.safe_load(saved)
    data["training"]["wandb"]["enabled"] = True  # the rounds ran without wandb; compare logs its table
    cfg.write_text(yaml.safe_dump(data))
    try:
        out = subprocess.run([sys.executable, "-m", "prefloop.cli", "compare", "-p", str(tuned.root), "--seeds", "0,1", "-k", "1",
                              "--arms", "base,ft", "-q"], capture_output=True, text=True, env=env, timeout=600)
    finally:
        cfg.write_text(saved)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "compare · round 1" in out.stdout and "does fine-tuning pay for itself?" in out.stdout
    assert "base" in out.stdout and "ft" in out.stdout
    assert (tuned.runs_dir / "compare" / "round-1.png").stat().st_size > 0
    assert json.loads((tuned.runs_dir / "compare" / "round-1.json").read_text())["seeds"] == [0, 1]
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_compare_errors_are_one_line(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", prompts=2, patch=deep_merge(PATCH, {}))
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "prefloop.cli", "compare", "-p", str(project.root), *args],
                              capture_output=True, text=True, env=env, timeout=120)

    out = cli()
    assert out.returncode == 1 and "error: no fine-tuned round to compare yet" in out.stderr and "Traceback" not in out.stderr
    out = cli("--arms", "ft,ft+rag")
    assert out.returncode == 1 and "error: the arms must include 'base'" in out.stderr
    out = cli("--seeds", "0,x")
    assert out.returncode != 0 and "--seeds must be whole numbers" in out.stderr
    with project.store.session() as s:
        assert s.scalar(select(func.count()).select_from(Generation)) == 0
    project.store.dispose()
