"""The round's wandb run (offline, real wandb): undefined numbers never reach its summary or tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest


def test_undefined_numbers_stay_out_of_the_wandb_summary_and_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefloop.training.config import WandbSettings
    from prefloop.training.tracking import RoundTracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    tracker = RoundTracker(WandbSettings(project="prefloop-tests"), run_dir=tmp_path, loop_id="nan", group="g",
                           round_number=1, config={})
    tracker.start()
    try:
        tracker.log_round({"oracle_score": 0.5, "win_rate_vs_base": None, "kappa": math.nan,
                           "cost": {"total": 1.25, "per_point": math.inf}})
        summary = dict(tracker.run.summary)
        assert summary["round/oracle_score"] == 0.5 and summary["round/cost/total"] == 1.25
        assert not {"round/win_rate_vs_base", "round/kappa", "round/cost/per_point"} & set(summary)
        tracker.log_samples([{"prompt": "p", "oracle": math.nan}, {"prompt": "q", "oracle": 0.25}])
    finally:
        tracker.finish()
    (table,) = (tmp_path / "wandb").glob("offline-run-*/files/media/table/samples_*.table.json")
    assert json.loads(table.read_text())["data"] == [["p", None], ["q", 0.25]]


def _tracker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str):  # noqa: ANN202
    from prefloop.training.config import WandbSettings
    from prefloop.training.tracking import RoundTracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    return RoundTracker(WandbSettings(project="prefloop-tests"), run_dir=tmp_path, loop_id=name, group="g", round_number=1,
                        config={"store": {"url": "postgresql+psycopg://loop:hunter2@db/prefloop"}})


def test_run_config_has_trl_arguments_and_the_model_config_without_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What TRL's own wandb integration logs (the trainer's arguments, the model's config), per phase,
    through the same callback the round's trainers get; tokens, keys and URL passwords never land."""
    from transformers import LlamaConfig, LlamaForCausalLM, TrainerControl, TrainerState
    from trl import DPOConfig
    from wandbkit import read_offline_run

    args = DPOConfig(output_dir=str(tmp_path / "out"), bf16=False, use_cpu=True, beta=0.25, report_to="none",
                     hub_token="hf_dont_log_me", hub_model_id="https://ann:hunter2@hub.example/acme/support")
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config.api_key = "sk-live-dont-log-me"  # a secret someone put in a model config
    tracker = _tracker(tmp_path, monkeypatch, "cfg")
    tracker.start()
    try:
        tracker.callback("dpo").on_train_begin(args, TrainerState(), TrainerControl(), model=LlamaForCausalLM(config))
    finally:
        tracker.finish()
    run = read_offline_run(tmp_path)
    dpo, model = run.config["dpo/args"], run.config["model/config"]
    assert len(dpo) > 100 and dpo["beta"] == 0.25 and dpo["learning_rate"] == args.learning_rate
    assert dpo["hub_model_id"] == "https://ann:***@hub.example/acme/support" and "hub_token" not in dpo
    assert model["hidden_size"] == 16 and model["model_type"] == "llama" and "api_key" not in model
    assert run.config["store"]["url"] == "postgresql+psycopg://loop:***@db/prefloop"
    for secret in (b"hf_dont_log_me", b"sk-live-dont-log-me", b"hunter2"):
        assert secret not in run.raw


def test_the_report_png_is_logged_as_an_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    import yaml
    from wandbkit import read_offline_run

    from prefloop.feedback.store.models import Round
    from prefloop.project import CONFIG_NAME, Project, init_project

    init_project(tmp_path / "p")
    cfg = yaml.safe_load((tmp_path / "p" / CONFIG_NAME).read_text())
    cfg["store"]["url"] = db_url
    (tmp_path / "p" / CONFIG_NAME).write_text(yaml.safe_dump(cfg))
    project = Project(tmp_path / "p")
    with project.store.session() as s:
        s.add(Round(number=0, state="done", config={}, metrics={"eval": {"oracle_score": 0.4}, "seconds": {"evaluating": 10.0}}))
        s.add(Round(number=1, state="evaluating", config={}, metrics={"eval": {"oracle_score": 0.5, "vs_previous": {"win_rate": 0.6}}}))
    tracker = _tracker(tmp_path, monkeypatch, "png")
    tracker.start()
    try:
        png = tracker.log_report(project, tmp_path / "p" / "runs" / "round-1" / "report.png")
    finally:
        tracker.finish()
        project.store.dispose()
    assert png is not None and png.read_bytes()[:4] == b"\x89PNG"
    assert read_offline_run(tmp_path).history["report/_type"] == "image-file"
    (logged,) = tmp_path.glob("wandb/offline-run-*/files/media/images/report_*.png")
    assert logged.read_bytes() == png.read_bytes()


