"""The content hash a round registers for the files it produces (datasets, the adapter).

The files themselves are written atomically through :mod:`prefloop.atomic`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
