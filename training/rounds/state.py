"""A round's control state: what the orchestrator reads back to resume, typed.

It is stored as JSON in ``rounds.state_data`` (the current state itself in the ``rounds.state``
column, which ``prefloop round status`` and other processes read), apart from ``rounds.metrics``,
which holds only what a round reports (eval, datasets, training, cost, agreement). A key that
only helps to continue a round belongs here; a number a person reads belongs in the metrics.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from pydantic import BaseModel, ConfigDict

from prefloop.feedback.store.models import Round

#: ``reward_model`` runs only in rounds whose config has a reward-model judge (see :mod:`.reward`);
#: a round without one goes from ``waiting`` straight to ``building_datasets``, as before it existed.
STATES = ("created", "generating", "judging", "waiting", "reward_model", "building_datasets", "training", "evaluating",
          "done")
BASELINE_STATES = ("created", "evaluating", "done")


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Transition(_Model):
    """Entering a state: when, by which process, and whether that entry continued an interrupted one."""

    state: str
    at: str
    pid: int | None = None
    resumed: bool = False

    @classmethod
    def enter(cls, state: str, *, resumed: bool = False) -> Transition:
        return cls(state=state, at=now(), pid=os.getpid(), resumed=resumed)


class DatasetRef(_Model):
    """A dataset the round built, as the training state finds it."""

    path: str
    sha256: str
    rows: int


class ArgillaSync(_Model):
    """How the last Argilla wait ended."""

    done: bool
    pulls: int
    waiting: int


class RewardModelRef(_Model):
    """One reward-model judge's plan in this round (fixed when first made, so a resume keeps it)."""

    pairs: int  #: pairs it may train on (held-out tasks left out)
    new_pairs: int  #: of those, pairs the previous adapter was not trained on
    held_out: int  #: human-labelled compare tasks held out, all rounds so far
    retrain: bool  #: new_pairs ≥ min_new_pairs
    dataset: str | None = None  #: the saved training pairs (when retraining)
    adapter: str | None = None  #: this round's adapter, once trained
    sha256: str | None = None
    result: dict[str, Any] | None = None  #: the training result (steps, seconds, last logged metrics)


class RoundState(_Model):
    """The control state of one round (JSON keys as the orchestrator always stored them)."""

    state: str = "created"  #: mirrored from the ``rounds.state`` column; not part of the JSON
    loop_id: str | None = None  #: shared by the rounds of one loop (the wandb group and run ids)
    transitions: list[Transition] = []
    seconds: dict[str, float] = {}  #: wall time per state, summed over resumes
    train_prompt_ids: list[int] | None = None  #: the prompts chosen for this round's candidates
    wait_tasks: list[int] | None = None  #: the tasks the waiting state waits for, fixed when it first starts
    #: how many of them need their human labels (``wait.max_tasks``: a human budget; None: all of them)
    wait_budget: int | None = None
    wait_started_at: float | None = None  #: epoch seconds: a resumed wait keeps its deadline
    argilla: ArgillaSync | None = None
    data_rounds: list[int] | None = None  #: ids of the rounds whose labels the datasets were built from
    datasets: dict[str, DatasetRef] = {}  #: by kind (sft, dpo)
    reward_models: dict[str, RewardModelRef] = {}  #: by judge name

    @classmethod
    def of(cls, row: Round) -> RoundState:
        return cls.model_validate({**(row.state_data or {}), "state": row.state})

    def to_json(self) -> dict[str, Any]:
        """What ``rounds.state_data`` stores: defaults left out (a transition's ``resumed`` only when true)."""
        return self.model_dump(mode="json", exclude={"state"}, exclude_defaults=True)

    def update(self, **fields: Any) -> None:
        """Set fields, each validated as it is set."""
        for k, v in fields.items():
            setattr(self, k, v)

    def entered(self, state: str, *, resumed: bool = False) -> None:
        self.state = state
        self.transitions = [*self.transitions, Transition.enter(state, resumed=resumed)]

    def add_seconds(self, state: str, seconds: float) -> None:
        self.seconds = {**self.seconds, state: round(self.seconds.get(state, 0.0) + seconds, 3)}
