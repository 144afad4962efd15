"""Retrieval as a condition of the loop, store side: the passages placed in a prompt are stored with
each generation and reach everyone who judges or learns from it — the judges (the prompt as the
model saw it), the datasets (prompt as given, ``passages`` column), the annotation API and the
terminal (a "sources" panel, untrusted text shown as stored) — on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pyte
import pytest
from ragkit import UNTRUSTED, add_generations, make_kb, retrieve
from rich.console import Console
from serverkit import make_project, serve_project
from sqlalchemy import select

from prefloop.feedback import terminal
from prefloop.feedback.export import build_dpo_dataset, build_sft_dataset
from prefloop.feedback.passages import first_prompted, merged_passages
from prefloop.feedback.store.models import Annotation
from prefloop.retrieval.context import RetrievedPrompt, query_of

QUESTION = [{"role": "system", "content": "You are a support agent for Acme."},
            {"role": "user", "content": "Hi, I'm Noah. How long until my refund arrives?"}]
PLAIN = [{"role": "user", "content": "Hi, I'm Ada. Do you ship on Sundays?"}]


def grounded(prompt: list[dict[str, str]], output: str, reference: str | None) -> float:
    """A python judge: 5 when the output's claim appears in the prompt it was given, else 1."""
    seen = " ".join(m["content"] for m in prompt)
    return 5.0 if output.rstrip(".") in seen else 1.0


def test_a_retrieval_record_places_the_passages_and_reads_back(store, tmp_path: Path) -> None:  # noqa: ANN001
    make_kb(store, tmp_path / "kb")
    got = retrieve(store, tmp_path / "index", QUESTION)
    assert query_of(QUESTION) == QUESTION[1]["content"]
    assert got.passages[0]["document_key"].endswith("refunds.md") and got.passages[0]["number"] == 1
    assert {"chunk_id", "text", "source", "score", "kb", "truncated"} <= set(got.passages[0])
    # placed into the system message (the default), the user's turn untouched; the input not changed
    system = got.messages[0]["content"]
    assert system.startswith("You are a support agent for Acme.\n\nUse these passages") and "[1] Refunds: " in system
    assert "Refunds are issued within 5 business days" in system
    assert got.messages[1] == QUESTION[1] and QUESTION[0]["content"] == "You are a support agent for Acme."
    assert got.info["kb"] == "tiny" and got.info["retriever"] == "bm25" and got.info["placed"] == len(got.passages)
    assert RetrievedPrompt.from_meta(got.meta()) == got
    assert RetrievedPrompt.from_meta({"purpose": "train"}) is None


def test_judges_see_the_prompt_as_the_model_saw_it(db_url: str, tmp_path: Path) -> None:
    from prefloop.judges.runner import judge_round

    project = make_project(tmp_path / "proj", db_url, judges={"panel": [
        {"name": "grounded", "backend": "python", "function": "test_rag_passages:grounded"}]})
    try:
        make_kb(project.store, tmp_path / "kb")
        context = retrieve(project.store, tmp_path / "index", QUESTION)
        _, (a, b) = add_generations(project.store, QUESTION, ["Refunds are issued within 5 business days.",
                                                             "Refunds are issued within 10 business days."], context=context)
        task = project.queue.add_task("compare", [a, b])
        stats = judge_round(project, "grounded", None, progress=False)
        assert stats.recorded == 1
        with project.store.session() as s:
            values = list(s.scalars(select(Annotation.value).where(Annotation.task_id == task)))
        assert values == [{"choice": a}]  # the passage says 5 days; on the bare prompt it would be a tie
    finally:
        project.store.dispose()


def test_first_prompted_prefers_a_retrieval_record_and_falls_back_to_the_prompt() -> None:
    rec = RetrievedPrompt([{"role": "system", "content": "ctx"}, *PLAIN], [], {"kb": "k"}).meta()
    assert first_prompted(PLAIN, [{}, rec]) == [{"role": "system", "content": "ctx"}, *PLAIN]
    assert first_prompted(PLAIN, [{}, None]) == PLAIN
    # one passage shown once however many outputs carry it
    p = {"number": 1, "chunk_id": 7, "text": "x", "kb": "k"}
    assert merged_passages([{"passages": [p]}, {"passages": [p]}, None]) == [merged_passages([{"passages": [p]}])[0]]


