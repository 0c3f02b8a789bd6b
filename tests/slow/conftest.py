"""Slow tier: real server processes on the embedded model.

The GGUF is converted once into a snapshot directory shared by every server of the session (and kept across
sessions in HUGLLAMA_TEST_SNAPSHOTS, default ~/.cache/hugllama-test-snapshots), so each server start only
loads the snapshot (a second or two).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.helpers.env import clean_environ
from tests.helpers.net import free_port

REPO = Path(__file__).resolve().parents[2]
HUGLLAMA = REPO / ".venv" / "bin" / "hugllama"
MODEL = "smollm2:135m"
READY_TIMEOUT = float(os.environ.get("HL_READY_TIMEOUT", "600"))


class ServerProcess:
    def __init__(self, url: str, proc: subprocess.Popen[bytes], home: Path, log_path: Path) -> None:
        self.url = url
        self.proc = proc
        self.home = home
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def make_home() -> Path:
    return Path(tempfile.mkdtemp(prefix="hl-test-home-"))


def start_server(
    shared: Path, env_extra: dict[str, str] | None = None, *, home: Path | None = None, wait_path: str = "/readyz"
) -> ServerProcess:
    home = home or make_home()
    port = free_port()
    env = clean_environ()
    env.update(
        HUGLLAMA_HOME=str(home),
        HUGLLAMA_SNAPSHOTS=str(shared),
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        HUGLLAMA_LOG_LEVEL="INFO",
        HUGLLAMA_TORCH_THREADS=os.environ.get("HUGLLAMA_TORCH_THREADS", "2"),
        # Several servers and the test process share two cores: spinning OpenMP workers would starve each other.
        OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
    )
    env.update(env_extra or {})
    log_path = home / "server.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [str(HUGLLAMA), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    server = ServerProcess(url, proc, home, log_path)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()[-4000:]}")
        try:
            if httpx.get(url + wait_path, timeout=5).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server not ready after {READY_TIMEOUT}s:\n{server.log()[-4000:]}")


@contextmanager
def running_server(
    shared: Path,
    env_extra: dict[str, str] | None = None,
    *,
    home: Path | None = None,
    wait_path: str = "/readyz",
    stop_signal: int = signal.SIGTERM,
) -> Iterator[ServerProcess]:
    """start_server, stopped on exit: also when the fixture's own set-up after the start fails."""
    server = start_server(shared, env_extra, home=home, wait_path=wait_path)
    try:
        yield server
    finally:
        server.stop(stop_signal)


@pytest.fixture(scope="session")
def real_server_process(shared_snapshots: Path) -> Iterator[ServerProcess]:
    with running_server(shared_snapshots) as server:
        yield server


@pytest.fixture(scope="session")
def real_server(real_server_process: ServerProcess) -> str:
    """Base URL of a real server on the embedded model, shared by the session."""
    return real_server_process.url


@pytest.fixture
def server_factory(shared_snapshots: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start extra servers with their own settings (small queues, API keys, budgets); stopped after the test."""
    started: list[ServerProcess] = []

    def make(env: dict[str, str] | None = None, **kwargs: object) -> ServerProcess:
        server = start_server(shared_snapshots, env, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def model() -> str:
    return MODEL


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def http(real_server: str) -> Iterator[httpx.Client]:
    """Raw HTTP against the shared real server."""
    with httpx.Client(base_url=real_server, timeout=600) as client:
        yield client


@pytest.fixture(scope="session")
def oc(real_server: str) -> ollama.Client:
    """The official ollama client against the shared real server."""
    return ollama.Client(host=real_server, timeout=600)


@pytest.fixture(scope="session")
def oa(real_server: str) -> openai.OpenAI:
    """The official openai client against the shared real server."""
    return openai.OpenAI(base_url=real_server + "/v1", api_key="unused", timeout=600, max_retries=0)
