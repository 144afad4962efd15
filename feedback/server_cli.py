"""Deprecated path: the server's commands moved to :mod:`prefloop.feedback.server.cli`."""

from __future__ import annotations

import warnings

from ..sim.cli import cmd_simulate
from .server.cli import annotators_app, cmd_serve, register

__all__ = ["annotators_app", "cmd_serve", "cmd_simulate", "register"]

warnings.warn("prefloop.feedback.server_cli moved to prefloop.feedback.server.cli; the old path goes away in 0.3",
              DeprecationWarning, stacklevel=2)
