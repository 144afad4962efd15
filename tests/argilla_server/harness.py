"""Run a real argilla-server 2.8 on loopback for the Argilla bridge tests.

The server lives in its own venv (``.venv-argilla-server``, built by ``setup.sh``: it pins
pydantic 2.9, which prefloop's venv does not use), with Redis from Debian, a SQLite database in
a temporary directory, and the TEST-ONLY in-memory search engine (``memory_search_engine``)
because no Elasticsearch/OpenSearch can run on these machines.

:func:`start_server` builds the venv when missing, starts ``redis-server`` and ``serve.py`` on
free ports, and waits until the API answers. Outside CI a machine that cannot build the venv or
lacks ``redis-server`` gets a skip with the reason; in CI (``CI=true``) that is a failure.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VENV = Path(os.environ.get("ARGILLA_SERVER_VENV", REPO / ".venv-argilla-server"))
WORKSPACE = "prefloop"
ANNOTATORS = ("alice", "bob")


class Unavailable(RuntimeError):
    """The server cannot run on this machine (no venv, no redis-server)."""


@dataclass
class ArgillaTestServer:
    url: str
    owner_key: str
    annotator_keys: dict[str, str]
    workspace: str
    home: Path
    timings: dict[str, float] = field(default_factory=dict)
    _procs: list[subprocess.Popen] = field(default_factory=list, repr=False)

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        self._procs.clear()

    def log_tail(self, n: int = 4000) -> str:
        log = self.home / "server.log"
        return log.read_text(errors="replace")[-n:] if log.exists() else ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_venv() -> tuple[Path, float]:
    """The server venv's python, building the venv first when needed; and the seconds it took."""
    python = VENV / "bin" / "python"
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(HERE / "setup.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "ARGILLA_SERVER_VENV": str(VENV), "PYTHON": os.environ.get("PYTHON", _base_python())},
    )
    if proc.returncode != 0 or not python.exists():
        raise Unavailable(f"could not build the argilla-server venv at {VENV}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return python, time.monotonic() - start


def _base_python() -> str:
    for name in ("python3.11", "python3"):
        if shutil.which(name):
            return name
    return sys.executable


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it listened on port {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s")


def _wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            raise RuntimeError(f"argilla-server exited with code {proc.returncode}:\n{tail}")
        try:
            if httpx.get(f"{url}/api/v1/version", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"argilla-server did not answer at {url} within {timeout:.0f} s:\n{log.read_text(errors='replace')[-4000:]}")


def start_server(home: Path, *, timeout: float = 120) -> ArgillaTestServer:
    """Start Redis and argilla-server under ``home``; the caller must call ``stop()``."""
    redis = shutil.which("redis-server")
    if redis is None:
        raise Unavailable("redis-server is not installed (apt-get install -y redis-server)")
    python, venv_s = ensure_venv()
    home.mkdir(parents=True, exist_ok=True)
    owner_key = "owner.apikey." + secrets.token_hex(8)
    annotator_keys = {name: f"{name}.apikey.{secrets.token_hex(8)}" for name in ANNOTATORS}
    users = [{"username": "argilla", "role": "owner", "api_key": owner_key, "password": "owner-password-1", "workspaces": [WORKSPACE]}]
    users += [
        {"username": name, "role": "annotator", "api_key": key, "password": f"{name}-password-1", "workspaces": [WORKSPACE]}
        for name, key in annotator_keys.items()
    ]
    server = ArgillaTestServer(
        url="", owner_key=owner_key, annotator_keys=annotator_keys, workspace=WORKSPACE, home=home,
        timings={"venv_s": venv_s},
    )
    t0 = time.monotonic()
    try:
        redis_port = free_port()
        redis_log = open(home / "redis.log", "w")  # noqa: SIM115 - lives as long as the process
        redis_proc = subprocess.Popen(
            [redis, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(home), "--daemonize", "no"],
            stdout=redis_log, stderr=subprocess.STDOUT,
        )
        server._procs.append(redis_proc)
        _wait_port(redis_port, redis_proc, "redis-server", 20)

        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("ARGILLA_", "VIRTUAL_ENV", "PYTHON"))},
            "ARGILLA_HOME_PATH": str(home / "argilla"),
            "ARGILLA_DATABASE_URL": f"sqlite+aiosqlite:///{home / 'argilla.db'}?check_same_thread=False",
            "ARGILLA_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "ARGILLA_SEARCH_ENGINE": "prefloop-test-memory",
            "ARGILLA_ENABLE_TELEMETRY": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_OFFLINE": "1",
            "PREFLOOP_TEST_ARGILLA_USERS": json.dumps(users),
        }
        log = home / "server.log"
        server_log = open(log, "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [str(python), str(HERE / "serve.py"), "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=server_log, stderr=subprocess.STDOUT, cwd=str(home),
        )
        server._procs.append(proc)
        server.url = f"http://127.0.0.1:{port}"
        _wait_http(server.url, proc, timeout, log)
    except BaseException:
        server.stop()
        raise
    server.timings["start_s"] = time.monotonic() - t0
    return server


if __name__ == "__main__":  # manual use: python tests/argilla_server/harness.py DIR (Ctrl-C or SIGTERM stops it)
    import signal
    import tempfile

    srv = start_server(Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()))
    print(json.dumps({"url": srv.url, "owner_key": srv.owner_key, "annotators": srv.annotator_keys, "timings": srv.timings}), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    finally:
        srv.stop()
