#!/usr/bin/env python3
"""Async load generator for OpenAI- and Ollama-compatible chat servers.

Only dependency: httpx. Talks to loopback addresses only, runs a bounded number of
requests, and exits by itself (per-request timeout plus a global deadline).

Examples
--------
    python bench/loadgen.py --url http://127.0.0.1:8000 --protocol openai \
        --model smol --concurrency 4 --requests 32 --max-tokens 128 --stream
    python bench/loadgen.py --url http://127.0.0.1:11434 --protocol ollama \
        --model smollm2 --concurrency 1 --requests 8 --no-stream

Output: exactly one JSON line on stdout (progress/errors go to stderr):
    requests, ok, errors, wall_s, output_tokens, output_tok_per_s (aggregate),
    ttft_p50/p95 (streaming only; first content token), latency_p50/p95,
    decode_tok_s_p50 (per stream; (n-1)/(t_last-t_first) when streaming,
    n/latency when not), plus a few extra fields (see ``summarize``).

Token counting: usage.completion_tokens (OpenAI) / eval_count (Ollama) when the server
reports it; otherwise the number of content-bearing stream chunks (tokens_source says which).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import socket
import sys
import time
from urllib.parse import urlparse

import httpx

# Varied short prompts that ask for open-ended, long-ish answers so that most requests
# run to --max-tokens (keeps per-request work comparable across servers).
BUILTIN_PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain in detail how a bicycle works, part by part.",
    "Describe a day in the life of a honeybee.",
    "Write a detailed recipe for a vegetable soup, with step-by-step instructions.",
    "Explain why the sky is blue to a ten-year-old, then to a physics student.",
    "List twenty ideas for a weekend trip and describe each one in a sentence.",
    "Write a letter from a sailor to his family describing a storm at sea.",
    "Explain the water cycle, covering evaporation, condensation and precipitation.",
    "Describe the history of the printing press and its effect on society.",
    "Write a poem about autumn leaves, then explain the imagery you used.",
    "Give a step-by-step guide to planting a small vegetable garden.",
    "Explain how computers store numbers, with examples in binary.",
    "Write a dialogue between a cat and a dog arguing about who is the better pet.",
    "Describe the planets of the solar system one by one.",
    "Explain the rules of chess to a complete beginner.",
    "Write a product description for a new kind of umbrella, then list its features.",
]

MAX_LINES_FACTOR = 16  # stream lines allowed per requested token (bounds the read loop)


def is_loopback_url(url: str) -> bool:
    host = urlparse(url).hostname
    if not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in [0, 100]); None for an empty list."""
    vs = sorted(v for v in values if v is not None and not math.isnan(v))
    if not vs:
        return None
    if len(vs) == 1:
        return vs[0]
    pos = (len(vs) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(vs) - 1)
    return vs[lo] + (vs[hi] - vs[lo]) * (pos - lo)


def build_request(args, prompt: str) -> tuple[str, dict]:
    base = args.url.rstrip("/")
    msgs = [{"role": "user", "content": prompt}]
    if args.protocol == "openai":
        if args.endpoint == "chat":
            path, body = "/v1/chat/completions", {"model": args.model, "messages": msgs}
        else:
            path, body = "/v1/completions", {"model": args.model, "prompt": prompt}
        body.update(
            {"max_tokens": args.max_tokens, "temperature": args.temperature, "seed": args.seed, "stream": args.stream}
        )
        if args.stream and args.stream_usage:
            body["stream_options"] = {"include_usage": True}
        if args.ban_token is not None:  # e.g. EOS id, to force exactly --max-tokens tokens
            body["logit_bias"] = {str(args.ban_token): -100.0}  # float: transformers serve rejects int bias values
    else:  # ollama
        opts = {"temperature": args.temperature, "seed": args.seed, "num_predict": args.max_tokens}
        if args.endpoint == "chat":
            path, body = "/api/chat", {"model": args.model, "messages": msgs}
        else:
            path, body = "/api/generate", {"model": args.model, "prompt": prompt}
        body.update({"options": opts, "stream": args.stream})
    return base + path, body


def _openai_delta_text(chunk: dict) -> str:
    out = []
    for ch in chunk.get("choices") or []:
        delta = ch.get("delta") or {}
        t = delta.get("content") or delta.get("reasoning_content") or ch.get("text") or ""
        if t:
            out.append(t)
    return "".join(out)


