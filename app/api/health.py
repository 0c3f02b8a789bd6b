"""Probes (/livez, /readyz, /health) and Ollama's `/` and `/api/version`."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from app import __version__
from app.api.deps import EngineDep, SettingsDep
from app.lifecycle import Lifecycle

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/", include_in_schema=False)
@router.head("/", include_in_schema=False)
async def root() -> Response:
    """Ollama's liveness answer."""
    return PlainTextResponse("Ollama is running")


@router.get("/api/version", tags=["ollama"])
async def version() -> dict[str, str]:
    """Server version."""
    return {"version": __version__}


@router.get("/livez")
async def livez(engine: EngineDep) -> Response:
    """The process and its inference threads are alive."""
    if engine.alive():
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "engine dead"}, status_code=503)


async def _ready(request: Request, engine: EngineDep, settings: SettingsDep) -> Response:
    lifecycle: Lifecycle = request.app.state.lifecycle
    if lifecycle.draining:
        return JSONResponse({"status": "draining"}, status_code=503, headers={"Retry-After": "5"})
    if settings.readiness != "server" and not engine.ready():
        return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "5"})
    if settings.readiness == "generate":
        if not await engine.probe():
            return JSONResponse({"status": "generation probe failed"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request, engine: EngineDep, settings: SettingsDep) -> Response:
    """Ready to serve: the preloaded models are loaded (see HUGLLAMA_READINESS)."""
    return await _ready(request, engine, settings)


@router.get("/health")
async def health(request: Request, engine: EngineDep, settings: SettingsDep) -> Response:
    """Alias of /readyz."""
    return await _ready(request, engine, settings)
