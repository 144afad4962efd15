"""The store's data model: prompts, rounds, generations, tasks, annotations, annotators, leases.

One set of tables serves humans and judges alike: a judge is an :class:`Annotator` of kind
``judge`` and its verdicts are :class:`Annotation` rows on the same :class:`Task` rows that
humans answer, so aggregation, agreement and export never care where a label came from.
Schema changes go through Alembic (``prefloop/feedback/store/migrations``).
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    """Naive UTC now: one convention for SQLite (no time zones) and PostgreSQL alike."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class TaskKind(str, enum.Enum):
    """The names of the built-in task kinds. What a kind means (its outputs, answers, aggregation…)
    and which kinds exist (plug-ins too) is the registry's: :mod:`prefloop.kinds`."""

    RATE = "rate"
    COMPARE = "compare"
    RANK = "rank"
    EDIT = "edit"


class TaskStatus(str, enum.Enum):
    OPEN = "open"  # still needs human labels
    COMPLETE = "complete"  # has `overlap` submitted human labels
    CANCELLED = "cancelled"


class AnnotationStatus(str, enum.Enum):
    SUBMITTED = "submitted"
    SKIPPED = "skipped"  # the annotator declined; never served to them again


class AnnotatorKind(str, enum.Enum):
    HUMAN = "human"
    JUDGE = "judge"


class Role(str, enum.Enum):
    ANNOTATOR = "annotator"
    ADMIN = "admin"


def chat_messages(text: str | None, messages: list[Any] | None) -> list[dict[str, str]]:
    """A stored prompt's text or messages as chat messages (a plain-text prompt is one user turn)."""
    if messages:
        return [dict(m) for m in messages]
    return [{"role": "user", "content": text or ""}]


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Prompt(Base):
    """An input to the policy: plain text or chat messages, with split and tags."""

    __tablename__ = "prompts"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str | None] = mapped_column(Text)
    messages: Mapped[list[Any] | None] = mapped_column(JSON)
    source: Mapped[str | None] = mapped_column(String(500))
    split: Mapped[str] = mapped_column(String(16), default="train")
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Task metadata (e.g. what an oracle needs to score an answer) and an optional reference answer.
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reference: Mapped[str | None] = mapped_column(Text)
    # sha256 of the normalised content: importing the same prompt twice does not duplicate it.
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The bulk write (import, queue add) that created it; hidden while that write is staging.
    bulk_id: Mapped[int | None] = mapped_column(Integer, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    def as_messages(self) -> list[dict[str, str]]:
        """The prompt as chat messages (a plain-text prompt becomes one user turn)."""
        return chat_messages(self.text, self.messages)

    @property
    def display_text(self) -> str:
        """What a person reads: the text, or the last user turn of a chat prompt."""
        if self.text is not None:
            return self.text
        users = [m["content"] for m in self.messages or [] if m.get("role") == "user"]
        return users[-1] if users else ""


class Round(Base):
    """One iteration of the loop, persisted as a resumable state machine."""

    __tablename__ = "rounds"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True)
    state: Mapped[str] = mapped_column(String(32), default="created")
    base_model: Mapped[str | None] = mapped_column(String(500))
    adapter_path: Mapped[str | None] = mapped_column(Text)
    adapter_hash: Mapped[str | None] = mapped_column(String(64))
    config_hash: Mapped[str | None] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: what the round reports (eval, datasets, training, cost, agreement)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: what the orchestrator reads back to resume: ``prefloop.training.rounds.RoundState`` as JSON
    state_data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Artifact(Base):
    """A file a round produced (dataset, adapter, plot), registered with its content hash."""

    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Generation(Base):
    """One completion of a prompt by a model (a policy round, a reference, an import)."""

    __tablename__ = "generations"

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id", ondelete="SET NULL"), index=True)
    text: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(500))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # sampling parameters
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    bulk_id: Mapped[int | None] = mapped_column(Integer, index=True)  # the `queue add` that stored it
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    prompt: Mapped[Prompt] = relationship(lazy="joined")


