"""Constrained-decoding cost through the server: tokens/s of the same prompts with and without a JSON-schema
`response_format`, at a few concurrencies. Run by bench/run.py, or alone against a running server:

    .venv/bin/python bench/constraint_cost.py --url http://127.0.0.1:11434 [--concurrency 1 4] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from common import MODEL, stream_many, summarize_streams

# A schema that leaves the model room to write (a long free-text field), so constrained answers are about as
# long as unconstrained ones and the comparison is per token, not per answer.
STORY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "characters": {"type": "array", "items": {"type": "string"}},
        "story": {"type": "string"},
    },
    "required": ["title", "characters", "story"],
}
TOPICS = ["a lighthouse keeper", "a lost robot", "a honeybee", "a sailor in a storm", "a chess prodigy",
          "an old bicycle", "a mountain village", "a talking cat"]  # fmt: skip


def bodies(model: str, n: int, max_tokens: int, constrained: bool) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        prompt = (
            f"Write a long story about {TOPICS[i % len(TOPICS)]} as a JSON object with the keys "
            '"title", "characters" and "story".'
        )
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        if constrained:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "story", "schema": STORY_SCHEMA}}
        out.append(body)
    return out


async def measure(url: str, model: str = MODEL, *, concurrency: tuple[int, ...] = (1, 4), max_tokens: int = 64,
                  requests_per_level: int = 0) -> dict[str, Any]:  # fmt: skip
    """Per concurrency: unconstrained then constrained; slowdown = unconstrained / constrained decode tok/s."""
    levels: list[dict[str, Any]] = []
    for c in concurrency:
        n = requests_per_level or c
        free, wall_f = await stream_many(url, bodies(model, n, max_tokens, False), c)
        cons, wall_c = await stream_many(url, bodies(model, n, max_tokens, True), c)
        sf, sc = summarize_streams(free, wall_f), summarize_streams(cons, wall_c)
        valid = sum(1 for r in cons if r.ok and r.finish != "length" and _is_json(r.text))
        levels.append(
            {
                "concurrency": c,
                "unconstrained": sf,
                "constrained": sc,
                "constrained_valid_json": f"{valid}/{len(cons)} complete (any others hit max_tokens)",
                "slowdown_decode": _ratio(sf["decode_tok_s_p50"], sc["decode_tok_s_p50"]),
                "slowdown_aggregate": _ratio(sf["output_tok_per_s"], sc["output_tok_per_s"]),
            }
        )
    return {"max_tokens": max_tokens, "levels": levels, "target": "slowdown <= 1.5"}


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:11434")
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--max-tokens", type=int, default=64)
    a = ap.parse_args()
    res = asyncio.run(measure(a.url, a.model, concurrency=tuple(a.concurrency), max_tokens=a.max_tokens))
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
