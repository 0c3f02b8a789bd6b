"""The Open WebUI tier: our server on the embedded model and Open WebUI 0.12.4 (its own venv, made by
tests/e2e/setup.sh outside the checkout), both started offline by the session, Open WebUI's Ollama connection on
`/api` and its OpenAI connection on `/v1` (prefix `oai.`, since both list `smollm2:135m`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.net import free_port
from tests.slow.conftest import ServerProcess, running_server

E2E_CACHE = Path(os.environ.get("HUGLLAMA_E2E_CACHE", "/var/cache/hugllama-test"))
VENV = E2E_CACHE / "open-webui-venv"
OPEN_WEBUI = VENV / "bin" / "open-webui"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Where the browser test leaves its screenshot (printed by the test); kept after the run.
ARTIFACTS = Path(os.environ.get("HUGLLAMA_E2E_ARTIFACTS", tempfile.gettempdir())) / "hugllama-e2e"
START_TIMEOUT = float(os.environ.get("HL_WEBUI_START_TIMEOUT", "300"))
OPENAI_PREFIX = "oai"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not OPEN_WEBUI.exists():
        skip = pytest.mark.skip(reason=f"Open WebUI venv missing at {VENV}: run tests/e2e/setup.sh (make test-e2e)")
        for item in items:
            if "tests/e2e/" in str(item.fspath):
                item.add_marker(skip)


class WebUI:
    def __init__(self, url: str, proc: subprocess.Popen[bytes], log_path: Path, server: ServerProcess) -> None:
        self.url = url
        self.proc = proc
        self.log_path = log_path
        self.server = server
        self.token = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, timeout: float = 600) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def webui_env(server_url: str, data_dir: Path) -> dict[str, str]:
    """The settings of README "Open WebUI": offline, no sign-up, both connections, RAG embeddings from us."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUGLLAMA_", "OLLAMA_", "OPENAI_"))}
    env.update(
        DATA_DIR=str(data_dir),
        WEBUI_AUTH="False",
        WEBUI_SECRET_KEY="hugllama-e2e",
        OLLAMA_BASE_URL=server_url,
        ENABLE_OPENAI_API="True",
        OPENAI_API_BASE_URL=server_url + "/v1",
        OPENAI_API_KEY="none",
        OPENAI_API_CONFIGS=json.dumps({"0": {"prefix_id": OPENAI_PREFIX}}),
        OFFLINE_MODE="True",
        HF_HUB_OFFLINE="1",
        RAG_EMBEDDING_MODEL_AUTO_UPDATE="False",
        RAG_EMBEDDING_ENGINE="ollama",
        RAG_EMBEDDING_MODEL="smollm2:135m",
        RAG_OLLAMA_BASE_URL=server_url,
        ANONYMIZED_TELEMETRY="False",
        DO_NOT_TRACK="True",
        SCARF_NO_ANALYTICS="True",
        PYTHONUNBUFFERED="1",
        OMP_WAIT_POLICY="PASSIVE",
    )
    return env


@pytest.fixture(scope="session")
def hugllama(shared_snapshots: Path) -> Iterator[ServerProcess]:
    # As compose.open-webui.yml (README "Open WebUI"), for a model whose template has no tools: Open WebUI sends
    # its built-in tools with every browser chat. A lower answer bound than its 512 keeps Open WebUI's background
    # tasks (title, tags, follow-ups; a 135M model often loops on them) from holding the two cores long.
    settings = {
        "HUGLLAMA_TOOLS_FALLBACK": "ignore",
        "HUGLLAMA_DEFAULT_NUM_PREDICT": "256",
        "HUGLLAMA_STOP_REPEATS_CHARS": "256",
    }
    with running_server(shared_snapshots, settings) as server:
        yield server


@pytest.fixture(scope="session")
def webui(hugllama: ServerProcess) -> Iterator[WebUI]:
    home = Path(tempfile.mkdtemp(prefix="hl-e2e-webui-"))
    port = free_port()
    log_path = home / "open-webui.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [str(OPEN_WEBUI), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=home,
            env=webui_env(hugllama.url, home / "data"),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ui = WebUI(f"http://127.0.0.1:{port}", proc, log_path, hugllama)
    started = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Open WebUI exited with {proc.returncode}:\n{ui.log()[-4000:]}")
            if time.monotonic() - started > START_TIMEOUT:
                raise RuntimeError(f"Open WebUI not up after {START_TIMEOUT:.0f}s:\n{ui.log()[-4000:]}")
            try:
                if httpx.get(ui.url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        print(f"\nOpen WebUI up in {time.monotonic() - started:.0f}s at {ui.url} (log {log_path})")
        r = httpx.post(ui.url + "/api/v1/auths/signin", json={"email": "", "password": ""}, timeout=60)
        assert r.status_code == 200, r.text
        ui.token = r.json()["token"]
        yield ui
    finally:
        ui.stop()
        shutil.rmtree(home / "data", ignore_errors=True)
