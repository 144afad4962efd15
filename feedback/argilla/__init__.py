"""The Argilla integration: prefloop's human queue flows into Argilla datasets, responses flow back.

Teams that already annotate in Argilla keep doing so; everything after the labels
(aggregation, agreement, export, rounds) reads the same annotation rows as for the built-in page.

Mapping (one Argilla dataset per round and task kind, named ``<prefix>-round-<n>-<kind>``):

- fields: ``prompt`` (a chat field, or a text field when every prompt is plain text) and the
  candidates as plain-text fields (never rendered as markdown/HTML: model output is untrusted);
- questions: compare → ``preference`` label A / B / tie; rank → ``ranking`` over the candidates;
  rate → ``rating`` over the task's scale; edit → ``corrected`` text prefilled with the output;
  every kind also gets an optional ``comment`` (stored as the annotation's rationale);
- judge verdicts travel as suggestions (type model, score = confidence, one per ranked item for a
  ranking, agent = judge name) when ``annotation.show_judge_suggestions`` is on; the task overlap k becomes
  ``TaskDistribution(min_submitted=k)``; guidelines come from ``annotation.guidelines``;
- record metadata carries the prefloop task id, round and generation ids (the external id is
  ``prefloop-task-<id>``), so a pull maps labels back to generation ids without guessing.

Modules: :mod:`.client` (connecting, errors, the one private SDK call), :mod:`.settings` (dataset
names and settings), :mod:`.rules` (what Argilla accepts in a record), :mod:`.push`, :mod:`.pull`,
:mod:`.sync` (waiting for labels) and :mod:`.cli` (``prefloop argilla …``). The ``argilla`` SDK is
imported inside functions: ``prefloop --help`` stays fast.
"""

from __future__ import annotations

from prefloop.kinds.compare import LABEL_A, LABEL_B
from prefloop.kinds.rate import ARGILLA_RATING_RANGE

from .client import API_KEY_ENV, ArgillaBridgeError, api_key_from_env, connect, space_headers
from .pull import ANNOTATOR_PREFIX, PullReport, pull
from .push import DatasetPush, PushReport, push
from .settings import (
    EXTERNAL_ID_PREFIX,
    MAIN_QUESTION,
    Q_COMMENT,
    Q_CORRECTED,
    Q_PREFERENCE,
    Q_RANKING,
    Q_RATING,
    DatasetSpec,
    build_settings,
    dataset_name,
    settings_differences,
)
from .sync import SyncResult, sync_until, tasks_short_of_labels

__all__ = [
    "ANNOTATOR_PREFIX", "API_KEY_ENV", "ARGILLA_RATING_RANGE", "EXTERNAL_ID_PREFIX", "LABEL_A", "LABEL_B", "MAIN_QUESTION",
    "Q_COMMENT", "Q_CORRECTED", "Q_PREFERENCE", "Q_RANKING", "Q_RATING",
    "ArgillaBridgeError", "DatasetPush", "DatasetSpec", "PullReport", "PushReport", "SyncResult",
    "api_key_from_env", "build_settings", "connect", "dataset_name", "pull", "push", "settings_differences",
    "space_headers", "sync_until", "tasks_short_of_labels",
]
