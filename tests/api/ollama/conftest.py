"""Ollama API fixtures: the shared scripted engine under its Ollama-test name."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.api.conftest import ScriptedEngine

ChunkEngine = ScriptedEngine


@pytest.fixture
def chunk_engine() -> Callable[..., ScriptedEngine]:
    return ScriptedEngine
