"""Judge prompt templates: Jinja files with a rubric, an optional reference answer and few-shot
examples. Shipped ones live in ``prefloop/configs/judges/*.jinja``; a project may point a judge
at its own file.

Templates render plain text for a model, never HTML: no autoescaping, and the untrusted outputs
are only ever values (Jinja does not evaluate the text of a variable). Put the constant parts
(rubric, instructions, examples) first: local judges compute a shared prefix once per batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from prefloop.errors import ConfigError

SUFFIX = ".jinja"


def shipped_templates() -> list[str]:
    files = resources.files("prefloop.configs") / "judges"
    return sorted(p.name.removesuffix(SUFFIX) for p in files.iterdir() if p.name.endswith(SUFFIX))


def load_template_source(name: str, base_dir: str | Path | None = None) -> tuple[str, str]:
    """``(source text, where it came from)`` for a shipped template name or a file path."""
    looks_like_path = name.endswith(SUFFIX) or "/" in name or "\\" in name
    if looks_like_path:
        path = Path(name).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.is_file():
            raise ConfigError(
                f"judge template {name!r} not found (looked at {path})",
                hint=f"give a path to a .jinja file, or one of the shipped names: {', '.join(shipped_templates())}",
            )
        return path.read_text(encoding="utf-8"), str(path)
    f = resources.files("prefloop.configs") / "judges" / f"{name}{SUFFIX}"
    if not f.is_file():
        raise ConfigError(
            f"unknown judge template {name!r}",
            hint=f"shipped templates: {', '.join(shipped_templates())}; or give a path to your own .jinja file",
        )
    return f.read_text(encoding="utf-8"), f"prefloop/configs/judges/{name}{SUFFIX}"


def conversation_text(messages: list[dict[str, str]]) -> str:
    """The request as a judge reads it: the user turn alone, or a labelled transcript."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    labels = {"system": "System", "user": "User", "assistant": "Assistant"}
    return "\n\n".join(f"{labels.get(m['role'], m['role'])}: {m['content']}" for m in messages)


@dataclass
class JudgeTemplate:
    """A compiled template and the hash of its source (part of the judge's identity)."""

    source: str
    origin: str

    def __post_init__(self) -> None:
        import jinja2

        env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
        try:
            self._template = env.from_string(self.source)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"judge template {self.origin}: line {exc.lineno}: {exc.message}") from None
        self.hash = hashlib.sha256(self.source.encode()).hexdigest()

    @classmethod
    def load(cls, name: str, base_dir: str | Path | None = None) -> JudgeTemplate:
        source, origin = load_template_source(name, base_dir)
        return cls(source, origin)

    def render(self, **values: Any) -> str:
        import jinja2

        try:
            return self._template.render(**values).strip()
        except jinja2.UndefinedError as exc:
            raise ConfigError(
                f"judge template {self.origin}: {exc.message}",
                hint=f"variables available: {', '.join(sorted(values))}",
            ) from None
