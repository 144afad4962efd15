"""training: SFT then DPO (each when enabled and with enough data) from round N−1's adapter.

TRL resumes a phase from its last complete checkpoint and a finished phase is skipped, so a
round killed during training continues where it stopped. The final adapter is copied to
``round-N/adapter`` atomically and registered with its hash. With no data to learn from, the
round keeps the previous policy.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..config import DPOSettings, SFTSettings
from ..trainers import ADAPTER_WEIGHTS, Phase, train_phase
from .context import RoundContext
from .files import replace_dir, sha256_file


def run(ctx: RoundContext) -> None:
    from datasets import load_from_disk  # heavy (pyarrow and more): only where a dataset is loaded

    t = ctx.training
    refs = ctx.state().datasets
    init = ctx.policy_adapter()
    phases: dict[str, Any] = {}
    notes = []
    plan: tuple[tuple[Phase, SFTSettings | DPOSettings, int], ...] = (("sft", t.sft, t.sft.min_examples),
                                                                     ("dpo", t.dpo, t.dpo.min_pairs))
    for phase, settings, floor in plan:
        rows = refs[phase].rows if phase in refs else 0
        if not settings.enabled:
            continue
        if rows < floor:
            notes.append(f"{phase} skipped: {rows} example(s), fewer than {floor}")
            continue
        ds = load_from_disk(refs[phase].path)
        res = train_phase(phase, t, ds, ctx.dir / phase, init_adapter=init, callbacks=[ctx.tracker.callback(phase)])
        phases[phase] = res.to_json()
        init = res.adapter_dir
    adapter_path, adapter_hash = None, None
    if init is not None and phases:
        final = ctx.dir / "adapter"
        src = Path(init)
        if final.resolve() != src.resolve():
            replace_dir(final, lambda tmp: shutil.copytree(src, tmp))
        adapter_path, adapter_hash = str(final), sha256_file(final / ADAPTER_WEIGHTS)
        ctx.register_artifact("adapter", final, adapter_hash, {"phases": list(phases), "base_model": t.model.source})
    elif init is not None:
        adapter_path = init  # nothing to learn from this round: keep the previous policy
        notes.append("no training data: the previous round's adapter is kept")
        adapter_hash = sha256_file(Path(init) / ADAPTER_WEIGHTS)
    else:
        notes.append("no training data: the policy stays the base model")
    ctx.write(adapter_path=adapter_path, adapter_hash=adapter_hash, metrics={"training": {"phases": phases, "notes": notes}})
    for n in notes:
        ctx.say(f"[yellow]{n}[/]")
