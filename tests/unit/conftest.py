"""Fast-tier fixtures shared across unit packages."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.registry import hfcache


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """An empty Hugging Face cache directory (and the cache scan's memo dropped, so no other test's cache shows)."""
    hfcache.invalidate()
    return tmp_path / "hub-cache"