async def one_request(client: httpx.AsyncClient, args, idx: int, prompt: str) -> dict:
    url, body = build_request(args, prompt)
    rec = {
        "idx": idx,
        "ok": False,
        "ttft": None,
        "latency": None,
        "tokens": None,
        "tokens_source": None,
        "chunks": 0,
        "error": None,
        "finish": None,
        "server_eval_tok_s": None,
    }
    t0 = time.perf_counter()
    t_first = t_last = None
    usage_tokens = None
    chunks = 0
    text_len = 0
    try:
        if not args.stream:
            r = await client.post(url, json=body)
            t_end = time.perf_counter()
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
            data = r.json()
            if args.protocol == "openai":
                u = data.get("usage") or {}
                usage_tokens = u.get("completion_tokens")
                chs = data.get("choices") or [{}]
                rec["finish"] = chs[0].get("finish_reason")
                text_len = len(((chs[0].get("message") or {}).get("content")) or chs[0].get("text") or "")
            else:
                usage_tokens = data.get("eval_count")
                rec["finish"] = data.get("done_reason")
                if data.get("eval_count") and data.get("eval_duration"):
                    rec["server_eval_tok_s"] = data["eval_count"] / (data["eval_duration"] / 1e9)
                text_len = len(((data.get("message") or {}).get("content")) or data.get("response") or "")
        else:
            max_lines = MAX_LINES_FACTOR * args.max_tokens + 64
            async with client.stream("POST", url, json=body) as r:
                if r.status_code != 200:
                    txt = (await r.aread())[:200]
                    raise RuntimeError(f"HTTP {r.status_code}: {txt!r}")
                n_lines = 0
                done = False
                async for line in r.aiter_lines():
                    n_lines += 1
                    if n_lines > max_lines:
                        raise RuntimeError(f"stream exceeded {max_lines} lines")
                    line = line.strip()
                    if not line:
                        continue
                    if args.protocol == "openai":
                        if not line.startswith("data:"):
                            continue
                        payload = line[5:].strip()
                        if payload == "[DONE]":
                            done = True
                            break
                        chunk = json.loads(payload)
                        if "error" in chunk:
                            raise RuntimeError(f"stream error: {str(chunk['error'])[:200]}")
                        text = _openai_delta_text(chunk)
                        if chunk.get("usage"):
                            usage_tokens = chunk["usage"].get("completion_tokens", usage_tokens)
                        for ch in chunk.get("choices") or []:
                            if ch.get("finish_reason"):
                                rec["finish"] = ch["finish_reason"]
                    else:
                        chunk = json.loads(line)
                        if "error" in chunk:
                            raise RuntimeError(f"stream error: {str(chunk['error'])[:200]}")
                        text = ((chunk.get("message") or {}).get("content")) or chunk.get("response") or ""
                        if chunk.get("done"):
                            usage_tokens = chunk.get("eval_count", usage_tokens)
                            rec["finish"] = chunk.get("done_reason")
                            if chunk.get("eval_count") and chunk.get("eval_duration"):
                                rec["server_eval_tok_s"] = chunk["eval_count"] / (chunk["eval_duration"] / 1e9)
                            done = True
                    if text:
                        now = time.perf_counter()
                        if t_first is None:
                            t_first = now
                        t_last = now
                        chunks += 1
                        text_len += len(text)
                    if done:
                        break
            t_end = time.perf_counter()
        rec["latency"] = t_end - t0
        rec["chunks"] = chunks
        rec["text_chars"] = text_len
        if usage_tokens is not None:
            rec["tokens"], rec["tokens_source"] = int(usage_tokens), "usage"
        else:
            rec["tokens"], rec["tokens_source"] = chunks, "chunks"
        if args.stream and t_first is not None:
            rec["ttft"] = t_first - t0
            if rec["tokens"] > 1 and t_last > t_first:
                rec["decode_tok_s"] = (rec["tokens"] - 1) / (t_last - t_first)
        elif not args.stream and rec["latency"] > 0:
            rec["decode_tok_s"] = rec["tokens"] / rec["latency"]
        rec["ok"] = True
    except Exception as e:  # every failure is recorded, never raised
        rec["latency"] = time.perf_counter() - t0
        rec["error"] = f"{type(e).__name__}: {e}"[:300]
    return rec


