"""The Argilla bridge: prefloop's human queue flows into Argilla datasets, responses flow back.

Teams that already annotate in Argilla keep doing so; everything after the labels
(aggregation, agreement, export, rounds) reads the same annotation rows as for the built-in page.

Mapping (one Argilla dataset per round and task kind, named ``<prefix>-round-<n>-<kind>``):

- fields: ``prompt`` (a chat field, or a text field when every prompt is plain text) and the
  candidates as plain-text fields (never rendered as markdown/HTML: model output is untrusted);
- questions: compare → ``preference`` label A / B / tie; rank → ``ranking`` over the candidates;
  rate → ``rating`` over the task's scale; edit → ``corrected`` text prefilled with the output;
  every kind also gets an optional ``comment`` (stored as the annotation's rationale);
- judge verdicts travel as suggestions (type model, score = confidence, one per ranked item for a
  ranking, agent = judge name) when ``annotation.show_judge_suggestions`` is on; the task overlap k becomes
  ``TaskDistribution(min_submitted=k)``; guidelines come from ``annotation.guidelines``;
- record metadata carries the prefloop task id, round and generation ids (the external id is
  ``prefloop-task-<id>``), so a pull maps labels back to generation ids without guessing.

Pull is keyed by (Argilla user, record): each Argilla user becomes the human annotator
``argilla:<username>`` and each record one task, and :meth:`Queue.record` upserts per
(task, annotator), so pulling twice writes nothing new and a changed response updates the
annotation with its previous value kept in ``history``. Drafts are not imported; a discarded
record becomes a skip, and so does a submitted answer later taken back to draft or deleted
(withdrawn: the task's slot reopens). Everything is fetched before anything is written: a failing
server leaves the store untouched.

Push builds and checks every record (:mod:`.argilla_rules`) before its first write; a push that
is interrupted anyway (connection lost) is completed by the next one: records already there are
not sent again, and a dataset left unpublished is created again.

The ``argilla`` SDK is imported inside functions: ``prefloop --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from prefloop.errors import ConfigError, InvalidAnswer, NotFoundError, PrefloopError

from .answers import TIE
from .argilla_rules import (
    Hint,
    RecordPayload,
    agent_name,
    chat_problem,
    record_problems,
    suggestion_score,
)
from .models import (
    Annotation,
    AnnotationStatus,
    Annotator,
    AnnotatorKind,
    Generation,
    Round,
    Task,
    TaskStatus,
)

if TYPE_CHECKING:
    from prefloop.project import Project

API_KEY_ENV = "ARGILLA_API_KEY"
ANNOTATOR_PREFIX = "argilla:"
EXTERNAL_ID_PREFIX = "prefloop-task-"
#: Argilla's rating questions take integer values 0–10, at most 11 of them.
ARGILLA_RATING_RANGE = (0, 10)
_LOG_BATCH = 200
_LIST_PAGE = 500

# Question and field names: prefloop's contract with the datasets it creates.
Q_PREFERENCE, Q_RANKING, Q_RATING, Q_CORRECTED, Q_COMMENT = "preference", "ranking", "rating", "corrected", "comment"
MAIN_QUESTION = {"compare": Q_PREFERENCE, "rank": Q_RANKING, "rate": Q_RATING, "edit": Q_CORRECTED}
LABEL_A, LABEL_B = "A", "B"


class ArgillaBridgeError(PrefloopError):
    """Argilla could not be reached or used as configured."""


# ---------------------------------------------------------------------------------------------
# What prefloop expects a dataset to look like
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetSpec:
    """The settings prefloop creates for one (round, kind) group, in comparable form."""

    name: str
    kind: str
    round_number: int | None
    candidate_fields: tuple[str, ...]
    question_options: tuple[str, ...] | tuple[int, ...]  # labels, ranking values, or rating values
    min_submitted: int
    chat_prompt: bool

    def questions(self) -> dict[str, tuple[str, tuple[Any, ...] | None]]:
        """question name → (Argilla type, options)."""
        main = {
            "compare": "label_selection", "rank": "ranking", "rate": "rating", "edit": "text",
        }[self.kind]
        return {
            MAIN_QUESTION[self.kind]: (main, tuple(self.question_options) or None),
            Q_COMMENT: ("text", None),
        }

    def fields(self) -> dict[str, set[str]]:
        """field name → accepted Argilla types (the prompt may be chat or text)."""
        return {"prompt": {"chat", "text"}, **{f: {"text"} for f in self.candidate_fields}}


def _candidate_fields(kind: str, n: int) -> tuple[str, ...]:
    if kind == "compare":
        return ("response_a", "response_b")
    if kind == "rank":
        return tuple(f"response_{i}" for i in range(1, n + 1))
    return ("response",)


def dataset_name(prefix: str, round_number: int | None, kind: str, variant: str = "") -> str:
    where = f"round-{round_number}" if round_number is not None else "no-round"
    return f"{prefix}-{where}-{kind}{('-' + variant) if variant else ''}"


_NAME_RE = r"^{prefix}-(?:round-(?P<round>\d+)|no-round)-(?P<kind>compare|rank|rate|edit)(?:-.*)?$"


def _parse_name(prefix: str, name: str) -> tuple[int | None, str] | None:
    m = re.match(_NAME_RE.format(prefix=re.escape(prefix)), name)
    if m is None:
        return None
    return (int(m["round"]) if m["round"] is not None else None), m["kind"]


def build_settings(spec: DatasetSpec, guidelines: str) -> Any:
    """The ``rg.Settings`` for a spec."""
    import argilla as rg

    prompt = (
        rg.ChatField("prompt", title="Prompt", use_markdown=False)
        if spec.chat_prompt
        else rg.TextField("prompt", title="Prompt", use_markdown=False)
    )
    titles = {"response_a": "Response A", "response_b": "Response B", "response": "Response"}
    fields = [prompt] + [
        rg.TextField(f, title=titles.get(f, f.replace("_", " ").capitalize()), use_markdown=False)
        for f in spec.candidate_fields
    ]
    opts = list(spec.question_options)
    if spec.kind == "compare":
        names = {LABEL_A: "A is better", LABEL_B: "B is better", TIE: "About the same"}
        main = rg.LabelQuestion(Q_PREFERENCE, labels={o: names[o] for o in opts}, title="Which response is better?")
    elif spec.kind == "rank":
        main = rg.RankingQuestion(
            Q_RANKING, values={o: o.replace("_", " ").capitalize() for o in opts}, title="Rank the responses, best first"
        )
    elif spec.kind == "rate":
        main = rg.RatingQuestion(Q_RATING, values=list(opts), title=f"Rate the response ({opts[0]} = worst, {opts[-1]} = best)")
    else:
        main = rg.TextQuestion(Q_CORRECTED, title="Correct the response (it is prefilled: edit it)", use_markdown=False)
    comment = rg.TextQuestion(Q_COMMENT, title="Comment (optional)", required=False, use_markdown=False)
    return rg.Settings(
        guidelines=guidelines.strip() or None,
        fields=fields,
        questions=[main, comment],
        metadata=[
            rg.IntegerMetadataProperty("task_id", title="prefloop task", visible_for_annotators=False),
            rg.IntegerMetadataProperty("round", title="prefloop round", visible_for_annotators=False),
        ],
        allow_extra_metadata=True,
        distribution=rg.TaskDistribution(min_submitted=spec.min_submitted),
    )


def settings_differences(spec: DatasetSpec, dataset: Any) -> list[str]:
    """How an existing Argilla dataset's settings differ from what prefloop would create."""
    diffs: list[str] = []
    have_fields = {f.name: f.type for f in dataset.settings.fields}
    for name, types in spec.fields().items():
        if name not in have_fields:
            diffs.append(f"field {name!r} is missing")
        elif have_fields[name] not in types:
            diffs.append(f"field {name!r} is a {have_fields[name]} field, expected {' or '.join(sorted(types))}")
    for name in sorted(set(have_fields) - set(spec.fields())):
        diffs.append(f"field {name!r} is not one prefloop creates")
    have_q = {q.name: q for q in dataset.settings.questions}
    for name, (qtype, options) in spec.questions().items():
        q = have_q.get(name)
        if q is None:
            diffs.append(f"question {name!r} is missing")
            continue
        if q.type != qtype:
            diffs.append(f"question {name!r} is a {q.type} question, expected {qtype}")
            continue
        got = _question_options(q)
        if options is not None and tuple(got or ()) != tuple(options):
            diffs.append(f"question {name!r} has options {list(got or [])}, expected {list(options)}")
    for name in sorted(set(have_q) - set(spec.questions())):
        diffs.append(f"question {name!r} is not one prefloop creates")
    from argilla import IntegerMetadataProperty

    have_meta = {m.name: m for m in dataset.settings.metadata}
    for name in ("task_id", "round"):
        if name in have_meta and not isinstance(have_meta[name], IntegerMetadataProperty):
            diffs.append(f"metadata property {name!r} is a {type(have_meta[name]).__name__}, expected an integer property")
    if not dataset.settings.allow_extra_metadata and "generation_ids" not in have_meta:
        diffs.append("extra metadata is not allowed (prefloop keeps each record's generation_ids there)")
    k = getattr(dataset.settings.distribution, "min_submitted", None)
    if k != spec.min_submitted:
        diffs.append(f"task distribution min_submitted is {k}, expected {spec.min_submitted} (queue overlap)")
    return diffs


