"""Where a decode step's time goes: torch.profiler over decode steps of the embedded model, called exactly as the
scheduler calls it (left-padded BatchKVCache, attention mask and position ids, the loader's matmul kernels), rows
of different prompt lengths so the cache has padding.

Prints the top ops by self CPU time and a summary by kind (matmuls, attention, RoPE, RMSNorm, the rest), plus
the median wall time of a step, of the model's trunk alone and of the lm_head.

Usage: .venv/bin/python bench/profile_step.py [SNAPSHOT_DIR] [--batch 16] [--steps 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.engine.cpu_linear import use_cpu_kernels
from app.engine.kv_cache import BatchKVCache

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

KINDS = {
    "matmul": ("mkl::_mkl_linear", "aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"),
    "attention": ("aten::_scaled_dot_product", "aten::scaled_dot_product", "aten::_softmax", "aten::baddbmm"),
}


class Rows:
    """A left-padded batch after its prefill, stepped greedily as the scheduler does."""

    def __init__(self, model: Any, batch: int, prompt: int, vocab: int) -> None:
        gen = torch.Generator().manual_seed(batch)
        lengths = [prompt // 2 + (i * prompt) // max(batch, 1) for i in range(batch)]
        width = max(lengths)
        self.model = model
        self.cache = BatchKVCache()
        ids = torch.full((batch, width), 2, dtype=torch.long)
        self.mask = torch.zeros((batch, width), dtype=torch.long)
        for i, n in enumerate(lengths):
            ids[i, width - n :] = torch.randint(0, vocab, (n,), generator=gen)
            self.mask[i, width - n :] = 1
        self.fed = list(lengths)
        with torch.inference_mode():
            positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=ids, attention_mask=self.mask, position_ids=positions, cache=self.cache,
                        use_cache=True, logits_to_keep=1)  # fmt: skip
        self.last = out.logits[:, -1].argmax(-1).tolist()

    def step(self) -> None:
        with torch.inference_mode():
            n = len(self.last)
            ids = torch.tensor([[t] for t in self.last], dtype=torch.long)
            positions = torch.tensor([[f] for f in self.fed], dtype=torch.long)
            mask = torch.cat([self.mask, torch.ones((n, 1), dtype=torch.long)], dim=1)
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=self.cache,
                             use_cache=True, logits_to_keep=1)  # fmt: skip
            self.mask = mask
            self.fed = [f + 1 for f in self.fed]
            self.last = out.logits[:, -1, :].float().argmax(-1).tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("snapshot", nargs="?", type=Path)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--prompt", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=25, help="ops to list")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    snapshot = args.snapshot or common.find_snapshot(common.DEFAULT_SNAPSHOTS)
    if snapshot is None:
        sys.exit("no snapshot: run `make serve` or bench/run.py once, or pass SNAPSHOT_DIR")
    model = AutoModelForCausalLM.from_pretrained(snapshot, dtype=torch.float32).eval()
    use_cpu_kernels(model)
    rows = Rows(model, args.batch, args.prompt, model.config.vocab_size)
    for _ in range(3):
        rows.step()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        rows.step()
        times.append(time.perf_counter() - t)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            rows.step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    by_kind: dict[str, float] = {}
    for e in events:
        kind = next((k for k, names in KINDS.items() if e.key.startswith(names)), None)
        if kind is None:
            kind = "other ops"
        by_kind[kind] = by_kind.get(kind, 0.0) + e.self_cpu_time_total
    print(f"{args.batch} rows, {args.threads} threads, median step {statistics.median(times) * 1e3:.1f} ms "
          f"(profiled steps: {total / args.steps / 1e3:.1f} ms of op self time per step)")  # fmt: skip
    for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {k:12s} {100 * v / total:5.1f}%  {v / args.steps / 1e3:7.2f} ms/step")
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
