"""Scripted annotators: N concurrent clients that label through the real HTTP API like humans of
a given accuracy, measured against an oracle. The demo uses them to play the humans; the load
test uses them to hammer the server while it is killed and restarted.

An **oracle** is any callable ``oracle(task: SimTask) -> dict | None`` that returns the best
answer value for a task (``{"choice": id | "tie"}``, ``{"rating": n}``, ``{"ranking": [...]}``,
``{"text": ...}``), or ``None`` when it cannot tell (the annotator then answers at random).
:class:`ScoreOracle` builds one from a score per output; :func:`store_oracle` scores outputs by
``generations.meta["oracle_score"]`` or by similarity to ``prompts.reference``.

**Reproducible.** What an annotator answers to a task — the mistake, the skip, the simulated
seconds — is a function of (seed, annotator, task) (:func:`task_rng`). With ``order="round-robin"``
the annotators also take turns, one request at a time, so who answers which task is the same from
run to run (experiments); ``order="concurrent"`` (load tests, the demo) lets them race.

Clients are resilient the way a careful script must be: a request that fails for a network
reason or a 5xx is retried, and a retried submit reuses its idempotency key, so an answer the
server stored before it died is acknowledged once, never stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import functools
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from prefloop.errors import PrefloopError
from prefloop.feedback.server.auth import add_annotator
from prefloop.feedback.store.db import Store
from prefloop.feedback.store.models import Generation, Prompt
from prefloop.kinds import TaskView, get_kind

from .report import Ack, SimulationReport


class SimulationError(PrefloopError):
    """The server refused a scripted annotator's request for a reason a retry cannot fix."""


@dataclass(frozen=True)
class SimTask:
    """A task as the API served it to one annotator (candidates in that annotator's display order)."""

    task_id: int
    kind: str
    prompt_text: str
    candidates: list[tuple[int, str]]  # (generation_id, text)
    scale: tuple[int, int] | None
    allow_tie: bool
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> SimTask:
        return cls(
            task_id=int(data["task_id"]),
            kind=data["kind"],
            prompt_text=data["prompt"]["text"],
            candidates=[(int(c["generation_id"]), c["text"]) for c in data["candidates"]],
            scale=tuple(data["scale"]) if data.get("scale") else None,
            allow_tie=bool(data.get("allow_tie", True)),
            raw=data,
        )

    @property
    def ids(self) -> list[int]:
        return [g for g, _ in self.candidates]

    @property
    def view(self) -> TaskView:
        """The task as its kind reads it (best answer, plausible mistake)."""
        return TaskView(self.ids, [t for _, t in self.candidates], self.scale, self.allow_tie)


Oracle = Callable[[SimTask], "dict[str, Any] | None"]
Score = Callable[[SimTask, int, str], "float | None"]


class ScoreOracle:
    """An oracle from a score per output (higher is better; ratings read it as a share of the scale).

    ``score(task, generation_id, text)`` returns a float (``None``: unknown). ``reference(task)``,
    if given, returns the corrected text for edit tasks.
    """

    def __init__(self, score: Score, reference: Callable[[SimTask], str | None] | None = None, *, tie_tolerance: float = 1e-9) -> None:
        self.score = score
        self.reference = reference
        self.tie_tolerance = tie_tolerance

    def __call__(self, task: SimTask) -> dict[str, Any] | None:
        reference = self.reference
        return get_kind(task.kind).best_answer(
            task.view, lambda g, t: self.score(task, g, t), lambda: reference(task) if reference else None,
            tie_tolerance=self.tie_tolerance,
        )


def similarity(a: str, b: str) -> float:
    """1.0 for the same text (ignoring surrounding space and case), else difflib's ratio."""
    a, b = a.strip().lower(), b.strip().lower()
    return 1.0 if a == b else difflib.SequenceMatcher(None, a, b).ratio()


