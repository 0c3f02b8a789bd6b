"""Micro-benchmark: the decode step's 4-bit and 8-bit products, our VNNI kernel against torch's, interleaved.

For the embedded model's shapes (q/k/v 576 -> 960, o 576 -> 576, gate/up 576 -> 3072, down 1536 -> 576, 30 layers
each; the output projection 576 -> 49152), random 4-bit weights, times per product for 1, 16 and 32 rows, both
kernels measured in turns so machine noise hits them alike. Reports ms per decode step (all 120 projections, and
the output projection) and the ratio. Needs a CPU with AVX-512 VNNI and a C compiler (app/engine/cpu_w4a8.py).

Usage: .venv/bin/python bench/kernels.py [--rows 1 16 32] [--repeat 200]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.engine import cpu_w4a8
from app.engine.cpu_int4 import GROUP, Int4Linear

LAYERS = 30
SHAPES = [(576, 960), (576, 576), (576, 3072), (1536, 576)]  # (in, out) of each layer's four products
HEAD = (576, 49152)


def per_call_us(fn: Callable[[torch.Tensor], object], x: torch.Tensor, repeat: int) -> float:
    for _ in range(5):
        fn(x)
    started = time.perf_counter()
    for _ in range(repeat):
        fn(x)
    return (time.perf_counter() - started) / repeat * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 16, 32])
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    lib = cpu_w4a8.library()
    if lib is None:
        sys.exit("our kernel does not run here (no AVX-512 VNNI, no C compiler, or HUGLLAMA_CPU_NATIVE_KERNELS=false)")
    gen = torch.Generator().manual_seed(0)
    step = {"torch int4": 0.0, "ours": 0.0}
    print(f"{torch.get_num_threads()} threads; ms per decode step of {LAYERS} layers (4 products each)")
    with torch.inference_mode():
        for rows in args.rows:
            step = dict.fromkeys(step, 0.0)
            for k, n in SHAPES:
                q = torch.randint(0, 16, (n, k), generator=gen)
                d = torch.rand(n, k // GROUP, generator=gen) / 8
                m = torch.rand(n, k // GROUP, generator=gen) - 0.5
                theirs, ours = Int4Linear(q.int(), d, m, None), cpu_w4a8.W4A8Linear(lib, q, d, m, None)
                x = torch.randn(rows, k, generator=gen)
                for _ in range(3):  # in turns
                    step["torch int4"] += per_call_us(theirs.native, x, args.repeat) * LAYERS / 3e3
                    step["ours"] += per_call_us(ours, x, args.repeat) * LAYERS / 3e3
            w = torch.randn(HEAD[1], HEAD[0], generator=gen) * 0.05
            scale = w.abs().amax(1, keepdim=True) / 127
            qi = (w / scale).round().to(torch.int8)
            head = cpu_w4a8.W8A8Linear(lib, w)
            x = torch.randn(rows, HEAD[0], generator=gen)
            xq = (x / (x.abs().amax(1, keepdim=True) / 127)).round().to(torch.int8)
            qt = qi.t()
            int_mm = per_call_us(functools.partial(torch._int_mm, mat2=qt), xq, max(args.repeat // 10, 5)) / 1e3
            ours_head = per_call_us(head, x, max(args.repeat // 10, 5)) / 1e3
            print(
                f"  {rows:3d} rows: projections torch int4 {step['torch int4']:6.1f} ms, ours {step['ours']:6.1f} ms"
                f" -> {step['torch int4'] / step['ours']:.2f}x;  output projection torch _int_mm {int_mm:5.2f} ms,"
                f" ours {ours_head:5.2f} ms -> {int_mm / ours_head:.2f}x"
            )


if __name__ == "__main__":
    main()
