"""Files a round writes for others to read (datasets, the adapter, eval.json), replaced atomically:
a crash leaves the old version or the new one, never half of either."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def replace_dir(path: Path, fill: Callable[[Path], object]) -> None:
    """Write a folder through ``fill(tmp)`` next to ``path``, then swap it in."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    fill(tmp)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Strict JSON (no NaN), written to a temporary file and renamed over ``path``."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str, allow_nan=False))
    os.replace(tmp, path)
