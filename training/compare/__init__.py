"""``prefloop compare``: RAG, fine-tuning, or both — evaluated side by side, with what each costs.

- :mod:`.arms`: the four arms (base, base+RAG, fine-tuned, fine-tuned+RAG) and how their answers
  are sampled, measured and stored;
- :mod:`.results`: quality with bootstrap intervals, latency, tokens, per-answer and one-off cost;
- :mod:`.economics`: prices, cost per answer, the break-even volume;
- :mod:`.runner`: :func:`run_compare`, the Python API;
- :mod:`.display`: the terminal table, the PNG and the wandb table.
"""

from __future__ import annotations

from .arms import ARMS
from .economics import BreakEven, Prices, break_even, cost_per_answer
from .runner import CompareResult, run_compare

__all__ = ["ARMS", "BreakEven", "CompareResult", "Prices", "break_even", "cost_per_answer", "run_compare"]
