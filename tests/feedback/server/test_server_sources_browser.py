"""The annotation page shows a RAG answer's sources, in headless Debian Chromium: a "Sources" panel
with the passages placed in the model's prompt, untrusted text shown literally (markup never
runs, hidden characters marked), and no panel for outputs made without retrieval."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect
from ragkit import UNTRUSTED, add_generations, make_kb, retrieve
from serverkit import ARTIFACTS, chromium, serve_project, sign_in

pytestmark = pytest.mark.browser

QUESTION = [{"role": "user", "content": "Hi, I'm Noah. What do the refund desk notes say?"}]


def test_sources_panel_shows_untrusted_passages_literally(sqlite_url: str, tmp_path: Path) -> None:
    with serve_project(tmp_path / "proj", sqlite_url) as served:
        make_kb(served.store, tmp_path / "kb")
        context = retrieve(served.store, tmp_path / "index", QUESTION)
        assert any(UNTRUSTED in p["text"] for p in context.passages)
        _, gens = add_generations(served.store, QUESTION, ["Refunds take 5 business days.", "No idea."], context=context)
        served.queue.add_task("compare", gens, priority=2)
        _, plain = add_generations(served.store, [{"role": "user", "content": "Hello?"}], ["Hi!", "Hello!"])
        served.queue.add_task("compare", plain, priority=1)
        token = served.token("ann")
        ARTIFACTS.mkdir(exist_ok=True)

        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            sign_in(page, served.url, token)
            expect(page.locator("#sources")).to_be_visible()
            items = page.locator("#source-list .source-item")
            expect(items).to_have_count(len(context.passages))
            shown = page.inner_text("#sources")
            assert shown.startswith("SOURCES")  # the label is upper-cased by the style sheet
            for p in context.passages:
                assert f"[{p['number']}] {p['title']} — {p['source']}" in shown
            # markup is text: no element was made from it, nothing ran
            assert '<img src=x onerror="document.title=\'pwned\'">' in shown
            assert page.locator("#sources img").count() == 0 and page.title() != "pwned"
            # hidden characters are marked, as in outputs
            marks = page.locator("#sources .ctl").all_inner_texts()
            assert "\\x1b" in marks and "\\u202e" in marks
            page.screenshot(path=str(ARTIFACTS / "sources.png"), full_page=True)

            page.keyboard.press("1")  # answer; the next task's outputs were made without retrieval
            expect(page.locator("#status")).to_contain_text("Saved")
            expect(page.locator("#prompt")).to_contain_text("Hello?")
            expect(page.locator("#sources")).to_be_hidden()
            assert errors == []
