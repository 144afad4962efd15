"""benchmarks/gpu.py's CPU-sized variant (tiny Qwen2-shaped model, a few steps): the GPU benchmark's
code paths — model and tokenizer built offline, plain TRL vs prefloop's training path with the GPU
presets, generation through prefloop's sampling path, goals, table and JSON — so it cannot rot."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_cpu_smoke(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--cpu-smoke", "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    data = json.loads(out.read_text())
    rows = {(r["case"], r["phase"]): r for r in data["rows"]}
    for key in [("plain-trl", "sft"), ("plain-trl", "dpo"), ("prefloop-lora-bf16", "sft"), ("prefloop-lora-bf16", "dpo"),
                ("prefloop-lora-bf16-nopack", "sft"), ("generate-transformers", "generation")]:
        r = rows[key]
        assert r["status"] == "ok", (key, r["status"], out.with_suffix(".log").read_text()[-3000:])
        assert r["tokens_per_s"] > 0 and math.isfinite(r["tokens_per_s"]) and r["steps"] > 0, key
    assert rows[("prefloop-lora-bf16", "sft")]["step_s"] > 0
    # The CUDA-only cases say why they did not run; nothing pretends to be a GPU figure.
    assert rows[("prefloop-qlora", "sft")]["status"].startswith("skipped")
    assert rows[("generate-vllm", "generation")]["status"].startswith("skipped")
    assert all(r["mfu"] is None and r["peak_mem_gb"] is None for r in data["rows"])
    # The preset's CPU fallbacks are recorded on its rows, and the goals are all listed.
    assert any("float32" in n for n in rows[("prefloop-lora-bf16", "sft")]["notes"])
    assert len(data["goals"]) == 5 and data["machine"]["cuda"] is False
    assert "CPU smoke" in run.stdout and "goal" in run.stdout
    assert "'loss'" not in run.stdout  # the trainers' own log lines go to the log file
    assert "'loss'" in out.with_suffix(".log").read_text()
