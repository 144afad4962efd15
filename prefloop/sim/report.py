"""What a simulation run reports: every acknowledged submission, retries, conflicts, latencies,
and the share of answers that agreed with the oracle (the crash and load tests read it)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Ack:
    """One acknowledged submission: the server said it stored this answer."""

    annotator: str
    task_id: int
    annotation_id: int
    idempotency_key: str
    duplicate: bool  # acknowledged on a retry: the first attempt had been stored
    attempts: int
    latency_s: float  # the successful request alone
    end_to_end_s: float  # from the first attempt, retries included
    correct: bool | None  # equal to the oracle's answer (None: the oracle did not know)


@dataclass
class SimulationReport:
    acks: list[Ack] = field(default_factory=list)
    skips: int = 0
    conflicts: int = 0
    retries: int = 0
    claim_latencies: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def submissions(self) -> int:
        return len(self.acks)

    @property
    def per_second(self) -> float:
        return self.submissions / self.elapsed_s if self.elapsed_s else 0.0

    def latency(self, q: float, *, which: str = "submit") -> float:
        values = sorted(self.claim_latencies if which == "claim" else [a.latency_s for a in self.acks])
        return percentile(values, q)

    @property
    def accuracy(self) -> float | None:
        known = [a.correct for a in self.acks if a.correct is not None]
        return sum(known) / len(known) if known else None


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0–100) by linear interpolation; NaN when there are no values."""
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)
