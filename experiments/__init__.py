"""Experiments: run the loop under several arms × seeds on one task and measure what each buys
(oracle score and win rates with intervals, labels, minutes, tokens, compute, cost, label efficiency).

    from prefloop.experiments import load_spec, run_experiment, load_results
    results = run_experiment(load_spec("configs/experiments/feedback-sources.yaml"), "out/feedback", jobs=2)
"""

from prefloop.stats import Estimate, hierarchical_bootstrap

from .api import report, run_experiment
from .results import ArmRound, Efficiency, ExperimentResults, RoundNumbers, load_results
from .runner import Experiment, ExperimentError
from .spec import ArmSpec, ExperimentSpec, load_spec, parse_spec

__all__ = [
    "ArmRound", "ArmSpec", "Efficiency", "Estimate", "Experiment", "ExperimentError", "ExperimentResults", "ExperimentSpec",
    "RoundNumbers", "hierarchical_bootstrap", "load_results", "load_spec", "parse_spec", "report", "run_experiment",
]
