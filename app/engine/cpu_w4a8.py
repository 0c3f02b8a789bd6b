"""4-bit weights times integer activations for CPU decode steps of Q4_0/Q4_1 models, in our own kernel.

torch's CPU int4 kernel (cpu_int4.Int4Linear) dequantizes every weight for every 4 rows and multiplies in fp32: at
32 rows a step of the embedded model spent 73 ms in it, and at one row it stayed well short of the memory bound.
This kernel (kernels/w4a8.c) multiplies the 4-bit weights by integer activations with AVX-512 VNNI (`vpdpbusd`,
exact integer sums) and scales each group's sum in fp32 by the weights' own d and m (fp16, as the file stores
them). bench/README.md, "Issue 17": about 2x less time than torch's kernel at 1, 16 and 32 rows. `W8A8Linear` does
the same for Q8_0 weights (the output projection).

Where precision changes: each group of 32 inputs is rounded to int8 steps of one scale, as llama.cpp does, plus the
remainder in 256ths of a step: about 15 significant bits (torch's kernel rounded inputs to bf16, 8 bits; llama.cpp
keeps 8): the embedded model's logits come within about 1e-3 of its fp32 forward's. The weights are exact, d and m
fp16 (exact for a GGUF file). The output projection's inputs are int8 per 32 only: its logits pick candidates, and
the best 16 are recomputed in fp32 (cpu_int4.Int8Head).

It is C, built once per machine by the system's C compiler into the user's cache, and used only where the CPU has
AVX-512 VNNI, a compiler is found, and a self-check passes (`HUGLLAMA_CPU_NATIVE_KERNELS=false` turns it off:
decode_step.build's `native`); anywhere else the step keeps torch's int4 kernel. It runs its threads in torch's own
OpenMP runtime (torch ships libgomp and the library resolves to the loaded copy), so the inference thread keeps one
worker pool.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.engine.cpu_linear import in_passing_thread

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "kernels" / "w4a8.c"
FLAGS = ["-O3", "-shared", "-fPIC", "-fopenmp", "-ffp-contract=off", "-mavx512f", "-mavx512bw", "-mavx512vnni"]
GROUP = 32
LANES = 16
CPU_FLAGS = ("avx512f", "avx512bw", "avx512_vnni")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hugllama" / "kernels"


def _cpu_has_vnni() -> bool:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return all(f in flags for f in CPU_FLAGS)


def _build() -> Path | None:
    """The compiled library, built once per source, compiler and flags (an atomic rename: processes that build it
    at once each write their own temporary file)."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        log.info("no C compiler: 4-bit decode products keep torch's int4 kernel")
        return None
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), version, *FLAGS]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"w4a8-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".so")
    os.close(fd)
    done = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        os.unlink(tmp)
        log.warning("building the 4-bit CPU kernel failed, keeping torch's int4 kernel: %s", done.stderr[-2000:])
        return None
    os.replace(tmp, target)
    return target


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernel, or None where it cannot run here (checked once, off the inference thread). Whether to use
    it is the caller's (`HUGLLAMA_CPU_NATIVE_KERNELS`, through loader.CpuKernels)."""
    if not _cpu_has_vnni():
        return None
    return in_passing_thread(_load)


def _load() -> ctypes.CDLL | None:
    try:
        path = _build()
        if path is None:
            return None
        lib = ctypes.CDLL(str(path))
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        lib.w4a8_linear.argtypes = [ptr, i64, i64, ptr, ptr, ptr, i64, ptr, ctypes.c_int]
        lib.w4a8_linear.restype = ctypes.c_int
        lib.w8a8_linear.argtypes = [ptr, i64, i64, ptr, ptr, ptr, i64, ptr, ctypes.c_int]
        lib.w8a8_linear.restype = ctypes.c_int
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("4-bit CPU kernel unavailable (%s): keeping torch's int4 kernel", e)
        return None
    if not _self_check(lib):
        log.warning("4-bit CPU kernel failed its self-check: keeping torch's int4 kernel")
        return None
    return lib


