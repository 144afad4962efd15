"""Attack suite for the annotation server: hostile model outputs in a real browser, forged and
borrowed identities, CSRF, oversized bodies, SQL-injection strings, sign-in brute force."""

from __future__ import annotations

import httpx
import pytest
from serverkit import chromium, serve_project, sign_in
from sqlalchemy import select

from prefloop.feedback.server import create_app, serve_in_background
from prefloop.feedback.server.limiter import SignInLimiter
from prefloop.feedback.server.security import CSP
from prefloop.feedback.server.sessions import SESSION_COOKIE
from prefloop.feedback.store.models import Annotation, Annotator, Generation, Prompt

XSS_OUTPUT = (
    "Sure! <script>window.__pwned = 'script'; alert(1)</script>\n"
    '<img src=x onerror="window.__pwned = \'img\'; alert(2)">\n'
    '<a href="javascript:window.__pwned=\'link\'">click me</a> and [click](javascript:alert(3))\n'
    "<svg onload=\"window.__pwned='svg'\"></svg><iframe src=\"javascript:alert(4)\"></iframe>"
)
XSS_PROMPT = "Summarise: <b>bold</b> <script>window.__pwned='prompt'</script> <style>body{display:none}</style>"
SQLI = [
    "'; DROP TABLE annotations; --",
    "\" OR 1=1 --",
    "Robert'); DELETE FROM tasks WHERE ('1'='1",
    "1; UPDATE annotators SET role='admin' --",
    "%' UNION SELECT token_hash FROM annotators --",
    "\\'; SELECT pg_sleep(5); --",
]


@pytest.fixture
def served(db_url, tmp_path):  # noqa: ANN001, ANN201
    with serve_project(tmp_path / "proj", db_url, server={"max_body_bytes": 4096}) as s:
        yield s


@pytest.fixture
def served_sqlite(sqlite_url, tmp_path):  # noqa: ANN001, ANN201
    with serve_project(tmp_path / "proj", sqlite_url, annotation={"show_judge_suggestions": True}) as s:
        yield s


# ------------------------------------------------------------------------------------------ XSS
@pytest.mark.browser
def test_hostile_outputs_show_as_text_and_run_nothing(served_sqlite) -> None:  # noqa: ANN001
    served = served_sqlite
    q = served.queue
    compare = q.add_comparison(XSS_PROMPT, [XSS_OUTPUT, "a plain answer"], priority=3)
    judge = q.ensure_annotator("<img src=x onerror=alert(5)>", kind="judge")
    with served.store.session() as s:
        first = s.scalar(select(Generation.id).where(Generation.text == XSS_OUTPUT))
    q.record(judge, compare, {"choice": first}, rationale="<script>window.__pwned='rationale'</script>")
    q.add_edit("Fix <script>window.__pwned='edit-prompt'</script>", XSS_OUTPUT, priority=1)
    token = served.token("mallory-victim")
    with chromium() as browser:
        page = browser.new_page()
        dialogs: list[str] = []
        violations: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        sign_in(page, served.url, token)
        page.click("#suggestions summary")  # open the judge suggestion (hostile rationale and judge name)

        # the hostile text is on the page, literally
        text = page.inner_text("#candidates")
        for fragment in ("<script>window.__pwned = 'script'; alert(1)</script>", '<img src=x onerror=',
                         '<a href="javascript:', "[click](javascript:alert(3))", "<svg onload=", "<iframe src="):
            assert fragment in text
        assert "<script>window.__pwned='prompt'</script>" in page.inner_text("#prompt")
        assert "<script>window.__pwned='rationale'</script>" in page.inner_text("#suggestion-list")
        assert "<img src=x onerror=alert(5)>" in page.inner_text("#suggestion-list")
        # and it made no element: no script, image, link, frame or svg inside the task
        for sel in ("script", "img", "a", "iframe", "svg", "style", "b"):
            assert page.query_selector_all(f"#work {sel}") == [], sel
        page.mouse.click(*_center(page, "#candidates"))  # where a link would be: nothing to follow
        assert page.url == served.url + "/annotate"

        # the CSP is a second wall: markup injected behind the page's back still cannot run
        # (the violation is reported when the image fails and its inline handler is refused)
        with page.expect_console_message(lambda m: "inline event handler" in m.text and "Content Security Policy" in m.text):
            page.evaluate("""() => {
                const d = document.createElement('div');
                d.innerHTML = '<img src="data:," onerror="window.__pwned=\\'csp\\'">';
                document.body.appendChild(d);
            }""")
        assert page.evaluate("window.__pwned") is None
        assert dialogs == []
        assert violations, "the injected inline handler should have been blocked by the CSP"

        page.keyboard.press("2")  # answer, then the edit task: the textarea holds the hostile text as text
        page.wait_for_selector("#editor")
        assert page.input_value("#editor") == XSS_OUTPUT
        assert page.query_selector_all("#work img, #work script, #work a") == []
        assert page.evaluate("window.__pwned") is None and dialogs == []


