"""Faster decode-step matmuls for fp32 models on CPU.

A decode step multiplies a few rows (one per active sequence) by every weight matrix. For those skinny products
MKL is much faster when asked for `W @ x.T` than for `x @ W.T` (what `nn.Linear` runs): measured on the embedded
model's shapes, 2 cores, weights streamed from memory, 1.2-3x for 4-128 rows, the same for 1 row, and slower from
a few hundred rows up, i.e. prefill (bench/README.md, "Decode matmuls"). So `SkinnyLinear` takes that form for
at most `SKINNY_MAX_ROWS` rows and the usual one otherwise. Results differ from `nn.Linear` by float rounding
only (another summation order), like any change of batch size does.
"""

from __future__ import annotations

import torch
from torch import nn

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


def use_skinny_linears(model: nn.Module) -> int:
    """Switch the model's plain fp32/bf16 CPU Linear layers to SkinnyLinear in place (weights and ties untouched);
    quantized layers (bitsandbytes subclasses) and other devices are left alone. Returns how many were switched."""
    switched = 0
    for module in model.modules():
        if type(module) is nn.Linear and module.weight.device.type == "cpu" and module.weight.dtype in SKINNY_DTYPES:
            module.__class__ = SkinnyLinear
            switched += 1
    return switched
