"""The training config section and the presets: every key validated, errors that name the key."""

from __future__ import annotations

import pytest
import yaml

from prefloop.config import PRESETS, load_preset, parse_config, preset_text
from prefloop.errors import ConfigError

TRAINING_PRESETS = ["offline-cpu", "smollm2-135m", "qwen2.5-0.5b-qlora", "demo"]


@pytest.mark.parametrize("name", TRAINING_PRESETS)
def test_presets_load(name: str) -> None:
    cfg = load_preset(name)
    assert cfg.training.model.source
    assert "api_key:" not in preset_text(name)  # secrets never live in presets


def test_preset_choices() -> None:
    assert load_preset("offline-cpu").training.model.source == "offline:smollm2-135m-instruct"
    assert load_preset("offline-cpu").training.trainer.gradient_checkpointing is False
    assert load_preset("smollm2-135m").training.model.source == "HuggingFaceTB/SmolLM2-135M-Instruct"
    q = load_preset("qwen2.5-0.5b-qlora").training
    assert (q.model.quantization, q.model.dtype, q.model.device) == ("4bit", "bfloat16", "cuda")
    assert q.dpo.loss_type == ["sigmoid", "sft"] and q.dpo.precompute_ref_log_probs
    demo = load_preset("demo")
    assert demo.training.evaluation.oracle == "support-desk" and demo.training.wait.enabled
    assert set(PRESETS) >= {"offline-cpu", "smollm2-135m", "qwen2.5-0.5b-qlora"}


def _with(training: dict) -> str:
    return yaml.safe_dump({"training": training})


@pytest.mark.parametrize(
    ("training", "needle"),
    [
        ({"sft": {"learnig_rate": 1e-4}}, "unknown key 'training.sft.learnig_rate'; did you mean 'learning_rate'?"),
        ({"dpo": {"loss_type": ["sigmoid", "bogus"]}}, "unknown DPO loss ['bogus']"),
        ({"dpo": {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]}}, "loss_weights has 1 values for 2 loss types"),
        ({"model": {"quantization": "3bit"}}, "training.model.quantization"),
        ({"generation": {"candidates": 0}}, "training.generation.candidates"),
        ({"pairing": {"strategy": "best_vs_all"}}, "training.pairing.strategy"),
        ({"wandb": {"api_key": "abc"}}, "unknown key 'training.wandb.api_key'"),
        ({"wandb": {"mode": "loud"}}, "training.wandb.mode"),
        ({"evaluation": {"samples_per_prompt": 3, "temperature": 0}}, "every sample would be the same"),
        ({"generation": {"temperature": 0}, "evaluation": {"samples_per_prompt": 2}}, "evaluation samples greedily"),
        ({"evaluation": {"bootstrap_resamples": 10}}, "training.evaluation.bootstrap_resamples"),
        ({"sft": {"loss": "prompt"}}, "training.sft.loss"),
    ],
)
def test_bad_values_name_the_key(training: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(yaml.safe_load(_with(training)), "prefloop.yaml")
    assert needle in err.value.message


def test_loss_type_accepts_a_single_string() -> None:
    cfg = parse_config({"training": {"dpo": {"loss_type": "ipo"}}})
    assert cfg.training.dpo.loss_type == ["ipo"]


def test_round_checks_judge_names(tmp_path) -> None:  # noqa: ANN001
    from roundkit import make_project

    from prefloop.training.rounds import Orchestrator

    project = make_project(tmp_path / "p", prompts=1, patch={"training": {"evaluation": {"judge": "nobody"}}})
    with pytest.raises(ConfigError, match="training.evaluation.judge is 'nobody'"):
        Orchestrator(project, progress=False).run_next()
    project = make_project(tmp_path / "q", prompts=1, patch={"training": {"evaluation": {"oracle": "nowhere"}}})
    with pytest.raises(ConfigError, match="unknown oracle 'nowhere'"):
        Orchestrator(project, progress=False).run_next()


def test_wandb_config_is_scrubbed_of_secrets() -> None:
    from prefloop.training.rounds import config_snapshot
    from prefloop.training.tracking import scrub

    cfg = parse_config({"store": {"url": "postgresql+psycopg://ann:s3cret@db:5432/pf"},
                        "training": {"generation": {"max_new_tokens": 17}}})
    snap = config_snapshot(cfg)
    assert "s3cret" not in str(snap) and snap["training"]["generation"]["max_new_tokens"] == 17
    cleaned = scrub({**snap, "extra": {"api_key": "k", "session_secret": "x", "api_key_env": "OPENAI_API_KEY", "prompt_tokens": 3}})
    assert cleaned["extra"] == {"api_key_env": "OPENAI_API_KEY", "prompt_tokens": 3}
    assert cleaned["training"]["generation"]["max_new_tokens"] == 17
