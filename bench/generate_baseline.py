"""Raw transformers `generate()` baseline, in-process: static batches of the loadgen prompts, greedy, with the
same chat template and thread count as the servers. Prints one JSON line.

Usage: .venv/bin/python bench/generate_baseline.py SNAPSHOT_DIR [--concurrency 1 4 16] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.generation.streamers import BaseStreamer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import BUILTIN_PROMPTS


class _Clock(BaseStreamer):
    """Timestamps of each generated token (batch size 1): the first put() is the prompt."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def _count_new(rows: torch.Tensor, eos: set[int]) -> int:
    """New tokens of a batch, each row up to and including its first eos (what a server reports)."""
    total = 0
    for row in rows.tolist():
        n = 0
        for tok in row:
            n += 1
            if tok in eos:
                break
        total += n
    return total


def run(snapshot: Path, concurrency: list[int], max_tokens: int, reps: int, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    tok: Any = AutoTokenizer.from_pretrained(snapshot)
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model: Any = AutoModelForCausalLM.from_pretrained(snapshot, dtype=torch.float32)
    model.eval()
    gen_eos = model.generation_config.eos_token_id
    eos = set(gen_eos if isinstance(gen_eos, list) else [gen_eos]) | {tok.eos_token_id}
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in BUILTIN_PROMPTS
    ]
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_tokens,
        "do_sample": False,
        "pad_token_id": tok.pad_token_id,
        "temperature": None,
        "top_p": None,
        "top_k": None,
    }
    out: dict[str, Any] = {"snapshot": str(snapshot), "threads": torch.get_num_threads(), "max_tokens": max_tokens}
    with torch.inference_mode():
        warm = tok([prompts[0]], return_tensors="pt")
        model.generate(**warm, **{**kwargs, "max_new_tokens": 8})
        rows: list[dict[str, Any]] = []
        for c in concurrency:
            aggs: list[float] = []
            decs: list[float] = []
            ttfts: list[float] = []
            tokens = 0
            for rep in range(reps):
                batch = [prompts[(rep * c + i) % len(prompts)] for i in range(c)]
                enc = tok(batch, return_tensors="pt", padding=True)
                clock = _Clock() if c == 1 else None
                t0 = time.perf_counter()
                ids = model.generate(**enc, **kwargs, streamer=clock)
                wall = time.perf_counter() - t0
                n = _count_new(ids[:, enc["input_ids"].shape[1] :], eos)
                tokens += n
                aggs.append(n / wall)
                if clock is not None and len(clock.times) > 1:
                    ttfts.append(clock.times[0] - t0)
                    decs.append((len(clock.times) - 1) / (clock.times[-1] - clock.times[0]))
            rows.append(
                {
                    "concurrency": c,
                    "reps": reps,
                    "output_tokens": tokens,
                    "output_tok_per_s": round(statistics.median(aggs), 2),
                    "decode_tok_s_p50": round(statistics.median(decs), 2) if decs else None,
                    "ttft_p50": round(statistics.median(ttfts), 3) if ttfts else None,
                }
            )
        out["rows"] = rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("snapshot", type=Path)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=2, help="batches per concurrency (median reported)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    print(json.dumps(run(a.snapshot, a.concurrency, a.max_tokens, a.reps, a.threads)), flush=True)


if __name__ == "__main__":
    main()
