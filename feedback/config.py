"""Config sections owned by ``prefloop.feedback``: store, queue, annotation page, aggregation,
server and Argilla. Secrets (database passwords, API keys) come from the environment only."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from prefloop.strict import StrictModel


class StoreConfig(StrictModel):
    #: SQLAlchemy URL; a relative SQLite path is relative to the project directory.
    #: ``PREFLOOP_DATABASE_URL`` in the environment overrides it (keeps passwords off disk).
    url: str = "sqlite:///prefloop.db"


class QueueConfig(StrictModel):
    overlap: int = Field(1, ge=0, description="distinct humans per task")
    lease_seconds: float = Field(900, gt=0, description="how long a claimed task stays reserved")
    rating_scale: tuple[int, int] = (1, 5)
    allow_ties: bool = True

    @field_validator("rating_scale")
    @classmethod
    def _ordered(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] >= v[1]:
            raise ValueError(f"rating_scale must go from low to high, got {list(v)}")
        return v


class AnnotationConfig(StrictModel):
    guidelines: str = "Choose the answer that is more helpful, correct and concise."
    #: Judge suggestions anchor people: off by default.
    show_judge_suggestions: bool = False


class AggregationConfig(StrictModel):
    #: ratings → a pair only when best − worst mean rating is at least this.
    rating_margin: float = Field(1.0, ge=0)
    #: an output rated at least this (mean) becomes an SFT target.
    sft_min_rating: float = 4.0
    #: a pair whose confidence is below this is left out of the DPO export.
    min_confidence: float = Field(0.5, ge=0, le=1)
    #: how several humans are combined on compare tasks.
    method: Literal["majority"] = "majority"


class ServerConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=1, le=65535)


class ArgillaConfig(StrictModel):
    api_url: str = "http://localhost:6900"
    workspace: str = "prefloop"
