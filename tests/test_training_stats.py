"""Bootstrap intervals over eval prompts (prefloop.stats) against cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from prefloop.stats import Bootstrap, bootstrap_ci, includes, mean_paired_diff, paired_diff_ci


@pytest.mark.parametrize("value", [0.0, 0.1, 0.719, 1.0])
def test_a_constant_sample_has_a_zero_width_interval(value: float) -> None:
    assert bootstrap_ci([value] * 24) == (value, value)
    assert bootstrap_ci([[value, value, value]] * 5) == (value, value)  # several samples per prompt


def test_coin_flips_give_an_interval_around_one_half() -> None:
    flips = np.random.default_rng(7).integers(0, 2, size=200).astype(float)
    lo, hi = bootstrap_ci(flips.tolist())
    assert lo < 0.5 < hi
    # a 95 % interval of a mean of 200 fair coins is about ±0.07 wide (1.96 · 0.5 / √200)
    assert 0.05 < (hi - lo) / 2 < 0.09


def test_one_prompt_leaves_the_interval_undefined() -> None:
    assert bootstrap_ci([0.3]) is None
    assert bootstrap_ci([[0.2, 0.9, 0.4]]) is None  # one prompt, however many samples
    assert bootstrap_ci([]) is None
    assert bootstrap_ci([[], [0.5]]) is None  # a prompt without values does not count
    assert paired_diff_ci([0.5], [0.1]) is None
    assert includes(None, 0.5) is None


def test_the_same_data_and_seed_give_the_same_interval() -> None:
    data = np.random.default_rng(9).random((12, 2)).tolist()
    assert bootstrap_ci(data, seed=3) == bootstrap_ci(data, seed=3)
    assert bootstrap_ci(data, seed=3) != bootstrap_ci(data, seed=4)
    assert bootstrap_ci(data, resamples=500) != bootstrap_ci(data, resamples=5000)


def test_prompts_are_resampled_with_their_samples() -> None:
    """Two samples per prompt that always agree carry no more information than one: the interval
    is as wide as with one sample per prompt, not √2 narrower as if the samples were independent."""
    per_prompt = np.random.default_rng(1).random(30).tolist()
    once = bootstrap_ci(per_prompt)
    twice = bootstrap_ci([[v, v] for v in per_prompt])
    assert once == pytest.approx(twice)
    flat = bootstrap_ci([v for v in per_prompt for _ in range(2)])  # treated as 60 independent prompts
    assert (flat[1] - flat[0]) < 0.85 * (once[1] - once[0])


def test_the_interval_contains_the_mean_and_narrows_with_more_prompts() -> None:
    rng = np.random.default_rng(0)
    small, large = rng.random(20), rng.random(2000)
    for data in (small, large):
        lo, hi = bootstrap_ci(data.tolist())
        assert lo <= data.mean() <= hi
    width = lambda d: np.subtract(*bootstrap_ci(d.tolist())[::-1])
    assert width(large) < width(small) / 5


def test_a_paired_difference() -> None:
    base = np.random.default_rng(2).random(40)
    same = paired_diff_ci(base.tolist(), base.tolist())
    assert same == (0.0, 0.0) and includes(same, 0.0)
    # every prompt improved by 0.1: the difference is 0.1, far from 0, whatever the spread across prompts
    better = (base + 0.1).tolist()
    assert mean_paired_diff(better, base.tolist()) == pytest.approx(0.1)
    lo, hi = paired_diff_ci(better, base.tolist())
    assert lo == pytest.approx(0.1) and hi == pytest.approx(0.1)
    # an unpaired view of the same numbers sees two overlapping intervals
    a, b = bootstrap_ci(better), bootstrap_ci(base.tolist())
    assert a[0] < b[1]
    # per-prompt means are compared: two samples against one
    assert mean_paired_diff([[1.0, 0.0], [1.0, 1.0]], [0.0, 0.5]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one entry per prompt"):
        paired_diff_ci([0.1, 0.2], [0.1])


def test_noise_is_told_apart_from_a_change() -> None:
    rng = np.random.default_rng(5)
    before = 0.3 + 0.4 * rng.random(24)
    jitter = rng.normal(0, 0.1, 24)
    noisy = before + jitter - jitter.mean()  # prompts move up and down; on average, not at all
    boot = Bootstrap(resamples=2000, seed=0)
    within = boot.change(dict(enumerate(noisy.tolist())), dict(enumerate(before.tolist())))
    assert within["within_noise"] is True and within["prompts"] == 24
    lo, hi = within["ci"]
    assert lo < 0 < hi and within["diff"] == pytest.approx(0.0)
    shifted = boot.change(dict(enumerate((before + 0.3).tolist())), dict(enumerate(before.tolist())))
    assert shifted["within_noise"] is False and shifted["diff"] == pytest.approx(0.3)
    # only the prompts both rounds have are paired
    part = boot.change({1: 0.9, 2: 0.8, 3: 0.7}, {2: 0.1, 3: 0.2, 4: 0.3})
    assert part["prompts"] == 2 and part["diff"] == pytest.approx(0.6)
    assert boot.change({1: 0.9}, {1: 0.1}) == {"diff": pytest.approx(0.8), "ci": None, "within_noise": None, "prompts": 1}


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([0.1, 0.2], confidence=1.0)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_ci([0.1, 0.2], resamples=0)
