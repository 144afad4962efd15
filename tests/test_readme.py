"""Every Python and shell block of README.md runs here, as a reader would paste it.

A ```python block runs in a fresh interpreter in an empty temporary folder; a ```bash block runs
as a ``bash -e`` script there, with this environment's ``prefloop`` first on ``PATH`` (offline:
no hub, wandb offline, one thread). An HTML comment on the line right above a block tells this
runner more (invisible on GitHub)::

    <!-- readme-test: files myproj/prompts.jsonl myproj/outputs.jsonl; stdin 1q -->

- ``project``: run in a project folder (``prefloop init .`` first);
- ``files PATH…``: put the file of that name from ``tests/readme/`` at PATH first (the reader's own data);
- ``link NAME…``: a link to the repository's NAME (``configs``), for paths relative to a checkout;
- ``stdin TEXT``: what the keyboard would type (``\\n`` for Enter);
- ``excerpt FILE``: the block shows lines of FILE (repository path): each of its lines must be there;
- ``needs SERVICE``: run only where the suite has it (``postgres``: ``PREFLOOP_TEST_POSTGRES_URL``,
  the store of the block's projects; ``gpu``: CUDA), else skipped with the reason;
- ``config COMMAND``: a ```yaml block of ``prefloop.yaml``: merged into a fresh project's config, then
  ``prefloop COMMAND`` must succeed (the config loads, and its judges build);
- ``slow``: marked ``slow`` (a real model: run with the slow tests);
- ``skip REASON``: not run here (installs, long training, a server that runs until stopped); the reason
  shows in the test report.

Other blocks (yaml without ``config``, json, plain text) are not run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FIXTURES = Path(__file__).with_name("readme")
RUN = ("python", "bash", "console", "sh", "shell")
TAG = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->")
LIBRARY_BAR = re.compile(r"(it|ba|examples)/s\]")  # tqdm's rate column


@dataclass
class Block:
    line: int  # of the opening fence
    lang: str
    code: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"L{self.line}-{self.lang}"


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text with the ``readme-test`` tags of the line above each."""
    out: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w*)", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1).lower()
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        tags: dict[str, str] = {}
        above = TAG.search(lines[start - 1]) if start else None
        if above:
            for part in above.group(1).split(";"):
                key, _, value = part.strip().partition(" ")
                tags[key] = value.strip()
        out.append(Block(start + 1, lang, "\n".join(lines[start + 1 : end]) + "\n", tags))
        i = end + 1
    return out


BLOCKS = [b for b in blocks(README.read_text()) if b.lang in RUN or (b.lang == "yaml" and "config" in b.tags)]
PARAMS = [pytest.param(b, id=b.id, marks=[pytest.mark.slow] if "slow" in b.tags else []) for b in BLOCKS]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
           "WANDB_DIR": str(tmp_path / "wandb"), "WANDB_DATA_DIR": str(tmp_path / "wandb-data"), "COLUMNS": "120",
           "NO_COLOR": "1"}
    for key in ("PREFLOOP_DATABASE_URL", "VIRTUAL_ENV_PROMPT"):
        env.pop(key, None)
    return env


def _needs(block: Block, env: dict[str, str]) -> None:
    service = block.tags.get("needs")
    if not service:
        return
    if service == "postgres":
        url = os.environ.get("PREFLOOP_TEST_POSTGRES_URL")
        if not url:
            pytest.skip("needs PostgreSQL (PREFLOOP_TEST_POSTGRES_URL is not set)")
        env["PREFLOOP_DATABASE_URL"] = url
    elif service == "gpu":
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU")
    else:
        pytest.skip(f"needs {service}")


@pytest.mark.parametrize("block", PARAMS)
def test_readme_block(block: Block, tmp_path: Path) -> None:
    if "skip" in block.tags:
        pytest.skip(f"README.md:{block.line}: {block.tags['skip'] or 'not run here'}")
    if "excerpt" in block.tags:
        source = (REPO / block.tags["excerpt"]).read_text().splitlines()
        missing = [ln for ln in block.code.splitlines() if ln.strip() and ln.rstrip() not in {s.rstrip() for s in source}]
        assert not missing, f"README.md:{block.line}: not in {block.tags['excerpt']}: {missing}"
        return
    env = _env(tmp_path)
    _needs(block, env)
    for path in block.tags.get("files", "").split():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes((FIXTURES / Path(path).name).read_bytes())
    for name in block.tags.get("link", "").split():
        (tmp_path / name).symlink_to(REPO / name)
    if "project" in block.tags or "config" in block.tags:
        subprocess.run(["prefloop", "init", "."], cwd=tmp_path, env=env, capture_output=True, check=True, timeout=120)
    if "config" in block.tags:
        import yaml

        config = yaml.safe_load((tmp_path / "prefloop.yaml").read_text())
        for key, value in yaml.safe_load(block.code).items():
            config[key] = {**config[key], **value} if isinstance(value, dict) and isinstance(config.get(key), dict) else value
        (tmp_path / "prefloop.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    stdin = block.tags.get("stdin", "").replace("\\n", "\n")
    if block.lang == "python":
        cmd = [sys.executable, "-c", block.code]
    elif block.lang == "yaml":
        cmd = ["bash", "-e", "-c", f"prefloop {block.tags['config']}"]
    else:
        cmd = ["bash", "-e", "-o", "pipefail", "-c", block.code]
    run = subprocess.run(cmd, cwd=tmp_path, env=env, input=stdin, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, (f"README.md:{block.line} ({block.lang}) failed with {run.returncode}:\n"
                                 f"{shlex.join(cmd[:2])} …\n--- stdout\n{run.stdout[-3000:]}\n--- stderr\n{run.stderr[-3000:]}")
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    if block.lang != "python":  # prefloop's commands show prefloop's output: no library progress bars
        assert not LIBRARY_BAR.search(run.stderr + run.stdout), run.stderr[-3000:]


def test_the_runner_reads_tags_and_fences() -> None:
    text = "x\n<!-- readme-test: files a/p.jsonl; stdin 1q -->\n```bash\nprefloop init a\n```\n```yaml\nk: v\n```\n"
    got = blocks(text)
    assert [(b.line, b.lang, b.code) for b in got] == [(3, "bash", "prefloop init a\n"), (6, "yaml", "k: v\n")]
    assert got[0].tags == {"files": "a/p.jsonl", "stdin": "1q"} and got[1].tags == {}