@pytest.mark.slow
def test_a_trained_phase_logs_its_arguments_and_its_dataset_without_cache_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real SFT phase maps its saved dataset, which leaves `cache-*.arrow` files in the dataset's
    folder; the dataset artifact carries the data and its json files, not those caches."""
    from datasets import Dataset, load_from_disk
    from wandbkit import read_offline_run

    from prefloop.training.config import TrainingConfig
    from prefloop.training.trainers import train_phase

    cfg = TrainingConfig.model_validate({
        "model": {"source": "tiny:llama-tiny", "device": "cpu"}, "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "sft": {"learning_rate": 1e-3, "max_steps": 2, "batch_size": 2, "max_length": 64}, "trainer": {"save_steps": 10},
    })
    folder = tmp_path / "datasets" / "sft"
    rows = [{"prompt": [{"role": "user", "content": f"Hi, I'm {n}."}], "completion": [{"role": "assistant", "content": f"Hello {n}!"}]}
            for n in ("Ann", "Bo", "Cy", "Di")]  # the export's shape: TRL maps the saved dataset itself
    Dataset.from_list(rows).save_to_disk(str(folder))
    tracker = _tracker(tmp_path, monkeypatch, "sft")
    tracker.start()
    try:
        result = train_phase("sft", cfg, load_from_disk(str(folder)), tmp_path / "sft", callbacks=[tracker.callback("sft")])
        assert list(folder.glob("cache-*.arrow")), "the trainer's map left no cache file: nothing to test"
        tracker.log_artifact("sft-dataset-round-1", "dataset", folder, {"rows": len(rows)})
        tracker.log_artifact("adapter-round-1", "model", Path(result.adapter_dir))
    finally:
        tracker.finish()
    run = read_offline_run(tmp_path)
    files = run.artifacts["sft-dataset-round-1"]
    assert sorted(files) == sorted(p.name for p in folder.iterdir() if not p.name.startswith("cache-"))
    assert any(f.startswith("data-") and f.endswith(".arrow") for f in files) and "dataset_info.json" in files
    assert "adapter_model.safetensors" in run.artifacts["adapter-round-1"]
    assert run.config["sft/args"]["max_steps"] == 2 and run.config["sft/args"]["per_device_train_batch_size"] == 2
    assert run.config["model/config"]["num_hidden_layers"] == 2
    assert "sft/loss" in run.history


def test_judge_trust_reaches_the_round_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import Counter

    from prefloop.judges.config import TrustConfig
    from prefloop.judges.trust import TrustTable, assess, wandb_view
    from prefloop.training.config import WandbSettings
    from prefloop.training.tracking import RoundTracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    cfg = TrustConfig(min_n=3, threshold=0.5)  # 8 of 9 choices right: lower bound 0.565
    table = TrustTable({("fmt", "compare"): assess("fmt", "compare", Counter(agree=8, blind_tie=4, wrong_side=1), cfg)})
    tracker = RoundTracker(WandbSettings(project="prefloop-tests"), run_dir=tmp_path, loop_id="trust", group="g",
                           round_number=2, config={})
    tracker.start()
    try:
        tracker.log_round({"trust": wandb_view(table.to_metrics())})
        summary = dict(tracker.run.summary)
    finally:
        tracker.finish()
    assert summary["round/trust/fmt/compare/n"] == 13 and summary["round/trust/fmt/compare/blind_ties"] == 4
    assert summary["round/trust/fmt/compare/rate"] == pytest.approx(8 / 13, abs=1e-4)
    assert summary["round/trust/fmt/compare/blind"] == 1 and summary["round/trust/fmt/compare/trusted"] == 1
    assert 0 < summary["round/trust/fmt/compare/low"] < summary["round/trust/fmt/compare/high"] < 1
