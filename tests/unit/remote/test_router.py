"""RoutingEngine resolves a name once and hands the resolved model to the engine that serves it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from app.engine.types import EmbeddingRequest, GenerationRequest
from app.metrics import Metrics
from app.registry.store import AliasStore
from app.registry.types import ModelSource, ResolvedModel
from app.remote.catalog import LocalCatalog, UpstreamCatalog
from app.remote.config import UpstreamConfig
from app.remote.router import RoutingEngine
from app.remote.upstream import Upstream
from app.settings import Settings
from tests.helpers.fake_engine import FakeEngine


class RecordingEngine(FakeEngine):
    def __init__(self) -> None:
        super().__init__(models=["m"])
        self.resolved: list[ResolvedModel | None] = []

    async def start(self, req: GenerationRequest, resolved: ResolvedModel | None = None) -> Any:
        self.resolved.append(resolved)
        return await super().start(req, resolved)

    async def embed(self, req: EmbeddingRequest, resolved: ResolvedModel | None = None) -> Any:
        self.resolved.append(resolved)
        return await super().embed(req, resolved)

    async def load(self, model: str, *, keep_alive: float | None = None, resolved: ResolvedModel | None = None) -> Any:
        self.resolved.append(resolved)
        return await super().load(model, keep_alive=keep_alive)

    async def unload(self, model: str, *, force: bool = False, resolved: ResolvedModel | None = None) -> Any:
        self.resolved.append(resolved)
        return await super().unload(model, force=force)


def test_a_local_model_is_resolved_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(home=tmp_path)
    ups = {"box": Upstream(UpstreamConfig(name="box", kind="ollama", base_url="http://box:11434"))}
    catalog = UpstreamCatalog(LocalCatalog(settings, AliasStore(settings.registry_path), set(ups)), ups)
    local_model = ResolvedModel(requested="m", base_name="m:latest", source=ModelSource("hf_dir", tmp_path))
    calls: list[str] = []

    def resolve(name: str) -> ResolvedModel:
        calls.append(name)
        return local_model

    monkeypatch.setattr(catalog.local, "resolve", resolve)
    local = RecordingEngine()
    router = RoutingEngine(settings, local, catalog, Metrics())

    async def scenario() -> None:
        chunks = await router.start(GenerationRequest(model="m", prompt="hi"))
        assert "".join([c.text async for c in chunks]) == "Hello!"
        await router.embed(EmbeddingRequest(model="m", inputs=("hi",)))
        await router.load("m")
        await router.unload("m")

    asyncio.run(scenario())
    assert calls == ["m"] * 4  # one resolve per request, by the router
    assert local.resolved == [local_model] * 4  # handed on, not resolved again
