"""A judge behind an OpenAI-compatible chat-completions endpoint (vLLM, Ollama, OpenAI, …).

- ``base_url`` and ``model`` come from the config; the API key only from the environment variable
  named by ``api_key_env`` (checked before any request; ``api_key_env: null`` for servers that
  need no key). The key is never logged, stored or shown, and is masked in error messages.
- Requests run on a bounded thread pool (``concurrency``), each with a timeout; 429 and 5xx
  answers and dropped connections are retried with exponential backoff (``Retry-After`` wins).
- Token usage becomes cost through the spec's prices.
- With ``logprobs`` on, the answer token's top log-probabilities give P(A) or an expected score;
  a server that does not return them (or refuses the parameter) gets strictly parsed answers.
- A refused, empty, malformed or failed answer becomes a failed verdict carrying the reason.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prefloop.errors import ConfigError

from .base import Messages, Oriented, PointwiseVerdict, Usage
from .config import JudgeSpec
from .llm import PAIR_OPTIONS, LLMJudge, MalformedAnswer, normalise, parse_answer

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class Reply:
    """One request's outcome: the chosen option and option probabilities, or an error."""

    option: str | None = None
    probs: dict[str, float] | None = None  # from log-probs, when the server gave them
    rationale: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    attempts: int = 0
    error: str | None = None


