"""4-bit weights kept 4-bit for CPU decode steps: what a GGUF Q4_0/Q4_1 file stores, multiplied without widening.

A GGUF model is converted to an fp32 snapshot once (loader.ensure_snapshot), so a Q4 tensor arrives here as fp32
values that are exactly `d * q + m` per group of 32 along the input dimension (q in 0..15). `exact_int4` recovers
q, d and m from those values, and checks the recovery reproduces every weight; a tensor that is not exactly 4-bit
(an fp32 or bf16 checkpoint, a K-quant whose groups need not span 0..15) returns None and keeps its fp32 kernel.

The product is torch's own `_weight_int4pack_mm_for_cpu` (the kernel torchao's Int4CPULayout calls): it reads a
quarter of the bytes of bf16 and an eighth of fp32, which is what a single stream's decode step is bound by
(bench/README.md, "Issue 17"). Where precision changes: the kernel takes bf16 activations and bf16 scales and
returns bf16, so a layer's input is rounded to bf16 (8 significant bits; llama.cpp rounds it to 8-bit integers
for the same product) and so are d and m + 8d. Each row's result is bit for bit the same whatever rows are beside
it (checked for 1-64 and 300 rows; tests/unit/engine/test_decode_step.py checks 1-40): batched answers equal alone.
"""

from __future__ import annotations

import ctypes
import functools
import logging

import torch
from torch import nn

from app.engine import cpu_w4a8
from app.engine.cpu_linear import in_passing_thread

log = logging.getLogger(__name__)

GROUP = 32  # GGUF's Q4_0/Q4_1 block: one scale (and minimum) per 32 weights of a row


