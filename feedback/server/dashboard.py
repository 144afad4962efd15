"""What the admin dashboard shows: the admin API's typed answers (:mod:`.schemas`) and the
chart geometry the page draws from them.

The numbers come from :mod:`~prefloop.feedback.activity` (counts), :mod:`~prefloop.feedback.queue`
(queue state), :mod:`~prefloop.feedback.agreement` (κ, α, judge–human) and
:mod:`prefloop.judges.trust` (judge trust); this module only shapes
them. Charts are plain SVG rectangles computed here, so the page needs no script and no inline style.
"""

from __future__ import annotations

from typing import Any

from prefloop.text import NA, finite_or_none

from .. import activity
from ..agreement import inter_annotator, judge_human_agreement
from ..queue import Queue
from ..store.db import Store
from .schemas import (
    AgreementOut,
    AnnotatorThroughputOut,
    InterAnnotatorOut,
    JudgeAgreementOut,
    JudgeTrustOut,
    PairAgreementOut,
    QueueOut,
    RoundProgressOut,
    ThroughputOut,
    TrustOut,
)

AGREEMENT_KINDS = ("compare", "rate")  # the task kinds with a categorical or ordinal label


def _num(x: float | None) -> float | None:
    """JSON has no NaN: an undefined statistic is null (the page shows n/a)."""
    return finite_or_none(x)


def queue_summary(store: Store, queue: Queue) -> QueueOut:
    st = queue.status()
    by_kind: dict[str, dict[str, int]] = {}
    for (kind, status), n in st.tasks_by_kind_status.items():
        by_kind.setdefault(kind, {})[status] = n
    return QueueOut(
        tasks=by_kind,
        total_tasks=st.total_tasks,
        open_slots=st.open_slots,
        active_leases=st.active_leases,
        human_annotations=st.human_annotations,
        judge_annotations=st.judge_annotations,
        skips=st.skips,
        rounds=[
            RoundProgressOut(round_id=p.round_id, round=p.round_number, tasks=p.tasks, complete=p.complete,
                             slots=p.slots, answered=p.answered, fraction=round(p.fraction, 4))
            for p in activity.round_progress(store)
        ],
    )


def throughput_summary(store: Store, hours: int) -> ThroughputOut:
    t = activity.throughput(store, hours=hours)
    return ThroughputOut(
        hours=t.hours,
        annotators=[
            AnnotatorThroughputOut(name=n, counts=c, total=sum(c), mean_duration_s=t.mean_duration_s.get(n))
            for n, c in sorted(t.counts.items())
        ],
    )


def agreement_summary(store: Store, round_id: int | None = None) -> AgreementOut:
    rounds = [round_id] if round_id is not None else None
    inter = {}
    for kind in AGREEMENT_KINDS:
        r = inter_annotator(store, kind=kind, round_ids=rounds)
        inter[kind] = InterAnnotatorOut(
            n_tasks=r.n_tasks, annotators=r.annotators, alpha=_num(r.alpha),
            pairs=[PairAgreementOut(a=p.a, b=p.b, n=p.n, observed=_num(p.observed), kappa=_num(p.kappa))
                   for p in r.pairs],
        )
    judges = [
        JudgeAgreementOut(judge=j.judge, n=j.n, agreement=_num(j.agreement), n_without_ties=j.n_without_ties,
                          agreement_without_ties=_num(j.agreement_without_ties), kappa=_num(j.kappa))
        for j in judge_human_agreement(store, round_ids=rounds)
    ]
    return AgreementOut(inter_annotator=inter, judge_human=judges)


def trust_summary(store: Store, trust_config: Any, round_id: int | None = None) -> TrustOut:
    """Each judge's trust per task kind (:mod:`prefloop.judges.trust`), over all rounds or one."""
    from prefloop.judges.trust import measure_trust

    table = measure_trust(store, trust_config, round_ids=[round_id] if round_id is not None else None)
    rows = [JudgeTrustOut.model_validate({k: (_num(v) if isinstance(v, float) else v) for k, v in t.to_dict().items()
                                          if k in JudgeTrustOut.model_fields})
            for _, t in sorted(table.items())]
    return TrustOut(min_n=trust_config.min_n, threshold=trust_config.threshold, judges=rows)


# ------------------------------------------------------------------------------------ chart geometry
BAR_X, BAR_W, ROW_H = 110, 230, 26


def _progress_bars(rounds: list[RoundProgressOut]) -> dict[str, Any]:
    rows = []
    for i, r in enumerate(rounds):
        y = 6 + i * ROW_H
        label = f"round {r.round}" if r.round is not None else "no round"
        done_w = round(BAR_W * min(1.0, r.fraction), 1)
        rows.append({"y": y, "ty": y + 13, "label": label, "done_w": done_w, "rest_x": BAR_X + done_w,
                     "rest_w": round(BAR_W - done_w, 1), "text": f"{r.answered}/{r.slots} ({r.fraction:.0%})"})
    return {"rows": rows, "height": 12 + ROW_H * max(1, len(rows)), "bar_x": BAR_X, "text_x": BAR_X + BAR_W + 8}


def _sparklines(t: activity.Throughput) -> list[dict[str, Any]]:
    peak = max((max(c) for c in t.counts.values()), default=0) or 1
    out = []
    for name, counts in sorted(t.counts.items()):
        bars = []
        for i, n in enumerate(counts):
            h = round(22 * n / peak, 1) if n else 0
            bars.append({"x": i * 10, "y": 24 - h, "h": h, "n": n, "hour": t.hours[i].strftime("%H:00")})
        last_hour = counts[-1]
        out.append({"name": name, "bars": bars, "total": sum(counts), "last_hour": last_hour,
                    "mean_duration_s": t.mean_duration_s.get(name), "width": 10 * len(counts)})
    return out


def _judge_bars(judges: list[JudgeAgreementOut]) -> dict[str, Any]:
    rows = []
    for i, j in enumerate(judges):
        y = 6 + i * ROW_H
        a = j.agreement or 0.0
        cls = "bar-good" if a >= 0.75 else "bar-mid" if a >= 0.5 else "bar-bad"
        kappa = f"κ {NA}" if j.kappa is None else f"κ {j.kappa:.2f}"
        rows.append({"y": y, "ty": y + 13, "label": j.judge[:18], "w": round(BAR_W * a, 1), "cls": cls,
                     "text": f"{a:.0%} of {j.n} · {kappa}"})
    return {"rows": rows, "height": 12 + ROW_H * max(1, len(rows)), "bar_x": BAR_X, "bar_w": BAR_W,
            "text_x": BAR_X + BAR_W + 8}


def dashboard_context(store: Store, queue: Queue, *, hours: int = 24, trust_config: Any = None) -> dict[str, Any]:
    """Everything ``admin.html`` draws."""
    from prefloop.judges.config import TrustConfig

    q = queue_summary(store, queue)
    t = activity.throughput(store, hours=hours)
    agreement = agreement_summary(store)
    return {
        "queue": q,
        "progress_chart": _progress_bars(q.rounds),
        "hours": hours,
        "hour_labels": (t.hours[0].strftime("%H:00"), t.hours[-1].strftime("%H:00 UTC")),
        "sparklines": _sparklines(t),
        "agreement": agreement,
        "judge_chart": _judge_bars(agreement.judge_human),
        "trust": trust_summary(store, trust_config or TrustConfig()),
    }
