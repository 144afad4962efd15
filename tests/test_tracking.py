"""The round's wandb run (offline, real wandb): undefined numbers never reach its summary or tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest


def test_undefined_numbers_stay_out_of_the_wandb_summary_and_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefloop.training.config import WandbSettings
    from prefloop.training.tracking import RoundTracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    tracker = RoundTracker(WandbSettings(project="prefloop-tests"), run_dir=tmp_path, loop_id="nan", group="g",
                           round_number=1, config={})
    tracker.start()
    try:
        tracker.log_round({"oracle_score": 0.5, "win_rate_vs_base": None, "kappa": math.nan,
                           "cost": {"total": 1.25, "per_point": math.inf}})
        summary = dict(tracker.run.summary)
        assert summary["round/oracle_score"] == 0.5 and summary["round/cost/total"] == 1.25
        assert not {"round/win_rate_vs_base", "round/kappa", "round/cost/per_point"} & set(summary)
        tracker.log_samples([{"prompt": "p", "oracle": math.nan}, {"prompt": "q", "oracle": 0.25}])
    finally:
        tracker.finish()
    (table,) = (tmp_path / "wandb").glob("offline-run-*/files/media/table/samples_*.table.json")
    assert json.loads(table.read_text())["data"] == [["p", None], ["q", 0.25]]
