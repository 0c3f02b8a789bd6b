"""Alias field sizes and the registry's size are capped when an alias is saved (each a 400 naming the field), and
/api/show's modelfile names the model, never a path on the server."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import InvalidRequest
from app.registry import hfcache
from app.registry.catalog import ModelCatalog
from app.registry.types import Alias
from app.settings import Settings


@pytest.fixture
def catalog(settings: Settings, models_dir: Path, hf_cache: Path) -> ModelCatalog:
    hfcache.invalidate()
    small = {
        "models_dir": models_dir,
        "alias_max_system_bytes": 100,
        "max_template_bytes": 80,
        "alias_max_messages": 3,
        "alias_max_messages_bytes": 300,
        "alias_max_options_bytes": 200,
        "max_stop": 4,
        "max_stop_chars": 10,
        "max_aliases": 3,
    }
    return ModelCatalog(settings.model_copy(update=small), cache_dir=hf_cache)


def msg(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"system": "x" * 101}, "system"),
        ({"system": "é" * 51}, "system"),  # bytes, not characters
        ({"template": "{{ messages }}" + " " * 80}, "template"),
        ({"messages": (msg("a"), msg("b"), msg("c"), msg("d"))}, "messages"),
        ({"messages": (msg("y" * 400),)}, "messages"),
        ({"options": {"stop": ["a"] * 5}}, "stop"),
        ({"options": {"stop": ["x" * 11]}}, "stop"),
        ({"options": {"logit_bias": {str(i): 1.0 for i in range(40)}}}, "parameters"),
    ],
)
def test_oversized_alias_fields_are_refused(catalog: ModelCatalog, fields: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        catalog.put_alias(Alias(name="big", model="mini", **fields))  # type: ignore[arg-type]
    assert info.value.param == param and "HUGLLAMA_" in info.value.message
    assert catalog.get_alias("big") is None


def test_fields_at_the_limit_are_kept(catalog: ModelCatalog) -> None:
    catalog.put_alias(
        Alias(
            name="ok",
            model="mini",
            system="x" * 100,
            messages=(msg("a"), msg("b"), msg("c")),
            options={"stop": ["s"] * 4},
        )
    )
    assert catalog.get_alias("ok") is not None


def test_registry_size_is_capped_but_replacing_is_fine(catalog: ModelCatalog) -> None:
    for i in range(3):
        catalog.put_alias(Alias(name=f"a{i}", model="mini"))
    with pytest.raises(InvalidRequest) as info:
        catalog.put_alias(Alias(name="a3", model="mini"))
    assert info.value.param == "model" and "HUGLLAMA_MAX_ALIASES" in info.value.message
    with pytest.raises(InvalidRequest):
        catalog.copy("a0", "a4")
    catalog.put_alias(Alias(name="a1", model="mini", system="replaced"))  # same name: not a new entry
    catalog.delete("a2")
    catalog.put_alias(Alias(name="a3", model="mini"))
    assert sorted(a.name for a in catalog.store.list()) == ["a0:latest", "a1:latest", "a3:latest"]


def test_show_modelfile_names_the_model_not_a_path(catalog: ModelCatalog, models_dir: Path) -> None:
    for name in ("mini", "tiny-hf"):
        modelfile = catalog.show(name)["modelfile"]
        from_line = next(line for line in modelfile.splitlines() if line.startswith("FROM "))
        assert from_line == f"FROM {name}:latest", from_line
        assert str(models_dir) not in modelfile and "/" not in from_line


def test_model_default_options_are_capped_like_an_alias(settings: Settings) -> None:
    from types import SimpleNamespace

    from app.engine.admin import LocalModelAdmin

    catalog = SimpleNamespace(resolve=lambda name: SimpleNamespace(alias=None, base_name="m:latest"))
    parts = SimpleNamespace(settings=settings, catalog=catalog, manager=None, model_configs={})
    admin = LocalModelAdmin(parts, engine=None)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest) as info:
        admin.put_config("m", {"stop": ["x"] * 17})
    assert info.value.param == "stop" and admin.model_configs == {}
    admin.put_config("m", {"stop": ["x"] * 4, "temperature": 0.2})
    assert admin.model_configs["m:latest"]["temperature"] == 0.2
