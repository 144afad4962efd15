"""Config section owned by ``prefloop.judges``: the judges a project may run, and how their
verdicts set the order in which humans see tasks.

A judge is described by a :class:`JudgeSpec` in ``judges.panel`` (a list; names are unique and
become the judge's annotator name in the store). API keys never live here: ``api_key_env`` names
the environment variable that holds the key.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from prefloop.strict import StrictModel
from prefloop.training.loading import OFFLINE_SMOLLM2  # a light module: no torch at import

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")


class RuleSpec(StrictModel):
    """One programmatic check of an output; a judge's score is the weighted share of checks passed."""

    type: Literal["regex", "length", "json_schema", "keywords"]
    #: regex: the pattern that must be found (``re.search``); ``negate: true`` makes it forbidden.
    pattern: str | None = None
    #: length: bounds in characters (or words with ``unit: words``).
    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)
    unit: Literal["chars", "words"] = "chars"
    #: json_schema: the output must parse as JSON and validate against this schema.
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    #: keywords: words that must appear (``mode: all``) or at least one (``mode: any``); case-insensitive.
    keywords: list[str] = []
    mode: Literal["all", "any"] = "all"
    negate: bool = False
    weight: float = Field(1.0, gt=0)

    model_config = StrictModel.model_config | {"populate_by_name": True}

    @model_validator(mode="after")
    def _complete(self) -> RuleSpec:
        if self.type == "regex":
            if not self.pattern:
                raise ValueError("a regex rule needs 'pattern'")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"invalid regex {self.pattern!r}: {exc}") from None
        if self.type == "length" and self.min is None and self.max is None:
            raise ValueError("a length rule needs 'min' and/or 'max'")
        if self.type == "length" and self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"length rule: min {self.min} > max {self.max}")
        if self.type == "json_schema":
            if self.schema_ is None:
                raise ValueError("a json_schema rule needs 'schema'")
            from jsonschema.validators import validator_for

            cls = validator_for(self.schema_)
            try:
                cls.check_schema(self.schema_)
            except Exception as exc:  # jsonschema.SchemaError
                raise ValueError(f"invalid JSON schema: {getattr(exc, 'message', exc)}") from None
        if self.type == "keywords" and not self.keywords:
            raise ValueError("a keywords rule needs a non-empty 'keywords' list")
        return self