def exact_int4(w: torch.Tensor, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(q as int32 [N, K] in 0..15, d and m as fp32 [N, K/group]) such that w == d * q + m for every weight (per
    group of `group` inputs), up to fp32 rounding; None when `w` is not 4-bit that way."""
    if w.dim() != 2 or w.shape[1] % group or w.dtype != torch.float32 or w.numel() == 0:
        return None
    n, k = w.shape
    g = w.detach().reshape(n, k // group, group)
    # Q4_1: d * q + m; the group's minimum is q = 0 and its maximum q = 15 (how llama.cpp quantizes it).
    lo = g.amin(-1, keepdim=True)
    hi = g.amax(-1, keepdim=True)
    d1 = (hi - lo) / 15
    q1 = ((g - lo) / torch.where(d1 == 0, 1.0, d1)).round().clamp(0, 15)
    # Q4_0: d * (q - 8); the value of largest magnitude is q = 0, i.e. -8d.
    idx = g.abs().argmax(-1, keepdim=True)
    d0 = g.gather(-1, idx) / -8
    q0 = (g / torch.where(d0 == 0, 1.0, d0)).round().add(8).clamp(0, 15)
    tol = 1e-5 * g.abs().amax(-1, keepdim=True) + 1e-30
    ok1 = ((q1 * d1 + lo - g).abs() <= tol).all(-1, keepdim=True)
    ok0 = ((d0 * (q0 - 8) - g).abs() <= tol).all(-1, keepdim=True)
    if not bool((ok1 | ok0).all()):
        return None
    q = torch.where(ok1, q1, q0)
    d = torch.where(ok1, d1, d0)
    m = torch.where(ok1, lo, -8 * d0)
    return q.reshape(n, k).to(torch.int32), d.squeeze(-1), m.squeeze(-1)


def four_bit(
    weights: list[torch.Tensor], biases: list[torch.Tensor | None], lib: ctypes.CDLL | None
) -> Int4Linear | cpu_w4a8.W4A8Linear | None:
    """One layer computing the given ones side by side (outputs concatenated) if every weight is exactly 4-bit:
    our VNNI kernel when given (`lib`, cpu_w4a8.library), else torch's int4 kernel; None when a weight is not 4-bit
    or no kernel runs. Each output column is computed alone, so the fused layer equals the separate ones."""
    parts = [exact_int4(w) for w in weights]
    if any(p is None for p in parts):
        return None
    q, d, m = (torch.cat([p[i] for p in parts if p is not None]) for i in range(3))
    bias = None
    if any(b is not None for b in biases):
        bias = torch.cat(
            [b if b is not None else w.new_zeros(w.shape[0]) for w, b in zip(weights, biases, strict=True)]
        )
    if lib is not None and cpu_w4a8.W4A8Linear.fits(*q.shape):
        return cpu_w4a8.W4A8Linear(lib, q, d, m, bias)
    return Int4Linear(q, d, m, bias) if int4_kernel_works() else None


class Int4Linear(nn.Module):
    """y = x @ W.T (+ bias) with W held as packed 4-bit values and bf16 scales; x's dtype in, x's dtype out."""

    packed: torch.Tensor
    scales_zeros: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, q: torch.Tensor, d: torch.Tensor, m: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = q.shape
        # The kernel's form: w = (q - 8) * scale + zero per group, [K/group, N, 2].
        scales_zeros = torch.stack([d, m + 8 * d], dim=-1).transpose(0, 1)
        self.register_buffer("packed", torch._convert_weight_to_int4pack_for_cpu(q, 1))
        self.register_buffer("scales_zeros", scales_zeros.to(torch.bfloat16).contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.native(x).to(x.dtype)

    def native(self, x: torch.Tensor) -> torch.Tensor:
        """The product in the kernel's own dtype (bf16), so a caller that adds it to an fp32 sum or feeds it to the
        next 4-bit product skips a cast each way."""
        rows = x.numel() // self.in_features
        y = torch._weight_int4pack_mm_for_cpu(
            x.reshape(rows, self.in_features).to(torch.bfloat16), self.packed, GROUP, self.scales_zeros
        )
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


@functools.cache
def int4_kernel_works() -> bool:
    """torch has the CPU int4 kernel and it answers like the fp32 product of the same weights (checked once)."""
    return in_passing_thread(_int4_check)


def _int4_check() -> bool:
    try:
        gen = torch.Generator().manual_seed(0)
        q = torch.randint(0, 16, (16, 64), generator=gen, dtype=torch.int32)
        d = torch.rand(16, 2, generator=gen) / 8
        m = torch.rand(16, 2, generator=gen) - 0.5
        w = q.float() * d.repeat_interleave(GROUP, 1) + m.repeat_interleave(GROUP, 1)
        x = torch.randn(3, 64, generator=gen)
        layer = Int4Linear(q, d, m, None)
        with torch.inference_mode():
            got = layer(x)
        return bool(torch.allclose(got, x @ w.T, rtol=0.03, atol=0.05))
    except (RuntimeError, AttributeError) as e:  # an old torch, or a build without the kernel
        log.info("CPU int4 kernel unavailable (%s): 4-bit weights are widened to fp32", e)
        return False


class Int8Head(nn.Module):
    """The output projection of a 4-bit decode step: logits from int8 weights and int8 activations, then the
    `EXACT` best of every row recomputed in fp32 from the original weights.

    Given our kernel (`lib`, cpu_w4a8.W8A8Linear), weights and inputs are int8 per group of 32 with fp16 scales, as
    llama.cpp's Q8_0 (the embedded model's output projection is Q8_0, so its weights are exact): 0.7 ms at one row
    of the embedded model (5.7 ms at 32). Elsewhere one scale per row for each, through torch's integer matmul: 1.8
    ms (3.2 at 32; bench/kernels.py). The fp32
    projection streamed 113 MB per step (4.8 ms at one row, 20 ms at 32). Integer sums are exact, so each row's
    logits are the same whatever rows are beside it. Where precision changes: a logit outside a row's best `EXACT`
    is within about 1% of the fp32 one, which sampling's tail and logprobs of unlikely tokens see; the candidates
    greedy decoding and top-k/top-p choose among are exact."""

    EXACT = 16
    scale: torch.Tensor
    q: torch.Tensor

    def __init__(self, weight: torch.Tensor, lib: ctypes.CDLL | None) -> None:
        super().__init__()
        w = weight.detach()
        self.weight = w  # the fp32 original (shared with the input embeddings when tied): for the exact rows
        self.grouped = cpu_w4a8.W8A8Linear(lib, w) if lib is not None and cpu_w4a8.W4A8Linear.fits(*w.shape) else None
        if self.grouped is None:
            scale = w.abs().amax(1).clamp(min=1e-30) / 127
            self.register_buffer("scale", scale)
            self.register_buffer("q", (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).float()
        logits: torch.Tensor
        if self.grouped is not None:
            logits = self.grouped(flat)
        else:
            sx = flat.abs().amax(1, keepdim=True).clamp(min=1e-30) / 127
            xq = (flat / sx).round_().to(torch.int8)
            # The transposed view, not a contiguous copy: oneDNN's int8 kernel reads it 1.4x faster.
            logits = torch._int_mm(xq, self.q.t()).float().mul_(sx).mul_(self.scale)
        best = logits.topk(min(self.EXACT, logits.shape[1]), dim=-1).indices
        exact = (self.weight[best] * flat[:, None, :]).sum(-1)
        logits.scatter_(1, best, exact)
        return logits.reshape(*x.shape[:-1], -1)

    def extra_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers())