def _question_options(q: Any) -> tuple[Any, ...] | None:
    for attr in ("labels", "values"):
        v = getattr(q, attr, None)
        if v is not None:
            return tuple(v)
    return None


# ---------------------------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------------------------
def api_key_from_env() -> str:
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise ConfigError(
            f"{API_KEY_ENV} is not set: prefloop reads the Argilla API key only from the environment",
            hint=f"copy your key from 'My settings' in the Argilla UI and `export {API_KEY_ENV}=...`",
        )
    return key


def space_headers(url: str) -> dict[str, str]:
    """``HF_TOKEN`` as a bearer token for a private Hugging Face Space (``*.hf.space``) only:
    the token never goes to any other host."""
    from urllib.parse import urlparse

    host = (urlparse(url).hostname or "").lower()
    token = os.environ.get("HF_TOKEN", "").strip()
    return {"Authorization": f"Bearer {token}"} if token and host.endswith(".hf.space") else {}


def connect(config: Any) -> Any:
    """An authenticated ``rg.Argilla`` client for ``config`` (an :class:`ArgillaConfig`).

    Unreachable servers, refused keys and servers that are not Argilla 2 become
    :class:`ArgillaBridgeError`s that say which and what to do.
    """
    import httpx
    from argilla import Argilla
    from argilla._exceptions import ArgillaAPIError, ArgillaCredentialsError

    key = api_key_from_env()
    url = config.api_url.rstrip("/")
    try:
        with _quiet():
            return Argilla(
                api_url=url, api_key=key, timeout=max(1, math.ceil(config.timeout_s)), retries=config.retries,
                headers=space_headers(url),
            )
    except ArgillaCredentialsError:
        raise ArgillaBridgeError(
            f"Argilla at {url} refused the API key in {API_KEY_ENV}",
            hint="check the key under 'My settings' in the Argilla UI (a key belongs to one server)",
        ) from None
    except httpx.TransportError as exc:
        raise ArgillaBridgeError(
            f"cannot reach Argilla at {url}: {type(exc).__name__}: {exc or 'no answer'}",
            hint="start the server (docker compose up, or wake the Hugging Face Space) or fix argilla.api_url in prefloop.yaml",
        ) from None
    except ArgillaAPIError as exc:
        raise ArgillaBridgeError(
            f"{url} did not answer like an Argilla 2 server (HTTP {exc.status_code} on /api/v1/me)",
            hint="argilla.api_url must be the server's base URL, e.g. http://localhost:6900 or https://<space>.hf.space",
        ) from None