class JudgeSpec(StrictModel):
    """One judge. ``backend`` picks the implementation; the other keys apply where they make sense."""

    name: str
    backend: Literal["local", "openai", "rules", "python", "panel", "reward_model"] = "local"
    #: local: a model source (hub name, folder, ``offline:…``, ``tiny:…``); openai: the served model name;
    #: reward_model: the base under the reward head (default: the policy's base, ``training.model.source``).
    model: str | None = None
    #: Jinja templates: a name in ``prefloop/configs/judges`` or a path (relative to the project).
    pairwise_template: str = "pairwise"
    pointwise_template: str = "pointwise"
    system_prompt: str | None = "You are an impartial expert judge of answers written by AI assistants."
    #: what "better" means; rendered into the templates.
    rubric: str = "Prefer the answer that is more helpful, correct, and concise, and that follows the instructions."
    #: few-shot examples: pairwise {prompt, a, b, answer: A|B, reason?}; pointwise {prompt, output, score, reason?}.
    examples: list[dict[str, Any]] = []
    use_reference: bool = True  # show the prompt's reference answer, when it has one
    scale: tuple[int, int] = (1, 5)  # the judge's own score scale (mapped onto each task's scale)
    #: a final P(A better) within this distance of 0.5 is a tie.
    tie_margin: float = Field(0.05, ge=0, lt=0.5)
    rationale: bool = False  # ask for a one-sentence reason (costs generated tokens)
    max_rationale_tokens: int = Field(64, ge=1)
    # --- local
    batch_size: int = Field(8, ge=1)
    share_prefix: bool = True  # run the inputs' common beginning once per call and reuse its KV cache
    max_length: int = Field(4096, ge=16)  # longer judge inputs fail with a recorded reason
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str | None = None
    # --- openai-compatible
    base_url: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"  # null: the endpoint needs no key (local vLLM / Ollama)
    concurrency: int = Field(4, ge=1, le=256)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(4, ge=0, le=20)
    backoff_s: float = Field(1.0, ge=0)  # first retry delay; doubles each time (Retry-After wins)
    max_backoff_s: float = Field(60.0, ge=0)
    logprobs: bool = True  # ask for top log-probs; servers that do not offer them get parsed answers
    top_logprobs: int = Field(10, ge=1, le=20)
    max_tokens: int = Field(8, ge=1)  # answer tokens when rationale is off
    extra_body: dict[str, Any] = {}  # sent as-is (e.g. vLLM options)
    # --- costs (per 1000 tokens, in the project's currency)
    price_prompt_per_1k: float = Field(0.0, ge=0)
    price_completion_per_1k: float = Field(0.0, ge=0)
    # --- programmatic
    rules: list[RuleSpec] = []
    function: str | None = None  # python: "package.module:function"
    # --- panel
    members: list[str] = []
    combine: Literal["majority", "mean"] = "majority"
    # --- reward_model (a reward head + LoRA trained with TRL's RewardTrainer each round, see
    # ``prefloop.judges.reward_model``): what it learns from, when it retrains, how it trains.
    #: train on pairs whose labels come from these sources (human: what people chose).
    sources: list[Literal["human", "judge", "mixed"]] = ["human"]
    #: the task kinds that give pairs: compare majorities, rankings (top vs bottom), ratings
    #: (best vs worst of a prompt), edits (the corrected text over the original).
    include: list[Literal["compare", "rank", "rate", "edit"]] = ["compare", "rank"]
    #: retrain only when at least this many human pairs are new since the last training; else reuse it.
    min_new_pairs: int = Field(8, ge=1)
    #: share of human compare tasks never trained on, to measure agreement with the humans (by task id and seed).
    holdout: float = Field(0.2, ge=0, lt=1)
    seed: int = 0
    learning_rate: float = Field(1e-4, gt=0)
    epochs: float = Field(2.0, gt=0)
    max_steps: int | None = Field(None, ge=1)  # overrides epochs
    train_batch_size: int = Field(4, ge=1)
    train_max_length: int = Field(512, ge=16)  # longer pairs are left out of training
    lora_r: int = Field(8, ge=1)
    #: RewardTrainer's ``center_rewards_coefficient`` (keeps rewards near 0, so sigmoid(r) is a usable score).
    center_rewards: float | None = Field(0.01, ge=0)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"judge name {v!r} must be 1–100 letters, digits, '_', '-', '.', ':' (starting with a letter or digit)")
        return v

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] >= v[1]:
            raise ValueError(f"scale must go from low to high, got {list(v)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _env_name(cls, data: Any) -> Any:
        # Checked on the whole mapping so that an error never echoes the value: it may be a key.
        v = data.get("api_key_env") if isinstance(data, dict) else None
        if v is not None and not (isinstance(v, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v)):
            raise ValueError("api_key_env must name an environment variable (like OPENAI_API_KEY), never hold the key itself")
        return data

    @field_validator("examples")
    @classmethod
    def _examples(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, ex in enumerate(v):
            pair = {"prompt", "a", "b", "answer"} <= set(ex) and ex["answer"] in ("A", "B")
            point = {"prompt", "output", "score"} <= set(ex) and isinstance(ex["score"], int)
            if not (pair or point):
                raise ValueError(
                    f"examples[{i}] must be pairwise {{prompt, a, b, answer: A|B, reason?}} "
                    f"or pointwise {{prompt, output, score: int, reason?}}; got keys {sorted(ex)}"
                )
        return v

    @model_validator(mode="after")
    def _backend_needs(self) -> JudgeSpec:
        b = self.backend
        if b == "openai":
            if not self.base_url:
                raise ValueError(f"judge {self.name!r}: the openai backend needs 'base_url' (e.g. http://localhost:8000/v1)")
            if not self.model:
                raise ValueError(f"judge {self.name!r}: the openai backend needs 'model' (the served model name)")
        if b == "local" and (self.scale[0] < 0 or self.scale[1] > 9):
            raise ValueError(f"judge {self.name!r}: a local judge scores with single digits: scale must lie within 0–9")
        if b == "rules" and not self.rules:
            raise ValueError(f"judge {self.name!r}: the rules backend needs a non-empty 'rules' list")
        if b == "python" and (not self.function or ":" not in self.function):
            raise ValueError(f"judge {self.name!r}: the python backend needs 'function: package.module:function'")
        if b == "reward_model" and len(self.name) > 50:
            raise ValueError(f"judge {self.name!r}: a reward_model judge's name is at most 50 characters (it names its artifacts)")
        if b == "panel" and len(self.members) < 2:
            raise ValueError(f"judge {self.name!r}: a panel needs at least two 'members' (names of other judges)")
        return self

    @property
    def model_source(self) -> str:
        """The local model source (the offline SmolLM2 unless ``model`` names another)."""
        return self.model or OFFLINE_SMOLLM2


class SelectionConfig(StrictModel):
    """Which tasks humans see first (the allocation policy) and the weights of its signals
    (see ``prefloop.judges.selection``)."""

    #: fifo: creation order; random: seeded shuffle; uncertainty: the judges' doubt signals;
    #: trust: no trusted verdict first, then trusted judges unsure or disagreeing, plus an
    #: ``exploration`` share of random tasks.
    policy: Literal["fifo", "random", "uncertainty", "trust"] = "trust"
    exploration: float = Field(0.2, ge=0, le=1)  # trust: share of the queue's order given to random tasks
    seed: int = 0  # random and trust: the shuffle's seed (experiments set it per seed)
    #: recompute the open tasks' priorities every N human labels (server) and at each poll of the
    #: round's wait when labels arrived; 0: only after the judges ran.
    recompute_every: int = Field(5, ge=0)
    no_trusted_verdict: float = Field(2.0, ge=0)  # trust: weight of "no trusted judge has a verdict"
    disagreement: float = Field(1.0, ge=0)  # judges (or panel members) disagree
    inconsistency: float = Field(1.0, ge=0)  # a verdict flipped under position swap
    low_margin: float = Field(0.5, ge=0)  # P(A better) close to 0.5 / low score confidence
    failure: float = Field(0.5, ge=0)  # a judge could not answer


class TrustConfig(StrictModel):
    """When a judge's verdicts (and, separately, its ties) count as trusted (``prefloop.judges.trust``).

    Trusted: at least ``min_n`` verdicts compared with a human majority, and the lower end of the
    Wilson interval of their agreement at least ``threshold``. Untrusted: measured (``min_n``
    reached) and not trusted. Unmeasured: fewer than ``min_n``.
    """

    min_n: int = Field(10, ge=1)
    threshold: float = Field(0.6, ge=0, le=1)
    level: float = Field(0.95, gt=0, lt=1)  # of the Wilson intervals
    #: a judge is *blind* on a kind when at least this share of its ties were tasks humans decided.
    blind_tie_share: float = Field(0.5, gt=0, le=1)
    #: leave untrusted judges' labels out of training datasets and exports.
    exclude_untrusted: bool = True


class StoppingConfig(StrictModel):
    """The cost-aware stopping rule of a round's wait for people (``prefloop.judges.stopping``; off by default)."""

    enabled: bool = False
    #: what one more correct training pair is worth, in the project's currency (cost.currency).
    pair_value: float = Field(0.5, ge=0)
    #: seconds per human label for the price when the project has no timed human labels yet.
    label_seconds: float = Field(30.0, gt=0)


class JudgesConfig(StrictModel):
    #: every judge the project may run; panels refer to other entries by name.
    panel: list[JudgeSpec] = []
    #: the judge ``prefloop judge run`` uses without ``--judge`` (default: the first in ``panel``).
    default: str | None = None
    selection: SelectionConfig = SelectionConfig()
    trust: TrustConfig = TrustConfig()
    stopping: StoppingConfig = StoppingConfig()

    @model_validator(mode="after")
    def _names(self) -> JudgesConfig:
        names = [j.name for j in self.panel]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"judge names must be unique; repeated: {dupes}")
        known = set(names)
        for j in self.panel:
            missing = [m for m in j.members if m not in known]
            if missing:
                raise ValueError(f"panel {j.name!r} names unknown member(s) {missing}; known judges: {sorted(known)}")
            if j.name in j.members:
                raise ValueError(f"panel {j.name!r} lists itself as a member")
            nested = [m for m in j.members if next(s for s in self.panel if s.name == m).backend == "panel"]
            if nested:
                raise ValueError(f"panel {j.name!r}: members {nested} are panels themselves; list their members instead")
        if self.default is not None and self.default not in known:
            raise ValueError(f"judges.default {self.default!r} is not a judge in judges.panel; known: {sorted(known)}")
        return self

    def get(self, name: str) -> JudgeSpec | None:
        return next((j for j in self.panel if j.name == name), None)
