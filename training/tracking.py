"""Weights & Biases: one run per round, grouped per loop.

Each round's run carries TRL's training metrics (``sft/*``, ``dpo/*`` against their own step
axes), the round's metrics (win rates, oracle score, agreement, labels and cost by source), a
``wandb.Table`` of samples, the round's datasets (their data, without the ``cache-*.arrow`` files
a trainer's ``map`` leaves beside them) and adapter as artifacts, and the loop's report plot as
an image. A resumed round reopens the same run id. ``WANDB_MODE=offline`` writes
``wandb/offline-run-*`` under the run directory (``wandb sync`` uploads it later). The run config
is the project config plus, per phase, TRL's training arguments (``sft/args``, ``dpo/args``:
``TrainingArguments.to_dict()``) and the model's config (``model/config``) — what a plain TRL run
with ``report_to="wandb"`` shows — with anything that looks like a secret removed; the API key
is read by wandb itself from ``WANDB_API_KEY``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from prefloop.text import finite_or_none

from .config import WandbSettings

#: keys that name a secret (``api_key``, ``session_secret``, ``token``…), not ones that merely
#: mention tokens (``max_new_tokens``) or name an environment variable (``api_key_env``).
_SECRET_KEY = re.compile(r"(^|[_-])(api[_-]?key|apikey|token|secret|password|passwd|credentials?|private[_-]?key)$", re.I)


def mask_urls(value: Any) -> Any:
    """A copy with the password of every ``scheme://user:password@host`` URL masked."""
    if isinstance(value, dict):
        return {k: mask_urls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_urls(v) for v in value]
    if isinstance(value, str) and "://" in value and "@" in value:
        return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", value)
    return value


def scrub(value: Any) -> Any:
    """What may go into a wandb run config: URL passwords masked, secret-named keys dropped."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if not _SECRET_KEY.search(str(k))}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return mask_urls(value)


#: what a directory artifact leaves out: the caches ``datasets`` writes beside a saved dataset
#: when a trainer maps it (often larger than the data, and rebuilt from it at will)
_CACHE_FILE = re.compile(r"^cache-.*\.arrow$")


def resolved_mode(settings: WandbSettings) -> str:
    if not settings.enabled:
        return "disabled"
    return os.environ.get("WANDB_MODE") or settings.mode


class PhaseCallback:
    """A transformers ``TrainerCallback`` that logs a phase's metrics as ``<phase>/<name>``."""

    def __new__(cls, tracker: RoundTracker, phase: str):  # noqa: ANN204 - built lazily to keep imports light
        from transformers import TrainerCallback

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):  # noqa: ANN001, ANN201
                tracker.define_phase(phase)
                config = getattr(model, "config", None)
                tracker.record_phase_config(phase, args.to_dict(), config.to_dict() if config is not None else None)

            def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
                if logs:
                    tracker.log_phase(phase, state.global_step, logs)

        return _Callback()


