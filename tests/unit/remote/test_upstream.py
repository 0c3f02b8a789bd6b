"""Upstream runtime over httpx's MockTransport: discovery, the HTTP-error table, the concurrency gate and stream
clean-up (the same cases run against real processes in tests/slow/test_remote_real.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from app.engine.types import FinishReason, GenerationRequest, Message
from app.errors import (
    ModelNotFound,
    Overloaded,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from app.metrics import Metrics
from app.remote import engine as remote
from app.remote.config import UpstreamConfig
from app.remote.metrics import UpstreamMetrics
from app.remote.upstream import Upstream

CHAT = GenerationRequest(model="m", messages=(Message(role="user", content="hi"),), protocol="openai")


def make(handler: Any, *, kind: str = "openai", limit: int = 2) -> Upstream:
    cfg = UpstreamConfig(name="u", kind=kind, base_url="http://u", max_concurrency=limit)  # type: ignore[arg-type]
    up = Upstream(cfg, transport=httpx.MockTransport(handler))
    up.metrics = UpstreamMetrics(Metrics().registry)
    return up


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_discovery_and_a_malformed_answer() -> None:
    answers = iter(
        [
            httpx.Response(200, json={"data": [{"id": "a", "created": 5, "max_model_len": 4096}]}),
            httpx.Response(200, json={"data": [{"no_id": 1}]}),
        ]
    )
    up = make(lambda r: next(answers))

    async def check() -> None:
        assert await up.refresh() is True
        assert up.models["a"].context_length == 4096 and up.up is True
        assert await up.refresh() is False  # malformed: down, and the loop would carry on
        assert up.up is False and up.last_error
        await up.aclose()

    run(check())


@pytest.mark.parametrize(
    ("status", "error", "http"),
    [
        (404, ModelNotFound, 404),
        (400, UpstreamRejected, 400),
        (422, UpstreamRejected, 400),
        (413, UpstreamRejected, 413),
        (401, UpstreamError, 502),
        (429, Overloaded, 503),
        (500, UpstreamError, 502),
    ],
)
def test_http_errors_before_the_first_byte(status: int, error: type[Exception], http: int) -> None:
    up = make(lambda r: httpx.Response(status, json={"error": {"message": "nope"}}, headers={"Retry-After": "7"}))

    async def check() -> None:
        with pytest.raises(error) as err:
            await remote.start(up, CHAT, "m", "u/m", Metrics())
        assert err.value.status_code == http  # type: ignore[attr-defined]
        if status == 429:
            assert err.value.retry_after == 7  # type: ignore[attr-defined]
        assert up.in_flight == 0
        await up.aclose()

    run(check())


def test_transport_failures() -> None:
    def refuse(r: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=r)

    def slow(r: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=r)

    async def check() -> None:
        for handler, error in ((refuse, UpstreamUnavailable), (slow, UpstreamTimeout)):
            up = make(handler)
            with pytest.raises(error):
                await remote.start(up, CHAT, "m", "u/m", Metrics())
            assert up.in_flight == 0
            await up.aclose()

    run(check())


def test_concurrency_gate_and_release_without_iterating() -> None:
    body = sse({"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]})
    up = make(lambda r: httpx.Response(200, content=body), limit=1)

    async def check() -> None:
        stream = await remote.start(up, CHAT, "m", "u/m", Metrics())
        with pytest.raises(Overloaded) as err:
            await remote.start(up, CHAT, "m", "u/m", Metrics())
        assert err.value.retry_after == 1
        await stream.aclose()  # never iterated: the slot still comes back
        assert up.in_flight == 0
        chunks = [c async for c in await remote.start(up, CHAT, "m", "u/m", Metrics())]
        assert "".join(c.text for c in chunks) == "Hi" and chunks[-1].finish_reason == FinishReason.STOP
        assert chunks[-1].timings is not None and chunks[-1].timings.total_ns > 0
        assert up.in_flight == 0
        await up.aclose()

    run(check())


def test_an_answer_that_stops_early_is_one_error() -> None:
    body = b'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n'
    up = make(lambda r: httpx.Response(200, content=body))

    async def check() -> None:
        stream = await remote.start(up, CHAT, "m", "u/m", Metrics())
        got = []
        with pytest.raises(UpstreamError, match="early"):
            async for chunk in stream:
                got.append(chunk.text)
        assert got == ["Hi"] and up.in_flight == 0
        await up.aclose()

    run(check())


def test_api_key_is_sent() -> None:
    seen: list[str] = []

    def handler(r: httpx.Request) -> httpx.Response:
        seen.append(r.headers.get("authorization", ""))
        return httpx.Response(200, json={"models": []})

    from pydantic import SecretStr

    cfg = UpstreamConfig(name="u", kind="ollama", base_url="http://u").model_copy(update={"api_key": SecretStr("k1")})
    up = Upstream(cfg, transport=httpx.MockTransport(handler))

    async def check() -> None:
        await up.refresh()
        await up.aclose()

    run(check())
    assert seen == ["Bearer k1"]