async def run(args) -> dict:
    prompts = BUILTIN_PROMPTS
    if args.prompt_file:
        with open(args.prompt_file, encoding="utf-8") as f:
            prompts = [ln.strip() for ln in f if ln.strip()]
        if not prompts:
            raise SystemExit("prompt file is empty")
    timeout = httpx.Timeout(args.timeout, connect=10.0)
    limits = httpx.Limits(max_connections=args.concurrency + 2, max_keepalive_connections=args.concurrency + 2)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:
        for w in range(args.warmup):  # not counted
            rec = await one_request(client, args, -1 - w, prompts[w % len(prompts)])
            if not rec["ok"]:
                print(f"warmup request failed: {rec['error']}", file=sys.stderr)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(args.requests):
            queue.put_nowait(i)
        results: list[dict] = []

        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                # rotate the prompt list so concurrent requests get different prompts
                rec = await one_request(client, args, i, prompts[(i + args.prompt_offset) % len(prompts)])
                results.append(rec)
                if args.verbose:
                    print(json.dumps(rec), file=sys.stderr)

        t0 = time.perf_counter()
        workers = [asyncio.create_task(worker()) for _ in range(args.concurrency)]
        try:
            await asyncio.wait_for(asyncio.gather(*workers), timeout=args.deadline)
            timed_out = False
        except TimeoutError:
            timed_out = True
        wall = time.perf_counter() - t0
    return summarize(args, results, wall, timed_out)


def summarize(args, results: list[dict], wall: float, timed_out: bool) -> dict:
    ok = [r for r in results if r["ok"]]
    errs = [r for r in results if not r["ok"]]
    toks = sum(r["tokens"] for r in ok)

    def rnd(x, n=3):
        return None if x is None else round(x, n)

    ttfts = [r["ttft"] for r in ok if r["ttft"] is not None]
    lats = [r["latency"] for r in ok]
    decs = [r.get("decode_tok_s") for r in ok if r.get("decode_tok_s")]
    srv = [r["server_eval_tok_s"] for r in ok if r.get("server_eval_tok_s")]
    out = {
        "url": args.url,
        "protocol": args.protocol,
        "endpoint": args.endpoint,
        "model": args.model,
        "concurrency": args.concurrency,
        "stream": args.stream,
        "max_tokens": args.max_tokens,
        "requests": args.requests,
        "completed": len(results),
        "ok": len(ok),
        "errors": len(errs) + (args.requests - len(results)),
        "timed_out": timed_out,
        "wall_s": rnd(wall),
        "output_tokens": toks,
        "output_tok_per_s": rnd(toks / wall if wall > 0 else None, 2),
        "ttft_p50": rnd(percentile(ttfts, 50)),
        "ttft_p95": rnd(percentile(ttfts, 95)),
        "latency_p50": rnd(percentile(lats, 50)),
        "latency_p95": rnd(percentile(lats, 95)),
        "decode_tok_s_p50": rnd(percentile(decs, 50), 2),
        "mean_completion_tokens": rnd(toks / len(ok) if ok else None, 1),
        "frac_hit_max_tokens": rnd(sum(1 for r in ok if r["tokens"] >= args.max_tokens) / len(ok) if ok else None, 2),
        "tokens_source": sorted({r["tokens_source"] for r in ok}) or None,
        # responses that ended without a finish_reason/done_reason (e.g. a stream the server cut
        # short with [DONE]) and responses with no output at all: "ok" but not complete
        "no_finish_reason": sum(1 for r in ok if not r.get("finish")),
        "zero_token_responses": sum(1 for r in ok if r["tokens"] == 0),
        "server_eval_tok_s_p50": rnd(percentile(srv, 50), 2),
        "error_samples": [r["error"] for r in errs[:3]],
    }
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL (loopback only)")
    p.add_argument("--protocol", choices=["openai", "ollama"], default="openai")
    p.add_argument(
        "--endpoint",
        choices=["chat", "completion"],
        default="chat",
        help="chat: /v1/chat/completions or /api/chat; completion: /v1/completions or /api/generate",
    )
    p.add_argument("--model", default="default")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--stream-usage",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="send stream_options.include_usage (OpenAI); some servers reject it",
    )
    p.add_argument(
        "--ban-token",
        type=int,
        default=None,
        help="OpenAI only: send logit_bias {ID: -100} (ban EOS to force fixed-length outputs)",
    )
    p.add_argument("--prompt-file", help="one prompt per line; default: built-in varied prompts")
    p.add_argument("--prompt-offset", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=1, help="uncounted requests sent first, sequentially")
    p.add_argument("--timeout", type=float, default=600.0, help="per-request timeout, seconds")
    p.add_argument("--deadline", type=float, default=1800.0, help="global deadline for the timed phase, seconds")
    p.add_argument("--label", default=None, help="free-form tag copied into the JSON output")
    p.add_argument("--verbose", action="store_true", help="per-request records on stderr")
    a = p.parse_args(argv)
    if a.concurrency < 1 or a.requests < 1 or a.max_tokens < 1:
        p.error("--concurrency, --requests and --max-tokens must be >= 1")
    if not is_loopback_url(a.url):
        p.error(f"refusing non-loopback URL {a.url!r}")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    res = asyncio.run(run(args))
    if args.label:
        res = {"label": args.label, **res}
    print(json.dumps(res), flush=True)
    return 0 if res["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
