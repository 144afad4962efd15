"""LLM judges: pointwise and pairwise, local and remote, debiased, cached, cost-accounted.

``build_judge(spec)`` makes a judge from a :class:`~prefloop.judges.config.JudgeSpec`;
``judges_from_config(project_config)`` makes every judge a project configures. Heavy libraries
(torch, transformers, httpx) load only when a judge first runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefloop.errors import ConfigError

from .base import Judge, PairwiseJudge, PairwiseVerdict, PointwiseJudge, PointwiseVerdict
from .config import JudgesConfig, JudgeSpec

if TYPE_CHECKING:
    from prefloop.config import ProjectConfig

__all__ = [
    "Judge",
    "JudgeSpec",
    "JudgesConfig",
    "PairwiseJudge",
    "PairwiseVerdict",
    "PointwiseJudge",
    "PointwiseVerdict",
    "build_judge",
    "judges_from_config",
]


def build_judge(
    spec: JudgeSpec | dict[str, Any],
    *,
    specs: list[JudgeSpec] | None = None,
    base_dir: str | Path | None = None,
    cache: Any = None,
) -> Judge:
    """A judge from its spec. ``specs``: the other configured judges (a panel's members come from
    there); ``base_dir``: where relative template paths start; ``cache``: a verdict cache."""
    if isinstance(spec, dict):
        spec = JudgeSpec.model_validate(spec)
    if spec.backend == "local":
        from .local import LocalJudge

        judge: Judge = LocalJudge(spec, base_dir=base_dir)
    elif spec.backend == "openai":
        from .openai_compat import OpenAIJudge

        judge = OpenAIJudge(spec, base_dir=base_dir)
    elif spec.backend == "rules":
        from .rules import RuleJudge

        judge = RuleJudge(spec)
    elif spec.backend == "python":
        from .rules import CallableJudge

        judge = CallableJudge.from_spec(spec)
    elif spec.backend == "reward_model":
        from .reward_model import RewardModelJudge

        judge = RewardModelJudge(spec)
    else:
        from .panel import PanelJudge

        known = {s.name: s for s in specs or []}
        missing = [m for m in spec.members if m not in known]
        if missing:
            raise ConfigError(f"panel {spec.name!r}: unknown member(s) {missing}", hint="list every member in judges.panel")
        members = [build_judge(known[m], specs=specs, base_dir=base_dir, cache=cache) for m in spec.members]
        judge = PanelJudge(spec.name, members, combine=spec.combine, scale=spec.scale, tie_margin=spec.tie_margin, spec=spec)
    if cache is not None:
        judge.cache = cache
    return judge


def judges_from_config(project_config: ProjectConfig | JudgesConfig, *, base_dir: str | Path | None = None, cache: Any = None) -> dict[str, Judge]:
    """Every configured judge by name (models load lazily, on first use)."""
    cfg = project_config if isinstance(project_config, JudgesConfig) else project_config.judges
    return {s.name: build_judge(s, specs=cfg.panel, base_dir=base_dir, cache=cache) for s in cfg.panel}