def pack(q: torch.Tensor) -> torch.Tensor:
    """q (int [N, K], 0..15) in the kernel's layout: per block of 16 outputs and group of 32 inputs, 4 vectors of
    64 bytes whose lane i, byte j holds q[i][32g + 4t + j] (low nibble) and q[i][32g + 16 + 4t + j] (high)."""
    n, k = q.shape
    q6 = q.to(torch.uint8).reshape(n // LANES, LANES, k // GROUP, 2, 4, 4)  # nb, i, g, half, t, j
    nibbles = q6[:, :, :, 0] | (q6[:, :, :, 1] << 4)  # nb, i, g, t, j
    return nibbles.permute(0, 2, 3, 1, 4).contiguous().reshape(-1)


def _blocked(s: torch.Tensor) -> torch.Tensor:
    """[N, G] per-group scales as the kernel reads them: fp16 (a GGUF block's own d and m, so exact for those), per
    block of 16 outputs G vectors of 16."""
    n, g = s.shape
    return s.half().reshape(n // LANES, LANES, g).transpose(1, 2).contiguous()


class _KernelLinear(nn.Module):
    """y = x @ W.T through one of the kernel's products (`fn`), fp32 in and out; a subclass registers its buffers
    and sets `_weights`, the product's arguments after x and its row count."""

    _weights: tuple[int, ...]

    def __init__(self, fn: Any, out_features: int, in_features: int) -> None:
        super().__init__()
        self.fn, self.out_features, self.in_features = fn, out_features, in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Lean on purpose: 121 of these per step of the embedded model, where every microsecond shows.
        flat = x.reshape(-1, self.in_features)
        if flat.dtype != torch.float32 or not flat.is_contiguous():
            flat = flat.float().contiguous()
        rows = flat.shape[0]
        y = torch.empty(rows, self.out_features)
        if rows and self.fn(flat.data_ptr(), rows, *self._weights, y.data_ptr(), torch.get_num_threads()):
            raise MemoryError("CPU kernel: out of memory for its activations")
        return y.reshape(*x.shape[:-1], self.out_features)

    def _pointers(self, *buffers: torch.Tensor) -> None:
        # The buffers are never replaced or moved: the decode step owns these layers.
        self._weights = (self.in_features, *(b.data_ptr() for b in buffers), self.out_features)


class W4A8Linear(_KernelLinear):
    """y = x @ W.T (+ bias) for W = d * q + m per group of 32 inputs, through the kernel; fp32 in and out."""

    packed: torch.Tensor
    d: torch.Tensor
    m: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, lib: ctypes.CDLL, q: torch.Tensor, d: torch.Tensor, m: torch.Tensor,
                 bias: torch.Tensor | None) -> None:  # fmt: skip
        super().__init__(lib.w4a8_linear, *q.shape)
        self.register_buffer("packed", pack(q))
        self.register_buffer("d", _blocked(d))
        self.register_buffer("m", _blocked(m))
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self._pointers(self.packed, self.d, self.m)

    @staticmethod
    def fits(out_features: int, in_features: int) -> bool:
        return out_features % LANES == 0 and in_features % GROUP == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return y if self.bias is None else y.add_(self.bias)

    def native(self, x: torch.Tensor) -> torch.Tensor:
        """The product in the kernel's own dtype (fp32), as Int4Linear.native gives its own."""
        return self.forward(x)


class W8A8Linear(_KernelLinear):
    """y = x @ W.T for W rounded to int8 per group of 32 inputs with an fp16 scale (GGUF's Q8_0, exact for a Q8_0
    tensor such as the embedded model's output projection), through the kernel; fp32 in and out, no bias."""

    packed: torch.Tensor
    d: torch.Tensor
    wsum: torch.Tensor

    def __init__(self, lib: ctypes.CDLL, weight: torch.Tensor) -> None:
        super().__init__(lib.w8a8_linear, *weight.shape)
        q, d = q8_groups(weight)
        q6 = q.reshape(self.out_features // LANES, LANES, self.in_features // GROUP, 8, 4)  # nb, i, g, t, j
        self.register_buffer("packed", q6.permute(0, 2, 3, 1, 4).contiguous().reshape(-1))
        self.register_buffer("d", _blocked(d))
        self.register_buffer("wsum", _blocked(q.reshape(*d.shape, GROUP).sum(-1)).to(torch.int16))
        self._pointers(self.packed, self.d, self.wsum)


def q8_groups(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 [N, K], d fp16 [N, K/32]) with weight ~ d * q per group of 32, as llama.cpp's Q8_0 rounds it (so a
    Q8_0 tensor comes back exactly)."""
    n, k = weight.shape
    g = weight.detach().float().reshape(n, k // GROUP, GROUP)
    d = (g.abs().amax(-1) / 127).half()
    q = (g / torch.where(d == 0, 1.0, d.float())[..., None]).round().clamp(-127, 127).to(torch.int8)
    return q.reshape(n, k), d


def reference(x: torch.Tensor, q: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """What the kernel computes, in float64 (tests and the self-check): inputs rounded per group of 32 like the
    kernel (an int8 step and its remainder in 256ths), scales in fp16, then summed exactly."""
    rows, k = x.shape
    g = x.double().reshape(rows, k // GROUP, GROUP)
    hi = g.abs().amax(-1, keepdim=True)
    sx = (hi.float() / 127).double()
    inv = torch.where(hi > 0, (127 / hi.float()).double(), torch.zeros_like(hi))
    scaled = g.float() * inv.float()
    xq = scaled.round()  # round half to even, like cvtps_epi32
    xl = ((scaled - xq) * 256).round().clamp(-127, 127)  # the remainder in 256ths of a step
    xq = xq.double() + xl.double() / 256
    qg = q.double().reshape(q.shape[0], k // GROUP, GROUP)
    isum = torch.einsum("rgk,ngk->rng", xq, qg)
    xs = g.sum(-1)  # [rows, G]
    d, m = d.half().double(), m.half().double()
    return (isum * d[None] * sx.squeeze(-1)[:, None, :] + m[None] * xs[:, None, :]).sum(-1)


def _self_check(lib: ctypes.CDLL) -> bool:
    gen = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (48, 96), generator=gen)
    d = torch.rand(48, 3, generator=gen) / 8
    m = torch.rand(48, 3, generator=gen) - 0.5
    x = torch.randn(6, 96, generator=gen)
    layer = W4A8Linear(lib, q, d, m, None)
    with torch.inference_mode():
        got = layer(x)
        alone = torch.cat([layer(x[i : i + 1]) for i in range(6)])
    want = reference(x, q, d, m).float()
    return bool(torch.allclose(got, want, rtol=1e-5, atol=1e-5)) and torch.equal(got, alone)
