"""The knowledge demo (``prefloop demo --rag``): the support desk, where replies must also state
Acme's policies correctly — facts no model can know without retrieval.

- Prompts (``prefloop/configs/data/support_desk_rag.jsonl``): customers asking about the policies
  of the demo knowledge base (refund windows, shipping times, plan prices…), each with the facts
  a correct reply states. 38 train prompts about 19 policies, 20 eval prompts about 10 others,
  from customers never seen in training: on the eval prompts, facts can only come from retrieval.
- :func:`support_desk_rag_oracle`: half the style guide (the demo's four rules, equally weighted),
  half the facts (the share of the prompt's facts the reply states, by the facts' regular
  expressions). Its :func:`oracle_parts` report ``style`` and ``facts`` apart, so that
  ``prefloop compare`` shows which condition wins on which.
- Scripted support leads who know the policies: they prefer the reply the oracle scores higher and
  correct a reply to greeting, the facts' statements and the closing question (:func:`fix_reply_rag`).
- The judge is the demo's rule judge (length and a greeting word; it knows no facts).
"""

from __future__ import annotations

import functools
import time
from importlib import resources
from pathlib import Path
from typing import Any

from prefloop.retrieval.demo_data import Fact, load_facts, support_kb_path

from .demo import CLOSING, checks, run_loop, scripted_humans

#: the weights of the two halves of the oracle score
STYLE_WEIGHT, FACTS_WEIGHT = 0.5, 0.5
KB_NAME = "support"


def data_path() -> Path:
    """The knowledge demo's prompts (38 train, 20 eval)."""
    return Path(str(resources.files("prefloop.configs") / "data" / "support_desk_rag.jsonl"))


@functools.cache
def facts() -> dict[str, Fact]:
    return load_facts()


def oracle_parts(meta: dict[str, Any], messages: list[dict[str, str]], text: str) -> dict[str, float]:
    """``style``: the share of the style guide's four rules followed; ``facts``: the share of the
    prompt's facts stated (1 when it names none)."""
    del messages
    style = checks(meta, text)
    wanted = [str(f) for f in meta.get("facts", [])]
    known = facts()
    stated = [known[f].stated_in(text) for f in wanted]
    return {"style": sum(style.values()) / len(style), "facts": sum(stated) / len(stated) if stated else 1.0}


def support_desk_rag_oracle(meta: dict[str, Any], messages: list[dict[str, str]], text: str) -> float:
    """The knowledge demo's score: ``STYLE_WEIGHT`` × style + ``FACTS_WEIGHT`` × facts, in [0, 1]."""
    parts = oracle_parts(meta, messages, text)
    return STYLE_WEIGHT * parts["style"] + FACTS_WEIGHT * parts["facts"]


support_desk_rag_oracle.components = oracle_parts  # type: ignore[attr-defined]  # read by prefloop compare


def fix_reply_rag(meta: dict[str, Any], text: str) -> str:
    """What a support lead who knows the policies writes: a greeting by name, the facts the
    customer needs (their statements from the knowledge base), and the closing question."""
    del text  # the model's own claims may be wrong: the lead writes the facts down instead
    name = str(meta.get("customer") or "there")
    statements = [facts()[str(f)].statement for f in meta.get("facts", [])]
    return " ".join([f"Hi {name}!", *statements, CLOSING])


def _support_desk_rag() -> Any:
    from prefloop.sim.task import TaskSpec

    return TaskSpec(name="support-desk-rag", prompts=data_path(), oracle=support_desk_rag_oracle, fix=fix_reply_rag,
                    description="The demo's style guide plus the facts of the knowledge base's policies.",
                    knowledge=support_kb_path())


#: The knowledge demo's task as a plug-in (``support-desk-rag``): its prompts, oracle, fix and knowledge
#: base; the retrieval settings and judge come with the ``demo-rag`` preset.
SUPPORT_DESK_RAG = _support_desk_rag()


def scripted_leads(*, n: int = 2, accuracy: float = 0.85, seed: int = 0) -> Any:
    """The round hook: ``n`` scripted leads who judge and correct by the knowledge demo's oracle,
    through the real annotation server (as :func:`~.demo.scripted_humans`)."""
    def run(project: Any, round_id: int, task_ids: list[int]) -> None:
        oracle = SUPPORT_DESK_RAG.human_oracle(project.store)  # scores by the task's oracle, fixes as a lead would
        scripted_humans(n=n, accuracy=accuracy, seed=seed, oracle=oracle)(project, round_id, task_ids)

    return run


def run_rag_demo(directory: str | Path, *, rounds: int = 3, progress: bool = True, console: Any = None,
                 seeds: list[int] | None = None, verbose: bool = False) -> tuple[Any, Any, float]:
    """Create (or continue) the knowledge demo in ``directory``: import the knowledge base and the
    prompts, run rounds 0…``rounds`` with retrieval in the loop, then ``compare`` the four arms."""
    from rich.console import Console

    from prefloop.feedback.importer import import_prompts
    from prefloop.project import CONFIG_NAME, Project, init_project
    from prefloop.retrieval.ingest import import_kb

    from .compare import run_compare

    console = console or Console(stderr=True)
    root = Path(directory)
    project = init_project(root, preset="demo-rag") if not (root / CONFIG_NAME).is_file() else Project(root)
    import_kb(project.store, support_kb_path(), kb=KB_NAME)  # idempotent: unchanged documents are kept
    import_prompts(project.store, data_path())
    start = time.perf_counter()
    run_loop(project, rounds, humans=scripted_leads(), progress=progress, console=console, verbose=verbose)
    result = run_compare(project, seeds=seeds, progress=progress, console=console)
    return project, result, time.perf_counter() - start
