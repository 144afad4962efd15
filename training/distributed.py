"""Training a phase under several processes with Hugging Face accelerate (DDP, DeepSpeed, FSDP).

The round stays one process: it writes the store, owns the wandb run and decides what to train.
With ``training.trainer.num_processes: N > 1`` (or inside a user's ``accelerate launch``) each phase
is trained by ``accelerate launch --num_processes N -m prefloop.training.distributed JOB``: every rank
loads the saved dataset and trains (gloo on CPU, NCCL on GPUs); the main rank alone writes the
adapter, ``result.json`` and a JSON-lines file of TRL's logs, which the round replays into its wandb
run as they arrive (the workers never open wandb). Checkpoints are the distributed run's own, so a
killed run resumes from the last complete one like a single-process run.

A worker whose round died (``kill -9``) stops by itself: the round holds an exclusive lock on a file
named in the job for as long as it waits, and each worker checks that lock every two seconds.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefloop.errors import ConfigError

from .config import TrainingConfig

if TYPE_CHECKING:
    from .trainers import Phase

#: accelerate configs shipped in ``prefloop/configs/accelerate`` (``training.trainer.accelerate_config``).
ACCELERATE_PRESETS = {
    "ddp": "ddp.yaml",
    "deepspeed-zero2": "deepspeed-zero2.yaml",
    "deepspeed-zero3": "deepspeed-zero3.yaml",
    "fsdp": "fsdp.yaml",
}
JOB = "job.json"
LOG_LINES = "train-log.jsonl"  # TRL's logs, one JSON object per line (main rank)
TRAIN_LOG = "train.log"  # the workers' stdout and stderr (library noise)
#: what a launcher (torchrun, accelerate launch, deepspeed) sets for its ranks.
LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
                "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
                "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_USE_AGENT_STORE",
                "TORCHELASTIC_ERROR_FILE", "TORCH_NCCL_ASYNC_ERROR_HANDLING")
#: set on the round's process when prefloop itself was started by a launcher with N processes.
LAUNCHED_PROCESSES = "PREFLOOP_LAUNCHED_PROCESSES"


# ---------------------------------------------------------------------------- where am I
def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def launched() -> bool:
    """True in one rank of a multi-process launch (``accelerate launch``, ``torchrun``, ``deepspeed``)."""
    return world_size() > 1


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0") or 0) == 0


def local_device(device: str) -> str:
    """``cuda`` → this rank's GPU (``cuda:LOCAL_RANK``) under a launcher; anything else unchanged."""
    if device == "cuda" and launched():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0') or 0)}"
    return device


def guard_launched_cli(say: Callable[[str], None] = print) -> None:
    """``accelerate launch -m prefloop …``: rank 0 drives (store, generation, judges, wandb) and trains
    each phase with the launcher's number of processes; the other ranks leave at once, so nothing
    is done twice. Called first thing by the CLI."""
    if not launched():
        return
    n = world_size()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(n)) or n)
    if local != n:
        raise ConfigError(
            f"prefloop was launched on {n} processes over several machines",
            hint="a round drives one machine; launch the worker yourself per machine: "
                 "accelerate launch … -m prefloop.training.distributed JOB",
        )
    if not is_main_process():
        say(f"rank {os.environ.get('RANK')}: prefloop runs the round on rank 0, which trains on {n} processes; leaving")
        sys.exit(0)
    for key in LAUNCHER_ENV:  # this process is no longer one rank of a group
        os.environ.pop(key, None)
    os.environ[LAUNCHED_PROCESSES] = str(n)


def planned_processes(cfg: TrainingConfig) -> int:
    """Processes a phase trains on: a launcher's count wins over ``trainer.num_processes``."""
    return int(os.environ.get(LAUNCHED_PROCESSES) or cfg.trainer.num_processes)


# ---------------------------------------------------------------------------- accelerate configs
def accelerate_config_file(value: str | None, base_dir: Path | None = None) -> Path | None:
    """A shipped preset name or a path (relative to ``base_dir``) → the YAML file; a missing one is an error."""
    if value is None:
        return None
    if value in ACCELERATE_PRESETS:
        from importlib import resources

        return Path(str(resources.files("prefloop.configs") / "accelerate" / ACCELERATE_PRESETS[value]))
    path = Path(value).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        raise ConfigError(
            f"training.trainer.accelerate_config {value!r} is neither a preset nor a file",
            hint=f"presets: {', '.join(ACCELERATE_PRESETS)}; or the path of an accelerate YAML",
        )
    return path


