"""Exports, datasets and reports are replaced whole or not at all: a writer killed mid-write leaves
the previous good file in place (a real process, SIGKILLed while it writes a big export)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefloop.atomic import atomic_dir, atomic_path, atomic_write_text

#: builds a big SFT-shaped dataset and exports it the way `prefloop export` does.
WRITER = """
import sys
from datasets import Dataset
from prefloop.feedback.export import save_dataset
n, path, fmt = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ds = Dataset.from_dict({"text": [f"answer {i} " * 40 for i in range(n)], "prompt_id": list(range(n))})
print("writing", flush=True)
save_dataset(ds, path, fmt)
print("done", flush=True)
"""


def temporaries(folder: Path, name: str) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(f".{name}.")]


def wait_for_write_in_progress(proc: subprocess.Popen, folder: Path, name: str, deadline_s: float = 240) -> Path:
    """Poll until the writer has put bytes into a temporary file beside the target."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for tmp in temporaries(folder, name):
            size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file()) if tmp.is_dir() else tmp.stat().st_size
            if size > 0:
                return tmp
        if proc.poll() is not None:
            pytest.fail(f"the writer finished without ever writing to a temporary file beside {name} "
                        f"(rc {proc.returncode}): {proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.001)  # a polling interval, not a synchronisation: the condition above decides
    pytest.fail(f"no temporary file beside {name} within {deadline_s} s")


def snapshot(path: Path) -> dict[str, bytes]:
    if path.is_dir():
        return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}
    return {"": path.read_bytes()}


@pytest.mark.parametrize(("fmt", "rows"), [("jsonl", 50_000)])  # seconds of writing: the poll cannot miss it
def test_an_export_killed_mid_write_leaves_the_previous_good_file(tmp_path: Path, fmt: str, rows: int) -> None:
    from datasets import Dataset

    from prefloop.feedback.export import save_dataset

    target = tmp_path / ("sft.jsonl" if fmt == "jsonl" else "sft")
    save_dataset(Dataset.from_dict({"messages": [[{"role": "user", "content": "old"}]], "prompt_id": [1]}), target, fmt)
    before = snapshot(target)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(rows), str(target), fmt], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        tmp = wait_for_write_in_progress(proc, tmp_path, target.name)
        assert snapshot(target) == before, "while the export is being written, the previous file is untouched"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if tmp.exists():  # killed mid-write, as intended: the old export is intact
        assert snapshot(target) == before
    else:  # the writer won the race with the kill: then its export is complete
        assert fmt != "jsonl" or len(target.read_text().splitlines()) == rows


def test_a_failed_write_changes_nothing_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "report.json", json.dumps({"good": True}))
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"trunc')
        raise RuntimeError("disk full")
    folder = tmp_path / "dataset"
    with atomic_dir(folder) as d:
        (d / "data.arrow").write_bytes(b"good")
    with pytest.raises(RuntimeError), atomic_dir(folder) as d:
        (d / "data.arrow").write_bytes(b"half")
        raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"good": True}
    assert (folder / "data.arrow").read_bytes() == b"good"
    assert temporaries(tmp_path, "report.json") == temporaries(tmp_path, "dataset") == []


def test_every_export_format_replaces_the_previous_one_whole(tmp_path: Path) -> None:
    import pyarrow.parquet as pq
    from datasets import Dataset, load_from_disk

    from prefloop.feedback.export import save_dataset

    for n in (3, 2):
        ds = Dataset.from_dict({"messages": [[{"role": "user", "content": f"q{i}"}] for i in range(n)], "prompt_id": list(range(n))})
        for fmt, name in (("jsonl", "x.jsonl"), ("parquet", "x.parquet"), ("disk", "x")):
            save_dataset(ds, tmp_path / name, fmt)
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 2
    assert pq.read_table(tmp_path / "x.parquet").num_rows == 2
    assert len(load_from_disk(str(tmp_path / "x"))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x", "x.jsonl", "x.parquet"]  # no temporaries left


def test_report_plots_are_written_atomically(tmp_path: Path) -> None:
    from prefloop.judges.report import AgreementRow, plot_agreement

    png = tmp_path / "agreement.png"
    row = AgreementRow(judge="j", n=3, agreement=0.5, n_without_ties=2, agreement_without_ties=0.5, kappa=float("nan"),
                       consistency=1.0, n_pairwise=3, failures=0)
    plot_agreement([row], png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["agreement.png"]
