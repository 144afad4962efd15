"""The round state machine: the order of the states, one process per round (a file lock), entering
and leaving states with their timing, error recording, and resuming at the recorded state.

A round moves through::

    created → generating → judging → waiting → [reward_model] → building_datasets → training → evaluating → done

(``reward_model`` only when the config has a reward-model judge, see :mod:`.reward`.)

Round 0 is the baseline (the base model, no adapter): ``created → evaluating → done``. Each state
is a module with ``run(ctx) -> None`` whose work is idempotent, so ``prefloop round resume``
after a crash (even ``kill -9`` during training) re-enters the recorded state and finishes it
without redoing finished work or losing labels. Adding a state is a new module, an entry in
:data:`STATE_RUNNERS` and its place in :data:`~.state.STATES`.

Round N samples with round N−1's adapter, trains round N's adapter from it (the DPO reference
stays the base model), and is evaluated against round N−1 and round 0.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from sqlalchemy import select

from prefloop.config import ProjectConfig
from prefloop.console import library_output
from prefloop.errors import ConfigError, PrefloopError
from prefloop.feedback.store.db import Store
from prefloop.feedback.store.models import Round
from prefloop.judges.reward_model import is_reward_model
from prefloop.project import Project

from ..distributed import TRAIN_LOG
from ..evaluation import load_oracle
from ..tracking import RoundTracker, mask_urls
from . import datasets, evaluate, finish, generate, judge, reward, train, wait
from .context import HumansHook, Reporter, RoundContext, RoundError, load_round, round_dir
from .progress import state_line
from .rag import check_budget
from .state import BASELINE_STATES, STATES, RoundState, Transition, now

#: what each working state runs; ``created`` only leads to the first of them, ``done`` ends.
STATE_RUNNERS: dict[str, Callable[[RoundContext], None]] = {
    "generating": generate.run,
    "judging": judge.run,
    "waiting": wait.run,
    "reward_model": reward.run,
    "building_datasets": datasets.run,
    "training": train.run,
    "evaluating": evaluate.run,
}


@dataclass
class RoundSummary:
    id: int
    number: int
    state: str
    metrics: dict[str, Any]  #: what the round reports
    adapter_path: str | None
    control: RoundState  #: what the orchestrator keeps to resume (transitions, seconds per state, …)

    @classmethod
    def of(cls, row: Round) -> RoundSummary:
        return cls(row.id, row.number, row.state, dict(row.metrics or {}), row.adapter_path, RoundState.of(row))


def all_rounds(store: Store) -> list[RoundSummary]:
    with store.session() as s:
        return [RoundSummary.of(r) for r in s.scalars(select(Round).order_by(Round.number))]


def config_snapshot(project_config: ProjectConfig) -> dict[str, Any]:
    """The config a round runs with (configs hold no secrets; a store URL's password is masked anyway)."""
    return mask_urls(project_config.model_dump(mode="json"))


def check_config(cfg: ProjectConfig) -> None:
    """Judges named by the training section exist in the panel; the oracle loads; with retrieval
    on, a prompt with its passages and a reply fit the trainers' ``max_length``."""
    t = cfg.training
    names = {j.name for j in cfg.judges.panel}
    hint = f"known judges: {sorted(names) or 'none'}"
    for n in t.judges or []:
        if n not in names:
            raise ConfigError(f"training.judges names {n!r}, which is not in judges.panel", hint=hint)
    for key, name in (("training.evaluation.judge", t.evaluation.judge), ("training.pairing.scorer", t.pairing.scorer)):
        if name is not None and name not in names:
            raise ConfigError(f"{key} is {name!r}, which is not in judges.panel", hint=hint)
    for key, name in [*(("training.judges", n) for n in t.judges or []), ("training.pairing.scorer", t.pairing.scorer)]:
        if is_reward_model(cfg.judges.get(name) if name else None):
            raise ConfigError(f"{key} names the reward-model judge {name!r}, which labels in the round's reward_model state",
                              hint="leave it out there: it trains after the human wait, then labels the tasks humans did not answer")
    if t.evaluation.oracle:
        load_oracle(t.evaluation.oracle)
    check_budget(cfg)


def create_round(project: Project, number: int) -> int:
    """A new round row in state ``created`` (with the loop id of round 0, or a new one)."""
    project.runs_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(project.runs_dir / ".rounds.lock")), project.store.session() as s:
        if s.scalar(select(Round.id).where(Round.number == number)) is not None:
            raise RoundError(f"round {number} already exists", hint="`prefloop round status` lists the rounds")
        zero = s.scalar(select(Round).where(Round.number == 0))
        loop_id = RoundState.of(zero).loop_id if zero is not None else None
        cfg = project.config
        state = RoundState(loop_id=loop_id or uuid.uuid4().hex[:10], transitions=[Transition(state="created", at=now())])
        row = Round(number=number, state=state.state, base_model=cfg.training.model.source, config=config_snapshot(cfg),
                    config_hash=cfg.fingerprint(), metrics={}, state_data=state.to_json())
        s.add(row)
        s.flush()
        return row.id


