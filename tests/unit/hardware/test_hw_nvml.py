from __future__ import annotations

import sys

import pytest

from app.hardware.nvml import GpuInfo, NvmlReader

from .conftest import FakeNvml

GIB = 1 << 30


def test_devices_reads_every_gpu(fake_nvml: FakeNvml) -> None:
    gpus = NvmlReader(fake_nvml).devices()
    assert gpus == [
        GpuInfo(0, "NVIDIA A10G", 24 * GIB, 20 * GIB, 4 * GIB, "GPU-aaaa1111-0000-0000-0000-000000000000"),
        GpuInfo(1, "NVIDIA L4", 22 * GIB, 10 * GIB, 12 * GIB, "GPU-bbbb2222-0000-0000-0000-000000000000"),
    ]
    assert fake_nvml.calls == ["init", "shutdown"]


def test_bytes_names_are_decoded(fake_nvml: FakeNvml) -> None:
    assert all(isinstance(g.name, str) for g in NvmlReader(fake_nvml).devices())


def test_init_failure_means_no_gpus(fake_nvml: FakeNvml) -> None:
    fake_nvml.fail_init = True
    assert NvmlReader(fake_nvml).devices() == []


def test_one_broken_device_does_not_hide_the_others(fake_nvml: FakeNvml) -> None:
    fake_nvml.bad = {0}
    gpus = NvmlReader(fake_nvml).devices()
    assert [g.index for g in gpus] == [1]
    assert fake_nvml.calls[-1] == "shutdown"


def test_count_failure_still_shuts_down(fake_nvml: FakeNvml) -> None:
    fake_nvml.fail_count = True
    assert NvmlReader(fake_nvml).devices() == []
    assert fake_nvml.calls == ["init", "shutdown"]


def test_missing_pynvml_means_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    assert NvmlReader().devices() == []