class RoundTracker:
    """The wandb run of one round (a no-op when wandb is disabled)."""

    def __init__(self, settings: WandbSettings, *, run_dir: Path, loop_id: str, group: str, round_number: int,
                 config: dict[str, Any]) -> None:
        self.settings = settings
        self.mode = resolved_mode(settings)
        self.run_dir = run_dir
        self.run_id = f"{loop_id}-r{round_number}"
        self.group = group
        self.round_number = round_number
        self.config = scrub(config)
        self.run: Any = None

    @property
    def active(self) -> bool:
        return self.run is not None

    def start(self) -> None:
        if self.mode == "disabled" or self.run is not None:
            return
        import wandb

        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        kwargs = dict(
            project=self.settings.project, entity=self.settings.entity, group=self.group,
            name=f"round-{self.round_number}", resume="allow", job_type="round",
            dir=str(self.run_dir), mode=self.mode, config=self.config, reinit="finish_previous",
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )
        try:
            self.run = wandb.init(id=self.run_id, **kwargs)
        except Exception as exc:  # noqa: BLE001 - wandb raises its own service errors
            if "in use" not in str(exc):
                raise
            # A killed process's run is still open in a shared wandb service: continue in a sibling run.
            self.run_id = f"{self.run_id}-{os.getpid()}"
            self.run = wandb.init(id=self.run_id, **kwargs)

    def define_phase(self, phase: str) -> None:
        if self.run is not None:
            self.run.define_metric(f"{phase}/step")
            self.run.define_metric(f"{phase}/*", step_metric=f"{phase}/step")

    def record_phase_config(self, phase: str, args: dict[str, Any], model_config: dict[str, Any] | None) -> None:
        """A phase's training arguments as ``<phase>/args`` and the model's config as ``model/config``
        in the run config (secret-named keys dropped, URL passwords masked)."""
        if self.run is None:
            return
        update = {f"{phase}/args": _plain(args)}
        if model_config is not None:
            update["model/config"] = _plain(model_config)
        self.run.config.update(update, allow_val_change=True)

    def log_phase(self, phase: str, step: int, logs: dict[str, Any]) -> None:
        if self.run is None:
            return
        row = {f"{phase}/{k}": v for k, v in logs.items() if isinstance(v, (int, float))}
        if row:
            row[f"{phase}/step"] = step
            self.run.log(row)

    def callback(self, phase: str) -> Any:
        return PhaseCallback(self, phase)

    def log_round(self, metrics: dict[str, Any]) -> None:
        """The round's numbers as ``round/*`` history and summary; undefined ones (None, NaN) are left out."""
        if self.run is None:
            return
        flat = {f"round/{k}": v for k, v in _flatten(finite_or_none(metrics)).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}
        flat["round/number"] = self.round_number
        self.run.log(flat)
        for k, v in flat.items():
            self.run.summary[k] = v

    def log_samples(self, rows: list[dict[str, Any]]) -> None:
        if self.run is None or not rows or self.settings.log_samples == 0:
            return
        import wandb

        rows = rows[: self.settings.log_samples]
        columns = list(rows[0])
        table = wandb.Table(columns=columns, data=[[_cell(r.get(c)) for c in columns] for r in rows])  # type: ignore[arg-type]  # wandb annotates columns as list[str | int]: invariant, so a list[str] is refused
        self.run.log({"samples": table})

    def log_artifact(self, name: str, kind: str, path: Path, metadata: dict[str, Any] | None = None) -> None:
        if self.run is None or not self.settings.log_artifacts or not path.exists():
            return
        import wandb

        art = wandb.Artifact(name=re.sub(r"[^A-Za-z0-9_.-]", "-", name), type=kind, metadata=metadata or {})
        if path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file() and not _CACHE_FILE.match(p.name)):
                art.add_file(str(f), name=f.relative_to(path).as_posix())
        else:
            art.add_file(str(path))
        self.run.log_artifact(art)

    def log_report(self, project: Any, path: Path) -> Path | None:
        """Draw the loop's report (every round so far: ``prefloop report``'s plot) to ``path`` and
        log it as the image ``report``; nothing is drawn when the run is off."""
        if self.run is None:
            return None
        from .report import collect, plot

        return self.log_report_png(plot(collect(project), path, project.config.cost.currency))

    def log_report_png(self, path: Path) -> Path | None:
        """An existing report PNG as the image ``report``."""
        if self.run is None or not path.is_file():
            return None
        import wandb

        self.run.log({"report": wandb.Image(str(path))})
        return path

    def finish(self, *, failed: bool = False) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def _plain(value: dict[str, Any]) -> dict[str, Any]:
    """A library's config dict as plain JSON values (enums, dtypes and paths as text, NaN as None),
    scrubbed of secrets."""
    return scrub(finite_or_none(json.loads(json.dumps(value, default=str))))


def _cell(v: Any) -> Any:
    if v is None or isinstance(v, (int, float, str, bool)):
        return finite_or_none(v)
    return str(v)

