"""FastAPI dependency aliases: the collaborators `create_app` put on `app.state`, the request's id, and `Call`: all
a protocol handler works with besides its body."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from app.engine.base import Engine
from app.metrics import Metrics
from app.registry.catalog_base import Catalog
from app.settings import Settings


def _state(name: str) -> Callable[[Request], Any]:
    """A dependency that hands out `app.state.<name>` (set once by `create_app`)."""

    def dependency(request: Request) -> Any:
        return getattr(request.app.state, name)

    dependency.__name__ = f"get_{name}"
    return dependency


def request_id(request: Request) -> str:
    """The id the service middleware gave this request (the client's X-Request-Id when well-formed)."""
    return str(getattr(request.state, "request_id", "") or "")


EngineDep = Annotated[Engine, Depends(_state("engine"))]
CatalogDep = Annotated[Catalog, Depends(_state("catalog"))]
SettingsDep = Annotated[Settings, Depends(_state("settings"))]
MetricsDep = Annotated[Metrics, Depends(_state("metrics"))]
RequestIdDep = Annotated[str, Depends(request_id)]


@dataclass(frozen=True, slots=True)
class Call:
    """One protocol call's collaborators: the request (watched for the client leaving), its id, the engine, the
    catalog and the metrics."""

    request: Request
    request_id: str
    engine: Engine
    catalog: Catalog
    metrics: Metrics


def _call(request: Request, rid: RequestIdDep, engine: EngineDep, catalog: CatalogDep, metrics: MetricsDep) -> Call:
    return Call(request, rid, engine, catalog, metrics)


CallDep = Annotated[Call, Depends(_call)]
