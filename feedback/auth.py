"""Deprecated path: annotator tokens moved to :mod:`prefloop.feedback.server.auth`."""

from __future__ import annotations

import warnings

from .server.auth import (
    TOKEN_PREFIX,
    AnnotatorInfo,
    Principal,
    add_annotator,
    authenticate,
    hash_token,
    list_annotators,
    new_token,
    revoke_annotator,
)

__all__ = ["TOKEN_PREFIX", "AnnotatorInfo", "Principal", "add_annotator", "authenticate", "hash_token",
           "list_annotators", "new_token", "revoke_annotator"]

warnings.warn("prefloop.feedback.auth moved to prefloop.feedback.server.auth; the old path goes away in 0.3",
              DeprecationWarning, stacklevel=2)
