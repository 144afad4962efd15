"""prefloop's cache of folders built once: the converted SmolLM2, the tiny test models, the unzipped MiniLM.

Several processes may ask for the same folder at the same time (two CLI calls, a round and its
evaluator, experiment workers), and a build may be killed half-way (Ctrl-C, SIGKILL, a full disk).
So every cached folder is built the same way: into a temporary sibling, under a file lock, and
renamed into place only when complete. A folder is then complete or absent, it is built once
however many processes race for it, and a killed build costs a rebuild, never a broken model.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from prefloop.atomic import atomic_dir


def cache_dir() -> Path:
    """``$PREFLOOP_CACHE`` or ``~/.cache/prefloop``."""
    root = os.environ.get("PREFLOOP_CACHE") or Path.home() / ".cache" / "prefloop"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached_folder(target: Path, marker: str | tuple[str, ...], build: Callable[[Path], None]) -> Path:
    """``target``, built first with ``build(tmp)`` (``tmp``: an empty folder beside it) unless it
    already holds every ``marker`` file.

    The check is repeated under ``target + ".lock"``, so that a process that waited for another's
    build uses it instead of building again; ``tmp`` replaces ``target`` only when ``build``
    returns and left the markers, and is removed when it raises.
    """
    markers = (marker,) if isinstance(marker, str) else marker
    if _complete(target, markers):
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if _complete(target, markers):
            return target
        _remove_leftovers(target)
        with atomic_dir(target) as tmp:
            build(tmp)
            missing = [m for m in markers if not (tmp / m).is_file()]
            if missing:
                raise RuntimeError(f"building {target.name} left no {', '.join(missing)}")
    return target


def _complete(target: Path, markers: tuple[str, ...]) -> bool:
    return all((target / m).is_file() for m in markers)


def _remove_leftovers(target: Path) -> None:
    """Remove the temporary folders of builds of ``target`` that were killed (called under its lock:
    no build of it is running). The names are ``atomic_dir``'s and those of earlier prefloop versions."""
    name = re.escape(target.name)
    leftover = re.compile(rf"\.{name}\.[0-9a-f]{{12}}\.(tmp|old)|{name}\.tmp(-[0-9a-f]{{8}})?")
    for p in target.parent.iterdir():
        if leftover.fullmatch(p.name) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
