"""The knowledge demo's shipped data is consistent: the KB imports, every query's labels name
its documents, every fact is stated by its own document, and the installed package carries it."""

from __future__ import annotations

import json

from prefloop.retrieval.demo_data import (
    load_facts,
    stated_facts,
    support_kb_facts_path,
    support_kb_path,
    support_kb_queries_path,
)
from prefloop.retrieval.evaluation import check_labels, read_queries
from prefloop.retrieval.ingest import import_kb


def test_shipped_kb_queries_and_facts_agree(sqlite_url):
    from prefloop.feedback.store.db import open_store

    store = open_store(sqlite_url)
    r = import_kb(store, support_kb_path(), kb="support")
    assert r.documents == len(list(support_kb_path().glob("*.md"))) >= 20
    queries = read_queries(support_kb_queries_path())
    assert len(queries) >= 30
    check_labels(store, "support", queries)  # every relevant label is a shipped document
    facts = load_facts()
    texts = {f"support_kb/{p.name}": p.read_text() for p in support_kb_path().glob("*.md")}
    assert {f.document for f in facts.values()} == set(texts)  # every document has its facts noted
    for fact in facts.values():
        assert fact.stated_in(texts[fact.document]), fact.id
    for line in support_kb_queries_path().read_text().splitlines():
        row = json.loads(line)
        for fid in row["facts"]:
            assert facts[fid].document in row["relevant"], (row["query"], fid)
    store.dispose()


def test_stated_facts_checks_a_reply():
    reply = "Hi Noah! Refunds are issued within five business days of inspection. Anything else?"
    assert stated_facts(reply, ["refund-time", "refund-bank-time"]) == {"refund-time": True, "refund-bank-time": False}
    assert support_kb_facts_path().is_file()
