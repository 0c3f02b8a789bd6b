"""The model-management API: what is available and fits, background loads, status, default options, unload,
and prefix-cache warm-up."""

from __future__ import annotations

from typing import Any, cast

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from app.api.deps import CatalogDep, EngineDep
from app.api.errors import json_depth_guard
from app.api.management.schemas import ConfigUpdate, LoadRequest, UnloadRequest, WarmRequest
from app.engine.base import ModelAdmin
from app.engine.types import GenerationRequest, Message
from app.errors import InvalidRequest

router = APIRouter(prefix="/api/v1", tags=["management"], dependencies=[Depends(json_depth_guard)])


def _admin(engine: object) -> ModelAdmin:
    if not hasattr(engine, "available"):
        raise InvalidRequest("this engine has no model management")
    return cast(ModelAdmin, engine)


@router.get("/models/available")
async def available_models(engine: EngineDep) -> dict[str, Any]:
    """Local, cached and alias models with memory estimates and whether each fits."""
    return {"models": _admin(engine).available()}


@router.post("/models/load", status_code=202)
async def load_model(body: LoadRequest, engine: EngineDep) -> JSONResponse:
    """Start loading a model in the background (202); poll /status."""
    status = await _admin(engine).begin_load(
        body.model_name_or_path, device=body.device, quantization=body.quantization
    )
    return JSONResponse(status, status_code=202)


@router.get("/models/status")
async def model_status(engine: EngineDep) -> dict[str, Any]:
    """Per model: loading, loaded or failed, with settings and memory."""
    return {"models": _admin(engine).statuses()}


@router.get("/models/config")
async def get_model_config(model: str, engine: EngineDep, catalog: CatalogDep) -> dict[str, Any]:
    """Default generation options of a model or alias."""
    return _admin(engine).get_config(model)


@router.put("/models/config")
async def put_model_config(body: ConfigUpdate, engine: EngineDep) -> dict[str, Any]:
    """Replace the default generation options (persisted for aliases)."""
    return _admin(engine).put_config(body.model, body.options)


@router.post("/models/unload")
async def unload_model(body: UnloadRequest, engine: EngineDep) -> dict[str, Any]:
    """Unload a model once its in-flight requests end, a pinned (preloaded) one too: /readyz then answers 503
    until it is loaded again."""
    unloaded = await engine.unload(body.model_name_or_path, force=True)
    return {"model": body.model_name_or_path, "unloaded": unloaded}


@router.post("/cache/warm")
async def warm_cache(body: WarmRequest, request: Request, engine: EngineDep) -> dict[str, Any]:
    """Prefill a conversation prefix into the prefix cache so its first turn is fast."""
    try:
        messages = tuple(Message(role=str(m["role"]), content=str(m.get("content") or "")) for m in body.messages)
    except KeyError:
        raise InvalidRequest("every message needs a role", param="messages") from None
    req = GenerationRequest(
        model=body.model,
        messages=messages,
        tools=tuple(body.tools),
        request_id=getattr(request.state, "request_id", ""),
        protocol="management",
    )
    tokens = await _admin(engine).warm(req)
    return {"model": body.model, "prompt_tokens": tokens}
