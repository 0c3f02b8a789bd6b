"""Shared fixtures: isolated settings (no environment leaks into tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for var in list(__import__("os").environ):
        if var.startswith(("HUGLLAMA_", "OLLAMA_")):
            monkeypatch.delenv(var, raising=False)
    return Settings(home=tmp_path / "home", preload="", log_level="WARNING")