def store_oracle(store: Store) -> ScoreOracle:
    """Scores from the store: ``generations.meta["oracle_score"]`` (0–1) when present, else the
    similarity of the output to ``prompts.reference``; edit tasks are corrected to the reference."""

    @functools.lru_cache(maxsize=256)
    def lookup(ids: tuple[int, ...]) -> tuple[dict[int, dict], str | None]:
        with store.session() as s:
            rows = s.execute(
                select(Generation.id, Generation.meta, Prompt.reference)
                .join(Prompt, Prompt.id == Generation.prompt_id)
                .where(Generation.id.in_(ids))
            ).all()
        return {r.id: dict(r.meta or {}) for r in rows}, (rows[0].reference if rows else None)

    def score(task: SimTask, gid: int, text: str) -> float | None:
        metas, reference = lookup(tuple(task.ids))
        if "oracle_score" in metas.get(gid, {}):
            return float(metas[gid]["oracle_score"])
        return similarity(reference, text) if reference else None

    return ScoreOracle(score, lambda task: lookup(tuple(task.ids))[1])


# ------------------------------------------------------------------------------------- a human's answer
def answer_like_human(task: SimTask, best: dict[str, Any] | None, accuracy: float, rng: random.Random) -> dict[str, Any]:
    """The oracle's answer with probability ``accuracy``, otherwise a plausible wrong one."""
    if best is not None and rng.random() < accuracy:
        return best
    return get_kind(task.kind).plausible_mistake(task.view, best, rng)


# ------------------------------------------------------------------------------------- the run
class _Client:
    """One annotator's HTTP client: retries network failures and 5xx until ``retry_for`` runs out."""

    def __init__(self, http: Any, report: SimulationReport, retry_for: float) -> None:
        self.http = http
        self.report = report
        self.retry_for = retry_for

    async def call(self, path: str, body: dict[str, Any]) -> tuple[int, Any, int, float]:
        """POST ``body``; returns (status, json or None, attempts, latency of the last attempt)."""
        import httpx

        deadline = time.monotonic() + self.retry_for
        attempt = 0
        while True:
            attempt += 1
            start = time.monotonic()
            try:
                r = await self.http.post(path, json=body)
            except httpx.TransportError as exc:  # connection refused/reset, timeouts: the server is down
                failure = f"{type(exc).__name__}: {exc}"
            else:
                latency = time.monotonic() - start
                if r.status_code < 500 and r.status_code != 429:
                    return r.status_code, (r.json() if r.content else None), attempt, latency
                failure = f"HTTP {r.status_code}"
                if r.status_code == 429:
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))
            if time.monotonic() > deadline:
                raise SimulationError(f"POST {path} kept failing for {self.retry_for:.0f} s ({failure})",
                                      hint="is the server running? see its log")
            self.report.retries += 1
            await asyncio.sleep(min(1.0, 0.05 * 2 ** min(attempt, 5)))


def task_rng(seed: int | str, annotator: str, task_id: int) -> random.Random:
    """The randomness of one annotator on one task (think time, skip, answer, mistake, seconds).

    A function of (seed, annotator, task) alone — not of which tasks that annotator saw before, and
    not of Python's salted ``hash()`` — so the order in which concurrent clients claim tasks cannot
    change what a given annotator answers to a given task.
    """
    return random.Random(f"{seed}:{annotator}:{task_id}")


#: Typical seconds a person spends per label, by task kind (``--seconds`` and the demo use these).
TYPICAL_SECONDS = {"compare": 25.0, "rate": 12.0, "rank": 40.0, "edit": 60.0}


@dataclass(frozen=True)
class SimulatedSeconds:
    """The time on task a scripted human reports: a price per task kind, ±``jitter`` (uniform).

    Nobody sleeps: the seconds go into ``duration_s``, so the ROI report prices the labels as if a
    person had spent them.
    """

    per_kind: dict[str, float]
    default: float = 20.0
    jitter: float = 0.3

    def __call__(self, task: SimTask, rng: random.Random) -> float:
        return self.per_kind.get(task.kind, self.default) * rng.uniform(1 - self.jitter, 1 + self.jitter)

    @classmethod
    def parse(cls, text: str) -> SimulatedSeconds:
        """``compare=25,edit=60,rate=12,rank=40`` (kinds left out cost ``default``)."""
        per_kind: dict[str, float] = {}
        for part in (p.strip() for p in text.split(",")):
            kind, sep, value = part.partition("=")
            try:
                seconds = float(value) if sep and kind.strip() else None
            except ValueError:
                seconds = None
            if seconds is None or not 0 <= seconds < float("inf"):
                raise SimulationError(f"--seconds: {part!r} is not KIND=SECONDS",
                                      hint="e.g. --seconds compare=25,edit=60,rate=12,rank=40")
            per_kind[kind.strip()] = seconds
        return cls(per_kind)


