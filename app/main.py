"""Composition root: `create_app()` builds the collaborators, wires routers, middleware and error handlers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import __version__
from app.api import errors as api_errors
from app.api import health, middleware
from app.api.management import routes as management_routes
from app.api.ollama import routes as ollama_routes
from app.api.openai import routes as openai_routes
from app.engine.base import Engine, ModelAdmin
from app.lifecycle import Lifecycle
from app.log import configure_logging
from app.metrics import Metrics
from app.registry.catalog_base import Catalog
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)


def build_catalog(settings: Settings) -> Catalog:
    from app.engine.template_sandbox import AliasTemplateCheck, TemplateSandbox
    from app.registry.catalog import ModelCatalog
    from app.registry.store import AliasStore
    from app.remote import build_catalog as build_upstream_catalog

    # Alias templates are user input too: rendered once in a sandboxed process before they are saved.
    sandbox = TemplateSandbox.from_settings(settings)
    check = AliasTemplateCheck(sandbox, settings.max_template_bytes)
    upstream_catalog = build_upstream_catalog(settings, check)  # None without upstreams (README "Remote backends")
    if upstream_catalog is not None:
        return upstream_catalog
    return ModelCatalog(settings, AliasStore(settings.registry_path), template_check=check)


def build_engine(settings: Settings, catalog: Catalog, metrics: Metrics) -> tuple[Engine, ModelAdmin]:
    """The engine and the model admin, built from the same parts."""
    from app.remote.catalog import UpstreamCatalog

    if isinstance(catalog, UpstreamCatalog):  # the local engine sees local names; upstream ones are routed
        from app.remote.admin import RoutingAdmin
        from app.remote.router import RoutingEngine

        local, local_admin = build_engine(settings, catalog.local, metrics)
        model_configs: dict[str, dict[str, object]] = {}  # plain upstream models' options: written by the admin
        routing = RoutingEngine(settings, local, catalog, metrics, model_configs)
        return routing, RoutingAdmin(local_admin, catalog, model_configs)
    from app.engine.admin import LocalModelAdmin
    from app.engine.transformers_engine import TransformersEngine

    engine = TransformersEngine.build(settings, catalog, metrics)
    return engine, LocalModelAdmin(engine.parts, engine)


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    admin: ModelAdmin | None = None,
    catalog: Catalog | None = None,
    metrics: Metrics | None = None,
) -> FastAPI:
    """Build the service. Tests pass their own engine (a test double) and Settings, and the model admin when they
    test management (without one, /api/v1/models/* answer that there is no model management); production passes
    nothing and gets both from `build_engine`."""
    settings = settings or get_settings()
    configure_logging(settings)
    metrics = metrics or Metrics()
    catalog = catalog or build_catalog(settings)
    if engine is None:
        engine, built_admin = build_engine(settings, catalog, metrics)
        admin = admin or built_admin
    lifecycle = Lifecycle(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await engine.startup()
        try:
            yield
        finally:
            await lifecycle.drain()
            await engine.aclose()

    app = FastAPI(
        title="Hugging Llama",
        version=__version__,
        description="Hugging Face transformers models over the Ollama and OpenAI APIs.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.admin = admin
    app.state.catalog = catalog
    app.state.metrics = metrics
    app.state.lifecycle = lifecycle

    api_errors.install(app)
    app.include_router(health.router)
    app.include_router(ollama_routes.router)
    app.include_router(openai_routes.router)
    app.include_router(management_routes.router)

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    middleware.install(app, settings, metrics, lifecycle)
    return app
