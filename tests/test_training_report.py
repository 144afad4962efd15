"""ROI arithmetic, the report's tables and plot, and the oracle loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefloop.errors import ConfigError


def test_cost_per_point_of_win_rate() -> None:
    from prefloop.training.roi import cost_per_point

    assert cost_per_point(6.0, 0.62) == pytest.approx(0.5)  # 12 points above 50 %
    assert cost_per_point(6.0, 0.5) is None and cost_per_point(6.0, 0.4) is None  # no gain, no price
    assert cost_per_point(6.0, None) is None


def _rows():  # noqa: ANN202
    from prefloop.training.report import RoundRow

    def row(n: int, oracle: float, win: float | None, human: int, hc: float) -> RoundRow:
        return RoundRow(number=n, state="done", oracle=oracle, win_prev=win, win_base=win, human_labels=human,
                        judge_labels=10 * n, pairs=5, sft_rows=3, human_cost=hc, judge_cost=0.01 * n,
                        compute_cost=0.002 * n, compute_seconds=60.0 * n, human_seconds=hc * 120, train_steps=2 * n)

    return [row(0, 0.3, None, 0, 0.0), row(1, 0.4, 0.6, 12, 4.0), row(2, 0.55, 0.7, 12, 4.0)]


def test_tables_and_plot(tmp_path: Path) -> None:
    from rich.console import Console

    from prefloop.training.report import plot, roi_table, rounds_table

    console = Console(width=200, record=True)
    console.print(rounds_table(_rows()))
    console.print(roi_table(_rows()))
    text = console.export_text()
    assert "60.0%" in text and "70.0%" in text and "0.550" in text
    assert "n/a" in text  # round 0 has no win rate: not a number, not a dash
    # round 1: 4.012 in all for 10 points above 50 % → 0.4012 per point, 0.4000 of it human time
    assert "4.01" in text and "0.4012" in text and "0.4000" in text
    png = plot(_rows(), tmp_path / "r.png")
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_oracles_load_by_name_or_path() -> None:
    from prefloop.training.evaluation import load_oracle

    f = load_oracle("support-desk")
    assert f({"customer": "Ann", "keywords": ["order"]}, [], "Hi Ann! Your order ships today, as promised. Anything else?") == 1.0
    assert load_oracle("prefloop.training.demo:support_desk_oracle") is f
    with pytest.raises(ConfigError, match="unknown oracle"):
        load_oracle("nope")
    with pytest.raises(ConfigError, match="cannot load oracle"):
        load_oracle("prefloop.training.demo:missing")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1.5, -0.25, "high", None])
def test_an_oracle_score_outside_0_1_is_the_oracles_error(bad: object) -> None:
    from prefloop.training.evaluation import oracle_score

    assert oracle_score(lambda meta, messages, text: 0.75, {}, [], "x", "an answer") == 0.75
    with pytest.raises(ConfigError, match=r"the oracle returned .* for an answer to prompt 7; oracles must score in \[0, 1\]"):
        oracle_score(lambda meta, messages, text: bad, {}, [], "x", "an answer to prompt 7")
