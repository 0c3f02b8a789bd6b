"""The NVML seam: what the NVIDIA driver reports about each GPU, without torch.

`pynvml` (package nvidia-ml-py) is imported lazily; tests pass a fake module with the same functions.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One physical GPU as NVML numbers it (NVML ignores CUDA_VISIBLE_DEVICES)."""

    index: int
    name: str
    total_bytes: int
    free_bytes: int
    used_bytes: int
    uuid: str | None = None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


class NvmlReader:
    """Reads GPU memory through NVML; no driver (or no pynvml) means no GPUs, never an error."""

    def __init__(self, module: Any | None = None) -> None:
        self._module = module

    def _load(self) -> Any | None:
        if self._module is not None:
            return self._module
        try:
            return importlib.import_module("pynvml")
        except ImportError:
            return None

    def devices(self) -> list[GpuInfo]:
        nvml = self._load()
        if nvml is None:
            return []
        # pynvml's NVMLError also covers "library not found" (no driver installed).
        error: type[BaseException] = getattr(nvml, "NVMLError", Exception)
        try:
            nvml.nvmlInit()
        except (error, OSError) as exc:
            log.debug("NVML unavailable: %s", exc)
            return []
        try:
            return self._read(nvml, error)
        finally:
            try:
                nvml.nvmlShutdown()
            except (error, OSError) as exc:
                log.debug("nvmlShutdown failed: %s", exc)

    @staticmethod
    def _read(nvml: Any, error: type[BaseException]) -> list[GpuInfo]:
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except error as exc:
            log.warning("NVML could not count GPUs: %s", exc)
            return []
        out: list[GpuInfo] = []
        for i in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                mem = nvml.nvmlDeviceGetMemoryInfo(handle)
                name = _text(nvml.nvmlDeviceGetName(handle))
            except error as exc:
                # One broken device (fallen off the bus, MIG misconfigured) must not hide the others.
                log.warning("NVML could not read GPU %d: %s", i, exc)
                continue
            uuid: str | None
            try:
                uuid = _text(nvml.nvmlDeviceGetUUID(handle)) if hasattr(nvml, "nvmlDeviceGetUUID") else None
            except error:
                uuid = None
            out.append(
                GpuInfo(
                    index=i,
                    name=name,
                    total_bytes=int(mem.total),
                    free_bytes=int(mem.free),
                    used_bytes=int(mem.used),
                    uuid=uuid,
                )
            )
        return out
