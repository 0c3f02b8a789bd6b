"""config/aliases.example.json: a registry file the AliasStore reads as is, with valid names and options."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from app.engine.types import SamplingParams
from app.registry.names import parse_name, validate_alias_name
from app.registry.store import AliasStore
from tests.deploy.support import REPO

EXAMPLE = REPO / "config" / "aliases.example.json"


def test_aliases_example_loads_as_a_registry(tmp_path: Path) -> None:
    registry = tmp_path / "registry.json"
    shutil.copy(EXAMPLE, registry)
    aliases = AliasStore(registry).list()
    assert len(aliases) >= 3
    option_names = {f.name for f in dataclasses.fields(SamplingParams)}
    for alias in aliases:
        assert validate_alias_name(alias.name) == alias.name
        parse_name(alias.model)
        assert set(alias.options) <= option_names, alias.name
        assert SamplingParams.from_dict(alias.options).as_dict() == alias.options
        assert alias.quantization in (None, "8bit", "4bit")
    assert any(a.model == "smollm2:135m" for a in aliases), "one alias works offline on the embedded model"
    assert {a.quantization for a in aliases} >= {"8bit", "4bit"}, "shows per-alias quantization"
