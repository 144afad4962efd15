"""A reward model as a judge: a one-output sequence-classification head with a LoRA adapter on a
small causal LM, trained from the humans' preference pairs each round
(:mod:`prefloop.training.reward_model`, in the round's ``reward_model`` state).

Why: people label a few tasks; a reward model trained on their choices carries what they know
(correctness, not only format) to the tasks they never see, at the price of a forward pass.

It scores each output alone (a reward ``r``), so:

- pointwise: ``r`` shown on the judge's scale as ``lo + (hi − lo)·sigmoid(r)``;
- pairwise: P(A better) = ``sigmoid(r_A − r_B)`` (Bradley–Terry, the model's own training loss), a
  tie within ``tie_margin`` of 0.5, confidence ``|2P − 1|``. Both orders are trivially consistent:
  swapping A and B gives exactly ``1 − P``, so no verdict is ever inconsistent.

Which adapter: the one given (:meth:`RewardModelJudge.use`), else the newest one registered in the
store for this judge, found when the judge is given the store's verdict cache (every round and
``prefloop judge run`` do). The adapter's sha256 is part of the judge's identity, so a retrained
model never reuses the previous one's cached verdicts. Without an adapter every verdict fails with
the reason (never a guess).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from .base import Messages, PairwiseVerdict, PointwiseVerdict, ScoreBasedPairwise, Winner
from .config import JudgeSpec

BACKEND = "reward_model"
#: written beside the adapter: the base model, and the keys of the pairs it was trained on.
INFO_FILE = "reward_model.json"


def artifact_kind(judge_name: str) -> str:
    """The kind under which a round registers this judge's adapter (names are ≤ 50 characters)."""
    return f"reward-model:{judge_name}"


def is_reward_model(spec: JudgeSpec | None) -> bool:
    return spec is not None and spec.backend == BACKEND


@dataclass(frozen=True)
class TrainedRewardModel:
    """An adapter the judge can load: where it is, its weights' sha256, the base under it."""

    path: Path
    sha256: str
    base_model: str

    def trained_keys(self) -> set[str]:
        """The pairs this adapter learnt from (to count what is new since)."""
        info = self.path / INFO_FILE
        return set(json.loads(info.read_text())["keys"]) if info.is_file() else set()


def latest_adapter(store: Any, judge_name: str, *, max_round: int | None = None) -> TrainedRewardModel | None:
    """The newest registered adapter of this judge (of rounds up to ``max_round``) still on disk."""
    from prefloop.feedback.store.models import Artifact, Round

    with store.session() as s:
        q = (select(Artifact.path, Artifact.sha256, Artifact.meta).join(Round, Round.id == Artifact.round_id)
             .where(Artifact.kind == artifact_kind(judge_name)).order_by(Round.number.desc(), Artifact.id.desc()))
        if max_round is not None:
            q = q.where(Round.number <= max_round)
        rows = s.execute(q).all()
    for path, sha, meta in rows:
        if (Path(path) / "adapter_model.safetensors").is_file():
            return TrainedRewardModel(Path(path), sha, str((meta or {}).get("base_model")))
    return None


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


