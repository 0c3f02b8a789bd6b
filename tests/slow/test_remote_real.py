"""Remote backends against real upstream processes: a `hugllama serve` on the embedded model used as an Ollama
upstream (`up`) and as an OpenAI-compatible upstream with the vLLM preset (`oai`), through this service with the
official clients; aliases on upstream models; and every failure case (an upstream killed mid-stream and then
stopped, one at its concurrency limit, a slow one, an unreachable one, an upstream's own 4xx)."""

from __future__ import annotations

import json
import signal
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.helpers.net import free_port
from tests.helpers.prompts import CITY, FRANCE, PARIS, WEATHER
from tests.slow.conftest import ServerProcess, running_server, start_server

pytestmark = pytest.mark.slow

MODEL = "smollm2:135m"
GREEDY = {"temperature": 0, "num_predict": 12}
VICTIM_KEY = "victim-secret-key"


class _SlowHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(65536)
        time.sleep(20)  # never answers within the front's read timeout


@pytest.fixture(scope="module")
def slow_stub() -> Iterator[str]:
    """An upstream that accepts connections and reads requests but does not answer."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SlowHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def upstream(shared_snapshots: Path) -> Iterator[ServerProcess]:
    with running_server(
        shared_snapshots, {"HUGLLAMA_CONTEXT_LENGTH": "1024", "HUGLLAMA_NUM_PARALLEL": "4", "HUGLLAMA_MAX_STOP": "1"}
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def victim(shared_snapshots: Path) -> Iterator[ServerProcess]:
    """An upstream this module kills in the middle of an answer; it wants an API key."""
    env = {"HUGLLAMA_CONTEXT_LENGTH": "1024", "HUGLLAMA_NUM_PARALLEL": "2", "HUGLLAMA_API_KEYS": VICTIM_KEY}
    with running_server(shared_snapshots, env, stop_signal=signal.SIGKILL) as srv:
        yield srv


@pytest.fixture(scope="module")
def front(
    shared_snapshots: Path, upstream: ServerProcess, victim: ServerProcess, slow_stub: str, tmp_path_factory: Any
) -> Iterator[ServerProcess]:
    wrong_key = tmp_path_factory.mktemp("keys") / "wrong"
    wrong_key.write_text("not-the-key\n")
    upstreams = [
        {"name": "up", "kind": "ollama", "base_url": upstream.url},
        {"name": "oai", "kind": "vllm", "base_url": upstream.url + "/v1"},
        {"name": "busy", "kind": "vllm", "base_url": upstream.url, "max_concurrency": 1},
        {"name": "victim", "kind": "ollama", "base_url": victim.url, "connect_timeout": 2, "api_key_env": "VICTIM_KEY"},
        {"name": "badkey", "kind": "ollama", "base_url": victim.url, "api_key_file": str(wrong_key)},
        {"name": "slow", "kind": "openai", "base_url": slow_stub, "read_timeout": 1, "models": [MODEL]},
        {"name": "gone", "kind": "ollama", "base_url": f"http://127.0.0.1:{free_port()}", "connect_timeout": 2},
    ]
    env = {"HUGLLAMA_PRELOAD": "", "HUGLLAMA_UPSTREAMS": json.dumps(upstreams), "VICTIM_KEY": VICTIM_KEY}
    with running_server(shared_snapshots, env) as srv:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the first model discovery runs right after start-up
            names = {m["name"] for m in httpx.get(srv.url + "/api/tags", timeout=10).json()["models"]}
            if {f"up/{MODEL}", f"oai/{MODEL}"} <= names:
                break
            time.sleep(0.2)
        yield srv


def direct_chat(upstream: ServerProcess, messages: list[dict[str, str]], **options: Any) -> dict[str, Any]:
    r = httpx.post(
        upstream.url + "/api/chat",
        json={"model": MODEL, "messages": messages, "stream": False, "options": {**GREEDY, **options}},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


# --- names ---


def test_upstream_models_are_listed_with_their_backend(front: ServerProcess) -> None:
    tags = {m["name"] for m in httpx.get(front.url + "/api/tags", timeout=10).json()["models"]}
    assert {MODEL, f"up/{MODEL}", f"oai/{MODEL}", f"busy/{MODEL}", f"victim/{MODEL}"} <= tags
    models = {m["id"]: m["owned_by"] for m in httpx.get(front.url + "/v1/models", timeout=10).json()["data"]}
    assert models[f"oai/{MODEL}"] == "oai" and models[f"up/{MODEL}"] == "up"
    available = httpx.get(front.url + "/api/v1/models/available", timeout=30).json()
    backends = {m["name"]: m.get("backend") for m in available["models"]}
    assert backends[f"up/{MODEL}"] == "up" and backends[f"oai/{MODEL}"] == "oai"
    shown = ollama.Client(host=front.url).show(f"oai/{MODEL}")
    assert shown.modelinfo is not None and shown.modelinfo["upstream.name"] == "oai"


# --- both protocols on both upstream kinds ---


@pytest.mark.parametrize("backend", ["up", "oai"])
def test_ollama_client_chat_and_stream(front: ServerProcess, upstream: ServerProcess, backend: str) -> None:
    client = ollama.Client(host=front.url, timeout=120)
    direct = direct_chat(upstream, FRANCE)
    expected = direct["message"]["content"]
    assert expected.startswith(PARIS)
    answer = client.chat(model=f"{backend}/{MODEL}", messages=FRANCE, options=GREEDY)
    assert answer.message.content == expected
    assert answer.done_reason == direct["done_reason"] and answer.eval_count == direct["eval_count"]
    assert answer.prompt_eval_count == direct["prompt_eval_count"]
    parts = list(client.chat(model=f"{backend}/{MODEL}", messages=FRANCE, options=GREEDY, stream=True))
    assert "".join(p.message.content or "" for p in parts) == expected
    assert parts[-1].done and parts[-1].eval_count == direct["eval_count"]
    short = client.chat(model=f"{backend}/{MODEL}", messages=FRANCE, options={**GREEDY, "num_predict": 3})
    assert short.done_reason == "length" and short.eval_count == 3


@pytest.mark.parametrize("backend", ["up", "oai"])
def test_openai_client_chat_stream_and_completions(front: ServerProcess, upstream: ServerProcess, backend: str) -> None:
    client = openai.OpenAI(base_url=front.url + "/v1", api_key="unused", timeout=120)
    direct = direct_chat(upstream, FRANCE)
    expected = direct["message"]["content"]
    chat = client.chat.completions.create(
        model=f"{backend}/{MODEL}",
        messages=FRANCE,
        temperature=0,
        max_tokens=12,  # type: ignore[arg-type]
    )
    assert chat.choices[0].message.content == expected
    assert chat.choices[0].finish_reason == direct["done_reason"]
    assert chat.usage is not None and chat.usage.completion_tokens == direct["eval_count"]
    stream = client.chat.completions.create(
        model=f"{backend}/{MODEL}",
        messages=FRANCE,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    events = list(stream)
    assert "".join(e.choices[0].delta.content or "" for e in events if e.choices) == expected
    plain = openai.OpenAI(base_url=upstream.url + "/v1", api_key="unused", timeout=120)
    raw = plain.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0)
    ours = client.completions.create(
        model=f"{backend}/{MODEL}", prompt="The capital of France is", max_tokens=6, temperature=0
    )
    assert ours.choices[0].text == raw.choices[0].text and ours.choices[0].text.strip()


def test_forced_tool_call_on_openai_upstream_both_protocols(front: ServerProcess) -> None:
    client = openai.OpenAI(base_url=front.url + "/v1", api_key="unused", timeout=120)
    for stream in (False, True):
        kwargs: dict[str, Any] = {
            "model": f"oai/{MODEL}",
            "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "temperature": 0,
            "max_tokens": 40,
        }
        if stream:
            calls: dict[int, dict[str, str]] = {}
            for event in client.chat.completions.create(stream=True, **kwargs):
                for d in (event.choices[0].delta.tool_calls or []) if event.choices else []:
                    slot = calls.setdefault(d.index, {"name": "", "args": ""})
                    slot["name"] += (d.function.name or "") if d.function else ""
                    slot["args"] += (d.function.arguments or "") if d.function else ""
            name, args = calls[0]["name"], calls[0]["args"]
        else:
            message = client.chat.completions.create(**kwargs).choices[0].message
            assert message.tool_calls
            name, args = message.tool_calls[0].function.name, message.tool_calls[0].function.arguments  # type: ignore[union-attr]
        assert name == "get_weather"
        assert isinstance(json.loads(args)["city"], str)


def test_tool_round_trip_through_ollama_protocol(front: ServerProcess) -> None:
    """An Ollama client's tool result (named by tool_name) reaches both upstream kinds as a valid turn."""
    client = ollama.Client(host=front.url, timeout=120)
    messages: Any = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "tool_name": "get_weather", "content": "Sunny, 22 C"},
    ]
    for backend in ("up", "oai"):
        answer = client.chat(model=f"{backend}/{MODEL}", messages=messages, tools=[WEATHER], options=GREEDY)
        assert answer.message.content


