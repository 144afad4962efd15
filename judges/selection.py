"""Active selection: the allocation policies that decide which tasks humans see first.

Humans are the scarce resource. ``judges.selection.policy`` picks how the queue is ordered (the
queue serves the highest priority first, then the oldest task):

- ``fifo``: creation order (every task keeps its base priority);
- ``random``: a seeded shuffle (``seed``);
- ``uncertainty``: the weighted signals below, from every judge's verdicts;
- ``trust`` (default): judges count only where they are trusted (:mod:`.trust`). Tasks where no
  trusted judge has a verdict come first (weight ``no_trusted_verdict``; a blind or unmeasured
  judge's tie is *unknown*, not a verdict), then tasks the trusted judges are unsure of or disagree
  on (the signals below over trusted verdicts only; a trusted tie is a settled "tie", not doubt).
  An ``exploration`` share of the order (every 1/share-th place) goes to seeded random tasks, so
  trust keeps being measured everywhere and no blind spot stays hidden. Priorities of the round's
  open tasks are recomputed as human labels arrive (:func:`refresh_round`).

The signals, per task from its judge annotations (each in [0, 1]):

- ``disagreement``: judges (or a panel's members) disagree — 1 − the top choice's share, or the
  spread of their scores;
- ``inconsistency``: the share of verdicts that flipped under position swap;
- ``low_margin``: how close P(A better) is to 0.5 (1 − |2·P(A) − 1|), or 1 − a score's confidence;
- ``failure``: the share of judges that could not answer.

The task's priority becomes its original priority (kept in ``meta.base_priority``) plus the
policy's score; the signals, the policy and its reasons are kept in ``meta.selection``.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import or_, select, update

from prefloop.kinds import KINDS, get_kind

from .config import SelectionConfig, TrustConfig
from .trust import TrustTable, is_tie, measure_trust


def signals(kind: str, verdicts: list[dict[str, Any]], scale: tuple[int, int] | None) -> dict[str, float]:
    """The four signals of one task from its judge annotations (``status``, ``value``, ``meta``,
    ``confidence``), as the task's kind reads them (:meth:`prefloop.kinds.TaskKind.signals`)."""
    return get_kind(kind).signals(verdicts, scale)


def judge_priority(sig: dict[str, float], weights: SelectionConfig) -> float:
    return sum(getattr(weights, k) * v for k, v in sig.items())