class RewardModelJudge(ScoreBasedPairwise):
    """Scores from a trained reward model; pairwise verdicts from the score difference."""

    backend = BACKEND

    def __init__(self, spec: JudgeSpec, *, adapter: TrainedRewardModel | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.scale = spec.scale  # a tuple already (JudgeSpec validates assignments too)
        self.tie_margin = spec.tie_margin
        self.adapter = adapter
        self._loaded: tuple[Any, Any] | None = None
        self.model_calls = 0  # forward passes (tests check caching with it)

    def use(self, adapter: TrainedRewardModel | None) -> None:
        """Score with this adapter from now on."""
        if adapter != self.adapter:
            self.adapter, self._loaded = adapter, None

    def set_cache(self, cache: Any) -> None:
        """Take the store's verdict cache, and from the same store the newest adapter (if none is set)."""
        self.cache = cache
        store = getattr(cache, "store", None)
        if self.adapter is None and store is not None:
            self.adapter = latest_adapter(store, self.name)

    @property
    def identity(self) -> dict[str, Any]:
        a = self.adapter
        return {"name": self.name, "backend": BACKEND, "model": a.base_model if a else (self.spec.model or "the policy's base"),
                "template_hash": a.sha256[:16] if a else "untrained"}

    # ------------------------------------------------------------------ model
    def _ensure(self) -> tuple[Any, Any]:
        if self._loaded is None:
            assert self.adapter is not None
            self._loaded = load_reward_model(self.adapter.base_model, self.adapter.path, device=self.spec.device,
                                             dtype=self.spec.dtype)
        return self._loaded

    def rewards(self, prompts: list[Messages], outputs: list[str]) -> list[float | str]:
        """The reward of each (prompt, output), or why there is none; batched by length."""
        import torch

        if self.adapter is None:
            why = (f"reward model {self.name!r} is not trained yet: it trains in a round's reward_model state "
                   f"once {self.spec.min_new_pairs} human pairs exist")
            return [why] * len(prompts)
        tok, model = self._ensure()
        seqs = [tok.apply_chat_template([*p, {"role": "assistant", "content": o}], tokenize=True, return_dict=True)["input_ids"]
                for p, o in zip(prompts, outputs, strict=True)]
        out: list[float | str] = [f"the input is {len(s)} tokens, longer than max_length {self.spec.max_length}"
                                  if len(s) > self.spec.max_length else math.nan for s in seqs]
        todo = sorted((i for i, s in enumerate(seqs) if len(s) <= self.spec.max_length), key=lambda i: len(seqs[i]))
        device = next(model.parameters()).device
        for start in range(0, len(todo), self.spec.batch_size):
            idx = todo[start : start + self.spec.batch_size]
            width = max(len(seqs[i]) for i in idx)
            ids = torch.full((len(idx), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, : len(seqs[i])] = torch.tensor(seqs[i])
                mask[row, : len(seqs[i])] = 1
            with torch.no_grad():
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, 0].float().cpu().tolist()
            self.model_calls += 1
            for i, r in zip(idx, logits, strict=True):
                out[i] = r if math.isfinite(r) else f"the reward model's output is {r!r}, not a number"
        return out

    # ------------------------------------------------------------------ verdicts
    def _score_uncached(self, prompts: list[Messages], outputs: list[str], refs: list[str | None]) -> list[PointwiseVerdict]:
        lo, hi = self.scale
        return [PointwiseVerdict.failed(r, scale=self.scale) if isinstance(r, str)
                else PointwiseVerdict(lo + (hi - lo) * sigmoid(r), scale=self.scale)
                for r in self.rewards(prompts, outputs)]

    def _compare_uncached(self, prompts: list[Messages], a: list[str], b: list[str], refs: list[str | None]) -> list[PairwiseVerdict]:
        n = len(prompts)
        r = self.rewards(prompts + prompts, a + b)
        out = []
        for ra, rb in zip(r[:n], r[n:], strict=True):
            if isinstance(ra, str) or isinstance(rb, str):
                out.append(PairwiseVerdict.failed("; ".join(f"{s}: {x}" for s, x in (("A", ra), ("B", rb)) if isinstance(x, str))))
                continue
            p = sigmoid(ra - rb)
            winner: Winner = "tie" if abs(p - 0.5) <= self.tie_margin else ("A" if p > 0.5 else "B")
            out.append(PairwiseVerdict(winner, p, True, orders=(p, p)))
        return out


def load_reward_model(base_source: str, adapter_dir: Path, *, device: str | None = None, dtype: str = "float32") -> tuple[Any, Any]:
    """Tokenizer (right padding) and the eval-mode reward model: base + head, the adapter loaded."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from prefloop.training.loading import load_tokenizer, resolve_model

    tok = load_tokenizer(base_source)
    tok.padding_side = "right"
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "score.weight newly initialized": the adapter brings the trained head
    try:
        base = AutoModelForSequenceClassification.from_pretrained(
            resolve_model(base_source), num_labels=1, dtype=getattr(torch, dtype))
    finally:
        hf_logging.set_verbosity(verbosity)
    base.config.pad_token_id = tok.pad_token_id
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
    return tok, model
