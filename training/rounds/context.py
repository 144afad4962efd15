"""What every round state works with: the project, the round's config, its row and folder, the
wandb tracker, a progress reporter, and typed reads and writes of the round's state and metrics.

A state module takes a :class:`RoundContext` and nothing else, so that it can be read, changed
or added without opening the other states.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from prefloop.config import ProjectConfig
from prefloop.errors import NotFoundError, PrefloopError
from prefloop.feedback.prompts import visible_prompts
from prefloop.feedback.store.db import Store
from prefloop.feedback.store.models import Artifact, Generation, Prompt, Round
from prefloop.judges import Judge, judges_from_config
from prefloop.project import Project

from ..config import TrainingConfig
from ..evaluation import Oracle, load_oracle
from ..tracking import RoundTracker
from .progress import Reporter
from .state import RoundState

PURPOSE_TRAIN, PURPOSE_EVAL = "train", "eval"

#: The demo and tests plug scripted humans in here: ``humans(project, round_id, task_ids)`` is
#: called when a round starts waiting, with the tasks it waits for.
HumansHook = Callable[[Project, int, list[int]], None]


class RoundError(PrefloopError):
    """A round cannot start or continue."""


def round_dir(project: Project, number: int) -> Path:
    return project.runs_dir / f"round-{number}"


def load_round(store: Store, round_id: int) -> Round:
    """The round's row, detached from its session."""
    with store.session() as s:
        r = s.get(Round, round_id)
        if r is None:
            raise NotFoundError(f"round id {round_id} does not exist")
        s.expunge(r)
        return r


@dataclass
class RoundContext:
    project: Project
    cfg: ProjectConfig  #: the round's own config snapshot (with the live store URL)
    round_id: int
    number: int
    tracker: RoundTracker
    reporter: Reporter
    humans: HumansHook | None = None

    @property
    def store(self) -> Store:
        return self.project.store

    @property
    def training(self) -> TrainingConfig:
        return self.cfg.training

    @property
    def dir(self) -> Path:
        return round_dir(self.project, self.number)

    def say(self, text: str) -> None:
        self.reporter.say(text)

    # ------------------------------------------------------------------ the round's row
    def row(self) -> Round:
        return load_round(self.store, self.round_id)

    def state(self) -> RoundState:
        return RoundState.of(self.row())

    def metrics(self) -> dict[str, Any]:
        return dict(self.row().metrics or {})

    def write(self, *, change: Callable[[RoundState], None] | None = None, metrics: dict[str, Any] | None = None,
              **columns: Any) -> None:
        """One transaction: ``change`` the control state, merge ``metrics`` into the reported ones,
        set plain columns (``adapter_path``, ``error``…)."""
        with self.store.session() as s:
            r = s.get_one(Round, self.round_id)
            for k, v in columns.items():
                setattr(r, k, v)
            if metrics:
                r.metrics = {**(r.metrics or {}), **metrics}
            if change is not None:
                st = RoundState.of(r)
                change(st)
                r.state, r.state_data = st.state, st.to_json()

    def patch_state(self, **fields: Any) -> None:
        """Set control-state fields (validated: a wrong type fails here, before anything is stored)."""
        self.write(change=lambda st: st.update(**fields))

    def patch_metrics(self, **results: Any) -> None:
        self.write(metrics=results)

    # ------------------------------------------------------------------ what several states read
    def prompts(self, split: str) -> dict[int, Prompt]:
        with self.store.session() as s:
            rows = s.scalars(visible_prompts(split)).all()  # not the rows of an import still staging
            for p in rows:
                s.expunge(p)
            return {p.id: p for p in rows}

    def generations(self, purpose: str, round_id: int | None = None) -> dict[int, list[tuple[int, str]]]:
        """prompt id → [(generation id, text)] of a round (this one by default) for one purpose."""
        out: dict[int, list[tuple[int, str]]] = defaultdict(list)
        with self.store.session() as s:
            for g in s.execute(select(Generation.id, Generation.prompt_id, Generation.text, Generation.meta)
                               .where(Generation.round_id == (self.round_id if round_id is None else round_id))
                               .order_by(Generation.id)):
                if (g.meta or {}).get("purpose") == purpose:
                    out[g.prompt_id].append((g.id, g.text))
        return dict(out)

    def previous(self) -> Round | None:
        with self.store.session() as s:
            r = s.scalar(select(Round).where(Round.number == self.number - 1))
            if r is not None:
                s.expunge(r)
            return r

    def policy_adapter(self) -> str | None:
        """The adapter this round samples with and trains from (round N−1's; none for round 1)."""
        prev = self.previous()
        return prev.adapter_path if prev is not None else None

    def judges(self) -> dict[str, Judge]:
        return judges_from_config(self.cfg, base_dir=self.project.root)

    def oracle(self) -> Oracle | None:
        name = self.training.evaluation.oracle
        return load_oracle(name) if name else None

    def register_artifact(self, kind: str, path: Path, sha256: str, meta: dict[str, Any]) -> None:
        """Record a file the round produced (replacing this round's earlier one of that kind)."""
        with self.store.session() as s:
            s.execute(delete(Artifact).where(Artifact.round_id == self.round_id, Artifact.kind == kind))
            s.add(Artifact(round_id=self.round_id, kind=kind, path=str(path), sha256=sha256, meta=meta))
