"""The PNGs read at a glance: bars say their values, zero is not missing, a small cost next to a
large one stays visible. Checked through matplotlib's artists, not pixels."""

from __future__ import annotations

from pathlib import Path

import pytest


def texts(ax) -> list[str]:  # noqa: ANN001
    return [t.get_text() for t in ax.texts]


def bar_heights(ax) -> list[float]:  # noqa: ANN001
    return [p.get_height() for c in ax.containers for p in c]


def _rounds(compute_ratio: float):  # noqa: ANN202
    """Round 0 (no win rate: missing; no judge cost: zero) and two rounds whose human cost is
    ``compute_ratio`` times their compute cost."""
    from prefloop.training.report import RoundRow

    def row(n: int, win: float | None, human_cost: float, judge_cost: float, judge_labels: int) -> RoundRow:
        return RoundRow(number=n, state="done", oracle=0.3 + 0.1 * n, win_prev=win, win_base=win, human_labels=24 if n else 0,
                        judge_labels=judge_labels, pairs=5, sft_rows=3, human_cost=human_cost, judge_cost=judge_cost,
                        compute_cost=(human_cost or 4.0) / compute_ratio, compute_seconds=60.0,
                        human_seconds=960.0, train_steps=10)

    return [row(0, None, 0.0, 0.0, 0), row(1, 0.667, 8.34, 0.0, 24), row(2, 0.5, 8.0, 0.25, 24)]


def test_report_figure_labels_every_bar_and_logs_a_dwarfed_cost(tmp_path: Path) -> None:
    from prefloop.training.report import plot, report_figure

    fig = report_figure(_rounds(compute_ratio=1000.0))
    wins, oracle, labels, cost = fig.axes
    # cost: human 8.34 next to compute 0.00834 — a linear axis would draw the compute bar 0.1 % tall
    assert cost.get_yscale() == "log" and "log scale" in cost.get_ylabel()
    shown = texts(cost)
    assert {"8.34", "0.0083", "8.00", "0.2500"} <= set(shown)
    assert shown.count("0.00") == 3  # the zero costs (round 0's human and judges, round 1's judges) say so
    assert len(shown) == len(bar_heights(cost)) == 9  # one label per bar
    assert min(cost.get_ylim()) < 0.0083  # the smallest bar stands above the bottom of the axis
    # labels by source: counts on every bar, zero included, and a linear axis (24 vs 24)
    assert labels.get_yscale() == "linear" and texts(labels).count("0") == 2 and texts(labels).count("24") == 4
    # win rates: round 0 has none — an explicit n/a, not a point at 0
    assert sum(t.startswith("n/a") for t in texts(wins)) == 2 and "66.7" in texts(wins)
    assert "%" in wins.get_ylabel() and "0.300" in texts(oracle)
    for ax in (wins, labels, cost):  # legends sit below their panel, outside the data
        box = ax.get_legend().get_bbox_to_anchor().transformed(ax.transAxes.inverted())
        assert box.y1 <= 0
    png = plot(_rounds(compute_ratio=1000.0), tmp_path / "report.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_report_figure_keeps_a_linear_cost_axis_when_sources_are_comparable() -> None:
    from prefloop.training.report import report_figure

    cost = report_figure(_rounds(compute_ratio=2.0)).axes[3]
    assert cost.get_yscale() == "linear" and "log" not in cost.get_ylabel()


@pytest.mark.parametrize("kappa", [0.0, -0.4])
def test_agreement_figure_tells_zero_from_missing(tmp_path: Path, kappa: float) -> None:
    from prefloop.judges.report import AgreementRow, agreement_figure, plot_agreement

    rows = [
        AgreementRow("rules", 12, 0.5, 8, 0.625, kappa, 1.0, 24, 0),
        AgreementRow("no-humans", 0, None, 0, None, None, 0.75, 20, 2),  # nothing to compare with humans
    ]
    (ax,) = agreement_figure(rows).axes
    shown = texts(ax)
    assert len(shown) == len(bar_heights(ax)) == 8  # every bar labelled, the missing ones too
    assert shown.count("n/a") == 3  # agreement, agreement without ties and κ of the judge without humans
    assert f"{kappa:.2f}" in shown and "0.62" in shown and "1.00" in shown and "0.75" in shown
    missing = [t for t in ax.texts if t.get_text() == "n/a"]
    assert all(t.get_color() != shown_color for t in missing for shown_color in ("black", "#000000"))
    assert ax.get_yscale() == "linear" and min(ax.get_ylim()) < kappa  # a negative κ is drawn below zero
    legend = ax.get_legend().get_bbox_to_anchor().transformed(ax.transAxes.inverted())
    assert legend.x0 >= 1.0  # right of the bars
    assert plot_agreement(rows, tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