@dataclass
class _Writing:
    """What a push is writing right now, so that a refused write names its dataset and records."""

    dataset: str | None = None
    batch: list[RecordPayload] = field(default_factory=list)


@contextlib.contextmanager
def _talking_to(url: str, writing: _Writing | None = None):  # noqa: ANN202
    """Turn transport and HTTP failures after connecting into one-line errors that say whose fault
    it is: the connection, the key (401/403), or a value Argilla refuses (400/422)."""
    import httpx
    from argilla._exceptions import ArgillaAPIError

    try:
        yield
    except httpx.TransportError as exc:
        raise ArgillaBridgeError(
            f"lost the connection to Argilla at {url}: {type(exc).__name__}",
            hint="check the server, then run the command again (push and pull are safe to repeat)",
        ) from None
    except (ArgillaAPIError, httpx.HTTPStatusError) as exc:
        code = getattr(exc, "status_code", None) or exc.response.status_code  # type: ignore[union-attr]
        raise _refusal(url, code, exc, writing or _Writing()) from None


def _refusal(url: str, code: int, exc: Exception, writing: _Writing) -> ArgillaBridgeError:
    reasons = _server_reasons(exc)
    if code == 401:
        return ArgillaBridgeError(
            f"Argilla at {url} no longer accepts the API key in {API_KEY_ENV} (HTTP 401)",
            hint="check the key under 'My settings' in the Argilla UI (a key belongs to one server)",
        )
    if code == 403:
        return ArgillaBridgeError(
            f"Argilla at {url} refused a request (HTTP 403): the user of {API_KEY_ENV} may not do this",
            hint="an owner's API key (or an admin's in that workspace) can do everything prefloop needs",
        )
    if code in (400, 422):
        where = f"dataset {writing.dataset}" if writing.dataset else "a request"
        lines = []
        for position, place, reason in reasons:
            rec = writing.batch[position].id if position is not None and position < len(writing.batch) else None
            lines.append(", ".join(x for x in (f"record {rec}" if rec else "", place and f"field {place}", reason) if x))
        return ArgillaBridgeError(
            f"Argilla at {url} refused a value in {where} (HTTP {code}): " + "; ".join(lines or ["no reason given"]),
            hint="this dataset breaks a rule of the Argilla server that prefloop does not check before writing "
            "(e.g. bounds set by hand on a metadata property): fix that dataset, or set a new argilla.dataset_prefix, "
            "then push again (records already there are not sent twice)",
        )
    return ArgillaBridgeError(
        f"Argilla at {url} failed a request (HTTP {code}): " + "; ".join(r for _, _, r in reasons),
        hint="check the Argilla server's log, then run the command again (push and pull are safe to repeat)",
    )


