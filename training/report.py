"""The per-round report: a table in the terminal and a PNG plot (win rate, oracle score, labels by
source, cost), plus the ROI table — what each round cost and what a point of win rate cost, by source.

Evaluation numbers come with their 95 % bootstrap interval over the eval prompts ("0.719 [0.65,
0.78]", error bars in the plot); a change since the previous round whose interval includes 0, and
a win rate whose interval includes 50 %, are marked ≈ (within the noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from prefloop.feedback.store.models import Round
from prefloop.project import Project
from prefloop.tables import FirstThatFits, Kind, fit, table
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
    """``+0.240 [+0.10, +0.38]``; ``≈ +0.010`` (within the noise) when the interval includes 0."""
    if diff is None:
        return NA
    if within_noise:
        return f"≈ {diff:+.3f}"  # the table's caption says what ≈ means
    return f"{diff:+.3f} {_interval(ci, '+.2f')}"


def rounds_table(rows: list[RoundRow], currency: str = "USD") -> Any:
    """Per round: oracle score and win rates with their 95 % intervals, the oracle score's change
    since the previous round, labels by source, training data and steps, cost — one table where it
    fits, else two (quality; labels, data and cost). A round still under way is marked ``*`` and
    named in the caption with its state (a column of "done" would cost the numbers their width)."""
    from rich.console import Group

    unfinished = [f"round {r.number} is {r.state}" for r in rows if r.state != "done"]
    notes = ["[lo, hi]: 95 % bootstrap interval over the eval prompts; ≈: within the noise (the interval "
             "includes no change, or a 50 % win rate)"]
    if unfinished:
        notes.append("* not finished: " + "; ".join(unfinished))
    quality: list[tuple[str, Kind]] = [("round", "number"), ("oracle", "number"), ("Δ oracle\nvs prev", "number"),
                                       ("win vs\nprev", "number"), ("win vs\nr0", "number")]
    volume: list[tuple[str, Kind]] = [("human\nlabels", "number"), ("judge\nlabels", "number"), ("DPO\npairs", "number"),
                                      ("SFT\nrows", "number"), ("train\nsteps", "number"), (f"cost\n{currency}", "number")]
    both = table("rounds", quality + volume, caption="\n".join(notes))
    first = table("rounds: quality", quality, caption="\n".join(notes))
    second = table("rounds: labels, data, cost", [("round", "number"), *volume])
    for r in rows:
        number = str(r.number) + ("*" if r.state != "done" else "")
        q = [oracle_cell(r.oracle, r.oracle_ci), change_cell(r.oracle_change, r.oracle_change_ci, r.oracle_change_noise),
             win_cell(r.win_prev, r.win_prev_ci), win_cell(r.win_base, r.win_base_ci)]
        v = [str(r.human_labels), str(r.judge_labels), str(r.pairs), str(r.sft_rows), str(r.train_steps), _money(r.total_cost)]
        both.add_row(number, *q, *v)
        first.add_row(number, *q)
        second.add_row(number, *v)
    return FirstThatFits(fit(both), Group(fit(first), fit(second)))


def trust_table(rows: list[RoundRow]) -> Any:
    """Per round, judge and task kind: the judge's agreement with the human majority (running
    estimate, 95 % Wilson interval), its errors split into wrong side and blind ties, and its status."""
    t = table("judge trust vs humans (all rounds so far; blind: its ties hide what humans decided)",
              [("round", "number"), ("judge", "text"), ("kind", "text"), ("n", "number"), ("agree", "number"),
               ("95 %\ninterval", "number"), ("wrong\nside", "number"), ("blind\nties", "number"), ("status", "text")])
    for r in rows:
        for judge, kinds in sorted(r.trust.items()):
            for kind, x in sorted(kinds.items()):
                status = x.get("status", "?") + (", blind" if x.get("blind") else "")
                interval = f"{_pct(x.get('low'))}–{_pct(x.get('high'))}" if x.get("low") is not None else _pct(None)
                t.add_row(str(r.number), judge, kind, str(x.get("n", 0)), _pct(x.get("rate")), interval,
                          str(x.get("wrong_side", 0)), str(x.get("blind_ties", 0)), status)
    return fit(t)


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
    """Cost by source per round, and what one point of win rate over the previous round cost, by
    source: one table where the console is wide enough, else two, one above the other."""
    from rich.console import Group

    spent_columns: list[tuple[str, Kind]] = [("round", "number"), ("human\nminutes", "number"), ("human", "number"),
                                             ("judges", "number"), ("compute\nminutes", "number"), ("compute", "number"),
                                             ("total", "number")]
    point_columns: list[tuple[str, Kind]] = [("human", "number"), ("judges", "number"), ("compute", "number"), ("total", "number")]
    both = table(f"cost by source ({currency}), and per point of win rate above 50 % vs the previous round",
                 [*spent_columns, *((f"per point\n{h}", k) for h, k in point_columns)])
    spent = table(f"cost by source ({currency})", spent_columns)
    per_point = table(f"cost per point of win rate above 50 % ({currency})",
                      [("round", "number"), ("win vs\nprev", "number"), *point_columns])
    for r in rows:
        if r.number == 0:
            continue
        costs = [f"{r.human_seconds / 60:.1f}", _money(r.human_cost), _money(r.judge_cost), f"{r.compute_seconds / 60:.1f}",
                 _money(r.compute_cost), _money(r.total_cost)]
        points = [_money(cost_per_point(c, r.win_prev)) for c in (r.human_cost, r.judge_cost, r.compute_cost, r.total_cost)]
        both.add_row(str(r.number), *costs, *points)
        spent.add_row(str(r.number), *costs)
        per_point.add_row(str(r.number), _pct(r.win_prev), *points)
    return FirstThatFits(fit(both), Group(fit(spent), fit(per_point)))


def _line(ax: Any, rows: list[RoundRow], attr: str, *, scale: float, fmt: str, label: str | None = None,
          color: str | None = None, below: bool = False) -> None:
    """A round-by-round line with its 95 % intervals as error bars and each point's value written by it (under it with ``below``, so that
    two lines through one point keep both labels) and ``n/a`` where a round has none."""
    from prefloop.plots import MISSING_STYLE

    pts = [(r.number, scale * getattr(r, attr)) for r in rows if getattr(r, attr) is not None]
    if pts:
        xs, ys = zip(*pts, strict=True)
        cis = [getattr(r, f"{attr}_ci", None) for r in rows if getattr(r, attr) is not None]
        below_err = [0.0 if ci is None else max(0.0, y - ci[0] * scale) for (_, y), ci in zip(pts, cis, strict=True)]
        above_err = [0.0 if ci is None else max(0.0, ci[1] * scale - y) for (_, y), ci in zip(pts, cis, strict=True)]
        drawn = ax.errorbar(xs, ys, yerr=[below_err, above_err], marker="o", capsize=4, label=label, color=color)
        color = drawn.lines[0].get_color()
        for x, y in pts:
            ax.annotate(format(y, fmt), (x, y), xytext=(0, -6 if below else 6), textcoords="offset points", ha="center",
                        va="top" if below else "bottom", fontsize=7, color=color)
    for r in rows:
        if getattr(r, attr) is None:
            ax.annotate(NA + (f" ({label})" if label else ""), (r.number, 0.0), xycoords=ax.get_xaxis_transform(),
                        xytext=(0, 14 if below else 3), textcoords="offset points", ha="center", va="bottom", fontsize=7,
                        **MISSING_STYLE)


def report_figure(rows: list[RoundRow], currency: str = "USD") -> Any:
    """A 2×2 figure: win rates, oracle score, labels by source, cost by source. Bars carry their
    values; a cost or label count that dwarfs another puts its panel on a logarithmic axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prefloop.plots import grouped_bars

    x = [r.number for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), layout="constrained")
    below = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.16), "ncol": 3, "frameon": False, "fontsize": 8}
    ax = axes[0][0]
    _line(ax, rows, "win_prev", scale=100, fmt=".1f", label="vs previous round")
    _line(ax, rows, "win_base", scale=100, fmt=".1f", label="vs round 0", below=True)
    ax.axhline(50, color="grey", lw=0.8, ls="--", label="50 % (no change)")
    ax.set(title="judge win rate on eval prompts (both orders), 95 % interval", xlabel="round", ylabel="win rate (%)", ylim=(0, 108))
    ax.legend(**below)
    ax = axes[0][1]
    _line(ax, rows, "oracle", scale=1, fmt=".3f", color="tab:green")
    ax.set(title="oracle score (eval prompts), 95 % interval", xlabel="round", ylabel="mean score (0–1)", ylim=(0, 1.08))
    ax = axes[1][0]
    grouped_bars(ax, x, [("human", [r.human_labels for r in rows], "tab:orange"),
                         ("judge", [r.judge_labels for r in rows], "tab:blue")], fmt="{:.0f}".format)
    log = " (log scale)" if ax.get_yscale() == "log" else ""
    ax.set(title="labels by source", xlabel="round", ylabel=f"labels{log}")
    ax.legend(**below)
    ax = axes[1][1]
    grouped_bars(ax, x, [("human", [r.human_cost for r in rows], "tab:orange"),
                         ("judges", [r.judge_cost for r in rows], "tab:blue"),
                         ("compute", [r.compute_cost for r in rows], "tab:grey")],
                 fmt=lambda v: "0.00" if v == 0 else _money(v))
    log = " (log scale)" if ax.get_yscale() == "log" else ""
    ax.set(title="cost by source", xlabel="round", ylabel=f"{currency}{log}")
    ax.legend(**below)
    for a in axes.flat:
        a.set_xticks(x)
        if x:
            a.set_xlim(min(x) - 0.6, max(x) + 0.6)
    fig.suptitle("prefloop: rounds of feedback and training")
    return fig


def plot(rows: list[RoundRow], path: str | Path, currency: str = "USD") -> Path:
    """:func:`report_figure` as a PNG (written atomically)."""
    from prefloop.plots import save_figure

    return save_figure(report_figure(rows, currency), path, dpi=110)
