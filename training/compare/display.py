"""A comparison as people read it: tables in the terminal, a PNG, and a wandb table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefloop.atomic import atomic_path
from prefloop.stats import Estimate
from prefloop.text import show_number

from .runner import CompareResult


def _ci(iv: Estimate | None, scale: float = 1.0, digits: int = 3, suffix: str = "") -> str:
    if iv is None:
        return "–"
    f = f".{digits}f"
    return f"{iv.mean * scale:{f}}{suffix} [{iv.low * scale:{f}}, {iv.high * scale:{f}}]"


def _money(x: float) -> str:
    return show_number(x, ".4f" if abs(x) < 1 else ".2f")


def arms_table(r: CompareResult) -> Any:
    """Per arm: quality with 95 % intervals, latency, tokens, cost per 1,000 answers, one-off cost."""
    from rich.table import Table

    parts = sorted({p for a in r.arms for p in a.parts})
    seeds = ", ".join(map(str, r.seeds))
    t = Table(title=f"compare · round {r.round} · {r.prompts} eval prompts × {r.samples} sample(s) × seed(s) {seeds} · "
                    f"95 % bootstrap intervals over prompts and seeds")
    for col in ("arm", "oracle", *parts, "win vs base", "latency ms", "prompt tok", "completion tok",
                f"per 1,000 answers {r.currency}", f"one-off {r.currency}"):
        t.add_column(col, justify="left" if col == "arm" else "right")
    for a in r.arms:
        t.add_row(a.arm, _ci(a.oracle), *[_ci(a.parts.get(p)) for p in parts], _ci(a.win_vs_base, 100, 1, " %"),
                  f"{1000 * a.latency_s:.0f}" + (f" ({1000 * a.retrieval_s:.1f} retr.)" if a.retrieval_s else ""),
                  f"{a.prompt_tokens:.0f}", f"{a.completion_tokens:.1f}", _money(a.cost_per_1000), _money(a.one_off) if a.arm.startswith("ft") else "–")
    return t


def break_even_table(r: CompareResult) -> Any:
    from rich.table import Table

    measure = "oracle points" if r.quality == "oracle" else "win-rate points"
    t = Table(title=f"does fine-tuning pay for itself? (one-off {_money(r.one_off.total)} {r.currency}: rounds "
                    f"{', '.join(map(str, r.one_off.rounds)) or '–'}, {r.one_off.human_labels} human labels; quality in {measure})")
    for col in ("fine-tuned", "against", "quality gain", f"saving per 1,000 {r.currency}", "break-even", "reading"):
        t.add_column(col, justify="left" if col in ("fine-tuned", "against", "reading") else "right")
    for b in r.break_even:
        volume = f"{b.answers:,.0f} answers" if b.answers is not None else "never"
        t.add_row(b.tuned, b.alternative, f"{b.quality_gain:+.1f}", _money(1000 * (b.cost_alternative - b.cost_tuned)), volume,
                  b.explain(r.currency))
    return t


def plot(r: CompareResult, path: str | Path) -> Path:
    """Quality per arm (oracle and its parts, or the win rate) with intervals; cost per 1,000 answers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [a.arm for a in r.arms]
    series: list[tuple[str, list[Estimate | None]]] = []
    if r.quality == "oracle":
        series.append(("oracle", [a.oracle for a in r.arms]))
        for p in sorted({p for a in r.arms for p in a.parts}):
            series.append((p, [a.parts.get(p) for a in r.arms]))
    series.append(("win vs base", [a.win_vs_base for a in r.arms]))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [2, 1]})
    width = 0.8 / len(series)
    for i, (label, ivs) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(names))]
        means = [iv.mean if iv else 0.0 for iv in ivs]
        errs = [[iv.mean - iv.low if iv else 0.0 for iv in ivs], [iv.high - iv.mean if iv else 0.0 for iv in ivs]]
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=label)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set(title="quality (95 % intervals over prompts and seeds)", ylim=(0, 1), xticks=range(len(names)), xticklabels=names)
    ax.legend(fontsize=8)
    bx.bar(names, [a.cost_per_1000 for a in r.arms], color="tab:grey")
    bx.set(title=f"serving cost per 1,000 answers ({r.currency})")
    bx.tick_params(axis="x", labelrotation=20)
    fig.suptitle(f"prefloop compare: base, RAG, fine-tuned (round {r.round}), both")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def table_rows(r: CompareResult) -> list[dict[str, Any]]:
    """One flat row per arm (the wandb table, and what a spreadsheet takes)."""
    rows = []
    for a in r.arms:
        d = a.to_dict()
        row: dict[str, Any] = {"arm": a.arm, "answers": a.answers}
        for key in ("oracle", "win_vs_base"):
            iv = d[key] or {}
            row.update({key: iv.get("mean"), f"{key}_low": iv.get("low"), f"{key}_high": iv.get("high")})
        for p, iv in d["parts"].items():
            row.update({p: iv["mean"], f"{p}_low": iv["low"], f"{p}_high": iv["high"]})
        row.update({k: d[k] for k in ("latency_s", "retrieval_s", "prompt_tokens", "completion_tokens", "cost_per_1000", "one_off")})
        rows.append(row)
    return rows


def log_wandb(r: CompareResult, project: Any) -> str | None:
    """A wandb run (job type ``compare``, in the loop's group) with the arms table and the break-even rows."""
    from prefloop.text import finite_or_none

    from ..tracking import resolved_mode

    w = project.config.training.wandb
    mode = resolved_mode(w)
    if mode == "disabled":
        return None
    import wandb

    run_dir = Path(os.environ.get("WANDB_DIR") or project.runs_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=w.project, entity=w.entity, group=w.group or project.config.name, job_type="compare",
                     name=f"compare-round-{r.round}", dir=str(run_dir), mode=mode,  # type: ignore[arg-type]  # WANDB_MODE passes through: wandb takes "dryrun" and "run" too
                     reinit="finish_previous",
                     config={"round": r.round, "seeds": r.seeds, "samples": r.samples, "prompts": r.prompts, "rag": r.rag},
                     settings=wandb.Settings(console="off", silent=True, x_disable_stats=True))
    try:
        rows = table_rows(r)
        cols = list(dict.fromkeys(k for row in rows for k in row))
        run.log({"compare/arms": wandb.Table(columns=cols, data=[[finite_or_none(row.get(c)) for c in cols] for row in rows])})  # type: ignore[arg-type]  # wandb annotates columns as list[str | int]: invariant, so a list[str] is refused
        be = [b.to_dict() for b in r.break_even]
        if be:
            bcols = list(be[0])
            run.log({"compare/break_even": wandb.Table(columns=bcols, data=[[finite_or_none(x[c]) for c in bcols] for x in be])})  # type: ignore[arg-type]  # wandb annotates columns as list[str | int]: invariant, so a list[str] is refused
        for row in rows:
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and finite_or_none(v) is not None:
                    run.summary[f"compare/{row['arm']}/{k}"] = v
        return run.id
    finally:
        run.finish()
