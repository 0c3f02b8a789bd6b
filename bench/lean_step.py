"""Micro-benchmark: the lean decode step (app/engine/decode_step.py) against transformers' forward, interleaved.

Both run the embedded model as the server loads it (fp32 weights with MKL's packed matmuls for prefill); `lean`
multiplies the exactly-4-bit projections 4-bit (`HUGLLAMA_CPU_LEAN_DECODE=true`, the default), `transformers` is
the model's own forward (`false`). Rows of different prompt lengths (left-padded, as the scheduler batches them)
are prefilled once per variant, then the variants take decode steps in turn so machine noise hits them alike.
Reports the median ms per step for each batch size and the ratio.

Usage: .venv/bin/python bench/lean_step.py [SNAPSHOT_DIR] [--batch 1 16 32] [--steps 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.engine import decode_step
from app.engine.cpu_linear import use_cpu_kernels
from app.engine.kv_cache import BatchKVCache

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


class Rows:
    """A left-padded batch after its prefill, stepped greedily by `forward`."""

    def __init__(self, model: Any, forward: Any, batch: int, vocab: int) -> None:
        gen = torch.Generator().manual_seed(batch)
        lengths = [40 + (i * 97) % 120 for i in range(batch)]
        width = max(lengths)
        ids = torch.full((batch, width), 2, dtype=torch.long)
        self.mask = torch.zeros((batch, width), dtype=torch.long)
        for i, n in enumerate(lengths):
            ids[i, width - n :] = torch.randint(0, vocab, (n,), generator=gen)
            self.mask[i, width - n :] = 1
        self.forward, self.cache, self.fed = forward, BatchKVCache(), list(lengths)
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=self.mask, position_ids=(self.mask.cumsum(-1) - 1).clamp(min=0),
                        cache=self.cache, use_cache=True, logits_to_keep=1)  # fmt: skip
        self.last = out.logits[:, -1].argmax(-1).tolist()

    def step(self) -> float:
        with torch.inference_mode():
            n = len(self.last)
            self.mask = torch.cat([self.mask, torch.ones((n, 1), dtype=torch.long)], dim=1)
            started = time.perf_counter()
            out = self.forward(input_ids=torch.tensor([[t] for t in self.last]), attention_mask=self.mask,
                               position_ids=torch.tensor([[f] for f in self.fed]), cache=self.cache,
                               use_cache=True, logits_to_keep=1)  # fmt: skip
            took = time.perf_counter() - started
            self.fed = [f + 1 for f in self.fed]
            self.last = out.logits[:, -1, :].float().argmax(-1).tolist()
        return took


def load(snapshot: Path, lean: bool) -> tuple[Any, Any]:
    model = AutoModelForCausalLM.from_pretrained(snapshot, dtype=torch.float32).eval()
    step = decode_step.build(model) if lean else None  # before the packed kernels release the fp32 weights
    use_cpu_kernels(model)
    return model, step or model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("snapshot", nargs="?", type=Path)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16, 32])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    snapshot = args.snapshot or common.find_snapshot(common.DEFAULT_SNAPSHOTS)
    if snapshot is None:
        sys.exit("no converted snapshot of the embedded model: run the server or the slow tests once")
    variants = {"transformers": load(snapshot, lean=False), "lean": load(snapshot, lean=True)}
    vocab = int(variants["lean"][0].config.vocab_size)
    print(f"{snapshot.name}, {args.threads} threads, {args.steps} interleaved steps per batch size")
    for batch in args.batch:
        rows = {name: Rows(model, fwd, batch, vocab) for name, (model, fwd) in variants.items()}
        times: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(args.steps):
            for name, r in rows.items():
                times[name].append(r.step())
        med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        print(f"  {batch:3d} rows: transformers {med['transformers']:7.1f} ms  lean {med['lean']:7.1f} ms  "
              f"-> {med['transformers'] / med['lean']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