class _Annotator:
    """One scripted annotator: :meth:`step` claims one task, answers it like a person of
    ``accuracy`` and submits it through the API."""

    def __init__(self, name: str, http: Any, report: SimulationReport, oracle: Oracle, *, accuracy: float, seed: int,
                 max_tasks: int | None, think_s: float, skip_rate: float, retry_for: float, claim_body: dict[str, Any],
                 seconds: Callable[[SimTask, random.Random], float] | None, budget: _Budget) -> None:
        self.name, self.report, self.oracle = name, report, oracle
        self.client = _Client(http, report, retry_for)
        self.accuracy, self.seed, self.max_tasks = accuracy, seed, max_tasks
        self.think_s, self.skip_rate, self.claim_body, self.seconds = think_s, skip_rate, claim_body, seconds
        self.budget = budget
        self.done = 0

    @property
    def finished(self) -> bool:
        return (self.max_tasks is not None and self.done >= self.max_tasks) or self.budget.spent

    async def step(self) -> str:
        """One task: ``answered``, ``skipped``, ``conflict``, or ``empty`` (the queue had nothing for us)."""
        self.budget.reserve()
        try:
            return await self._step()
        finally:
            self.budget.settle()

    async def _step(self) -> str:
        name, client = self.name, self.client
        status, data, _, latency = await client.call("/api/tasks/next", self.claim_body)
        if status == 204:
            return "empty"
        if status != 200:
            raise SimulationError(f"{name}: claim refused with HTTP {status}: {data}")
        self.report.claim_latencies.append(latency)
        claimed_at = time.monotonic()
        task = SimTask.from_api(data)
        rng = task_rng(self.seed, name, task.task_id)
        if self.think_s > 0:
            await asyncio.sleep(rng.expovariate(1 / self.think_s))
        if self.skip_rate and rng.random() < self.skip_rate:
            status, data, attempts, _ = await client.call(f"/api/tasks/{task.task_id}/skip", {"reason": "simulated skip"})
            if status == 200 or (status == 409 and attempts > 1):  # a lost reply to a skip that was stored
                self.report.skips += 1
                return "skipped"
            raise SimulationError(f"{name}: skip of task {task.task_id} refused with HTTP {status}: {data}")
        best = await asyncio.to_thread(self.oracle, task)
        value = answer_like_human(task, best, self.accuracy, rng)
        key = f"{name}-{task.task_id}-{uuid.uuid4().hex}"
        started = time.monotonic()
        # ``seconds``: a simulated time on task (prices human labels without sleeping).
        spent = self.seconds(task, rng) if self.seconds is not None else started - claimed_at
        body = {"value": value, "idempotency_key": key, "duration_s": round(spent, 3)}
        status, data, attempts, latency = await client.call(f"/api/tasks/{task.task_id}/submit", body)
        if status == 409:  # the task was taken from us (e.g. skipped elsewhere): move on
            self.report.conflicts += 1
            return "conflict"
        if status != 200:
            raise SimulationError(f"{name}: submit of task {task.task_id} refused with HTTP {status}: {data}")
        self.report.acks.append(Ack(
            annotator=name, task_id=task.task_id, annotation_id=int(data["annotation_id"]), idempotency_key=key,
            duplicate=bool(data["duplicate"]), attempts=attempts, latency_s=latency,
            end_to_end_s=time.monotonic() - started, correct=None if best is None else value == best,
        ))
        self.done += 1
        self.budget.answered()
        return "answered"


class _Budget:
    """At most ``total`` answers across all annotators; concurrent claims reserve a slot first."""

    def __init__(self, total: int | None) -> None:
        self.total, self.used, self.pending = total, 0, 0

    @property
    def spent(self) -> bool:
        return self.total is not None and self.used + self.pending >= self.total

    def reserve(self) -> None:
        self.pending += 1

    def settle(self) -> None:
        self.pending -= 1

    def answered(self) -> None:
        self.used += 1


