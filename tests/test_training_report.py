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


def test_win_rate_per_prompt_and_its_interval() -> None:
    """Two samples per prompt, sample k against sample k: a judge that prefers the longer answer.
    Per prompt: both samples win (prompt 1), one win and one tie (prompt 2), both lose (prompt 3),
    one judgement fails (prompt 4: the judge raises on it)."""
    from prefloop.judges.rules import CallableJudge
    from prefloop.stats import Bootstrap
    from prefloop.training.evaluation import win_rate

    def longer(messages, output, reference):  # noqa: ANN001, ANN202
        if "boom" in output:
            raise RuntimeError("the judge fails here")
        return min(5, 1 + len(output.split()))

    judge = CallableJudge("longer", longer)
    prompts = {p: [{"role": "user", "content": f"q{p}"}] for p in (1, 2, 3, 4)}
    mine = {1: [(11, "a b c"), (12, "a b c")], 2: [(21, "a b c"), (22, "a")], 3: [(31, "a"), (32, "a")],
            4: [(41, "boom"), (42, "a b")]}
    theirs = {1: [(101, "a"), (102, "a")], 2: [(201, "a"), (202, "a")], 3: [(301, "a b"), (302, "a b")],
              4: [(401, "a"), (402, "a")], 5: [(501, "only theirs")]}
    wr = win_rate(judge, prompts, mine, theirs, against=0)
    assert wr.per_prompt() == {1: [1.0, 1.0], 2: [1.0, 0.5], 3: [0.0, 0.0], 4: [None, 1.0]}
    assert (wr.wins, wr.ties, wr.losses, wr.failed) == (4, 1, 2, 1)
    summary = wr.summary(Bootstrap(resamples=1000, seed=0))
    assert summary["win_rate"] == pytest.approx(4.5 / 7)
    lo, hi = summary["win_rate_ci"]
    assert 0.0 <= lo < 0.5 < hi <= 1.0 and summary["within_noise"] is True  # 4 prompts tell little
    assert "win_rate_ci" not in wr.summary()  # no interval asked for


def test_oracle_scores_per_prompt() -> None:
    from prefloop.training.evaluation import oracle_by_prompt

    samples = {1: [(11, "x"), (12, "y")], 2: [(21, "z")], 3: [(31, "w")]}
    metas = {11: {"purpose": "eval", "oracle_score": 0.5}, 12: {"oracle_score": 1.0}, 21: {"oracle_score": 0.25},
             31: {"purpose": "eval"}}
    assert oracle_by_prompt(samples, metas) == {1: [0.5, 1.0], 2: [0.25]}


def test_intervals_and_noise_in_the_table_and_plot(tmp_path: Path) -> None:
    from rich.console import Console

    from prefloop.training.report import RoundRow, change_cell, oracle_cell, plot, rounds_table, win_cell

    assert oracle_cell(0.719, [0.65, 0.78]) == "0.719 [0.65, 0.78]"
    assert oracle_cell(0.719, None) == "0.719 [n/a]" and oracle_cell(None, None) == "n/a"
    assert win_cell(0.625, [0.51, 0.74]) == "62.5% [51, 74]"
    assert win_cell(0.52, [0.40, 0.64]) == "≈ 52.0% [40, 64]"  # includes 50 %: within the noise
    assert change_cell(0.24, [0.1, 0.38], False) == "+0.240 [+0.10, +0.38]"
    assert change_cell(0.01, [-0.05, 0.07], True) == "≈ +0.010"
    assert change_cell(None, None, None) == "n/a"

    base = dict(state="done", human_labels=1, judge_labels=1, pairs=1, sft_rows=1, human_cost=0.0, judge_cost=0.0,
                compute_cost=0.0, compute_seconds=1.0, human_seconds=1.0, train_steps=1)
    rows = [RoundRow(number=0, oracle=0.38, oracle_ci=[0.3, 0.46], win_prev=None, win_base=None, **base),
            RoundRow(number=1, oracle=0.39, oracle_ci=[0.31, 0.47], oracle_change=0.01, oracle_change_ci=[-0.04, 0.06],
                     oracle_change_noise=True, win_prev=0.55, win_prev_ci=[0.42, 0.68], win_base=0.55,
                     win_base_ci=[0.42, 0.68], **base),
            RoundRow(number=2, oracle=0.72, oracle_ci=[0.65, 0.78], oracle_change=0.33, oracle_change_ci=[0.25, 0.41],
                     oracle_change_noise=False, win_prev=0.875, win_prev_ci=[0.77, 0.96], win_base=0.9,
                     win_base_ci=[0.8, 0.98], **base)]
    console = Console(width=250, record=True)
    console.print(rounds_table(rows))
    text = console.export_text()
    for cell in ("0.720 [0.65, 0.78]", "≈ +0.010", "+0.330 [+0.25, +0.41]", "≈ 55.0% [42, 68]",
                 "87.5% [77, 96]", "95 % bootstrap interval"):
        assert cell in text, cell
    png = plot(rows, tmp_path / "ci.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
