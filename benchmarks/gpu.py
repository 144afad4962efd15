"""Training and generation throughput on a GPU: a plain TRL script with TRL's defaults vs prefloop's
training path with its GPU presets, and generation with transformers vs vLLM.

The model is Qwen2.5-0.5B-shaped (the config is written below) with random weights: throughput does
not depend on the weights, and nothing is downloaded. Its tokenizer is built here too: a word-level
vocabulary as large as the model's (``w0 … wN`` plus ChatML's special tokens), so every token the
random model samples decodes, and one synthetic word is one token.

Cases (each capped in time, the whole run under 8 minutes on one H100/H200):

- ``plain-trl`` SFT / DPO: ``SFTTrainer``/``DPOTrainer`` with TRL's default config (bf16, gradient
  checkpointing, batch 8) and the same LoRA as prefloop's preset;
- ``prefloop-lora-bf16`` SFT / DPO: prefloop's ``train_phase`` with the ``qwen2.5-0.5b-lora-bf16``
  preset's training settings (and the same preset without packing, to see what packing buys);
- ``prefloop-qlora`` SFT / DPO: the ``qwen2.5-0.5b-qlora`` preset (bitsandbytes NF4);
- generation: prefloop's sampling path with the transformers backend and, when installed, vLLM.

Reported per case: tokens/s (real tokens, warm-up steps excluded), seconds per optimizer step, peak
GPU memory and MFU = 6 · N · tokens/s ÷ the GPU's dense bf16 peak (N: the model's parameters). The
issue's goals are checked and printed as met / not met.

    python benchmarks/gpu.py                    # CUDA: writes benchmarks/gpu-results.json
    python benchmarks/gpu.py --cpu-smoke        # tiny model, a few steps, CPU (what the test suite runs)
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

ROOT = Path(__file__).resolve().parents[1]

#: Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864, vocab 151936).
QWEN05_SHAPE: dict[str, Any] = {
    "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
    "intermediate_size": 4864, "vocab_size": 151936, "tie_word_embeddings": True, "max_position_embeddings": 32768,
    "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "hidden_act": "silu", "use_sliding_window": False,
}
TINY_SHAPE: dict[str, Any] = {**QWEN05_SHAPE, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                              "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 512,
                              "max_position_embeddings": 1024}

#: Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, matched on the CUDA device name.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "GH200": 989.0, "B200": 2250.0, "A100": 312.0,
                    "A800": 312.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10G": 125.0, "A10": 125.0,
                    "RTX 4090": 165.0, "RTX 3090": 71.0, "V100": 125.0, "T4": 65.0}

GOALS = {"sft_speedup": 1.5, "mfu": 0.40, "dpo_step_ratio": 1.3, "vllm_speedup": 10.0}
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def use_source_tree() -> None:
    """Import prefloop from this checkout when it is not installed (a bare GPU machine)."""
    try:
        import prefloop.training  # noqa: F401
    except ModuleNotFoundError:
        sys.path.insert(0, str(ROOT))
        import prefloop

        prefloop.__path__.append(str(ROOT))  # prefloop.training → training/, prefloop.configs → configs/, …


# ---------------------------------------------------------------------------- model, tokenizer, data
def build_model(folder: Path, shape: dict[str, Any], dtype: str) -> int:
    """A random-init Qwen2 of ``shape`` with a word-level tokenizer of the same vocabulary; returns N."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIALS), shape["vocab_size"])})
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=["<|im_start|>"])
    tok.chat_template = CHATML
    config = Qwen2Config(**shape, bos_token_id=None, eos_token_id=vocab["<|im_end|>"], pad_token_id=vocab["<|endoftext|>"],
                         dtype=dtype)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(getattr(torch, dtype))
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    del model
    return n


def _words(rng: random.Random, n: int, vocab: int) -> str:
    return " ".join(f"w{rng.randrange(len(SPECIALS), vocab)}" for _ in range(n))