def load_accelerate_config(path: Path) -> Any:
    """Parse with accelerate's own loader: its config dataclass rejects unknown top-level keys, and
    the keys of ``deepspeed_config``/``fsdp_config`` must be options of ``accelerate launch`` (which
    is where accelerate copies them; it would ignore a misspelt one)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    try:
        config = load_config_from_file(str(path))
    except (TypeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"accelerate config {path}: {first}", hint="see `accelerate config --help`") from None
    options = {a.dest for a in launch_command_parser()._actions}
    for section in ("deepspeed_config", "fsdp_config"):
        for key in getattr(config, section, None) or {}:
            name = key if section != "fsdp_config" or key.startswith("fsdp_") else f"fsdp_{key}"
            if name not in options:
                raise ConfigError(f"accelerate config {path}: unknown key {section}.{key}",
                                  hint="see `accelerate launch --help` for the supported options")
    return config


def check_launch(cfg: TrainingConfig, config_file: Path | None, cuda: bool) -> None:
    """Refuse a launch that cannot run here, with one line (before any process starts)."""
    import importlib.util

    if cuda:
        import torch

        gpus, n = torch.cuda.device_count(), planned_processes(cfg)
        if n > gpus:
            raise ConfigError(f"training.trainer.num_processes is {n} but {gpus} CUDA GPU(s) are visible",
                              hint="one process per GPU: lower num_processes, or set CUDA_VISIBLE_DEVICES")
    if config_file is None:
        return
    ac = load_accelerate_config(config_file)
    distributed = str(getattr(ac.distributed_type, "value", ac.distributed_type))
    if distributed in ("DEEPSPEED", "FSDP", "MEGATRON_LM") and not cuda:
        raise ConfigError(f"training.trainer.accelerate_config {cfg.trainer.accelerate_config!r} ({distributed}) needs CUDA GPUs",
                          hint="on CPU use accelerate_config: ddp (or leave it unset)")
    if distributed == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"training.trainer.accelerate_config {cfg.trainer.accelerate_config!r} needs DeepSpeed",
                          hint="pip install deepspeed")


# ---------------------------------------------------------------------------- the job
@dataclass
class Job:
    """What a worker needs to train one phase (written by the round, read by every rank)."""

    phase: str
    config: dict[str, Any]  # the TrainingConfig, as JSON
    dataset: str  # a datasets.save_to_disk folder
    out: str
    init_adapter: str | None = None
    log_lines: str | None = None
    driver_lock: str | None = None  # held by the round while it waits; None: no watchdog

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> Job:
        return cls(**json.loads(path.read_text()))


def launch_command(job: Path, processes: int, config_file: Path | None) -> list[str]:
    """``accelerate launch`` for ``processes`` ranks on this machine, on a free port."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes), "--num_machines", "1",
           "--main_process_port", "0", "--dynamo_backend", "no"]
    if config_file is not None:
        cmd += ["--config_file", str(config_file)]
    else:
        # torchrun underneath, on GPUs and CPUs alike (accelerate's multi-CPU path wants MPI); the
        # trainer picks NCCL or gloo from ``use_cpu``. Mixed precision comes from the training args.
        cmd += ["--multi_gpu", "--mixed_precision", "no"]
    return [*cmd, "-m", "prefloop.training.distributed", str(job)]


class _LogReplay:
    """Feeds the main rank's JSON-lines logs to the round's tracker as they are written."""

    def __init__(self, path: Path, phase: str, tracker: Any) -> None:
        self.path, self.phase, self.tracker = path, phase, tracker
        self.offset = 0
        self.started = False

    def pump(self) -> None:
        if self.tracker is None or not self.path.is_file():
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next pump
        self.offset += end
        for line in data[:end].splitlines():
            row = json.loads(line)
            if not self.started:
                self.tracker.define_phase(self.phase)
                self.started = True
            if "config" in row:  # the phase's training arguments and model config, written once at the start
                self.tracker.record_phase_config(self.phase, row["config"]["args"], row["config"].get("model"))
                continue
            self.tracker.log_phase(self.phase, int(row["step"]), row["logs"])


def _stop(proc: subprocess.Popen) -> None:
    """End the launcher and its ranks (they run in their own process group)."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _failure(log: Path, rc: int) -> str:
    """The line of the workers' log that says what went wrong (the last exception line)."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.is_file() else []
    errors = [ln for ln in lines if ("Error" in ln or "error:" in ln) and not ln.startswith(("File ", "raise "))]
    reason = (errors or lines or [f"exit status {rc}"])[-1]
    return reason[:300]


