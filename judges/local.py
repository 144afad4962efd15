"""A judge that runs a transformers model in this process, batched.

Verdicts come from the next-token log-probabilities of the answer tokens (``A``/``B``, or the
scale's digits), never from parsing generated text, so even a 135M-parameter model gives a usable,
calibrated probability. Speed: every input of a call shares the template's constant beginning
(rubric, instructions, examples); that prefix is run once and its key/value cache reused by every
batch, and each batch runs only the varying suffixes (right-padded, read at each row's last token).
The one-by-one path is the same code with one input, so batched and single verdicts agree.
"""

from __future__ import annotations

import copy
import inspect
import time
from pathlib import Path
from typing import Any

from prefloop.errors import ConfigError

from .base import Messages, Oriented, PointwiseVerdict
from .config import JudgeSpec
from .llm import PAIR_OPTIONS, LLMJudge

_LOADED: dict[tuple[str, str, str], tuple[Any, Any]] = {}  # (source, dtype, device) → (tokenizer, model)


def load_judge_model(source: str, *, dtype: str = "float32", device: str | None = None) -> tuple[Any, Any]:
    """Tokenizer and eval-mode model, loaded once per process and shared by judges that use it."""
    import torch

    from prefloop.training.loading import load_causal_lm, load_tokenizer

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    key = (source, dtype, dev)
    if key not in _LOADED:
        try:
            tok = load_tokenizer(source)
            model = load_causal_lm(source, dtype=dtype, device=dev)
        except OSError as exc:
            raise ConfigError(
                f"cannot load judge model {source!r}: {exc}",
                hint="use a hub name (needs internet once), a local folder, or offline:smollm2-135m-instruct",
            ) from None
        model.eval()
        _LOADED[key] = (tok, model)
    return _LOADED[key]


