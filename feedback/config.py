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
    #: where humans answer: the built-in annotation page, or Argilla (see the ``argilla`` section);
    #: the round orchestrator waits on the one named here.
    human_queue: Literal["builtin", "argilla"] = "builtin"

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
    """The annotation server. Browser sessions live in the store (signing out ends them; they
    survive a restart)."""

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=1, le=65535)
    #: requests with a larger body are refused (413) before they are read.
    max_body_bytes: int = Field(1_000_000, ge=1024)
    #: failed sign-ins (form or bearer token) allowed per client address, and per token prefix,
    #: per window; then a failing attempt gets 429. A valid token is never refused.
    signin_attempts: int = Field(10, ge=1)
    #: failed sign-ins allowed from all clients together per window (a flood from many addresses).
    signin_overall_attempts: int = Field(1000, ge=1)
    signin_window_seconds: float = Field(60, gt=0)
    #: how long a browser session lasts.
    session_hours: float = Field(12, gt=0)
    #: mark cookies Secure (set this when an HTTPS proxy sits in front of the server).
    secure_cookies: bool = False
    #: requests served at once (worker threads); capped at the store's connection pool (50).
    threads: int = Field(40, ge=1, le=1000)
    #: how long a request waits for a busy database (SQLite's write lock, a PostgreSQL row or
    #: table lock) before the server answers 503 with Retry-After.
    busy_timeout_seconds: float = Field(5, gt=0, le=600)


class ArgillaConfig(StrictModel):
    """The Argilla bridge. The API key is never here: it comes from ``ARGILLA_API_KEY``.
    Guidelines and whether judge suggestions are shown come from the ``annotation`` section."""

    api_url: str = "http://localhost:6900"
    #: must exist on the server (create it in Argilla); prefloop never creates workspaces.
    workspace: str = "prefloop"
    #: datasets are named ``<prefix>-round-<n>-<kind>``; a new prefix starts fresh datasets.
    dataset_prefix: str = Field("prefloop", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")
    #: seconds one HTTP request to Argilla may take, and how often a failed connection is retried.
    timeout_s: float = Field(30, gt=0)
    retries: int = Field(2, ge=0, le=10)
    #: while a round waits on Argilla: seconds between pulls, and how long to wait at most.
    poll_interval_s: float = Field(60, gt=0)
    wait_timeout_s: float = Field(7 * 24 * 3600, gt=0)
