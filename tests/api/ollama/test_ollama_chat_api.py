"""/api/chat over HTTP: message shape, tool calls, logprobs, load/unload, errors, disconnects."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.engine.types import Chunk, FinishReason, Timings, TokenLogprob, ToolCall, TopLogprob, Usage
from app.engine.types import Message as EngineMessage
from tests.helpers.fake_engine import FakeEngine

MODEL = "smollm2:135m"
USER = [{"role": "user", "content": "Hi"}]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_stream_chunks_always_carry_an_assistant_message(client: TestClient, fake_engine: FakeEngine) -> None:
    r = client.post("/api/chat", json={"model": MODEL, "messages": USER})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    objs = lines(r.text)
    assert all(o["message"]["role"] == "assistant" and isinstance(o["message"]["content"], str) for o in objs)
    assert "".join(o["message"]["content"] for o in objs) == "".join(fake_engine.script)
    assert objs[-1]["done"] is True and objs[-1]["done_reason"] == "stop"
    assert objs[-1]["prompt_eval_count"] == 7 and objs[-1]["eval_count"] == 3
    assert "context" not in objs[-1]


def test_non_stream(client: TestClient, fake_engine: FakeEngine) -> None:
    r = client.post("/api/chat", json={"model": MODEL, "messages": USER, "stream": False})
    body = r.json()
    assert body["message"] == {"role": "assistant", "content": "".join(fake_engine.script)}
    assert body["done"] is True and body["total_duration"] == 1_000_000


def test_messages_reach_the_engine(client: TestClient, fake_engine: FakeEngine) -> None:
    msgs = [
        {"role": "SYSTEM", "content": "Be nice"},
        {"role": "user", "content": "weather in Paris?", "images": []},
        {"role": "assistant", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather", "tool_call_id": "call_1"},
    ]
    r = client.post(
        "/api/chat",
        json={
            "model": MODEL,
            "messages": msgs,
            "tools": [TOOL],
            "stream": False,
            "options": {"temperature": 0.1},
            "format": "json",
        },
    )
    assert r.status_code == 200, r.text
    req = fake_engine.requests[-1]
    assert req.messages == (
        EngineMessage(role="system", content="Be nice"),
        EngineMessage(role="user", content="weather in Paris?"),
        EngineMessage(role="assistant", content="", tool_calls=(ToolCall("get_weather", {"city": "Paris"}),)),
        EngineMessage(role="tool", content="sunny", tool_call_id="call_1", name="get_weather"),
    )
    assert req.tools == (TOOL,) and req.format == "json" and req.sampling.temperature == 0.1


def test_empty_tools_means_no_tools(client: TestClient, fake_engine: FakeEngine) -> None:
    client.post("/api/chat", json={"model": MODEL, "messages": USER, "tools": [], "stream": False})
    assert fake_engine.requests[-1].tools == ()


def test_tool_calls_stream_then_fold(client_for: Any) -> None:
    calls = (ToolCall("get_weather", {"city": "Paris"}, id="call_abc"),)
    engine = FakeEngine(script=[], tool_calls=calls)
    c = client_for(engine)
    objs = lines(c.post("/api/chat", json={"model": MODEL, "messages": USER, "tools": [TOOL]}).text)
    tool_lines = [o for o in objs if o["message"].get("tool_calls")]
    assert len(tool_lines) == 1 and tool_lines[0]["done"] is False and tool_lines[0]["message"]["content"] == ""
    assert tool_lines[0]["message"]["tool_calls"] == [
        {"id": "call_abc", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}
    ]
    assert objs[-1]["done"] is True and objs[-1]["done_reason"] == "stop"
    body = c.post("/api/chat", json={"model": MODEL, "messages": USER, "tools": [TOOL], "stream": False}).json()
    assert body["message"]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert body["done_reason"] == "stop"


def test_logprobs_in_responses(client_for: Any, chunk_engine: Any) -> None:
    lp = TokenLogprob("Hi", -0.25, bytes=(72, 105), top_logprobs=(TopLogprob("Hi", -0.25), TopLogprob("Yo", -1.5)))
    engine = chunk_engine(
        [
            Chunk(text="Hi", logprobs=(lp,)),
            Chunk(finish_reason=FinishReason.STOP, usage=Usage(3, 1), timings=Timings(total_ns=9)),
        ]
    )
    c = client_for(engine)
    body = {"model": MODEL, "messages": USER, "logprobs": True, "top_logprobs": 2}
    first = lines(c.post("/api/chat", json=body).text)[0]
    expected = [
        {
            "token": "Hi",
            "logprob": -0.25,
            "bytes": [72, 105],
            "top_logprobs": [{"token": "Hi", "logprob": -0.25}, {"token": "Yo", "logprob": -1.5}],
        }
    ]
    assert first["logprobs"] == expected
    assert c.post("/api/chat", json={**body, "stream": False}).json()["logprobs"] == expected
    assert engine.requests[-1].sampling.logprobs is True and engine.requests[-1].sampling.top_logprobs == 2


def test_no_messages_loads_and_keep_alive_zero_unloads(client: TestClient, fake_engine: FakeEngine) -> None:
    r = client.post("/api/chat", json={"model": MODEL, "messages": []})
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["done_reason"] == "load" and r.json()["message"] == {"role": "assistant", "content": ""}
    assert MODEL in fake_engine.loaded
    r = client.post("/api/chat", json={"model": MODEL, "keep_alive": "0"})
    assert r.json()["done_reason"] == "unload" and MODEL not in fake_engine.loaded


def test_load_passes_keep_alive(client: TestClient, fake_engine: FakeEngine, monkeypatch: Any) -> None:
    seen: list[Any] = []

    async def load(model: str, *, keep_alive: float | None = None, resolved: Any = None) -> float:
        seen.append((model, keep_alive))
        return 0.0

    monkeypatch.setattr(fake_engine, "load", load)
    client.post("/api/chat", json={"model": MODEL, "keep_alive": -1})
    client.post("/api/chat", json={"model": MODEL, "keep_alive": "1h"})
    assert seen == [(MODEL, -1.0), (MODEL, 3600.0)]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"messages": USER}, 400, "model is required"),
        ({"model": "ghost", "messages": USER}, 404, "model 'ghost' not found"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, 400, "wizard"),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "x", "images": ["aGk="]}]},
            400,
            "does not support images",
        ),
        ({"model": MODEL, "messages": USER, "think": "high"}, 400, "does not support thinking"),
        ({"model": MODEL, "messages": USER, "tools": [{"function": {}}]}, 400, "tools[0].function.name"),
        ({"model": MODEL, "messages": USER, "options": {"top_p": 2}}, 400, 'option "top_p" must be'),
        ({"model": MODEL, "messages": USER, "options": {"num_ctx": 2}}, 400, 'option "num_ctx" must be'),
        ({"model": MODEL, "messages": "hi"}, 400, "messages"),
    ],
)
def test_errors(client: TestClient, body: dict[str, Any], status: int, message: str) -> None:
    r = client.post("/api/chat", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_overload_keeps_503_and_retry_after(client: TestClient, fake_engine: FakeEngine, monkeypatch: Any) -> None:
    from app.errors import Overloaded

    async def start(req: Any, resolved: Any = None) -> Any:
        raise Overloaded("server busy, please try again.  maximum pending requests exceeded")

    monkeypatch.setattr(fake_engine, "start", start)
    r = client.post("/api/chat", json={"model": MODEL, "messages": USER})
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and "server busy" in r.json()["error"]


def test_stream_disconnect_cancels_the_engine(live_server: Any) -> None:
    engine = FakeEngine(script=["tok"] * 200, delay=0.02)
    url = live_server(engine)
    with httpx.stream("POST", url + "/api/chat", json={"model": MODEL, "messages": USER}, timeout=10) as r:
        first = next(r.iter_lines())
        assert json.loads(first)["done"] is False
    deadline = time.monotonic() + 5
    while not engine.cancelled and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.cancelled


def test_non_stream_disconnect_cancels_the_engine(live_server: Any) -> None:
    engine = FakeEngine(script=["tok"] * 200, delay=0.02)
    url = live_server(engine)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/api/chat", json={"model": MODEL, "messages": USER, "stream": False}, timeout=0.3)
    deadline = time.monotonic() + 5
    while not engine.cancelled and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.cancelled
