"""Micro-benchmark: one decode step of the embedded model, transformers' way against ours, interleaved.

Variants, all on the same weights and the same prompts, stepped in turn so that machine noise hits them alike:
  dynamic   DynamicCache + nn.Linear (what `generate()` and a plain forward loop do)
  growing   BatchKVCache (app/engine/kv_cache.py: preallocated room, one column written per step)
  ours      BatchKVCache + SkinnyLinear (app/engine/cpu_linear.py: W @ x.T for few rows) = what the server runs
Reports the median ms per step per batch size, the speed-up against `dynamic`, and whether greedy tokens agree.

  --bf16    also bf16 weights (HUGLLAMA_DTYPE=bfloat16), with nn.Linear and with SkinnyLinear

Usage: .venv/bin/python bench/decode_step.py [SNAPSHOT_DIR] [--batch 1 4 16 32] [--steps 40] [--prompt 100] [--bf16]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, DynamicCache

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.engine.cpu_linear import use_skinny_linears
from app.engine.kv_cache import BatchKVCache

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


class Stepper:
    def __init__(self, model: Any, cache: DynamicCache, prompt: torch.Tensor) -> None:
        self.model, self.cache = model, cache
        with torch.inference_mode():
            out = model(input_ids=prompt, cache=cache, use_cache=True, logits_to_keep=1)
        self.mask = torch.ones(prompt.shape, dtype=torch.long)
        self.next = out.logits[:, -1].argmax(-1, keepdim=True)
        self.tokens: list[torch.Tensor] = []
        self.times: list[float] = []

    def step(self) -> None:
        with torch.inference_mode():
            self.mask = torch.cat([self.mask, torch.ones((self.mask.shape[0], 1), dtype=torch.long)], dim=1)
            start = time.perf_counter()
            out = self.model(
                input_ids=self.next, attention_mask=self.mask, cache=self.cache, use_cache=True, logits_to_keep=1
            )
            self.times.append(time.perf_counter() - start)
            self.next = out.logits[:, -1].argmax(-1, keepdim=True)
            self.tokens.append(self.next)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("snapshot", nargs="?", type=Path)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16, 32])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--prompt", type=int, default=100, help="prompt tokens per row")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="also bf16 weights, nn.Linear and SkinnyLinear (opt-in dtype)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    snapshot = args.snapshot or common.find_snapshot(common.DEFAULT_SNAPSHOTS)
    if snapshot is None:
        sys.exit("no snapshot: run `make serve` or bench/run.py once, or pass SNAPSHOT_DIR")
    plain = AutoModelForCausalLM.from_pretrained(snapshot, dtype=torch.float32).eval()
    skinny = copy.deepcopy(plain)
    use_skinny_linears(skinny)
    bf16 = copy.deepcopy(plain).to(torch.bfloat16) if args.bf16 else None
    bf16_skinny = copy.deepcopy(bf16) if bf16 is not None else None
    if bf16_skinny is not None:
        use_skinny_linears(bf16_skinny)
    print(f"snapshot {snapshot}, {args.threads} threads, {args.prompt}-token prompts, {args.steps} steps\n")
    print("| batch | dynamic ms | growing ms | ours ms | growing speed-up | ours speed-up | same greedy tokens |")
    print("|---|---|---|---|---|---|---|")
    for batch in args.batch:
        prompt = torch.randint(
            0, plain.config.vocab_size, (batch, args.prompt), generator=torch.Generator().manual_seed(batch)
        )
        runs = {
            "dynamic": Stepper(plain, DynamicCache(), prompt),
            "growing": Stepper(plain, BatchKVCache(), prompt),
            "ours": Stepper(skinny, BatchKVCache(), prompt),
        }
        if bf16 is not None and bf16_skinny is not None:
            runs["bf16"] = Stepper(bf16, BatchKVCache(), prompt)
            runs["bf16 skinny"] = Stepper(bf16_skinny, BatchKVCache(), prompt)
        for _ in range(args.steps):
            for run in runs.values():
                run.step()
        ms = {k: statistics.median(r.times[2:]) * 1e3 for k, r in runs.items()}
        same = torch.equal(torch.cat(runs["dynamic"].tokens, 1), torch.cat(runs["ours"].tokens, 1))
        print(
            f"| {batch} | {ms['dynamic']:.1f} | {ms['growing']:.1f} | {ms['ours']:.1f} | "
            f"{ms['dynamic'] / ms['growing']:.2f}x | {ms['dynamic'] / ms['ours']:.2f}x | {same} |",
            flush=True,
        )
        if "bf16" in runs:
            same_bf16 = torch.equal(torch.cat(runs["ours"].tokens, 1), torch.cat(runs["bf16"].tokens, 1))
            print(
                f"|   bf16 | nn.Linear {ms['bf16']:.1f} ms ({ms['ours'] / ms['bf16']:.2f}x ours) | SkinnyLinear "
                f"{ms['bf16 skinny']:.1f} ms ({ms['ours'] / ms['bf16 skinny']:.2f}x ours) | same greedy: {same_bf16} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