def train_distributed(phase: str, cfg: TrainingConfig, dataset_path: str | Path, out: Path, *, processes: int,
                      init_adapter: str | Path | None = None, tracker: Any = None, base_dir: Path | None = None,
                      say: Callable[[str], None] | None = None) -> Any:
    """Train one phase under ``processes`` ranks and wait for it (Ctrl-C stops every rank)."""
    from .generation import resolve_device
    from .trainers import ADAPTER, ADAPTER_WEIGHTS, RESULT, PhaseResult, TrainingError

    out.mkdir(parents=True, exist_ok=True)
    cuda = resolve_device(cfg.model) == "cuda"
    config_file = accelerate_config_file(cfg.trainer.accelerate_config, base_dir)
    check_launch(cfg, config_file, cuda)
    lines = out / LOG_LINES
    lines.unlink(missing_ok=True)  # a resumed run logs again from its checkpoint
    lock = out / f".driver-{uuid.uuid4().hex[:12]}.lock"
    job = Job(phase=phase, config=cfg.model_dump(mode="json"), dataset=str(dataset_path), out=str(out),
              init_adapter=str(init_adapter) if init_adapter else None, log_lines=str(lines), driver_lock=str(lock))
    job.write(out / JOB)
    env = dict(os.environ)
    for key in LAUNCHER_ENV:
        env.pop(key, None)
    env.update(WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    if say:
        say(f"{phase}: training on {processes} processes (log: {out / TRAIN_LOG})")
    replay = _LogReplay(lines, phase, tracker)
    with open(lock, "w") as held, open(out / TRAIN_LOG, "ab") as log:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = subprocess.Popen(launch_command(out / JOB, processes, config_file), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            while True:
                try:
                    rc = proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    replay.pump()
            replay.pump()
        except BaseException:
            _stop(proc)
            raise
        finally:
            lock.unlink(missing_ok=True)
    if rc != 0 or not (out / RESULT).is_file() or not (out / ADAPTER / ADAPTER_WEIGHTS).is_file():
        raise TrainingError(f"{phase}: training on {processes} processes failed: {_failure(out / TRAIN_LOG, rc)}",
                            hint=f"the workers' log is {out / TRAIN_LOG}; `prefloop round resume` continues from the last checkpoint")
    data = json.loads((out / RESULT).read_text())
    return PhaseResult(**data)


def run_phase(phase: Phase, cfg: TrainingConfig, dataset_path: str | Path, out: str | Path, *,
              init_adapter: str | Path | None = None, tracker: Any = None, base_dir: Path | None = None,
              say: Callable[[str], None] | None = None, callbacks: list[Any] | None = None) -> Any:
    """What a round's training state calls for each phase: in this process (with ``callbacks`` added
    to the trainer's, e.g. a progress bar), or under N processes."""
    from .trainers import ADAPTER, ADAPTER_WEIGHTS, RESULT, train_phase

    out = Path(out)
    processes = planned_processes(cfg)
    if processes > 1 and not ((out / RESULT).is_file() and (out / ADAPTER / ADAPTER_WEIGHTS).is_file()):
        result = train_distributed(phase, cfg, dataset_path, out, processes=processes, init_adapter=init_adapter,
                                   tracker=tracker, base_dir=base_dir, say=say)
        for note in result.notes:
            if say:
                say(f"[yellow]{phase}: {note}[/]")
        return result
    from datasets import load_from_disk

    callbacks = [*([tracker.callback(phase)] if tracker is not None else []), *(callbacks or [])]
    result = train_phase(phase, cfg, load_from_disk(str(dataset_path)), out, init_adapter=init_adapter, callbacks=callbacks)
    for note in result.notes if result.train_seconds else []:  # a phase that ran here: its fallbacks, once
        if say:
            say(f"[yellow]{phase}: {note}[/]")
    return result


# ---------------------------------------------------------------------------- the worker
def _log_lines_callback(path: Path) -> Any:
    from transformers import TrainerCallback

    class LogLines(TrainerCallback):
        """Append TRL's logs to a JSON-lines file (main rank), flushed line by line; the first line
        holds the training arguments and the model's config, for the round's run config."""

        def on_train_begin(self, args, state, control, model=None, **kwargs):  # noqa: ANN001, ANN201
            if state.is_world_process_zero:
                config = getattr(model, "config", None)
                row = {"config": {"args": args.to_dict(), "model": config.to_dict() if config is not None else None}}
                with open(path, "a") as f:
                    f.write(json.dumps(row, default=str) + "\n")

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
            if logs and state.is_world_process_zero:
                row = {"step": state.global_step, "logs": {k: v for k, v in logs.items() if isinstance(v, (int, float))}}
                with open(path, "a") as f:
                    f.write(json.dumps(row) + "\n")

    return LogLines()


def _watch_driver(lock: Path) -> None:
    """Exit when the round that launched us is gone (its lock is free, or its file was removed)."""

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(2.0):
            try:
                with open(lock, "rb") as f:
                    fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # the round still holds it
            except OSError:
                pass  # the file is gone: the round has finished waiting
            sys.stderr.write(f"prefloop worker: the round that launched this run is gone ({lock}); stopping\n")
            os._exit(3)

    threading.Thread(target=watch, name="prefloop-driver-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """One rank: ``python -m prefloop.training.distributed JOB`` (under ``accelerate launch``)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.stderr.write("usage: accelerate launch [--num_processes N] -m prefloop.training.distributed JOB.json\n")
        return 2
    job = Job.read(Path(argv[0]))
    if job.driver_lock:
        _watch_driver(Path(job.driver_lock))
    import torch
    from datasets import load_from_disk

    from .trainers import train_phase

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    import logging

    trainer_log = logging.getLogger("prefloop.trainer")  # the loss lines, into the workers' train.log
    trainer_log.addHandler(logging.StreamHandler(sys.stdout))
    trainer_log.setLevel(logging.INFO)
    cfg = TrainingConfig.model_validate(job.config)
    callbacks = [_log_lines_callback(Path(job.log_lines))] if job.log_lines else None
    train_phase(job.phase, cfg, load_from_disk(job.dataset), job.out,  # type: ignore[arg-type]
                init_adapter=job.init_adapter, callbacks=callbacks)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
