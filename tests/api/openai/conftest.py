"""OpenAI API fixtures: a scripted engine that yields exact chunks, and a real uvicorn server on a free port."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from app.engine.fake import FakeEngine
from app.engine.types import Chunk, FinishReason, GenerationRequest, Usage
from app.main import create_app
from app.settings import Settings


class ScriptedEngine(FakeEngine):
    """Yields exactly `chunks` (then a final chunk unless the script has one); records requests like FakeEngine."""

    def __init__(self, chunks: Sequence[Chunk], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.chunks = list(chunks)

    async def _run(self, req: GenerationRequest) -> AsyncIterator[Chunk]:
        try:
            for chunk in self.chunks:
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield chunk
            if not any(c.finish_reason for c in self.chunks):
                yield Chunk(
                    finish_reason=FinishReason.STOP, usage=Usage(prompt_tokens=5, completion_tokens=len(self.chunks))
                )
        except (GeneratorExit, asyncio.CancelledError):
            self.cancelled = True
            raise


@pytest.fixture
def scripted() -> Callable[..., ScriptedEngine]:
    """Build a ScriptedEngine: `scripted(chunks, delay=..., ...)`."""
    return ScriptedEngine


@pytest.fixture
def client_for(settings: Settings, fake_catalog: Any) -> Iterator[Callable[[Any], TestClient]]:
    """A TestClient over the app with a given engine."""
    opened: list[TestClient] = []

    def make(engine: Any) -> TestClient:
        c = TestClient(create_app(settings, engine=engine, catalog=fake_catalog))
        c.__enter__()
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.__exit__(None, None, None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def live_server(settings: Settings, fake_catalog: Any) -> Iterator[Callable[[Any], str]]:
    """Serve the app with a given engine over a real socket (uvicorn in a thread); returns the base URL."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(engine: Any) -> str:
        port = _free_port()
        app = create_app(
            settings.model_copy(update={"shutdown_grace_seconds": 1.0}), engine=engine, catalog=fake_catalog
        )
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)
