"""The judges against the humans, pooled over an experiment's runs: which offline judge agrees best
with the human majority, with an interval that one run's few labels cannot give.

Per arm, judge and task kind, the outcomes of :func:`prefloop.judges.trust.task_outcomes` (agree,
wrong side, blind tie, chose on a tie) are summed over the arm's runs (every round in each run's
store) and assessed like a round's trust (:func:`~prefloop.judges.trust.assess`: agreement with its
Wilson interval). Judges label different tasks — a reward-model judge labels only the human tasks
held out from its training, a rule judge every task — so each row also gives the agreement on the
**shared** tasks: those every judge of the arm labelled in that run (same tasks, fair comparison).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from prefloop.judges.config import TrustConfig
from prefloop.judges.trust import AGREE, TIE_AGREE, JudgeTrust, assess, task_outcomes, wilson

from .runner import Experiment


@dataclass(frozen=True)
class PooledJudge:
    arm: str
    judge: str
    kind: str
    runs: int
    all: JudgeTrust  # every task with a human reference this judge labelled
    shared_n: int  # tasks every judge of the arm labelled
    shared_agree: int

    @property
    def shared_interval(self) -> tuple[float, float] | None:
        return wilson(self.shared_agree, self.shared_n)

    def row(self) -> dict[str, Any]:
        """A flat row (``judges.csv``, the wandb table)."""
        ci = self.shared_interval
        a = self.all
        return {"arm": self.arm, "judge": self.judge, "kind": self.kind, "runs": self.runs, "n": a.n,
                "agreement": a.rate, "agreement_low": a.low, "agreement_high": a.high, "wrong_side": a.wrong_side,
                "blind_ties": a.blind_ties, "chose_on_tie": a.chose_on_tie, "shared_n": self.shared_n,
                "shared_agreement": self.shared_agree / self.shared_n if self.shared_n else None,
                "shared_low": ci[0] if ci else None, "shared_high": ci[1] if ci else None}


def pooled_judges(exp: Experiment) -> list[PooledJudge]:
    """Every (arm, judge, kind) with a human reference in any run's store, in spec order."""
    from prefloop.feedback.store.db import open_store

    out: list[PooledJudge] = []
    for arm in exp.spec.arms:
        counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        shared: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])  # (judge, kind) → [agree, n]
        runs: dict[tuple[str, str], int] = Counter()
        for run in (r for r in exp.runs if r.arm == arm.name):
            db = run.folder / "prefloop.db"
            if not db.is_file():
                continue
            store = open_store(f"sqlite:///{db}", migrate=False)
            try:
                by_task: dict[tuple[int, str], dict[str, str]] = defaultdict(dict)
                for task_id, kind, judge, outcome in task_outcomes(store):
                    counts[(judge, kind)][outcome] += 1
                    by_task[(task_id, kind)][judge] = outcome
            finally:
                store.dispose()
            for key in {(j, k) for (_, k), js in by_task.items() for j in js}:
                runs[key] += 1
            judges_by_kind: dict[str, set[str]] = defaultdict(set)
            for (_, kind), js in by_task.items():
                judges_by_kind[kind] |= set(js)
            for (_, kind), js in by_task.items():
                if set(js) == judges_by_kind[kind]:
                    for judge, outcome in js.items():
                        tally = shared[(judge, kind)]
                        tally[0] += outcome in (AGREE, TIE_AGREE)
                        tally[1] += 1
        for (judge, kind), c in sorted(counts.items()):
            agree, n = shared[(judge, kind)]
            out.append(PooledJudge(arm.name, judge, kind, runs[(judge, kind)], assess(judge, kind, c, TrustConfig()), n, agree))
    return out


def judges_table(rows: list[PooledJudge], pct: int = 95) -> Any:
    """Agreement with the human majority per arm and judge, over all its tasks and over the shared
    ones: one wide table, or on 80 columns the same without the run and error counts (in judges.csv)."""
    from prefloop.tables import FirstThatFits, Kind, fit, table

    caption = (f"agreement: share of tasks where the judge matches the human majority (ties included), {pct} % "
               "Wilson interval below; shared: the tasks every judge of the arm labelled (a reward model "
               "labels only the human tasks held out from its training).")
    kinds = len({r.kind for r in rows}) > 1

    def build(wide: bool) -> Any:
        columns: list[tuple[str, Kind]] = [("arm", "text"), ("judge", "text")]
        columns += [("kind", "id")] if wide or kinds else []
        columns += [("runs", "number")] if wide else []
        columns += [("tasks", "number"), ("agreement", "number")]
        columns += [("wrong\nside", "number"), ("blind\nties", "number")] if wide else []
        columns += [("shared\ntasks", "number"), ("agreement\non shared", "number")]
        t = table("judges against the human majority, pooled over runs", columns, caption=caption,
                  title_justify="left", caption_justify="left")
        for r in rows:
            a, ci = r.all, r.shared_interval
            cells = [r.arm, r.judge, *([r.kind] if wide or kinds else []), *([str(r.runs)] if wide else []), str(a.n),
                     "n/a" if a.rate is None else f"{a.rate:.2f}\n{a.low:.2f}–{a.high:.2f}",
                     *([str(a.wrong_side), str(a.blind_ties)] if wide else []), str(r.shared_n),
                     "n/a" if ci is None else f"{r.shared_agree / r.shared_n:.2f}\n{ci[0]:.2f}–{ci[1]:.2f}"]
            t.add_row(*cells)
        return fit(t)

    return FirstThatFits(build(True), build(False))
