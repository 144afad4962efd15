"""Test helpers for the annotation server: a real uvicorn server on a loopback port over a fresh
project, HTTP clients holding real tokens, and headless Debian Chromium through Playwright."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from prefloop.config import ProjectConfig
from prefloop.feedback.server import create_app, serve_in_background
from prefloop.feedback.server.auth import add_annotator
from prefloop.feedback.store.models import Annotation, Annotator
from prefloop.project import Project

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass
class Served:
    url: str
    project: Project

    @property
    def store(self):  # noqa: ANN201
        return self.project.store

    @property
    def queue(self):  # noqa: ANN201
        return self.project.queue

    def token(self, name: str, *, admin: bool = False) -> str:
        return add_annotator(self.store, name, admin=admin)

    def client(self, token: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)

    def annotator_id(self, name: str) -> int:
        with self.store.session() as s:
            return s.scalar(select(Annotator.id).where(Annotator.name == name))

    def annotations(self, name: str | None = None) -> list[Annotation]:
        with self.store.session() as s:
            q = select(Annotation).order_by(Annotation.id)
            if name is not None:
                q = q.join(Annotator, Annotator.id == Annotation.annotator_id).where(Annotator.name == name)
            return list(s.scalars(q))


def make_project(root: Path, db_url: str, **sections: Any) -> Project:
    config = ProjectConfig.model_validate({"store": {"url": db_url}, **sections})
    root.mkdir(parents=True, exist_ok=True)
    (root / "prefloop.yaml").write_text(config.to_yaml())
    return Project(root, config)


@contextlib.contextmanager
def serve_project(root: Path, db_url: str, **sections: Any) -> Iterator[Served]:
    project = make_project(root, db_url, **sections)
    try:
        with serve_in_background(create_app(project)) as url:
            yield Served(url, project)
    finally:
        project.store.dispose()


def chromium_or_skip() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if IN_CI:
        pytest.fail(f"CI must run the browser tests: {CHROMIUM} is missing (.ci/run installs Debian's chromium)")
    pytest.skip(f"no {CHROMIUM}: install Debian's chromium (apt-get install -y chromium) to run the browser tests")


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Headless Debian Chromium (never a downloaded browser)."""
    path = chromium_or_skip()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)  # auto-waiting assertions: generous on a loaded machine

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def sign_in(page: Any, url: str, token: str) -> None:
    """Sign in through the real form, as a person would, and wait for the first task or the empty state."""
    page.goto(url + "/login")
    page.fill("#token", token)
    page.press("#token", "Enter")
    page.wait_for_url(url + "/annotate")
    page.wait_for_selector("#work:not([hidden]), #empty:not([hidden])")
