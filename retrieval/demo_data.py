"""The knowledge demo's data: Acme's support-desk policies, labelled queries, and the facts each
policy states (made up for the demo, so no model can know them without retrieval).

- ``support_kb/*.md``: 29 short policy documents (refunds, returns, shipping per region, plans,
  cancellation, warranty, …), imported with ``prefloop kb import``; their keys are
  ``support_kb/<file>``.
- ``support_kb_queries.jsonl``: 38 customer messages with the document(s) that answer them
  (``relevant``, for ``prefloop kb eval``) and the facts a correct reply states (``facts``).
- ``support_kb_facts.jsonl``: per document, its facts: an ``id``, the ``statement``, and
  ``patterns`` (case-insensitive regular expressions; a reply states the fact when any matches).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


def _data(name: str) -> Path:
    return Path(str(resources.files("prefloop.configs") / "data" / name))


def support_kb_path() -> Path:
    return _data("support_kb")


def support_kb_queries_path() -> Path:
    return _data("support_kb_queries.jsonl")


def support_kb_facts_path() -> Path:
    return _data("support_kb_facts.jsonl")


@dataclass(frozen=True)
class Fact:
    id: str
    document: str
    statement: str
    patterns: tuple[str, ...]

    def stated_in(self, text: str) -> bool:
        return any(re.search(p, text, re.IGNORECASE) for p in self.patterns)


def load_facts(path: str | Path | None = None) -> dict[str, Fact]:
    """Every fact of the demo knowledge base by id."""
    facts = {}
    for line in Path(path or support_kb_facts_path()).read_text(encoding="utf-8").splitlines():
        doc = json.loads(line)
        for f in doc["facts"]:
            facts[f["id"]] = Fact(f["id"], doc["document"], f["statement"], tuple(f["patterns"]))
    return facts


def stated_facts(text: str, fact_ids: list[str], facts: dict[str, Fact] | None = None) -> dict[str, bool]:
    """Which of ``fact_ids`` a reply states (what an oracle for the knowledge demo checks)."""
    facts = facts or load_facts()
    return {fid: facts[fid].stated_in(text) for fid in fact_ids}