def public_url(url: str) -> str:
    """The URL without user info, query or fragment (safe to store in an identity)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class OpenAIJudge(LLMJudge):
    """Pairwise and pointwise judging through ``POST {base_url}/chat/completions``."""

    backend = "openai"

    def __init__(self, spec: JudgeSpec, *, base_dir: str | Path | None = None) -> None:
        super().__init__(spec, base_dir=base_dir)
        self.url = self.base_url.rstrip("/") + "/chat/completions"
        self._client: Any = None
        self._lock = threading.Lock()
        self._logprobs = spec.logprobs
        self.requests_sent = 0
        #: How the judge waits between retries (a test records the waits instead of sleeping).
        self.sleep: Callable[[float], None] = time.sleep

    @property
    def base_url(self) -> str:
        url = self.spec.base_url
        assert url is not None  # JudgeSpec requires it for the openai backend
        return url

    @property
    def identity(self) -> dict[str, Any]:
        return {**super().identity, "base_url": public_url(self.base_url)}

    # ------------------------------------------------------------------ setup
    def _api_key(self) -> str | None:
        env = self.spec.api_key_env
        if env is None:
            return None
        key = os.environ.get(env)
        if not key:
            raise ConfigError(
                f"judge {self.name!r} needs an API key in the environment variable {env}, which is not set",
                hint=f"export {env}=… (never put keys in the config), or set api_key_env: null for a server that needs no key",
            )
        return key

    def check(self) -> None:
        self._api_key()

    def _ensure_client(self) -> Any:
        with self._lock:
            if self._client is None:
                import httpx

                key = self._api_key()
                headers = {"Content-Type": "application/json"}
                if key:
                    headers["Authorization"] = f"Bearer {key}"
                self._key = key
                self._client = httpx.Client(
                    headers=headers,
                    timeout=httpx.Timeout(self.spec.timeout_s),
                    limits=httpx.Limits(max_connections=self.spec.concurrency, max_keepalive_connections=self.spec.concurrency),
                    follow_redirects=False,
                )
            return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _mask(self, text: str) -> str:
        key = getattr(self, "_key", None)
        return text.replace(key, "***") if key else text

    # ------------------------------------------------------------------ one request
    def _body(self, messages: Messages, with_logprobs: bool) -> dict[str, Any]:
        max_tokens = self.spec.max_tokens + (self.spec.max_rationale_tokens if self.spec.rationale else 0)
        body: dict[str, Any] = {
            **self.spec.extra_body,
            "model": self.spec.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": max_tokens,
        }
        if with_logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = self.spec.top_logprobs
        return body

    def ask(self, messages: Messages, options: tuple[str, ...] | list[str]) -> Reply:
        """Send one chat request (with retries) and read the answer among ``options``."""
        client = self._ensure_client()
        import httpx

        t0 = time.perf_counter()
        reply = Reply()
        attempt = 0
        while True:
            attempt += 1
            reply.attempts = attempt
            with_lp = self._logprobs
            delay: float | None = None
            try:
                self.requests_sent += 1
                resp = client.post(self.url, json=self._body(messages, with_lp))
            except httpx.TimeoutException:
                reply.error = f"timed out after {self.spec.timeout_s:g}s"
            except httpx.TransportError as exc:
                reply.error = self._mask(f"connection failed: {type(exc).__name__}: {exc}")
            else:
                if resp.status_code == 200:
                    reply.error = None
                    self._read(resp, options, reply)
                    break
                detail = self._mask(_error_detail(resp))
                if resp.status_code == 400 and with_lp and "logprob" in detail.lower():
                    self._logprobs = False  # this server does not offer log-probs: parse answers
                    attempt -= 1
                    continue
                reply.error = f"HTTP {resp.status_code}: {detail}"
                if resp.status_code not in RETRY_STATUS:
                    if resp.status_code in (401, 403):
                        reply.error += f" (check the key in {self.spec.api_key_env})" if self.spec.api_key_env else ""
                    break
                delay = _retry_after(resp.headers.get("retry-after"))
            if attempt > self.spec.max_retries:
                if attempt > 1:
                    reply.error = f"{reply.error} (gave up after {attempt} attempts)"
                break
            if delay is None:
                delay = self.spec.backoff_s * (2 ** (attempt - 1)) * (1 + 0.25 * random.random())
            self.sleep(min(delay, self.spec.max_backoff_s))
        reply.latency_s = time.perf_counter() - t0
        return reply

    def _read(self, resp: Any, options: tuple[str, ...] | list[str], reply: Reply) -> None:
        try:
            data = resp.json()
        except ValueError:
            reply.error = f"malformed response: not JSON: {resp.text[:200]!r}"
            return
        try:
            choice = data["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            reply.error = f"malformed response: no choices[0].message in {str(data)[:200]!r}"
            return
        usage = data.get("usage") or {}
        reply.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        reply.completion_tokens = int(usage.get("completion_tokens") or 0)
        if not isinstance(message, dict):
            reply.error = "malformed response: choices[0].message is not an object"
            return
        if message.get("refusal"):
            reply.error = f"refused: {str(message['refusal'])[:300]}"
            return
        if choice.get("finish_reason") == "content_filter":
            reply.error = "refused: the server's content filter stopped the answer"
            return
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            reply.error = f"malformed response: content is {type(content).__name__}, not text"
            return
        try:
            reply.option, reply.rationale = parse_answer(content, options)
        except MalformedAnswer as exc:
            reply.error = str(exc)
            return
        reply.probs = _option_probs(choice.get("logprobs"), options, self.spec.top_logprobs)

    # ------------------------------------------------------------------ batches
    def _ask_all(self, requests: list[tuple[Messages, tuple[str, ...] | list[str]]]) -> list[Reply]:
        self._ensure_client()  # a missing key fails here, before any request
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=min(self.spec.concurrency, len(requests)), thread_name_prefix=f"judge-{self.name}") as pool:
            return list(pool.map(lambda r: self.ask(*r), requests))

    def _judge_oriented(self, prompts: list[Messages], first: list[str], second: list[str], refs: list[str | None]) -> list[Oriented]:
        msgs = [self.pairwise_messages(p, f, s, r) for p, f, s, r in zip(prompts, first, second, refs, strict=True)]
        out = []
        for rep in self._ask_all([(m, PAIR_OPTIONS) for m in msgs]):
            p_first = None
            if rep.error is None:
                p_first = rep.probs["A"] if rep.probs else (1.0 if rep.option == "A" else 0.0)
            out.append(Oriented(p_first, rep.prompt_tokens, rep.completion_tokens, rep.latency_s, rep.rationale, rep.error))
        return out

    def _score_uncached(self, prompts: list[Messages], outputs: list[str], refs: list[str | None]) -> list[PointwiseVerdict]:
        msgs = [self.pointwise_messages(p, o, r) for p, o, r in zip(prompts, outputs, refs, strict=True)]
        out = []
        for rep in self._ask_all([(m, self.score_options) for m in msgs]):
            usage = Usage(
                prompt_tokens=rep.prompt_tokens,
                completion_tokens=rep.completion_tokens,
                latency_s=rep.latency_s,
                cost=self.cost_of(rep.prompt_tokens, rep.completion_tokens),
            )
            if rep.error is not None:
                out.append(PointwiseVerdict.failed(rep.error, scale=self.scale, rationale=rep.rationale, **usage))
            elif rep.probs:
                out.append(self.pointwise_from_probs(rep.probs, rationale=rep.rationale, **usage))
            else:  # a parsed digit: the score is exact, its probability unknown
                assert rep.option is not None  # a reply without an error has its option
                out.append(PointwiseVerdict(score=float(rep.option), scale=self.scale, rationale=rep.rationale, **usage))
        return out


def _error_detail(resp: Any) -> str:
    try:
        data = resp.json()
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
        if isinstance(data, dict) and data.get("detail"):
            return str(data["detail"])[:300]
    except ValueError:
        pass
    return (resp.text or resp.reason_phrase or "").strip()[:300]


def _option_probs(logprobs: Any, options: tuple[str, ...] | list[str], k: int) -> dict[str, float] | None:
    """P(option) from the first answer position whose top log-probs name an option.

    An option missing from a full top-``k`` list gets the smallest listed log-probability (an
    upper bound on its mass), so truncation never makes a verdict look more certain than it is;
    a shorter list is the server's whole candidate set, and a missing option there has no mass.
    """
    if not isinstance(logprobs, dict) or not isinstance(logprobs.get("content"), list):
        return None
    for pos in logprobs["content"][:4]:
        if not isinstance(pos, dict):
            return None
        entries = list(pos.get("top_logprobs") or [])
        truncated = len(entries) >= k
        if "token" in pos and "logprob" in pos:
            entries.append({"token": pos["token"], "logprob": pos["logprob"]})
        found: dict[str, dict[str, float]] = {}
        floor = math.inf
        for e in entries:
            try:
                tok, lp = str(e["token"]), float(e["logprob"])
            except (KeyError, TypeError, ValueError):
                continue
            if not math.isfinite(lp):
                continue
            floor = min(floor, lp)
            opt = tok.strip()
            if opt in options:  # exact: a lower-case "a" is a word, not answer A
                # Spellings of one option (A, " A") add up; the same entry twice does not.
                found.setdefault(opt, {})[tok] = lp
        if found:
            merged = {o: math.log(sum(math.exp(v) for v in d.values())) for o, d in found.items()}
            if truncated:
                for o in options:
                    merged.setdefault(o, floor)
            probs = normalise(merged)
            return {o: probs.get(o, 0.0) for o in options}
    return None
