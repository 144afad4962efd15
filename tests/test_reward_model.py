"""The reward-model judge (``backend: reward_model``) on SQLite and PostgreSQL: its pairs and held-out
tasks from real labels, TRL's RewardTrainer on a tiny random-init model, verdicts recorded like any
judge's, and the round's ``reward_model`` state (runs, resumes without training twice, reuses the
previous adapter when too few pairs are new, measures agreement on held-out human labels)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from sqlalchemy import select

from prefloop.feedback.config import AggregationConfig
from prefloop.feedback.queue import Queue
from prefloop.feedback.store.models import Annotation, Annotator, Artifact, Round, Task
from prefloop.judges.config import JudgeSpec
from prefloop.judges.reward_model import RewardModelJudge, TrainedRewardModel, artifact_kind
from prefloop.project import Project
from prefloop.training.reward_model import held_out, reward_pairs
from prefloop.training.rounds.reward import wilson_interval

TINY = "tiny:llama-tiny"
RM = {"name": "rm", "backend": "reward_model", "model": TINY, "max_steps": 4, "train_batch_size": 2, "learning_rate": 1e-3,
      "train_max_length": 256, "min_new_pairs": 1}


def _labelled(store, n: int = 10) -> dict[int, int]:  # noqa: ANN001
    """``n`` compare tasks (the correct sum vs a wrong one, in alternating positions) and one edit, all
    answered by a human who picks the correct sum; returns compare task id → chosen generation id."""
    q = Queue(store, overlap=1)
    h = q.ensure_annotator("alice")
    for i in range(n):
        right, wrong = f"{i} + {i} = {2 * i}.", f"{i} + {i} = {2 * i + 1}."
        q.add_comparison(f"What is {i} + {i}?", [right, wrong] if i % 2 else [wrong, right])
    q.add_edit("Fix the typo: teh cat", "teh cat")
    chosen = {}
    while (t := q.claim(h)) is not None:
        if t.kind == "compare":
            pick = next(c.generation_id for c in t.candidates if c.text.rstrip(".").endswith(str(2 * int(c.text.split()[0]))))
            q.submit(h, t.task_id, {"choice": pick})
            chosen[t.task_id] = pick
        else:
            q.submit(h, t.task_id, {"text": "the cat"})
    return chosen


# ---------------------------------------------------------------------------- pairs, held out (fast)
def test_held_out_tasks_are_stable_seeded_and_never_trained_on(store) -> None:  # noqa: ANN001
    chosen = _labelled(store, n=12)
    spec = JudgeSpec(**{**RM, "holdout": 0.3, "include": ["compare", "edit"]})
    pairs = reward_pairs(store, spec, AggregationConfig(), round_ids=None)
    expected_held = sorted(t for t in chosen if held_out(t, 0.3, 0))
    assert pairs.held_out_tasks == expected_held and 0 < len(expected_held) < len(chosen)
    compare_keys = [k for k, m in zip(pairs.keys, pairs.rows["method"], strict=True) if m == "majority"]
    assert sorted(int(k) for k in compare_keys) == sorted(set(chosen) - set(expected_held))
    ds = pairs.dataset()
    row = ds[0]
    assert row["prompt"][-1]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    edit = [r for r in ds if r["method"] == "edit"]
    assert [(e["chosen"][0]["content"], e["rejected"][0]["content"]) for e in edit] == [("the cat", "teh cat")]
    assert reward_pairs(store, spec, AggregationConfig(), round_ids=None).rows == pairs.rows  # deterministic
    only_compare = reward_pairs(store, JudgeSpec(**{**RM, "holdout": 0.3}), AggregationConfig(), round_ids=None)
    assert set(only_compare.rows["method"]) == {"majority"}
    assert reward_pairs(store, JudgeSpec(**{**RM, "sources": ["judge"]}), AggregationConfig(), round_ids=None).keys == []


def test_held_out_share_and_seed() -> None:
    ids = range(1, 4001)
    share = sum(held_out(i, 0.2, 0) for i in ids) / len(ids)
    assert 0.18 < share < 0.22
    assert [held_out(i, 0.2, 0) for i in ids] == [held_out(i, 0.2, 0) for i in ids]
    assert [held_out(i, 0.2, 1) for i in ids] != [held_out(i, 0.2, 0) for i in ids]
    assert not any(held_out(i, 0.0, 0) for i in ids)


def test_wilson_interval() -> None:
    lo, hi = wilson_interval(0.5, 10)
    assert math.isclose(lo, 0.2366, abs_tol=1e-4) and math.isclose(hi, 0.7634, abs_tol=1e-4)
    assert wilson_interval(1.0, 3)[1] == 1.0 and wilson_interval(1.0, 3)[0] < 1.0
    assert wilson_interval(0.7, 0) is None


def test_an_untrained_reward_model_fails_each_verdict_with_the_reason() -> None:
    judge = RewardModelJudge(JudgeSpec(**RM))
    [v] = judge.compare([[{"role": "user", "content": "hi"}]], ["a"], ["b"])
    assert not v.ok and "not trained yet" in v.error and v.winner is None
    assert judge.identity["template_hash"] == "untrained" and judge.model_calls == 0


def test_the_judge_finds_its_newest_adapter_in_the_store_also_inside_a_panel(store, tmp_path: Path) -> None:  # noqa: ANN001
    from prefloop.judges import build_judge
    from prefloop.judges.cache import StoreCache

    def adapter(number: int, sha: str, on_disk: bool = True) -> None:
        folder = tmp_path / f"round-{number}"
        folder.mkdir()
        if on_disk:
            (folder / "adapter_model.safetensors").write_bytes(b"weights")
        with store.session() as s:
            r = Round(number=number, state="done", metrics={}, state_data={}, config={})
            s.add(r)
            s.flush()
            s.add(Artifact(round_id=r.id, kind=artifact_kind("rm"), path=str(folder), sha256=sha, meta={"base_model": TINY}))

    adapter(1, "a" * 64)
    adapter(2, "b" * 64)
    adapter(3, "c" * 64, on_disk=False)  # its files are gone: not usable
    rules = {"name": "r", "backend": "rules", "rules": [{"type": "length", "max": 10}]}
    specs = [JudgeSpec(**rules), JudgeSpec(**RM), JudgeSpec(name="p", backend="panel", members=["r", "rm"])]
    judge = build_judge(specs[1])
    judge.set_cache(StoreCache(store))
    assert judge.adapter.sha256 == "b" * 64 and judge.adapter.base_model == TINY
    assert judge.identity["template_hash"] == "b" * 16
    panel = build_judge(specs[2], specs=specs)
    panel.set_cache(StoreCache(store))
    assert panel.members[1].adapter.sha256 == "b" * 64


def test_config_keeps_the_reward_model_out_of_the_judging_state(tmp_path: Path) -> None:
    from prefloop.config import parse_config
    from prefloop.errors import ConfigError
    from prefloop.training.rounds import check_config, round_states

    rules = {"name": "r", "backend": "rules", "rules": [{"type": "length", "max": 10}]}
    plain = parse_config({"name": "p", "judges": {"panel": [rules]}})
    with_rm = parse_config({"name": "p", "judges": {"panel": [rules, RM]}})
    assert "reward_model" not in round_states(plain, 1)
    assert round_states(with_rm, 1).index("reward_model") == round_states(with_rm, 1).index("waiting") + 1
    assert "reward_model" not in round_states(with_rm, 0)
    bad = parse_config({"name": "p", "judges": {"panel": [rules, RM]}, "training": {"judges": ["rm"]}})
    with pytest.raises(ConfigError, match="reward_model state"):
        check_config(bad)
    with pytest.raises(ValidationError, match="at most 50"):
        JudgeSpec(**{**RM, "name": "r" * 51})


# ---------------------------------------------------------------------------- training and judging (tiny model)
@pytest.mark.slow
def test_reward_trainer_trains_on_exported_pairs_and_judges_like_any_judge(tmp_path: Path, db_url: str) -> None:
    from prefloop.judges import judges_from_config
    from prefloop.judges.runner import judge_round
    from prefloop.training.reward_model import train_reward_model
    from prefloop.training.rounds import sha256_file

    (tmp_path / "prefloop.yaml").write_text(yaml.safe_dump({"name": "t", "store": {"url": db_url}, "judges": {"panel": [RM]}}))
    project = Project(tmp_path)
    try:
        chosen = _labelled(project.store, n=8)
        spec = project.config.judges.get("rm")
        pairs = reward_pairs(project.store, spec, project.config.aggregation, round_ids=None)
        res = train_reward_model(spec, TINY, pairs.dataset(), tmp_path / "rm")
        assert res.steps == 4 and math.isfinite(res.metrics["loss"]) and res.train_seconds > 0
        adapter = Path(res.adapter_dir)
        assert (adapter / "adapter_model.safetensors").is_file() and not (tmp_path / "rm" / "checkpoints").exists()
        assert sorted(json.loads((adapter / "reward_model.json").read_text())["keys"]) == sorted(pairs.keys)
        again = train_reward_model(spec, TINY, pairs.dataset(), tmp_path / "rm")  # finished: never trained twice
        assert again.train_seconds == 0.0 and again.steps == res.steps

        trained = TrainedRewardModel(adapter, sha256_file(adapter / "adapter_model.safetensors"), TINY)
        judge = judges_from_config(project.config)["rm"]
        judge.use(trained)
        prompt = [{"role": "user", "content": "What is 3 + 3?"}]
        ab, ba = judge.compare([prompt, prompt], ["3 + 3 = 6.", "3 + 3 = 7."], ["3 + 3 = 7.", "3 + 3 = 6."])
        assert ab.consistent and math.isclose(ab.prob_a, 1 - ba.prob_a, abs_tol=1e-6)  # the order cannot matter
        assert ab.confidence == pytest.approx(abs(2 * ab.prob_a - 1))
        [score] = judge.score([prompt], ["3 + 3 = 6."])
        assert 1.0 < score.score < 5.0

        stats = judge_round(project, judge, progress=False, task_ids=list(chosen))
        assert stats.recorded == len(chosen) and stats.failed == 0
        with project.store.session() as s:
            rows = s.execute(select(Annotation, Annotator).join(Annotator).where(Annotator.name == "rm")).all()
        assert {a.task_id for a, _ in rows} == set(chosen)
        assert all(who.kind == "judge" and a.meta["template_hash"] == trained.sha256[:16] for a, who in rows)
        calls = judge.model_calls
        judge_round(project, judge, progress=False, task_ids=list(chosen))
        assert judge.model_calls == calls  # verdicts of the same adapter come from the store's cache
    finally:
        project.store.dispose()


# ---------------------------------------------------------------------------- the round state
@pytest.mark.slow
def test_round_trains_labels_measures_resumes_and_reuses(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from roundkit import TINY_CONFIG, make_project

    from prefloop.training.demo import scripted_humans
    from prefloop.training.rounds import Orchestrator, sha256_file
    from prefloop.training.rounds import reward as reward_state
    from prefloop.training.tracking import RoundTracker

    monkeypatch.setenv("WANDB_MODE", "disabled")
    panel = [*TINY_CONFIG["judges"]["panel"], {**RM, "holdout": 0.5, "max_steps": 3}]
    patch = {"judges": {"panel": panel},
             "training": {"pairing": {"edit_tasks_per_prompt": 0}, "sft": {"enabled": False}, "dpo": {"enabled": False},
                          "evaluation": {"enabled": False}}}
    project = make_project(tmp_path / "proj", db_url, prompts=4, patch=patch)
    trainings, logged = [], []
    real_train, real_label = reward_state.train_reward_model, reward_state.judge_round
    monkeypatch.setattr(reward_state, "train_reward_model", lambda *a, **k: trainings.append(1) or real_train(*a, **k))
    monkeypatch.setattr(RoundTracker, "log_phase", lambda self, phase, step, logs: logged.append((phase, dict(logs))))
    cut = {"n": 0}

    def power_cut_once(*a, **k):  # noqa: ANN002, ANN003, ANN202
        cut["n"] += 1
        if cut["n"] == 1:
            raise RuntimeError("power cut")
        return real_label(*a, **k)

    monkeypatch.setattr(reward_state, "judge_round", power_cut_once)
    humans = scripted_humans(n=1, accuracy=1.0)
    try:
        orch = Orchestrator(project, progress=False, humans=humans)
        orch.ensure_baseline()
        rid = orch.create_round(1)
        with pytest.raises(RuntimeError, match="power cut"):
            orch.run(rid)
        with project.store.session() as s:
            assert s.get(Round, rid).state == "reward_model"
        assert trainings == [1]
        summary = orch.resume(1)
        assert summary.state == "done" and trainings == [1]  # the finished training was not repeated
        visited = [(t.state, t.resumed) for t in summary.control.transitions]
        assert [s for s, _ in visited] == ["created", "generating", "judging", "waiting", "reward_model", "reward_model",
                                           "building_datasets", "training", "evaluating", "done"]
        assert visited[5] == ("reward_model", True)
        assert any(phase == "reward_model" and "loss" in logs for phase, logs in logged)  # wandb: reward_model/*

        m = summary.metrics["reward_model"]["rm"]
        assert m["retrained"] and m["pairs"] >= 1 and m["train_seconds"] > 0 and math.isfinite(m["train"]["loss"])
        with project.store.session() as s:
            [art] = s.scalars(select(Artifact).where(Artifact.round_id == rid, Artifact.kind == artifact_kind("rm"))).all()
            assert art.sha256 == sha256_file(Path(art.path) / "adapter_model.safetensors") == m["adapter_sha256"]
            tasks = s.scalars(select(Task).where(Task.round_id == rid)).all()
            labels = s.execute(select(Annotation.task_id, Annotator.name, Annotator.kind, Annotation.value)
                               .join(Annotator).where(Annotation.status == "submitted")).all()
        human = {t: v["choice"] for t, _, kind, v in labels if kind == "human"}
        by_rm = {t: v["choice"] for t, name, _, v in labels if name == "rm"}
        compare = {t.id for t in tasks if t.kind == "compare"}
        held = {t for t in human if held_out(t, 0.5, 0)}
        assert held and set(human) - held, "the test needs held-out and trained human tasks"
        # The reward model labels what humans did not answer, and the held-out human tasks — never its training tasks.
        assert set(by_rm) == (compare - set(human)) | held
        # Held-out agreement: its verdicts against the (single) human's, on the held-out tasks.
        agree = sum(str(by_rm[t]) == str(human[t]) for t in held) / len(held)
        assert m["agreement"]["n"] == len(held) and m["agreement"]["agreement"] == pytest.approx(agree)
        assert m["agreement"]["interval"] == pytest.approx(wilson_interval(agree, len(held)))
        assert summary.metrics["agreement"]["rm"]["n"] == len(held)  # the round's judge–human agreement sees it too
        assert summary.control.seconds["reward_model"] > 0 and "rm" in summary.control.reward_models

        # Round 2 with a retraining threshold out of reach: the round-1 adapter labels round 2's tasks.
        cfg = yaml.safe_load((project.root / "prefloop.yaml").read_text())
        cfg["judges"]["panel"][-1]["min_new_pairs"] = 10_000
        (project.root / "prefloop.yaml").write_text(yaml.safe_dump(cfg))
        project.store.dispose()
        project = Project(project.root)
        orch = Orchestrator(project, progress=False, humans=humans)
        second = orch.run(orch.create_round(2))
        m2 = second.metrics["reward_model"]["rm"]
        assert not m2["retrained"] and "reused" in m2["note"] and m2["adapter_sha256"] == m["adapter_sha256"]
        assert trainings == [1]
        with project.store.session() as s:
            assert s.scalars(select(Artifact).where(Artifact.round_id == second.id, Artifact.kind == artifact_kind("rm"))).all() == []
            metas = s.scalars(select(Annotation.meta).join(Annotator).join(Task, Task.id == Annotation.task_id)
                              .where(Annotator.name == "rm", Task.round_id == second.id)).all()
        assert metas and all(meta["template_hash"] == m["adapter_sha256"][:16] for meta in metas)
    finally:
        project.store.dispose()
