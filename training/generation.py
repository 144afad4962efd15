"""Sample candidates from a policy (the base model plus the current round's LoRA adapter).

Two backends: vLLM when it is installed and a CUDA GPU is present (``backend: auto``), and
transformers otherwise. Prompts are chat messages rendered with the tokenizer's chat template;
rows are sorted by length so that a batch pads little, and each generate call is one step of a
progress bar. The sampling parameters travel with the outputs so every stored generation says
how it was made.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefloop.errors import ConfigError

from .config import GenerationSettings, ModelSettings

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Sampling:
    """What one generation run used; stored on every generation as ``params``."""

    n: int
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int | None
    seed: int
    backend: str

    @classmethod
    def from_settings(cls, g: GenerationSettings, *, n: int | None = None, temperature: float | None = None,
                      max_new_tokens: int | None = None, seed: int | None = None, backend: str | None = None) -> Sampling:
        return cls(
            n=g.candidates if n is None else n,
            max_new_tokens=g.max_new_tokens if max_new_tokens is None else max_new_tokens,
            temperature=g.temperature if temperature is None else temperature,
            top_p=g.top_p,
            top_k=g.top_k,
            seed=g.seed if seed is None else seed,
            backend=backend or choose_backend(g.backend),
        )

    def as_params(self) -> dict[str, Any]:
        return {
            "n": self.n, "max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
            "top_p": self.top_p, "top_k": self.top_k, "do_sample": self.temperature > 0,
            "seed": self.seed, "backend": self.backend,
        }


def model_load_error(source: str, exc: Exception) -> ConfigError:
    """A one-line error for a model that cannot be loaded (offline hub name, wrong folder…)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ConfigError(
        f"cannot load model {source!r}: {first}",
        hint="a hub name needs internet once; offline, use offline:smollm2-135m-instruct (preset offline-cpu) or a local folder",
    )


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(model: ModelSettings) -> str:
    if model.device == "cuda" and not cuda_available():
        raise ConfigError("training.model.device is cuda but no CUDA GPU is visible", hint="use device: auto or cpu")
    if model.device == "auto":
        return "cuda" if cuda_available() else "cpu"
    return model.device


def choose_backend(wanted: str) -> str:
    """``auto`` → vLLM with a GPU and the package, else transformers; ``vllm`` without either is an error."""
    has_vllm = importlib.util.find_spec("vllm") is not None
    if wanted == "vllm":
        if not has_vllm:
            raise ConfigError("generation.backend is vllm but vLLM is not installed", hint="pip install vllm, or use backend: auto")
        if not cuda_available():
            raise ConfigError("generation.backend is vllm but no CUDA GPU is visible", hint="use backend: auto or transformers")
        return "vllm"
    if wanted == "auto" and has_vllm and cuda_available():
        return "vllm"
    return "transformers"


def adapter_fingerprint(adapter: str | Path | None) -> str | None:
    """sha256 of an adapter's weights (what a generation's ``model`` field points at)."""
    if adapter is None:
        return None
    h = hashlib.sha256()
    with open(Path(adapter) / "adapter_model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Policy:
    """The base model with an optional LoRA adapter, loaded once and reused for every batch."""

    def __init__(self, model: ModelSettings, adapter: str | Path | None = None) -> None:
        self.settings = model
        self.adapter = Path(adapter) if adapter else None
        self._tok: Any = None
        self._model: Any = None
        self._llm: Any = None

    @property
    def name(self) -> str:
        return self.settings.source + (f"+{self.adapter}" if self.adapter else "")

    def load(self) -> tuple[Any, Any]:
        if self._model is None:
            from .loading import load_causal_lm, load_tokenizer

            device = resolve_device(self.settings)
            try:
                self._tok = load_tokenizer(self.settings.source)
                model = load_causal_lm(self.settings.source, dtype=self.settings.dtype, quantization=self.settings.quantization,
                                       device=None if self.settings.quantization else device)
            except OSError as exc:
                raise model_load_error(self.settings.source, exc) from None
            if self.adapter is not None:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, str(self.adapter))
                if self.settings.quantization is None:
                    model = model.merge_and_unload()  # plain matmuls: faster sampling, same outputs
            model.eval()
            self._model = model
        return self._tok, self._model

    def unload(self) -> None:
        self._tok = self._model = self._llm = None
        import gc

        gc.collect()


def render_prompts(tok: Any, prompts: list[Messages]) -> list[str]:
    """Chat messages → the text the model continues (the template adds the assistant header)."""
    return [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]


