"""Remote backends: models served by Ollama, vLLM, InstructLab and other OpenAI-compatible servers, used through
this service's Ollama and OpenAI APIs with its aliases, auth, limits and metrics (README "Remote backends")."""

from __future__ import annotations

from collections.abc import Callable

from app.registry.store import AliasStore
from app.remote.catalog import LocalCatalog, UpstreamCatalog
from app.remote.config import load_upstreams
from app.remote.upstream import Upstream
from app.settings import Settings


def build_catalog(settings: Settings, template_check: Callable[[str], None] | None = None) -> UpstreamCatalog | None:
    """The catalog with the configured upstreams, or None when there are none (the local catalog is used)."""
    configs = load_upstreams(settings)
    if not configs:
        return None
    upstreams = {c.name: Upstream(c) for c in configs}
    local = LocalCatalog(settings, AliasStore(settings.registry_path), set(upstreams), template_check)
    return UpstreamCatalog(local, upstreams)