def make_data(rows: int, vocab: int, max_len: int, seed: int = 0) -> tuple[Any, Any, list[list[dict[str, str]]]]:
    """Chat rows of varied length (as real conversations are): SFT messages, DPO pairs, prompts."""
    from datasets import Dataset

    rng = random.Random(seed)
    sft, dpo, prompts = [], [], []
    for _ in range(rows):
        total = int(min(max_len - 16, max(24, rng.lognormvariate(math.log(max_len / 3), 0.6))))
        p_len = max(8, total // 3)
        prompt = [{"role": "user", "content": _words(rng, p_len, vocab)}]
        chosen = [{"role": "assistant", "content": _words(rng, total - p_len, vocab)}]
        rejected = [{"role": "assistant", "content": _words(rng, max(4, (total - p_len) * 3 // 4), vocab)}]
        sft.append({"messages": prompt + chosen, "source": "human"})
        dpo.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": "human"})
        prompts.append(prompt)
    return Dataset.from_list(sft), Dataset.from_list(dpo), prompts


# ---------------------------------------------------------------------------- measuring
@dataclass
class Row:
    case: str
    phase: str  # sft, dpo, generation
    status: str = "ok"  # ok, skipped: why, failed: why
    tokens_per_s: float | None = None
    step_s: float | None = None
    steps: int = 0
    tokens: int = 0
    peak_mem_gb: float | None = None
    mfu: float | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


class StepClock:
    """A TrainerCallback: times optimizer steps after the warm-up and stops the run at its time cap."""

    def __new__(cls, warmup: int, cap_s: float):  # noqa: ANN204
        from transformers import TrainerCallback

        class _Clock(TrainerCallback):
            def __init__(self) -> None:
                self.marks: list[tuple[int, float, float]] = []  # (step, time, tokens seen)
                self.start: float | None = None  # the first step (after loading, tokenizing, precomputing)

            def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
                if self.start is None:
                    self.start = time.perf_counter()

            def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
                if logs and "num_tokens" in logs:
                    _sync()
                    self.marks.append((state.global_step, time.perf_counter(), float(logs["num_tokens"])))
                if self.start is not None and time.perf_counter() - self.start > cap_s and state.global_step > warmup + 2:
                    control.should_training_stop = True
                return control

            def rates(self) -> tuple[float, float, int, int] | None:
                timed = [m for m in self.marks if m[0] >= warmup]
                if len(timed) < 2:
                    return None
                (s0, t0, n0), (s1, t1, n1) = timed[0], timed[-1]
                return (n1 - n0) / (t1 - t0), (t1 - t0) / (s1 - s0), s1 - s0, int(n1 - n0)

        return _Clock()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _reset_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def bf16_peak_flops() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    for key in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):
        if key in name:
            return BF16_PEAK_TFLOPS[key] * 1e12
    return None


# ---------------------------------------------------------------------------- cases
@dataclass
class Bench:
    model_dir: Path
    params: int
    sft: Any
    dpo: Any
    prompts: list[list[dict[str, str]]]
    cuda: bool
    steps: int
    warmup: int
    cap_s: float
    work: Path
    peak: float | None
    lora: dict[str, Any]
    adapter: Path | None = None  # the prefloop SFT adapter (generation samples with it, as a round does)

    def finish(self, row: Row, clock: Any, started: float) -> Row:
        rates = clock.rates()
        row.seconds = round(time.perf_counter() - started, 1)
        row.peak_mem_gb = _peak_gb()
        if rates is None:
            row.status = "failed: fewer than two timed steps"
            return row
        row.tokens_per_s, row.step_s, row.steps, row.tokens = rates
        if self.peak:
            row.mfu = 6 * self.params * row.tokens_per_s / self.peak
        return row


def plain_trl(b: Bench, phase: str) -> Row:
    """What a user writes first: TRL's default config, the same LoRA, the model by path."""
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    row, started = Row("plain-trl", phase), time.perf_counter()
    clock = StepClock(b.warmup, b.cap_s)
    common = {"output_dir": str(b.work / f"plain-{phase}"), "max_steps": b.steps, "logging_steps": 1, "report_to": "none",
              "save_strategy": "no"}
    if not b.cuda:  # TRL's defaults assume a GPU (bf16, checkpointing): the smoke run turns those off
        common.update(use_cpu=True, bf16=False, gradient_checkpointing=False, per_device_train_batch_size=2, max_length=96)
    peft = LoraConfig(task_type="CAUSAL_LM", **b.lora)
    if phase == "sft":
        trainer = SFTTrainer(model=str(b.model_dir), args=SFTConfig(**common), train_dataset=b.sft.select_columns(["messages"]),
                             peft_config=peft, callbacks=[clock])
    else:
        trainer = DPOTrainer(model=str(b.model_dir), args=DPOConfig(**common),
                             train_dataset=b.dpo.select_columns(["prompt", "chosen", "rejected"]), peft_config=peft, callbacks=[clock])
    trainer.train()
    row.notes.append(f"batch {trainer.args.per_device_train_batch_size}, bf16 {trainer.args.bf16}, "
                     f"checkpointing {trainer.args.gradient_checkpointing}")
    del trainer
    return b.finish(row, clock, started)


def preset_training(name: str, b: Bench, **overrides: Any) -> Any:
    """A GPU preset's training section, pointed at the benchmark model (CUDA-only parts off on CPU)."""
    from prefloop.config import load_preset

    t = load_preset(name).training
    model = {"source": str(b.model_dir), "device": "cuda" if b.cuda else "cpu"}
    trainer = {"save_steps": 10_000, "logging_steps": 1}
    sft = {"max_steps": b.steps}
    dpo = {"max_steps": b.steps}
    if not b.cuda:
        trainer["liger_kernel"] = False
        sft.update(batch_size=2, max_length=96)
        dpo.update(batch_size=2, max_length=96)
    else:
        import importlib.util

        trainer["liger_kernel"] = t.trainer.liger_kernel and importlib.util.find_spec("liger_kernel") is not None
    data = t.model_dump(mode="json")
    for section, patch in (("model", model), ("trainer", trainer), ("sft", sft), ("dpo", dpo)):
        data[section].update(patch)
    for section, patch in overrides.items():
        data[section].update(patch)
    from prefloop.training.config import TrainingConfig

    return TrainingConfig.model_validate(data)


def prefloop_case(b: Bench, case: str, preset: str, phase: str, **overrides: Any) -> Row:
    from prefloop.training.trainers import train_phase

    row, started = Row(case, phase), time.perf_counter()
    cfg = preset_training(preset, b, **overrides)
    row.notes.append(f"batch {(cfg.sft if phase == 'sft' else cfg.dpo).batch_size}, liger {cfg.trainer.liger_kernel}")
    clock = StepClock(b.warmup, b.cap_s)
    out = b.work / f"{case}-{phase}"
    ds = b.sft if phase == "sft" else b.dpo
    res = train_phase(phase, cfg, ds, out, init_adapter=None, callbacks=[clock])  # type: ignore[arg-type]
    row.notes.extend(res.notes)
    if phase == "sft" and case == "prefloop-lora-bf16":
        b.adapter = Path(res.adapter_dir)
    return b.finish(row, clock, started)


def generation_case(b: Bench, backend: str) -> Row:
    """prefloop's sampling path (a round's Policy with the SFT adapter) on the benchmark prompts."""
    from prefloop.training.config import ModelSettings
    from prefloop.training.generation import Policy, Sampling, generate

    row, started = Row(f"generate-{backend}", "generation"), time.perf_counter()
    settings = ModelSettings(source=str(b.model_dir), dtype="bfloat16" if b.cuda else "float32", device="cuda" if b.cuda else "cpu")
    policy = Policy(settings, b.adapter)
    n_prompts, new = (256, 256) if b.cuda else (4, 8)
    sampling = Sampling(n=1, max_new_tokens=new, temperature=1.0, top_p=1.0, top_k=None, seed=0, backend=backend)
    prompts = b.prompts[:n_prompts]
    generate(policy, prompts[:2], sampling, batch_size=64)  # loads the model (and vLLM's engine): not timed
    _sync()
    t0 = time.perf_counter()
    outs = generate(policy, prompts, sampling, batch_size=64 if b.cuda else 4)
    _sync()
    dt = time.perf_counter() - t0
    row.tokens = sum(len(o.split()) for per in outs for o in per)  # one word, one token
    # vLLM's engine runs in its own process: this process's allocator does not see its memory.
    row.tokens_per_s, row.steps, row.peak_mem_gb = row.tokens / dt, len(prompts), None if backend == "vllm" else _peak_gb()
    row.seconds = round(time.perf_counter() - started, 1)
    row.notes.append(f"{len(prompts)} prompts, {new} new tokens, adapter {'yes' if b.adapter else 'no'}")
    policy.unload()
    return row


def run_case(rows: list[Row], deadline: float, log: Path, case: str, phase: str, fn: Any, *args: Any, **kwargs: Any) -> None:
    """One case, its library output sent to ``log``; a failure is a row and the other cases still run."""
    import contextlib
    import traceback

    _reset_memory()
    if time.monotonic() > deadline:
        rows.append(Row(case, phase, status="skipped: out of the time budget"))
    else:
        with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            print(f"===== {case} {phase}", flush=True)
            try:
                rows.append(fn(*args, **kwargs))
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
                rows.append(Row(case, phase, status=f"failed: {type(exc).__name__}: {first}"))
    print(_line(rows[-1]), flush=True)


# ---------------------------------------------------------------------------- goals and output
def goals(rows: list[Row]) -> list[dict[str, Any]]:
    def get(case: str, phase: str) -> Row | None:
        return next((r for r in rows if r.case == case and r.phase == phase and r.status == "ok"), None)

    out = []
    plain_sft = get("plain-trl", "sft")
    for case in ("prefloop-lora-bf16", "prefloop-qlora"):
        mine = get(case, "sft")
        value = mine.tokens_per_s / plain_sft.tokens_per_s if mine and plain_sft else None
        out.append({"goal": f"{case} SFT tokens/s ≥ {GOALS['sft_speedup']}× plain TRL", "value": value,
                    "met": None if value is None else value >= GOALS["sft_speedup"]})
    mine = get("prefloop-lora-bf16", "sft")
    out.append({"goal": f"prefloop-lora-bf16 SFT MFU ≥ {GOALS['mfu']:.0%}", "value": mine.mfu if mine else None,
                "met": None if not mine or mine.mfu is None else mine.mfu >= GOALS["mfu"]})
    sft, dpo = get("prefloop-lora-bf16", "sft"), get("prefloop-lora-bf16", "dpo")
    value = dpo.step_s / sft.step_s if sft and dpo else None
    out.append({"goal": f"DPO step (precomputed reference) ≤ {GOALS['dpo_step_ratio']}× SFT step", "value": value,
                "met": None if value is None else value <= GOALS["dpo_step_ratio"]})
    hf, vl = get("generate-transformers", "generation"), get("generate-vllm", "generation")
    value = vl.tokens_per_s / hf.tokens_per_s if hf and vl else None
    out.append({"goal": f"vLLM generation ≥ {GOALS['vllm_speedup']:.0f}× transformers tokens/s", "value": value,
                "met": None if value is None else value >= GOALS["vllm_speedup"]})
    return out


def _fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def _line(r: Row) -> str:
    return (f"{r.case:<28} {r.phase:<10} {r.status[:60]:<20} tok/s {_fmt(r.tokens_per_s, ',.0f'):>10}  "
            f"step {_fmt(r.step_s, '.3f'):>7} s  peak {_fmt(r.peak_mem_gb, '.1f'):>5} GiB  MFU {_fmt(r.mfu, '.1%'):>6}  ({r.seconds} s)")


def print_table(rows: list[Row], checks: list[dict[str, Any]], header: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    table = Table(title=header)
    for col in ("case", "phase", "status", "tokens/s", "s/step", "steps", "peak GiB", "MFU", "notes"):
        table.add_column(col, justify="right" if col in ("tokens/s", "s/step", "steps", "peak GiB", "MFU") else "left")
    for r in rows:
        table.add_row(r.case, r.phase, r.status, _fmt(r.tokens_per_s, ",.0f"), _fmt(r.step_s, ".3f"), str(r.steps),
                      _fmt(r.peak_mem_gb, ".1f"), _fmt(r.mfu, ".1%"), "; ".join(r.notes)[:80])
    console.print(table)
    goal_table = Table(title="goals (issue 15)")
    for col in ("goal", "value", "met"):
        goal_table.add_column(col)
    for g in checks:
        met = "–" if g["met"] is None else ("goal met" if g["met"] else "NOT met")
        goal_table.add_row(g["goal"], _fmt(g["value"], ".2f"), met)
    console.print(goal_table)


def machine() -> dict[str, Any]:
    import platform

    import torch
    import transformers
    import trl

    info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "trl": trl.__version__, "cuda": torch.cuda.is_available(), "load_average": os.getloadavg()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny model, a few steps, CPU: the suite's check that this runs")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "gpu-results.json")
    ap.add_argument("--steps", type=int, help="optimizer steps per training case (default 60 on GPU, 4 on CPU)")
    ap.add_argument("--case-seconds", type=float, default=30.0, help="time cap of one training case's steps")
    ap.add_argument("--budget-seconds", type=float, default=400.0,
                    help="cases that would start after this are skipped (the run then ends within 8 minutes)")
    args = ap.parse_args(argv)
    use_source_tree()
    import torch

    cuda = torch.cuda.is_available() and not args.cpu_smoke
    if not cuda and not args.cpu_smoke:
        print("no CUDA GPU: run with --cpu-smoke for the CPU-sized variant", file=sys.stderr)
        return 2
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1) if not cuda else torch.get_num_threads())
    deadline = time.monotonic() + args.budget_seconds
    steps = args.steps or (60 if cuda else 4)
    shape = QWEN05_SHAPE if cuda else TINY_SHAPE
    log = args.out.with_suffix(".log")  # the libraries' own output
    args.out.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix="prefloop-gpu-bench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        params = build_model(work / "model", shape, "bfloat16" if cuda else "float32")
        sft, dpo, prompts = make_data(2048 if cuda else 32, shape["vocab_size"], 1024 if cuda else 96)
        lora = {"r": 32, "lora_alpha": 64, "lora_dropout": 0.0, "target_modules": "all-linear", "bias": "none"}
        b = Bench(model_dir=work / "model", params=params, sft=sft, dpo=dpo, prompts=prompts, cuda=cuda, steps=steps,
                  warmup=3 if cuda else 1, cap_s=args.case_seconds, work=work, peak=bf16_peak_flops(), lora=lora)
        print(f"model: {params / 1e6:.1f}M parameters, built in {time.perf_counter() - t0:.1f} s; {len(sft)} rows; "
              f"{steps} steps per case (the first {b.warmup} untimed, at most {args.case_seconds:.0f} s of steps)", flush=True)
        rows: list[Row] = []
        # Most important first: a case that would start after the budget is skipped, not the run.
        for phase in ("sft", "dpo"):
            run_case(rows, deadline, log, "plain-trl", phase, plain_trl, b, phase)
            run_case(rows, deadline, log, "prefloop-lora-bf16", phase, prefloop_case, b, "prefloop-lora-bf16",
                     "qwen2.5-0.5b-lora-bf16", phase)
        run_case(rows, deadline, log, "generate-transformers", "generation", generation_case, b, "transformers")
        import importlib.util

        if cuda and importlib.util.find_spec("vllm") is not None:
            run_case(rows, deadline, log, "generate-vllm", "generation", generation_case, b, "vllm")
        else:
            rows.append(Row("generate-vllm", "generation",
                            status="skipped: " + ("vLLM is not installed" if cuda else "vLLM needs CUDA")))
        run_case(rows, deadline, log, "prefloop-lora-bf16-nopack", "sft", prefloop_case, b, "prefloop-lora-bf16-nopack",
                 "qwen2.5-0.5b-lora-bf16", "sft", sft={"packing": False})
        for phase in ("sft", "dpo"):
            if cuda:
                run_case(rows, deadline, log, "prefloop-qlora", phase, prefloop_case, b, "prefloop-qlora", "qwen2.5-0.5b-qlora", phase)
            else:
                rows.append(Row("prefloop-qlora", phase, status="skipped: QLoRA needs CUDA"))
    checks = goals(rows)
    info = machine()
    header = (f"prefloop GPU benchmark — {info['gpu']}" if cuda else "prefloop GPU benchmark — CPU smoke (code paths only, not a measurement)")
    print_table(rows, checks, f"{header}, {params / 1e6:.1f}M parameters, random weights")
    args.out.write_text(json.dumps({"machine": info, "params": params, "steps": steps, "rows": [asdict(r) for r in rows],
                                    "goals": checks}, indent=2))
    print(f"wrote {args.out} (library output: {log})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
