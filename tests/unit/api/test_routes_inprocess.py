"""The routes over the real engine in-process on the tiny chat model (create_app's own wiring, no server): streams a
request started are given back however it ends before its body is read, and a request's model name is resolved
once from route to engine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.engine.transformers_engine import TransformersEngine
from app.main import create_app
from app.registry import hfcache
from app.registry.catalog import ModelCatalog
from app.settings import Settings
from tests.helpers.fake_hub import write_files
from tests.helpers.tiny_chat import engine_settled, tiny_chat_files, until_settled

CHAT = [{"role": "user", "content": "What is the capital of France?"}]


def _app(settings: Settings, tmp_path: Path, **update: Any) -> tuple[FastAPI, ModelCatalog, TransformersEngine]:
    hfcache.invalidate()
    write_files(tmp_path / "models" / "tiny-chat", tiny_chat_files(seed=0))
    s = settings.model_copy(
        update={"models_dir": tmp_path / "models", "device": "cpu", "dtype": "float32", "torch_threads": 1, **update}
    )
    catalog = ModelCatalog(s, cache_dir=tmp_path / "hub")
    app = create_app(s, catalog=catalog)
    engine = app.state.engine
    assert isinstance(engine, TransformersEngine)
    return app, catalog, engine


def _run(app: FastAPI, scenario: Callable[[httpx.AsyncClient], Awaitable[None]]) -> None:
    async def main() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                await scenario(client)

    asyncio.run(main())


def _chat(n: int = 1, **extra: Any) -> dict[str, Any]:
    return {"model": "tiny-chat", "messages": CHAT, "n": n, "max_tokens": 8, "temperature": 0, **extra}


def test_openai_n2_whose_second_start_fails_gives_the_first_back(settings: Settings, tmp_path: Path) -> None:
    # One queue place: choice 0 takes it, choice 1's start is refused (503), and start_all closes choice 0 unread.
    app, _, engine = _app(settings, tmp_path, max_queue=1)

    async def scenario(client: httpx.AsyncClient) -> None:
        want = (await client.post("/v1/chat/completions", json=_chat())).json()["choices"][0]["message"]["content"]
        for stream in (False, True):
            r = await client.post("/v1/chat/completions", json=_chat(2, stream=stream, max_tokens=300))
            assert r.status_code == 503, r.text
            await until_settled(engine)
            assert engine_settled(engine), "the started first choice still holds its place, row or model"
            assert engine.metrics.requests_waiting._value.get() == 0  # type: ignore[attr-defined]
        # The queue place came back: the next request is served, as alone.
        r = await client.post("/v1/chat/completions", json=_chat())
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == want
        assert await engine.unload("tiny-chat") and engine.running() == []

    _run(app, scenario)


async def _leave_before_the_body(app: FastAPI, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """A raw ASGI request whose client goes once the response has started, before any body is sent."""
    gone = asyncio.Event()
    sent: list[dict[str, Any]] = []
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.start":
            gone.set()
            await asyncio.sleep(0.5)  # the disconnect is seen while the response starts

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 11434),
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    return sent


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", {"model": "tiny-chat", "messages": CHAT, "options": {"num_predict": 300, "temperature": 0}}),
        ("/v1/chat/completions", _chat(2, stream=True, max_tokens=300)),
    ],
    ids=["ollama", "openai_n2"],
)
def test_a_client_gone_before_the_streamed_body_gives_its_streams_back(
    settings: Settings, tmp_path: Path, path: str, body: dict[str, Any]
) -> None:
    app, _, engine = _app(settings, tmp_path)

    async def scenario(client: httpx.AsyncClient) -> None:
        assert (await client.post("/v1/chat/completions", json=_chat())).status_code == 200  # loaded
        res = next(iter(engine.manager.residents.values()))
        steps = res.scheduler.steps
        sent = await _leave_before_the_body(app, path, body)
        assert [m["type"] for m in sent] == ["http.response.start"]
        await until_settled(engine)
        assert engine_settled(engine), "the streams of a response whose client left were never closed"
        assert res.scheduler.steps - steps < 150  # cancelled, not run to their 300 tokens

    _run(app, scenario)


def test_a_request_resolves_its_model_name_once(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, catalog, _ = _app(settings, tmp_path)
    resolve = catalog.resolve
    names: list[str] = []

    def counting(name: str) -> Any:
        names.append(name)
        return resolve(name)

    monkeypatch.setattr(catalog, "resolve", counting)
    ollama_chat = {"model": "tiny-chat", "messages": CHAT, "stream": False, "options": {"num_predict": 4}}
    requests: list[tuple[str, dict[str, Any]]] = [
        ("/api/chat", ollama_chat),
        ("/api/chat", {**ollama_chat, "stream": True}),
        ("/api/generate", {"model": "tiny-chat", "prompt": "Hi", "stream": False, "options": {"num_predict": 4}}),
        ("/v1/chat/completions", _chat(2)),
        ("/v1/completions", {"model": "tiny-chat", "prompt": ["a", "b"], "max_tokens": 4}),
        ("/api/embed", {"model": "tiny-chat", "input": ["a", "b"]}),
        ("/v1/embeddings", {"model": "tiny-chat", "input": ["a", "b"]}),
        ("/api/generate", {"model": "tiny-chat", "keep_alive": 0}),  # an unload
    ]

    async def scenario(client: httpx.AsyncClient) -> None:
        for path, body in requests:
            names.clear()
            r = await client.post(path, json=body)
            assert r.status_code == 200, (path, r.text)
            assert names == ["tiny-chat"], path

    _run(app, scenario)
