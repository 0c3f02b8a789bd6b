"""API-tier fixtures: the real app with a FakeEngine and an in-memory catalog."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from app.engine.types import Chunk, FinishReason, GenerationRequest, Usage
from app.errors import InvalidRequest, ModelNotFound
from app.main import create_app
from app.registry.types import Alias, ModelEntry, ModelSource, ResolvedModel
from app.settings import Settings
from tests.helpers.fake_engine import FakeEngine
from tests.helpers.net import free_port


class FakeCatalog:
    """Catalog with one base model and whatever aliases tests put in."""

    def __init__(self, base: str = "smollm2:135m") -> None:
        self.base = base
        self.aliases: dict[str, Alias] = {}
        self.source = ModelSource(kind="embedded", path=Path("/nonexistent"), gguf_file="m.gguf")

    def _key(self, name: str) -> str:
        name = name.lower()
        return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"

    def list_models(self) -> list[ModelEntry]:
        entries = [
            ModelEntry(
                name=self.base,
                size_bytes=98_000_000,
                digest="a" * 64,
                modified_at=time.time(),
                format="gguf",
                family="llama",
                parameter_size="135M",
                quantization_level="Q4_1",
                context_length=8192,
            )
        ]
        for a in self.aliases.values():
            entries.append(
                ModelEntry(
                    name=a.name,
                    size_bytes=98_000_000,
                    digest="b" * 64,
                    modified_at=a.modified_at,
                    format="gguf",
                    family="llama",
                    parameter_size="135M",
                    quantization_level="Q4_1",
                    is_alias=True,
                    base=a.model,
                )
            )
        return entries

    def resolve(self, name: str) -> ResolvedModel:
        if not name or "/.." in name or name.startswith("/"):
            raise InvalidRequest(f"invalid model name {name!r}", param="model")
        key = self._key(name)
        if key in self.aliases:
            a = self.aliases[key]
            return ResolvedModel(
                requested=name, base_name=self.base, source=self.source, alias=a, quantization=a.quantization
            )
        if key in (self.base, self.base + ":latest") or name.lower() == self.base:
            return ResolvedModel(requested=name, base_name=self.base, source=self.source)
        raise ModelNotFound(name)

    def show(self, name: str) -> dict[str, Any]:
        r = self.resolve(name)
        return {
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "llama",
                "families": ["llama"],
                "parameter_size": "135M",
                "quantization_level": "Q4_1",
            },
            "model_info": {"general.architecture": "llama", "general.parameter_count": 134515008},
            "template": "{{ messages }}",
            "system": r.alias.system if r.alias else None,
            "parameters": "",
            "modelfile": f"FROM {r.base_name}\n",
            "capabilities": ["completion", "tools"],
            "modified_at": time.time(),
        }

    def get_alias(self, name: str) -> Alias | None:
        return self.aliases.get(self._key(name))

    def put_alias(self, alias: Alias) -> None:
        self.resolve(alias.model)
        self.aliases[self._key(alias.name)] = alias

    def delete(self, name: str) -> None:
        if self.aliases.pop(self._key(name), None) is None:
            raise ModelNotFound(name)

    def copy(self, source: str, destination: str) -> None:
        a = self.get_alias(source)
        if a is None:
            self.resolve(source)
            a = Alias(name=destination, model=source)
        self.aliases[self._key(destination)] = (
            Alias(**{**a.__dict__, "name": destination})
            if hasattr(a, "__dict__")
            else Alias.from_json(destination, a.to_json())
        )


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def fake_catalog() -> FakeCatalog:
    return FakeCatalog()


@pytest.fixture
def app_factory(settings: Settings, fake_engine: FakeEngine, fake_catalog: FakeCatalog) -> Any:
    def make(**overrides: Any) -> Any:
        s = settings.model_copy(update=overrides) if overrides else settings
        return create_app(s, engine=fake_engine, catalog=fake_catalog)

    return make


@pytest.fixture
def client(app_factory: Any) -> Iterator[TestClient]:
    # Host "localhost": the app refuses other Host values while bound to loopback (DNS rebinding).
    with TestClient(app_factory(), base_url="http://localhost") as c:
        yield c


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
def client_for(settings: Settings, fake_catalog: Any) -> Iterator[Callable[[Any], TestClient]]:
    """A TestClient over the app with a given engine (and the shared fake catalog)."""
    opened: list[TestClient] = []

    def make(engine: Any) -> TestClient:
        c = TestClient(create_app(settings, engine=engine, catalog=fake_catalog), base_url="http://localhost")
        c.__enter__()
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.__exit__(None, None, None)


@pytest.fixture
def live_server(settings: Settings, fake_catalog: Any) -> Iterator[Callable[[Any], str]]:
    """Serve the app with a given engine over a real socket (uvicorn in a thread); returns the base URL."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(engine: Any) -> str:
        port = free_port()
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