def uniform(seed: int, salt: str, task_id: int) -> float:
    """A stable number in [0, 1) per (seed, purpose, task): the same shuffle in every process."""
    digest = hashlib.blake2b(f"{seed}:{salt}:{task_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def interleave(ranked: list[int], explore: list[int], share: float) -> list[int]:
    """``ranked`` with every place k where ⌊(k+1)·share⌋ > ⌊k·share⌋ taken by the next task of
    ``explore`` instead: exactly ``share`` of every prefix (rounded down) is exploration."""
    out: list[int] = []
    seen: set[int] = set()
    sources = (iter(ranked), iter(explore))
    for k in range(len(ranked)):
        exploring = int((k + 1) * share) > int(k * share)
        for src in (sources[exploring], sources[not exploring]):
            nxt = next((t for t in src if t not in seen), None)
            if nxt is not None:
                out.append(nxt)
                seen.add(nxt)
                break
    return out


def _settled(kind: str, v: dict[str, Any]) -> dict[str, Any]:
    """A trusted tie is a verdict, not doubt: its P(A) near 0.5 does not count as a low margin."""
    if is_tie(kind, v):
        return {**v, "meta": {k: x for k, x in (v["meta"] or {}).items() if k not in ("prob_a", "consistent")}}
    return v


def trust_signals(kind: str, verdicts: list[dict[str, Any]], scale: tuple[int, int] | None,
                  trust: TrustTable) -> tuple[bool, dict[str, float]]:
    """(no trusted verdict, the signals over the trusted verdicts) of one task."""
    kept = [_settled(kind, v) for v in verdicts if v["status"] == "submitted" and trust.counts_verdict(v["judge"], kind, v)]
    failed = [v for v in verdicts if v["status"] != "submitted" and (v["meta"] or {}).get("error")
              and trust.status(v["judge"], kind) == "trusted"]
    return not kept, signals(kind, kept + failed, scale)


def scores(policy: str, tasks: list[dict[str, Any]], cfg: SelectionConfig,
           trust: TrustTable | None = None) -> dict[int, tuple[float, dict[str, Any]]]:
    """task id → (score added to its base priority, what ``meta.selection`` records), under ``policy``.

    ``tasks``: dicts with ``id``, ``kind``, ``scale``, ``verdicts`` (``judge``, ``status``, ``value``,
    ``meta``, ``confidence``). Under ``uncertainty`` tasks without verdicts are left out (unchanged)."""
    out: dict[int, tuple[float, dict[str, Any]]] = {}
    if policy == "fifo":
        return {t["id"]: (0.0, {"policy": policy}) for t in tasks}
    if policy == "random":
        return {t["id"]: (round(uniform(cfg.seed, "random", t["id"]), 6), {"policy": policy}) for t in tasks}
    if policy == "uncertainty":
        for t in tasks:
            sig = signals(t["kind"], t["verdicts"], t["scale"])
            if sig:
                score = round(judge_priority(sig, cfg), 6)
                out[t["id"]] = (score, {"policy": policy, **{k: round(v, 4) for k, v in sig.items()}, "score": score})
        return out
    trust = trust if trust is not None else TrustTable()
    value: dict[int, float] = {}
    doubt: dict[int, float] = {}
    notes: dict[int, dict[str, Any]] = {}
    for t in tasks:
        missing, sig = trust_signals(t["kind"], t["verdicts"], t["scale"], trust)
        value[t["id"]] = cfg.no_trusted_verdict * missing + judge_priority(sig, cfg)
        every = signals(t["kind"], t["verdicts"], t["scale"])
        # among equals: the doubt of all judges, without the ties of judges known to be blind
        seen = [v for v in t["verdicts"] if not (is_tie(t["kind"], v) and trust.blind(v["judge"], t["kind"]))]
        doubt[t["id"]] = judge_priority(signals(t["kind"], seen, t["scale"]), cfg)
        notes[t["id"]] = {"policy": policy, **{k: round(v, 4) for k, v in every.items()}, "no_trusted_verdict": missing,
                          "trusted": {k: round(v, 4) for k, v in sig.items()}, "value": round(value[t["id"]], 6)}
    ids = list(value)
    ranked = sorted(ids, key=lambda i: (-round(value[i], 9), -round(doubt[i], 9), uniform(cfg.seed, "tiebreak", i)))
    explore = sorted(ids, key=lambda i: uniform(cfg.seed, "explore", i))
    order = interleave(ranked, explore, cfg.exploration)
    for k, i in enumerate(order):
        score = round((len(order) - k) / len(order), 6)
        exploring = int((k + 1) * cfg.exploration) > int(k * cfg.exploration)
        out[i] = (score, {**notes[i], "explore": exploring, "score": score})
    return out


def update_priorities(
    store: Any,
    *,
    task_ids: list[int] | None = None,
    round_id: int | None = None,
    weights: SelectionConfig | None = None,
    trust: TrustConfig | None = None,
    open_only: bool = False,
) -> int:
    """Recompute task priorities under the configured policy; returns how many changed.

    The tasks: ``task_ids`` and/or the tasks of ``round_id`` (``open_only``: open ones only); under
    ``trust`` the order is over all open tasks of their rounds. One UPDATE statement for all."""
    from prefloop.feedback.store.models import Annotation, Annotator, AnnotatorKind, Task, TaskStatus

    cfg = weights or SelectionConfig()
    with store.session() as s:
        tq = select(Task.id, Task.kind, Task.scale_min, Task.scale_max, Task.priority, Task.meta, Task.round_id)
        if task_ids is not None:
            tq = tq.where(Task.id.in_(task_ids))
        if round_id is not None:
            tq = tq.where(Task.round_id == round_id)
        if open_only:
            tq = tq.where(Task.status == TaskStatus.OPEN.value)
        rows = {r.id: r for r in s.execute(tq)}
        if cfg.policy == "trust" and rows:
            # the order is relative: rank with every open task of the same rounds (tasks without a round together)
            rounds = {r.round_id for r in rows.values()}
            same = [Task.round_id.in_([r for r in rounds if r is not None])] + ([Task.round_id.is_(None)] if None in rounds else [])
            more = select(Task.id, Task.kind, Task.scale_min, Task.scale_max, Task.priority, Task.meta, Task.round_id).where(
                or_(*same), Task.status == TaskStatus.OPEN.value)
            rows.update({r.id: r for r in s.execute(more)})
        if not rows:
            return 0
        by_task: dict[int, list[dict[str, Any]]] = defaultdict(list)
        if cfg.policy in ("uncertainty", "trust"):
            q = (
                select(Annotation.task_id, Annotation.status, Annotation.value, Annotation.meta, Annotation.confidence,
                       Annotator.name)
                .join(Annotator, Annotator.id == Annotation.annotator_id)
                .where(Annotator.kind == AnnotatorKind.JUDGE.value, Annotation.task_id.in_(list(rows)))
            )
            for r in s.execute(q):
                by_task[r.task_id].append({"judge": r.name, "status": r.status, "value": r.value or {}, "meta": r.meta or {},
                                           "confidence": r.confidence})
        tasks = [{"id": r.id, "kind": r.kind, "verdicts": by_task.get(r.id, []),
                  "scale": (r.scale_min, r.scale_max) if r.scale_min is not None else None}
                 for r in rows.values() if r.kind in KINDS]  # a plug-in kind that is not loaded: its priority stays
    table = measure_trust(store, trust) if cfg.policy == "trust" else None
    changes = []
    for tid, (score, note) in scores(cfg.policy, tasks, cfg, table).items():
        r = rows[tid]
        meta = dict(r.meta or {})
        base = float(meta.get("base_priority", r.priority))
        new_meta = {**meta, "base_priority": base, "selection": note}
        if r.priority != base + score or meta != new_meta:
            changes.append({"id": tid, "priority": base + score, "meta": new_meta})
    if changes:
        with store.session() as s:
            s.execute(update(Task), changes)
    return len(changes)


def refresh_round(store: Any, judges_config: Any, round_id: int) -> int:
    """Recompute the priorities of a round's open tasks (as human labels arrive); claims follow them."""
    sel = judges_config.selection
    if sel.policy not in ("uncertainty", "trust"):
        return 0  # fifo and random orders do not depend on labels
    return update_priorities(store, round_id=round_id, weights=sel, trust=judges_config.trust, open_only=True)


class PriorityRefresher:
    """Recomputes a round's open-task priorities every ``recompute_every`` human labels that pass
    through it (the server calls :meth:`label_arrived` after each submit), so that the next claims
    follow what the new labels taught about the judges. Thread-safe; counts per process."""

    def __init__(self, store: Any, judges_config: Any) -> None:
        import threading

        self.store, self.config = store, judges_config
        self._lock = threading.Lock()
        self._since: Counter[int | None] = Counter()
        self.refreshes = 0

    def label_arrived(self, task_id: int) -> bool:
        """Count one human label on ``task_id``; True when it triggered a refresh of its round."""
        every = self.config.selection.recompute_every
        if not every or self.config.selection.policy not in ("uncertainty", "trust"):
            return False
        from prefloop.feedback.store.models import Task

        with self.store.session() as s:
            round_id = s.scalar(select(Task.round_id).where(Task.id == task_id))
        with self._lock:
            self._since[round_id] += 1
            if self._since[round_id] < every:
                return False
            self._since[round_id] = 0
            if round_id is None:
                return False
            refresh_round(self.store, self.config, round_id)
            self.refreshes += 1
            return True


def human_labels(store: Any, round_id: int) -> int:
    """Submitted human labels on a round's tasks."""
    from sqlalchemy import func

    from prefloop.feedback.store.models import Annotation, AnnotationStatus, Annotator, AnnotatorKind, Task

    with store.session() as s:
        return int(s.scalar(
            select(func.count()).select_from(Annotation).join(Annotator, Annotator.id == Annotation.annotator_id)
            .join(Task, Task.id == Annotation.task_id)
            .where(Task.round_id == round_id, Annotator.kind == AnnotatorKind.HUMAN.value,
                   Annotation.status == AnnotationStatus.SUBMITTED.value)) or 0)
