"""The catalog interface: what the HTTP layer and the engine ask the registry."""

from __future__ import annotations

from typing import Any, Protocol

from app.registry.types import Alias, ModelEntry, ResolvedModel


class Catalog(Protocol):
    def list_models(self) -> list[ModelEntry]:
        """Every servable name: the embedded model, local models, the HF cache, and aliases."""
        ...

    def resolve(self, name: str) -> ResolvedModel:
        """Raises ModelNotFound (unknown) or InvalidRequest (malformed name)."""
        ...

    def show(self, name: str) -> dict[str, Any]:
        """Facts for /api/show: details, model_info, template, parameters, system, modelfile, capabilities."""
        ...

    def get_alias(self, name: str) -> Alias | None: ...

    def put_alias(self, alias: Alias) -> None: ...

    def delete(self, name: str) -> None:
        """Remove an alias, or a pulled model and its converted snapshot. Raises ModelNotFound."""
        ...

    def copy(self, source: str, destination: str) -> None: ...