async def _keep_waiting(follow: Callable[[], bool] | None, poll_s: float) -> bool:
    """With ``follow``: wait ``poll_s`` and say whether to look for tasks again."""
    if follow is None or not await asyncio.to_thread(follow):
        return False
    await asyncio.sleep(poll_s)
    return True


async def _concurrent(annotators: list[_Annotator], follow: Callable[[], bool] | None, poll_s: float) -> None:
    """Every annotator claims on its own, as fast as it can (load tests, the demo)."""

    async def one(a: _Annotator) -> None:
        while not a.finished:
            if await a.step() == "empty" and not await _keep_waiting(follow, poll_s):
                return

    await asyncio.gather(*(one(a) for a in annotators))


async def _round_robin(annotators: list[_Annotator], follow: Callable[[], bool] | None, poll_s: float) -> None:
    """One request at a time, annotators taking turns in a fixed order: who answers which task, and
    so every answer, is the same from run to run (experiments)."""
    active = list(annotators)
    while active:
        idle = 0
        for a in list(active):
            if a.finished:
                active.remove(a)
            elif await a.step() == "empty":
                idle += 1
                if follow is None:
                    active.remove(a)
        if active and idle == len(active) and not await _keep_waiting(follow, poll_s):
            return


ORDERS = ("concurrent", "round-robin")


async def run_simulation(
    base_url: str,
    tokens: dict[str, str],
    oracle: Oracle,
    *,
    accuracy: float = 0.8,
    seed: int = 0,
    max_tasks: int | None = None,
    total_tasks: int | None = None,
    think_s: float = 0.0,
    skip_rate: float = 0.0,
    retry_for: float = 60.0,
    round_id: int | None = None,
    kinds: list[str] | None = None,
    report: SimulationReport | None = None,
    seconds: Callable[[SimTask, random.Random], float] | None = None,
    order: str = "concurrent",
    follow: Callable[[], bool] | None = None,
    poll_s: float = 2.0,
) -> SimulationReport:
    """Run one client per ``tokens`` entry (name → token) until the queue has nothing left for them
    (or each has answered ``max_tasks``, or all together ``total_tasks``). Pass ``report`` to watch
    it fill while the run goes on.

    ``order``: ``concurrent`` (each client claims on its own) or ``round-robin`` (one request at a
    time, in the order of ``tokens``: reproducible). ``follow``: when the queue is empty, wait
    ``poll_s`` and try again for as long as ``follow()`` says so, instead of stopping.
    """
    import httpx

    if not 0 <= accuracy <= 1:
        raise SimulationError(f"accuracy must be between 0 and 1, got {accuracy}")
    if order not in ORDERS:
        raise SimulationError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    report = report if report is not None else SimulationReport()
    claim_body: dict[str, Any] = {}
    if round_id is not None:
        claim_body["round_id"] = round_id
    if kinds:
        claim_body["kinds"] = kinds
    budget = _Budget(total_tasks)
    start = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        annotators = []
        for name, token in tokens.items():
            http = await stack.enter_async_context(httpx.AsyncClient(
                base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=httpx.Timeout(30.0)))
            annotators.append(_Annotator(
                name, http, report, oracle, accuracy=accuracy, seed=seed, max_tasks=max_tasks, think_s=think_s,
                skip_rate=skip_rate, retry_for=retry_for, claim_body=claim_body, seconds=seconds, budget=budget))
        await (_round_robin if order == "round-robin" else _concurrent)(annotators, follow, poll_s)
    report.elapsed_s = time.monotonic() - start
    return report


def simulate(base_url: str, tokens: dict[str, str], oracle: Oracle, **kwargs: Any) -> SimulationReport:
    """Blocking :func:`run_simulation`."""
    return asyncio.run(run_simulation(base_url, tokens, oracle, **kwargs))


def provision_annotators(store: Store, n: int, *, prefix: str = "sim") -> dict[str, str]:
    """``n`` human annotators ``{prefix}-1`` … with fresh tokens (name → token)."""
    if n < 1:
        raise SimulationError(f"need at least one annotator, got {n}")
    return {f"{prefix}-{i}": add_annotator(store, f"{prefix}-{i}", rotate=True) for i in range(1, n + 1)}
