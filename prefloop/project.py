"""A prefloop project: a directory holding ``prefloop.yaml``, the SQLite store and run outputs.

Commands find the project from ``--project``, the ``PREFLOOP_PROJECT`` variable, or the
current directory and its parents, the way git finds a repository.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from sqlalchemy.engine import make_url

from prefloop.atomic import atomic_write_text
from prefloop.config import ProjectConfig, load_config, preset_text
from prefloop.errors import ConfigError, NotFoundError

CONFIG_NAME = "prefloop.yaml"


class Project:
    def __init__(self, root: str | Path, config: ProjectConfig | None = None) -> None:
        self.root = Path(root).resolve()
        self.config = config if config is not None else load_config(self.root / CONFIG_NAME)

    @classmethod
    def find(cls, start: str | Path | None = None) -> Project:
        if start is None:
            start = os.environ.get("PREFLOOP_PROJECT") or Path.cwd()
        here = Path(start).resolve()
        for d in (here, *here.parents):
            if (d / CONFIG_NAME).is_file():
                return cls(d)
        raise NotFoundError(
            f"no {CONFIG_NAME} in {here} or its parents",
            hint="run `prefloop init DIR` first, or pass --project DIR",
        )

    @property
    def database_url(self) -> str:
        """The store URL: ``PREFLOOP_DATABASE_URL`` if set, else the config's, SQLite made absolute."""
        url = os.environ.get("PREFLOOP_DATABASE_URL") or self.config.store.url
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
            db = Path(parsed.database)
            if not db.is_absolute():
                parsed = parsed.set(database=str(self.root / db))
        return parsed.render_as_string(hide_password=False)

    @cached_property
    def store(self):  # noqa: ANN201 - prefloop.feedback.store.db.Store
        from prefloop.feedback.store.db import open_store

        return open_store(self.database_url)

    @cached_property
    def queue(self):  # noqa: ANN201 - prefloop.feedback.queue.Queue
        from prefloop.feedback.queue import Queue

        return Queue.from_config(self.store, self.config.queue)

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"


def init_project(directory: str | Path, *, preset: str = "default", force: bool = False) -> Project:
    """Create a project directory with a config from ``preset`` and a migrated store."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / CONFIG_NAME
    if cfg.exists() and not force:
        raise ConfigError(f"{cfg} already exists", hint="use --force to overwrite it, or pick another directory")
    atomic_write_text(cfg, preset_text(preset))
    project = Project(root)
    project.store  # noqa: B018 - creates and migrates the database
    (project.runs_dir).mkdir(exist_ok=True)
    return project
