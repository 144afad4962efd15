"""Config section owned by ``prefloop.judges`` (extended in the judges issue)."""

from __future__ import annotations

from prefloop.strict import StrictModel


class JudgesConfig(StrictModel):
    pass
