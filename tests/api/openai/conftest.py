"""OpenAI API fixtures: the shared scripted engine under its OpenAI-test name."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.api.conftest import ScriptedEngine


@pytest.fixture
def scripted() -> Callable[..., ScriptedEngine]:
    """Build a ScriptedEngine: `scripted(chunks, delay=..., ...)`."""
    return ScriptedEngine