def generate(
    policy: Policy,
    prompts: list[Messages],
    sampling: Sampling,
    *,
    batch_size: int = 16,
    progress: Any = None,
    description: str = "generating",
) -> list[list[str]]:
    """``sampling.n`` outputs for each prompt (a list per prompt, in prompt order)."""
    if not prompts:
        return []
    if sampling.backend == "vllm":
        return _generate_vllm(policy, prompts, sampling)
    return _generate_transformers(policy, prompts, sampling, batch_size=batch_size, progress=progress, description=description)


def _generate_transformers(
    policy: Policy, prompts: list[Messages], sampling: Sampling, *, batch_size: int, progress: Any, description: str
) -> list[list[str]]:
    import torch

    tok, model = policy.load()
    texts = render_prompts(tok, prompts)
    lengths = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
    rows = [(i, k) for i in range(len(prompts)) for k in range(sampling.n)]
    rows.sort(key=lambda r: (lengths[r[0]], r[0], r[1]))  # similar lengths share a batch
    out: list[list[str | None]] = [[None] * sampling.n for _ in prompts]
    device = next(model.parameters()).device
    task = progress.add_task(description, total=len(rows)) if progress is not None else None
    gen_kwargs: dict[str, Any] = {
        "max_new_tokens": sampling.max_new_tokens,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    if sampling.temperature > 0:
        gen_kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        if sampling.top_k is not None:
            gen_kwargs["top_k"] = sampling.top_k
        else:
            gen_kwargs["top_k"] = 0  # transformers defaults to 50; top-p alone is what was asked
    else:
        gen_kwargs.update(do_sample=False)
    tok.padding_side = "left"
    for b, start in enumerate(range(0, len(rows), batch_size)):
        chunk = rows[start : start + batch_size]
        enc = tok([texts[i] for i, _ in chunk], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        torch.manual_seed(sampling.seed * 1_000_003 + b)
        with torch.no_grad():
            seqs = model.generate(**enc, **gen_kwargs)
        new = seqs[:, enc["input_ids"].shape[1] :]
        for (i, k), ids in zip(chunk, new, strict=True):
            out[i][k] = tok.decode(ids, skip_special_tokens=True).strip()
        if task is not None:
            progress.advance(task, len(chunk))
    return [[o or "" for o in per] for per in out]


#: LoRA ranks vLLM can reserve room for (``max_lora_rank`` takes one of these).
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora(adapter: Path) -> dict[str, Any]:
    """How vLLM loads a round's adapter: the smallest ``max_lora_rank`` that holds its rank, and a
    name and id derived from its weights — vLLM identifies adapters by name, so two rounds'
    adapters must never share one."""
    import json

    r = int(json.loads((adapter / "adapter_config.json").read_text()).get("r", 16))
    rank = next((x for x in VLLM_LORA_RANKS if x >= r), None)
    if rank is None:
        raise ConfigError(f"LoRA rank {r} is above vLLM's largest ({VLLM_LORA_RANKS[-1]})",
                          hint="lower training.lora.r, or use generation.backend: transformers")
    digest = adapter_fingerprint(adapter) or ""
    return {"max_lora_rank": rank, "name": f"prefloop-{digest[:16]}", "id": int(digest[:7], 16) + 1}


def _generate_vllm(policy: Policy, prompts: list[Messages], sampling: Sampling) -> list[list[str]]:
    """vLLM with the adapter as a LoRA request (CUDA only; not exercised on the CPU test machine).
    Generation and evaluation sampling both come here when the backend is vLLM: each round's
    Policy loads its own adapter."""
    from vllm import LLM, SamplingParams  # type: ignore[import-not-found]
    from vllm.lora.request import LoRARequest  # type: ignore[import-not-found]

    from .loading import resolve_model

    lora = vllm_lora(policy.adapter) if policy.adapter is not None else None
    if policy._llm is None:
        kwargs: dict[str, Any] = {"model": resolve_model(policy.settings.source), "dtype": policy.settings.dtype,
                                  "seed": sampling.seed, "enable_lora": lora is not None}
        if policy.settings.quantization == "4bit":
            kwargs["quantization"] = "bitsandbytes"
        if lora is not None:
            kwargs["max_lora_rank"] = lora["max_lora_rank"]
        policy._llm = LLM(**kwargs)
    params = SamplingParams(
        n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or -1,
        max_tokens=sampling.max_new_tokens, seed=sampling.seed,
    )
    request = (LoRARequest(lora_name=lora["name"], lora_int_id=lora["id"], lora_path=str(policy.adapter))
               if lora is not None else None)
    results = policy._llm.chat(prompts, params, lora_request=request, use_tqdm=True)
    return [[o.text.strip() for o in r.outputs] for r in results]