def _round_config(project: Project, row: Round) -> ProjectConfig:
    """The round's own config snapshot, with the live store URL (the snapshot's password is masked)."""
    snapshot = dict(row.config or {})
    snapshot["store"] = project.config.store.model_dump(mode="json")
    cfg = ProjectConfig.model_validate(snapshot)
    check_config(cfg)
    return cfg


def _tracker(project: Project, cfg: ProjectConfig, row: Round) -> RoundTracker:
    w = cfg.training.wandb
    run_dir = Path(os.environ.get("WANDB_DIR") or project.runs_dir)
    return RoundTracker(w, run_dir=run_dir, loop_id=RoundState.of(row).loop_id or "loop", group=w.group or cfg.name,
                        round_number=row.number, config=dict(row.config or {}))


def run_round(project: Project, round_id: int, *, reporter: Reporter, humans: HumansHook | None = None) -> RoundSummary:
    """Drive one round from its recorded state to ``done`` (one process at a time per round). The
    libraries' output goes to ``runs/round-N/train.log`` meanwhile (and to the terminal with ``verbose``)."""
    row = load_round(project.store, round_id)
    rdir = round_dir(project, row.number)
    rdir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(rdir / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RoundError(f"round {row.number} is running in another process", hint="wait for it, or stop it first") from None
    try:
        cfg = _round_config(project, row)
        with library_output(rdir / TRAIN_LOG, reporter.console, verbose=reporter.verbose,
                            quantized=cfg.training.model.quantization is not None):
            ctx = RoundContext(project=project, cfg=cfg, round_id=round_id, number=row.number,
                               tracker=_tracker(project, cfg, row), reporter=reporter, humans=humans)
            ctx.tracker.start()
            failed = True
            try:
                _drive(ctx, row.state, round_states(cfg, row.number))
                failed = False
            except BaseException as exc:
                msg = exc.message if isinstance(exc, PrefloopError) else f"{type(exc).__name__}: {exc}"
                ctx.write(error=msg[:4000])
                raise
            finally:
                ctx.tracker.finish(failed=failed)
    finally:
        lock.release()
    return RoundSummary.of(load_round(project.store, round_id))


def round_states(cfg: ProjectConfig, number: int) -> tuple[str, ...]:
    """The states a round goes through: the baseline's for round 0; ``reward_model`` only where it applies."""
    if number == 0:
        return BASELINE_STATES
    return tuple(s for s in STATES if s != "reward_model" or reward.applies(cfg))


def _drive(ctx: RoundContext, state: str, states: tuple[str, ...]) -> None:
    """Run the states in order from ``state``; each finished one leaves one line (the last one when
    the round is done, so that a round's lines never mix with the next round's)."""
    resumed = state != "created"
    if resumed:
        ctx.say(f"round {ctx.number}: resuming at [bold]{state}[/]")
    while state != "done":
        if state == "created":
            nxt = states[1]
        else:
            _enter(ctx, state, resumed=resumed)
            resumed = False
            start = time.perf_counter()
            try:
                STATE_RUNNERS[state](ctx)
            finally:
                seconds = time.perf_counter() - start
                _add_seconds(ctx, state, seconds)
            nxt = states[states.index(state) + 1]
            if nxt != "done":
                ctx.say(state_line(ctx, state, seconds))
        if nxt == "done":
            finish.run(ctx)
            _enter(ctx, "done")
            ctx.say(state_line(ctx, state, seconds, done=True))
        else:
            ctx.patch_state(state=nxt)
        state = nxt


def _enter(ctx: RoundContext, state: str, *, resumed: bool = False) -> None:
    ctx.write(change=lambda st: st.entered(state, resumed=resumed), error=None)


def _add_seconds(ctx: RoundContext, state: str, seconds: float) -> None:
    ctx.write(change=lambda st: st.add_seconds(state, seconds))
