"""Pull: Argilla responses come back as prefloop annotations.

Pull is keyed by (Argilla user, record): each Argilla user becomes the human annotator
``argilla:<username>`` and each record one task, and :meth:`Queue.record` upserts per
(task, annotator), so pulling twice writes nothing new and a changed response updates the
annotation with its previous value kept in ``history``. Drafts are not imported; a discarded
record becomes a skip, and so does a submitted answer later taken back to draft or deleted
(withdrawn: the task's slot reopens). Everything is fetched before anything is written: a failing
server leaves the store untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from prefloop.errors import InvalidAnswer
from prefloop.kinds import get_kind

from ..store.models import Annotation, AnnotationStatus, Annotator, AnnotatorKind, Task
from .client import connect, datasets_in, find_workspace, record_models, talking_to, username
from .settings import Q_COMMENT, parse_name, round_number

if TYPE_CHECKING:
    from prefloop.project import Project

ANNOTATOR_PREFIX = "argilla:"


@dataclass
class _Item:
    dataset: str
    kind: str
    record_id: str
    external_id: str | None
    task_id: int | None
    generation_ids: list[int] | None
    user_id: str
    status: str
    values: dict[str, Any]


@dataclass
class PullReport:
    url: str
    workspace: str
    datasets: list[str] = field(default_factory=list)
    records: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0  # discarded in Argilla → recorded as skips
    withdrawn: int = 0  # submitted, then taken back to draft or deleted in Argilla → skips
    drafts: int = 0  # not imported
    new_annotators: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # responses that could not be imported, and why

    @property
    def written(self) -> int:
        return self.created + self.updated


def _fetch(project: Project, round_id: int | None) -> tuple[PullReport, list[_Item], dict[str, str], set[str]]:
    """Every response in prefloop's datasets (of one round, or all), the users who gave them, and
    the ids of every record listed."""
    cfg = project.config
    number = round_number(project, round_id)
    client = connect(cfg.argilla)
    url = cfg.argilla.api_url.rstrip("/")
    with talking_to(url):
        return _fetch_all(client, url, cfg, round_id, number)


def _fetch_all(
    client: Any, url: str, cfg: Any, round_id: int | None, number: int | None
) -> tuple[PullReport, list[_Item], dict[str, str], set[str]]:
    ws = find_workspace(client, cfg.argilla.workspace, url)
    report = PullReport(url=url, workspace=ws.name)
    items: list[_Item] = []
    listed: set[str] = set()
    for name, dataset in sorted(datasets_in(ws).items()):
        parsed = parse_name(cfg.argilla.dataset_prefix, name)
        if parsed is None or (round_id is not None and parsed[0] != number):
            continue
        report.datasets.append(name)
        kind = parsed[1]
        for rec in record_models(client, dataset):
            report.records += 1
            listed.add(str(rec.id))
            meta = {m.name: m.value for m in rec.metadata or []}
            task_id = meta.get("task_id")
            gids = meta.get("generation_ids")
            for resp in rec.responses or []:
                status = getattr(resp.status, "value", resp.status)
                items.append(_Item(
                    dataset=name, kind=kind, record_id=str(rec.id), external_id=rec.external_id,
                    task_id=int(task_id) if task_id is not None else None,
                    generation_ids=[int(g) for g in gids] if isinstance(gids, list) else None,
                    user_id=str(resp.user_id), status=status, values=dict(resp.values or {}),
                ))
    usernames: dict[str, str] = {}
    for uid in sorted({i.user_id for i in items}):
        usernames[uid] = username(client, uid)
    return report, items, usernames, listed


def pull(project: Project, *, round_id: int | None = None) -> PullReport:
    """Import submitted (and discarded) Argilla responses as prefloop annotations, and withdraw
    those whose response went back to draft or was deleted; idempotent."""
    report, items, usernames, listed = _fetch(project, round_id)
    queue = project.queue
    relevant = [i for i in items if i.status in ("submitted", "discarded")]
    report.drafts = sum(1 for i in items if i.status == "draft")

    # An Argilla user is known by their user id (kept in the annotator's meta), so a renamed user
    # stays the same annotator; a new one becomes the human annotator "argilla:<username>".
    with project.store.session() as s:
        mine = list(s.scalars(select(Annotator).where(Annotator.name.startswith(ANNOTATOR_PREFIX))))
        by_uid = {(a.meta or {}).get("argilla", {}).get("user_id"): a.id for a in mine}
        names = {a.name for a in mine}
    annotator_ids: dict[str, int] = {}
    for uid in sorted({i.user_id for i in relevant}):
        if uid in by_uid:
            annotator_ids[uid] = by_uid[uid]
            continue
        name = f"{ANNOTATOR_PREFIX}{usernames[uid]}"
        annotator_ids[uid] = queue.ensure_annotator(
            name, kind=AnnotatorKind.HUMAN.value, meta={"argilla": {"user_id": uid, "username": usernames[uid], "url": report.url}}
        )
        if name not in names:
            report.new_annotators.append(name)

    with project.store.session() as s:
        task_ids = {i.task_id for i in relevant if i.task_id is not None}
        tasks = {t.id: t for t in s.scalars(select(Task).where(Task.id.in_(task_ids)))} if task_ids else {}
        for i in relevant:
            where = f"{i.dataset} record {i.external_id or i.record_id} (user {usernames[i.user_id]})"
            task = tasks.get(i.task_id) if i.task_id is not None else None
            if task is None or task.kind != i.kind or [int(g) for g in task.generation_ids] != i.generation_ids:
                report.problems.append(
                    f"{where}: not a task of this project (task {i.task_id} missing or with other outputs); "
                    "use a distinct argilla.dataset_prefix per project"
                )
                continue
            meta = {"argilla": {
                "dataset": i.dataset, "record_id": i.record_id, "external_id": i.external_id,
                "user_id": i.user_id, "response_status": i.status,
            }}
            comment = (i.values.get(Q_COMMENT) or {}).get("value") or None
            had = s.scalar(
                select(Annotation.id).where(Annotation.task_id == task.id, Annotation.annotator_id == annotator_ids[i.user_id])
            )
            try:
                if i.status == "submitted":
                    kind = get_kind(task.kind)
                    fields = kind.argilla_fields(len(task.generation_ids))
                    value = kind.argilla_answer(i.values, i.generation_ids, fields)
                    _, changed = queue.record(annotator_ids[i.user_id], task.id, value, rationale=comment, meta=meta, session=s)
                else:
                    _, changed = queue.record(
                        annotator_ids[i.user_id], task.id, None, status=AnnotationStatus.SKIPPED.value,
                        rationale=comment, meta=meta, session=s,
                    )
            except InvalidAnswer as exc:
                report.problems.append(f"{where}: {exc.message}")
                continue
            if not changed:
                report.unchanged += 1
            elif i.status == "discarded":
                report.skipped += 1
            elif had is not None:
                report.updated += 1
            else:
                report.created += 1
        report.withdrawn = _withdraw_retracted(
            queue, s, {aid: uid for uid, aid in by_uid.items() if uid}, listed,
            answered={(i.record_id, i.user_id) for i in relevant}, now={(i.record_id, i.user_id): i.status for i in items},
        )
    return report


def _withdraw_retracted(
    queue: Any, s: Any, argilla_uid: dict[int, str], listed: set[str],
    *, answered: set[tuple[str, str]], now: dict[tuple[str, str], str],
) -> int:
    """A submitted annotation whose Argilla response went back to draft, or was deleted, while its
    record is still there, is withdrawn like a discarded one: it becomes a skip (the answer stays
    in its history) and the task's slot opens again. Returns how many were withdrawn."""
    if not argilla_uid:
        return 0
    submitted = list(s.scalars(select(Annotation).where(
        Annotation.annotator_id.in_(list(argilla_uid)), Annotation.status == AnnotationStatus.SUBMITTED.value,
    )))
    withdrawn = 0
    for a in submitted:
        source = dict((a.meta or {}).get("argilla") or {})
        key = (str(source.get("record_id")), argilla_uid[a.annotator_id])
        if key[0] not in listed or key in answered:
            continue  # a record of a dataset not pulled now (or deleted with its dataset), or still answered
        source.update(response_status=now.get(key, "deleted"), withdrawn=True)
        _, changed = queue.record(
            a.annotator_id, a.task_id, None, status=AnnotationStatus.SKIPPED.value, meta={"argilla": source}, session=s,
        )
        withdrawn += changed
    return withdrawn
