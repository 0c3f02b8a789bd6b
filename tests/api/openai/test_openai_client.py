"""The official `openai` client against a real uvicorn socket (FakeEngine), plus client disconnects -> cancel."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from app.engine.types import ToolCall
from tests.helpers.fake_engine import FakeEngine

MODEL = "smollm2:135m"
HI: Any = [{"role": "user", "content": "hi"}]


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def served(live_server: Any) -> tuple[FakeEngine, openai.OpenAI, str]:
    engine = FakeEngine(tool_calls=[ToolCall(name="add", arguments={"a": 1, "b": 2}, id="call_1")])
    url = live_server(engine)
    return engine, openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=10), url


def test_client_chat_and_stream(served: tuple[FakeEngine, openai.OpenAI, str]) -> None:
    _, oa, _ = served
    r = oa.chat.completions.create(model=MODEL, messages=HI, temperature=0)
    assert r.object == "chat.completion" and r.choices[0].message.content == "Hello!"
    assert r.choices[0].finish_reason == "stop" and r.usage is not None and r.usage.total_tokens == 10
    chunks = list(
        oa.chat.completions.create(
            model=MODEL,
            messages=HI,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello!"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_client_tool_calls(served: tuple[FakeEngine, openai.OpenAI, str]) -> None:
    _, oa, _ = served
    tools: Any = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    r = oa.chat.completions.create(model=MODEL, messages=HI, tools=tools)
    (call,) = r.choices[0].message.tool_calls or []
    assert call.model_dump()["function"] == {"name": "add", "arguments": '{"a": 1, "b": 2}'}
    assert r.choices[0].finish_reason == "tool_calls"


def test_client_completions_and_models(served: tuple[FakeEngine, openai.OpenAI, str]) -> None:
    engine, oa, _ = served
    r = oa.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6)
    assert r.choices[0].text == "Hello!" and engine.requests[-1].raw
    assert MODEL in [m.id for m in oa.models.list().data]
    assert oa.models.retrieve(MODEL).id == MODEL


def test_client_errors(served: tuple[FakeEngine, openai.OpenAI, str]) -> None:
    _, oa, _ = served
    with pytest.raises(openai.NotFoundError) as nf:
        oa.chat.completions.create(model="no-such-model:7b", messages=HI)
    assert isinstance(nf.value.body, dict) and "not found" in nf.value.body["message"]
    with pytest.raises(openai.BadRequestError) as bad:
        oa.chat.completions.create(model=MODEL, messages=HI, temperature=5)
    assert isinstance(bad.value.body, dict) and bad.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError):
        oa.models.retrieve("org/missing-model")


def test_stream_disconnect_cancels_the_engine(live_server: Any) -> None:
    engine = FakeEngine(script=["tok"] * 1000, delay=0.02)
    url = live_server(engine)
    body = {"model": MODEL, "messages": HI, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=10) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        while "tok" not in next(lines):
            pass
    assert wait_for(lambda: engine.cancelled)


def test_stream_disconnect_cancels_every_choice(live_server: Any) -> None:
    engine = FakeEngine(script=["tok"] * 1000, delay=0.02)
    started: list[Any] = []
    original = engine._run

    def tracking(req: Any) -> Any:
        gen = original(req)
        started.append(gen)
        return gen

    engine._run = tracking  # type: ignore[method-assign]
    url = live_server(engine)
    body = {"model": MODEL, "messages": HI, "stream": True, "n": 2}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=10) as r:
        lines = r.iter_lines()
        while "tok" not in next(lines):
            pass
    # Both engine generators are finished (cancelled and closed), not left running.
    assert wait_for(lambda: len(started) == 2 and all(g.ag_frame is None for g in started))
    assert engine.cancelled


def test_non_stream_disconnect_cancels_the_engine(live_server: Any) -> None:
    engine = FakeEngine(script=["tok"] * 1000, delay=0.02)
    url = live_server(engine)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/chat/completions", json={"model": MODEL, "messages": HI}, timeout=0.3)
    assert wait_for(lambda: engine.cancelled)


def test_http_layer_does_not_import_torch() -> None:
    code = (
        "import sys; import app.api.openai.routes, app.api.openai.convert, app.api.openai.schemas; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
