"""app/server.py: the SIGTERM drain (readiness off, new work refused, in-flight finishes, then exit), the
second-signal fast exit, and `python -m app` serving and stopping on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from app.main import create_app
from app.server import DrainingServer
from app.settings import Settings
from tests.api.conftest import FakeCatalog
from tests.helpers.env import clean_environ
from tests.helpers.fake_engine import FakeEngine
from tests.helpers.net import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


class Running:
    def __init__(self, settings: Settings, engine: FakeEngine) -> None:
        app = create_app(settings, engine=engine, catalog=FakeCatalog())
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            app, log_config=None, lifespan="on", timeout_graceful_shutdown=int(settings.shutdown_grace_seconds)
        )
        self.server = DrainingServer(config)
        self.server.app = app
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)

    def signal(self) -> None:
        # handle_exit is what uvicorn installs as the SIGTERM handler; signals only reach the main thread, so the
        # test calls it directly (it only uses call_soon_threadsafe to reach the loop).
        self.server.handle_exit(signal.SIGTERM, None)


@pytest.fixture
def slow_server(settings: Settings) -> Iterator[tuple[Running, FakeEngine]]:
    engine = FakeEngine(script=["a"] * 8, delay=0.15)
    running = Running(settings.model_copy(update={"shutdown_grace_seconds": 10.0}), engine)
    yield running, engine
    running.server.should_exit = running.server.force_exit = True
    running.thread.join(10)


def _stream(url: str, out: dict[str, Any]) -> None:
    lines: list[dict[str, Any]] = []
    out["lines"] = lines
    try:
        body = {"model": "smollm2:135m", "prompt": "x"}
        with httpx.stream("POST", url + "/api/generate", json=body, timeout=30) as r:
            out["status"] = r.status_code
            for line in r.iter_lines():
                if line:
                    lines.append(json.loads(line))
                    out.setdefault("first", time.monotonic())
    except httpx.HTTPError as exc:  # the forced exit cuts the stream
        out["error"] = exc


def test_sigterm_drains_then_exits(slow_server: tuple[Running, FakeEngine]) -> None:
    running, engine = slow_server
    result: dict[str, Any] = {}
    t = threading.Thread(target=_stream, args=(running.url, result))
    t.start()
    while "first" not in result:
        time.sleep(0.01)
    running.signal()
    time.sleep(0.1)
    assert running.thread.is_alive()  # still serving while the request is in flight
    ready = httpx.get(running.url + "/readyz", timeout=5)
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    refused = httpx.get(running.url + "/api/tags", timeout=5)
    assert refused.status_code == 503 and "error" in refused.json()
    t.join(20)
    assert result["status"] == 200
    assert result["lines"][-1]["done"] is True and "".join(x["response"] for x in result["lines"]) == "a" * 8
    running.thread.join(15)
    assert not running.thread.is_alive()
    assert engine.closed and not running.server.force_exit


def test_second_signal_exits_at_once(slow_server: tuple[Running, FakeEngine]) -> None:
    running, engine = slow_server
    engine.delay = 2.0  # the stream would take 16 s
    result: dict[str, Any] = {}
    t = threading.Thread(target=_stream, args=(running.url, result), daemon=True)
    t.start()
    time.sleep(0.5)
    running.signal()
    time.sleep(0.2)
    assert running.thread.is_alive()
    started = time.monotonic()
    running.signal()
    running.thread.join(10)
    assert not running.thread.is_alive() and time.monotonic() - started < 5
    assert running.server.force_exit
    t.join(5)
    assert "error" in result or not result["lines"][-1].get("done")  # the stream did not get to finish


def test_python_m_app_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = clean_environ()
    env.update(
        HUGLLAMA_HOME=str(tmp_path / "home"), HUGLLAMA_PRELOAD="",
        HUGLLAMA_LOG_LEVEL="WARNING", HUGLLAMA_SHUTDOWN_GRACE_SECONDS="2", HF_HUB_CACHE=str(tmp_path / "hf"),
    )  # fmt: skip
    proc = subprocess.Popen(
        # `python -m app` over a FakeEngine (tests/helpers/fake_server.py runs app/__main__.py itself).
        [sys.executable, "-m", "tests.helpers.fake_server", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "Ollama is running"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        # uvicorn re-raises the signal after a graceful shutdown, so the exit status says SIGTERM.
        assert code in (0, -signal.SIGTERM), proc.communicate()[1]
        assert "Traceback" not in proc.communicate()[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
