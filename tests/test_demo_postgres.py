"""``prefloop demo --rounds 2`` on PostgreSQL, the way a team runs it: the real SmolLM2-135M-Instruct,
the store in a fresh PostgreSQL schema through ``PREFLOOP_DATABASE_URL`` (issue 9, item 1: round 1
stopped in ``evaluating`` on ``"kappa": NaN`` and ``round resume`` failed the same way forever)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_demo_two_rounds_on_postgresql(tmp_path: Path) -> None:
    from conftest import drop_postgres_schema, fresh_postgres_url

    from prefloop.feedback.store.db import open_store
    from prefloop.feedback.store.models import Round

    url = fresh_postgres_url()
    store = None
    try:
        env = {**os.environ, "PREFLOOP_DATABASE_URL": url, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path),
               "WANDB_DATA_DIR": str(tmp_path / "wandb-data"), "OMP_NUM_THREADS": "1", "COLUMNS": "250", "NO_COLOR": "1"}
        env.pop("WANDB_SERVICE", None)
        demo = tmp_path / "demo"
        proc = subprocess.run([sys.executable, "-m", "prefloop.cli", "demo", str(demo), "--rounds", "2", "--quiet"],
                              capture_output=True, text=True, env=env, timeout=1700)
        assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
        assert not (demo / "prefloop.db").exists()  # the store is PostgreSQL, not the preset's SQLite file
        for needle in ("win vs", "per point", "demo finished"):  # the report's headers (two lines each), the last line
            assert needle in proc.stdout, needle

        store = open_store(url, migrate=False)
        with store.session() as s:
            rounds = {r.number: (r.state, r.error, dict(r.metrics)) for r in s.scalars(select(Round))}
        assert sorted(rounds) == [0, 1, 2]
        for number, (state, error, metrics) in rounds.items():
            assert (state, error) == ("done", None), number
            json.dumps(metrics, allow_nan=False)  # what PostgreSQL stored is strict JSON
            ev = metrics["eval"]
            assert (ev["prompts"], ev["samples"]) == (24, 48)  # the demo takes 2 samples on each eval prompt
            lo, hi = ev["oracle_score_ci"]
            assert lo <= ev["oracle_score"] <= hi
            if number:
                assert ev["vs_base"]["judged"] == 48 and len(ev["vs_base"]["win_rate_ci"]) == 2
                for judge in metrics["agreement"].values():  # κ may be undefined (None), never NaN
                    assert judge["kappa"] is None or -1.0 <= judge["kappa"] <= 1.0
    finally:
        if store is not None:
            store.dispose()
        drop_postgres_schema(url)
