"""Deprecated path: the ``prefloop argilla`` commands moved to :mod:`prefloop.feedback.argilla.cli`."""

from __future__ import annotations

import warnings

from .argilla.cli import argilla_app, cmd_pull, cmd_push, cmd_wait, register

__all__ = ["argilla_app", "cmd_pull", "cmd_push", "cmd_wait", "register"]

warnings.warn("prefloop.feedback.argilla_cli moved to prefloop.feedback.argilla.cli; the old path goes away in 0.3",
              DeprecationWarning, stacklevel=2)
