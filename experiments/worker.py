"""A worker process of ``prefloop experiment run``: ``python -m prefloop.experiments.worker DIR KIND ARM SEED``.

Its output goes to the job's log; an error a user can fix ends it as one ``error:`` line (the parent
shows that line), anything else with a traceback.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from rich.console import Console

    from prefloop.errors import PrefloopError
    from prefloop.training.cli import _threads
    from prefloop.verbosity import quiet_libraries

    from .runner import Experiment, Job, execute

    out, kind, arm, seed = argv
    quiet_libraries()
    _threads()
    try:
        exp = Experiment.open(out)
        execute(exp, Job(kind, exp.run(arm, int(seed))), console=Console(file=sys.stdout, width=120, no_color=True))
    except PrefloopError as exc:
        print(f"error: {exc.message}" + (f" (hint: {exc.hint})" if exc.hint else ""), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