class Task(Base):
    """A queue item: a question about one or more generations of one prompt.

    ``overlap`` is how many distinct humans must answer it; ``n_done`` counts their submitted
    answers (kept as a counter so that a claim needs no aggregate over annotations).
    """

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id", ondelete="SET NULL"), index=True)
    generation_ids: Mapped[list[Any]] = mapped_column(JSON)  # ordered as created
    overlap: Mapped[int] = mapped_column(Integer, default=1)
    n_done: Mapped[int] = mapped_column(Integer, default=0)
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.OPEN.value)
    scale_min: Mapped[int | None] = mapped_column(Integer)
    scale_max: Mapped[int | None] = mapped_column(Integer)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    prompt: Mapped[Prompt] = relationship(lazy="joined")


# Claims walk open tasks by (priority DESC, id): an index in that order lets them stop at the
# first free task instead of sorting every open one (same in migration 0001). Declared on the
# columns, not as text, so that Alembic's autogenerate sees it unchanged on SQLite too.
Index("ix_tasks_claim", Task.status, Task.priority.desc(), Task.id)


class BulkWrite(Base):
    """One ``prefloop import`` or ``prefloop queue add`` (see :mod:`prefloop.feedback.bulk`).

    ``state``: ``staging`` (its rows are written but hidden; a staging write whose writer died is
    deleted by the next one), ``committed`` (complete and visible; its tasks are still being moved
    into the queue), ``done``.
    """

    __tablename__ = "bulk_writes"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    source: Mapped[str | None] = mapped_column(String(500))
    state: Mapped[str] = mapped_column(String(16), default="staging")
    rows: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class StagedTask(Base):
    """A task of a bulk write on SQLite, waiting here, where no claim looks, until the write commits."""

    __tablename__ = "staged_tasks"

    bulk_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    pos: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # order in the file
    kind: Mapped[str] = mapped_column(String(16))
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    generation_ids: Mapped[list[Any]] = mapped_column(JSON)
    overlap: Mapped[int] = mapped_column(Integer)
    priority: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))
    scale_min: Mapped[int | None] = mapped_column(Integer)
    scale_max: Mapped[int | None] = mapped_column(Integer)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


class Annotator(Base):
    """A human (signs in with a token, stored only as a hash) or a judge (identity in ``meta``)."""

    __tablename__ = "annotators"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default=AnnotatorKind.HUMAN.value)
    role: Mapped[str] = mapped_column(String(16), default=Role.ANNOTATOR.value)
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Annotation(Base):
    """One annotator's answer to one task (or their skip). Unique per (task, annotator).

    ``value`` holds the validated answer: ``{"rating": int}``, ``{"choice": generation_id | "tie"}``,
    ``{"ranking": [generation_id, ...]}`` (best first) or ``{"text": str}``. A changed answer
    (e.g. re-pulled from Argilla) keeps its previous values in ``history``.
    """

    __tablename__ = "annotations"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=AnnotationStatus.SUBMITTED.value)
    value: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    rationale: Mapped[str | None] = mapped_column(Text)
    confidence: Mapped[float | None] = mapped_column(Float)
    duration_s: Mapped[float | None] = mapped_column(Float)  # human time on task, judge latency
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    cost: Mapped[float | None] = mapped_column(Float)  # in the configured currency
    late: Mapped[bool] = mapped_column(Boolean, default=False)  # submitted after the lease expired
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    history: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    annotator: Mapped[Annotator] = relationship(lazy="joined")

    __table_args__ = (UniqueConstraint("task_id", "annotator_id", name="uq_annotation_task_annotator"),)


class Lease(Base):
    """A claim on one slot of a task by one annotator, until ``expires_at``."""

    __tablename__ = "leases"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("task_id", "annotator_id", name="uq_lease_task_annotator"),
        Index("ix_leases_task_expiry", "task_id", "expires_at"),
    )


class JudgeCache(Base):
    """A judge's verdict keyed by (judge identity, prompt, outputs): never judge the same thing twice."""

    __tablename__ = "judge_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of identity + inputs
    judge: Mapped[str] = mapped_column(String(200), index=True)
    verdict: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class BrowserSession(Base):
    """A signed-in browser: the cookie holds a random secret, the store only its sha256.

    Kept server-side so that signing out ends the session for good (a copied cookie stops
    working) and sessions survive a server restart.
    """

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie's secret
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"), index=True)
    #: the first characters of the token hash signed in with: rotating or revoking the token ends the session.
    token_fingerprint: Mapped[str] = mapped_column(String(16))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
