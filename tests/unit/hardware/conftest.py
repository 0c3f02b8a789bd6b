"""Fixtures for the hardware tests: a fake NVML module and the converted model snapshot (slow tier)."""

from __future__ import annotations

from dataclasses import dataclass, field
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
