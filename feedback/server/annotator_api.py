"""The annotator's API: who am I, my progress, claim a task, answer it, skip it, give it back.

An annotator only ever sees the task the queue leased to them, and every write names the
caller's own id, so another annotator's token reaches nothing of theirs. Outputs are shown in an
order that is random but stable per (annotator, task), so the server records at submit time
exactly what was shown without trusting the client.
"""

from __future__ import annotations

import hashlib
import random
from typing import cast

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import select

from prefloop.errors import NotAssigned

from .. import activity
from ..passages import task_sources
from ..queue import ClaimedTask
from ..store.models import Annotation, AnnotationStatus, Annotator, AnnotatorKind, Task
from .auth import Principal
from .identity import CallerDep
from .schemas import (
    EVERY_OPERATION_REFUSALS,
    CandidateOut,
    ClaimIn,
    MeOut,
    MessageOut,
    OkOut,
    ProgressOut,
    PromptOut,
    ReceiptOut,
    RoundIdQuery,
    SkipIn,
    SourceOut,
    SubmitIn,
    SuggestionOut,
    TaskIdPath,
    TaskKindName,
    TaskOut,
    error_responses,
)
from .security import reject_unknown_query_parameters
from .state import ServerState, ServerStateDep

LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
REFUSALS = error_responses(*EVERY_OPERATION_REFUSALS)
TASK_REFUSALS = error_responses(*EVERY_OPERATION_REFUSALS, 404, 409)

router = APIRouter(tags=["annotator"], dependencies=[Depends(reject_unknown_query_parameters)])
# Route functions keep their ``api_`` names: FastAPI derives the OpenAPI operationIds from them.


def display_order(annotator_id: int, task_id: int, generation_ids: list[int]) -> list[int]:
    """The order this annotator sees a task's outputs in: random, but stable for (annotator, task).

    Stable so that a reloaded page shows the same order and the server can record, at submit
    time, exactly what was shown without trusting the client.
    """
    seed = int.from_bytes(hashlib.sha256(f"{annotator_id}:{task_id}".encode()).digest()[:8], "big")
    order = list(generation_ids)
    random.Random(seed).shuffle(order)
    return order


def _task_out(state: ServerState, principal: Principal, claimed: ClaimedTask) -> TaskOut:
    texts = {c.generation_id: c.text for c in claimed.candidates}
    order = display_order(principal.id, claimed.task_id, list(texts))
    show_suggestions = state.config.annotation.show_judge_suggestions
    return TaskOut(
        task_id=claimed.task_id,
        kind=cast(TaskKindName, claimed.kind),  # the store holds only these kinds
        round_id=claimed.round_id,
        prompt=PromptOut(text=claimed.prompt_text, messages=[MessageOut(**m) for m in claimed.prompt_messages]),
        sources=_sources(state, claimed),
        candidates=[CandidateOut(generation_id=g, label=LABELS[i % 26], text=texts[g]) for i, g in enumerate(order)],
        scale=list(claimed.scale) if claimed.scale else None,
        allow_tie=claimed.allow_tie,
        lease_expires_at=claimed.lease_expires_at,
        suggestions=_judge_suggestions(state, claimed.task_id) if show_suggestions else None,
    )


def _sources(state: ServerState, claimed: ClaimedTask) -> list[SourceOut]:
    """The passages the outputs' prompt held: a person judging a RAG answer must see its sources."""
    with state.store.session() as s:
        found = task_sources(s, [c.generation_id for c in claimed.candidates])
    return [SourceOut(number=p["number"], title=p["title"], source=p["source"], document_key=p["document_key"],
                      chunk_id=p["chunk_id"], score=p["score"], truncated=bool(p["truncated"]), text=str(p["text"] or ""))
            for p in found]


