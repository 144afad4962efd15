"""Push: the open tasks that want humans become records of Argilla datasets, one per round and kind.

Push builds and checks every record (:mod:`.rules`) before its first write; a push that is
interrupted anyway (connection lost) is completed by the next one: records already there are not
sent again, and a dataset left unpublished is created again.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from prefloop.kinds import TaskView, get_kind

from ..store.models import (
    Annotation,
    AnnotationStatus,
    Annotator,
    AnnotatorKind,
    Generation,
    Round,
    Task,
    TaskStatus,
)
from .client import (
    API_KEY_ENV,
    ArgillaBridgeError,
    Writing,
    connect,
    datasets_in,
    external_ids,
    find_workspace,
    is_published,
    quiet,
    sdk_errors,
    talking_to,
)
from .rules import (
    Hint,
    RecordPayload,
    agent_name,
    chat_problem,
    record_problems,
    suggestion_score,
)
from .settings import (
    EXTERNAL_ID_PREFIX,
    DatasetSpec,
    build_settings,
    dataset_name,
    round_number,
    settings_differences,
)

if TYPE_CHECKING:
    from prefloop.project import Project

#: Records per bulk write.
_LOG_BATCH = 200


@dataclass
class _TaskRow:
    task_id: int
    kind: str
    round_number: int | None
    overlap: int
    generation_ids: list[int]
    texts: list[str]
    models: list[str | None]
    messages: list[dict[str, str]] | None
    prompt_text: str
    scale: tuple[int, int] | None
    allow_tie: bool
    judge: dict[str, Any] | None = None  # the verdict shown as a suggestion


@dataclass
class DatasetPush:
    name: str
    created: bool
    added: int
    already_there: int


@dataclass
class PushReport:
    url: str
    workspace: str
    datasets: list[DatasetPush] = field(default_factory=list)

    @property
    def added(self) -> int:
        return sum(d.added for d in self.datasets)


def _load_open_tasks(project: Project, round_id: int | None) -> list[_TaskRow]:
    """Open tasks that want humans, with prompt, candidates and the best judge verdict."""
    show_judges = project.config.annotation.show_judge_suggestions
    with project.store.session() as s:
        q = (
            select(Task, Round.number)
            .outerjoin(Round, Round.id == Task.round_id)
            .where(Task.status == TaskStatus.OPEN.value, Task.overlap > 0)
            .order_by(Task.id)
        )
        if round_id is not None:
            q = q.where(Task.round_id == round_id)
        rows = s.execute(q).all()
        gen_ids = {g for task, _ in rows for g in task.generation_ids}
        gens = {
            g.id: g for g in s.scalars(select(Generation).where(Generation.id.in_(gen_ids)))
        } if gen_ids else {}
        verdicts: dict[int, list[tuple[Annotation, str]]] = defaultdict(list)
        if show_judges and rows:
            jq = (
                select(Annotation, Annotator.name)
                .join(Annotator, Annotator.id == Annotation.annotator_id)
                .where(
                    Annotator.kind == AnnotatorKind.JUDGE.value,
                    Annotation.status == AnnotationStatus.SUBMITTED.value,
                    Annotation.task_id.in_([t.id for t, _ in rows]),
                )
                .order_by(Annotation.annotator_id)
            )
            for ann, name in s.execute(jq):
                if (ann.meta or {}).get("consistent", True) is not False:
                    verdicts[ann.task_id].append((ann, name))
        out = []
        for task, number in rows:
            prompt = task.prompt
            out_row = _TaskRow(
                task_id=task.id,
                kind=task.kind,
                round_number=number,
                overlap=task.overlap,
                generation_ids=[int(g) for g in task.generation_ids],
                texts=[gens[g].text for g in task.generation_ids],
                models=[gens[g].model for g in task.generation_ids],
                messages=[dict(m) for m in prompt.messages] if prompt.messages else None,
                prompt_text=prompt.display_text,
                scale=(task.scale_min, task.scale_max) if task.scale_min is not None else None,
                allow_tie=bool(task.meta.get("allow_tie", True)),
            )
            if verdicts.get(task.id):
                # One suggestion per question: the most confident judge (first by id on a tie).
                ann, name = max(verdicts[task.id], key=lambda v: v[0].confidence if v[0].confidence is not None else -1.0)
                out_row.judge = {"value": dict(ann.value), "confidence": ann.confidence, "agent": name}
            out.append(out_row)
        return out


def _group_key(t: _TaskRow, prefix: str, default_scale: tuple[int, int], default_ties: bool) -> tuple[str, tuple[Any, ...]]:
    """(dataset name, question options) for a task: tasks whose options differ go to different datasets."""
    view = TaskView(t.generation_ids, t.texts, t.scale, t.allow_tie)
    opts, variant = get_kind(t.kind).argilla_options(view, default_scale=default_scale, default_ties=default_ties)
    return dataset_name(prefix, t.round_number, t.kind, variant), opts


def _payload_for(t: _TaskRow, spec: DatasetSpec) -> RecordPayload:
    """The record for a task: fields, metadata and its suggestion in the shape Argilla takes for
    the dataset's main question (a ranking: a list of values and one score per value)."""
    if spec.chat_prompt:
        prompt: Any = t.messages or [{"role": "user", "content": t.prompt_text}]
    elif t.messages and len(t.messages) > 1:
        prompt = "\n\n".join(f"[{m.get('role', 'user')}]\n{m.get('content', '')}" for m in t.messages)
    else:
        prompt = t.prompt_text
    fields = {"prompt": prompt, **dict(zip(spec.candidate_fields, t.texts, strict=True))}
    kind = get_kind(t.kind)
    hints = []
    prefill = kind.argilla_prefill(t.texts)
    if prefill is not None:  # the output itself, to be corrected in place (edit)
        hints.append(Hint(kind.argilla_question, prefill, None, agent_name(t.models[0], "original output")))
    elif t.judge is not None:
        value = kind.argilla_suggestion(t.judge["value"], t.generation_ids, spec.question_options, spec.candidate_fields)
        if value is not None:
            hints.append(Hint(
                kind.argilla_question, value, suggestion_score(t.judge["confidence"], value), agent_name(t.judge["agent"], "judge"),
            ))
    metadata: dict[str, Any] = {"task_id": t.task_id, "generation_ids": t.generation_ids}
    if t.round_number is not None:
        metadata["round"] = t.round_number
    return RecordPayload(id=f"{EXTERNAL_ID_PREFIX}{t.task_id}", fields=fields, metadata=metadata, hints=hints)


