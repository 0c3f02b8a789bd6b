"""API-tier fixtures: the real app with a FakeEngine and an in-memory catalog."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.engine.fake import FakeEngine
from app.errors import InvalidRequest, ModelNotFound
from app.main import create_app
from app.registry.types import Alias, ModelEntry, ModelSource, ResolvedModel
from app.settings import Settings


class FakeCatalog:
    """Catalog with one base model and whatever aliases tests put in."""

    def __init__(self, base: str = "smollm2:135m") -> None:
        self.base = base
        self.aliases: dict[str, Alias] = {}
        self.source = ModelSource(kind="embedded", path=Path("/nonexistent"), gguf_file="m.gguf")

    def _key(self, name: str) -> str:
        name = name.lower()
        return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"

    def list_models(self) -> list[ModelEntry]:
        entries = [
            ModelEntry(
                name=self.base,
                size_bytes=98_000_000,
                digest="a" * 64,
                modified_at=time.time(),
                format="gguf",
                family="llama",
                parameter_size="135M",
                quantization_level="Q4_1",
                context_length=8192,
            )
        ]
        for a in self.aliases.values():
            entries.append(
                ModelEntry(
                    name=a.name,
                    size_bytes=98_000_000,
                    digest="b" * 64,
                    modified_at=a.modified_at,
                    format="gguf",
                    family="llama",
                    parameter_size="135M",
                    quantization_level="Q4_1",
                    is_alias=True,
                    base=a.model,
                )
            )
        return entries

    def resolve(self, name: str) -> ResolvedModel:
        if not name or "/.." in name or name.startswith("/"):
            raise InvalidRequest(f"invalid model name {name!r}", param="model")
        key = self._key(name)
        if key in self.aliases:
            a = self.aliases[key]
            return ResolvedModel(
                requested=name, base_name=self.base, source=self.source, alias=a, quantization=a.quantization
            )
        if key in (self.base, self.base + ":latest") or name.lower() == self.base:
            return ResolvedModel(requested=name, base_name=self.base, source=self.source)
        raise ModelNotFound(name)

    def show(self, name: str) -> dict[str, Any]:
        r = self.resolve(name)
        return {
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "llama",
                "families": ["llama"],
                "parameter_size": "135M",
                "quantization_level": "Q4_1",
            },
            "model_info": {"general.architecture": "llama", "general.parameter_count": 134515008},
            "template": "{{ messages }}",
            "system": r.alias.system if r.alias else None,
            "parameters": "",
            "modelfile": f"FROM {r.base_name}\n",
            "capabilities": ["completion", "tools"],
            "modified_at": time.time(),
        }

    def get_alias(self, name: str) -> Alias | None:
        return self.aliases.get(self._key(name))

    def put_alias(self, alias: Alias) -> None:
        self.resolve(alias.model)
        self.aliases[self._key(alias.name)] = alias

    def delete(self, name: str) -> None:
        if self.aliases.pop(self._key(name), None) is None:
            raise ModelNotFound(name)

    def copy(self, source: str, destination: str) -> None:
        a = self.get_alias(source)
        if a is None:
            self.resolve(source)
            a = Alias(name=destination, model=source)
        self.aliases[self._key(destination)] = (
            Alias(**{**a.__dict__, "name": destination})
            if hasattr(a, "__dict__")
            else Alias.from_json(destination, a.to_json())
        )


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def fake_catalog() -> FakeCatalog:
    return FakeCatalog()


@pytest.fixture
def app_factory(settings: Settings, fake_engine: FakeEngine, fake_catalog: FakeCatalog) -> Any:
    def make(**overrides: Any) -> Any:
        s = settings.model_copy(update=overrides) if overrides else settings
        return create_app(s, engine=fake_engine, catalog=fake_catalog)

    return make


@pytest.fixture
def client(app_factory: Any) -> Iterator[TestClient]:
    with TestClient(app_factory()) as c:
        yield c
