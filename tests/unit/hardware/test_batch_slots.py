"""Batch slots sized by memory when HUGLLAMA_NUM_PARALLEL is unset (issue 17: c=32 must decode 32 rows)."""

from __future__ import annotations

import pytest

from app.hardware.planning import AUTO_SLOTS_MAX, batch_slots
from app.settings import Settings

GIB = 1024**3
SMOLLM2_FP32 = 2 * 30 * 3 * 64 * 4  # bytes of K and V per token: layers x kv heads x head dim x fp32


def test_an_explicit_setting_wins() -> None:
    assert batch_slots(16, 100 * GIB, SMOLLM2_FP32, 4096) == 16
    assert batch_slots(1, 0, SMOLLM2_FP32, 4096) == 1


def test_unset_is_sized_by_free_memory() -> None:
    # 18 GiB free: half of it holds 51 full 4096-token rows of the embedded model in fp32 (189 MB each).
    assert batch_slots(None, 18 * GIB, SMOLLM2_FP32, 4096) == 51
    # A shorter context fits more rows, up to the cap; little memory gives few rows, never none.
    assert batch_slots(None, 18 * GIB, SMOLLM2_FP32, 1024) == AUTO_SLOTS_MAX
    assert batch_slots(None, 1 * GIB, SMOLLM2_FP32, 4096) == 2
    assert batch_slots(None, 0, SMOLLM2_FP32, 4096) == 1


def test_the_setting_is_unset_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUGLLAMA_NUM_PARALLEL", raising=False)
    monkeypatch.delenv("OLLAMA_NUM_PARALLEL", raising=False)
    assert Settings().num_parallel is None
