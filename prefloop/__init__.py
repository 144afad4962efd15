"""prefloop: human and LLM-judge feedback → preference data → iterative SFT/DPO rounds.

Subpackages (the repository's top-level folders): ``prefloop.feedback`` (store, queue,
aggregation, export, annotation server, Argilla bridge), ``prefloop.judges`` (LLM judges),
``prefloop.training`` (generation, SFT, DPO, rounds, evaluation), ``prefloop.configs`` (presets).
"""

__version__ = "0.1.0"