def test_ollama_cannot_be_forced_to_call_a_tool(front: ServerProcess) -> None:
    r = httpx.post(
        front.url + "/v1/chat/completions",
        json={"model": f"up/{MODEL}", "messages": FRANCE, "tools": [WEATHER], "tool_choice": "required"},
        timeout=30,
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "tool_choice"


def test_json_schema_output_both_ways(front: ServerProcess) -> None:
    answer = ollama.Client(host=front.url, timeout=120).chat(
        model=f"oai/{MODEL}",
        messages=[{"role": "user", "content": "Name a city in France as JSON."}],
        format=CITY,
        options={"temperature": 0, "num_predict": 40},
    )
    assert isinstance(json.loads(answer.message.content or "")["city"], str)
    client = openai.OpenAI(base_url=front.url + "/v1", api_key="unused", timeout=120)
    chat = client.chat.completions.create(
        model=f"up/{MODEL}",
        messages=[{"role": "user", "content": "Name a city in France as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": CITY}},
        temperature=0,
        max_tokens=40,
    )
    assert isinstance(json.loads(chat.choices[0].message.content or "")["city"], str)


def test_embeddings_both_ways(front: ServerProcess, upstream: ServerProcess) -> None:
    texts = ["Paris is in France.", "Bonjour"]
    direct = httpx.post(upstream.url + "/api/embed", json={"model": MODEL, "input": texts}, timeout=120).json()
    theirs = direct["embeddings"]
    via_openai_upstream = ollama.Client(host=front.url, timeout=120).embed(model=f"oai/{MODEL}", input=texts)
    client = openai.OpenAI(base_url=front.url + "/v1", api_key="unused", timeout=120)
    via_ollama_upstream = client.embeddings.create(model=f"up/{MODEL}", input=texts)
    for i, want in enumerate(theirs):
        for got in (via_openai_upstream.embeddings[i], via_ollama_upstream.data[i].embedding):
            assert len(got) == len(want)
            assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-5


def test_logprobs_from_an_ollama_upstream(front: ServerProcess) -> None:
    client = openai.OpenAI(base_url=front.url + "/v1", api_key="unused", timeout=120)
    chat = client.chat.completions.create(
        model=f"up/{MODEL}",
        messages=FRANCE,
        temperature=0,
        max_tokens=4,
        logprobs=True,
        top_logprobs=2,  # type: ignore[arg-type]
    )
    content = chat.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == 4
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)


