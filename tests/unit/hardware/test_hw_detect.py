from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from app.errors import InvalidRequest, ServiceError
from app.hardware import detect
from app.hardware.detect import (
    DeviceMemory,
    DeviceUnavailable,
    cgroup_memory,
    choose_device,
    choose_dtype,
    device_map_for,
    gpu_memory,
    memory_for,
    system_memory,
    visible_gpus,
)
from app.hardware.nvml import GpuInfo, NvmlReader

from .conftest import FakeNvml

GIB = 1 << 30
MIB = 1 << 20


def _v2(root: Path, limit: str, current: int, inactive: int = 0, sub: str = "") -> Path:
    d = root / sub if sub else root
    d.mkdir(parents=True, exist_ok=True)
    (d / "memory.max").write_text(limit + "\n")
    (d / "memory.current").write_text(f"{current}\n")
    (d / "memory.stat").write_text(f"anon 123\ninactive_file {inactive}\nactive_file 7\n")
    return d


def _v1(root: Path, limit: int, usage: int, inactive: int = 0) -> None:
    d = root / "memory"
    d.mkdir(parents=True)
    (d / "memory.limit_in_bytes").write_text(f"{limit}\n")
    (d / "memory.usage_in_bytes").write_text(f"{usage}\n")
    (d / "memory.stat").write_text(f"cache 1\ninactive_file 5\ntotal_inactive_file {inactive}\n")


# --- cgroups ---


def test_cgroup_v2_limit_minus_working_set(tmp_path: Path) -> None:
    _v2(tmp_path, str(2 * GIB), current=GIB, inactive=256 * MIB)
    assert cgroup_memory(tmp_path, proc_cgroup="0::/\n") == (2 * GIB, GIB - 256 * MIB)


def test_cgroup_v2_max_is_unlimited(tmp_path: Path) -> None:
    _v2(tmp_path, "max", current=GIB)
    assert cgroup_memory(tmp_path, proc_cgroup="0::/\n") is None


def test_cgroup_v2_nested_path_from_proc_self(tmp_path: Path) -> None:
    _v2(tmp_path, "max", current=GIB)
    _v2(tmp_path, str(GIB), current=100 * MIB, sub="kubepods/pod1")
    assert cgroup_memory(tmp_path, proc_cgroup="0::/kubepods/pod1\n") == (GIB, 100 * MIB)


def test_cgroup_v1_limit(tmp_path: Path) -> None:
    _v1(tmp_path, limit=3 * GIB, usage=2 * GIB, inactive=GIB)
    assert cgroup_memory(tmp_path, proc_cgroup="4:memory:/\n") == (3 * GIB, GIB)


def test_cgroup_v1_huge_limit_is_unlimited(tmp_path: Path) -> None:
    _v1(tmp_path, limit=9223372036854771712, usage=GIB)
    assert cgroup_memory(tmp_path, proc_cgroup="4:memory:/\n") is None


def test_no_cgroup_files(tmp_path: Path) -> None:
    assert cgroup_memory(tmp_path, proc_cgroup="") is None


def test_system_memory_honours_a_lower_cgroup_limit(tmp_path: Path) -> None:
    _v2(tmp_path, str(512 * MIB), current=200 * MIB, inactive=50 * MIB)
    mem = system_memory(tmp_path, proc_cgroup="0::/\n")
    assert mem == DeviceMemory("cpu", 512 * MIB, 362 * MIB, "system RAM")


def test_system_memory_without_limit_is_psutil(tmp_path: Path) -> None:
    mem = system_memory(tmp_path, proc_cgroup="")
    vm = psutil.virtual_memory()
    assert mem.device == "cpu"
    assert mem.total_bytes == vm.total
    assert 0 < mem.free_bytes <= vm.total


# --- GPUs ---


def _gpus() -> list[GpuInfo]:
    return [
        GpuInfo(0, "A", 10, 5, 5, "GPU-aaaa-1"),
        GpuInfo(1, "B", 20, 6, 14, "GPU-bbbb-2"),
        GpuInfo(2, "C", 30, 7, 23, "GPU-cccc-3"),
    ]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (None, [0, 1, 2]),
        ("2,0", [2, 0]),
        ("1", [1]),
        ("", []),
        ("0,7,1", [0]),  # CUDA stops at the first invalid entry
        ("-1", []),
        ("GPU-cccc,GPU-aaaa-1", [2, 0]),
        ("0,0", [0]),
    ],
)
def test_visible_gpus(env: str | None, expected: list[int]) -> None:
    assert [g.index for g in visible_gpus(_gpus(), env)] == expected


