"""The per-round report: a table in the terminal and a PNG plot (win rate, oracle score, labels by
source, cost), plus the ROI table — what each round cost and what a point of win rate cost, by source.

Evaluation numbers come with their 95 % bootstrap interval over the eval prompts ("0.719 [0.65,
0.78]", error bars in the plot); a change since the previous round whose interval includes 0, and
a win rate whose interval includes 50 %, are marked ≈ (within the noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from prefloop.atomic import atomic_path
from prefloop.feedback.models import Round
from prefloop.project import Project
from prefloop.text import NA, show_number

from .roi import cost_per_point, round_cost
from .rounds.state import RoundState


@dataclass
class RoundRow:
    number: int
    state: str
    oracle: float | None
    win_prev: float | None
    win_base: float | None
    human_labels: int
    judge_labels: int
    pairs: int
    sft_rows: int
    human_cost: float
    judge_cost: float
    compute_cost: float
    compute_seconds: float
    human_seconds: float
    train_steps: int
    # 95 % intervals over eval prompts ([lo, hi]; None: fewer than two prompts, or a round evaluated before intervals)
    oracle_ci: list[float] | None = None
    win_prev_ci: list[float] | None = None
    win_base_ci: list[float] | None = None
    #: the oracle score's change since the previous round (paired per prompt), its interval, and
    #: whether that interval includes 0.
    oracle_change: float | None = None
    oracle_change_ci: list[float] | None = None
    oracle_change_noise: bool | None = None

    @property
    def total_cost(self) -> float:
        return self.human_cost + self.judge_cost + self.compute_cost


def collect(project: Project) -> list[RoundRow]:
    """One row per round, from the store (metrics recorded by the orchestrator, costs recomputed)."""
    with project.store.session() as s:
        rounds = [(r.id, r.number, r.state, dict(r.metrics or {}), RoundState.of(r).seconds)
                  for r in s.scalars(select(Round).order_by(Round.number))]
    rows = []
    for rid, number, state, m, seconds in rounds:
        ev = m.get("eval") or {}
        cost = round_cost(project.store, rid, project.config.cost, seconds=seconds, eval_judge_cost=ev.get("judge_cost") or 0.0)
        ds = m.get("datasets") or {}
        phases = (m.get("training") or {}).get("phases") or {}
        prev, base = ev.get("vs_previous") or {}, ev.get("vs_base") or {}
        change = (ev.get("oracle_change") or {}).get("vs_previous") or {}
        rows.append(RoundRow(
            number=number, state=state, oracle=ev.get("oracle_score"),
            win_prev=prev.get("win_rate"), win_base=base.get("win_rate"),
            oracle_ci=ev.get("oracle_score_ci"), win_prev_ci=prev.get("win_rate_ci"), win_base_ci=base.get("win_rate_ci"),
            oracle_change=change.get("diff"), oracle_change_ci=change.get("ci"), oracle_change_noise=change.get("within_noise"),
            human_labels=cost.human_labels, judge_labels=cost.judge_labels,
            pairs=int((ds.get("dpo") or {}).get("rows", 0)), sft_rows=int((ds.get("sft") or {}).get("rows", 0)),
            human_cost=cost.human_cost, judge_cost=cost.judge_cost, compute_cost=cost.compute_cost,
            compute_seconds=cost.compute_seconds, human_seconds=cost.human_seconds,
            train_steps=sum(int(p.get("steps", 0)) for p in phases.values()),
        ))
    return rows


def _pct(x: float | None) -> str:
    return show_number(x, ".1f", scale=100, suffix="%")


def _num(x: float | None, digits: int = 3) -> str:
    return show_number(x, f".{digits}f")


def _money(x: float | None) -> str:
    if x == 0:
        return "0"
    return show_number(x, ".4f" if x is not None and abs(x) < 1 else ".2f")


def _interval(ci: list[float] | None, spec: str, scale: float = 1.0) -> str:
    return f"[{NA}]" if ci is None else f"[{ci[0] * scale:{spec}}, {ci[1] * scale:{spec}}]"


def oracle_cell(value: float | None, ci: list[float] | None) -> str:
    """``0.719 [0.65, 0.78]``."""
    return NA if value is None else f"{_num(value)} {_interval(ci, '.2f')}"


def win_cell(rate: float | None, ci: list[float] | None) -> str:
    """``62.5% [51, 74]``; ``≈ 52.0% [40, 64]`` when the interval includes 50 %."""
    if rate is None:
        return NA
    noise = ci is not None and ci[0] <= 0.5 <= ci[1]
    return f"{'≈ ' if noise else ''}{_pct(rate)} {_interval(ci, '.0f', 100)}"


def change_cell(diff: float | None, ci: list[float] | None, within_noise: bool | None) -> str:
    """``+0.240 [+0.10, +0.38]``; ``≈ +0.010 (within noise)`` when the interval includes 0."""
    if diff is None:
        return NA
    if within_noise:
        return f"≈ {diff:+.3f} (within noise)"
    return f"{diff:+.3f} {_interval(ci, '+.2f')}"


def rounds_table(rows: list[RoundRow], currency: str = "USD") -> Any:
    """Per round: oracle score and win rates with their intervals, the oracle score's change since
    the previous round, labels by source, training data and steps, cost."""
    from rich.table import Table

    t = Table(title="rounds", caption="[…]: 95 % bootstrap interval over the eval prompts; "
                                      "≈: within the noise (the interval includes no change, or a 50 % win rate)")
    for col in ("round", "state", "oracle", "Δ oracle vs prev", "win vs prev", "win vs r0", "human labels",
                "judge labels", "DPO pairs", "SFT rows", "steps", f"cost {currency}"):
        t.add_column(col, justify="left" if col == "state" else "right")
    for r in rows:
        t.add_row(str(r.number), r.state, oracle_cell(r.oracle, r.oracle_ci),
                  change_cell(r.oracle_change, r.oracle_change_ci, r.oracle_change_noise),
                  win_cell(r.win_prev, r.win_prev_ci), win_cell(r.win_base, r.win_base_ci), str(r.human_labels),
                  str(r.judge_labels), str(r.pairs), str(r.sft_rows), str(r.train_steps), _money(r.total_cost))
    return t


def roi_table(rows: list[RoundRow], currency: str = "USD") -> Any:
    """Cost by source per round, and what one point of win rate over the previous round cost, by source."""
    from rich.table import Table

    t = Table(title=f"cost by source ({currency}); per point = per point of win rate above 50 % vs the previous round")
    for col in ("round", "human min", "human", "judges", "compute min", "compute", "total",
                "per point: human", "judges", "compute", "total"):
        t.add_column(col, justify="right")
    for r in rows:
        if r.number == 0:
            continue
        t.add_row(
            str(r.number), f"{r.human_seconds / 60:.1f}", _money(r.human_cost), _money(r.judge_cost),
            f"{r.compute_seconds / 60:.1f}", _money(r.compute_cost), _money(r.total_cost),
            *[_money(cost_per_point(c, r.win_prev)) for c in (r.human_cost, r.judge_cost, r.compute_cost, r.total_cost)],
        )
    return t


def _with_error_bars(ax: Any, points: list[tuple[int, float | None, list[float] | None]], scale: float, **style: Any) -> None:
    """A line of (x, value, interval) points with asymmetric error bars (none where the interval is unknown)."""
    pts = [(x, y * scale, ci) for x, y, ci in points if y is not None]
    if not pts:
        return
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    below = [0.0 if ci is None else max(0.0, y - ci[0] * scale) for _, y, ci in pts]
    above = [0.0 if ci is None else max(0.0, ci[1] * scale - y) for _, y, ci in pts]
    ax.errorbar(xs, ys, yerr=[below, above], marker="o", capsize=4, **style)


def plot(rows: list[RoundRow], path: str | Path, currency: str = "USD") -> Path:
    """A 2×2 figure: win rates, oracle score, labels by source, cost by source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = [r.number for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    ax = axes[0][0]
    for attr, label in (("win_prev", "vs previous round"), ("win_base", "vs round 0")):
        _with_error_bars(ax, [(r.number, getattr(r, attr), getattr(r, f"{attr}_ci")) for r in rows], 100, label=label)
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.set(title="judge win rate (position-swapped), 95 % interval", xlabel="round", ylabel="%", ylim=(0, 100))
    ax.legend(loc="lower right")
    ax = axes[0][1]
    _with_error_bars(ax, [(r.number, r.oracle, r.oracle_ci) for r in rows], 1, color="tab:green")
    ax.set(title="oracle score (eval prompts), 95 % interval", xlabel="round", ylabel="mean score", ylim=(0, 1))
    ax = axes[1][0]
    ax.bar(x, [r.human_labels for r in rows], label="human", color="tab:orange")
    ax.bar(x, [r.judge_labels for r in rows], bottom=[r.human_labels for r in rows], label="judge", color="tab:blue")
    ax.set(title="labels by source", xlabel="round", ylabel="labels")
    ax.legend()
    ax = axes[1][1]
    bottom = [0.0] * len(rows)
    for attr, label, color in (("human_cost", "human", "tab:orange"), ("judge_cost", "judges", "tab:blue"),
                               ("compute_cost", "compute", "tab:grey")):
        vals = [getattr(r, attr) for r in rows]
        ax.bar(x, vals, bottom=bottom, label=label, color=color)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set(title="cost by source", xlabel="round", ylabel=currency)
    ax.legend()
    for a in axes.flat:
        a.set_xticks(x)
    fig.suptitle("prefloop: rounds of feedback and training")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
