"""Faster decode-step matmuls for fp32 (and bf16) models on CPU.

fp32 with MKL (torch's x86 builds): `PackedLinear`, MKL's packed sgemm (`cblas_sgemm_pack` once at load,
`cblas_sgemm_compute` per call, through torch's own `torch.ops.mkl` ops that inductor's CPU freezing uses). It
streams the weights in MKL's own blocked layout: a 16-row decode step's matmuls took 1.25-1.4x less time than
`SkinnyLinear` (bench/README.md, "Packed matmuls"), and every row's result is bit for bit the same whatever the
number of rows beside it, which plain sgemm does not give (its blocking depends on the row count). The packed copy
replaces the weight (its storage is released), so memory is unchanged; a weight shared with another module (tied
input embeddings, which need its rows) is not packed: that layer takes `SkinnyLinear`.

Otherwise (bf16, or torch without MKL), `SkinnyLinear`:

A decode step multiplies a few rows (one per active sequence) by every weight matrix. For those skinny products
MKL is much faster when asked for `W @ x.T` than for `x @ W.T` (what `nn.Linear` runs): measured on the embedded
model's shapes, 2 cores, weights streamed from memory, 1.2-3x for 4-128 rows, the same for 1 row, and slower from
a few hundred rows up, i.e. prefill (bench/README.md, "Decode matmuls"). So `SkinnyLinear` takes that form for
at most `SKINNY_MAX_ROWS` rows and the usual one otherwise. Results differ from `nn.Linear` by float rounding
only (another summation order), like any change of batch size does.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

log = logging.getLogger(__name__)
T = TypeVar("T")

SKINNY_MAX_ROWS = 128


class SkinnyLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // max(x.shape[-1], 1)
        if rows == 0 or rows > SKINNY_MAX_ROWS or x.device.type != "cpu" or x.dtype != self.weight.dtype:
            return super().forward(x)
        # .contiguous(): the transposed view is slower in every op that follows than one copy here.
        y = torch.mm(self.weight, x.reshape(rows, x.shape[-1]).t()).t().contiguous()
        if self.bias is not None:
            y += self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


# bf16 (oneDNN's AMX / AVX-512 BF16 kernels) gains from the same form: 1.1x at 16 and 32 rows (bench/README.md).
SKINNY_DTYPES = (torch.float32, torch.bfloat16)

# MKL packs B for a row count it is told; the packed buffer describes itself and serves any row count (checked by
# `packed_sgemm_works` and tests/unit/engine/test_cpu_linear.py). 128 measured as fast as any other hint from 16 to
# 512 rows, and faster than 16-64 at 32-64 rows.
PACK_HINT_ROWS = 128


class PackedLinear(nn.Linear):
    """An fp32 Linear computed by MKL's packed sgemm. `pack` takes the packed copy once and releases the weight's
    storage (the weight stays a zero-stride view of its shape: shape and dtype for whoever asks, no memory), so the
    weights must not change afterwards (the loader packs last)."""

    packed: torch.Tensor
    packed_copy_bytes: int = 0

    def pack(self, keep_weight: bool = False) -> None:
        """`keep_weight`: a weight another module reads (tied input embeddings) stays; the packed copy is extra."""
        self.packed = torch.ops.mkl._mkl_reorder_linear_weight(self.weight.detach(), PACK_HINT_ROWS)
        self.packed_copy_bytes = self.weight.numel() * 4 if keep_weight else 0
        if keep_weight:
            return
        # The packed op reads only the original's shape when the row count it is given matches (always, below).
        placeholder = torch.zeros((), dtype=self.weight.dtype).expand(self.out_features, self.in_features)
        self.weight = nn.Parameter(placeholder, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // max(x.shape[-1], 1)
        if rows == 0:
            return x.new_empty(*x.shape[:-1], self.out_features)
        # The last argument is the row count the op's guard compares with the one packed for; the buffer serves any.
        y: torch.Tensor = torch.ops.mkl._mkl_linear(
            x.reshape(rows, x.shape[-1]).to(torch.float32), self.packed, self.weight, self.bias, rows
        )
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)


def in_passing_thread(fn: Callable[[], T]) -> T:
    """fn() in a thread that ends with it. OpenMP keeps a pool of worker threads for each thread that ran a
    parallel region, for as long as that thread lives, and with more pooled threads than cores libgomp's workers
    stop spinning between regions: every region of the inference thread's decode steps then waits for its workers
    to wake (a 1-row step of the embedded model: 15 -> 23 ms). So work done once off the inference thread (kernel
    checks from the event loop, loads) runs here."""
    box: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as e:  # re-raised in the caller's thread
            errors.append(e)

    thread = threading.Thread(target=run, name="omp-passing", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return box[0]


@functools.cache
def packed_sgemm_works() -> bool:
    """torch has MKL's packed sgemm, and it answers like nn.Linear for one row and several (checked once)."""
    return in_passing_thread(_packed_sgemm_check)


