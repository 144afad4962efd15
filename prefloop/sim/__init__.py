"""Simulation: scripted annotators that play humans through the real HTTP API (the demo, experiments,
load tests), and the task plug-ins that tell them what a good answer is."""

from .humans import (
    ORDERS,
    TYPICAL_SECONDS,
    Ack,
    Oracle,
    ScoreOracle,
    SimTask,
    SimulatedSeconds,
    SimulationError,
    SimulationReport,
    answer_like_human,
    provision_annotators,
    run_simulation,
    simulate,
    store_oracle,
    task_rng,
)

__all__ = [
    "ORDERS", "TYPICAL_SECONDS", "Ack", "Oracle", "ScoreOracle", "SimTask", "SimulatedSeconds", "SimulationError",
    "SimulationReport", "answer_like_human", "provision_annotators", "run_simulation", "simulate", "store_oracle", "task_rng",
]
