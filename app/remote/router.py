"""RoutingEngine: the Engine the HTTP layer sees when upstreams are configured. A resolved name goes to the
local engine or to the upstream that serves it; aliases of upstream models apply their system prompt, messages,
format and options here, under the request's own options, before forwarding."""

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
from app.errors import InvalidRequest
from app.metrics import Metrics
from app.param_rules import validate_options
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
    """Engine (app/engine/base.py) and ModelAdmin over the local engine and the upstreams."""

    def __init__(self, settings: Settings, local: Engine, catalog: UpstreamCatalog, metrics: Metrics) -> None:
        self.settings = settings
        self.local = local
        self.catalog = catalog
        self.metrics = metrics
        self.upstream_metrics = UpstreamMetrics(metrics.registry)
        # Default options of plain upstream models set through PUT /api/v1/models/config (aliases persist theirs).
        self.model_configs: dict[str, dict[str, Any]] = {}

    # --- lifecycle (upstreams never decide readiness or liveness) ---

    async def startup(self) -> None:
        starter = getattr(self.local, "startup", None)
        if starter is not None:
            await starter()
        for up in self.catalog.upstreams.values():
            up.start(self.upstream_metrics)

    def ready(self) -> bool:
        return self.local.ready()

    def alive(self) -> bool:
        return self.local.alive()

    async def probe(self) -> bool:
        probe = getattr(self.local, "probe", None)
        return bool(await probe()) if probe is not None else True

    async def aclose(self) -> None:
        for up in self.catalog.upstreams.values():
            await up.aclose()
        await self.local.aclose()

    def _count(self, backend: str, kind: str) -> None:
        self.upstream_metrics.backend_requests.labels(backend=backend, kind=kind).inc()

    # --- the Engine protocol ---

    async def start(self, req: GenerationRequest) -> AsyncIterator[Chunk]:
        resolved = self.catalog.resolve(req.model)
        if resolved.source.kind != "upstream":
            self._count("local", "generate")
            return await self.local.start(req)
        up, model = self.catalog.split(resolved)
        self._count(up.name, "generate")
        forwarded = with_alias(req, resolved, self.model_configs.get(resolved.base_name, {}))
        return await remote.start(up, forwarded, model, resolved.base_name, self.metrics)

    async def embed(self, req: EmbeddingRequest) -> Embeddings:
        resolved = self.catalog.resolve(req.model)
        if resolved.source.kind != "upstream":
            self._count("local", "embed")
            return await self.local.embed(req)
        up, model = self.catalog.split(resolved)
        self._count(up.name, "embed")
        return await remote.embed(
            up, dataclasses.replace(req, keep_alive=resolved.keep_alive(req.keep_alive)), model, resolved.base_name
        )

    async def load(self, model: str, *, keep_alive: float | None = None) -> float:
        resolved = self.catalog.resolve(model)
        if resolved.source.kind != "upstream":
            return await self.local.load(model, keep_alive=keep_alive)
        up, name = self.catalog.split(resolved)
        return await remote.load(up, name, resolved.base_name, resolved.keep_alive(keep_alive))

    async def unload(self, model: str, *, force: bool = False) -> bool:
        resolved = self.catalog.resolve(model)
        if resolved.source.kind != "upstream":
            return await self.local.unload(model, force=force)
        up, name = self.catalog.split(resolved)
        if up.cfg.kind != "ollama":
            return False  # an OpenAI-compatible server keeps its model
        await remote.load(up, name, resolved.base_name, 0)
        return True

    def running(self) -> list[RunningModel]:
        return self.local.running()

    # --- ModelAdmin (app/engine/base.py) ---

    def _local_admin(self, what: str) -> Any:
        method = getattr(self.local, what, None)
        if method is None:
            raise InvalidRequest("this engine has no model management")
        return method

    def available(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = list(self._local_admin("available")()) if hasattr(self.local, "available") else []
        for entry in self.catalog.list_models():
            if entry.source is None or entry.source.kind != "upstream":
                continue
            up = self.catalog.upstreams[str(entry.source.revision)]
            out.append(
                {
                    "name": entry.name,
                    "alias": entry.is_alias,
                    "base": entry.base,
                    "source": "upstream",
                    "backend": up.name,
                    "backend_kind": up.cfg.kind if up.cfg.kind == "ollama" else up.cfg.preset,
                    "format": entry.format,
                    "family": entry.family,
                    "parameter_size": entry.parameter_size,
                    "size": entry.size_bytes,
                    "context_length": entry.context_length,
                    "up": up.up,
                }
            )
        return out

    def statuses(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = list(self._local_admin("statuses")()) if hasattr(self.local, "statuses") else []
        for up in self.catalog.upstreams.values():
            state = {True: "ready", False: "unreachable", None: "checking"}[up.up]
            if up.active_model is not None:
                out.append({"model": up.active_model, "state": state, "error": up.last_error, "backend": up.name})
        return out

    def upstream_statuses(self) -> list[dict[str, Any]]:
        return [up.status() for up in self.catalog.upstreams.values()]

    async def begin_load(self, model: str, *, device: str | None, quantization: str | None) -> dict[str, Any]:
        resolved = self.catalog.resolve(model)
        if resolved.source.kind != "upstream":
            result: dict[str, Any] = await self._local_admin("begin_load")(
                model, device=device, quantization=quantization
            )
            return result
        if device not in (None, "auto") or quantization not in (None, "none"):
            field = "device" if device not in (None, "auto") else "quantization"
            raise InvalidRequest(f"{field} applies to local models only ({model} is on an upstream)", param=field)
        up, name = self.catalog.split(resolved)
        await remote.load(up, name, resolved.base_name, None)
        up.active_model = resolved.base_name
        return {"model": resolved.base_name, "state": "loaded", "backend": up.name, "backend_url": up.cfg.base_url}

    def get_config(self, model: str) -> dict[str, Any]:
        resolved = self.catalog.resolve(model)
        if resolved.source.kind != "upstream":
            result: dict[str, Any] = self._local_admin("get_config")(model)
            return result
        if resolved.alias is not None:
            return {"model": model, "alias": True, "options": dict(resolved.alias.options)}
        return {"model": model, "alias": False, "options": dict(self.model_configs.get(resolved.base_name, {}))}

    def put_config(self, model: str, options: dict[str, Any]) -> dict[str, Any]:
        resolved = self.catalog.resolve(model)
        if resolved.source.kind != "upstream":
            result: dict[str, Any] = self._local_admin("put_config")(model, options)
            return result
        validate_options(options)
        if resolved.alias is not None:
            self.catalog.put_alias(dataclasses.replace(resolved.alias, options=dict(options)))
        else:
            self.model_configs[resolved.base_name] = dict(options)
        return self.get_config(model)

    async def warm(self, req: GenerationRequest) -> int:
        resolved = self.catalog.resolve(req.model)
        if resolved.source.kind == "upstream":
            raise InvalidRequest("prefix-cache warm-up applies to local models only", param="model")
        tokens: int = await self._local_admin("warm")(req)
        return tokens
