"""Start a real argilla-server 2.8 for prefloop's tests (run with the argilla-server venv's python).

One process does what the server's CLI would do in three: migrate the SQLite database, create
the users (an owner with a known API key, annotators in a workspace), and serve the app with
uvicorn on loopback. It first registers the TEST-ONLY in-memory search engine
(``memory_search_engine``), because no Elasticsearch/OpenSearch can run here.

Environment (set by ``harness.py``): ``ARGILLA_HOME_PATH``, ``ARGILLA_DATABASE_URL``,
``ARGILLA_REDIS_URL``, ``ARGILLA_SEARCH_ENGINE``, ``ARGILLA_ENABLE_TELEMETRY=0`` and
``PREFLOOP_TEST_ARGILLA_USERS``: a JSON list of ``{"username", "role", "api_key", "password",
"workspaces"}``.

    python serve.py --host 127.0.0.1 --port 6900
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import memory_search_engine  # noqa: E402,F401 - registers the test-only engine


async def _create_users(users: list[dict]) -> None:
    from argilla_server.cli.database.users.utils import get_or_new_workspace
    from argilla_server.contexts import accounts
    from argilla_server.database import AsyncSessionLocal
    from argilla_server.models import User, UserRole

    async with AsyncSessionLocal() as session:
        for u in users:
            if await accounts.get_user_by_username(session, u["username"]):
                continue
            workspaces = [await get_or_new_workspace(session, name) for name in u.get("workspaces", [])]
            await User.create(
                session,
                first_name=u["username"],
                username=u["username"],
                role=UserRole(u["role"]),
                api_key=u["api_key"],
                password_hash=accounts.hash_password(u["password"]),
                workspaces=workspaces,
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    from argilla_server.cli.database.migrate import migrate_db

    migrate_db(revision="head")
    asyncio.run(_create_users(json.loads(os.environ.get("PREFLOOP_TEST_ARGILLA_USERS", "[]"))))

    import uvicorn

    uvicorn.run("argilla_server:app", host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
