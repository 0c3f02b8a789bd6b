"""The engine interface the HTTP layer talks to. No torch, no HTTP types."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from app.engine.types import Chunk, EmbeddingRequest, Embeddings, GenerationRequest, RunningModel


class Engine(Protocol):
    async def start(self, req: GenerationRequest) -> AsyncIterator[Chunk]:
        """Admit, resolve, load and render `req`, then return its chunk iterator.

        Everything that can fail before the first token (unknown model, bad option, full queue, failed load)
        raises here, so the HTTP layer can still answer with a real status. Closing the iterator early
        cancels the generation.
        """
        ...

    async def embed(self, req: EmbeddingRequest) -> Embeddings:
        """One vector per input, in order (raises like `start` for an unknown model or a bad field)."""
        ...

    async def load(self, model: str, *, keep_alive: float | None = None) -> float:
        """Make `model` resident; returns the load time in seconds (0 when already loaded)."""
        ...

    async def unload(self, model: str, *, force: bool = False) -> bool:
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

    async def aclose(self) -> None: ...


class ModelAdmin(Protocol):
    """The model-management API's view of the engine (/api/v1/models/*, /api/v1/cache/warm)."""

    def available(self) -> list[dict[str, Any]]:
        """Every servable model and alias with its memory estimate and whether it fits now."""
        ...

    def statuses(self) -> list[dict[str, Any]]:
        """Per model: loading, loaded or failed (with the error), load settings and memory."""
        ...

    async def begin_load(self, model: str, *, device: str | None, quantization: str | None) -> dict[str, Any]:
        """Start loading in the background; returns the status entry at once."""
        ...

    def get_config(self, model: str) -> dict[str, Any]: ...

    def put_config(self, model: str, options: dict[str, Any]) -> dict[str, Any]: ...

    async def warm(self, req: GenerationRequest) -> int:
        """Prefill a prompt into the prefix cache; returns its token count."""
        ...
