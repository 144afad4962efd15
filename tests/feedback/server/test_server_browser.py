"""The annotation page in headless Debian Chromium: sign in, answer every task kind with the
keyboard, and check each answer in the store. Screenshots land in ``test-artifacts/``."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from serverkit import ARTIFACTS, chromium, serve_project, sign_in

from prefloop.visible import HIDDEN, visible_parts

pytestmark = pytest.mark.browser

GUIDELINES = "Prefer the correct answer.\nSkip what you cannot judge."


@pytest.fixture
def served(sqlite_url, tmp_path):  # noqa: ANN001, ANN201
    with serve_project(tmp_path / "proj", sqlite_url, annotation={"guidelines": GUIDELINES}) as s:
        yield s


def _shown(page) -> list[str]:  # noqa: ANN001
    return [page.inner_text(f"#candidates .candidate:nth-child({i}) .text") for i in (1, 2)]


def test_annotator_labels_every_kind_with_the_keyboard(served) -> None:  # noqa: ANN001
    q = served.queue
    compare = q.add_comparison(
        "Explain why the sky is blue, in one sentence.",
        ["Air molecules scatter short blue wavelengths of sunlight more than red ones.",
         "Because it reflects the ocean."],
        priority=5,
    )
    rate = q.add_rating("Write a haiku about autumn.", "Crisp leaves drift and fall\nGolden light on quiet roads", priority=4)
    rank = q.add_ranking("A synonym for 'happy'?", ["glad", "sad", "joyful"], priority=3)
    edit = q.add_edit("What is the capital of Australia?", "The capital of Australia is Sydney.", priority=2)
    q.add_comparison("A task to skip", ["x", "y"], priority=1)
    token = served.token("ann")
    ARTIFACTS.mkdir(exist_ok=True)

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        sign_in(page, served.url, token)

        # ---- compare: side by side, in this annotator's order; the guidelines are on the page
        assert page.inner_text("#task-title") == "Which answer is better?"
        assert page.inner_text(".guidelines") == GUIDELINES
        expect(page.locator("#p-remaining")).to_have_text("5")
        shown = _shown(page)
        page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)
        page.keyboard.press("2")  # the answer shown second
        page.wait_for_selector(".kind-rate")

        # ---- rate: the configured 1–5 scale, a digit answers
        assert page.inner_text("#status").startswith("Saved: answer B")
        expect(page.locator("#p-done")).to_have_text("1")
        assert [b.inner_text().split()[0] for b in page.query_selector_all(".scale-btn")] == ["1", "2", "3", "4", "5"]
        page.keyboard.press("9")  # off the scale: ignored
        page.keyboard.press("4")
        page.wait_for_selector(".kind-rank")

        # ---- rank: select with the arrows, move with Shift+arrows, Enter submits
        before = [e.inner_text() for e in page.query_selector_all(".rank-item .text")]
        page.keyboard.press("ArrowDown")  # select the second
        page.keyboard.press("Shift+ArrowUp")  # move it to the top
        page.keyboard.press("3")  # select the third
        page.keyboard.press("K")  # and move it up one
        after = [e.inner_text() for e in page.query_selector_all(".rank-item .text")]
        assert after == [before[1], before[2], before[0]]
        page.screenshot(path=str(ARTIFACTS / "rank.png"), full_page=True)
        page.keyboard.press("Enter")
        page.wait_for_selector("#editor")

        # ---- edit: a text area prefilled with the output; Ctrl+Enter saves
        assert page.input_value("#editor") == "The capital of Australia is Sydney."
        assert page.evaluate("document.activeElement.id") == "editor"
        page.keyboard.press("s")  # typing in the editor never triggers a shortcut
        assert page.input_value("#editor").endswith("s")
        page.fill("#editor", "The capital of Australia is Canberra.")
        page.keyboard.press("Control+Enter")
        page.wait_for_selector("#task-title:text-is('Which answer is better?')")

        # ---- skip with s
        page.keyboard.press("s")
        page.wait_for_selector("#empty:not([hidden])")
        expect(page.locator("#p-done")).to_have_text("4")
        expect(page.locator("#p-remaining")).to_have_text("0")
        expect(page.locator("body")).to_have_attribute("data-idle", "true")
        assert errors == []

    rows = {a.task_id: a for a in served.annotations("ann")}
    by_text = _generation_texts(served)
    c = rows[compare]
    assert by_text[c.value["choice"]] == shown[1]
    assert [by_text[g] for g in c.meta["shown_order"]] == shown  # the A/B order is recorded
    assert c.idempotency_key and c.duration_s > 0
    assert rows[rate].value == {"rating": 4}
    assert [by_text[g] for g in rows[rank].value["ranking"]] == after
    assert rows[edit].value == {"text": "The capital of Australia is Canberra."}
    skipped = [a for a in rows.values() if a.status == "skipped"]
    assert len(skipped) == 1
    assert all(a.duration_s is not None and a.duration_s > 0 for a in rows.values() if a.status == "submitted")
    assert len({a.idempotency_key for a in rows.values() if a.status == "submitted"}) == 4


def _generation_texts(served) -> dict[int, str]:  # noqa: ANN001
    from sqlalchemy import select

    from prefloop.feedback.store.models import Generation

    with served.store.session() as s:
        return dict(s.execute(select(Generation.id, Generation.text)).all())


def test_a_lost_reply_is_retried_with_the_same_key_and_stored_once(served) -> None:  # noqa: ANN001
    """The server stores the answer but the reply never reaches the page: the page retries the
    POST with the same idempotency key, the server recognises it, nothing is stored twice."""
    task_id = served.queue.add_comparison("Pick one", ["left", "right"])
    token = served.token("lou")
    with chromium() as browser:
        page = browser.new_page()
        sign_in(page, served.url, token)
        lost: list[str] = []

        def drop_first_reply(route) -> None:  # noqa: ANN001
            if not lost:
                route.fetch()  # the request reaches the server, which stores the answer…
                lost.append(route.request.post_data)
                route.abort("connectionreset")  # …but the page sees the connection drop
            else:
                route.continue_()

        page.route("**/api/tasks/*/submit", drop_first_reply)
        page.keyboard.press("1")
        page.wait_for_selector("#empty:not([hidden])", timeout=15000)
        assert page.inner_text("#status").startswith("Already saved")
    rows = served.annotations("lou")
    assert len(rows) == 1 and rows[0].task_id == task_id
    assert f'"idempotency_key":"{rows[0].idempotency_key}"' in lost[0]


def test_admin_dashboard_renders_for_admins_only(served) -> None:  # noqa: ANN001
    q = served.queue
    for i in range(3):
        q.add_comparison(f"prompt {i}", [f"good {i}", f"bad {i}"], overlap=2)
    tokens = {n: served.token(n) for n in ("uma", "vic")}
    for name, token in tokens.items():
        c = served.client(token)
        for _ in range(3):
            t = c.post("/api/tasks/next").json()
            good = next(x["generation_id"] for x in t["candidates"] if x["text"].startswith("good"))
            c.post(f"/api/tasks/{t['task_id']}/submit", json={"value": {"choice": good}})
    judge = q.ensure_annotator("judge-y", kind="judge")
    from prefloop.feedback.store.models import Task

    with served.store.session() as s:
        for t in s.query(Task).all():
            q.record(judge, t.id, {"choice": "tie"}, session=s)  # humans agreed on a side: blind ties
    admin = served.token("chief", admin=True)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        sign_in(page, served.url, tokens["uma"])
        page.goto(served.url + "/admin")
        assert "Admins only" in page.inner_text("main")
        page.context.clear_cookies()
        sign_in(page, served.url, admin)
        page.click("text=Dashboard")
        page.wait_for_url(served.url + "/admin")
        main = page.inner_text("main")
        assert "Labels per annotator per hour" in main and "Inter-annotator agreement" in main
        assert "6/6 (100%)" in main  # queue progress of the round
        rows = {r.inner_text().split("\t")[0]: r.inner_text() for r in page.query_selector_all("table.stats tr")}
        assert "uma" in rows and "vic" in rows
        assert "Judge trust" in main and "unmeasured, blind" in rows["judge-y"]  # 3 blind ties of 3
        assert len(page.query_selector_all("svg.spark rect.bar-done")) == 2 * 24
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)


def test_the_page_is_idle_only_once_the_progress_counter_is_up_to_date(served) -> None:  # noqa: ANN001
    """After an answer the page draws the next task and then refreshes the counter: until that
    request has settled it must not call itself idle (tests and people read the counter then)."""
    served.queue.add_comparison("first", ["a", "b"], priority=2)
    served.queue.add_comparison("second", ["c", "d"], priority=1)
    token = served.token("ida")
    with chromium() as browser:
        page = browser.new_page()
        sign_in(page, served.url, token)
        expect(page.locator("body")).to_have_attribute("data-idle", "true")
        expect(page.locator("#p-done")).to_have_text("0")
        held: list = []
        released: list[bool] = []

        def hold(route) -> None:  # noqa: ANN001 - runs on this thread, inside a Playwright call
            if released:
                route.continue_()
            else:
                held.append(route)

        page.route("**/api/me/progress*", hold)
        page.keyboard.press("1")
        page.wait_for_selector("#prompt .text:text-is('second')")  # the next task is drawn…
        assert page.get_attribute("body", "data-idle") == "false"  # …while its progress is on hold
        assert page.inner_text("#p-done") == "0"
        released.append(True)
        for route in held:
            route.continue_()
        expect(page.locator("body")).to_have_attribute("data-idle", "true")
        assert page.inner_text("#p-done") == "1"


# ------------------------------------------------------------------------- what is shown is what is stored
CONVERSATION = [
    {"role": "system", "content": "You are a geography tutor. Answer in one word."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Germany?"},
]
TRICK = "Berlin.\x1b[2K\x1b[1GParis."
BIDI = "Bonn \u202eevil.exe\u202c is \u2066isolated\u2069\u200b."
#: every character the page must mark that the store accepts (NUL never is), then plain text
EVERY_HIDDEN = "".join(chr(c) for c in range(1, 0xE0080) if HIDDEN.fullmatch(chr(c))) + "\r\n\tend"


def _displayed(text: str) -> str:
    return "".join(part for part, _ in visible_parts(text))


@pytest.fixture
def served_hidden(sqlite_url, tmp_path):  # noqa: ANN001, ANN201
    annotation = {"guidelines": "Prefer\x1b[8m hidden\x1b[0m the correct answer.", "show_judge_suggestions": True}
    with serve_project(tmp_path / "proj", sqlite_url, annotation=annotation) as s:
        yield s


def test_control_and_bidi_characters_show_as_markers_and_the_whole_conversation(served_hidden) -> None:  # noqa: ANN001
    served = served_hidden
    q = served.queue
    q.add_comparison(CONVERSATION, [TRICK, BIDI], priority=3)
    q.add_rating("Python and the page agree", EVERY_HIDDEN, priority=2)
    edit = q.add_edit("Fix the answer", "Berlin.\x1b[2KParis.", priority=1)
    judge = q.ensure_annotator("judge", kind="judge")
    q.record(judge, edit, {"text": "Bonn\x1b[1G"}, rationale="fine\u202e")
    token = served.token("mia")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        sign_in(page, served.url, token)

        # ---- the whole conversation, each turn with its role
        turns = page.query_selector_all("#prompt .turn")
        assert [t.query_selector(".role").inner_text() for t in turns] == [
            "SYSTEM", "USER", "ASSISTANT", "USER"]  # the role labels are set in small capitals
        assert [t.query_selector(".text").inner_text() for t in turns] == [m["content"] for m in CONVERSATION]

        # ---- both parts of the trick, and what hid one of them, as markers
        shown = _texts(page, "#candidates .candidate .text")  # in this annotator's A/B order
        assert sorted(shown) == sorted([_displayed(TRICK), _displayed(BIDI)])
        assert "Berlin.\\x1b[2K\\x1b[1GParis." in shown
        assert sorted(page.locator("#candidates .ctl").all_inner_texts()) == sorted([
            "\\x1b", "\\x1b", "\\u202e", "\\u202c", "\\u2066", "\\u2069", "\\u200b"])
        assert page.inner_text(".guidelines") == "Prefer\\x1b[8m hidden\\x1b[0m the correct answer."
        text_content = page.evaluate("document.querySelector('main').textContent")
        assert not HIDDEN.search(text_content), "a hidden character reached the page as it is"
        page.screenshot(path=str(ARTIFACTS / "hidden-characters.png"), full_page=True)
        page.keyboard.press("1")

        # ---- every marked character, as the terminal shows it
        expect(page.locator(".kind-rate")).to_be_visible()
        assert _texts(page, "#candidates .candidate .text") == [_displayed(EVERY_HIDDEN)]
        assert page.locator("#candidates .ctl").count() == len(HIDDEN.findall(EVERY_HIDDEN))
        page.keyboard.press("3")

        # ---- an edit: the text box holds the stored text; the original is shown with markers
        page.wait_for_selector("#editor")
        assert page.input_value("#editor") == "Berlin.\x1b[2KParis."
        assert _texts(page, "#candidates .candidate .text") == ["Berlin.\\x1b[2KParis."]
        page.click("#suggestions summary")
        assert page.inner_text("#suggestion-list") == "judge suggests an edited answer: Bonn\\x1b[1G\nfine\\u202e"
        page.focus("#editor")
        page.fill("#editor", "Berlin.")
        page.keyboard.press("Control+Enter")
        page.wait_for_selector("#empty:not([hidden])")
        assert "\x1b" not in page.inner_text("#status")
    assert {a.task_id: a.value for a in served.annotations("mia")}[edit] == {"text": "Berlin."}


def _texts(page, selector: str) -> list[str]:  # noqa: ANN001
    return [e.inner_text() for e in page.query_selector_all(selector)]
