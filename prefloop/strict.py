"""The base of every config section: unknown keys are errors, not silently ignored, and a number
must be finite (``.nan`` or ``.inf`` in YAML is refused: a round's config snapshot is stored as JSON)."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