def _center(page, selector: str) -> tuple[float, float]:  # noqa: ANN001
    box = page.locator(selector).bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def test_untrusted_text_only_travels_as_json(served) -> None:  # noqa: ANN001
    served.queue.add_comparison(XSS_PROMPT, [XSS_OUTPUT, "ok"])
    c = served.client(served.token("zed"))
    r = c.post("/api/tasks/next")
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert XSS_OUTPUT in [x["text"] for x in r.json()["candidates"]]
    browser = served.client()
    _login(served, browser, served.token("zoe"))
    page = browser.get("/annotate")  # pages never embed task text (the script fetches it as JSON)
    assert page.status_code == 200 and "<textarea" not in page.text
    assert "__pwned" not in page.text and "onerror" not in page.text


# ------------------------------------------------------------------------------------------ headers
def test_security_headers_and_cookie_flags(served) -> None:  # noqa: ANN001
    c = served.client()
    for path in ("/login", "/api/openapi.json", "/static/annotate.js", "/healthz"):
        h = c.get(path).headers
        assert h["content-security-policy"] == CSP, path
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP and "frame-ancestors 'none'" in CSP
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff", path
        assert h["referrer-policy"] == "no-referrer"
    assert c.get("/api/openapi.json").headers["cache-control"] == "no-store"
    assert c.get("/docs").status_code == 404  # the interactive docs would load a CDN script
    login = _login(served, c, served.token("yan"))
    cookie = login.headers["set-cookie"]
    assert cookie.startswith(SESSION_COOKIE + "=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie


def _login(served, client: httpx.Client, token: str) -> httpx.Response:  # noqa: ANN001
    form = client.get("/login")
    csrf = form.text.split('name="csrf_token" value="')[1].split('"')[0]
    return client.post("/login", data={"token": token, "csrf_token": csrf})


# ------------------------------------------------------------------------------------------ identity
def test_forged_and_borrowed_tokens_reach_nothing(served) -> None:  # noqa: ANN001
    q = served.queue
    t1 = q.add_comparison("first", ["a", "b"], priority=2)
    t2 = q.add_comparison("second", ["c", "d"], priority=1)
    alice = served.client(served.token("alice"))
    eve = served.client(served.token("eve"))
    task = alice.post("/api/tasks/next").json()
    assert task["task_id"] == t1
    gid = task["candidates"][0]["generation_id"]

    # forged tokens: nothing readable, nothing writable
    for forged in ("pfl_" + "A" * 43, "", "' OR '1'='1"):  # 9 failures: under the sign-in limit of 10
        f = served.client(forged) if forged else httpx.Client(base_url=served.url, headers={"Authorization": "Bearer"})
        assert f.post("/api/tasks/next").status_code == 401
        assert f.post(f"/api/tasks/{t1}/submit", json={"value": {"choice": gid}}).status_code == 401
        assert f.get("/api/me/progress").status_code == 401
    assert httpx.get(served.url + "/api/me", headers={"Authorization": "Basic YWxpY2U6eA=="}).status_code == 401

    # another annotator's token cannot see, answer, skip or release alice's task
    assert eve.post("/api/tasks/next").json()["task_id"] == t2  # never alice's leased task
    for action, body in (("submit", {"value": {"choice": gid}}), ("skip", {}), ("release", None)):
        r = eve.post(f"/api/tasks/{t1}/{action}", json=body)
        assert r.status_code == 409, (action, r.text)
    assert eve.get("/api/me/progress", params={"annotator_id": served.annotator_id("alice")}).status_code == 422
    assert served.annotations("eve") == []
    # alice's claim is intact and hers to answer
    assert alice.post(f"/api/tasks/{t1}/submit", json={"value": {"choice": gid}}).status_code == 200
    assert eve.post(f"/api/tasks/{t1}/submit", json={"value": {"choice": gid}}).status_code == 409
    assert eve.get("/api/me/progress").json()["done"] == 0
    # admin data is admins' only
    for path in ("/api/admin/queue", "/api/admin/annotators", "/api/admin/agreement", "/api/admin/export/dpo.jsonl"):
        assert eve.get(path).status_code == 403


def test_sessions_csrf_and_revocation(served) -> None:  # noqa: ANN001
    served.queue.add_comparison("q", ["a", "b"])
    token = served.token("sam")
    browser = served.client()
    assert _login(served, browser, token).status_code == 303
    page = browser.get("/annotate")
    assert page.status_code == 200
    csrf = page.text.split('name="csrf-token" content="')[1].split('"')[0]
    assert browser.get("/api/me").json()["name"] == "sam"  # reads need no CSRF token
    assert browser.post("/api/tasks/next").status_code == 403  # writes do
    assert browser.post("/api/tasks/next", headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert browser.post("/api/tasks/next", headers={"X-CSRF-Token": csrf}).status_code == 200
    # a tampered cookie is no session
    forged = httpx.Client(base_url=served.url, cookies={SESSION_COOKIE: browser.cookies[SESSION_COOKIE][:-3] + "xyz"})
    assert forged.get("/api/me").status_code == 401
    assert forged.get("/annotate").status_code == 303
    # the sign-in form itself needs its CSRF cookie (no login CSRF)
    bare = httpx.Client(base_url=served.url)
    assert bare.post("/login", data={"token": token, "csrf_token": "x"}).status_code == 403
    # sign-out needs the token too
    assert browser.post("/logout", data={"csrf_token": "nope"}).status_code == 403
    # revoking the token ends the session
    from prefloop.feedback.server.auth import revoke_annotator

    revoke_annotator(served.store, "sam")
    assert browser.get("/api/me").status_code == 401
    assert browser.get("/annotate").status_code == 303


def test_failed_signins_are_limited_but_never_a_valid_token(sqlite_url, tmp_path) -> None:  # noqa: ANN001
    """Behind a proxy a whole team shares one address: one person's (or one script's) failures
    must not lock the others out. Only failing attempts are limited, and every 429 says when to retry."""
    with serve_project(tmp_path / "p", sqlite_url, server={"signin_attempts": 5}) as served:
        good = served.token("ria")
        browser = served.client()
        statuses = [served.client(f"pfl_wrong-guess-{i:02d}").get("/api/me").status_code for i in range(10)]
        assert statuses == [401] * 5 + [429] * 5  # from one address: limited after 5 failures
        # ... yet the same address signs in at once with a valid token
        assert served.client(good).get("/api/me").json()["name"] == "ria"
        r = served.client("pfl_wrong-guess-99").get("/api/me")
        assert r.status_code == 429 and r.json()["error"] == "too many failed sign-ins"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert _login(served, browser, good).status_code == 303
        assert browser.get("/api/me").status_code == 200
        # the form's 429 carries Retry-After too
        blocked = _login(served, served.client(), "pfl_wrong")
        assert blocked.status_code == 429 and "Too many failed sign-ins" in blocked.text
        assert 1 <= int(blocked.headers["retry-after"]) <= 60


def test_limiter_counts_per_address_per_token_and_overall() -> None:
    now = [0.0]
    limiter = SignInLimiter(limit=3, overall=10, window=60, clock=lambda: now[0])
    assert [limiter.failed("10.0.0.1", f"pfl_{i}-guess") for i in range(3)] == [0, 0, 0]
    assert limiter.failed("10.0.0.1", "pfl_9-guess") == 60  # the address is limited ...
    assert limiter.failed("10.0.0.2", "pfl_other") == 0  # ... not its neighbour
    # one token retried from many addresses (a script with a revoked token) is limited by its prefix
    assert [limiter.failed(f"10.1.0.{i}", "pfl_revoked-token") > 0 for i in range(4)] == [False] * 3 + [True]
    # a flood from many addresses meets the overall ceiling: the 10th failure passes, the 11th waits
    now[0] = 30.0
    assert limiter.failed("10.2.0.1", "pfl_flood-1") == 0
    assert limiter.failed("10.2.0.2", "pfl_flood-2") == pytest.approx(30)
    keys = len(limiter)
    assert limiter.failed("10.3.0.1", "pfl_new-one") > 0 and len(limiter) == keys  # a flood adds no keys
    now[0] = 200.0  # a window later everything is forgotten, and so are the idle keys
    assert limiter.failed("10.0.0.1", "pfl_0-guess") == 0
    assert len(limiter) == 3  # the address, the prefix and the overall count of the last failure


def test_logout_ends_the_session_server_side(db_url, tmp_path) -> None:  # noqa: ANN001
    with serve_project(tmp_path / "p", db_url) as served:
        token = served.token("lou")
        browser = served.client()
        assert _login(served, browser, token).status_code == 303
        cookie = browser.cookies[SESSION_COOKIE]
        page = browser.get("/annotate")
        csrf = page.text.split('name="csrf-token" content="')[1].split('"')[0]
        copied = httpx.Client(base_url=served.url, cookies={SESSION_COOKIE: cookie})
        assert copied.get("/api/me").json()["name"] == "lou"  # a copy of the cookie works while signed in
        # sessions live in the store: a restarted server knows them
        with serve_in_background(create_app(served.project)) as restarted:
            assert httpx.get(restarted + "/api/me", cookies={SESSION_COOKIE: cookie}).status_code == 200
        assert browser.post("/logout", data={"csrf_token": csrf}).status_code == 303
        assert copied.get("/api/me").status_code == 401  # the copied cookie is dead too
        assert copied.get("/annotate").status_code == 303
        assert copied.post("/api/tasks/next", headers={"X-CSRF-Token": csrf}).status_code == 401


# ------------------------------------------------------------------------------------------ size
def test_oversized_bodies_are_refused(served) -> None:  # noqa: ANN001
    task_id = served.queue.add_edit("Fix", "brokn")
    c = served.client(served.token("olga"))
    assert c.post("/api/tasks/next").status_code == 200
    huge = {"value": {"text": "x" * 10_000}, "idempotency_key": "olga-edit-0001"}
    r = c.post(f"/api/tasks/{task_id}/submit", json=huge)
    assert r.status_code == 413 and "too large" in r.json()["error"]

    def chunks():  # no Content-Length: the limit holds on the streamed body too
        for _ in range(10):
            yield b"x" * 1000

    r = c.post(f"/api/tasks/{task_id}/submit", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = c.post("/login", content=b"token=" + b"a" * 5000, headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413
    assert served.annotations("olga") == []
    ok = c.post(f"/api/tasks/{task_id}/submit", json={"value": {"text": "fixed " * 100}, "idempotency_key": "olga-edit-0002"})
    assert ok.status_code == 200  # a normal answer still goes through


# ------------------------------------------------------------------------------------------ SQL
def test_sql_injection_strings_are_stored_literally(served) -> None:  # noqa: ANN001
    q = served.queue
    n = len(SQLI)
    for i, evil in enumerate(SQLI):
        q.add_edit(f"{evil} #{i}", evil, priority=n - i)
    q.add_comparison("compare " + SQLI[0], SQLI[:2], priority=-1)
    name = SQLI[1] + " (annotator)"
    c = served.client(served.token(name))
    for i, evil in enumerate(SQLI):
        t = c.post("/api/tasks/next").json()
        assert t["prompt"]["text"] == f"{evil} #{i}" and t["candidates"][0]["text"] == evil
        body = {"value": {"text": evil + " edited"}, "idempotency_key": f"{evil}-{i}", "rationale": evil}
        assert c.post(f"/api/tasks/{t['task_id']}/submit", json=body).status_code == 200
    t = c.post("/api/tasks/next").json()
    assert c.post(f"/api/tasks/{t['task_id']}/skip", json={"reason": SQLI[2]}).status_code == 200
    assert c.get("/api/me/progress", params={"round_id": "1 OR 1=1"}).status_code == 422
    assert served.client(SQLI[3]).get("/api/me").status_code == 401
    assert _login(served, served.client(), SQLI[4]).status_code == 401

    rows = served.annotations(name)
    assert [r.value["text"] for r in rows if r.status == "submitted"] == [e + " edited" for e in SQLI]
    assert [r.rationale for r in rows] == [*SQLI, SQLI[2]]
    assert [r.idempotency_key for r in rows[:n]] == [f"{e}-{i}" for i, e in enumerate(SQLI)]
    with served.store.session() as s:
        assert s.scalar(select(Annotator.name).where(Annotator.name == name)) == name
        assert {p.text for p in s.scalars(select(Prompt))} >= {f"{e} #{i}" for i, e in enumerate(SQLI)}
        assert s.scalars(select(Annotator.role)).all() == ["annotator"]  # nobody became admin
        assert len(s.scalars(select(Annotation.id)).all()) == n + 1  # no table was dropped or emptied
