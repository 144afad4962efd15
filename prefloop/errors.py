"""Errors a user can act on: each says what is wrong, where, and how to fix it.

The CLI prints a :class:`PrefloopError` as one line (plus its hint) instead of a traceback.
"""

from __future__ import annotations


class PrefloopError(Exception):
    """Base class for every error meant for a user rather than a developer."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class ConfigError(PrefloopError):
    """A configuration file or value is invalid."""


class DataError(PrefloopError):
    """Input data (JSONL, CSV, Parquet, a dataset) is malformed."""


class NotFoundError(PrefloopError):
    """A referenced object (task, round, annotator, project) does not exist."""


class QueueError(PrefloopError):
    """A queue operation was refused."""


class InvalidAnswer(QueueError):
    """A submitted answer does not fit the task it answers."""


class NotAssigned(QueueError):
    """The annotator submits a task the queue never gave them."""


class DuplicateSubmission(QueueError):
    """The annotator already answered this task (under another idempotency key)."""


class AuthError(PrefloopError):
    """A token is missing, unknown, or lacks the role the action needs."""