_POSITION = re.compile(r"^Record at position (\d+) is not valid because (.*)$", re.DOTALL)


def _server_reasons(exc: Exception) -> list[tuple[int | None, str, str]]:
    """(record position in the batch, field, reason) for each complaint in an Argilla error body."""
    import json

    response = getattr(exc, "response", None) or getattr(exc.__context__, "response", None)
    try:
        body = response.json() if response is not None else json.loads(str(exc).split("Details: ", 1)[1])
    except (ValueError, IndexError):
        return [(None, "", _one_line(str(exc)))]
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, str):
        m = _POSITION.match(detail)
        return [(int(m[1]), "", _one_line(m[2]))] if m else [(None, "", _one_line(detail))]
    errors = (detail or {}).get("params", {}).get("errors") if isinstance(detail, dict) else None
    if not errors:
        return [(None, "", _one_line(json.dumps(detail)))]
    out: list[tuple[int | None, str, str]] = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", []) if x != "body"]
        position = int(loc[1]) if len(loc) > 1 and loc[0] == "items" and loc[1].isdigit() else None
        place = ".".join(loc[2:] if position is not None else loc)
        out.append((position, place, _one_line(str(e.get("msg", "")))))
    return out


def _one_line(text: str, limit: int = 300) -> str:
    """Server text for a one-line error: control characters escaped, whitespace collapsed, cut short."""
    text = " ".join("".join(c if c.isprintable() or c.isspace() else ascii(c)[1:-1] for c in text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _workspace(client: Any, name: str, url: str) -> Any:
    from argilla._exceptions import ArgillaAPIError

    try:
        models = client.api.workspaces.list()
    except ArgillaAPIError as exc:
        raise ArgillaBridgeError(f"Argilla at {url} would not list workspaces (HTTP {exc.status_code})") from None
    for m in models:
        if m.name == name:
            from argilla.workspaces import Workspace

            return Workspace.from_model(client=client, model=m)
    available = ", ".join(sorted(m.name for m in models)) or "none"
    raise ArgillaBridgeError(
        f"workspace {name!r} does not exist on Argilla at {url} (or this key's user is not a member); available: {available}",
        hint="create it in Argilla (owner: `rg.Workspace(name).create()` or the UI) and add your annotators, or set argilla.workspace",
    )


@contextlib.contextmanager
def _quiet():  # noqa: ANN202
    """Silence the SDK's own tqdm bars and warnings (prefloop reports progress itself)."""
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _existing_datasets(client: Any, workspace: Any) -> dict[str, Any]:
    """name → dataset model for every dataset in the workspace."""
    return {m.name: m for m in client.api.datasets.list(workspace_id=workspace.id)}


def _dataset_from_model(client: Any, model: Any) -> Any:
    from argilla import Dataset

    return Dataset.from_model(model=model, client=client)


def _load_dataset(client: Any, model: Any) -> Any:
    ds = _dataset_from_model(client, model)
    with _quiet():
        return ds.get()


def _iter_record_models(client: Any, dataset_id: Any, *, with_responses: bool) -> list[Any]:
    out: list[Any] = []
    offset = 0
    while True:
        page = client.api.records.list(
            dataset_id=dataset_id, offset=offset, limit=_LIST_PAGE, with_suggestions=False, with_responses=with_responses
        )
        out.extend(page)
        if len(page) < _LIST_PAGE:
            return out
        offset += len(page)


# ---------------------------------------------------------------------------------------------
# Push
# ---------------------------------------------------------------------------------------------
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
    """(dataset name, question options) for a task."""
    if t.kind == "compare":
        opts: tuple[Any, ...] = (LABEL_A, LABEL_B, TIE) if t.allow_tie else (LABEL_A, LABEL_B)
        variant = "" if t.allow_tie == default_ties else ("ties" if t.allow_tie else "no-ties")
    elif t.kind == "rank":
        opts = _candidate_fields("rank", len(t.generation_ids))
        variant = str(len(t.generation_ids))
    elif t.kind == "rate":
        lo, hi = t.scale or default_scale
        opts = tuple(range(lo, hi + 1))
        variant = "" if (lo, hi) == tuple(default_scale) else f"{lo}-{hi}"
    else:
        opts = ()
        variant = ""
    return dataset_name(prefix, t.round_number, t.kind, variant), opts


def _check_rating_scale(name: str, opts: tuple[int, ...]) -> None:
    lo, hi = ARGILLA_RATING_RANGE
    if opts[0] < lo or opts[-1] > hi:
        raise ConfigError(
            f"{name}: the rating scale {opts[0]}–{opts[-1]} cannot be shown in Argilla, whose rating questions take integers {lo}–{hi}",
            hint="use a queue.rating_scale inside 0–10 (e.g. [1, 5]) for tasks meant for Argilla",
        )


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
    hints = []
    if t.kind == "edit":
        if t.texts[0].strip():  # the prefill; an empty output has nothing to prefill
            hints.append(Hint(Q_CORRECTED, t.texts[0], None, agent_name(t.models[0], "original output")))
    elif t.judge is not None:
        value = _judge_value(t, spec)
        if value is not None:
            hints.append(Hint(
                MAIN_QUESTION[t.kind], value, suggestion_score(t.judge["confidence"], value), agent_name(t.judge["agent"], "judge"),
            ))
    metadata: dict[str, Any] = {"task_id": t.task_id, "generation_ids": t.generation_ids}
    if t.round_number is not None:
        metadata["round"] = t.round_number
    return RecordPayload(id=f"{EXTERNAL_ID_PREFIX}{t.task_id}", fields=fields, metadata=metadata, hints=hints)


def _judge_value(t: _TaskRow, spec: DatasetSpec) -> Any:
    """A judge's stored answer as the value of the dataset's main question (None: not showable)."""
    v = t.judge["value"] if t.judge else {}
    gids = t.generation_ids
    if t.kind == "compare" and "choice" in v:
        if v["choice"] == TIE:
            return TIE if TIE in spec.question_options else None
        choice = _as_int(v["choice"])
        return {gids[0]: LABEL_A, gids[1]: LABEL_B}.get(choice) if choice is not None else None
    if t.kind == "rate" and "rating" in v:
        rating = _as_int(v["rating"])
        return rating if rating in spec.question_options else None
    if t.kind == "rank" and isinstance(v.get("ranking"), list):
        order = [_as_int(g) for g in v["ranking"]]
        if sorted(order, key=str) != sorted(gids, key=str):  # only a complete ranking of this task's outputs
            return None
        return [spec.candidate_fields[gids.index(g)] for g in order]  # type: ignore[arg-type]
    return None


def _as_int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def _round_number(project: Project, round_id: int | None) -> int | None:
    """The number of round ``round_id`` (None for every round); an unknown id is an error."""
    if round_id is None:
        return None
    with project.store.session() as s:
        r = s.get(Round, round_id)
        if r is None:
            raise NotFoundError(f"round id {round_id} does not exist")
        return r.number


def push(project: Project, *, round_id: int | None = None) -> PushReport:
    """Create or extend the Argilla datasets for the open tasks (of one round, or all).

    Re-pushing adds only records whose task is not in the dataset yet. Every existing dataset
    is checked against the settings prefloop expects before anything is created or logged.
    """
    _round_number(project, round_id)
    cfg = project.config
    tasks = _load_open_tasks(project, round_id)
    groups: dict[str, list[_TaskRow]] = defaultdict(list)
    options: dict[str, tuple[Any, ...]] = {}
    for t in tasks:
        name, opts = _group_key(t, cfg.argilla.dataset_prefix, tuple(cfg.queue.rating_scale), cfg.queue.allow_ties)
        groups[name].append(t)
        options[name] = opts
    for name, opts in options.items():
        if groups[name][0].kind == "rate":
            _check_rating_scale(name, opts)

    client = connect(cfg.argilla)
    url = cfg.argilla.api_url.rstrip("/")
    writing = _Writing()
    with _talking_to(url, writing):
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
    client: Any, url: str, cfg: Any, groups: dict[str, list[_TaskRow]], options: dict[str, tuple[Any, ...]], writing: _Writing
) -> PushReport:
    ws = _workspace(client, cfg.argilla.workspace, url)
    report = PushReport(url=url, workspace=ws.name)
    existing_models = _existing_datasets(client, ws)

    # 1. plan, build and check every record before writing anything
    plans: list[_Plan] = []
    problems: list[str] = []
    bad_records: list[str] = []
    for name in sorted(groups):
        rows = groups[name]
        model = existing_models.get(name)
        # A dataset that was never published is what an interrupted create leaves (Argilla creates
        # a draft, then its fields, questions and metadata, then publishes): it is created again.
        draft = model if model is not None and getattr(model, "status", "ready") != "ready" else None
        if draft is not None and _has_responses(client, draft):
            problems.append(f"{name}: an unpublished dataset whose records have responses")
        existing = _load_dataset(client, model) if model is not None and draft is None else None
        spec = _spec_for(name, rows, options[name], existing)
        if existing is not None:
            diffs = settings_differences(spec, existing)
            if diffs:
                problems.append(f"{name}: " + "; ".join(diffs))
                continue
        present = {m.external_id for m in _iter_record_models(client, existing.id, with_responses=False)} if existing else set()
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
            _dataset_from_model(client, plan.draft).delete()
        ds = plan.existing
        if ds is None:
            ds = _create_dataset(client, ws, plan.spec, cfg.annotation.guidelines)
        elif cfg.annotation.guidelines.strip() and ds.settings.guidelines != cfg.annotation.guidelines:
            ds.settings.guidelines = cfg.annotation.guidelines
            with _quiet():
                ds.update()  # guidelines are the one setting Argilla lets change
        for i in range(0, len(plan.payloads), _LOG_BATCH):
            writing.batch = plan.payloads[i : i + _LOG_BATCH]
            with _quiet():
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
        candidate_fields=_candidate_fields(first.kind, len(first.generation_ids)),
        question_options=options,
        min_submitted=max(r.overlap for r in rows) if existing is None else _existing_k(existing, rows),
        chat_prompt=chat,
    )