def _packed_sgemm_check() -> bool:
    if not torch.backends.mkl.is_available():  # type: ignore[no-untyped-call]
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        layer = nn.Linear(40, 24)
        x = torch.randn(5, 40, generator=gen)
        want = layer(x).detach()
        layer.__class__ = PackedLinear
        assert isinstance(layer, PackedLinear)
        with torch.inference_mode():
            layer.pack()
            got = torch.cat([layer(x[:1]), layer(x)])
        return bool(torch.allclose(got, torch.cat([want[:1], want]), rtol=1e-4, atol=1e-5))
    except (RuntimeError, AttributeError) as e:  # a build without the mkl ops
        log.info("MKL packed sgemm unavailable (%s): SkinnyLinear instead", e)
        return False


def use_cpu_kernels(model: nn.Module, skip: tuple[nn.Module, ...] = ()) -> tuple[int, int]:
    """The decode kernels for the model's plain CPU Linear layers, in place: fp32 ones become PackedLinear where
    MKL's packed sgemm works, the other fp32/bf16 ones SkinnyLinear. A weight no other module shares is replaced by
    its packed copy; a shared one (the lm_head tied to the input embeddings, which read its rows) stays the same
    Parameter and its packed copy is extra (`packed_copy_bytes`: 113 MB for the embedded model, whose lm_head
    took 15 instead of 26 ms at 16 rows, 1 thread). Quantized layers (bitsandbytes subclasses) and other devices
    are left alone, and so are the `skip` ones (a layer another kernel computes). Returns (packed, skinny) layer
    counts."""
    uses: dict[int, int] = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        uses[id(param)] = uses.get(id(param), 0) + 1
    can_pack = packed_sgemm_works()
    packed = skinny = 0
    skipped = {id(m) for m in skip}
    for module in [m for m in model.modules() if type(m) is nn.Linear and m.weight.device.type == "cpu"]:
        if id(module) in skipped:
            continue
        if can_pack and module.weight.dtype == torch.float32:
            module.__class__ = PackedLinear
            assert isinstance(module, PackedLinear)
            with torch.inference_mode():
                module.pack(keep_weight=uses[id(module.weight)] > 1)
            packed += 1
        elif module.weight.dtype in SKINNY_DTYPES:
            module.__class__ = SkinnyLinear
            skinny += 1
    return packed, skinny


def packed_copy_bytes(model: nn.Module) -> int:
    """Memory the packed copies of kept (shared) weights take beyond the model's parameters."""
    return sum(m.packed_copy_bytes for m in model.modules() if isinstance(m, PackedLinear))


def use_skinny_linears(model: nn.Module) -> int:
    """Switch the model's plain fp32/bf16 CPU Linear layers to SkinnyLinear in place (weights and ties untouched);
    quantized layers (bitsandbytes subclasses) and other devices are left alone. Returns how many were switched."""
    switched = 0
    for module in model.modules():
        if type(module) is nn.Linear and module.weight.device.type == "cpu" and module.weight.dtype in SKINNY_DTYPES:
            module.__class__ = SkinnyLinear
            switched += 1
    return switched
