"""The engine interface the HTTP layer talks to, and the model admin's. No torch, no HTTP types.

Every capability is declared here and every engine implements it (a no-op where it means nothing), so callers
never look methods up by name. `resolved` parameters carry the catalog's answer for a name when the caller already
has it (the router resolves to choose the engine), so the engine that serves the model does not resolve it again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from app.engine.types import Chunk, EmbeddingRequest, Embeddings, GenerationRequest, RunningModel
from app.registry.types import ResolvedModel


class Engine(Protocol):
    async def startup(self) -> None:
        """Start background work (the keep_alive reaper, preloads, upstream health checks); once, before serving."""
        ...

    async def start(self, req: GenerationRequest, resolved: ResolvedModel | None = None) -> AsyncIterator[Chunk]:
        """Admit, resolve, load and render `req`, then return its chunk iterator.

        Everything that can fail before the first token (unknown model, bad option, full queue, failed load)
        raises here, so the HTTP layer can still answer with a real status. Closing the iterator early
        cancels the generation.
        """
        ...

    async def embed(self, req: EmbeddingRequest, resolved: ResolvedModel | None = None) -> Embeddings:
        """One vector per input, in order (raises like `start` for an unknown model or a bad field)."""
        ...

    async def load(
        self, model: str, *, keep_alive: float | None = None, resolved: ResolvedModel | None = None
    ) -> float:
        """Make `model` resident; returns the load time in seconds (0 when already loaded)."""
        ...

    async def unload(self, model: str, *, force: bool = False, resolved: ResolvedModel | None = None) -> bool:
        """Unload once in-flight requests end; False when it was not loaded or is pinned (preloaded) and not
        `force`d."""
        ...

    def running(self) -> list[RunningModel]: ...

    def alive(self) -> bool:
        """The inference threads are alive (for /livez)."""
        ...

    def ready(self) -> bool:
        """The preloaded models are servable (for /readyz)."""
        ...

    async def probe(self) -> bool:
        """HUGLLAMA_READINESS=generate: one real token (or vector) from the first preloaded model; True without one."""
        ...

    async def aclose(self) -> None: ...


class ModelAdmin(Protocol):
    """The model-management API's view of the models (/api/v1/models/*, /api/v1/cache/warm): an object of its own,
    built from the engine's parts and handed to `create_app` beside the engine."""

    def available(self) -> list[dict[str, Any]]:
        """Every servable model and alias with its memory estimate and whether it fits now."""
        ...

    def statuses(self) -> list[dict[str, Any]]:
        """Per model: loading, loaded or failed (with the error), load settings and memory."""
        ...

    def upstream_statuses(self) -> list[dict[str, Any]]:
        """Per upstream backend: its URL, health, models and selected model (empty without upstreams)."""
        ...

    async def begin_load(self, model: str, *, device: str | None, quantization: str | None) -> dict[str, Any]:
        """Start loading in the background; returns the status entry at once."""
        ...

    def get_config(self, model: str) -> dict[str, Any]: ...

    def put_config(self, model: str, options: dict[str, Any]) -> dict[str, Any]: ...

    async def warm(self, req: GenerationRequest) -> int:
        """Prefill a prompt into the prefix cache; returns its token count."""
        ...
