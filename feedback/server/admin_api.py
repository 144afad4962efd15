"""The admin's API: queue state, throughput, annotators, agreement, and the datasets as JSON lines.

Every answer is a typed model from :mod:`.schemas`, so the OpenAPI document describes it and the
schemathesis fuzz test checks the live bodies against it.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from .auth import list_annotators
from .identity import admin
from .schemas import (
    EVERY_OPERATION_REFUSALS,
    AgreementOut,
    AnnotatorOut,
    QueueOut,
    RoundIdQuery,
    ThroughputOut,
    TrustOut,
    error_responses,
)
from .security import reject_unknown_query_parameters
from .state import ServerStateDep

REFUSALS = error_responses(*EVERY_OPERATION_REFUSALS)

router = APIRouter(tags=["admin"], dependencies=[Depends(reject_unknown_query_parameters), Depends(admin)])
# Route functions keep their ``api_`` names: FastAPI derives the OpenAPI operationIds from them.
# The dashboard and export modules are imported on first use: they pull in the statistics code.


@router.get("/api/admin/queue", response_model=QueueOut, responses=REFUSALS)
def api_queue(state: ServerStateDep) -> QueueOut:
    """Queue state overall and progress per round."""
    from .dashboard import queue_summary

    return queue_summary(state.store, state.queue)


@router.get("/api/admin/throughput", response_model=ThroughputOut, responses=REFUSALS)
def api_throughput(
    state: ServerStateDep,
    hours: Annotated[int, Query(ge=1, le=168, description="how many hours back (1–168)")] = 24,
) -> ThroughputOut:
    """Submitted labels per annotator per hour over the last ``hours`` hours."""
    from .dashboard import throughput_summary

    return throughput_summary(state.store, hours)


@router.get("/api/admin/annotators", response_model=list[AnnotatorOut], responses=REFUSALS)
def api_annotators(state: ServerStateDep) -> list[AnnotatorOut]:
    """Every annotator (human and judge) with their counts; never a token."""
    return [AnnotatorOut.model_validate(a) for a in list_annotators(state.store)]


@router.get("/api/admin/agreement", response_model=AgreementOut, responses=REFUSALS)
def api_agreement(state: ServerStateDep, round_id: RoundIdQuery = None) -> AgreementOut:
    """Inter-annotator agreement and judge–human agreement."""
    from .dashboard import agreement_summary

    return agreement_summary(state.store, round_id)


@router.get("/api/admin/trust", response_model=TrustOut, responses=REFUSALS)
def api_trust(state: ServerStateDep, round_id: RoundIdQuery = None) -> TrustOut:
    """Judge trust per judge and task kind: agreement with the human majority, its interval, wrong
    side vs blind ties, and whether the judge's verdicts and ties count."""
    from .dashboard import trust_summary

    return trust_summary(state.store, state.config.judges.trust, round_id)


@router.get(
    "/api/admin/export/{dataset}.jsonl", response_class=Response,
    responses={200: {"description": "one JSON object per line", "content": {"application/x-ndjson": {
        "schema": {"type": "string"}}}}, **REFUSALS},
)
def api_export(
    dataset: Literal["dpo", "sft"], state: ServerStateDep, round_id: RoundIdQuery = None,
    sft_type: Annotated[Literal["prompt-completion", "messages"], Query(
        alias="type", description="SFT rows as prompt/completion (loss on the reply only) or messages")] = "prompt-completion",
) -> Response:
    """The aggregated DPO pairs or SFT targets as JSON lines (TRL conversational format, with provenance)."""
    from prefloop.judges.trust import untrusted_judges

    from ..export import build_dpo_dataset, build_sft_dataset

    rounds = [round_id] if round_id is not None else None
    skip = untrusted_judges(state.store, state.config.judges.trust)  # their labels stay out, as in training
    if dataset == "dpo":
        ds = build_dpo_dataset(state.store, round_ids=rounds, config=state.config.aggregation, exclude_judges=skip)
    else:
        ds = build_sft_dataset(state.store, round_ids=rounds, config=state.config.aggregation, dataset_type=sft_type,
                               exclude_judges=skip)
    body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in ds)
    return Response(body, media_type="application/x-ndjson",
                    headers={"content-disposition": f'attachment; filename="{dataset}.jsonl"'})
