"""The engine interface the HTTP layer talks to. No torch, no HTTP types."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from app.engine.types import Chunk, GenerationRequest, RunningModel


class Engine(Protocol):
    async def start(self, req: GenerationRequest) -> AsyncIterator[Chunk]:
        """Admit, resolve, load and render `req`, then return its chunk iterator.

        Everything that can fail before the first token (unknown model, bad option, full queue, failed load)
        raises here, so the HTTP layer can still answer with a real status. Closing the iterator early
        cancels the generation.
        """
        ...

    async def load(self, model: str, *, keep_alive: float | None = None) -> float:
        """Make `model` resident; returns the load time in seconds (0 when already loaded)."""
        ...

    async def unload(self, model: str) -> bool:
        """Unload once in-flight requests end; False when it was not loaded."""
        ...

    def running(self) -> list[RunningModel]: ...

    def alive(self) -> bool:
        """The inference threads are alive (for /livez)."""
        ...

    def ready(self) -> bool:
        """The preloaded models are servable (for /readyz)."""
        ...

    async def aclose(self) -> None: ...
