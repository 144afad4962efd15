"""Rounds of the loop: a typed state machine persisted in the store's ``rounds`` table.

- :mod:`.orchestrator`: ``Orchestrator``, what the CLI and the demo call;
- :mod:`.machine`: the order of the states, the lock, transitions, timing, resume;
- :mod:`.state`: ``RoundState``, the control state (``rounds.state_data``), apart from the reported
  ``rounds.metrics``;
- :mod:`.context`: ``RoundContext``, what every state works with;
- one module per state, each ``run(ctx) -> None`` and idempotent: :mod:`.generate`, :mod:`.judge`,
  :mod:`.wait`, :mod:`.reward` (only with a reward-model judge), :mod:`.datasets`, :mod:`.train`, :mod:`.evaluate`,
  and :mod:`.finish` (cost, agreement, wandb) before ``done``;
- :mod:`.progress`: the ``Reporter`` (transient bars, one line per finished state); the libraries'
  output goes to ``runs/round-N/train.log`` (:mod:`prefloop.console`).

Heavy libraries (torch, transformers, datasets, TRL) are imported inside the functions that need
them, so that importing this package, and ``prefloop --help``, stay fast.
"""

from __future__ import annotations

from .context import PURPOSE_EVAL, PURPOSE_TRAIN, HumansHook, Reporter, RoundContext, RoundError
from .files import sha256_file
from .machine import STATE_RUNNERS, RoundSummary, check_config, config_snapshot, create_round, round_states, run_round
from .orchestrator import Orchestrator
from .state import BASELINE_STATES, STATES, RoundState

__all__ = [
    "BASELINE_STATES",
    "PURPOSE_EVAL",
    "PURPOSE_TRAIN",
    "STATES",
    "STATE_RUNNERS",
    "HumansHook",
    "Orchestrator",
    "Reporter",
    "RoundContext",
    "RoundError",
    "RoundState",
    "RoundSummary",
    "check_config",
    "config_snapshot",
    "create_round",
    "round_states",
    "run_round",
    "sha256_file",
]
