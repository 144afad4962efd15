"""The wheel: only `prefloop.*` lands in site-packages, and it installs and runs in a fresh venv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # setuptools reuses ./build/lib: files moved or deleted since an earlier build would leak into the wheel
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
                   check=True, timeout=300)
    (whl,) = out.glob("prefloop-*.whl")
    return whl


def test_wheel_holds_only_the_prefloop_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"prefloop"}
    for needed in ("prefloop/feedback/queue.py", "prefloop/judges/__init__.py", "prefloop/training/rounds/__init__.py",
                   "prefloop/configs/default.yaml", "prefloop/feedback/store/migrations/versions/0001_initial_schema.py",
                  "prefloop/feedback/store/migrations/env.py", "prefloop/retrieval/bm25.py",
                  "prefloop/feedback/store/migrations/versions/0004_knowledge_base.py",
                  "prefloop/feedback/store/migrations/versions/0005_round_state.py", "prefloop/training/rounds/machine.py",
                  "prefloop/configs/data/support_kb/refunds.md",
                  "prefloop/configs/data/support_kb_queries.jsonl", "prefloop/configs/data/support_kb_facts.jsonl",
                  "prefloop/feedback/server/templates/annotate.html", "prefloop/feedback/server/static/annotate.js",
                  "prefloop/experiments/worker.py", "prefloop/sim/task.py", "prefloop/configs/tasks/arithmetic/task.py",
                  "prefloop/feedback/argilla/client.py", "prefloop/feedback/argilla/cli.py",
                  "prefloop/configs/tasks/arithmetic/prompts.jsonl", "prefloop/configs/experiments/feedback-sources.yaml",
                  "prefloop/training/compare/runner.py", "prefloop/configs/demo-rag.yaml",
                  "prefloop/configs/data/support_desk_rag.jsonl"):
        assert needed in names


def test_wheel_installs_in_a_fresh_venv_and_runs(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    # Dependencies come from this environment (no network in tests); prefloop itself from the wheel only.
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PREFLOOP_PROJECT")}
    out = subprocess.run([str(env_dir / "bin" / "prefloop"), "--help"], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "annotate" in out.stdout
    where = subprocess.run([str(py), "-c", "import prefloop.feedback.queue as q; print(q.__file__)"],
                           capture_output=True, text=True, env=env, check=True, cwd=tmp_path).stdout
    assert where.startswith(site) and "/prefloop/feedback/queue.py" in where
    init = subprocess.run([str(env_dir / "bin" / "prefloop"), "init", "p"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert init.returncode == 0, init.stderr
    assert (tmp_path / "p" / "prefloop.db").exists()
    for generic in ("feedback", "training", "judges", "configs", "retrieval", "experiments"):
        assert not Path(site, generic).exists()
