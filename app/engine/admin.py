"""The model admin behind /api/v1/models and /api/v1/cache/warm: what is available and fits, load status,
background loads, per-model default options, and prefix-cache warm-up. An object of its own over the engine's
parts (parts.py), handed to `create_app` beside the engine."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from app.errors import InvalidRequest, ModelNotFound, ServiceError
from app.hardware import planning
from app.param_rules import validate_options
from app.registry.limits import check_options

if TYPE_CHECKING:
    from app.engine.base import Engine
    from app.engine.parts import EngineParts
    from app.engine.types import GenerationRequest

log = logging.getLogger(__name__)


class LocalModelAdmin:
    """ModelAdmin (base.py) of the local models; `engine` serves the warm-up prefill."""

    def __init__(self, parts: EngineParts, engine: Engine) -> None:
        self.settings = parts.settings
        self.catalog = parts.catalog
        self.manager = parts.manager
        self.model_configs = parts.model_configs
        self.engine = engine

    def available(self) -> list[dict[str, Any]]:
        free = self.manager.free_bytes()
        out: list[dict[str, Any]] = []
        for entry in self.catalog.list_models():
            try:
                resolved = self.catalog.resolve(entry.name)
                need = self.manager.estimate(resolved)
            except ServiceError as e:
                out.append({"name": entry.name, "error": e.message})
                continue
            loaded = self.manager.find(resolved.load_key) is not None
            suggestion = None
            if not loaded and need > free:
                suggestion = planning.suggest_quantization(
                    {q: self.manager.estimate(resolved, q) for q in (None, "8bit", "4bit")}, free
                )
            out.append(
                {
                    "name": entry.name,
                    "alias": entry.is_alias,
                    "base": entry.base,
                    "source": entry.source.kind if entry.source else None,
                    "format": entry.format,
                    "family": entry.family,
                    "parameter_size": entry.parameter_size,
                    "size": entry.size_bytes,
                    "quantization": resolved.quantization,
                    "estimated_memory": need,
                    "free_memory": free,
                    "fits": loaded or need <= free,
                    "loaded": loaded,
                    "fits_with": suggestion,
                }
            )
        return out

    def statuses(self) -> list[dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for key, st in self.manager.status.items():
            out[key] = {
                "model": st.name,
                "state": st.state,
                "error": st.error,
                "device": st.device,
                "quantization": st.quantization,
                "started_at": st.started_at,
                "finished_at": st.finished_at,
            }
        for key, r in self.manager.residents.items():
            out[key] = {
                **out.get(key, {"model": r.name}),
                "state": "loaded",
                "error": None,
                "device": self.manager.device,
                "dtype": r.weights.dtype,
                "quantization": r.weights.quantization,
                "memory_bytes": r.weights.footprint_bytes,
                "estimated_bytes": r.estimate_bytes,
                "load_seconds": round(r.weights.load_seconds, 3),
                "in_flight": r.in_flight,
                "keep_alive": r.keep_alive,
                "pinned": r.pinned,
                "expires_at": r.expires_at,
                "context_length": r.context_length,
            }
        return list(out.values())

    def upstream_statuses(self) -> list[dict[str, Any]]:
        return []  # the local models have no upstream

    async def begin_load(self, model: str, *, device: str | None, quantization: str | None) -> dict[str, Any]:
        resolved = self.catalog.resolve(model)
        if device not in (None, "auto", self.manager.device):
            raise InvalidRequest(
                f"device {device!r} is not available here (this server runs on {self.manager.device})",
                param="device",
            )
        if quantization not in (None, "8bit", "4bit", "none"):
            raise InvalidRequest("quantization must be 8bit, 4bit or none", param="quantization")
        if quantization is not None:
            resolved = dataclasses.replace(resolved, quantization=None if quantization == "none" else quantization)  # type: ignore[arg-type]
        key = resolved.load_key
        if self.manager.find(key) is None and not self.manager.is_loading(key):

            async def run() -> None:
                try:
                    await self.manager.ensure(resolved, None)
                except ServiceError as e:
                    log.warning("background load of %s failed: %s", model, e.message)
                except Exception:
                    log.exception("background load of %s failed", model)

            self.manager.status.pop(key, None)
            asyncio.get_running_loop().create_task(run())
            await asyncio.sleep(0)
        st = self.manager.status.get(key)
        state = "loaded" if self.manager.find(key) else (st.state if st else "loading")
        return {"model": model, "state": state, "quantization": resolved.quantization, "requested_at": time.time()}

    def get_config(self, model: str) -> dict[str, Any]:
        resolved = self.catalog.resolve(model)
        if resolved.alias is not None:
            return {"model": model, "alias": True, "options": dict(resolved.alias.options)}
        return {"model": model, "alias": False, "options": dict(self.model_configs.get(resolved.base_name, {}))}

    def put_config(self, model: str, options: dict[str, Any]) -> dict[str, Any]:
        resolved = self.catalog.resolve(model)
        validate_options(options)
        if resolved.alias is not None:
            alias = dataclasses.replace(resolved.alias, options=dict(options), modified_at=time.time())
            self.catalog.put_alias(alias)
        else:
            if not resolved.base_name:
                raise ModelNotFound(model)
            check_options(options, self.settings)  # replayed into every request for the model: bounded like an alias's
            self.model_configs[resolved.base_name] = dict(options)
        return self.get_config(model)

    async def warm(self, req: GenerationRequest) -> int:
        """Prefill `req`'s prompt into the prefix cache without generating; returns the prompt's token count."""
        warm_req = dataclasses.replace(req, sampling=dataclasses.replace(req.sampling, max_tokens=0))
        chunks = await self.engine.start(warm_req)
        tokens = 0
        async for chunk in chunks:
            if chunk.usage is not None:
                tokens = chunk.usage.prompt_tokens
        return tokens
