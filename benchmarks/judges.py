"""Local judge throughput: judged pairs per second, one by one vs batched, on CPU.

Every pair is judged in both orders (two model inputs). Four ways, same verdicts (checked):

- one input at a time: a forward pass per judge input (``batch_size: 1``, ``share_prefix: false``),
  one ``compare`` call per pair — the naive loop;
- one pair per call: ``compare`` per pair with ``batch_size: 1``; the pair's two orders still share
  the template's beginning (rubric, examples, request);
- batched, no prefix: all pairs in one call, ``batch_size`` inputs per forward pass, padding only;
- batched: all pairs in one call, the shared beginning run once and its KV cache reused.

    OMP_NUM_THREADS=1 python benchmarks/judges.py                       # tiny + SmolLM2-135M
    OMP_NUM_THREADS=1 python benchmarks/judges.py --models tiny:llama-tiny --pairs 64
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

TOPICS = ["photosynthesis", "the French revolution", "binary search", "tides", "vaccines", "inflation", "volcanoes", "TCP handshakes"]
EXAMPLES = [
    {"prompt": "What is 12 × 3?", "a": "36.", "b": "It is 38, since 12 × 3 = 38.", "answer": "A", "reason": "A is correct; B miscalculates."},
    {"prompt": "Name the largest planet.", "a": "Saturn is the largest.", "b": "Jupiter.", "answer": "B", "reason": "Jupiter is the largest planet."},
]

LONG_RUBRIC = (
    "You grade answers for a science-education site read by children. Judge, in this order: (1) factual correctness — "
    "any false statement is a serious fault; (2) whether the answer does what was asked, at the requested length; "
    "(3) clarity for a twelve-year-old: short sentences, no jargon without an explanation; (4) tone: friendly, never "
    "condescending. Hedging such as 'I am not sure' is a fault when the facts are well known. Do not reward length "
    "for its own sake, and ignore formatting unless it hurts readability."
)
EXTRA_EXAMPLES = [
    {"prompt": "Why is the sky blue?", "a": "Sunlight scatters off air molecules, and blue light scatters the most, so blue reaches our eyes from all over the sky.",
     "b": "Because the sea reflects onto it.", "answer": "A", "reason": "B states a common myth."},
    {"prompt": "What do bees make?", "a": "Bees make honey and beeswax. Honey is food they store for winter.",
     "b": "Honey.", "answer": "A", "reason": "A is complete and still short."},
]
TEMPLATES = {
    "rubric": {},
    "rubric + 2 examples": {"examples": EXAMPLES},
    "long rubric + 4 examples": {"examples": EXAMPLES + EXTRA_EXAMPLES, "rubric": LONG_RUBRIC},
}


def make_pairs(n: int) -> tuple[list, list, list]:
    prompts, a, b = [], [], []
    for i in range(n):
        t = TOPICS[i % len(TOPICS)]
        prompts.append([{"role": "user", "content": f"Explain {t} to a twelve-year-old in two sentences. (#{i})"}])
        a.append(f"{t.capitalize()} is a process that scientists study. It matters because it shapes the world around us in many ways.")
        b.append(f"Short answer: {t} is complicated. I am not sure, but it might be related to energy, history or chance — ask a teacher.")
    return prompts, a, b


def run(model: str, n: int, batch_size: int, template: str, repeats: int) -> dict:
    from prefloop.judges import build_judge

    base = {"name": "bench", "backend": "local", "model": model, **TEMPLATES[template]}
    naive = build_judge({**base, "batch_size": 1, "share_prefix": False})
    one = build_judge({**base, "batch_size": 1})
    batched = build_judge({**base, "batch_size": batch_size})
    plain = build_judge({**base, "batch_size": batch_size, "share_prefix": False})
    prompts, a, b = make_pairs(n)
    one.compare(prompts[:1], a[:1], b[:1])  # load the model and warm up
    for j in (naive, batched, plain):  # one copy of the model in memory
        j._tok, j._model = one._tok, one._model
    batched.compare(prompts[:2], a[:2], b[:2])

    def best_of(fn, repeats: int):  # noqa: ANN001, ANN202 - the fastest of a few runs: least disturbed by other load
        best, out = float("inf"), None
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
        return best, out

    t_naive, inputs = best_of(lambda: [naive.compare([p], [x], [y])[0] for p, x, y in zip(prompts, a, b, strict=True)], repeats)
    t_one, singles = best_of(lambda: [one.compare([p], [x], [y])[0] for p, x, y in zip(prompts, a, b, strict=True)], repeats)
    t_batch, together = best_of(lambda: batched.compare(prompts, a, b), repeats)
    t_plain, padded = best_of(lambda: plain.compare(prompts, a, b), repeats)

    runs = list(zip(inputs, singles, together, padded, strict=True))
    worst = max(max(abs(r[0].prob_a - o.prob_a) for o in r[1:]) for r in runs)
    same = all(len({o.winner for o in r}) == 1 for r in runs)
    tokens = one.encode(one.pairwise_messages(prompts[0], a[0], b[0]))
    shared = 0
    other = one.encode(one.pairwise_messages(prompts[1], b[1], a[1]))
    while shared < min(len(tokens), len(other)) and tokens[shared] == other[shared]:
        shared += 1
    return {
        "model": model, "template": template, "pairs": n, "tokens": len(tokens), "prefix": shared,
        "naive": n / t_naive, "one": n / t_one, "batched": n / t_batch, "plain": n / t_plain, "same": same, "max_dp": worst,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny:llama-tiny,offline:smollm2-135m-instruct")
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="time each mode this many times and keep the fastest")
    args = ap.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows = []
    for model in args.models.split(","):
        for template in TEMPLATES:
            rows.append(run(model, args.pairs, args.batch_size, template, args.repeats))
            Console(stderr=True).print(f"done: {model}, {template}")
    table = Table(title=f"Local judge, judged pairs/s on CPU ({torch.get_num_threads()} thread(s), batch {args.batch_size}, "
                        f"{args.pairs} pairs, both orders each, best of {args.repeats})")
    for col in ("model", "template", "tokens/input", "shared prefix", "one input at a time", "one pair per call",
                "batched, no prefix", "batched", "speed-up vs input / pair", "verdicts equal"):
        table.add_column(col, justify="left" if col in ("model", "template") else "right")
    for r in rows:
        table.add_row(
            r["model"], r["template"], str(r["tokens"]), str(r["prefix"]),
            f"{r['naive']:.2f}", f"{r['one']:.2f}", f"{r['plain']:.2f}", f"{r['batched']:.2f}",
            f"{r['batched'] / r['naive']:.1f}× / {r['batched'] / r['one']:.1f}×",
            f"{'yes' if r['same'] else 'NO'} (|ΔP| ≤ {r['max_dp']:.1e})",
        )
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