def _has_responses(client: Any, model: Any) -> bool:
    ds = _load_dataset(client, model)
    with _quiet():
        return any(len(r.responses) > 0 for r in ds.records(with_suggestions=False, with_responses=True))


def _existing_k(existing: Any, rows: list[_TaskRow]) -> int:
    """An existing dataset keeps its k if every task fits it; otherwise the mismatch is reported."""
    k = getattr(existing.settings.distribution, "min_submitted", None)
    want = max(r.overlap for r in rows)
    return k if k is not None and want <= k else want


def _create_dataset(client: Any, workspace: Any, spec: DatasetSpec, guidelines: str) -> Any:
    from argilla import Dataset
    from argilla._exceptions import ArgillaError, ForbiddenError

    ds = Dataset(name=spec.name, workspace=workspace, settings=build_settings(spec, guidelines), client=client)
    try:
        with _quiet():
            ds.create()
    except ForbiddenError:
        raise ArgillaBridgeError(
            f"the Argilla user of {API_KEY_ENV} may not create datasets in workspace {workspace.name!r}",
            hint="use the API key of an owner, or of an admin who is a member of that workspace",
        ) from None
    except ArgillaError as exc:
        if isinstance(exc.__cause__, Exception):
            raise exc.__cause__ from None  # publishing failed: the connection, or a setting Argilla refused
        raise ArgillaBridgeError(f"Argilla refused to create dataset {spec.name!r}: {exc}") from None
    return ds


