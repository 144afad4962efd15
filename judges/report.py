"""The judge agreement report: each judge against the human labels on the same tasks.

Agreement statistics come from :mod:`prefloop.feedback.agreement` (agreement with and without
ties, Cohen's κ against the human majority); this module adds each judge's position-consistency
rate (the share of its pairwise verdicts that did not flip when the outputs swapped places) and
draws the table and a PNG bar chart.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from prefloop.kinds import KINDS
from prefloop.tables import fit, table
from prefloop.text import NA, show_number


@dataclass(frozen=True)
class AgreementRow:
    judge: str
    n: int  # tasks with both this judge's verdict and a human majority
    agreement: float | None  # ties count as a label; None without a human reference
    n_without_ties: int
    agreement_without_ties: float | None  # only tasks where neither side said tie
    kappa: float | None  # Cohen's κ (ties as a category); None when undefined
    consistency: float | None  # share of pairwise verdicts stable under position swap; None without any
    n_pairwise: int  # pairwise verdicts behind ``consistency``
    failures: int  # judgements that failed (recorded with a reason)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def consistency_rates(store: Any, *, round_ids: list[int] | None = None) -> dict[str, tuple[int, int, int]]:
    """judge → (consistent verdicts, pairwise verdicts, failures), from judge annotations' meta."""
    from prefloop.feedback.store.models import Annotation, Annotator, AnnotatorKind, Task

    out: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    with store.session() as s:
        q = (
            select(Annotator.name, Task.kind, Annotation.meta)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .join(Task, Task.id == Annotation.task_id)
            .where(Annotator.kind == AnnotatorKind.JUDGE.value)
        )
        if round_ids is not None:
            q = q.where(Task.round_id.in_(round_ids))
        for name, kind, meta in s.execute(q):
            meta = meta or {}
            row = out[name]
            checks = KINDS[kind].position_checks(meta) if kind in KINDS else []
            row[1] += len(checks)
            row[0] += sum(checks)
            if meta.get("error") and meta.get("winner") is None:
                row[2] += 1
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


def agreement_report(store: Any, *, round_ids: list[int] | None = None) -> list[AgreementRow]:
    """One row per judge that has verdicts (agreement fields None / 0 where no human overlaps)."""
    from prefloop.feedback.agreement import judge_human_agreement

    agree = {a.judge: a for a in judge_human_agreement(store, round_ids=round_ids)}
    cons = consistency_rates(store, round_ids=round_ids)
    rows = []
    for name in sorted(set(agree) | set(cons)):
        a = agree.get(name)
        ok, total, failures = cons.get(name, (0, 0, 0))
        rows.append(AgreementRow(
            judge=name,
            n=a.n if a else 0,
            agreement=a.agreement if a else None,
            n_without_ties=a.n_without_ties if a else 0,
            agreement_without_ties=a.agreement_without_ties if a else None,
            kappa=a.kappa if a else None,
            consistency=ok / total if total else None,
            n_pairwise=total,
            failures=failures,
        ))
    return rows


def _fmt(x: float | None, pct: bool = True) -> str:
    return show_number(x, ".0f", scale=100, suffix="%") if pct else show_number(x)


def agreement_table(rows: list[AgreementRow]) -> Any:
    t = table("Judges vs humans (compare tasks)",
              [("judge", "text"), ("n", "number"), ("agree", "number"), ("n\nno-tie", "number"), ("agree\nno-tie", "number"),
               ("κ", "number"), ("consistent", "number"), ("failed", "number")],
              caption="κ: Cohen's kappa; consistent: position-consistency rate")
    for r in rows:
        t.add_row(
            r.judge, str(r.n), _fmt(r.agreement), str(r.n_without_ties), _fmt(r.agreement_without_ties),
            _fmt(r.kappa, pct=False), f"{_fmt(r.consistency)} of {r.n_pairwise}" if r.n_pairwise else NA, str(r.failures),
        )
    return fit(t)


def agreement_figure(rows: list[AgreementRow]) -> Any:
    """Grouped bars per judge: agreement, agreement without ties, κ and position consistency, each
    with its value; an undefined statistic shows as ``n/a``, a zero as ``0.00``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prefloop.plots import grouped_bars

    metrics = [("agreement", "agreement", "tab:blue"), ("agreement_without_ties", "agreement without ties", "tab:cyan"),
               ("kappa", "Cohen's κ", "tab:orange"), ("consistency", "position-consistent", "tab:green")]
    fig, ax = plt.subplots(figsize=(max(6.5, 1.8 * len(rows) + 3.5), 4.2), dpi=120, layout="constrained")
    x = list(range(len(rows)))
    grouped_bars(ax, x, [(label, [getattr(r, attr) for r in rows], color) for attr, label, color in metrics], log=False)
    values = [getattr(r, attr) for r in rows for attr, _, _ in metrics if getattr(r, attr) is not None]
    ax.set_xticks(x, [f"{r.judge}\n({r.n} tasks with humans)" for r in rows])
    ax.set_ylim(min(-0.1, min(values, default=0.0) - 0.15), 1.15)  # room for the labels above 1 and below κ < 0
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("share of tasks (κ: −1 to 1)")
    ax.set_title("Judges against the human majority (compare tasks)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def plot_agreement(rows: list[AgreementRow], path: str | Path) -> Path:
    """:func:`agreement_figure` as a PNG (written atomically)."""
    from prefloop.plots import save_figure

    return save_figure(agreement_figure(rows), path, dpi=120)