def push(project: Project, *, round_id: int | None = None) -> PushReport:
    """Create or extend the Argilla datasets for the open tasks (of one round, or all).

    Re-pushing adds only records whose task is not in the dataset yet. Every existing dataset
    is checked against the settings prefloop expects before anything is created or logged.
    """
    round_number(project, round_id)
    cfg = project.config
    tasks = _load_open_tasks(project, round_id)
    groups: dict[str, list[_TaskRow]] = defaultdict(list)
    options: dict[str, tuple[Any, ...]] = {}
    for t in tasks:
        name, opts = _group_key(t, cfg.argilla.dataset_prefix, cfg.queue.rating_scale, cfg.queue.allow_ties)
        groups[name].append(t)
        options[name] = opts
    for name, opts in options.items():
        get_kind(groups[name][0].kind).argilla_check_options(name, opts)

    client = connect(cfg.argilla)
    url = cfg.argilla.api_url.rstrip("/")
    writing = Writing()
    with talking_to(url, writing):
        return _push(client, url, cfg, groups, options, writing)


@dataclass
class _Plan:
    """One dataset of a push: its settings, the dataset if it exists, the records to add."""

    spec: DatasetSpec
    existing: Any | None  # the published dataset, or None when it is to be created
    draft: Any | None  # an unpublished dataset of this name (an interrupted create): replaced
    payloads: list[RecordPayload]
    n_tasks: int