# ---------------------------------------------------------------------------------------------
# Pull
# ---------------------------------------------------------------------------------------------
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


def _argilla_value(kind: str, values: dict[str, Any], generation_ids: list[int], fields: tuple[str, ...]) -> dict[str, Any]:
    """An Argilla response's main value as a prefloop answer (validated later by the queue)."""
    main = (values.get(MAIN_QUESTION[kind]) or {}).get("value")
    if main is None:
        raise InvalidAnswer(f"the response has no value for question {MAIN_QUESTION[kind]!r}")
    if kind == "compare":
        if main == TIE:
            return {"choice": TIE}
        if main not in (LABEL_A, LABEL_B):
            raise InvalidAnswer(f"label {main!r} is not one of A, B, tie")
        return {"choice": generation_ids[0 if main == LABEL_A else 1]}
    if kind == "rank":
        items = [(v["rank"], v["value"]) if isinstance(v, dict) else (i + 1, v) for i, v in enumerate(main)]
        ranks = [r for r, _ in items]
        if len(set(ranks)) != len(ranks):
            raise InvalidAnswer("the ranking puts several responses at the same rank; prefloop needs a strict order")
        order = [v for _, v in sorted(items, key=lambda x: x[0])]
        unknown = [v for v in order if v not in fields]
        if unknown:
            raise InvalidAnswer(f"ranking value(s) {unknown} are not responses of this record")
        return {"ranking": [generation_ids[fields.index(v)] for v in order]}
    if kind == "rate":
        return {"rating": main}
    return {"text": main}


