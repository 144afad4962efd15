"""Simulation: scripted annotators that play humans through the real HTTP API (the demo, experiments,
load tests), and the task plug-ins that tell them what a good answer is."""

from .humans import (
    Ack,
    Oracle,
    ScoreOracle,
    SimTask,
    SimulationError,
    SimulationReport,
    answer_like_human,
    provision_annotators,
    run_simulation,
    simulate,
    store_oracle,
)

__all__ = [
    "Ack", "Oracle", "ScoreOracle", "SimTask", "SimulationError", "SimulationReport", "answer_like_human",
    "provision_annotators", "run_simulation", "simulate", "store_oracle",
]
