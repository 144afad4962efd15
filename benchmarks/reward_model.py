"""What the reward-model judge costs a round: training it (TRL RewardTrainer, LoRA on a
sequence-classification head) on a round's worth of human pairs, and scoring the tasks no human
answered. Demo sizes: SmolLM2-135M-Instruct (offline), pairs like the support desk's (corrected
reply vs original), epochs 2, batch 4, LoRA r 8, max length 256. Prints a table per pair count.

    OMP_NUM_THREADS=1 python benchmarks/reward_model.py                  # 24 pairs, 3 repeats
    OMP_NUM_THREADS=1 python benchmarks/reward_model.py --pairs 24,48 --repeats 2
    OMP_NUM_THREADS=1 python benchmarks/reward_model.py --model tiny:llama-tiny
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def demo_pairs(n: int) -> dict[str, list]:
    """``n`` support-desk pairs (the style guide's fix of a reply over the reply), as the round builds them."""
    from prefloop.training.demo import data_path, fix_reply
    from prefloop.training.reward_model import COLUMNS

    rows = [json.loads(line) for line in data_path().read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["split"] == "train"]
    raw = ["I'm sorry to hear that. We are looking into it and will get back to you soon.",
           "The customer is frustrated because the order did not arrive which is a significant issue for the team."]
    out: dict[str, list] = {c: [] for c in COLUMNS}
    for i in range(n):
        r, bad = rows[i % len(rows)], raw[i % len(raw)]
        for c, v in zip(COLUMNS, (r["messages"], [{"role": "assistant", "content": fix_reply(r["meta"], bad)}],
                                  [{"role": "assistant", "content": bad}], str(i), "majority", "human", 1), strict=True):
            out[c].append(v)
    return out


def one_run(model: str, n: int, folder: Path, score_tasks: int) -> dict[str, float]:
    import torch
    from datasets import Dataset

    from prefloop.judges.config import JudgeSpec
    from prefloop.judges.reward_model import RewardModelJudge, TrainedRewardModel
    from prefloop.training.reward_model import train_reward_model

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    spec = JudgeSpec(name="rm", backend="reward_model", model=model, epochs=2, train_batch_size=4, train_max_length=256)
    rows = demo_pairs(n)
    start, cpu = time.perf_counter(), time.process_time()
    res = train_reward_model(spec, model, Dataset.from_dict(rows), folder / "rm")
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    judge = RewardModelJudge(spec, adapter=TrainedRewardModel(Path(res.adapter_dir), "bench", model))
    prompts = [rows["prompt"][i % n] for i in range(score_tasks)]
    a = [rows["chosen"][i % n][0]["content"] for i in range(score_tasks)]
    b = [rows["rejected"][i % n][0]["content"] for i in range(score_tasks)]
    start = time.perf_counter()
    verdicts = judge.compare(prompts, a, b)
    scoring = time.perf_counter() - start
    return {"steps": res.steps, "train_s": res.train_seconds, "load_and_train_s": total, "cpu_s": cpu, "scoring_s": scoring,
            "loss": res.metrics.get("loss", float("nan")), "agree": sum(v.winner == "A" for v in verdicts) / len(verdicts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="offline:smollm2-135m-instruct")
    ap.add_argument("--pairs", default="24")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--score-tasks", type=int, default=36, help="compare tasks to label (the demo: 48 candidates → 36 pairs)")
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    print("| pairs | steps | train (s), runs | median | load+train (s) | its CPU time (s) | s/step | scoring tasks | scoring (s) | last loss |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for n in (int(x) for x in args.pairs.split(",")):
        runs = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                runs.append(one_run(args.model, n, Path(tmp), args.score_tasks))
        train = [r["train_s"] for r in runs]
        med = statistics.median(train)
        print(f"| {n} | {runs[0]['steps']} | {', '.join(f'{x:.1f}' for x in train)} | {med:.1f} | "
              f"{statistics.median(r['load_and_train_s'] for r in runs):.1f} | {statistics.median(r['cpu_s'] for r in runs):.1f} | "
              f"{med / runs[0]['steps']:.2f} | {args.score_tasks} | "
              f"{statistics.median(r['scoring_s'] for r in runs):.1f} | {runs[-1]['loss']:.3f} |", flush=True)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