def _fetch(project: Project, round_id: int | None) -> tuple[PullReport, list[_Item], dict[str, str], set[str]]:
    """Every response in prefloop's datasets (of one round, or all), the users who gave them, and
    the ids of every record listed."""
    cfg = project.config
    round_number = _round_number(project, round_id)
    client = connect(cfg.argilla)
    url = cfg.argilla.api_url.rstrip("/")
    with _talking_to(url):
        return _fetch_all(client, url, cfg, round_id, round_number)


def _fetch_all(
    client: Any, url: str, cfg: Any, round_id: int | None, round_number: int | None
) -> tuple[PullReport, list[_Item], dict[str, str], set[str]]:
    ws = _workspace(client, cfg.argilla.workspace, url)
    report = PullReport(url=url, workspace=ws.name)
    items: list[_Item] = []
    listed: set[str] = set()
    for name, model in sorted(_existing_datasets(client, ws).items()):
        parsed = _parse_name(cfg.argilla.dataset_prefix, name)
        if parsed is None or (round_id is not None and parsed[0] != round_number):
            continue
        report.datasets.append(name)
        kind = parsed[1]
        for rec in _iter_record_models(client, model.id, with_responses=True):
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
        usernames[uid] = _username(client, uid)
    return report, items, usernames, listed


