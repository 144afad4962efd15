"""The project configuration: one YAML file (``prefloop.yaml``) validated by pydantic.

Each package owns its section (``prefloop.feedback.config``, ``prefloop.judges.config``,
``prefloop.training.config``); this module composes them, loads presets from
``prefloop.configs`` and turns validation failures into messages that name the key.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from prefloop.errors import ConfigError
from prefloop.feedback.config import (
    AggregationConfig,
    AnnotationConfig,
    ArgillaConfig,
    QueueConfig,
    ServerConfig,
    StoreConfig,
)
from prefloop.judges.config import JudgesConfig
from prefloop.retrieval.config import RagConfig
from prefloop.strict import StrictModel
from prefloop.text import one_line, text_problem
from prefloop.training.config import TrainingConfig


class CostConfig(StrictModel):
    """Prices that turn labels and compute into money, for the ROI report."""

    currency: str = "USD"
    human_hourly_rate: float = Field(30.0, ge=0, description="per annotator hour")
    compute_hourly_rate: float = Field(0.10, ge=0, description="per hour of the training/generation machine")
    # `prefloop compare`: what answering costs in production, and what quality is worth there.
    inference_hourly_rate: float | None = Field(
        None, ge=0, description="per hour of the machine that serves answers (null: compute_hourly_rate)")
    price_prompt_per_1k_tokens: float = Field(0.0, ge=0, description="per 1,000 prompt tokens served (a hosted model's price)")
    price_completion_per_1k_tokens: float = Field(0.0, ge=0, description="per 1,000 completion tokens served")
    value_per_point: float | None = Field(
        None, ge=0, description="what one point of quality (1 % of the oracle score) is worth per answer; "
                                "sets break-even by value as well as by cost")


class ProjectConfig(StrictModel):
    name: str = "prefloop"
    store: StoreConfig = StoreConfig()
    queue: QueueConfig = QueueConfig()
    annotation: AnnotationConfig = AnnotationConfig()
    aggregation: AggregationConfig = AggregationConfig()
    cost: CostConfig = CostConfig()
    judges: JudgesConfig = JudgesConfig()
    training: TrainingConfig = TrainingConfig()
    server: ServerConfig = ServerConfig()
    argilla: ArgillaConfig = ArgillaConfig()
    rag: RagConfig = RagConfig()

    def fingerprint(self) -> str:
        """A stable hash of the settings (recorded on each round)."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


PRESETS = ("default", "offline-cpu", "smollm2-135m", "qwen2.5-0.5b-qlora", "qwen2.5-0.5b-lora-bf16", "demo", "demo-rag")


def _allowed_keys(model: type[StrictModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names valid at ``loc`` (for did-you-mean suggestions)."""
    cls: Any = model
    for part in loc:
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            break
        ann = field.annotation
        cls = ann if isinstance(ann, type) and issubclass(ann, StrictModel) else None
        if cls is None:
            return []
    return list(getattr(cls, "model_fields", {}))


def format_validation_error(exc: ValidationError, source: str, model: type[StrictModel] = ProjectConfig) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            tip = f"; did you mean {close[0]!r}?" if close else (f"; allowed: {', '.join(allowed)}" if allowed else "")
            lines.append(f"{source}: unknown key {dotted!r}{tip}")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{source}: {dotted}: {err['msg']}{shown}")
    return "; ".join(lines)


def parse_config(data: Any, source: str = "config") -> ProjectConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    _check_text_values(data, "", source)
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source), hint="see the README's configuration section") from None


def load_config(path: str | Path) -> ProjectConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist", hint="run `prefloop init` to create a project")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 (byte at offset {exc.start})") from None
    try:
        _refuse_repeated_keys(yaml.compose(text, Loader=yaml.SafeLoader), "", str(path), set())
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({one_line(exc.problem or exc.context or 'syntax error')})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({one_line(str(exc))})") from None
    return parse_config(data, str(path))


def _refuse_repeated_keys(node: yaml.Node | None, where: str, source: str, seen: set[int]) -> None:
    """A key given twice in one mapping is an error naming it and both lines (YAML loaders keep
    the last one silently: a second ``queue:`` section would quietly replace the first)."""
    if node is None or id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            dotted = f"{where}.{name}" if where else str(name)
            if name is not None and name != "<<":
                line = key.start_mark.line + 1
                if name in first:
                    raise ConfigError(
                        f"{source}:{line}: key {dotted!r} appears twice (first at line {first[name]})",
                        hint="keep one of them",
                    )
                first[name] = line
            _refuse_repeated_keys(value, dotted, source, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_repeated_keys(item, f"{where}[{i}]", source, seen)


def _check_text_values(value: Any, where: str, source: str) -> None:  # noqa: ANN401 - parsed YAML
    """Every string in the config (guidelines, rubrics, names) follows the text policy."""
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:
            raise ConfigError(f"{source}: {where} {problem}")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text_values(v, f"{where}.{k}" if where else str(k), source)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_text_values(v, f"{where}[{i}]", source)


def preset_text(name: str) -> str:
    """The YAML text of a shipped preset (``prefloop/configs/<name>.yaml``)."""
    files = resources.files("prefloop.configs")
    f = files / f"{name}.yaml"
    if not f.is_file():
        available = sorted(p.name.removesuffix(".yaml") for p in files.iterdir() if p.name.endswith(".yaml"))
        raise ConfigError(f"unknown preset {name!r}", hint=f"available presets: {', '.join(available)}")
    return f.read_text()


def load_preset(name: str) -> ProjectConfig:
    return parse_config(yaml.safe_load(preset_text(name)), f"preset {name}")
