"""The annotation API's schema: what requests may carry and what every answer looks like.

Requests are checked here, before any code touches the store, so that bad input is a 422 that
names the field rather than a crash further in:

- every string (and every string inside a JSON answer) follows the project's text policy
  (:mod:`prefloop.text`: valid Unicode, no NUL), so nothing accepted can break an export;
- every number is finite, and every id fits the id columns of both databases (below 2^31);
- unknown keys are refused.

Answers are typed too (the admin statistics included), so the OpenAPI document at
``/api/openapi.json`` describes every status and body a client can meet; schemathesis checks
the live server against it.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from prefloop.errors import DataError
from prefloop.text import check_json, text_problem

#: the largest id the API takes: ids are ``integer`` columns, 32-bit on PostgreSQL (SQLAlchemy
#: binds them as ``::INTEGER``, so a larger number is an error there, and SQLite overflows at 2^63).
MAX_ID = 2**31 - 1
TaskKindName = Literal["rate", "compare", "rank", "edit"]


def _storable_text(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _storable_json(value: Any) -> Any:
    try:
        return check_json(value, "value", error=DataError)
    except DataError as exc:
        raise ValueError(exc.message) from None


#: what the schema says of every accepted string (lone surrogates are refused too, but a JSON
#: Schema pattern cannot name them portably).
NO_NUL_PATTERN = "^[^\\x00]*$"
#: text the store can hold on both databases and every export can encode.
SafeText = Annotated[str, AfterValidator(_storable_text), Field(json_schema_extra={"pattern": NO_NUL_PATTERN})]


def _answer(key: str, schema: dict[str, Any], title: str) -> dict[str, Any]:
    return {"type": "object", "title": title, "properties": {key: schema}, "required": [key],
            "additionalProperties": False}


#: the four answer shapes; which one a task takes (and which ids, which scale) depends on the task.
ANSWER_SCHEMA = {"anyOf": [
    _answer("rating", {"type": "number", "description": "an integer on the task's scale"}, "rate"),
    _answer("choice", {"anyOf": [{"type": "integer"}, {"const": "tie"}], "description": "a shown generation_id"},
            "compare"),
    _answer("ranking", {"type": "array", "items": {"type": "integer"}, "description": "generation_ids, best first"},
            "rank"),
    _answer("text", {"type": "string", "minLength": 1, "pattern": NO_NUL_PATTERN}, "edit"),
]}
#: an answer: a JSON object whose strings are storable and whose numbers are finite.
SafeJson = Annotated[dict[str, Any], AfterValidator(_storable_json), WithJsonSchema(ANSWER_SCHEMA)]


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


#: a moment sent to clients: the store keeps naive UTC, the API says so (``…+00:00``).
UtcDateTime = Annotated[dt.datetime, AfterValidator(_utc)]
TaskIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="a task id")]
RoundIdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID, description="only this round (its id)")]


# ---------------------------------------------------------------------------------------- errors
class ErrorOut(BaseModel):
    """Every refusal: what is wrong, and what to do about it."""

    error: str
    hint: str | None = None


class FieldProblem(BaseModel):
    loc: list[str | int] = Field(description='where: e.g. ["body", "duration_s"] or ["query", "round_id"]')
    msg: str


class InvalidRequestOut(ErrorOut):
    fields: list[FieldProblem]


#: the refusals every operation can give: a bad token (401), a cookie without its CSRF token on a
#: write or a non-admin on admin data (403), an oversized body (413), an invalid field (422), a
#: sign-in flood (429) and a busy database (503).
EVERY_OPERATION_REFUSALS = (401, 403, 413, 422, 429, 503)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the refusals an operation can give."""
    text = {
        401: "no valid token or session", 403: "signed in, but not allowed (role, or a missing CSRF token)",
        404: "no such object", 409: "the task is not yours to answer now, or is already answered",
        413: "the request body is too large", 422: "a field is invalid (named in `fields`)",
        429: "too many failed sign-ins: wait `Retry-After` seconds",
        503: "the database is briefly busy: retry after `Retry-After` seconds",
    }
    return {c: {"model": InvalidRequestOut if c == 422 else ErrorOut, "description": text[c]} for c in codes}


# ---------------------------------------------------------------------------------------- annotator
class MessageOut(BaseModel):
    role: str
    content: str


class PromptOut(BaseModel):
    text: str
    messages: list[MessageOut]


class CandidateOut(BaseModel):
    generation_id: int
    label: str = Field(description="A, B, … in the order this annotator is shown them")
    text: str


class SuggestionOut(BaseModel):
    judge: str
    value: dict[str, Any]
    rationale: str | None = None
    confidence: float | None = None


class SourceOut(BaseModel):
    """A passage retrieval placed in the prompt the outputs answered (untrusted text, like outputs)."""

    number: int | None = Field(None, description="the [n] the prompt showed it as")
    title: str | None = None
    source: str | None = Field(None, description="where the passage comes from (file, record)")
    document_key: str | None = None
    chunk_id: int | None = None
    score: float | None = Field(None, description="the retriever's score")
    truncated: bool = Field(False, description="cut to fit the context budget")
    text: str = Field(description="the text as placed in the prompt")


