"""The slow tier's server fixtures, shared with the vLLM tests."""

from __future__ import annotations

from tests.slow.conftest import shared_snapshots

__all__ = ["shared_snapshots"]
