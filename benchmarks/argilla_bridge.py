"""Argilla bridge cost: push, re-push, pull and re-pull times against a real argilla-server 2.8.

The server runs as in the tests (``tests/argilla_server``: its own venv, Redis, SQLite, and the
TEST-ONLY in-memory search engine, so search costs here are not Elasticsearch's). Two Argilla
users answer every compare task (logged in bulk through the SDK, not timed), then prefloop pulls.

    python benchmarks/argilla_bridge.py --tasks 100,1000
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from rich.console import Console
from rich.table import Table

from prefloop.feedback import argilla as bridge
from prefloop.feedback.argilla.client import quiet
from prefloop.feedback.store.models import Round
from prefloop.project import Project, init_project

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("prefloop_argilla_harness", ROOT / "tests" / "argilla_server" / "harness.py")
harness = sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(harness)


def _project(root: Path, server, n: int) -> tuple[Project, int]:  # noqa: ANN001
    init_project(root)
    project = Project(root)
    cfg = project.config.model_copy(deep=True)
    cfg.argilla.api_url, cfg.argilla.workspace, cfg.argilla.dataset_prefix = server.url, server.workspace, f"bench{n}"
    cfg.queue.overlap = 2
    (root / "prefloop.yaml").write_text(cfg.to_yaml())
    project = Project(root)
    q = project.queue
    with project.store.session() as s:
        r = Round(number=1, state="collecting")
        s.add(r)
        s.flush()
        rid = r.id
        for i in range(n):
            gids = q.add_generations(f"Question {i}: what is {i} + {i}?", [str(2 * i), str(2 * i + 1)], round_id=rid, session=s)
            q.add_task("compare", gids, round_id=rid, session=s)
    return project, rid


def _answer_all(server, project: Project) -> None:  # noqa: ANN001
    import argilla as rg

    owner = rg.Argilla(api_url=server.url, api_key=server.owner_key, timeout=120)
    ds = owner.datasets(name=f"{project.config.argilla.dataset_prefix}-round-1-compare", workspace=server.workspace)
    users = [owner.users(username=u) for u in harness.ANNOTATORS]
    records = list(ds.records(with_suggestions=False, with_responses=False))
    for i in range(0, len(records), 200):
        batch = []
        for j, r in enumerate(records[i : i + 200]):
            responses = [rg.Response("preference", "A" if (k + j) % 3 else "B", user_id=u.id, status="submitted") for k, u in enumerate(users)]
            batch.append(rg.Record(id=r.id, fields=dict(r.fields), metadata=dict(r.metadata), responses=responses))
        with quiet():
            ds.records.log(batch, batch_size=len(batch))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="100,1000", help="comma-separated task counts")
    args = ap.parse_args()
    console = Console()
    table = Table(title="Argilla bridge (2 annotators, compare tasks, overlap 2; seconds)")
    for col in ("tasks", "push", "push again (no new)", "pull (new)", "pull again", "annotations"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        server = harness.start_server(Path(tmp) / "server")
        console.print(f"server up in {time.perf_counter() - t0:.1f} s (venv check {server.timings['venv_s']:.1f} s)")
        os.environ["ARGILLA_API_KEY"] = server.owner_key
        try:
            for n in (int(x) for x in args.tasks.split(",")):
                project, rid = _project(Path(tmp) / f"p{n}", server, n)
                t = time.perf_counter()
                bridge.push(project, round_id=rid)
                push_s = time.perf_counter() - t
                t = time.perf_counter()
                bridge.push(project, round_id=rid)  # every record already there: nothing is sent
                repush_s = time.perf_counter() - t
                _answer_all(server, project)
                t = time.perf_counter()
                first = bridge.pull(project, round_id=rid)
                pull_s = time.perf_counter() - t
                t = time.perf_counter()
                again = bridge.pull(project, round_id=rid)
                repull_s = time.perf_counter() - t
                assert again.written == 0 and first.created == 2 * n, (first, again)
                table.add_row(str(n), f"{push_s:.2f}", f"{repush_s:.2f}", f"{pull_s:.2f}", f"{repull_s:.2f}", str(first.created))
        finally:
            server.stop()
    console.print(table)


if __name__ == "__main__":
    main()
