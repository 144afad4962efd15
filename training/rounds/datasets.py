"""building_datasets: the SFT and DPO datasets of the round's label window, saved and registered.

Datasets are content-hashed: one that is already registered with the same hash (and on disk) is
not written again. The round state records where each dataset is (what the training state
reads); the metrics report rows, hash and rows by source.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from prefloop.atomic import atomic_dir
from prefloop.feedback.export import build_dpo_dataset, build_sft_dataset, dataset_hash
from prefloop.feedback.store.models import Artifact, Round
from prefloop.judges.trust import excluded_labels, untrusted_judges

from .context import RoundContext
from .state import DatasetRef

if TYPE_CHECKING:
    from datasets import Dataset


def window(ctx: RoundContext) -> list[int]:
    """Ids of the rounds whose labels this round trains on (the last ``trainer.data_rounds``; 0: all)."""
    k = ctx.training.trainer.data_rounds
    with ctx.store.session() as s:
        q = select(Round.id).where(Round.number <= ctx.number, Round.number >= 1)
        if k > 0:
            q = q.where(Round.number > ctx.number - k)
        return list(s.scalars(q))


def run(ctx: RoundContext) -> None:
    t = ctx.training
    rounds = window(ctx)
    agg = ctx.cfg.aggregation
    trust = ctx.cfg.judges.trust
    untrusted = untrusted_judges(ctx.store, trust)
    built = {
        "dpo": build_dpo_dataset(ctx.store, round_ids=rounds, config=agg, sources=t.dpo.sources,
                                 exclude_judges=untrusted) if t.dpo.enabled else None,
        "sft": build_sft_dataset(ctx.store, round_ids=rounds, config=agg, sources=t.sft.sources,
                                 exclude_judges=untrusted) if t.sft.enabled else None,
    }
    summary: dict[str, dict[str, object]] = {}
    refs: dict[str, DatasetRef] = {}
    for kind, ds in built.items():
        if ds is None:
            continue
        digest = dataset_hash(ds)
        path = ctx.dir / "datasets" / kind
        summary[kind] = {"rows": len(ds), "sha256": digest, "by_source": dict(Counter(ds["source"])) if len(ds) else {}}
        refs[kind] = DatasetRef(path=str(path), sha256=digest, rows=len(ds))
        if len(ds) == 0:
            continue
        _save(ctx, kind, ds, digest, path)
    # labels of untrusted judges (judges.trust) stay out; how many, per judge and kind
    excluded = excluded_labels(ctx.store, untrusted, round_ids=rounds)
    ctx.write(change=lambda st: st.update(datasets=refs, data_rounds=rounds),
              metrics={"datasets": summary, "excluded_untrusted": excluded})


def _save(ctx: RoundContext, kind: str, ds: Dataset, digest: str, path: Path) -> None:
    with ctx.store.session() as s:
        same = s.scalar(select(Artifact).where(Artifact.round_id == ctx.round_id, Artifact.kind == f"{kind}-dataset",
                                               Artifact.sha256 == digest))
    if same is not None and (path / "dataset_info.json").is_file():
        return
    with atomic_dir(path) as tmp:
        ds.save_to_disk(str(tmp))
    ctx.register_artifact(f"{kind}-dataset", path, digest, {"rows": len(ds)})
