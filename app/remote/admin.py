"""RoutingAdmin: the model admin (app/engine/base.py ModelAdmin) when upstreams are configured. Local models go to
the local admin; upstream ones are listed, selected (loaded) and configured here. Plain upstream models' default
options live in `model_configs`, shared with the RoutingEngine that applies them."""

from __future__ import annotations

import dataclasses
from typing import Any

from app.engine.base import ModelAdmin
from app.engine.types import GenerationRequest
from app.errors import InvalidRequest
from app.param_rules import validate_options
from app.remote import engine as remote
from app.remote.catalog import UpstreamCatalog


class RoutingAdmin:
    """ModelAdmin over the local admin (None when the local engine has none) and the upstreams."""

    def __init__(
        self, local: ModelAdmin | None, catalog: UpstreamCatalog, model_configs: dict[str, dict[str, Any]]
    ) -> None:
        self.local = local
        self.catalog = catalog
        self.model_configs = model_configs

    def _local(self) -> ModelAdmin:
        if self.local is None:
            raise InvalidRequest("this engine has no model management")
        return self.local

    def available(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.local.available() if self.local is not None else []
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
        out: list[dict[str, Any]] = self.local.statuses() if self.local is not None else []
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
            return await self._local().begin_load(model, device=device, quantization=quantization)
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
            return self._local().get_config(model)
        if resolved.alias is not None:
            return {"model": model, "alias": True, "options": dict(resolved.alias.options)}
        return {"model": model, "alias": False, "options": dict(self.model_configs.get(resolved.base_name, {}))}

    def put_config(self, model: str, options: dict[str, Any]) -> dict[str, Any]:
        resolved = self.catalog.resolve(model)
        if resolved.source.kind != "upstream":
            return self._local().put_config(model, options)
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
        return await self._local().warm(req)
