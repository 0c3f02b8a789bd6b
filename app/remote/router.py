"""RoutingEngine: the Engine the HTTP layer sees when upstreams are configured. A name is resolved once, here, and
the resolved model goes to the engine that serves it: the local engine (which does not resolve it again) or the
upstream; aliases of upstream models apply their system prompt, messages, format and options here, under the
request's own options, before forwarding. The model admin over the same parts is admin.py's RoutingAdmin."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from app.engine.base import Engine
from app.engine.types import (
    Chunk,
    EmbeddingRequest,
    Embeddings,
    GenerationRequest,
    Message,
    RunningModel,
    SamplingParams,
)
from app.metrics import Metrics
from app.registry.types import ResolvedModel
from app.remote import engine as remote
from app.remote.catalog import UpstreamCatalog
from app.remote.metrics import UpstreamMetrics
from app.settings import Settings


def with_alias(req: GenerationRequest, resolved: ResolvedModel, model_config: dict[str, Any]) -> GenerationRequest:
    """`req` as the upstream should see it: the alias's settings under the request's own.

    Unset sampling fields stay unset, so the upstream's defaults apply (not this service's Ollama defaults).
    """
    alias = resolved.alias
    options = dict(alias.options) if alias else {}
    fmt = req.format if req.format not in (None, "") else options.pop("format", None)
    options.pop("format", None)
    config = {k: v for k, v in model_config.items() if k != "format"}
    sampling = req.sampling.merged(SamplingParams.from_dict(options)).merged(SamplingParams.from_dict(config))
    messages = req.messages
    system = req.system
    if alias is not None:
        if messages is not None:
            preset = [
                Message(role=str(m.get("role", "user")), content=str(m.get("content", ""))) for m in alias.messages
            ]
            merged = preset + list(messages)
            if alias.system and not any(m.role == "system" for m in merged):
                merged.insert(0, Message(role="system", content=alias.system))
            messages = tuple(merged)
        elif system is None and not req.raw:
            system = alias.system
    return dataclasses.replace(
        req,
        messages=messages,
        system=system,
        template=req.template or (alias.template if alias else None),
        format=fmt,
        sampling=sampling,
        keep_alive=resolved.keep_alive(req.keep_alive),
    )


class RoutingEngine:
    """Engine (app/engine/base.py) over the local engine and the upstreams."""

    def __init__(
        self,
        settings: Settings,
        local: Engine,
        catalog: UpstreamCatalog,
        metrics: Metrics,
        model_configs: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.local = local
        self.catalog = catalog
        self.metrics = metrics
        self.upstream_metrics = UpstreamMetrics(metrics.registry)
        # Default options of plain upstream models set through PUT /api/v1/models/config (aliases persist theirs);
        # shared with the RoutingAdmin that writes them.
        self.model_configs: dict[str, dict[str, Any]] = {} if model_configs is None else model_configs

    # --- lifecycle (upstreams never decide readiness or liveness) ---

    async def startup(self) -> None:
        await self.local.startup()
        for up in self.catalog.upstreams.values():
            up.start(self.upstream_metrics)

    def ready(self) -> bool:
        return self.local.ready()

    def alive(self) -> bool:
        return self.local.alive()

    async def probe(self) -> bool:
        return await self.local.probe()

    async def aclose(self) -> None:
        for up in self.catalog.upstreams.values():
            await up.aclose()
        await self.local.aclose()

    def _count(self, backend: str, kind: str) -> None:
        self.upstream_metrics.backend_requests.labels(backend=backend, kind=kind).inc()

    # --- the Engine protocol ---

    async def start(self, req: GenerationRequest, resolved: ResolvedModel | None = None) -> AsyncIterator[Chunk]:
        resolved = resolved or self.catalog.resolve(req.model)
        if resolved.source.kind != "upstream":
            self._count("local", "generate")
            return await self.local.start(req, resolved)
        up, model = self.catalog.split(resolved)
        self._count(up.name, "generate")
        forwarded = with_alias(req, resolved, self.model_configs.get(resolved.base_name, {}))
        return await remote.start(up, forwarded, model, resolved.base_name, self.metrics)

    async def embed(self, req: EmbeddingRequest, resolved: ResolvedModel | None = None) -> Embeddings:
        resolved = resolved or self.catalog.resolve(req.model)
        if resolved.source.kind != "upstream":
            self._count("local", "embed")
            return await self.local.embed(req, resolved)
        up, model = self.catalog.split(resolved)
        self._count(up.name, "embed")
        return await remote.embed(
            up, dataclasses.replace(req, keep_alive=resolved.keep_alive(req.keep_alive)), model, resolved.base_name
        )

    async def load(
        self, model: str, *, keep_alive: float | None = None, resolved: ResolvedModel | None = None
    ) -> float:
        resolved = resolved or self.catalog.resolve(model)
        if resolved.source.kind != "upstream":
            return await self.local.load(model, keep_alive=keep_alive, resolved=resolved)
        up, name = self.catalog.split(resolved)
        return await remote.load(up, name, resolved.base_name, resolved.keep_alive(keep_alive))

    async def unload(self, model: str, *, force: bool = False, resolved: ResolvedModel | None = None) -> bool:
        resolved = resolved or self.catalog.resolve(model)
        if resolved.source.kind != "upstream":
            return await self.local.unload(model, force=force, resolved=resolved)
        up, name = self.catalog.split(resolved)
        if up.cfg.kind != "ollama":
            return False  # an OpenAI-compatible server keeps its model
        await remote.load(up, name, resolved.base_name, 0)
        return True

    def running(self) -> list[RunningModel]:
        return self.local.running()
