"""Bar charts that read at a glance: every bar says its value, zero is not missing, and a small
source next to a large one stays visible.

- each bar carries its value as a label; a zero bar (no height to see) still gets its ``0.00``;
- a missing value (a statistic the data leave undefined) gets an explicit grey ``n/a`` where its
  bar would be, never an empty slot that looks like zero;
- when the largest positive value is :data:`LOG_RATIO` times the smallest or more (compute cost
  next to human cost), the axis turns logarithmic so that both bars show.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prefloop.text import NA

#: the spread of positive values from which a bar axis is logarithmic
LOG_RATIO = 100.0
MISSING_STYLE = {"color": "grey", "fontstyle": "italic"}


def needs_log_axis(values: Sequence[float | None]) -> bool:
    positive = [v for v in values if v is not None and v > 0]
    return bool(positive) and max(positive) >= LOG_RATIO * min(positive)


def grouped_bars(ax: Any, x: Sequence[float], series: Sequence[tuple[str, Sequence[float | None], str | None]], *,
                 fmt: Callable[[float], str] = "{:.2f}".format, log: bool | None = None) -> list[Any]:
    """One group of bars per ``x``, one bar per ``(label, values, color)`` of ``series``, each
    labelled with ``fmt(value)``. ``log=None`` picks a logarithmic axis when :func:`needs_log_axis`."""
    import numpy as np

    everything = [v for _, values, _ in series for v in values]
    if log is None:
        log = needs_log_axis(everything)
    if log:
        positive = [v for v in everything if v is not None and v > 0]
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        ax.set_ylim(min(positive) / 5, max(positive) * 8)  # room below the smallest bar and above for labels
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.001, not 10⁻³
    else:
        ax.margins(y=0.12)  # room above the tallest bar for its label
    width = 0.8 / max(1, len(series))
    containers = []
    for k, (label, values, color) in enumerate(series):
        centers = np.asarray(x, dtype=float) + (k - (len(series) - 1) / 2) * width
        heights = [0.0 if v is None else v for v in values]
        bars = ax.bar(centers, heights, width, label=label, color=color)
        label_bars(ax, bars, values, fmt=fmt)
        containers.append(bars)
    return containers


def label_bars(ax: Any, bars: Any, values: Sequence[float | None], *, fmt: Callable[[float], str] = "{:.2f}".format) -> None:
    """Write each bar's value at its end (below a negative bar); zero and missing values are
    written at the base line (the bottom of a logarithmic axis), a missing one as grey ``n/a``."""
    log = ax.get_yscale() == "log"
    for bar, v in zip(bars, values, strict=True):
        x = bar.get_x() + bar.get_width() / 2
        text = NA if v is None else fmt(v)
        style = MISSING_STYLE if v is None else {}
        if log and (v is None or v <= 0):
            xy, coords = (x, 0.0), ax.get_xaxis_transform()  # y in axes fraction: the bottom of the axis
        else:
            xy, coords = (x, v or 0.0), "data"
        below = v is not None and v < 0 and not log
        ax.annotate(text, xy, xycoords=coords, xytext=(0, -2 if below else 2), textcoords="offset points",
                    ha="center", va="top" if below else "bottom", fontsize=7, **style)


def save_figure(fig: Any, path: Any, *, dpi: int = 110) -> Any:
    """Write ``fig`` atomically (a reader never sees half a PNG) and release it."""
    from pathlib import Path

    import matplotlib.pyplot as plt

    from prefloop.atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
