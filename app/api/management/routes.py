"""The model-management API: what is available and fits, background loads, status, default options, unload,
and prefix-cache warm-up."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.body import JSONBodyRoute
from app.api.deps import EngineDep, SettingsDep, request_id
from app.api.errors import public_message
from app.api.management import design
from app.api.management.schemas import ConfigUpdate, LoadRequest, UnloadRequest, WarmRequest
from app.engine.base import ModelAdmin
from app.engine.types import GenerationRequest, Message
from app.errors import InvalidRequest

router = APIRouter(prefix="/api/v1", tags=["management"], route_class=JSONBodyRoute)


def _scrubbed(value: Any) -> Any:
    """Load errors quote what the loader said, file paths included: the payload keeps only their last segment."""
    if isinstance(value, dict):
        return {
            k: public_message(v) if k in ("error", "last_error") and isinstance(v, str) else _scrubbed(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    return value


def _admin(request: Request) -> ModelAdmin:
    """The model admin `create_app` was given (an app built over a bare test engine has none)."""
    admin: ModelAdmin | None = request.app.state.admin
    if admin is None:
        raise InvalidRequest("this engine has no model management")
    return admin


@router.get("/models/available")
async def available_models(request: Request) -> dict[str, Any]:
    """Local, cached, upstream and alias models with memory estimates and whether each fits."""
    payload: dict[str, Any] = _scrubbed(design.available_payload(_admin(request).available()))
    return payload


@router.post("/models/load", status_code=202)
async def load_model(body: LoadRequest, request: Request, settings: SettingsDep) -> JSONResponse:
    """Start loading a model in the background (202); poll /status. On an upstream it selects the model there."""
    admin = _admin(request)
    status = await admin.begin_load(
        design.load_name(body.model_name_or_path, settings, admin), device=body.device, quantization=body.quantization
    )
    return JSONResponse(status, status_code=202)


@router.get("/models/status")
async def model_status(request: Request, settings: SettingsDep) -> dict[str, Any]:
    """The backend's active model and state (original design), then per model and per upstream detail."""
    payload: dict[str, Any] = _scrubbed(design.status_payload(_admin(request), settings))
    return payload


@router.get("/models/config")
async def get_model_config(request: Request, settings: SettingsDep, model: str | None = None) -> dict[str, Any]:
    """Default generation options of a model or alias (default: the active model), flat and as options."""
    name = model or design.active_model(request.app.state.admin, settings)
    if not name:
        raise InvalidRequest("model is required (no active model)", param="model")
    return design.config_payload(_admin(request).get_config(name), settings)


@router.put("/models/config")
async def put_model_config(body: ConfigUpdate, request: Request, settings: SettingsDep) -> dict[str, Any]:
    """Replace the default options, or update the flat fields given (persisted for aliases)."""
    admin = _admin(request)
    name = body.model or design.active_model(admin, settings)
    if not name:
        raise InvalidRequest("model is required (no active model)", param="model")
    flat = {design.FLAT_FIELDS[k]: v for k, v in body.model_dump(exclude_none=True).items() if k in design.FLAT_FIELDS}
    if body.options is None and not flat:
        raise InvalidRequest("options or one of " + ", ".join(design.FLAT_FIELDS) + " is required", param="options")
    options = body.options if body.options is not None else {**admin.get_config(name)["options"], **flat}
    return design.config_payload(admin.put_config(name, {**options, **flat}), settings)


@router.post("/models/unload")
async def unload_model(body: UnloadRequest, engine: EngineDep) -> dict[str, Any]:
    """Unload a model once its in-flight requests end, a pinned (preloaded) one too: /readyz then answers 503
    until it is loaded again."""
    unloaded = await engine.unload(body.model_name_or_path, force=True)
    return {"model": body.model_name_or_path, "unloaded": unloaded}


@router.post("/cache/warm")
async def warm_cache(body: WarmRequest, request: Request) -> dict[str, Any]:
    """Prefill a conversation prefix into the prefix cache so its first turn is fast."""
    try:
        messages = tuple(Message(role=str(m["role"]), content=str(m.get("content") or "")) for m in body.messages)
    except KeyError:
        raise InvalidRequest("every message needs a role", param="messages") from None
    req = GenerationRequest(
        model=body.model,
        messages=messages,
        tools=tuple(body.tools),
        request_id=request_id(request),
        protocol="management",
    )
    tokens = await _admin(request).warm(req)
    return {"model": body.model, "prompt_tokens": tokens}
