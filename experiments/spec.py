"""The experiment spec: a task, a base config, arms × seeds × rounds, scripted humans, targets.

Every (arm, seed) gets a full project config — the base (a preset or a prefloop.yaml), the task's
defaults, the harness's settings (a SQLite store per run, the task's oracle, the seed), then the
arm's ``overrides`` (``dotted.config.key: value``) — validated by the project's own pydantic config
before anything runs, so a misspelt knob is a one-line error, not a wasted hour.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from prefloop.config import PRESETS, ProjectConfig, format_validation_error, preset_text
from prefloop.errors import ConfigError
from prefloop.sim.humans import TYPICAL_SECONDS
from prefloop.strict import StrictModel

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
#: keys the harness sets for every run: an arm that overrides them would break the experiment.
HARNESS_KEYS = ("store", "training.generation.seed", "training.trainer.seed", "judges.selection.seed",
               "training.evaluation.oracle")


class ArmSpec(StrictModel):
    """One way of running the loop: the base config with these ``dotted.key: value`` overrides."""

    name: str = Field(pattern=NAME)
    overrides: dict[str, Any] = {}
    description: str = ""


class HumansSpec(StrictModel):
    """The scripted humans of every run (round-robin order: who answers what is reproducible)."""

    annotators: int = Field(2, ge=1, le=64)
    accuracy: float = Field(0.85, ge=0, le=1)
    #: simulated seconds per label, by task kind (±30 %): what the cost model prices.
    seconds: dict[str, float] = dict(TYPICAL_SECONDS)

    @field_validator("seconds")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, s in v.items() if s < 0]
        if bad:
            raise ValueError(f"seconds must be ≥ 0 ({', '.join(bad)})")
        return v


class BootstrapSpec(StrictModel):
    """Intervals: resample seeds, then eval prompts within each seed (a fixed seed: a reproducible table)."""

    resamples: int = Field(2000, ge=100, le=20_000)
    seed: int = 0
    confidence: float = Field(0.95, gt=0, lt=1)


class ExperimentWandb(StrictModel):
    """One wandb group per experiment: a run per (arm, seed) and a summary run. Keys come from the environment."""

    enabled: bool = True
    project: str = "prefloop-experiments"
    entity: str | None = None
    #: ``WANDB_MODE`` in the environment wins over this.
    mode: Literal["online", "offline", "disabled"] = "offline"


#: the conditions ``prefloop compare`` evaluates side by side (its arms: :data:`prefloop.training.compare.arms.ARMS`)
Condition = Literal["base", "base+rag", "ft", "ft+rag"]
CONDITIONS: tuple[Condition, ...] = ("base", "base+rag", "ft", "ft+rag")


class CompareSpec(StrictModel):
    """After its last round, every run evaluates base, base + RAG, its fine-tuned adapter and fine-tuned
    + RAG side by side (``prefloop compare``); the report pools the runs' answers over the seeds."""

    enabled: bool = False
    conditions: list[Condition] = Field(list(CONDITIONS), min_length=2)
    #: sampling seeds of every condition's answers (each run's training seed is the spec's seed)
    seeds: list[int] = Field([0], min_length=1)
    #: answers per eval prompt and sampling seed (default: the config's ``evaluation.samples_per_prompt``)
    samples: int | None = Field(None, ge=1, le=64)

    @model_validator(mode="after")
    def _base_and_unique(self) -> CompareSpec:
        if "base" not in self.conditions:
            raise ValueError("compare.conditions must include 'base' (win rates and break-even are against it)")
        if len(set(self.conditions)) != len(self.conditions) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("compare.conditions and compare.seeds must not repeat")
        return self


class ExperimentSpec(StrictModel):
    name: str = Field(pattern=NAME)
    #: a shipped task (``support-desk``, ``arithmetic``) or ``package.module:NAME`` of a TaskSpec.
    task: str = "support-desk"
    #: a preset name or a prefloop.yaml path (relative to the spec file).
    base: str = "demo"
    rounds: int = Field(3, ge=1, le=100)
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    #: (arm, seed) runs at once, each in its own process.
    jobs: int = Field(1, ge=1, le=64)
    #: oracle score(s) for label efficiency: human labels, minutes and money until the mean first reaches it.
    target: list[float] = []
    #: the arm every other is compared with (default: the first).
    reference: str | None = None
    humans: HumansSpec = HumansSpec()
    bootstrap: BootstrapSpec = BootstrapSpec()
    wandb: ExperimentWandb = ExperimentWandb()
    compare: CompareSpec = CompareSpec()
    arms: list[ArmSpec] = Field(min_length=1)

    @field_validator("target", mode="before")
    @classmethod
    def _listify(cls, v: object) -> object:
        return [v] if isinstance(v, (int, float)) else v

    @field_validator("target")
    @classmethod
    def _scores(cls, v: list[float]) -> list[float]:
        if any(not 0 <= x <= 1 for x in v):
            raise ValueError("target scores lie in [0, 1] (oracle scores)")
        return v

    @model_validator(mode="after")
    def _unique(self) -> ExperimentSpec:
        names = [a.name for a in self.arms]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"arm names must be unique; repeated: {dupes}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be unique")
        if self.reference is not None and self.reference not in names:
            raise ValueError(f"reference {self.reference!r} is not an arm ({', '.join(names)})")
        return self

    @property
    def reference_arm(self) -> str:
        return self.reference or self.arms[0].name

    def arm(self, name: str) -> ArmSpec:
        return next(a for a in self.arms if a.name == name)


