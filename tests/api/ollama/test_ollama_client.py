"""The official `ollama` client against the app over a real socket (uvicorn + FakeEngine)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import ollama
import pytest

from app.engine.types import ToolCall
from tests.helpers.fake_engine import FakeEngine

MODEL = "smollm2:135m"
USER = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(tool_calls=(ToolCall("add", {"a": 1, "b": 2}, id="call_1"),))


@pytest.fixture
def oc(live_server: Any, engine: FakeEngine) -> ollama.Client:
    return ollama.Client(host=live_server(engine), timeout=10)


def test_generate_stream_and_non_stream(oc: ollama.Client, engine: FakeEngine) -> None:
    whole = oc.generate(model=MODEL, prompt="Hi", options={"temperature": 0, "num_predict": 10})
    assert whole.done and whole.done_reason == "stop" and whole.response == "".join(engine.script)
    assert whole.eval_count == len(engine.script) and whole.prompt_eval_count == 7 and whole.context == [1, 2, 3]
    chunks = list(oc.generate(model=MODEL, prompt="Hi", stream=True))
    assert chunks[-1].done and all(not c.done for c in chunks[:-1])
    assert "".join(c.response for c in chunks) == whole.response
    assert engine.requests[0].sampling.temperature == 0.0 and engine.requests[0].sampling.max_tokens == 10


def test_chat_and_tools(oc: ollama.Client, engine: FakeEngine) -> None:
    r = oc.chat(model=MODEL, messages=USER)
    assert r.message.role == "assistant" and r.message.content == "".join(engine.script)

    def add(a: int, b: int) -> int:
        """Add two numbers.

        Args:
            a: first
            b: second
        """
        return a + b

    r = oc.chat(model=MODEL, messages=USER, tools=[add])
    assert r.message.tool_calls is not None
    call = r.message.tool_calls[0]
    assert call.function.name == "add" and dict(call.function.arguments) == {"a": 1, "b": 2}
    assert engine.requests[-1].tools[0]["function"]["name"] == "add"
    streamed = list(oc.chat(model=MODEL, messages=USER, tools=[add], stream=True))
    assert any(c.message.tool_calls for c in streamed) and streamed[-1].done
    # history with the assistant's tool call (content absent) and the tool's answer
    history = [
        *USER,
        {"role": "assistant", "tool_calls": [{"function": {"name": "add", "arguments": {"a": 1, "b": 2}}}]},
        {"role": "tool", "content": "3", "tool_name": "add"},
    ]
    assert oc.chat(model=MODEL, messages=history).done


def test_model_management(oc: ollama.Client, monkeypatch: Any) -> None:
    names = [m.model for m in oc.list().models]
    assert MODEL in names
    shown = oc.show(MODEL)
    assert shown.modelinfo is not None and shown.details is not None and shown.details.family == "llama"
    assert shown.capabilities and "completion" in shown.capabilities

    status = oc.create(model="mario", from_=MODEL, system="You are Mario.", parameters={"temperature": 0.1})
    assert status.status == "success"
    assert "mario:latest" in [m.model for m in oc.list().models]
    assert oc.copy("mario", "luigi").status == "success"
    assert oc.delete("luigi").status == "success"
    with pytest.raises(ollama.ResponseError) as e:
        oc.delete("luigi")
    assert e.value.status_code == 404

    oc.generate(model=MODEL, prompt="", keep_alive="5m")  # load
    ps = oc.ps().models
    assert ps and ps[0].model == MODEL and ps[0].expires_at is not None and ps[0].context_length == 4096

    def pull(repo: str, *, settings: Any) -> Iterator[dict[str, Any]]:
        yield {"status": "pulling manifest"}
        yield {"status": "pulling abc", "digest": "sha256:" + "a" * 64, "total": 10, "completed": 10}
        yield {"status": "success"}

    monkeypatch.setattr("app.registry.pull.pull", pull)
    assert oc.pull("org/repo").status == "success"
    progress = list(oc.pull("org/repo", stream=True))
    assert progress[1].completed == 10 and progress[-1].status == "success"


def test_errors_raise_response_error(oc: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as e:
        oc.chat(model="no-such-model:7b", messages=USER)
    assert e.value.status_code == 404 and "not found" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        oc.generate(model=MODEL, prompt="x", options={"temperature": -1})
    assert e.value.status_code == 400 and 'option "temperature"' in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        oc.chat(model=MODEL, messages=USER, think=True)
    assert e.value.status_code == 400


def test_async_client(live_server: Any, engine: FakeEngine) -> None:
    host = live_server(engine)

    async def run() -> list[str]:
        client = ollama.AsyncClient(host=host, timeout=10)
        return [c.message.content or "" async for c in await client.chat(model=MODEL, messages=USER, stream=True)]

    assert "".join(asyncio.run(run())) == "".join(engine.script)
