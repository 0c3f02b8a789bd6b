"""Prefix-cache benchmark: TTFT of turn 1 vs turn 2 of a long (~1,500-token) conversation, and of a first turn
after POST /api/v1/cache/warm. Run by bench/run.py, or alone against a running server:

    .venv/bin/python bench/prefix_cache.py --url http://127.0.0.1:11434 [--tokens 1500] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
from typing import Any

from common import MODEL, post_json, stream_many

_WORDS = (
    "harbour lantern meadow copper river orchard signal winter garden mountain ledger bridge canvas station "
    "thunder pepper violin marble compass feather tunnel island basket candle forest shadow engine market "
    "velvet glacier anchor pocket ribbon saddle timber quarry beacon cellar harvest"
).split()


def conversation(seed: int, target_tokens: int) -> list[dict[str, str]]:
    """A deterministic multi-turn conversation of roughly `target_tokens` tokens (about 1.12 tokens a word),
    ending with a user message; `seed` makes its text (hence its KV) unique."""
    rng = random.Random(seed)
    words_needed = int(target_tokens / 1.12)
    msgs: list[dict[str, str]] = [
        {"role": "system", "content": f"You are a careful assistant for project {seed}. Answer briefly."}
    ]
    per_turn = 110
    turn = 0
    while words_needed > 0:
        n = min(per_turn, words_needed)
        text = " ".join(rng.choice(_WORDS) for _ in range(n))
        role = "user" if turn % 2 == 0 else "assistant"
        msgs.append({"role": role, "content": f"Note {turn}: {text}."})
        words_needed -= n
        turn += 1
    if msgs[-1]["role"] != "user":
        msgs.append({"role": "user", "content": "Summarise the notes above in one sentence."})
    return msgs


async def _one(url: str, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    (res,), _ = await stream_many(url, [body], 1)
    if not res.ok:
        raise RuntimeError(f"prefix-cache request failed: {res.error}")
    return {
        "ttft": res.ttft,
        "prompt_tokens": res.prompt_tokens,
        "cached_tokens": res.cached_tokens,
        "text": res.text,
    }


async def measure(url: str, model: str = MODEL, *, tokens: int = 1500, rounds: int = 1, max_tokens: int = 8,
                  seed: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Per round: turn 1 (cold), turn 2 (history + the reply + a new question), warm-then-turn-1 of another
    conversation. Ratios are of medians over rounds."""
    base = seed if seed is not None else random.randrange(1 << 30)
    rows: list[dict[str, Any]] = []
    for r in range(rounds):
        conv = conversation(base + 2 * r, tokens)
        t1 = await _one(url, model, conv, max_tokens)
        turn2 = [*conv, {"role": "assistant", "content": t1["text"]}, {"role": "user", "content": "And why?"}]
        t2 = await _one(url, model, turn2, max_tokens)
        other = conversation(base + 2 * r + 1, tokens)
        warm = await asyncio.to_thread(post_json, url, "/api/v1/cache/warm", {"model": model, "messages": other})
        tw = await _one(url, model, other, max_tokens)
        rows.append(
            {
                "prompt_tokens": t1["prompt_tokens"],
                "ttft_turn1": _r(t1["ttft"]),
                "ttft_turn2": _r(t2["ttft"]),
                "turn2_cached_tokens": t2["cached_tokens"],
                "warm_prompt_tokens": warm.get("prompt_tokens"),
                "ttft_warmed_turn1": _r(tw["ttft"]),
                "warmed_cached_tokens": tw["cached_tokens"],
            }
        )
    t1m = statistics.median(x["ttft_turn1"] for x in rows)
    t2m = statistics.median(x["ttft_turn2"] for x in rows)
    twm = statistics.median(x["ttft_warmed_turn1"] for x in rows)
    return {
        "rounds": rows,
        "prompt_tokens": rows[0]["prompt_tokens"],
        "ttft_turn1": _r(t1m),
        "ttft_turn2": _r(t2m),
        "ttft_warmed": _r(twm),
        "turn2_over_turn1": _r(t2m / t1m if t1m else None),
        "warmed_over_turn1": _r(twm / t1m if t1m else None),
        "target": "turn2_over_turn1 <= 0.3; warmed_over_turn1 small",
    }


def _r(x: float | None, n: int = 3) -> float | None:
    return None if x is None else round(x, n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:11434")
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--tokens", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    print(json.dumps(asyncio.run(measure(a.url, a.model, tokens=a.tokens, rounds=a.rounds))), flush=True)


if __name__ == "__main__":
    main()