def _push(
    client: Any, url: str, cfg: Any, groups: dict[str, list[_TaskRow]], options: dict[str, tuple[Any, ...]], writing: Writing
) -> PushReport:
    ws = find_workspace(client, cfg.argilla.workspace, url)
    report = PushReport(url=url, workspace=ws.name)
    there = datasets_in(ws)

    # 1. plan, build and check every record before writing anything
    plans: list[_Plan] = []
    problems: list[str] = []
    bad_records: list[str] = []
    for name in sorted(groups):
        rows = groups[name]
        found = there.get(name)
        # A dataset that was never published is what an interrupted create leaves (Argilla creates
        # a draft, then its fields, questions and metadata, then publishes): it is created again.
        draft = found if found is not None and not is_published(found) else None
        if draft is not None and _has_responses(draft):
            problems.append(f"{name}: an unpublished dataset whose records have responses")
        existing = _loaded(found) if found is not None and draft is None else None
        spec = _spec_for(name, rows, options[name], existing)
        if existing is not None:
            diffs = settings_differences(spec, existing)
            if diffs:
                problems.append(f"{name}: " + "; ".join(diffs))
                continue
        present = external_ids(existing) if existing is not None else set()
        payloads = [_payload_for(r, spec) for r in rows if f"{EXTERNAL_ID_PREFIX}{r.task_id}" not in present]
        field_types = {f: ("chat" if spec.chat_prompt and f == "prompt" else "text") for f in spec.fields()}
        for p in payloads:
            bad_records.extend(f"{name} record {p.id}: {why}" for why in record_problems(p, field_types, spec.questions()))
        plans.append(_Plan(spec, existing, draft, payloads, len(rows)))
    if problems:
        raise ArgillaBridgeError(
            "Argilla dataset(s) exist with settings that differ from what prefloop expects, and Argilla settings "
            "cannot change after a dataset is created:\n  " + "\n  ".join(problems),
            hint="set a new argilla.dataset_prefix in prefloop.yaml to push into fresh datasets, or delete the listed "
            "dataset(s) in Argilla (pull first: their responses go with them) and push again",
        )
    if bad_records:
        shown = bad_records[:20] + ([f"… and {len(bad_records) - 20} more"] if len(bad_records) > 20 else [])
        raise ArgillaBridgeError(
            f"Argilla would refuse {len(bad_records)} value(s); nothing was written:\n  " + "\n  ".join(shown),
            hint="a new dataset shows prompts that cannot be a chat as plain text: set a new argilla.dataset_prefix "
            "in prefloop.yaml and push again",
        )

    # 2. replace interrupted drafts, create what is missing, then log only the new records
    for plan in plans:
        writing.dataset, writing.batch = plan.spec.name, []
        if plan.draft is not None:
            with quiet():
                plan.draft.delete()
        ds = plan.existing
        if ds is None:
            ds = _create_dataset(client, ws, plan.spec, cfg.annotation.guidelines)
        elif cfg.annotation.guidelines.strip() and ds.settings.guidelines != cfg.annotation.guidelines:
            ds.settings.guidelines = cfg.annotation.guidelines
            with quiet():
                ds.update()  # guidelines are the one setting Argilla lets change
        for i in range(0, len(plan.payloads), _LOG_BATCH):
            writing.batch = plan.payloads[i : i + _LOG_BATCH]
            with quiet():
                ds.records.log([p.to_argilla() for p in writing.batch], batch_size=len(writing.batch))
        report.datasets.append(DatasetPush(plan.spec.name, plan.existing is None, len(plan.payloads), plan.n_tasks - len(plan.payloads)))
    writing.dataset, writing.batch = None, []
    return report


def _spec_for(name: str, rows: list[_TaskRow], options: tuple[Any, ...], existing: Any | None) -> DatasetSpec:
    first = rows[0]
    if existing is not None:  # an existing dataset keeps its own prompt field type
        chat = {f.name: f.type for f in existing.settings.fields}.get("prompt") == "chat"
    else:  # a chat field when some prompt is a conversation and Argilla can show every one as such
        chat = any(r.messages for r in rows) and all(chat_problem(r.messages) is None for r in rows if r.messages)
    return DatasetSpec(
        name=name,
        kind=first.kind,
        round_number=first.round_number,
        candidate_fields=get_kind(first.kind).argilla_fields(len(first.generation_ids)),
        question_options=options,
        min_submitted=max(r.overlap for r in rows) if existing is None else _existing_k(existing, rows),
        chat_prompt=chat,
    )


def _loaded(dataset: Any) -> Any:
    """``dataset`` with its settings fetched."""
    with quiet():
        return dataset.get()


def _has_responses(dataset: Any) -> bool:
    ds = _loaded(dataset)
    with quiet():
        return any(len(r.responses) > 0 for r in ds.records(with_suggestions=False, with_responses=True))


def _existing_k(existing: Any, rows: list[_TaskRow]) -> int:
    """An existing dataset keeps its k if every task fits it; otherwise the mismatch is reported."""
    k = getattr(existing.settings.distribution, "min_submitted", None)
    want = max(r.overlap for r in rows)
    return k if k is not None and want <= k else want


def _create_dataset(client: Any, workspace: Any, spec: DatasetSpec, guidelines: str) -> Any:
    from argilla import Dataset

    errors = sdk_errors()
    ds = Dataset(name=spec.name, workspace=workspace, settings=build_settings(spec, guidelines), client=client)
    try:
        with quiet():
            ds.create()
    except errors.ForbiddenError:
        raise ArgillaBridgeError(
            f"the Argilla user of {API_KEY_ENV} may not create datasets in workspace {workspace.name!r}",
            hint="use the API key of an owner, or of an admin who is a member of that workspace",
        ) from None
    except errors.ArgillaError as exc:
        if isinstance(exc.__cause__, Exception):
            raise exc.__cause__ from None  # publishing failed: the connection, or a setting Argilla refused
        raise ArgillaBridgeError(f"Argilla refused to create dataset {spec.name!r}: {exc}") from None
    return ds