class LocalJudge(LLMJudge):
    """A transformers model as a pairwise and pointwise judge (default: the offline SmolLM2-135M)."""

    backend = "local"

    def __init__(self, spec: JudgeSpec, *, base_dir: str | Path | None = None, tokenizer: Any = None, model: Any = None) -> None:
        super().__init__(spec, base_dir=base_dir)
        self._tok = tokenizer
        self._model = model
        self._option_cache: dict[tuple[str, ...], list[list[int]]] = {}
        self.model_calls = 0  # forward passes over judge inputs (tests check caching with it)

    def model_name(self) -> str:
        return self.spec.model_source

    # ------------------------------------------------------------------ model
    def _ensure(self) -> tuple[Any, Any]:
        if self._model is None:
            self._tok, self._model = load_judge_model(self.spec.model_source, dtype=self.spec.dtype, device=self.spec.device)
        return self._tok, self._model

    def encode(self, messages: Messages) -> list[int]:
        """Token ids of the judge input, ending where the answer token goes."""
        tok, _ = self._ensure()
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:  # a base model: plain text with an answer cue
            text = "\n\n".join(m["content"] for m in messages) + "\n\nAnswer:"
        return tok(text, add_special_tokens=False)["input_ids"]

    def option_token_ids(self, options: tuple[str, ...] | list[str]) -> list[list[int]]:
        """For each option, the first token of its spellings (``A``, `` A``) that no other option shares."""
        key = tuple(options)
        if key in self._option_cache:
            return self._option_cache[key]
        tok, _ = self._ensure()
        firsts: list[set[int]] = []
        for opt in options:
            ids = set()
            for variant in (opt, " " + opt):
                enc = tok.encode(variant, add_special_tokens=False)
                if enc:
                    ids.add(enc[0])
            firsts.append(ids)
        out = []
        for i, ids in enumerate(firsts):
            others = set().union(*(f for j, f in enumerate(firsts) if j != i))
            own = sorted(ids - others)
            if not own:
                raise ConfigError(
                    f"judge {self.name!r}: the tokenizer of {self.spec.model_source!r} has no token of its own for answer {options[i]!r}",
                    hint="use another judge model, or a remote judge whose answers are parsed",
                )
            out.append(own)
        self._option_cache[key] = out
        return out

    def option_logprobs(self, seqs: list[list[int]], options: tuple[str, ...] | list[str]) -> tuple[list[list[float]], list[float]]:
        """Per sequence: the log-probability of each option as the next token, and seconds spent.

        An option with several spellings gets the log-sum-exp over them.
        """
        import torch

        tok, model = self._ensure()
        opt_ids = self.option_token_ids(options)
        flat = sorted({i for ids in opt_ids for i in ids})
        col = {t: k for k, t in enumerate(flat)}
        n = len(seqs)
        results: list[list[float]] = [[] for _ in range(n)]
        seconds = [0.0] * n
        if n == 0:
            return results, seconds
        device = next(model.parameters()).device
        decoder = model.get_decoder()
        head = model.get_output_embeddings()
        cache_kw = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0

        # The longest prefix every sequence shares (at least one token left to each for the suffix).
        shortest = min(len(s) for s in seqs)
        p = 0
        first = seqs[0]
        while self.spec.share_prefix and p < shortest - 1 and all(s[p] == first[p] for s in seqs):
            p += 1

        with torch.inference_mode():
            t0 = time.perf_counter()
            prefix_cache = None
            if p > 0:
                from transformers import DynamicCache

                prefix_cache = DynamicCache()
                decoder(
                    input_ids=torch.tensor([first[:p]], device=device),
                    position_ids=torch.arange(p, device=device).unsqueeze(0),
                    use_cache=True,
                    **{cache_kw: prefix_cache},
                )
                self.model_calls += 1
            prefix_s = (time.perf_counter() - t0) / n
            order = sorted(range(n), key=lambda i: len(seqs[i]), reverse=True)
            bs = self.spec.batch_size
            for start in range(0, n, bs):
                idx = order[start : start + bs]
                t1 = time.perf_counter()
                b = len(idx)
                width = max(len(seqs[i]) - p for i in idx)
                # Right padding needs no attention mask: under the causal mask a real token only
                # sees what comes before it, never the pads after it (and a mask would cost ~1.5×).
                ids = torch.full((b, width), pad, dtype=torch.long)
                last = torch.zeros(b, dtype=torch.long)
                for r, i in enumerate(idx):
                    suffix = seqs[i][p:]
                    ids[r, : len(suffix)] = torch.tensor(suffix)
                    last[r] = len(suffix) - 1
                kw: dict[str, Any] = {}
                if prefix_cache is not None:
                    batch_cache = copy.deepcopy(prefix_cache)
                    if b > 1:
                        batch_cache.batch_repeat_interleave(b)
                    kw = {cache_kw: batch_cache, "use_cache": True}
                else:
                    kw = {"use_cache": False}
                positions = torch.arange(p, p + width).unsqueeze(0).expand(b, -1)
                out = decoder(input_ids=ids.to(device), position_ids=positions.to(device), **kw)
                self.model_calls += 1
                hidden = out.last_hidden_state[torch.arange(b, device=device), last.to(device)]
                logits = head(hidden).float()
                cap = getattr(model.config, "final_logit_softcapping", None)
                if cap:  # Gemma-style models squash their logits; the decoder alone does not
                    logits = torch.tanh(logits / cap) * cap
                logp = torch.log_softmax(logits, dim=-1)[:, flat].cpu()
                spent = (time.perf_counter() - t1) / b
                for r, i in enumerate(idx):
                    row = logp[r]
                    results[i] = [float(torch.logsumexp(row[[col[t] for t in ids_]], dim=0)) for ids_ in opt_ids]
                    seconds[i] = spent + prefix_s
        return results, seconds

    def _generate(self, seqs: list[list[int]], max_new_tokens: int) -> tuple[list[str | None], list[int]]:
        """Greedy continuations (for rationales), left-padded; stops at a blank line or EOS."""
        import torch

        tok, model = self._ensure()
        device = next(model.parameters()).device
        texts: list[str | None] = []
        counts: list[int] = []
        bs = self.spec.batch_size
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        for start in range(0, len(seqs), bs):
            chunk = seqs[start : start + bs]
            width = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, s in enumerate(chunk):
                ids[r, width - len(s) :] = torch.tensor(s)
                mask[r, width - len(s) :] = 1
            with torch.inference_mode():
                out = model.generate(
                    input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                    do_sample=False, pad_token_id=pad, eos_token_id=tok.eos_token_id,
                )
            for r in range(len(chunk)):
                new = out[r, width:].tolist()
                if tok.eos_token_id in new:
                    new = new[: new.index(tok.eos_token_id)]
                counts.append(len(new))
                texts.append(tok.decode(new, skip_special_tokens=True).strip().split("\n\n")[0].strip() or None)
        return texts, counts

    def _with_answer(self, seq: list[int], answer: str) -> list[int]:
        tok, _ = self._ensure()
        return seq + tok.encode(answer + "\n", add_special_tokens=False)

    # ------------------------------------------------------------------ judging
    def _too_long(self, seq: list[int]) -> str | None:
        if len(seq) > self.spec.max_length:
            return f"judge input is {len(seq)} tokens, over max_length {self.spec.max_length}"
        return None

    def _judge_oriented(self, prompts: list[Messages], first: list[str], second: list[str], refs: list[str | None]) -> list[Oriented]:
        seqs = [self.encode(self.pairwise_messages(p, f, s, r)) for p, f, s, r in zip(prompts, first, second, refs, strict=True)]
        ok = [i for i, s in enumerate(seqs) if self._too_long(s) is None]
        lps, secs = self.option_logprobs([seqs[i] for i in ok], PAIR_OPTIONS)
        out = [Oriented(None, prompt_tokens=len(s), error=self._too_long(s)) for s in seqs]
        from .llm import normalise

        p_first: dict[int, float] = {}
        for i, lp, sec in zip(ok, lps, secs, strict=True):
            p_first[i] = normalise(dict(zip(PAIR_OPTIONS, lp, strict=True)))["A"]
            out[i] = Oriented(p_first[i], prompt_tokens=len(seqs[i]), latency_s=sec)
        if self.spec.rationale:
            # One reason per pair (from the A-first order), generated after the chosen letter.
            n = len(prompts) // 2
            want = [i for i in ok if i < n]
            texts, counts = self._generate(
                [self._with_answer(seqs[i], "A" if p_first[i] >= 0.5 else "B") for i in want], self.spec.max_rationale_tokens
            )
            for i, t, c in zip(want, texts, counts, strict=True):
                out[i].rationale, out[i].completion_tokens = t, c
        return out

    def _score_uncached(self, prompts: list[Messages], outputs: list[str], refs: list[str | None]) -> list[PointwiseVerdict]:
        from .llm import normalise

        seqs = [self.encode(self.pointwise_messages(p, o, r)) for p, o, r in zip(prompts, outputs, refs, strict=True)]
        ok = [i for i, s in enumerate(seqs) if self._too_long(s) is None]
        lps, secs = self.option_logprobs([seqs[i] for i in ok], self.score_options)
        out: list[PointwiseVerdict] = [
            PointwiseVerdict.failed(self._too_long(s) or "", prompt_tokens=len(s), scale=self.scale) for s in seqs
        ]
        for i, lp, sec in zip(ok, lps, secs, strict=True):
            probs = normalise(dict(zip(self.score_options, lp, strict=True)))
            out[i] = self.pointwise_from_probs(probs, prompt_tokens=len(seqs[i]), latency_s=sec)
        # a verdict that failed here (NaN probabilities: a broken model) has no distribution and no rationale
        rated = [(i, d) for i in ok if (d := out[i].distribution) is not None]
        if self.spec.rationale and rated:
            best = [max(d, key=d.__getitem__) for _, d in rated]
            texts, counts = self._generate(
                [self._with_answer(seqs[i], b) for (i, _), b in zip(rated, best, strict=True)], self.spec.max_rationale_tokens
            )
            for (i, _), t, c in zip(rated, texts, counts, strict=True):
                out[i].rationale, out[i].completion_tokens = t, c
        for v in out:
            v.cost = self.cost_of(v.prompt_tokens, v.completion_tokens)
        return out