def test_alias_on_upstream_model_applies_system_and_options(front: ServerProcess, upstream: ServerProcess) -> None:
    system = "You are a pirate. Answer like a pirate."
    client = ollama.Client(host=front.url, timeout=120)
    client.create(
        model="pirate-remote", from_=f"oai/{MODEL}", system=system, parameters={"temperature": 0, "num_predict": 6}
    )
    tags = {m["name"] for m in httpx.get(front.url + "/api/tags", timeout=10).json()["models"]}
    assert "pirate-remote:latest" in tags
    want = direct_chat(upstream, [{"role": "system", "content": system}, *FRANCE], num_predict=6)
    oa = openai.OpenAI(base_url=front.url + "/v1", api_key="unused", timeout=120)
    chat = oa.chat.completions.create(model="pirate-remote", messages=FRANCE)  # type: ignore[arg-type]
    assert chat.choices[0].message.content == want["message"]["content"]
    assert chat.usage is not None and chat.usage.completion_tokens == 6
    # the request's own options win over the alias's
    longer = client.chat(model="pirate-remote", messages=FRANCE, options={"num_predict": 9})
    direct = direct_chat(upstream, [{"role": "system", "content": system}, *FRANCE], num_predict=9)
    assert longer.message.content == direct["message"]["content"]
    assert longer.eval_count == direct["eval_count"] and (longer.eval_count or 0) > 6
    client.delete("pirate-remote")


