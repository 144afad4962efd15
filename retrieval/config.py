"""The ``rag:`` section of ``prefloop.yaml``: which knowledge base, retriever and prompt template.

The round loop reads it to put retrieved passages into generation prompts (``enabled``); the
``prefloop kb`` commands take their defaults from it (``kb``, ``retriever``, ``k``, ``chunking``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from prefloop.strict import StrictModel

from .chunking import Chunking

DEFAULT_TEMPLATE = (
    "Use these passages from the knowledge base when they answer the question; "
    "do not contradict them.\n"
    "{% for p in passages %}[{{ p.number }}] {% if p.title %}{{ p.title }}: {% endif %}{{ p.text }}\n{% endfor %}"
)


class RagConfig(StrictModel):
    """Retrieval-augmented generation: retrieved passages placed into the prompt."""

    enabled: bool = False
    kb: str = Field("default", min_length=1, max_length=200, description="knowledge base name")
    retriever: Literal["auto", "bm25", "dense", "hybrid", "postgres"] = Field(
        "auto", description="auto: postgres on a PostgreSQL store, bm25 on SQLite")
    k: int = Field(4, ge=1, le=50, description="passages retrieved per prompt")
    template: str = Field(DEFAULT_TEMPLATE, description="Jinja template of the context: passages (number, text, title, source, …)")
    placement: Literal["system", "user"] = Field(
        "system", description="system: appended to the system message (one is added if absent); user: before the last user turn")
    max_context_tokens: int = Field(512, ge=16, description="budget of the rendered context (tokens; words without a tokenizer)")
    dense_model: str = Field("packaged:all-minilm-l6-v2", description="dense/hybrid: packaged:all-minilm-l6-v2 or a local folder")
    chunking: Chunking = Chunking()

    @field_validator("template")
    @classmethod
    def _template_compiles(cls, value: str) -> str:
        from .augment import compile_template

        compile_template(value)
        return value
