"""The round orchestrator: a state machine persisted in the store's ``rounds`` table.

A round moves through::

    created → generating → judging → waiting → building_datasets → training → evaluating → done

Round 0 is the baseline (the base model, no adapter): ``created → evaluating → done``. Each
state's work is idempotent, so ``prefloop round resume`` after a crash (even ``kill -9`` during
training) re-enters the recorded state and finishes it without redoing finished work or losing
labels:

- generating: a prompt's candidates are stored in the same transaction; prompts that have them
  are skipped;
- judging: tasks are created in one transaction per step; verdicts come from the judge cache;
- waiting: the waited-for tasks and the start time are stored, so the deadline does not restart;
- building datasets: content-hashed; an unchanged dataset is not written again;
- training: TRL resumes from the last complete checkpoint; a finished phase is skipped;
- evaluating: eval samples are stored like candidates; verdicts are cached.

Round N samples with round N−1's adapter, trains round N's adapter from it (the DPO reference
stays the base model), and is evaluated against round N−1 and round 0.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import shutil
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from prefloop.errors import ConfigError, NotFoundError, PrefloopError

from .config import TrainingConfig

STATES = ("created", "generating", "judging", "waiting", "building_datasets", "training", "evaluating", "done")
BASELINE_STATES = ("created", "evaluating", "done")
PURPOSE_TRAIN, PURPOSE_EVAL = "train", "eval"

#: The demo and tests plug scripted humans in here: ``humans(project, round_id, task_ids)`` is
#: called when a round starts waiting, with the tasks it waits for.
HumansHook = Callable[[Any, int, list[int]], None]


class RoundError(PrefloopError):
    """A round cannot start or continue."""


@dataclass
class RoundSummary:
    id: int
    number: int
    state: str
    metrics: dict[str, Any]
    adapter_path: str | None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def config_snapshot(project_config: Any) -> dict[str, Any]:
    """The config a round runs with (configs hold no secrets; a store URL's password is masked anyway)."""
    from .tracking import mask_urls

    return mask_urls(project_config.model_dump(mode="json"))


class Orchestrator:
    """Runs and resumes rounds of one project."""

    def __init__(self, project: Any, *, progress: bool = True, console: Any = None, humans: HumansHook | None = None) -> None:
        from rich.console import Console

        self.project = project
        self.store = project.store
        self.progress = progress
        self.console = console or Console(stderr=True)
        self.humans = humans
        self._cfg: Any = None  # the running round's ProjectConfig
        self._tracker: Any = None

    # ------------------------------------------------------------------ public
    def rounds(self) -> list[RoundSummary]:
        from prefloop.feedback.models import Round

        with self.store.session() as s:
            return [RoundSummary(r.id, r.number, r.state, dict(r.metrics or {}), r.adapter_path)
                    for r in s.scalars(select(Round).order_by(Round.number))]

    def unfinished(self) -> RoundSummary | None:
        return next((r for r in self.rounds() if r.state != "done"), None)

    def run_next(self) -> list[RoundSummary]:
        """Run the next round (the first call also evaluates the base model as round 0)."""
        self._check_config(self.project.config)
        pending = self.unfinished()
        if pending is not None:
            raise RoundError(
                f"round {pending.number} is unfinished (state {pending.state})",
                hint="finish it with `prefloop round resume`",
            )
        done: list[RoundSummary] = []
        if not self.rounds():
            done.append(self.run(self._create_round(0)))
        number = max(r.number for r in self.rounds()) + 1
        done.append(self.run(self._create_round(number)))
        return done

    def ensure_baseline(self) -> RoundSummary:
        """Round 0 (evaluate the base model), run or resumed as needed."""
        existing = next((r for r in self.rounds() if r.number == 0), None)
        if existing is None:
            self._check_config(self.project.config)
            return self.run(self._create_round(0))
        return existing if existing.state == "done" else self.run(existing.id)

    def resume(self, number: int | None = None) -> RoundSummary:
        """Continue an unfinished round (the given one, or the first unfinished)."""
        rounds = self.rounds()
        if number is None:
            target = next((r for r in rounds if r.state != "done"), None)
            if target is None:
                raise RoundError("no unfinished round to resume", hint="start one with `prefloop round run`")
        else:
            target = next((r for r in rounds if r.number == number), None)
            if target is None:
                raise NotFoundError(f"no round {number}", hint=f"rounds: {[r.number for r in rounds] or 'none yet'}")
            if target.state == "done":
                raise RoundError(f"round {number} is already done", hint="`prefloop report` shows its results")
        return self.run(target.id)

    # ------------------------------------------------------------------ round rows
    def _check_config(self, cfg: Any) -> None:
        t: TrainingConfig = cfg.training
        names = {j.name for j in cfg.judges.panel}
        for n in t.judges or []:
            if n not in names:
                raise ConfigError(f"training.judges names {n!r}, which is not in judges.panel", hint=f"known judges: {sorted(names) or 'none'}")
        for key, n in (("training.evaluation.judge", t.evaluation.judge), ("training.pairing.scorer", t.pairing.scorer)):
            if n is not None and n not in names:
                raise ConfigError(f"{key} is {n!r}, which is not in judges.panel", hint=f"known judges: {sorted(names) or 'none'}")
        if t.evaluation.oracle:
            from .evaluation import load_oracle

            load_oracle(t.evaluation.oracle)

    def _create_round(self, number: int) -> int:
        from filelock import FileLock

        from prefloop.feedback.models import Round

        self.project.runs_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.project.runs_dir / ".rounds.lock")), self.store.session() as s:
            if s.scalar(select(Round.id).where(Round.number == number)) is not None:
                raise RoundError(f"round {number} already exists", hint="`prefloop round status` lists the rounds")
            zero = s.scalar(select(Round).where(Round.number == 0))
            loop_id = (zero.metrics or {}).get("loop_id") if zero is not None else None
            cfg = self.project.config
            row = Round(
                number=number, state="created", base_model=cfg.training.model.source,
                config=config_snapshot(cfg), config_hash=cfg.fingerprint(),
                metrics={"loop_id": loop_id or uuid.uuid4().hex[:10], "transitions": [{"state": "created", "at": _now()}], "seconds": {}},
            )
            s.add(row)
            s.flush()
            return row.id

    def _load(self, round_id: int) -> Any:
        from prefloop.feedback.models import Round

        with self.store.session() as s:
            r = s.get(Round, round_id)
            if r is None:
                raise NotFoundError(f"round id {round_id} does not exist")
            s.expunge(r)
            return r

    def _update(self, round_id: int, **fields: Any) -> None:
        from prefloop.feedback.models import Round

        with self.store.session() as s:
            r = s.get(Round, round_id)
            metrics_patch = fields.pop("metrics_patch", None)
            for k, v in fields.items():
                setattr(r, k, v)
            if metrics_patch:
                r.metrics = {**(r.metrics or {}), **metrics_patch}

    def _metrics(self, round_id: int) -> dict[str, Any]:
        return dict(self._load(round_id).metrics or {})

    def _enter(self, round_id: int, state: str, *, resumed: bool = False) -> None:
        m = self._metrics(round_id)
        entry: dict[str, Any] = {"state": state, "at": _now(), "pid": os.getpid()}
        if resumed:
            entry["resumed"] = True
        self._update(round_id, state=state, error=None, metrics_patch={"transitions": [*m.get("transitions", []), entry]})

    def _add_seconds(self, round_id: int, state: str, seconds: float) -> None:
        m = self._metrics(round_id)
        sec = dict(m.get("seconds") or {})
        sec[state] = round(float(sec.get(state, 0.0)) + seconds, 3)
        self._update(round_id, metrics_patch={"seconds": sec})

    def round_dir(self, number: int) -> Path:
        return self.project.runs_dir / f"round-{number}"

    # ------------------------------------------------------------------ the machine
    def run(self, round_id: int) -> RoundSummary:
        """Drive one round from its recorded state to ``done``."""
        from filelock import FileLock, Timeout

        from prefloop.config import ProjectConfig

        r = self._load(round_id)
        rdir = self.round_dir(r.number)
        rdir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(rdir / ".lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise RoundError(f"round {r.number} is running in another process", hint="wait for it, or stop it first") from None
        try:
            snapshot = dict(r.config or {})
            snapshot["store"] = self.project.config.store.model_dump(mode="json")  # the live URL, not the masked one
            self._cfg = ProjectConfig.model_validate(snapshot)
            self._check_config(self._cfg)
            states = BASELINE_STATES if r.number == 0 else STATES
            self._tracker = self._make_tracker(r)
            self._tracker.start()
            state = r.state
            resumed = state != "created"
            if resumed:
                self._say(f"round {r.number}: resuming at [bold]{state}[/]")
            failed = True
            try:
                while state != "done":
                    if state == "created":
                        nxt = states[1]
                    else:
                        self._enter(round_id, state, resumed=resumed)
                        resumed = False
                        self._say(f"round {r.number}: [bold]{state}[/]")
                        start = time.perf_counter()
                        try:
                            getattr(self, f"_do_{state}")(round_id)
                        finally:
                            self._add_seconds(round_id, state, time.perf_counter() - start)
                        nxt = states[states.index(state) + 1]
                    if nxt == "done":
                        self._finish(round_id)
                        self._enter(round_id, "done")
                    else:
                        self._update(round_id, state=nxt)
                    state = nxt
                failed = False
            except BaseException as exc:
                msg = exc.message if isinstance(exc, PrefloopError) else f"{type(exc).__name__}: {exc}"
                self._update(round_id, error=msg[:4000])
                raise
            finally:
                self._tracker.finish(failed=failed)
        finally:
            lock.release()
        final = self._load(round_id)
        return RoundSummary(final.id, final.number, final.state, dict(final.metrics or {}), final.adapter_path)

    def _say(self, text: str) -> None:
        if self.progress:
            self.console.print(text)

    def _make_tracker(self, r: Any) -> Any:
        from .tracking import RoundTracker

        w = self._cfg.training.wandb
        run_dir = Path(os.environ.get("WANDB_DIR") or self.project.runs_dir)
        return RoundTracker(w, run_dir=run_dir, loop_id=r.metrics.get("loop_id", "loop"), group=w.group or self._cfg.name,
                            round_number=r.number, config=dict(r.config or {}))

    @property
    def t(self) -> TrainingConfig:
        return self._cfg.training

    # ------------------------------------------------------------------ helpers
    def _prev(self, number: int) -> Any | None:
        from prefloop.feedback.models import Round

        with self.store.session() as s:
            r = s.scalar(select(Round).where(Round.number == number - 1))
            if r is not None:
                s.expunge(r)
            return r

    def _policy_adapter(self, number: int) -> str | None:
        """The adapter round ``number`` samples with (round N−1's; none for round 1)."""
        prev = self._prev(number)
        return prev.adapter_path if prev is not None else None

    def _prompts(self, split: str) -> dict[int, Any]:
        from prefloop.feedback.prompts import visible_prompts

        with self.store.session() as s:
            rows = s.scalars(visible_prompts(split)).all()
            for p in rows:
                s.expunge(p)
            return {p.id: p for p in rows}

    def _generations(self, round_id: int, purpose: str) -> dict[int, list[tuple[int, str]]]:
        from prefloop.feedback.models import Generation

        out: dict[int, list[tuple[int, str]]] = defaultdict(list)
        with self.store.session() as s:
            for g in s.execute(select(Generation.id, Generation.prompt_id, Generation.text, Generation.meta)
                               .where(Generation.round_id == round_id).order_by(Generation.id)):
                if (g.meta or {}).get("purpose") == purpose:
                    out[g.prompt_id].append((g.id, g.text))
        return dict(out)

    def _oracle(self) -> Any:
        from .evaluation import load_oracle

        return load_oracle(self.t.evaluation.oracle) if self.t.evaluation.oracle else None

    def _fill_generations(self, round_id: int, number: int, prompts: dict[int, Any], purpose: str, sampling: Any,
                          adapter: str | None, description: str) -> None:
        """Generate what is missing: ``sampling.n`` outputs per prompt, one transaction per batch."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        from prefloop.feedback.models import Generation

        from .generation import Policy, adapter_fingerprint, generate

        have = self._generations(round_id, purpose)
        missing = [pid for pid in prompts if len(have.get(pid, [])) < sampling.n]
        if not missing:
            return
        oracle = self._oracle()
        policy = Policy(self.t.model, adapter)
        model_name = self.t.model.source + (f"@adapter:{adapter_fingerprint(adapter)[:12]}" if adapter else "")
        params = {**sampling.as_params(), "adapter": adapter, "round": number}
        per_call = max(1, self.t.generation.batch_size // sampling.n)
        columns = [TextColumn(f"round {number} · {description}"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"),
                   TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=self.console, disable=not self.progress) as bar:
            job = bar.add_task(description, total=len(missing) * sampling.n)
            for start in range(0, len(missing), per_call):
                chunk = missing[start : start + per_call]
                need = {pid: sampling.n - len(have.get(pid, [])) for pid in chunk}
                msgs = [prompts[pid].as_messages() for pid in chunk]
                outs = generate(policy, msgs, sampling, batch_size=self.t.generation.batch_size)
                with self.store.session() as s:
                    for pid, texts in zip(chunk, outs, strict=True):
                        for text in texts[: need[pid]]:
                            meta: dict[str, Any] = {"purpose": purpose}
                            if oracle is not None:
                                meta["oracle_score"] = float(oracle(prompts[pid].meta or {}, prompts[pid].as_messages(), text))
                            s.add(Generation(prompt_id=pid, round_id=round_id, text=text, model=model_name, params=params, meta=meta))
                bar.advance(job, sum(need.values()))
        policy.unload()

    def _label_judges(self) -> list[str]:
        cfg = self._cfg
        if self.t.judges is not None:
            return list(self.t.judges)
        if cfg.judges.default:
            return [cfg.judges.default]
        return [j.name for j in cfg.judges.panel]

    def _judges(self) -> dict[str, Any]:
        from prefloop.judges import judges_from_config

        return judges_from_config(self._cfg, base_dir=self.project.root)

    # ------------------------------------------------------------------ states
    def _do_generating(self, round_id: int) -> None:
        from .generation import Sampling

        r = self._load(round_id)
        prompts = self._prompts("train")
        if not prompts:
            raise RoundError("the store has no train prompts", hint="import some: `prefloop import prompts.jsonl`")
        chosen = (r.metrics or {}).get("train_prompt_ids")
        if chosen is None:
            ids = sorted(prompts)
            k = self.t.generation.prompts_per_round
            if k is not None and k < len(ids):
                ids = sorted(random.Random(f"{self.t.generation.seed}:{r.number}").sample(ids, k))
            chosen = ids
            self._update(round_id, metrics_patch={"train_prompt_ids": chosen})
        selected = {pid: prompts[pid] for pid in chosen if pid in prompts}
        sampling = Sampling.from_settings(self.t.generation, seed=self.t.generation.seed + r.number)
        self._fill_generations(round_id, r.number, selected, PURPOSE_TRAIN, sampling, self._policy_adapter(r.number), "candidates")

    def _do_judging(self, round_id: int) -> None:
        from prefloop.judges.runner import judge_round

        from .pairing import create_pair_tasks, create_score_tasks, judge_scores, scorer_name

        r = self._load(round_id)
        gens = self._generations(round_id, PURPOSE_TRAIN)
        candidates = {pid: [g for g, _ in items] for pid, items in gens.items()}
        judges = self._judges()
        stats: dict[str, Any] = {}
        scores = None
        if self.t.pairing.strategy == "best_vs_worst":
            from prefloop.feedback.models import Task

            scorer = scorer_name(self.project, self.t, judges)
            create_score_tasks(self.project, self.t, round_id, candidates)
            with self.store.session() as s:
                ids = [t.id for t in s.scalars(select(Task).where(Task.round_id == round_id, Task.kind == "rate"))
                       if (t.meta or {}).get("purpose") == "score"]
            st = judge_round(self.project, judges[scorer], round_id, progress=self.progress, task_ids=ids)
            stats[f"scorer:{scorer}"] = {"verdicts": st.verdicts, "cached": st.cached, "failed": st.failed, "cost": st.cost}
            scores = judge_scores(self.store, round_id, scorer)
        pairing = create_pair_tasks(self.project, self.t, round_id, r.number, candidates, scores)
        for name in self._label_judges():
            st = judge_round(self.project, judges[name], round_id, progress=self.progress)
            stats[name] = {"verdicts": st.verdicts, "cached": st.cached, "failed": st.failed, "cost": st.cost,
                           "seconds": round(st.seconds, 3)}
        tasks = Counter()
        from prefloop.feedback.models import Task

        with self.store.session() as s:
            for kind in s.scalars(select(Task.kind).where(Task.round_id == round_id)):
                tasks[kind] += 1
        self._update(round_id, metrics_patch={"judging": stats, "tasks": dict(tasks),
                                              **({"pairing_skipped_prompts": pairing.skipped_prompts} if pairing.created else {})})

    def _do_waiting(self, round_id: int) -> None:
        w = self.t.wait
        if not w.enabled:
            return
        if self._cfg.queue.human_queue == "argilla":
            self._wait_argilla(round_id)
            return
        self._wait_builtin(round_id)

    def _wait_targets(self, round_id: int) -> list[int]:
        from prefloop.feedback.models import Task, TaskStatus

        m = self._metrics(round_id)
        if "wait_tasks" in m:
            return list(m["wait_tasks"])
        with self.store.session() as s:
            ids = list(s.scalars(
                select(Task.id).where(Task.round_id == round_id, Task.overlap > 0, Task.status == TaskStatus.OPEN.value)
                .order_by(Task.priority.desc(), Task.id)
            ))
        if self.t.wait.max_tasks is not None:
            ids = ids[: self.t.wait.max_tasks]
        self._update(round_id, metrics_patch={"wait_tasks": ids, "wait_started_at": time.time()})
        return ids

    def _short_of_labels(self, task_ids: list[int]) -> list[int]:
        from sqlalchemy import func

        from prefloop.feedback.models import Annotation, AnnotationStatus, Annotator, AnnotatorKind, Task

        if not task_ids:
            return []
        with self.store.session() as s:
            counts = dict(s.execute(
                select(Annotation.task_id, func.count()).join(Annotator, Annotator.id == Annotation.annotator_id)
                .where(Annotation.task_id.in_(task_ids), Annotator.kind == AnnotatorKind.HUMAN.value,
                       Annotation.status == AnnotationStatus.SUBMITTED.value)
                .group_by(Annotation.task_id)
            ).all())
            overlap = dict(s.execute(select(Task.id, Task.overlap).where(Task.id.in_(task_ids))).all())
        k = self.t.wait.labels_per_task
        return [t for t in task_ids if counts.get(t, 0) < (k if k is not None else overlap[t])]

    def _wait_builtin(self, round_id: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        w = self.t.wait
        targets = self._wait_targets(round_id)
        started = float(self._metrics(round_id).get("wait_started_at", time.time()))
        srv = self._cfg.server
        self._say(f"waiting for human labels on {len(targets)} task(s): annotate at [link]http://{srv.host}:{srv.port}/[/link]"
                  " (`prefloop serve`), or in the terminal with `prefloop annotate`")
        if self.humans is not None:
            self.humans(self.project, round_id, targets)
        deadline = started + w.deadline_minutes * 60 if w.deadline_minutes else None
        with Progress(TextColumn("human labels"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=self.console, disable=not self.progress) as bar:
            job = bar.add_task("waiting", total=len(targets))
            while True:
                short = self._short_of_labels(targets)
                bar.update(job, completed=len(targets) - len(short))
                if not short:
                    break
                if deadline is not None and time.time() >= deadline:
                    self._say(f"[yellow]deadline reached[/]: {len(short)} task(s) still short of human labels; judges' labels stand in")
                    break
                time.sleep(w.poll_seconds)
        self._close_unlabelled(round_id)

    def _wait_argilla(self, round_id: int) -> None:
        try:
            from prefloop.feedback.argilla_bridge import sync_until
        except ImportError as exc:
            raise RoundError(f"the argilla bridge is not installed: {exc}", hint="pip install 'argilla>=2.8,<3'") from None
        w = self.t.wait
        started = float(self._metrics(round_id).get("wait_started_at") or time.time())
        self._update(round_id, metrics_patch={"wait_started_at": started})
        timeout = max(0.0, started + w.deadline_minutes * 60 - time.time()) if w.deadline_minutes else 10 * 365 * 86400.0
        self._say(f"waiting for human labels in Argilla ({self._cfg.argilla.api_url})")
        result = sync_until(self.project, round_id, min_submitted=w.labels_per_task, timeout=timeout, interval=w.poll_seconds)
        self._update(round_id, metrics_patch={"argilla": {"done": result.done, "pulls": result.pulls, "waiting": len(result.waiting_tasks)}})
        self._close_unlabelled(round_id)

    def _close_unlabelled(self, round_id: int) -> None:
        """Take the round's tasks nobody labelled off the human queue (their judge labels remain)."""
        from sqlalchemy import update

        from prefloop.feedback.models import Task, TaskStatus

        if not self.t.wait.cancel_unlabelled:
            return
        with self.store.session() as s:
            s.execute(update(Task).where(Task.round_id == round_id, Task.status == TaskStatus.OPEN.value, Task.n_done == 0)
                      .values(status=TaskStatus.CANCELLED.value))

    def _window(self, number: int) -> list[int]:
        """Ids of the rounds whose labels round ``number`` trains on."""
        from prefloop.feedback.models import Round

        k = self.t.trainer.data_rounds
        with self.store.session() as s:
            q = select(Round.id).where(Round.number <= number, Round.number >= 1)
            if k > 0:
                q = q.where(Round.number > number - k)
            return list(s.scalars(q))

    def _do_building_datasets(self, round_id: int) -> None:
        from prefloop.feedback.export import build_dpo_dataset, build_sft_dataset, dataset_hash

        r = self._load(round_id)
        window = self._window(r.number)
        agg = self._cfg.aggregation
        built = {
            "dpo": build_dpo_dataset(self.store, round_ids=window, config=agg, sources=self.t.dpo.sources) if self.t.dpo.enabled else None,
            "sft": build_sft_dataset(self.store, round_ids=window, config=agg, sources=self.t.sft.sources) if self.t.sft.enabled else None,
        }
        info: dict[str, Any] = {}
        for kind, ds in built.items():
            if ds is None:
                continue
            digest = dataset_hash(ds)
            path = self.round_dir(r.number) / "datasets" / kind
            info[kind] = {"rows": len(ds), "sha256": digest, "path": str(path),
                          "by_source": dict(Counter(ds["source"])) if len(ds) else {}}
            if len(ds) == 0:
                continue
            self._register_dataset(round_id, kind, ds, digest, path)
        self._update(round_id, metrics_patch={"datasets": info, "data_rounds": window})

    def _register_dataset(self, round_id: int, kind: str, ds: Any, digest: str, path: Path) -> None:
        from sqlalchemy import delete

        from prefloop.feedback.models import Artifact

        with self.store.session() as s:
            same = s.scalar(select(Artifact).where(Artifact.round_id == round_id, Artifact.kind == f"{kind}-dataset",
                                                   Artifact.sha256 == digest))
        if same is not None and (path / "dataset_info.json").is_file():
            return
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        ds.save_to_disk(str(tmp))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        with self.store.session() as s:
            s.execute(delete(Artifact).where(Artifact.round_id == round_id, Artifact.kind == f"{kind}-dataset"))
            s.add(Artifact(round_id=round_id, kind=f"{kind}-dataset", path=str(path), sha256=digest, meta={"rows": len(ds)}))

    def _do_training(self, round_id: int) -> None:
        from datasets import load_from_disk

        from prefloop.feedback.models import Artifact

        from .trainers import ADAPTER_WEIGHTS, train_phase

        r = self._load(round_id)
        m = dict(r.metrics or {})
        ds_info = m.get("datasets", {})
        rdir = self.round_dir(r.number)
        init = self._policy_adapter(r.number)
        phases: dict[str, Any] = {}
        notes = []
        for phase, settings, floor in (("sft", self.t.sft, self.t.sft.min_examples), ("dpo", self.t.dpo, self.t.dpo.min_pairs)):
            rows = int(ds_info.get(phase, {}).get("rows", 0))
            if not settings.enabled:
                continue
            if rows < floor:
                notes.append(f"{phase} skipped: {rows} example(s), fewer than {floor}")
                continue
            ds = load_from_disk(ds_info[phase]["path"])
            res = train_phase(phase, self.t, ds, rdir / phase, init_adapter=init, callbacks=[self._tracker.callback(phase)])
            phases[phase] = res.to_json()
            init = res.adapter_dir
        adapter_path, adapter_hash = None, None
        if phases:
            final = rdir / "adapter"
            src = Path(init)
            if final.resolve() != src.resolve():
                tmp = final.with_name("adapter.tmp")
                if tmp.exists():
                    shutil.rmtree(tmp)
                shutil.copytree(src, tmp)
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
            adapter_path, adapter_hash = str(final), sha256_file(final / ADAPTER_WEIGHTS)
            from sqlalchemy import delete

            with self.store.session() as s:
                s.execute(delete(Artifact).where(Artifact.round_id == round_id, Artifact.kind == "adapter"))
                s.add(Artifact(round_id=round_id, kind="adapter", path=adapter_path, sha256=adapter_hash,
                               meta={"phases": list(phases), "base_model": self.t.model.source}))
        elif init is not None:
            adapter_path = init  # nothing to learn from this round: keep the previous policy
            notes.append("no training data: the previous round's adapter is kept")
            adapter_hash = sha256_file(Path(init) / ADAPTER_WEIGHTS)
        else:
            notes.append("no training data: the policy stays the base model")
        self._update(round_id, adapter_path=adapter_path, adapter_hash=adapter_hash,
                     metrics_patch={"training": {"phases": phases, "notes": notes}})
        for n in notes:
            self._say(f"[yellow]{n}[/]")

    def _eval_judge(self, judges: dict[str, Any]) -> tuple[str | None, Any]:
        from prefloop.judges.base import PairwiseJudge

        name = self.t.evaluation.judge or self._cfg.judges.default
        if name is None:
            name = next((n for n, j in judges.items() if isinstance(j, PairwiseJudge)), None)
        if name is None:
            return None, None
        judge = judges[name]
        if not isinstance(judge, PairwiseJudge):
            raise ConfigError(f"the evaluation judge {name!r} cannot compare two answers", hint="set training.evaluation.judge")
        from prefloop.judges.runner import _ensure_cache

        _ensure_cache(judge, self.store)  # eval verdicts are cached like labelling ones
        return name, judge

    def _do_evaluating(self, round_id: int) -> None:
        from prefloop.feedback.models import Round

        from .evaluation import mean_or_none, win_rate
        from .generation import Sampling

        r = self._load(round_id)
        ev = self.t.evaluation
        if not ev.enabled:
            return
        prompts = self._prompts("eval")
        if ev.max_prompts is not None:
            prompts = dict(list(prompts.items())[: ev.max_prompts])
        if not prompts:
            self._update(round_id, metrics_patch={"eval": {"note": "no eval prompts (import some with split eval)"}})
            return
        sampling = Sampling.from_settings(self.t.generation, n=ev.samples_per_prompt, temperature=ev.temperature,
                                          max_new_tokens=ev.max_new_tokens, seed=self.t.generation.seed + 7919)
        adapter = r.adapter_path if r.number > 0 else None
        self._fill_generations(round_id, r.number, prompts, PURPOSE_EVAL, sampling, adapter, "eval samples")
        mine = self._generations(round_id, PURPOSE_EVAL)
        mine = {pid: v[: ev.samples_per_prompt] for pid, v in mine.items() if pid in prompts}
        result: dict[str, Any] = {"prompts": len(prompts), "samples": sum(len(v) for v in mine.values())}
        from prefloop.feedback.models import Generation

        with self.store.session() as s:
            gmeta = dict(s.execute(select(Generation.id, Generation.meta).where(Generation.round_id == round_id)).all())
        oracle_values = [float(gmeta[g]["oracle_score"]) for v in mine.values() for g, _ in v if "oracle_score" in (gmeta[g] or {})]
        result["oracle_score"] = mean_or_none(oracle_values)
        details: dict[str, Any] = {}
        if r.number > 0:
            judges = self._judges()
            name, judge = self._eval_judge(judges)
            result["judge"] = name
            cost = 0.0
            if judge is not None:
                msgs = {pid: p.as_messages() for pid, p in prompts.items()}
                refs = {pid: p.reference for pid, p in prompts.items()}
                with self.store.session() as s:
                    others = {x.number: x.id for x in s.scalars(select(Round).where(Round.number.in_([0, r.number - 1])))}
                for label, number in (("vs_previous", r.number - 1), ("vs_base", 0)):
                    if number not in others:
                        continue
                    theirs = self._generations(others[number], PURPOSE_EVAL)
                    wr = win_rate(judge, msgs, mine, theirs, number, refs)
                    result[label] = wr.summary()
                    details[label] = wr.details
                    cost += wr.cost
            result["judge_cost"] = cost
        path = self.round_dir(r.number) / "eval.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"summary": result, "details": details}, indent=2, default=str))
        os.replace(tmp, path)
        self._update(round_id, metrics_patch={"eval": result})

    def _finish(self, round_id: int) -> None:
        """Round metrics (labels and cost by source, agreement) and the wandb logging of a finished round."""
        from prefloop.feedback.agreement import judge_human_agreement

        from .roi import round_cost

        r = self._load(round_id)
        m = dict(r.metrics or {})
        cost = round_cost(self.store, round_id, m, self._cfg.cost)
        agreement = {a.judge: {"n": a.n, "agreement": a.agreement, "kappa": a.kappa}
                     for a in judge_human_agreement(self.store, round_ids=[round_id])} if r.number > 0 else {}
        self._update(round_id, metrics_patch={"cost": cost.to_dict(), "agreement": agreement})
        m = self._metrics(round_id)
        tr = self._tracker
        if tr.active:
            ev = m.get("eval") or {}
            summary = {
                "oracle_score": ev.get("oracle_score"),
                "win_rate_vs_previous": (ev.get("vs_previous") or {}).get("win_rate"),
                "win_rate_vs_base": (ev.get("vs_base") or {}).get("win_rate"),
                "labels/human": cost.human_labels, "labels/judge": cost.judge_labels,
                "cost": cost.to_dict(),
                "agreement": {k: v["agreement"] for k, v in agreement.items()},
                "datasets": {k: v.get("rows") for k, v in (m.get("datasets") or {}).items()},
                "seconds": m.get("seconds") or {},
            }
            tr.log_round(summary)
            tr.log_samples(self._sample_rows(round_id))
            for kind, info in (m.get("datasets") or {}).items():
                if info.get("rows"):
                    tr.log_artifact(f"{kind}-dataset-round-{r.number}", "dataset", Path(info["path"]), {"sha256": info["sha256"], "rows": info["rows"]})
            if r.adapter_path and Path(r.adapter_path).parent == self.round_dir(r.number):
                tr.log_artifact(f"adapter-round-{r.number}", "model", Path(r.adapter_path), {"sha256": r.adapter_hash, "base_model": self.t.model.source})

    def _sample_rows(self, round_id: int) -> list[dict[str, Any]]:
        """prompt, candidates, verdicts and the chosen candidate of the round's compare tasks."""
        from prefloop.feedback.aggregate import compare_outcome, load_task_labels
        from prefloop.feedback.models import Generation, Prompt

        tasks = [t for t in load_task_labels(self.store, round_ids=[round_id], kinds=["compare"])][: self.t.wandb.log_samples]
        if not tasks:
            with self.store.session() as s:
                rows = s.execute(select(Prompt, Generation.text, Generation.meta).join(Generation, Generation.prompt_id == Prompt.id)
                                 .where(Generation.round_id == round_id).order_by(Generation.id).limit(self.t.wandb.log_samples)).all()
                return [{"prompt": p.display_text, "output": text, "oracle": (meta or {}).get("oracle_score")} for p, text, meta in rows]
        gen_ids = {g for t in tasks for g in t.generation_ids}
        with self.store.session() as s:
            texts = dict(s.execute(select(Generation.id, Generation.text).where(Generation.id.in_(gen_ids))).all())
            oracle = {gid: (meta or {}).get("oracle_score") for gid, meta in
                      s.execute(select(Generation.id, Generation.meta).where(Generation.id.in_(gen_ids))).all()}
            prompts = {p.id: p.display_text for p in s.scalars(select(Prompt).where(Prompt.id.in_({t.prompt_id for t in tasks})))}
        rows = []
        for t in tasks:
            a, b = t.generation_ids
            o = compare_outcome(t)
            verdicts = "; ".join(f"{lab.annotator}={'A' if str(lab.value.get('choice')) == str(a) else 'B' if str(lab.value.get('choice')) == str(b) else 'tie'}"
                                 for lab in t.labels)
            rows.append({
                "prompt": prompts[t.prompt_id], "candidate_a": texts[a], "candidate_b": texts[b],
                "oracle_a": oracle.get(a), "oracle_b": oracle.get(b), "verdicts": verdicts,
                "chosen": "A" if o.winner == a else "B" if o.winner == b else o.status, "source": o.source,
            })
        return rows
