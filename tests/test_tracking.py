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


def test_judge_trust_reaches_the_round_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import Counter

    from prefloop.judges.config import TrustConfig
    from prefloop.judges.trust import TrustTable, assess, wandb_view
    from prefloop.training.config import WandbSettings
    from prefloop.training.tracking import RoundTracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    cfg = TrustConfig(min_n=3, threshold=0.5)  # 8 of 9 choices right: lower bound 0.565
    table = TrustTable({("fmt", "compare"): assess("fmt", "compare", Counter(agree=8, blind_tie=4, wrong_side=1), cfg)})
    tracker = RoundTracker(WandbSettings(project="prefloop-tests"), run_dir=tmp_path, loop_id="trust", group="g",
                           round_number=2, config={})
    tracker.start()
    try:
        tracker.log_round({"trust": wandb_view(table.to_metrics())})
        summary = dict(tracker.run.summary)
    finally:
        tracker.finish()
    assert summary["round/trust/fmt/compare/n"] == 13 and summary["round/trust/fmt/compare/blind_ties"] == 4
    assert summary["round/trust/fmt/compare/rate"] == pytest.approx(8 / 13, abs=1e-4)
    assert summary["round/trust/fmt/compare/blind"] == 1 and summary["round/trust/fmt/compare/trusted"] == 1
    assert 0 < summary["round/trust/fmt/compare/low"] < summary["round/trust/fmt/compare/high"] < 1
