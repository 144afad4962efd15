"""training: SFT then DPO (each when enabled and with enough data) from round N−1's adapter, in
this process or under ``trainer.num_processes`` processes (:mod:`prefloop.training.distributed`).

TRL resumes a phase from its last complete checkpoint and a finished phase is skipped, so a
round killed during training continues where it stopped. The final adapter is copied to
``round-N/adapter`` atomically and registered with its hash. With no data to learn from, the
round keeps the previous policy.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from prefloop.atomic import atomic_dir

from ..config import DPOSettings, SFTSettings
from ..distributed import run_phase
from ..trainers import ADAPTER_WEIGHTS, Phase
from .context import RoundContext
from .files import sha256_file
from .progress import training_bar


def run(ctx: RoundContext) -> None:
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
        with training_bar(ctx.reporter, ctx.number, phase) as feed:
            res = run_phase(phase, t, refs[phase].path, ctx.dir / phase, init_adapter=init, tracker=ctx.tracker,
                            base_dir=ctx.project.root, say=ctx.say, callbacks=[feed])
        phases[phase] = res.to_json()
        init = res.adapter_dir
    adapter_path, adapter_hash = None, None
    if init is not None and phases:
        final = ctx.dir / "adapter"
        src = Path(init)
        if final.resolve() != src.resolve():
            with atomic_dir(final) as tmp:
                shutil.copytree(src, tmp, dirs_exist_ok=True)
        adapter_path, adapter_hash = str(final), sha256_file(final / ADAPTER_WEIGHTS)
        ctx.register_artifact("adapter", final, adapter_hash, {"phases": list(phases), "base_model": t.model.source})
    elif init is not None:
        adapter_path = init  # nothing to learn from this round: keep the previous policy
        notes.append("no training data: the previous round's adapter is kept")
        adapter_hash = sha256_file(Path(init) / ADAPTER_WEIGHTS)
    else:
        notes.append("no training data: the policy stays the base model")
    ctx.write(adapter_path=adapter_path, adapter_hash=adapter_hash, metrics={"training": {"phases": phases, "notes": notes}})
