"""What the round orchestrator adds to training: one round's training state (SFT then DPO, LoRA)
run by ``prefloop round resume`` machinery vs the same TRL calls in a plain script, on the same
datasets, same model, same hyperparameters. Prints a table; the aim is ≤ 1.03×.

Both sides load the base model, build SFTTrainer then DPOTrainer (the DPO one continuing from the
SFT adapter), train and save the adapters. The orchestrated side also checkpoints (as configured),
writes its round bookkeeping to the store and logs to an offline wandb run; the plain side does
neither (``save_strategy="no"``, ``report_to="none"``).

    python benchmarks/round_overhead.py                      # SmolLM2-135M (offline), 2 repeats
    python benchmarks/round_overhead.py --model tiny:llama-tiny --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")


def make_datasets(folder: Path, n_sft: int, n_dpo: int) -> tuple[Path, Path]:
    """SFT rows (corrected support replies) and DPO pairs (corrected vs original) from the demo prompts."""
    from datasets import Dataset

    from prefloop.training.demo import data_path, fix_reply

    rows = [json.loads(line) for line in data_path().read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["split"] == "train"]
    raw = ["I'm sorry to hear that. We are looking into it and will get back to you soon.",
           "The customer is frustrated because the order did not arrive which is a significant issue for the team."]
    sft, dpo = [], []
    for i in range(max(n_sft, n_dpo)):
        r = rows[i % len(rows)]
        bad = raw[i % len(raw)]
        good = fix_reply(r["meta"], bad)
        if i < n_sft:
            sft.append({"messages": [*r["messages"], {"role": "assistant", "content": good}], "source": "human"})
        if i < n_dpo:
            dpo.append({"prompt": r["messages"], "chosen": [{"role": "assistant", "content": good}],
                        "rejected": [{"role": "assistant", "content": bad}], "source": "human"})
    Dataset.from_list(sft).save_to_disk(str(folder / "sft"))
    Dataset.from_list(dpo).save_to_disk(str(folder / "dpo"))
    return folder / "sft", folder / "dpo"


def training_config(model: str) -> dict:
    return {
        "model": {"source": model, "device": "cpu"},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        "sft": {"learning_rate": 3e-4, "epochs": 2, "batch_size": 4, "max_length": 192},
        "dpo": {"learning_rate": 1e-4, "beta": 0.1, "epochs": 1, "batch_size": 4, "max_length": 192},
        "trainer": {"save_steps": 5, "gradient_checkpointing": False, "data_rounds": 1},
        "evaluation": {"enabled": False},
        "wandb": {"project": "prefloop-bench", "mode": "offline"},
    }


def orchestrated(work: Path, model: str, sft_path: Path, dpo_path: Path) -> float:
    """Seconds of the training state of a round run by the orchestrator."""
    import yaml
    from datasets import load_from_disk
    from sqlalchemy import select

    from prefloop.feedback.export import dataset_hash
    from prefloop.feedback.store.models import Round
    from prefloop.project import CONFIG_NAME, Project
    from prefloop.training.rounds import Orchestrator, config_snapshot

    root = work / "project"
    root.mkdir()
    (root / CONFIG_NAME).write_text(yaml.safe_dump({"training": training_config(model)}))
    project = Project(root)
    refs = {k: {"rows": len(load_from_disk(str(p))), "sha256": dataset_hash(load_from_disk(str(p))), "path": str(p)}
            for k, p in (("sft", sft_path), ("dpo", dpo_path))}
    with project.store.session() as s:
        snap = config_snapshot(project.config)
        s.add(Round(number=0, state="done", config=snap, metrics={}, state_data={"loop_id": "bench"}))
        s.add(Round(number=1, state="training", config=snap, metrics={},
                    state_data={"loop_id": "bench", "datasets": refs}))
    Orchestrator(project, progress=False).resume(1)
    with project.store.session() as s:
        control = s.scalar(select(Round).where(Round.number == 1)).state_data
    return float(control["seconds"]["training"])


def plain(work: Path, model: str, sft_path: Path, dpo_path: Path) -> float:
    """The same TRL calls written out by hand, timed over the same span."""
    from datasets import load_from_disk
    from peft import LoraConfig, set_peft_model_state_dict
    from safetensors.torch import load_file
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from prefloop.training.loading import load_causal_lm, load_tokenizer

    start = time.perf_counter()
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", bias="none", task_type="CAUSAL_LM")
    common = dict(per_device_train_batch_size=4, max_length=192, logging_steps=1, report_to="none", save_strategy="no",
                  bf16=False, use_cpu=True, gradient_checkpointing=False, dataloader_num_workers=0, seed=0)
    tok = load_tokenizer(model)
    tok.padding_side = "right"
    sft = SFTTrainer(model=load_causal_lm(model, dtype="float32", device="cpu"),
                     args=SFTConfig(output_dir=str(work / "sft"), learning_rate=3e-4, num_train_epochs=2, **common),
                     train_dataset=load_from_disk(str(sft_path)).select_columns(["messages"]), processing_class=tok, peft_config=lora)
    sft.train()
    sft.model.save_pretrained(str(work / "sft" / "adapter"))
    del sft
    tok = load_tokenizer(model)
    tok.padding_side = "right"
    dpo = DPOTrainer(model=load_causal_lm(model, dtype="float32", device="cpu"), ref_model=None,
                     args=DPOConfig(output_dir=str(work / "dpo"), learning_rate=1e-4, beta=0.1, num_train_epochs=1, **common),
                     train_dataset=load_from_disk(str(dpo_path)).select_columns(["prompt", "chosen", "rejected"]),
                     processing_class=tok, peft_config=lora)
    set_peft_model_state_dict(dpo.model, load_file(str(work / "sft" / "adapter" / "adapter_model.safetensors")))
    dpo.train()
    dpo.model.save_pretrained(str(work / "dpo" / "adapter"))
    del dpo
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="offline:smollm2-135m-instruct")
    ap.add_argument("--sft-rows", type=int, default=12)
    ap.add_argument("--dpo-rows", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    from prefloop.training.loading import resolve_model

    resolve_model(args.model)  # convert/cache outside the timings
    times: dict[str, list[float]] = {"plain TRL script": [], "prefloop round (training state)": []}
    with tempfile.TemporaryDirectory(prefix="prefloop-bench-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        sft_path, dpo_path = make_datasets(data, args.sft_rows, args.dpo_rows)
        for i in range(args.repeats):
            # Alternate the order so that neither side always runs on a warmer machine.
            order = [("plain TRL script", plain), ("prefloop round (training state)", orchestrated)]
            for name, fn in order if i % 2 == 0 else order[::-1]:
                work = Path(tmp) / f"{name.split()[0]}-{i}"
                work.mkdir()
                os.environ["WANDB_DIR"] = str(work)
                times[name].append(fn(work, args.model, sft_path, dpo_path))
                shutil.rmtree(work, ignore_errors=True)
                print(f"  {name} run {i + 1}: {times[name][-1]:.1f} s", file=sys.stderr)
    base = statistics.median(times["plain TRL script"])
    t = Table(title=f"one round's training: SFT {args.sft_rows} rows × 2 epochs, DPO {args.dpo_rows} pairs; {args.model}; "
                    f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    for col in ("", "runs (s)", "median (s)", "× plain"):
        t.add_column(col, justify="right" if col else "left")
    for name, vals in times.items():
        med = statistics.median(vals)
        t.add_row(name, ", ".join(f"{v:.1f}" for v in vals), f"{med:.1f}", f"{med / base:.3f}")
    Console().print(t)


if __name__ == "__main__":
    main()
