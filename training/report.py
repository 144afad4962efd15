"""The per-round report: a table in the terminal and a PNG plot (win rate, oracle score, labels by
source, cost), plus the ROI table — what each round cost and what a point of win rate cost, by source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from prefloop.atomic import atomic_path
from prefloop.feedback.models import Round
from prefloop.project import Project
from prefloop.text import show_number

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
    trust: dict[str, Any] = field(default_factory=dict)  # judge → kind → record (metrics.trust)
    stopped: dict[str, Any] | None = None  # the stopping rule's decision (metrics.stopping), if it stopped

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
        rows.append(RoundRow(
            number=number, state=state, oracle=ev.get("oracle_score"),
            win_prev=(ev.get("vs_previous") or {}).get("win_rate"), win_base=(ev.get("vs_base") or {}).get("win_rate"),
            human_labels=cost.human_labels, judge_labels=cost.judge_labels,
            pairs=int((ds.get("dpo") or {}).get("rows", 0)), sft_rows=int((ds.get("sft") or {}).get("rows", 0)),
            human_cost=cost.human_cost, judge_cost=cost.judge_cost, compute_cost=cost.compute_cost,
            compute_seconds=cost.compute_seconds, human_seconds=cost.human_seconds,
            train_steps=sum(int(p.get("steps", 0)) for p in phases.values()),
            trust=dict(m.get("trust") or {}), stopped=m.get("stopping"),
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


def rounds_table(rows: list[RoundRow], currency: str = "USD") -> Any:
    """Per round: oracle score, win rates, labels by source, training data and steps, cost."""
    from rich.table import Table

    t = Table(title="rounds")
    for col in ("round", "state", "oracle", "win vs prev", "win vs r0", "human labels", "judge labels",
                "DPO pairs", "SFT rows", "steps", f"cost {currency}"):
        t.add_column(col, justify="left" if col == "state" else "right")
    for r in rows:
        t.add_row(str(r.number), r.state, _num(r.oracle), _pct(r.win_prev), _pct(r.win_base), str(r.human_labels),
                  str(r.judge_labels), str(r.pairs), str(r.sft_rows), str(r.train_steps), _money(r.total_cost))
    return t


def trust_table(rows: list[RoundRow]) -> Any:
    """Per round, judge and task kind: the judge's agreement with the human majority (running
    estimate, 95 % Wilson interval), its errors split into wrong side and blind ties, and its status."""
    from rich.table import Table

    t = Table(title="judge trust vs humans (all rounds so far; blind: its ties hide what humans decided)")
    for col in ("round", "judge", "kind", "n", "agree", "95 % interval", "wrong side", "blind ties", "status"):
        t.add_column(col, justify="left" if col in ("judge", "kind", "status") else "right")
    for r in rows:
        for judge, kinds in sorted(r.trust.items()):
            for kind, x in sorted(kinds.items()):
                status = x.get("status", "?") + (", blind" if x.get("blind") else "")
                interval = f"{_pct(x.get('low'))}–{_pct(x.get('high'))}" if x.get("low") is not None else _pct(None)
                t.add_row(str(r.number), judge[:24], kind, str(x.get("n", 0)), _pct(x.get("rate")), interval,
                          str(x.get("wrong_side", 0)), str(x.get("blind_ties", 0)), status)
    return t


def stopping_lines(rows: list[RoundRow]) -> list[str]:
    """One line per round where the cost-aware stopping rule (judges.stopping) held people back."""
    out = []
    for r in rows:
        st = r.stopped
        if st and (st.get("not_asked") or st.get("stopped")):
            out.append(f"round {r.number}: stopping rule ({st.get('rule')}): asked about {st.get('asked')} task(s), "
                       f"not about {st.get('not_asked')} (best of them worth {_money(st.get('max_value_not_asked'))} < price "
                       f"{_money(st.get('price'))})" + (f", stopped after {st.get('at_labels')} label(s)" if st.get("stopped") else ""))
    return out


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
        pts = [(r.number, 100 * getattr(r, attr)) for r in rows if getattr(r, attr) is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=label)
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.set(title="judge win rate (position-swapped)", xlabel="round", ylabel="%", ylim=(0, 100))
    ax.legend(loc="lower right")
    ax = axes[0][1]
    pts = [(r.number, r.oracle) for r in rows if r.oracle is not None]
    if pts:
        ax.plot(*zip(*pts, strict=True), marker="o", color="tab:green")
    ax.set(title="oracle score (eval prompts)", xlabel="round", ylabel="mean score", ylim=(0, 1))
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
