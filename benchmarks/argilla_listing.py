"""Listing a dataset's record ids: the SDK's public ``dataset.records(...)`` against its private
``client.api.records.list``, against a real argilla-server 2.8.

A push asks which tasks are already in a dataset before it writes; since the Argilla package uses
the public iterator for that (it adds one "does the dataset exist" request per page and a last,
empty page), this measures what that costs. Run (the server venv is built by the test harness):

    python benchmarks/argilla_listing.py --tasks 1000 --repeats 5
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from rich.console import Console
from rich.table import Table

from prefloop.feedback import argilla as bridge
from prefloop.feedback.argilla import client as argilla_client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
_spec = importlib.util.spec_from_file_location("prefloop_argilla_harness", ROOT / "tests" / "argilla_server" / "harness.py")
harness = sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(harness)
from argilla_bridge import _project  # noqa: E402 - the same compare tasks as the push/pull benchmark


def _private_ids(client, dataset) -> set[str]:  # noqa: ANN001 - what the bridge did before (private HTTP layer)
    out: set[str] = set()
    offset = 0
    while True:
        page = client.api.records.list(dataset_id=dataset.id, offset=offset, limit=argilla_client._LIST_PAGE,
                                       with_suggestions=False, with_responses=False)
        out.update(m.external_id for m in page)
        if len(page) < argilla_client._LIST_PAGE:
            return out
        offset += len(page)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        server = harness.start_server(Path(tmp) / "server")
        os.environ["ARGILLA_API_KEY"] = server.owner_key
        try:
            project, rid = _project(Path(tmp) / "p", server, args.tasks)
            bridge.push(project, round_id=rid)
            client = argilla_client.connect(project.config.argilla)
            ws = argilla_client.find_workspace(client, server.workspace, server.url)
            (ds,) = [d for d in argilla_client.datasets_in(ws).values() if d.name.startswith("bench")]
            ds.get()
            times: dict[str, list[float]] = {"public dataset.records": [], "private client.api.records.list": []}
            for _ in range(args.repeats):  # interleaved, so that load changes hit both alike
                for name, fn in (("public dataset.records", lambda: argilla_client.external_ids(ds)),
                                 ("private client.api.records.list", lambda: _private_ids(client, ds))):
                    t = time.perf_counter()
                    ids = fn()
                    times[name].append(time.perf_counter() - t)
                    assert len(ids) == args.tasks, (name, len(ids))
        finally:
            server.stop()
    table = Table(title=f"record ids of a {args.tasks}-record dataset, page {argilla_client._LIST_PAGE} "
                        f"({args.repeats} runs; seconds)")
    for col in ("listing", "median", "min", "max"):
        table.add_column(col, justify="left" if col == "listing" else "right")
    for name, ts in times.items():
        table.add_row(name, f"{statistics.median(ts):.3f}", f"{min(ts):.3f}", f"{max(ts):.3f}")
    console.print(table)
    console.print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