def test_datasets_carry_the_prompt_as_given_and_its_passages(store, tmp_path: Path) -> None:  # noqa: ANN001
    from prefloop.feedback.queue import Queue

    q = Queue(store, overlap=1, lease_seconds=60)
    make_kb(store, tmp_path / "kb")
    context = retrieve(store, tmp_path / "index", QUESTION)
    _, (a, b) = add_generations(store, QUESTION, ["Within 5 business days.", "Soon."], context=context)
    _, (c, d) = add_generations(store, PLAIN, ["No, not on Sundays.", "Yes."])
    lead = q.ensure_annotator("lead")
    for kind, gens, value in (("compare", [a, b], {"choice": a}), ("compare", [c, d], {"choice": c}),
                              ("edit", [b], {"text": "Hi Noah, within 5 business days. Anything else?"})):
        tid = q.add_task(kind, gens)
        assert q.claim(lead) is not None
        q.submit(lead, tid, value)

    dpo = {row["prompt_id"]: row for row in build_dpo_dataset(store)}
    rag_row = next(r for r in dpo.values() if r["chosen_id"] == a)
    plain_row = next(r for r in dpo.values() if r["chosen_id"] == c)
    assert rag_row["prompt"] == context.messages and "5 business days" in rag_row["prompt"][0]["content"]
    assert [p["chunk_id"] for p in rag_row["passages"]] == [p["chunk_id"] for p in context.passages]
    assert rag_row["passages"][0]["text"] == context.passages[0]["text"]
    assert plain_row["prompt"] == PLAIN and plain_row["passages"] == []

    sft = list(build_sft_dataset(store))
    assert len(sft) == 1
    assert sft[0]["prompt"] == context.messages  # prompt/completion: the prompt as the model saw it
    assert sft[0]["completion"] == [{"role": "assistant", "content": "Hi Noah, within 5 business days. Anything else?"}]
    assert list(build_sft_dataset(store, dataset_type="messages"))[0]["messages"][:-1] == context.messages
    assert [p["number"] for p in sft[0]["passages"]] == list(range(1, len(context.passages) + 1))


def _untrusted_context(store, tmp_path: Path) -> RetrievedPrompt:  # noqa: ANN001
    make_kb(store, tmp_path / "kb")
    context = retrieve(store, tmp_path / "index", [{"role": "user", "content": "refund desk notes"}])
    assert any(p["text"].endswith(UNTRUSTED) or UNTRUSTED in p["text"] for p in context.passages)
    return context


def test_the_annotation_api_gives_a_task_its_sources(db_url: str, tmp_path: Path) -> None:
    with serve_project(tmp_path / "proj", db_url) as served:
        context = _untrusted_context(served.store, tmp_path)
        _, gens = add_generations(served.store, [{"role": "user", "content": "refund desk notes"}], ["one", "two"],
                                  context=context)
        served.queue.add_task("compare", gens, priority=2)
        _, plain = add_generations(served.store, PLAIN, ["three", "four"])
        served.queue.add_task("compare", plain, priority=1)
        with served.client(served.token("ann")) as c:
            first = c.post("/api/tasks/next").json()
            assert [s["text"] for s in first["sources"]] == [p["text"] for p in context.passages]
            assert UNTRUSTED in " ".join(s["text"] for s in first["sources"])  # stored and served as it is
            assert first["sources"][0]["number"] == 1 and first["sources"][0]["source"]
            assert first["prompt"]["messages"] == [{"role": "user", "content": "refund desk notes"}]
            assert c.post(f"/api/tasks/{first['task_id']}/submit", json={"value": {"choice": "tie"}}).status_code == 200
            second = c.post("/api/tasks/next").json()
            assert second["sources"] == []


SGR = re.compile(r"\x1b\[[0-9;]*m")


def test_the_terminal_shows_sources_with_hidden_characters_visible(store, tmp_path: Path,  # noqa: ANN001
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from prefloop.feedback.queue import Queue

    q = Queue(store, overlap=1, lease_seconds=60)
    context = _untrusted_context(store, tmp_path)
    _, gens = add_generations(store, [{"role": "user", "content": "refund desk notes"}], ["one", "two"], context=context)
    q.add_task("compare", gens)
    monkeypatch.setattr(sys, "stdin", io.StringIO("s"))
    out = io.StringIO()
    terminal.run(q, q.ensure_annotator("ada"), guidelines="Pick one.",
                 console=Console(file=out, force_terminal=True, color_system="standard", width=160))
    raw = out.getvalue()
    assert "\x1b[2K" not in raw and "\u202e" not in raw  # never reaches the terminal raw
    screen = pyte.Screen(160, raw.count("\n") + 5)
    pyte.Stream(screen).feed(raw.replace("\n", "\r\n"))
    shown = "\n".join(line.rstrip() for line in screen.display)
    assert "sources (placed in the model's prompt)" in shown
    assert "[1] Refund notes — " in shown or "[2] Refund notes — " in shown
    assert "\\x1b[2Kwrite \\u202eNEPO." in shown and '<img src=x onerror="document.title=' in shown
    assert not SGR.sub("", raw).count("\x1b")  # no escape but rich's own colours



def test_with_retrieval_a_training_row_must_fit_max_length() -> None:
    from prefloop.config import parse_config
    from prefloop.errors import ConfigError
    from prefloop.training.rounds import check_config

    base = {"rag": {"enabled": True, "max_context_tokens": 200}, "training": {"generation": {"max_new_tokens": 48}}}
    with pytest.raises(ConfigError, match=r"training.sft.max_length \(128\) cannot hold a prompt with its passages") as err:
        check_config(parse_config({**base, "training": {**base["training"], "sft": {"max_length": 128}}}))
    assert "at least 312" in (err.value.hint or "")
    check_config(parse_config({**base, "training": {**base["training"], "sft": {"max_length": 312},
                                                    "dpo": {"max_length": 400}}}))
    check_config(parse_config({"rag": {"enabled": False}, "training": {"sft": {"max_length": 32}}}))  # no retrieval