def _username(client: Any, user_id: str) -> str:
    from uuid import UUID

    from argilla._exceptions import ArgillaAPIError

    try:
        return client.api.users.get(UUID(user_id)).username
    except ArgillaAPIError:
        return user_id  # a deleted user, or a key that may not read users: the id still identifies them


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
                    fields = _candidate_fields(task.kind, len(task.generation_ids))
                    value = _argilla_value(task.kind, i.values, i.generation_ids, fields)
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


# ---------------------------------------------------------------------------------------------
# Waiting on Argilla (the round orchestrator with queue.human_queue = "argilla")
# ---------------------------------------------------------------------------------------------
@dataclass
class SyncResult:
    done: bool  # every task of the round has its k human labels
    pulls: int
    waiting_tasks: list[int]  # tasks still short of labels when it returned
    elapsed_s: float
    last_pull: PullReport | None = None


def tasks_short_of_labels(project: Project, round_id: int, min_submitted: int | None = None) -> list[int]:
    """Ids of the round's human tasks with fewer than k submitted human labels (k: the task's overlap)."""
    with project.store.session() as s:
        counts = (
            select(Annotation.task_id, func.count().label("n"))
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .where(Annotator.kind == AnnotatorKind.HUMAN.value, Annotation.status == AnnotationStatus.SUBMITTED.value)
            .group_by(Annotation.task_id)
            .subquery()
        )
        rows = s.execute(
            select(Task.id, Task.overlap, func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.task_id == Task.id)
            .where(Task.round_id == round_id, Task.overlap > 0, Task.status != TaskStatus.CANCELLED.value)
            .order_by(Task.id)
        ).all()
    return [tid for tid, k, n in rows if n < (min_submitted if min_submitted is not None else k)]


def sync_until(
    project: Project,
    round_id: int,
    min_submitted: int | None = None,
    timeout: float | None = None,
    *,
    interval: float | None = None,
    push_first: bool = True,
    on_pull: Any = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> SyncResult:
    """Push the round's tasks, then pull every ``interval`` seconds until each task has
    ``min_submitted`` (default: its overlap) human labels or ``timeout`` seconds pass.

    Defaults come from the ``argilla`` config section. ``on_pull(report, waiting)`` is called
    after each pull (progress display). Returns whether the round is fully labelled.
    ``clock`` and ``sleep`` let a test run the waiting on a simulated clock.
    """
    cfg = project.config.argilla
    timeout = cfg.wait_timeout_s if timeout is None else timeout
    interval = cfg.poll_interval_s if interval is None else interval
    start = clock()
    if push_first:
        push(project, round_id=round_id)
    pulls = 0
    while True:
        report = pull(project, round_id=round_id)
        pulls += 1
        waiting = tasks_short_of_labels(project, round_id, min_submitted)
        if on_pull is not None:
            on_pull(report, waiting)
        elapsed = clock() - start
        if not waiting or elapsed + interval > timeout:
            return SyncResult(not waiting, pulls, waiting, elapsed, report)
        sleep(interval)
