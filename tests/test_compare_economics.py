"""The arithmetic of ``prefloop compare``: cost per answer, the break-even volume and the bootstrap
intervals over prompts and seeds (fast, no model)."""

from __future__ import annotations

import pytest

from prefloop.config import CostConfig
from prefloop.stats import grid_ci, grid_paired_diff_ci
from prefloop.training.compare.economics import Prices, break_even, cost_per_answer


def test_cost_per_answer_is_machine_time_plus_tokens_at_their_prices() -> None:
    prices = Prices(hourly_rate=3.6, prompt_per_1k=0.5, completion_per_1k=2.0)
    # 2 s at 3.6/h = 0.002; 300 prompt tokens = 0.15; 40 completion tokens = 0.08
    assert cost_per_answer(2.0, 300, 40, prices) == pytest.approx(0.002 + 0.15 + 0.08)
    assert cost_per_answer(2.0, 300, 40, Prices(hourly_rate=0.0)) == 0.0


def test_prices_default_to_the_compute_rate() -> None:
    assert Prices.from_config(CostConfig(compute_hourly_rate=0.05)).hourly_rate == 0.05
    p = Prices.from_config(CostConfig(compute_hourly_rate=0.05, inference_hourly_rate=2.0, value_per_point=0.01))
    assert (p.hourly_rate, p.value_per_point) == (2.0, 0.01)


def test_a_cheaper_fine_tuned_arm_pays_back_after_one_off_over_saving_answers() -> None:
    # a fine-tuned model answering without retrieval saves the longer prompts: 0.003 − 0.001 per answer
    b = break_even("ft", "base+rag", one_off=20.0, cost_tuned=0.001, cost_alternative=0.003,
                   quality_tuned=60.0, quality_alternative=55.0)
    assert b.verdict == "pays_back" and b.advantage == pytest.approx(0.002)
    assert b.answers == pytest.approx(10_000)
    assert b.one_off_per_point == pytest.approx(4.0) and b.per_point_per_1000 is None
    assert "after 10,000 answers" in b.explain()


def test_a_value_per_point_makes_a_better_dearer_arm_pay_back() -> None:
    kw = dict(one_off=16.0, cost_tuned=0.004, cost_alternative=0.003, quality_tuned=70.0, quality_alternative=60.0)
    without = break_even("ft+rag", "base+rag", **kw)
    assert without.verdict == "cost_per_point" and without.answers is None
    assert without.per_point_per_1000 == pytest.approx(0.1)  # 0.001 × 1000 / 10 points
    assert without.one_off_per_point == pytest.approx(1.6)
    assert "better (+10.0 points) but not cheaper" in without.explain()
    valued = break_even("ft+rag", "base+rag", value_per_point=0.0002, **kw)
    # d = −0.001 + 0.0002 × 10 = 0.001 per answer → 16 / 0.001
    assert valued.verdict == "pays_back" and valued.answers == pytest.approx(16_000)


def test_worse_and_not_cheaper_never_pays_back_and_free_and_cheaper_pays_at_once() -> None:
    never = break_even("ft", "base", one_off=5.0, cost_tuned=0.002, cost_alternative=0.002,
                       quality_tuned=40.0, quality_alternative=45.0)
    assert never.verdict == "never" and never.answers is None and never.one_off_per_point is None
    free = break_even("ft", "base", one_off=0.0, cost_tuned=0.001, cost_alternative=0.002,
                      quality_tuned=40.0, quality_alternative=45.0)
    assert free.verdict == "pays_back" and free.answers == 0 and "but it is worse" in free.explain()


def test_bootstrap_interval_over_prompts_and_seeds() -> None:
    grid = {0: {1: 0.2, 2: 0.4, 3: 0.9}, 1: {1: 0.3, 2: 0.5, 3: 0.7}}
    iv = grid_ci(grid, resamples=4000, seed=1)
    assert iv is not None and iv.n == 6
    assert iv.mean == pytest.approx(0.5)
    assert iv.low < iv.mean < iv.high and iv.low >= 0.2 and iv.high <= 0.9
    assert grid_ci(grid, resamples=4000, seed=1) == iv  # reproducible
    assert grid_ci({}) is None and grid_ci([]) is None
    same = grid_ci([0.5, 0.5, 0.5])
    assert (same.low, same.mean, same.high) == (0.5, 0.5, 0.5)  # type: ignore[union-attr]


def test_paired_difference_uses_the_shared_cells_and_is_narrower_than_two_intervals() -> None:
    base = {0: {p: p / 10 for p in range(10)}, 1: {p: p / 10 + 0.05 for p in range(10)}}
    better = {s: {p: v + 0.1 for p, v in row.items()} for s, row in base.items()}
    better[1][99] = 1.0  # a cell base lacks is left out
    diff = grid_paired_diff_ci(better, base)
    assert diff is not None and diff.n == 20
    assert diff.mean == pytest.approx(0.1) and diff.low == pytest.approx(0.1) and diff.high == pytest.approx(0.1)
    a, b = grid_ci(better), grid_ci(base)
    assert a.low < b.high  # type: ignore[union-attr]  # the two intervals overlap; the paired one excludes 0