def _judge_suggestions(state: ServerState, task_id: int) -> list[SuggestionOut]:
    q = (
        select(Annotator.name, Annotation.value, Annotation.rationale, Annotation.confidence)
        .join(Annotator, Annotator.id == Annotation.annotator_id)
        .where(
            Annotation.task_id == task_id, Annotator.kind == AnnotatorKind.JUDGE.value,
            Annotation.status == AnnotationStatus.SUBMITTED.value,
        )
        .order_by(Annotator.name)
    )
    with state.store.session() as s:
        return [SuggestionOut(judge=n, value=v, rationale=r, confidence=c) for n, v, r, c in s.execute(q)]


def _shown_order(state: ServerState, principal: Principal, task_id: int) -> list[int]:
    with state.store.session() as s:
        ids = s.scalar(select(Task.generation_ids).where(Task.id == task_id))
    return display_order(principal.id, task_id, list(ids or []))


@router.get("/api/me", response_model=MeOut, responses=REFUSALS)
def api_me(principal: CallerDep, state: ServerStateDep) -> MeOut:
    """Who the token belongs to, and the guidelines to show."""
    annotation = state.config.annotation
    return MeOut(name=principal.name, role=principal.role, guidelines=annotation.guidelines,
                 show_judge_suggestions=annotation.show_judge_suggestions)


@router.get("/api/me/progress", response_model=ProgressOut, responses=REFUSALS)
def api_progress(principal: CallerDep, state: ServerStateDep, round_id: RoundIdQuery = None) -> ProgressOut:
    """Your own counts: answered, skipped, still available to you, and your current streak."""
    counts = state.queue.progress(principal.id, round_id=round_id)
    return ProgressOut(**counts, streak=activity.streak(state.store, principal.id))


@router.post("/api/tasks/next", response_model=TaskOut,
             responses={204: {"description": "no task is left for you"}, **REFUSALS})
def api_claim(principal: CallerDep, state: ServerStateDep, body: ClaimIn | None = None) -> TaskOut | Response:
    """Claim your next task (a lease); claiming again while you hold one returns the same task."""
    round_id = body.round_id if body else None
    kinds: list[str] | None = list(body.kinds) if body and body.kinds is not None else None
    claimed = state.queue.claim(principal.id, round_id=round_id, kinds=kinds)
    if claimed is None:
        return Response(status_code=204)
    return _task_out(state, principal, claimed)


@router.post("/api/tasks/{task_id}/submit", response_model=ReceiptOut, responses=TASK_REFUSALS)
def api_submit(task_id: TaskIdPath, body: SubmitIn, request: Request, principal: CallerDep,
               state: ServerStateDep) -> ReceiptOut:
    """Answer a task you claimed. Send an ``idempotency_key``: a retry with it never duplicates."""
    meta = {
        "shown_order": _shown_order(state, principal, task_id),
        "via": "token" if request.headers.get("authorization") else "page",
    }
    r = state.queue.submit(
        principal.id, task_id, body.value, idempotency_key=body.idempotency_key,
        duration_s=body.duration_s, rationale=body.rationale, meta=meta,
    )
    if not r.duplicate:
        state.priorities.label_arrived(task_id)
    return ReceiptOut(annotation_id=r.annotation_id, task_id=r.task_id, late=r.late, duplicate=r.duplicate)


@router.post("/api/tasks/{task_id}/skip", response_model=OkOut, responses=TASK_REFUSALS)
def api_skip(task_id: TaskIdPath, principal: CallerDep, state: ServerStateDep, body: SkipIn | None = None) -> OkOut:
    """Decline a task you claimed; it is never served to you again."""
    state.queue.skip(principal.id, task_id, reason=(body.reason if body else None))
    return OkOut()


@router.post("/api/tasks/{task_id}/release", response_model=OkOut, responses=TASK_REFUSALS)
def api_release(task_id: TaskIdPath, principal: CallerDep, state: ServerStateDep) -> OkOut:
    """Give a claimed task back unanswered (it may come back to you later)."""
    if not state.queue.release(principal.id, task_id):
        raise NotAssigned(f"task {task_id} is not assigned to you")
    return OkOut()
