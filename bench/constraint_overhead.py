"""Micro-benchmark: per-token cost of xgrammar masks (JSON mode, a small schema) on a tokenizer, single and batched.

Usage: .venv/bin/python bench/constraint_overhead.py [TOKENIZER_DIR] [--vocab N] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from transformers import AutoTokenizer

from app.engine.constraints import ConstraintCompiler, ConstraintSpec, apply_batch

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "email": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "email", "tags"],
}
TEXT = (
    '{"name": "Ada Lovelace, Countess of Lovelace", "age": 36, "email": "ada@analytical-engine.org", '
    '"tags": ["mathematics", "poetry of science", "first programmer", "notes on the engine"]}'
)


def _per_token(
    compiler: ConstraintCompiler, spec: ConstraintSpec, ids: list[int], vocab: int, *, budget: int | None
) -> tuple[float, float]:
    """Median ms per token of apply() and of accept() while walking `ids`."""
    apply_ms: list[float] = []
    accept_ms: list[float] = []
    for _ in range(5):
        con = compiler.constraint(spec, max_tokens=budget)
        logits = torch.randn(vocab)
        for tid in ids:
            buf = logits.clone()
            t0 = time.perf_counter()
            con.apply(buf)
            t1 = time.perf_counter()
            con.accept(tid)
            t2 = time.perf_counter()
            apply_ms.append((t1 - t0) * 1e3)
            accept_ms.append((t2 - t1) * 1e3)
    return statistics.median(apply_ms), statistics.median(accept_ms)


def _batched(compiler: ConstraintCompiler, spec: ConstraintSpec, ids: list[int], vocab: int, batch: int) -> float:
    """Median ms per decode step to mask `batch` constrained rows with one apply_batch call."""
    times: list[float] = []
    for _ in range(3):
        cons = [compiler.constraint(spec) for _ in range(batch)]
        logits = torch.randn(batch, vocab)
        for tid in ids:
            buf = logits.clone()
            t0 = time.perf_counter()
            apply_batch(buf, list(enumerate(cons)))
            times.append((time.perf_counter() - t0) * 1e3)
            for c in cons:
                c.accept(tid)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("tokenizer", nargs="?", default="/tmp/hl/snap")
    ap.add_argument("--vocab", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tok: Any = AutoTokenizer.from_pretrained(args.tokenizer)
    vocab = args.vocab or len(tok)
    t0 = time.perf_counter()
    compiler = ConstraintCompiler(tok, vocab)
    print(f"ConstraintCompiler init: {(time.perf_counter() - t0) * 1e3:.0f} ms (vocab {vocab})")
    ids = tok.encode(TEXT, add_special_tokens=False)
    print(f"document: {len(ids)} tokens")
    for label, spec in (
        ("json mode", ConstraintSpec(kind="json")),
        ("schema", ConstraintSpec(kind="schema", schema=PERSON)),
    ):
        t0 = time.perf_counter()
        compiler.compile(spec)
        cold = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        compiler.compile(spec)
        warm = (time.perf_counter() - t0) * 1e3
        a, c = _per_token(compiler, spec, ids, vocab, budget=None)
        a_close, _ = _per_token(compiler, spec, ids, vocab, budget=len(ids))
        print(
            f"{label:10s} compile {cold:6.2f} ms (cached {warm:.3f} ms) | apply {a:.3f} ms/token, "
            f"accept {c:.3f} ms/token | apply with closing checks (budget in window) {a_close:.3f} ms/token"
        )
        for b in (4, 8):
            print(f"{label:10s} apply_batch B={b}: {_batched(compiler, spec, ids, vocab, b):.3f} ms/step")


if __name__ == "__main__":
    main()