class TaskOut(BaseModel):
    task_id: int
    kind: TaskKindName
    round_id: int | None
    prompt: PromptOut
    sources: list[SourceOut] = Field(
        default_factory=list, description="passages retrieval placed in the outputs' prompt (empty without retrieval)"
    )
    candidates: list[CandidateOut] = Field(description="in display order (randomised per annotator)")
    scale: list[int] | None = Field(None, description="[low, high] for rate tasks")
    allow_tie: bool
    lease_expires_at: UtcDateTime
    suggestions: list[SuggestionOut] | None = Field(
        None, description="judge verdicts, only when annotation.show_judge_suggestions is on"
    )


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    round_id: int | None = Field(None, ge=1, le=MAX_ID)
    kinds: list[TaskKindName] | None = None


class SubmitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: SafeJson = Field(
        description='rate {"rating": int}; compare {"choice": generation_id | "tie"}; '
        'rank {"ranking": [generation_id, …]} best first; edit {"text": str}'
    )
    idempotency_key: SafeText | None = Field(
        None, min_length=8, max_length=200, description="one per answer: a retry with the same key never duplicates"
    )
    duration_s: float | None = Field(None, ge=0, le=86400, allow_inf_nan=False, description="time spent on the task")
    rationale: SafeText | None = Field(None, max_length=20000)


class SkipIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: SafeText | None = Field(None, max_length=2000)


class ReceiptOut(BaseModel):
    annotation_id: int
    task_id: int
    late: bool
    duplicate: bool


class OkOut(BaseModel):
    ok: bool = True


class MeOut(BaseModel):
    name: str
    role: str
    guidelines: str
    show_judge_suggestions: bool


class ProgressOut(BaseModel):
    done: int
    skipped: int
    remaining: int
    streak: int = Field(description="answers in the current sitting (no pause over 15 minutes)")


# ---------------------------------------------------------------------------------------- admin
class RoundProgressOut(BaseModel):
    """Human answers given and needed in one round (`round_id` null: tasks of no round)."""

    round_id: int | None
    round: int | None = Field(description="the round's number")
    tasks: int
    complete: int = Field(description="tasks with all the answers they need")
    slots: int = Field(description="human answers needed over all tasks")
    answered: int
    fraction: float = Field(description="answered / slots, rounded to 4 places")


class QueueOut(BaseModel):
    """The queue overall and progress per round (`GET /api/admin/queue`)."""

    tasks: dict[str, dict[str, int]] = Field(description="task counts by kind, then by status")
    total_tasks: int
    open_slots: int
    active_leases: int
    human_annotations: int
    judge_annotations: int
    skips: int
    rounds: list[RoundProgressOut]


class AnnotatorThroughputOut(BaseModel):
    """One annotator's submitted labels per hour."""

    name: str
    counts: list[int] = Field(description="submitted labels per hour, oldest first")
    total: int
    mean_duration_s: float | None = Field(description="mean seconds per answer; null when none was timed")


class ThroughputOut(BaseModel):
    """Labels per annotator per hour (`GET /api/admin/throughput`)."""

    hours: list[UtcDateTime] = Field(description="the start of each hour (UTC), oldest first")
    annotators: list[AnnotatorThroughputOut]


class AnnotatorOut(BaseModel):
    """An annotator, human or judge, with their counts; never a token (`GET /api/admin/annotators`)."""

    model_config = ConfigDict(from_attributes=True)  # read from auth.AnnotatorInfo

    name: str
    kind: Literal["human", "judge"]
    role: Literal["annotator", "admin"]
    active: bool
    has_token: bool
    submitted: int
    skipped: int


class PairAgreementOut(BaseModel):
    """Two annotators over the tasks both answered."""

    a: str
    b: str
    n: int
    observed: float | None = Field(description="share of shared tasks with the same answer")
    kappa: float | None = Field(description="Cohen's κ; null when undefined")


class InterAnnotatorOut(BaseModel):
    """Agreement between humans on one task kind."""

    n_tasks: int
    annotators: list[str]
    alpha: float | None = Field(description="Krippendorff's α; null when undefined")
    pairs: list[PairAgreementOut]


class JudgeAgreementOut(BaseModel):
    """How often a judge's verdict matches the human majority on compare tasks."""

    judge: str
    n: int
    agreement: float | None
    n_without_ties: int
    agreement_without_ties: float | None
    kappa: float | None


class AgreementOut(BaseModel):
    """Inter-annotator and judge–human agreement (`GET /api/admin/agreement`)."""

    inter_annotator: dict[str, InterAnnotatorOut] = Field(description="per task kind (compare, rate)")
    judge_human: list[JudgeAgreementOut]


class JudgeTrustOut(BaseModel):
    """One judge on one task kind against the human majority (see ``prefloop.judges.trust``)."""

    judge: str
    kind: str
    n: int = Field(description="tasks with this judge's verdict and a human majority")
    agree: int
    wrong_side: int = Field(description="both chose, opposite sides (rate: more than a point apart)")
    blind_ties: int = Field(description="the judge said tie where humans chose")
    chose_on_tie: int = Field(description="the judge chose where humans said tie")
    ties: int
    rate: float | None = Field(description="agree / n; null when n is 0")
    low: float | None = Field(description="Wilson interval of rate (judges.trust.level)")
    high: float | None
    status: Literal["trusted", "untrusted", "unmeasured"] = Field(
        description="its verdicts: trusted (count in selection and training), untrusted (left out of training), "
                    "unmeasured (too few checked)")
    ties_trusted: bool
    blind: bool = Field(description="most of its ties were tasks humans decided: its ties are unknown, not doubt")


class TrustOut(BaseModel):
    """Judge trust per judge and task kind (`GET /api/admin/trust`)."""

    min_n: int
    threshold: float
    judges: list[JudgeTrustOut]
