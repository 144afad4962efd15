"""No record accepted by any public path can break an export.

Nasty strings (lone surrogates, NUL, ANSI and OSC escapes, bidi overrides, zero-width characters,
a 200,000-character text, emoji, right-to-left scripts, C1 controls, noncharacters) go through
every way text enters the store: import, ``queue add``, the queue API, submit of each task kind,
skip, judges' ``record`` and annotator names. Each is either refused with a one-line error or
stored exactly; afterwards ``prefloop export sft|dpo`` and the admin export still work and carry
the accepted text unchanged. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from serverkit import make_project
from typer.testing import CliRunner

from prefloop.cli import app
from prefloop.errors import PrefloopError
from prefloop.feedback.auth import add_annotator
from prefloop.feedback.server import create_app, serve_in_background

PREFLOOP = str(Path(sys.executable).parent / "prefloop")

NASTY = {
    "high surrogate": "\ud800",
    "low surrogate inside": "ok \udfff ok",
    "NUL": "a\x00b",
    "ANSI": "Berlin.\x1b[2K\x1b[1GParis.",
    "OSC": "\x1b]0;owned\x07title",
    "bidi override": "abc\u202edcba\u202c",
    "zero-width only": "\u200b\u200c\u200d\ufeff \u2060",
    "zero-width inside": "Pa\u200bris",
    "emoji": "👩‍👩‍👧‍👦 ✔️ 🇫🇷",
    "RTL": "مرحبا بالعالم שלום",
    "huge": "long text " * 20_000,
    "CRLF, tabs": "a\r\nb\tc\r",
    "C1 controls": "x\x85\x9b\x9cy",
    "noncharacters": "\ufffe\uffff\U0010ffff",
    "BOM first": "\ufeffhi",
}
UNSTORABLE = {"high surrogate", "low surrogate inside", "NUL"}  # refused everywhere
BLANK = {"zero-width only"}  # refused where text must be visible (prompts, outputs, edits, names, keys)


class Paths:
    """Every way text enters the store, each tried once per nasty string; counts what was refused."""

    def __init__(self, project) -> None:  # noqa: ANN001
        self.project, self.queue = project, project.queue
        self.refused: dict[str, set[str]] = {}
        self.accepted_edits: list[str] = []

    def attempt(self, path: str, name: str, fn) -> bool:  # noqa: ANN001
        try:
            fn()
        except PrefloopError as exc:
            assert "\n" not in exc.message, (path, name, exc.message)
            self.refused.setdefault(path, set()).add(name)
            return False
        return True

    def cli(self, *args: str) -> None:
        result = CliRunner().invoke(app, [*args, "--project", str(self.project.root)])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert result.exit_code == 0, result.output

    def jsonl(self, name: str, rows: list[dict]) -> Path:
        f = self.project.root / name
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))  # ASCII: a lone surrogate travels as \ud800
        return f

    def answer(self, annotator: int, kind: str, make_value, **kw) -> None:  # noqa: ANN001
        """Claim a task of ``kind`` and answer it with ``kw``; a refused answer is replaced by a plain one."""
        task = self.queue.claim(annotator, kinds=[kind])
        assert task is not None, kind
        ok = self.attempt(f"submit {kind}", kw.pop("_name"), lambda: self.queue.submit(annotator, task.task_id, make_value(task), **kw))
        if not ok:
            self.queue.submit(annotator, task.task_id, make_value(task, plain=True))


def json_lines(data: bytes) -> list[dict]:
    """JSON Lines split on "\\n" only: U+0085 and U+2028 are valid raw inside a JSON string, and
    ``str.splitlines()`` would cut a row there."""
    return [json.loads(line) for line in data.decode("utf-8").split("\n") if line]


def value_for(kind: str, text: str | None = None):  # noqa: ANN201
    def make(task, plain: bool = False):  # noqa: ANN001, ANN202
        ids = [c.generation_id for c in task.candidates]
        return {"rate": {"rating": 5}, "compare": {"choice": ids[0]}, "rank": {"ranking": ids},
                "edit": {"text": "plain fix" if plain or text is None else text}}[kind]
    return make


def test_nothing_accepted_by_a_public_path_breaks_an_export(tmp_path: Path, db_url: str) -> None:
    project = make_project(tmp_path / "p", db_url, queue={"overlap": 1})
    paths = Paths(project)
    q = paths.queue
    for i, (name, s) in enumerate(NASTY.items()):
        # import (the prompt, the reference, a tag, a meta key and value) and queue add (the prompt, an output)
        f = paths.jsonl(f"import-{i}.jsonl", [{"prompt": f"import {i}: {s}", "reference": s, "tags": [s], "meta": {s: s}}])
        paths.attempt("import", name, lambda f=f: paths.cli("import", str(f)))
        f = paths.jsonl(f"tasks-{i}.jsonl", [{"prompt": s, "outputs": [s, f"other {i}"]}])
        paths.attempt("queue add", name, lambda f=f: paths.cli("queue", "add", str(f)))
        # the queue API
        paths.attempt("add_comparison", name, lambda s=s, i=i: q.add_comparison(f"api {i}", [s, f"alt {i}"]))
        paths.attempt("add_edit", name, lambda s=s, i=i: q.add_edit(f"api edit {i}: {s}", f"draft {i}"))
        # a human answers one task of each kind with the string in one field each, then skips one
        base = {"edit": q.add_edit(f"edit me {i}", f"teh {i}"), "compare": q.add_comparison(f"pick {i}", [f"A{i}", f"B{i}"]),
                "rate": q.add_rating(f"rate {i}", f"fine {i}"), "rank": q.add_ranking(f"rank {i}", [f"x{i}", f"y{i}", f"z{i}"])}
        assert all(base.values())
        human = q.ensure_annotator(f"human {i}")
        paths.answer(human, "edit", value_for("edit", s), _name=name)
        paths.answer(human, "compare", value_for("compare"), _name=name, rationale=s)
        paths.answer(human, "rate", value_for("rate"), _name=name, idempotency_key=f"key {i} {s}")
        paths.answer(human, "rank", value_for("rank"), _name=name, rationale=s, meta={"note": s})
        q.add_rating(f"skip me {i}", f"meh {i}")
        skip_task = q.claim(human, kinds=["rate"]).task_id
        if not paths.attempt("skip", name, lambda s=s: q.skip(human, skip_task, reason=s)):
            q.skip(human, skip_task)
        # an annotator whose name is the string answers a compare task (names are exported)
        if paths.attempt("annotator name", name, lambda s=s: q.ensure_annotator(s)):
            named = q.ensure_annotator(s)
            q.add_comparison(f"named {i}", [f"N{i}", f"M{i}"])
            paths.answer(named, "compare", value_for("compare"), _name=name)
        # a judge records verdicts with the string as rationale, meta and edit
        judge = q.ensure_annotator(f"judge-{i}", kind="judge")
        paths.attempt("record rationale", name, lambda s=s: q.record(judge, base["compare"], {"choice": "tie"}, rationale=s, meta={"why": s}))
        paths.attempt("record edit", name, lambda s=s: q.record(judge, base["edit"], {"text": s}))

    visible_text_paths = {"import", "queue add", "add_comparison", "submit edit", "annotator name", "record edit"}
    for path in ("import", "queue add", "add_comparison", "add_edit", "submit edit", "submit compare", "submit rate",
                 "submit rank", "skip", "annotator name", "record rationale", "record edit"):
        expected = UNSTORABLE | (BLANK if path in visible_text_paths else set())
        if path in ("annotator name", "submit rate"):
            expected = expected | {"huge"}  # names and idempotency keys hold at most 200 characters
        assert paths.refused.get(path, set()) == expected, path

    # ------------------------------------------------------------------ the exports still work
    env = {**os.environ, "NO_COLOR": "1", "PREFLOOP_DATABASE_URL": db_url}
    exported = {}
    for kind, extra in (("sft", []), ("dpo", ["--min-confidence", "0"])):
        out = tmp_path / f"{kind}.jsonl"
        proc = subprocess.run([PREFLOOP, "export", kind, str(out), *extra, "-p", str(project.root)],
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        exported[kind] = json_lines(out.read_bytes())
    sft_targets = {r["completion"][0]["content"] for r in exported["sft"]}
    accepted_edits = {s for name, s in NASTY.items() if name not in UNSTORABLE | BLANK}
    assert accepted_edits <= sft_targets, "every accepted edit is exported exactly as written"
    names = {n for r in exported["dpo"] for n in r["annotators"]}
    assert {s for name, s in NASTY.items() if name not in UNSTORABLE | BLANK | {"huge"}} <= names

    token = add_annotator(project.store, "boss", admin=True)
    with serve_in_background(create_app(project)) as url, httpx.Client(base_url=url, timeout=120,
                                                                      headers={"Authorization": f"Bearer {token}"}) as admin:
        for kind in ("sft", "dpo"):
            r = admin.get(f"/api/admin/export/{kind}.jsonl")
            assert r.status_code == 200, r.text[:300]
            rows = json_lines(r.content)
            assert len(rows) == len(exported[kind])
    project.store.dispose()


@pytest.mark.parametrize("name", sorted(UNSTORABLE))
def test_the_issue_surrogate_edit_is_refused_before_it_can_poison_exports(tmp_path: Path, db_url: str, name: str) -> None:
    """The issue's case over HTTP: an edit holding a lone surrogate in the JSON body is a 4xx, and
    the exports keep working."""
    project = make_project(tmp_path / "p", db_url)
    project.queue.add_edit("Fix it", "brokn")
    token = add_annotator(project.store, "ann")
    boss = add_annotator(project.store, "boss", admin=True)
    body = '{"value": {"text": "fixed %s"}}' % json.dumps(NASTY[name])[1:-1]  # the escape exactly as a client sends it
    with serve_in_background(create_app(project)) as url:
        ann = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        task = ann.post("/api/tasks/next").json()
        r = ann.post(f"/api/tasks/{task['task_id']}/submit", content=body, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, r.text
        assert ann.post(f"/api/tasks/{task['task_id']}/submit", json={"value": {"text": "fixed"}}).status_code == 200
        admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {boss}"}, timeout=30)
        sft = admin.get("/api/admin/export/sft.jsonl")
        assert sft.status_code == 200 and json.loads(sft.text)["completion"][0]["content"] == "fixed"
    project.store.dispose()
