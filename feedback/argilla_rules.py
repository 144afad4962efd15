"""Deprecated path: Argilla's record rules moved to :mod:`prefloop.feedback.argilla.rules`."""

from __future__ import annotations

import warnings

from .argilla.rules import (
    AGENT_MAX_LENGTH,
    CHAT_CONTENT_LENGTH,
    CHAT_ROLE_LENGTH,
    SCORE_RANGE,
    Hint,
    RecordPayload,
    agent_name,
    chat_problem,
    hint_problem,
    record_problems,
    suggestion_score,
)

__all__ = [
    "AGENT_MAX_LENGTH", "CHAT_CONTENT_LENGTH", "CHAT_ROLE_LENGTH", "SCORE_RANGE", "Hint", "RecordPayload",
    "agent_name", "chat_problem", "hint_problem", "record_problems", "suggestion_score",
]

warnings.warn("prefloop.feedback.argilla_rules moved to prefloop.feedback.argilla.rules; the old path goes away in 0.3",
              DeprecationWarning, stacklevel=2)
