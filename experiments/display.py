"""The experiment's table (fits 80 columns: arm names wrap, numbers never do) and its PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefloop.stats import Estimate
from prefloop.text import show_number

from .results import ExperimentResults
from .sidebyside import SideBySide


def _score(e: Estimate | None) -> str:
    return "n/a" if e is None else f"{e.mean:.3f}\n{e.low:.2f}–{e.high:.2f}"


def _rate(e: Estimate | None) -> str:
    return "–" if e is None else f"{100 * e.mean:.0f}%\n{100 * e.low:.0f}–{100 * e.high:.0f}"


def _money(x: float | None) -> str:
    if x is None:
        return "n/a"
    return "0" if x == 0 else f"{x:.2f}" if abs(x) >= 1 else f"{x:.4f}"


def results_table(res: ExperimentResults) -> Any:
    """Per arm and round: oracle score and win rates (mean over seeds, 95 % interval under it), the
    mark against the reference arm, and labels, minutes, judge tokens, compute and cost (means)."""
    from rich import box
    from rich.table import Table

    s = res.spec
    pct = round(100 * s.bootstrap.confidence)
    t = Table(
        title=f"experiment {s.name} · task {s.task} · {len(s.seeds)} seed(s)",
        caption=(f"oracle and win rates: mean over seeds, {pct} % interval below (bootstrap over seeds, then prompts). "
                 f"Δ vs {s.reference_arm} in the same round: ≈ within noise (intervals overlap), ▲ / ▼ better / worse. "
                 f"Counts and costs ({res.currency}): means per run."),
        box=box.SIMPLE_HEAD, show_edge=False, padding=0, title_justify="left",
        caption_justify="left",
    )
    rows = []
    previous = None
    for a in res.arms:
        m = a.means
        rows.append((a.arm != previous, [
            a.arm if a.arm != previous else "", str(a.round), _score(a.oracle), a.vs_reference or "–", _rate(a.win_base),
            _rate(a.win_prev), show_number(m["human_labels"], ".0f"), show_number(m["human_minutes"], ".1f"),
            show_number(m["judge_tokens"], ".0f"), show_number(m["compute_minutes"], ".1f"), _money(m["cost"]),
        ]))
        previous = a.arm
    headers = ["arm", "rnd", "oracle", "Δ", "win\nvs r0", "win\nvs prev", "human\nlabels", "human\nmin", "judge\ntokens",
               "compute\nmin", "cost"]
    for i, name in enumerate(headers):
        if i == 0:  # the one text column: it wraps when the terminal is narrow
            t.add_column(name, overflow="fold", min_width=6)
            continue
        widest = max([len(line) for _, cells in rows for line in cells[i].splitlines()] + [len(x) for x in name.splitlines()])
        t.add_column(name, justify="right", overflow="fold", min_width=widest)
    for first, cells in rows:
        if first and t.row_count:
            t.add_section()
        t.add_row(*cells)
    return t


def efficiency_table(res: ExperimentResults) -> Any:
    """Per arm and target: the first round whose mean oracle score reaches it, and what rounds 1…it
    cost; an arm not reaching it says how far it has run (an unfinished experiment is not a miss)."""
    from prefloop.tables import fit, table

    t = table("label efficiency: spent until the mean oracle score first reaches the target",
              [("arm", "id"), ("target", "number"), ("reached at", "text"), ("human\nlabels", "number"),
               ("human\nmin", "number"), (f"cost\n{res.currency}", "number")], title_justify="left")
    for e in res.efficiency:
        if e.round is None:
            done = max((a.round for a in res.arms if a.arm == e.arm and a.oracle is not None), default=0)
            reached = ("not run yet" if done == 0 else f"not by round {done}" if done < res.spec.rounds
                       else f"not in {done} rounds")
            t.add_row(e.arm, f"{e.target:.2f}", reached, "–", "–", "–")
        else:
            t.add_row(e.arm, f"{e.target:.2f}", f"round {e.round}", f"{e.human_labels:.0f}", f"{e.human_minutes:.1f}",
                      _money(e.cost))
    return fit(t)


def plot(res: ExperimentResults, path: str | Path) -> Path:
    """Left: oracle score per round per arm, with its interval as a band. Right: cost vs score
    (cumulative cost of rounds 1…N against round N's oracle score), one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    for i, arm in enumerate(a.name for a in res.spec.arms):
        rows = [(a, a.oracle) for a in res.arms if a.arm == arm and a.oracle is not None]
        if not rows:
            continue
        color = f"C{i % 10}"
        x = [a.round for a, _ in rows]
        left.plot(x, [o.mean for _, o in rows], marker="o", color=color, label=arm)
        left.fill_between(x, [o.low for _, o in rows], [o.high for _, o in rows], color=color, alpha=0.15)
        cost = [a.cumulative["cost"] for a, _ in rows]
        right.errorbar(cost, [o.mean for _, o in rows],
                       yerr=[[o.mean - o.low for _, o in rows], [o.high - o.mean for _, o in rows]],
                       marker="o", color=color, capsize=3, label=arm)
        for (a, o), c in zip(rows, cost, strict=True):
            right.annotate(f"r{a.round}", (c, o.mean), textcoords="offset points", xytext=(4, 4), fontsize=8, color=color)
    pct = round(100 * res.spec.bootstrap.confidence)
    left.set(title=f"oracle score per round ({pct} % interval)", xlabel="round", ylabel="oracle score", ylim=(0, 1))
    left.set_xticks(range(res.spec.rounds + 1))
    right.set(title="what the score cost", xlabel=f"cumulative cost, rounds 1…N ({res.currency})", ylabel="oracle score", ylim=(0, 1))
    for target in res.spec.target:
        for ax in (left, right):
            ax.axhline(target, color="grey", lw=0.8, ls="--")
    if left.get_legend_handles_labels()[0]:  # an experiment with no finished round has nothing to label
        left.legend(loc="best", fontsize=8)
    fig.suptitle(f"experiment {res.spec.name}: task {res.spec.task}, {len(res.spec.seeds)} seed(s)")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def side_by_side_tables(sbs: SideBySide, res: ExperimentResults) -> list[Any]:
    """Per arm: base, base + RAG, fine-tuned and fine-tuned + RAG after the last round, pooled over the
    runs (mean, interval under it), and what each costs to serve and to make: one table where it
    fits, else quality and costs one under the other."""
    from rich.console import Group

    from prefloop.tables import FirstThatFits, Kind, fit, table

    pct = round(100 * res.spec.bootstrap.confidence)
    parts = sorted({p for c in sbs.conditions for p in c.parts})
    quality_columns: list[tuple[str, Kind]] = [("oracle", "number"), *((p, "number") for p in parts), ("win vs\nbase", "number")]
    cost_columns: list[tuple[str, Kind]] = [("latency\ns", "number"), ("prompt\ntokens", "number"), (f"{res.currency} per\n1,000", "number"),
                    (f"one-off\n{res.currency}", "number")]
    caption = (f"mean over training seeds × eval prompts, {pct} % interval below (bootstrap over both); "
               "win rate: the evaluation judge, both orders; costs: means per run.")
    out = []
    for arm in dict.fromkeys(c.arm for c in sbs.conditions):
        rows = [c for c in sbs.conditions if c.arm == arm]
        title = f"arm {arm}: side by side after round {sbs.round} ({len(rows[0].seeds)} training seed(s))"
        wide = table(title, [("", "id"), *quality_columns, *cost_columns], caption=caption, title_justify="left",
                     caption_justify="left")
        quality = table(title, [("", "id"), *quality_columns], title_justify="left")
        costs = table(None, [("", "id"), *cost_columns], caption=caption, caption_justify="left")
        for c in rows:
            m = c.means
            q = [_score(c.oracle), *(_score(c.parts.get(p)) for p in parts), _rate(c.win_vs_base)]
            k = [f"{m['latency_s']:.2f}", f"{m['prompt_tokens']:.0f}", _money(m["cost_per_1000"]),
                 _money(m["one_off"]) if c.condition.startswith("ft") else "–"]
            wide.add_row(c.condition, *q, *k)
            quality.add_row(c.condition, *q)
            costs.add_row(c.condition, *k)
        out.append(FirstThatFits(fit(wide), Group(fit(quality), fit(costs))))
    return out


def differences_table(sbs: SideBySide) -> Any:
    """The paired oracle differences (same run, same prompt): which gaps lie outside the noise."""
    from prefloop.tables import fit, table

    t = table("paired differences of the oracle score", [("arm", "text"), ("difference", "id"), ("Δ oracle", "number"),
                                                         ("interval", "number"), ("", "id")], title_justify="left")
    for d in sbs.differences:
        o = d.oracle
        t.add_row(d.arm, f"{d.better} − {d.than}", "n/a" if o is None else f"{o.mean:+.3f}",
                  "" if o is None else f"{o.low:+.3f} … {o.high:+.3f}",
                  "" if o is None else "within noise" if d.within_noise else "outside the noise")
    return fit(t)