# --- failures ---


def test_upstream_4xx_comes_back_with_its_message(front: ServerProcess) -> None:
    r = httpx.post(
        front.url + "/api/chat",
        json={"model": f"oai/{MODEL}", "messages": FRANCE, "stream": False, "options": {"stop": ["a", "b"]}},
        timeout=30,
    )
    assert r.status_code == 400, r.text
    assert "upstream oai" in r.json()["error"] and "stop" in r.json()["error"]
    r = httpx.post(
        front.url + "/v1/chat/completions",
        json={"model": f"up/{MODEL}", "messages": FRANCE, "stop": ["a", "b"]},
        timeout=30,
    )
    assert r.status_code == 400 and "stop" in r.json()["error"]["message"]


def test_unknown_upstream_model_is_not_found_in_each_protocol(front: ServerProcess) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=front.url).chat(model="up/nope:1b", messages=FRANCE)
    assert err.value.status_code == 404
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=front.url + "/v1", api_key="x").chat.completions.create(
            model="oai/nope", messages=FRANCE
        )  # type: ignore[arg-type]


def test_unreachable_upstream_is_502_fast_and_readyz_stays_200(front: ServerProcess) -> None:
    started = time.monotonic()
    r = httpx.post(front.url + "/api/chat", json={"model": f"gone/{MODEL}", "messages": FRANCE}, timeout=30)
    assert r.status_code == 502 and "gone" in r.json()["error"]
    assert time.monotonic() - started < 2.5
    assert httpx.get(front.url + "/readyz", timeout=10).status_code == 200
    metrics = httpx.get(front.url + "/metrics", timeout=10).text
    assert 'hugllama_upstream_up{upstream="gone"} 0.0' in metrics


def test_slow_upstream_is_504(front: ServerProcess) -> None:
    started = time.monotonic()
    r = httpx.post(front.url + "/v1/chat/completions", json={"model": f"slow/{MODEL}", "messages": FRANCE}, timeout=30)
    assert r.status_code == 504, r.text
    assert r.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 5