def test_gpu_memory_from_nvml_alone(fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(detect, "_torch_if_loaded", lambda: None)
    mems = gpu_memory(NvmlReader(fake_nvml))
    assert mems == [
        DeviceMemory("cuda:0", 24 * GIB, 20 * GIB, "NVIDIA A10G"),
        DeviceMemory("cuda:1", 22 * GIB, 10 * GIB, "NVIDIA L4"),
    ]


def test_gpu_memory_respects_cuda_visible_devices(fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setattr(detect, "_torch_if_loaded", lambda: None)
    assert [(m.device, m.name) for m in gpu_memory(NvmlReader(fake_nvml))] == [("cuda:0", "NVIDIA L4")]


def _fake_torch(devices: list[tuple[str, int, int]], available: bool = True) -> Any:
    """uuid (no GPU- prefix), free, total per CUDA device."""
    cuda = SimpleNamespace(
        is_available=lambda: available,
        device_count=lambda: len(devices),
        mem_get_info=lambda i: (devices[i][1], devices[i][2]),
        get_device_properties=lambda i: SimpleNamespace(uuid=devices[i][0]),
    )
    return SimpleNamespace(cuda=cuda)


def test_gpu_memory_takes_the_smaller_free_value(fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    # torch sees the GPUs in the other order (CUDA_DEVICE_ORDER); matching is by UUID.
    torch = _fake_torch(
        [
            ("bbbb2222-0000-0000-0000-000000000000", 12 * GIB, 22 * GIB),
            ("aaaa1111-0000-0000-0000-000000000000", 18 * GIB, 24 * GIB),
        ]
    )
    mems = gpu_memory(NvmlReader(fake_nvml), torch_module=torch)
    assert mems == [
        DeviceMemory("cuda:0", 22 * GIB, 10 * GIB, "NVIDIA L4"),
        DeviceMemory("cuda:1", 24 * GIB, 18 * GIB, "NVIDIA A10G"),
    ]


def test_gpu_memory_ignores_torch_without_cuda(fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    torch = _fake_torch([("x", 1, 1)], available=False)
    assert [m.free_bytes for m in gpu_memory(NvmlReader(fake_nvml), torch_module=torch)] == [20 * GIB, 10 * GIB]


def test_memory_for_cuda_sums_gpus(fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(detect, "_torch_if_loaded", lambda: None)
    pool = memory_for("cuda", NvmlReader(fake_nvml))
    assert (pool.device, pool.total_bytes, pool.free_bytes) == ("cuda", 46 * GIB, 30 * GIB)
    assert "2 x" in pool.name
    one = memory_for("cuda:1", NvmlReader(fake_nvml))
    assert (one.device, one.free_bytes) == ("cuda:1", 10 * GIB)
    assert memory_for("cuda", NvmlReader(FakeNvml())).free_bytes == 0


def test_memory_for_cpu_is_system_ram(tmp_path: Path) -> None:
    _v2(tmp_path, str(GIB), current=0)
    # The real /proc/self/cgroup may point elsewhere; the root limit of the fake tree still applies.
    pool = memory_for("cpu", cgroup_root=tmp_path)
    assert pool.device == "cpu"
    assert pool.total_bytes == min(GIB, psutil.virtual_memory().total)
    assert memory_for("mps", cgroup_root=tmp_path).device == "mps"


# --- device and dtype ---


@pytest.mark.parametrize(
    ("cuda", "mps", "setting", "expected"),
    [
        (True, True, "auto", "cuda"),
        (False, True, "auto", "mps"),
        (False, False, "auto", "cpu"),
        (True, False, "cpu", "cpu"),
        (True, False, "cuda", "cuda"),
        (True, False, "CUDA:1", "cuda:1"),
        (False, True, "mps", "mps"),
    ],
)
def test_choose_device(cuda: bool, mps: bool, setting: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detect, "_cuda_available", lambda: cuda)
    monkeypatch.setattr(detect, "_mps_available", lambda: mps)
    assert choose_device(setting) == expected


@pytest.mark.parametrize("setting", ["cuda", "cuda:0", "mps"])
def test_explicit_missing_device_is_a_clear_config_error(setting: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detect, "_cuda_available", lambda: False)
    monkeypatch.setattr(detect, "_mps_available", lambda: False)
    with pytest.raises(DeviceUnavailable) as info:
        choose_device(setting)
    assert isinstance(info.value, ServiceError)
    assert "HUGLLAMA_DEVICE" in info.value.message


def test_unknown_device_is_invalid() -> None:
    with pytest.raises(InvalidRequest) as info:
        choose_device("tpu")
    assert info.value.param == "device"


def test_choose_device_on_this_machine() -> None:
    import torch

    expected = "cuda" if torch.cuda.is_available() else None
    got = choose_device("auto")
    assert got == expected or (expected is None and got in ("mps", "cpu"))


@pytest.mark.parametrize(
    ("setting", "device", "bf16", "expected"),
    [
        ("auto", "cpu", False, "float32"),
        ("auto", "mps", False, "float16"),
        ("auto", "cuda", True, "bfloat16"),
        ("auto", "cuda:1", False, "float16"),
        ("bf16", "cpu", False, "bfloat16"),
        ("float16", "cuda", True, "float16"),
        ("torch.float32", "cuda", True, "float32"),
    ],
)
def test_choose_dtype(setting: str, device: str, bf16: bool, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert choose_dtype(setting, device) == expected


def test_unknown_dtype_is_invalid() -> None:
    with pytest.raises(InvalidRequest) as info:
        choose_dtype("int3", "cpu")
    assert info.value.param == "dtype"


@pytest.mark.parametrize(
    ("device", "count", "expected"),
    [("cpu", None, None), ("mps", None, "mps"), ("cuda", 1, {"": 0}), ("cuda", 4, "auto"), ("cuda:2", None, {"": 2})],
)
def test_device_map_for(device: str, count: int | None, expected: object) -> None:
    assert device_map_for(device, count) == expected


def test_importing_hardware_does_not_import_torch_or_pynvml() -> None:
    code = (
        "import sys, app.hardware.detect, app.hardware.estimate, app.hardware.planning, app.hardware.nvml;"
        "bad = [m for m in ('torch', 'pynvml', 'transformers') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[3], timeout=60)