def parse_spec(data: Any, source: str = "experiment spec") -> ExperimentSpec:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping (name, task, base, arms, …)")
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, ExperimentSpec), hint="see the README's Experiments section") from None


def shipped_specs() -> list[str]:
    """Names of the experiment specs shipped in ``prefloop/configs/experiments``."""
    from importlib import resources

    folder = resources.files("prefloop.configs") / "experiments"
    return sorted(f.name.removesuffix(".yaml") for f in folder.iterdir() if f.name.endswith(".yaml")) if folder.is_dir() else []


def shipped_spec(name: str) -> Path | None:
    from importlib import resources

    return Path(str(resources.files("prefloop.configs") / "experiments" / f"{name}.yaml")) if name in shipped_specs() else None


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read a spec file (or a shipped spec by name); a ``base`` path is made absolute (relative to the spec file)."""
    path = Path(path)
    if not path.is_file() and (shipped := shipped_spec(str(path))) is not None:
        path = shipped
    if not path.is_file():
        raise ConfigError(f"experiment spec {path} does not exist", hint=f"shipped specs: {', '.join(shipped_specs())}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    spec = parse_spec(data, str(path))
    if spec.base not in PRESETS:
        base = Path(spec.base)
        spec = spec.model_copy(update={"base": str(base if base.is_absolute() else (path.parent / base).resolve())})
    return spec


# ---------------------------------------------------------------------------------------- configs
def set_dotted(data: dict[str, Any], key: str, value: Any, where: str) -> None:
    """``data[a][b][c] = value`` for ``a.b.c``; a mapping value merges into a mapping, anything else replaces."""
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"{where}: {key!r} is not a dotted config key (e.g. training.sft.epochs)")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: {'.'.join(parts[: i + 1])!r} is a value, not a section, so {key!r} cannot be set")
        node = child
    old = node.get(parts[-1])
    node[parts[-1]] = deep_merge(old, value) if isinstance(old, dict) and isinstance(value, Mapping) else copy.deepcopy(value)


def deep_merge(base: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in patch.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A copy of a config mapping with ``dotted.key: value`` overrides (or nested mappings) applied."""
    out = copy.deepcopy(data)
    for key, value in overrides.items():
        set_dotted(out, str(key), value, where)
    return out


def base_config(spec: ExperimentSpec) -> dict[str, Any]:
    text = preset_text(spec.base) if spec.base in PRESETS else _read_base(Path(spec.base))
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"base config {spec.base}: the top level must be a mapping of sections")
    return data


def _read_base(path: Path) -> str:
    if not path.is_file():
        raise ConfigError(f"base config {path} does not exist", hint=f"use a preset ({', '.join(PRESETS)}) or a prefloop.yaml path")
    return path.read_text()


def run_config(spec: ExperimentSpec, arm: ArmSpec, seed: int, *, base: dict[str, Any] | None = None,
               task: Any = None) -> ProjectConfig:
    """The full, validated project config of one (arm, seed) run."""
    from prefloop.sim.task import load_task

    task = task or load_task(spec.task)
    where = f"experiment {spec.name}: arm {arm.name!r}"
    for key in arm.overrides:
        if any(key == k or key.startswith(k + ".") for k in HARNESS_KEYS):
            raise ConfigError(f"{where}: {key!r} is set by the experiment itself",
                              hint="seeds come from `seeds`, the oracle from `task`, and every run has its own SQLite store")
    data = apply_overrides(base if base is not None else base_config(spec), task.config, f"task {task.name}")
    data = apply_overrides(data, {
        "name": f"{spec.name}-{arm.name}-seed{seed}",
        "store.url": "sqlite:///prefloop.db",
        "training.evaluation.oracle": spec.task,
        "training.wandb.enabled": False,  # the experiment logs its own wandb group (one run per arm and seed)
    }, where)
    data = apply_overrides(data, arm.overrides, where)
    data = apply_overrides(data, {"training.generation.seed": seed, "training.trainer.seed": seed,
                                  "judges.selection.seed": seed}, where)
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where), hint="the arm's overrides name config keys (see the README's Configuration)") from None


def baseline_key(config: ProjectConfig, task_ref: str, prompts_sha: str) -> str:
    """What round 0 (the base model's evaluation) depends on: runs with the same key share it.

    The model, the generation and evaluation settings (not the number of candidates, the train
    prompts per round or the win-rate judge, which round 0 does not use), the seed, the task and
    its prompts, and the retrieval settings when retrieval is in the loop.
    """
    t = config.training
    payload = {
        "model": t.model.model_dump(mode="json"),
        "generation": t.generation.model_dump(mode="json", exclude={"candidates", "prompts_per_round"}),
        "evaluation": t.evaluation.model_dump(mode="json", exclude={"judge"}),
        "task": task_ref,
        "prompts": prompts_sha,
    }
    if config.rag.enabled:  # retrieval in the loop changes round 0's answers (not a key otherwise: old keys stay)
        payload["rag"] = config.rag.model_dump(mode="json")
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config mappings."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            out += changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]
