"""Config sections owned by ``prefloop.training`` (extended in the training issue)."""

from __future__ import annotations

from prefloop.strict import StrictModel


class TrainingConfig(StrictModel):
    pass
