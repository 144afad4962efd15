"""Reading an offline wandb run back: what `wandb sync` would upload.

wandb 0.31 writes an offline run as ``run-*.wandb``, a log of protobuf records in LevelDB's log
framing (a 7-byte ``:W&B`` header, 32 KiB blocks, each record split into FULL / FIRST / MIDDLE /
LAST fragments behind a 7-byte header: CRC, length, type), and no longer ships the Python reader
(``wandb.sdk.internal.datastore``). These few lines read it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[Any]:
    """The ``wandb_internal_pb2.Record``s of an offline run file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb run file"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending + chunk if kind == LAST else chunk)
            pending = b""
            yield record
        elif kind in (FIRST, MIDDLE):
            pending += chunk


@dataclass
class OfflineRun:
    config: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, list[str]] = field(default_factory=dict)  # name → the paths in its manifest
    history: dict[str, Any] = field(default_factory=dict)  # logged key → its last value (media flattened: "report/_type")
    raw: bytes = b""  # the whole run file, to look for what must never be in it


def read_offline_run(run_dir: Path) -> OfflineRun:
    """Config (run record and later updates, merged), artifact manifests and logged values of the
    one offline run under ``run_dir/wandb``.

    ``run.finish()`` returns once the service has the run's last record, not once its writer has
    flushed the file; tearing the service down waits for that (the next ``wandb.init`` starts a
    new one), so the file read here is whole."""
    import wandb

    wandb.teardown()
    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    out = OfflineRun(raw=path.read_bytes())
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind in ("run", "config"):
            for item in (rec.run.config if kind == "run" else rec.config).update:
                out.config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "artifact":
            out.artifacts[rec.artifact.name] = [entry.path for entry in rec.artifact.manifest.contents]
        elif kind == "history":
            out.history.update({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in rec.history.item})
    return out