def _running(url: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("hugllama_requests_running "):
            return float(line.split()[1])
    raise AssertionError("no hugllama_requests_running")


def test_full_upstream_is_503_and_disconnect_closes_the_upstream_request(
    front: ServerProcess, upstream: ServerProcess
) -> None:
    body = {"model": f"busy/{MODEL}", "messages": FRANCE, "max_tokens": 900, "stream": True, "ignore_eos": True}
    with httpx.Client(timeout=60) as c, c.stream("POST", front.url + "/v1/chat/completions", json=body) as first:
        lines = first.iter_lines()
        assert next(lines).startswith("data:")
        second = httpx.post(front.url + "/v1/chat/completions", json={**body, "stream": False}, timeout=30)
        assert second.status_code == 503 and second.headers["Retry-After"] == "1"
        assert "concurrency limit" in second.json()["error"]["message"]
        # Our first event may precede the upstream's first token (its prefill): wait until it is decoding.
        until = time.monotonic() + 20
        while _running(upstream.url) != 1 and time.monotonic() < until:
            time.sleep(0.1)
        assert _running(upstream.url) == 1
    # The client went away: the upstream's generation must stop within a second.
    deadline = time.monotonic() + 1.5
    while _running(upstream.url) != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _running(upstream.url) == 0
    r = httpx.post(front.url + "/v1/chat/completions", json={**body, "stream": False, "max_tokens": 2}, timeout=60)
    assert r.status_code == 200  # the slot was given back


def test_upstream_credentials(front: ServerProcess) -> None:
    """The key from api_key_env reaches the upstream; a wrong one is a 502 (not the client's 401), never shown."""
    ok = httpx.post(
        front.url + "/api/chat",
        json={"model": f"victim/{MODEL}", "messages": FRANCE, "stream": False, "options": {"num_predict": 2}},
        timeout=60,
    )
    assert ok.status_code == 200, ok.text
    bad = httpx.post(front.url + "/api/chat", json={"model": f"badkey/{MODEL}", "messages": FRANCE}, timeout=60)
    assert bad.status_code == 502 and "credentials" in bad.json()["error"]
    status = httpx.get(front.url + "/api/v1/models/status", timeout=10).text
    assert VICTIM_KEY not in status and "not-the-key" not in status
    shown = httpx.post(front.url + "/api/show", json={"model": f"victim/{MODEL}"}, timeout=10).text
    assert VICTIM_KEY not in shown and VICTIM_KEY not in front.log()


def test_upstream_killed_mid_stream_then_stopped(front: ServerProcess, victim: ServerProcess) -> None:
    count = [{"role": "user", "content": "Count from 1 to 300, separated by commas."}]
    body = {"model": f"victim/{MODEL}", "messages": count, "options": {"num_predict": 600, "temperature": 0}}
    lines: list[str] = []
    with httpx.stream("POST", front.url + "/api/chat", json=body, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            lines.append(line)
            if len(lines) == 3:
                victim.proc.send_signal(signal.SIGKILL)
    events = [json.loads(line) for line in lines if line.strip()]
    errors = [e for e in events if "error" in e]
    assert len(errors) == 1 and events[-1] is errors[0], events[-3:]
    assert "victim" in errors[0]["error"]
    assert not any(e.get("done") for e in events)
    victim.proc.wait(10)
    started = time.monotonic()
    r2 = httpx.post(front.url + "/api/chat", json=body, timeout=30)
    assert r2.status_code == 502 and time.monotonic() - started < 2.5
    status = httpx.get(front.url + "/api/v1/models/status", timeout=10).json()
    assert any(u["name"] == "victim" and u["up"] is False for u in status["upstreams"])
    assert "api_key" not in json.dumps(status)


def test_metrics_carry_backend_and_upstream(front: ServerProcess) -> None:
    text = httpx.get(front.url + "/metrics", timeout=10).text
    assert 'hugllama_backend_requests_total{backend="up",kind="generate"}' in text
    assert 'hugllama_upstream_requests_total{status="200",upstream="oai"}' in text
    assert 'hugllama_upstream_time_to_first_token_seconds_count{upstream="oai"}' in text
    assert 'hugllama_upstream_up{upstream="up"} 1.0' in text
    # the request metrics carry the backend too: the upstream's name for its models
    assert 'hugllama_generation_tokens_total{backend="up",' in text
    assert 'hugllama_time_to_first_token_seconds_count{backend="oai",' in text


def _port_closed(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) != 0


# --- the original design's model API, locally and with the LLM_BACKEND_TYPE shorthand ---


def test_design_endpoints_on_the_local_backend(upstream: ServerProcess) -> None:
    url = upstream.url  # a plain local server (the embedded model is preloaded)
    status = httpx.get(url + "/api/v1/models/status", timeout=30).json()
    assert status["backend_type"] == "local" and status["active_model"] == MODEL and status["status"] == "Ready"
    assert status["backend_details"]["max_model_length"] == 8192 and status["last_error"] is None  # SmolLM2's
    assert status["backend_details"]["load_config"]["device"] == "cpu" and status["models"]
    available = httpx.get(url + "/api/v1/models/available", timeout=60).json()
    assert MODEL in available["local_model_paths"] and isinstance(available["cached_hub_models"], list)
    assert any(m["name"] == MODEL for m in available["models"])
    r = httpx.post(url + "/api/v1/models/load", json={"model_name_or_path": MODEL, "device": "cpu"}, timeout=60)
    assert r.status_code == 202
    before = httpx.get(url + "/api/v1/models/config", timeout=30).json()
    assert before["model"] == MODEL and before["temperature"] == 0.8
    r = httpx.put(url + "/api/v1/models/config", json={"max_new_tokens": 3, "temperature": 0}, timeout=30)
    assert r.status_code == 200 and r.json()["max_new_tokens"] == 3 and r.json()["temperature"] == 0
    try:
        answer = httpx.post(url + "/api/chat", json={"model": MODEL, "messages": FRANCE, "stream": False}, timeout=60)
        assert answer.json()["eval_count"] == 3  # the config applies to requests that set nothing
        bad = httpx.put(url + "/api/v1/models/config", json={"temperature": 3}, timeout=30)
        assert bad.status_code == 400 and "temperature" in bad.json()["error"]
    finally:
        httpx.put(url + "/api/v1/models/config", json={"model": MODEL, "options": {}}, timeout=30)


def test_design_endpoints_on_an_upstream_backend(shared_snapshots: Path, upstream: ServerProcess) -> None:
    env = {
        "HUGLLAMA_PRELOAD": "",
        "LLM_BACKEND_TYPE": "ollama",
        "OLLAMA_BASE_URL": upstream.url,
        "DEFAULT_MODEL_NAME_OR_PATH": MODEL,
    }
    srv = start_server(shared_snapshots, env)
    try:
        url = srv.url
        deadline = time.monotonic() + 30
        while httpx.get(url + "/api/v1/models/status", timeout=10).json()["status"] != "Ready":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        status = httpx.get(url + "/api/v1/models/status", timeout=10).json()
        assert status["backend_type"] == "ollama" and status["active_model"] == f"ollama/{MODEL}"
        assert status["backend_details"]["backend_url"] == upstream.url
        r = httpx.post(url + "/api/v1/models/load", json={"model_name_or_path": MODEL}, timeout=60)
        assert r.status_code == 202 and r.json()["model"] == f"ollama/{MODEL}"
        r = httpx.post(url + "/api/v1/models/load", json={"model_name_or_path": MODEL, "device": "cuda"}, timeout=60)
        assert r.status_code == 400 and "device" in r.json()["error"]
        assert f"ollama/{MODEL}" in httpx.get(url + "/api/v1/models/available", timeout=30).json()["upstream_models"]
        r = httpx.put(url + "/api/v1/models/config", json={"max_new_tokens": 2, "top_k": 1}, timeout=30)
        assert r.status_code == 200 and r.json()["max_new_tokens"] == 2 and r.json()["temperature"] is None
        answer = httpx.post(
            url + "/api/chat", json={"model": f"ollama/{MODEL}", "messages": FRANCE, "stream": False}, timeout=60
        ).json()
        assert answer["eval_count"] == 2 and answer["done_reason"] == "length"
    finally:
        srv.stop()


# --- LangChain ---


def test_langchain_on_both_upstream_kinds(front: ServerProcess, upstream: ServerProcess) -> None:
    from langchain_core.tools import tool
    from langchain_ollama import ChatOllama, OllamaEmbeddings
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        return "sunny"

    expected = direct_chat(upstream, FRANCE)["message"]["content"]
    question = FRANCE[0]["content"]
    for backend in ("up", "oai"):
        ollama_chat = ChatOllama(base_url=front.url, model=f"{backend}/{MODEL}", temperature=0, num_predict=12)
        assert ollama_chat.invoke(question).content == expected
        assert "".join(str(c.content) for c in ollama_chat.stream(question)) == expected
        openai_chat = ChatOpenAI(
            base_url=front.url + "/v1", api_key="unused", model=f"{backend}/{MODEL}", temperature=0, max_tokens=12
        )  # type: ignore[call-arg]
        assert openai_chat.invoke(question).content == expected
        assert "".join(str(c.content) for c in openai_chat.stream(question)) == expected
    forced = ChatOpenAI(base_url=front.url + "/v1", api_key="unused", model=f"oai/{MODEL}", temperature=0)  # type: ignore[call-arg]
    message = forced.bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Paris?")
    assert message.tool_calls[0]["name"] == "get_weather"  # type: ignore[attr-defined]
    assert isinstance(message.tool_calls[0]["args"]["city"], str)  # type: ignore[attr-defined]
    structured = ChatOllama(base_url=front.url, model=f"oai/{MODEL}", temperature=0, num_predict=40)
    city = structured.with_structured_output(CITY, method="json_schema").invoke("Name a city in France as JSON.")
    assert isinstance(city, dict) and isinstance(city["city"], str)
    vector = OllamaEmbeddings(base_url=front.url, model=f"oai/{MODEL}").embed_query("Bonjour")
    direct = httpx.post(upstream.url + "/api/embed", json={"model": MODEL, "input": "Bonjour"}, timeout=60).json()
    assert max(abs(a - b) for a, b in zip(vector, direct["embeddings"][0], strict=True)) < 1e-5
