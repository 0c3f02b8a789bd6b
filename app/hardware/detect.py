"""Know the machine: which device and dtype to run on, and how much memory each device has free.

torch is imported inside functions only, so that importing this module (the CLI's `list`) stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from app.errors import InvalidRequest, ServiceError
from app.hardware.nvml import GpuInfo, NvmlReader

CGROUP_ROOT = Path("/sys/fs/cgroup")
# cgroup v1 reports "no limit" as a page-rounded LONG_MAX; anything this large is no limit.
_NO_LIMIT = 1 << 60

_DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "f32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "f16": "float16",
    "half": "float16",
}


class DeviceUnavailable(ServiceError):
    """The configured device (HUGLLAMA_DEVICE) does not exist on this machine."""

    code = "device_unavailable"


@dataclass(frozen=True, slots=True)
class DeviceMemory:
    """One memory pool a model can draw from. `device` is "cuda:0", "cuda" (all GPUs), "cpu" or "mps"."""

    device: str
    total_bytes: int
    free_bytes: int
    name: str

    @property
    def used_bytes(self) -> int:
        return max(0, self.total_bytes - self.free_bytes)


# --- system RAM and cgroups ---


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _self_cgroup_paths(proc_cgroup: str | None) -> tuple[str | None, str | None]:
    """(v2 path, v1 memory path) of this process from /proc/self/cgroup, relative to the mount."""
    if proc_cgroup is None:
        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None, None
    v2: str | None = None
    v1: str | None = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def cgroup_memory(root: Path = CGROUP_ROOT, *, proc_cgroup: str | None = None) -> tuple[int, int] | None:
    """(limit, usage) of the tightest cgroup memory limit on this process, or None if unlimited.

    Usage excludes inactive page cache (the kernel reclaims it before the OOM killer runs), as the kubelet's
    working-set figure does.
    """
    v2_rel, v1_rel = _self_cgroup_paths(proc_cgroup)
    candidates: list[tuple[Path, str, str, str]] = []
    for rel in ("", v2_rel):
        if rel is None:
            continue
        d = root / rel.lstrip("/") if rel else root
        candidates.append((d, "memory.max", "memory.current", "inactive_file"))
    for rel in ("", v1_rel):
        if rel is None:
            continue
        d = root / "memory" / rel.lstrip("/") if rel else root / "memory"
        candidates.append((d, "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"))
    best: tuple[int, int] | None = None
    seen: set[Path] = set()
    for d, limit_file, usage_file, inactive_key in candidates:
        if d in seen:
            continue
        seen.add(d)
        limit = _read_int(d / limit_file)
        if limit is None or limit >= _NO_LIMIT:
            continue
        usage = _read_int(d / usage_file) or 0
        usage = max(0, usage - _stat_value(d / "memory.stat", inactive_key))
        if best is None or limit - usage < best[0] - best[1]:
            best = (limit, usage)
    return best


def system_memory(cgroup_root: Path = CGROUP_ROOT, *, proc_cgroup: str | None = None) -> DeviceMemory:
    """System RAM: psutil's available figure, capped by a container's cgroup limit when that is lower."""
    vm = psutil.virtual_memory()
    total, free = int(vm.total), int(vm.available)
    limited = cgroup_memory(cgroup_root, proc_cgroup=proc_cgroup)
    if limited is not None:
        limit, usage = limited
        total = min(total, limit)
        free = min(free, max(0, limit - usage))
    return DeviceMemory(device="cpu", total_bytes=total, free_bytes=free, name="system RAM")


# --- GPUs ---


def _norm_uuid(uuid: str | None) -> str | None:
    if not uuid:
        return None
    u = uuid.strip().lower()
    return u[4:] if u.startswith("gpu-") else u


def visible_gpus(gpus: Sequence[GpuInfo], cuda_visible_devices: str | None) -> list[GpuInfo]:
    """NVML's devices in CUDA's order: CUDA_VISIBLE_DEVICES picks and reorders them (indices or UUID prefixes)."""
    if cuda_visible_devices is None:
        return list(gpus)
    out: list[GpuInfo] = []
    for item in cuda_visible_devices.split(","):
        item = item.strip()
        if not item:
            break
        match: GpuInfo | None = None
        if item.lstrip("-").isdigit():
            idx = int(item)
            if idx < 0:
                break  # CUDA stops at the first invalid entry
            match = next((g for g in gpus if g.index == idx), None)
        else:
            want = _norm_uuid(item)
            match = next((g for g in gpus if want and (_norm_uuid(g.uuid) or "").startswith(want)), None)
        if match is None:
            break
        if match not in out:
            out.append(match)
    return out


def _torch_if_loaded() -> Any | None:
    return sys.modules.get("torch")


def _torch_cuda_free(torch: Any) -> list[tuple[str | None, int, int]]:
    """(uuid, free, total) per visible CUDA device, from the CUDA runtime itself."""
    out: list[tuple[str | None, int, int]] = []
    for i in range(int(torch.cuda.device_count())):
        free, total = torch.cuda.mem_get_info(i)
        uuid = getattr(torch.cuda.get_device_properties(i), "uuid", None)
        out.append((_norm_uuid(str(uuid)) if uuid is not None else None, int(free), int(total)))
    return out


def gpu_memory(reader: NvmlReader | None = None, *, torch_module: Any | None = None) -> list[DeviceMemory]:
    """Each visible GPU as "cuda:<n>" (CUDA's numbering).

    When torch is loaded with CUDA (the server) its `mem_get_info` is cross-checked and the smaller free value
    wins (NVML and the caching allocator disagree in both directions); otherwise NVML alone (the CLI, which
    must not pay for importing torch). `torch_module` is the seam for tests.
    """
    nvml = visible_gpus((reader or NvmlReader()).devices(), os.environ.get("CUDA_VISIBLE_DEVICES"))
    torch = torch_module if torch_module is not None else _torch_if_loaded()
    cuda: list[tuple[str | None, int, int]] = []
    if torch is not None:
        try:
            if torch.cuda.is_available():
                cuda = _torch_cuda_free(torch)
        except Exception:  # a broken driver must not break /api/ps
            cuda = []
    if not cuda:
        return [DeviceMemory(f"cuda:{n}", g.total_bytes, g.free_bytes, g.name) for n, g in enumerate(nvml)]
    by_uuid = {_norm_uuid(g.uuid): g for g in nvml if g.uuid}
    out: list[DeviceMemory] = []
    for n, (uuid, free, total) in enumerate(cuda):
        g = by_uuid.get(uuid) if uuid else None
        if g is None and uuid is None and n < len(nvml):
            g = nvml[n]
        name = g.name if g is not None else "CUDA device"
        nv_free = g.free_bytes if g is not None else free
        out.append(DeviceMemory(f"cuda:{n}", total, min(free, nv_free), name))
    return out


# --- device, dtype, pool ---


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def choose_device(setting: str) -> str:
    """ "auto" picks cuda, then mps, then cpu; an explicit device that is missing is a configuration error."""
    s = setting.strip().lower()
    if s == "auto":
        if _cuda_available():
            return "cuda"
        if _mps_available():
            return "mps"
        return "cpu"
    if s == "cpu":
        return "cpu"
    if s == "cuda" or s.startswith("cuda:"):
        if not _cuda_available():
            raise DeviceUnavailable(
                f"device {setting!r} was requested (HUGLLAMA_DEVICE) but CUDA is not available: no NVIDIA driver "
                "or a CPU-only torch build; set HUGLLAMA_DEVICE=auto or cpu"
            )
        return s
    if s == "mps":
        if not _mps_available():
            raise DeviceUnavailable(
                "device 'mps' was requested (HUGLLAMA_DEVICE) but Apple MPS is not available; "
                "set HUGLLAMA_DEVICE=auto or cpu"
            )
        return "mps"
    raise InvalidRequest(f"unknown device {setting!r}; expected auto, cuda, cuda:N, mps or cpu", param="device")


def normalize_dtype(name: str) -> str:
    """Canonical torch dtype name ("float32", "bfloat16", "float16") for a setting or alias like "bf16"."""
    key = name.strip().lower().removeprefix("torch.")
    if key not in _DTYPE_NAMES:
        raise InvalidRequest(f"unknown dtype {name!r}; expected auto, float32, bfloat16 or float16", param="dtype")
    return _DTYPE_NAMES[key]


def choose_dtype(setting: str, device: str) -> str:
    """ "auto": bf16 on GPUs that support it, fp16 on other GPUs and MPS, fp32 on CPU (CPU half math is slow)."""
    if setting.strip().lower() != "auto":
        return normalize_dtype(setting)
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "mps":
        return "float16"
    return "float32"


def memory_for(device: str, reader: NvmlReader | None = None, *, cgroup_root: Path = CGROUP_ROOT) -> DeviceMemory:
    """The pool a model on `device` draws from.

    "cuda" sums every visible GPU because device_map="auto" spreads layers across them; "cuda:N" is that GPU;
    "cpu" and "mps" (unified memory) are system RAM.
    """
    if device.startswith("cuda"):
        gpus = gpu_memory(reader)
        if device != "cuda":
            chosen = [g for g in gpus if g.device == device]
            if not chosen:
                return DeviceMemory(device, 0, 0, "missing GPU")
            return chosen[0]
        if not gpus:
            return DeviceMemory("cuda", 0, 0, "no GPU")
        names = sorted({g.name for g in gpus})
        name = gpus[0].name if len(gpus) == 1 else f"{len(gpus)} x " + " + ".join(names)
        return DeviceMemory("cuda", sum(g.total_bytes for g in gpus), sum(g.free_bytes for g in gpus), name)
    mem = system_memory(cgroup_root)
    if device == "mps":
        return DeviceMemory("mps", mem.total_bytes, mem.free_bytes, "Apple unified memory")
    return mem


def device_map_for(device: str, gpu_count: int | None = None) -> str | dict[str, Any] | None:
    """`from_pretrained(device_map=...)`: accelerate's "auto" across several GPUs, the device itself otherwise.

    None (CPU) loads on the CPU without accelerate's dispatch hooks, which only slow generation down there.
    """
    if device == "cpu":
        return None
    if device == "mps":
        return "mps"
    if device.startswith("cuda:"):
        return {"": int(device.split(":", 1)[1])}
    if device == "cuda":
        if gpu_count is None:
            import torch

            gpu_count = int(torch.cuda.device_count())
        return "auto" if gpu_count > 1 else {"": 0}
    raise InvalidRequest(f"unknown device {device!r}", param="device")
