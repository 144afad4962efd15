"""``Orchestrator``: what the CLI, the demo and tests call to run and resume a project's rounds.

A thin facade over :mod:`.machine` (the state machine) and the state modules.
"""

from __future__ import annotations

from rich.console import Console

from prefloop.errors import NotFoundError
from prefloop.project import Project

from .context import HumansHook, Reporter, RoundError
from .machine import RoundSummary, all_rounds, check_config, create_round, run_round


class Orchestrator:
    """Runs and resumes rounds of one project."""

    def __init__(self, project: Project, *, progress: bool = True, console: Console | None = None,
                 humans: HumansHook | None = None, verbose: bool = False) -> None:
        self.project = project
        self.reporter = Reporter(console or Console(stderr=True), enabled=progress, verbose=verbose)
        self.humans = humans

    def rounds(self) -> list[RoundSummary]:
        return all_rounds(self.project.store)

    def unfinished(self) -> RoundSummary | None:
        return next((r for r in self.rounds() if r.state != "done"), None)

    def create_round(self, number: int) -> int:
        """A new round in state ``created``; :meth:`run` drives it."""
        return create_round(self.project, number)

    def run(self, round_id: int) -> RoundSummary:
        """Drive one round from its recorded state to ``done``."""
        return run_round(self.project, round_id, reporter=self.reporter, humans=self.humans)

    def run_next(self) -> list[RoundSummary]:
        """Run the next round (the first call also evaluates the base model as round 0)."""
        check_config(self.project.config)
        pending = self.unfinished()
        if pending is not None:
            raise RoundError(
                f"round {pending.number} is unfinished (state {pending.state})",
                hint="finish it with `prefloop round resume`",
            )
        done: list[RoundSummary] = []
        if not self.rounds():
            done.append(self.run(self.create_round(0)))
        number = max(r.number for r in self.rounds()) + 1
        done.append(self.run(self.create_round(number)))
        return done

    def ensure_baseline(self) -> RoundSummary:
        """Round 0 (evaluate the base model), run or resumed as needed."""
        existing = next((r for r in self.rounds() if r.number == 0), None)
        if existing is None:
            check_config(self.project.config)
            return self.run(self.create_round(0))
        return existing if existing.state == "done" else self.run(existing.id)

    def resume(self, number: int | None = None) -> RoundSummary:
        """Continue an unfinished round (the given one, or the first unfinished)."""
        rounds = self.rounds()
        if number is None:
            target = next((r for r in rounds if r.state != "done"), None)
            if target is None:
                raise RoundError("no unfinished round to resume", hint="start one with `prefloop round run`")
        else:
            target = next((r for r in rounds if r.number == number), None)
            if target is None:
                raise NotFoundError(f"no round {number}", hint=f"rounds: {[r.number for r in rounds] or 'none yet'}")
            if target.state == "done":
                raise RoundError(f"round {number} is already done", hint="`prefloop report` shows its results")
        return self.run(target.id)
