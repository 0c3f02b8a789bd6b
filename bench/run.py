"""Throughput benchmark: our server vs `transformers serve` (with and without --continuous-batching) vs raw
`generate()`, one after the other on this machine with the same thread count, plus mixed sampling, prefix
caching, constrained decoding and batched-vs-alone consistency. Prints one markdown report; see bench/README.md.

    .venv/bin/python bench/run.py [--quick] [--only ours|baselines] [--max-tokens N] [--concurrency 1 4 16 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common
import constraint_cost
import prefix_cache
from common import BENCH, DEFAULT_SNAPSHOTS, Server, run_loadgen, stream_many, summarize_streams

RESULTS = BENCH / "results"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "steps": {"type": "array", "items": {"type": "string"}}},
    "required": ["answer", "steps"],
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- throughput levels ----


def requests_for(c: int, quick: bool) -> int:
    return max(2, c) if quick else max(8, 2 * c)


def drive(server: Server, protocol: str, levels: list[int], max_tokens: int, quick: bool) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for i, c in enumerate(levels):
        n = requests_for(c, quick)
        log(f"{server.name}/{protocol}: c={c}, {n} requests x {max_tokens} tokens")
        res = run_loadgen(
            server.url, server.model, protocol=protocol, concurrency=c, requests=n, max_tokens=max_tokens,
            warmup=1 if i == 0 else 0, label=f"{server.name}/{protocol}/c{c}",
        )  # fmt: skip
        res["load_avg"] = common.load_average()
        log(f"  -> {res['output_tok_per_s']} tok/s, ttft p50 {res['ttft_p50']} s, errors {res['errors']}")
        out[c] = res
    return out


# ---- ours only: single stream against generate(), mixed sampling, consistency ----


def single_stream_paired(server: Server, snapshot: Path, args: argparse.Namespace, rounds: int) -> dict[str, Any]:
    """c=1 per-stream decode against raw generate(), alternated round by round while our server idles.

    The main table's generate() row is measured many minutes after our c=1 rows, and on these machines speed drifts
    by 30-50% over minutes (the in-process loops alone went 6.5 -> 9.5 tok/s within one hour): alternating short
    runs pairs each of our measurements with a baseline taken in the same minute.
    """
    rounds_out: list[dict[str, Any]] = []
    for r in range(rounds):
        log(f"single stream, paired: round {r + 1}/{rounds}")
        gen = run_generate_baseline(snapshot, [1], args.max_tokens, args.threads, reps=1)["by_c"][1]
        row: dict[str, Any] = {"generate": gen.get("decode_tok_s_p50")}
        for proto in ("openai", "ollama"):
            res = run_loadgen(
                server.url, server.model, protocol=proto, concurrency=1, requests=2, max_tokens=args.max_tokens,
                warmup=0, label=f"paired/{proto}/r{r}",
            )  # fmt: skip
            row[proto] = res.get("decode_tok_s_p50")
        rounds_out.append(row)
    out: dict[str, Any] = {"rounds": rounds_out}
    for key in ("generate", "openai", "ollama"):
        out[key] = statistics.median(x[key] or 0.0 for x in rounds_out)
    for proto in ("openai", "ollama"):
        ratios = [x[proto] / x["generate"] for x in rounds_out if x[proto] and x["generate"]]
        out[f"ratio_{proto}"] = round(statistics.median(ratios), 3) if ratios else None
    return out


def mixed_bodies(model: str, n: int, max_tokens: int, mixed: bool) -> list[dict[str, Any]]:
    """n chat bodies; `mixed` gives each row different sampling (temperatures, top_p/top_k, stops, penalties,
    seeds and one JSON-schema constraint), otherwise all greedy."""
    prompts = common.loadgen.BUILTIN_PROMPTS
    variants: list[dict[str, Any]] = [
        {"temperature": 0},
        {"temperature": 0.7, "top_p": 0.9},
        {"temperature": 1.0, "top_k": 40},
        {"temperature": 0.8, "stop": ["\n\n\n\n", "THE END"]},
        {"temperature": 0.6, "frequency_penalty": 0.5, "presence_penalty": 0.3},
        {"temperature": 0, "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}},
        {"temperature": 0.5, "top_p": 0.5, "stop": ["###"]},
        {"temperature": 1.2, "top_p": 0.95, "frequency_penalty": 0.2},
    ]  # fmt: skip
    out = []
    for i in range(n):
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        if mixed:
            body.update(variants[i % len(variants)])
            body["seed"] = 1000 + i
        out.append(body)
    return out


def mixed_vs_uniform(server: Server, n: int, max_tokens: int, rounds: int) -> dict[str, Any]:
    uni: list[dict[str, Any]] = []
    mix: list[dict[str, Any]] = []
    for r in range(rounds):
        log(f"mixed vs uniform sampling: round {r + 1}/{rounds}, {n} concurrent requests")
        res, wall = asyncio.run(stream_many(server.url, mixed_bodies(server.model, n, max_tokens, False), n))
        uni.append(summarize_streams(res, wall))
        res, wall = asyncio.run(stream_many(server.url, mixed_bodies(server.model, n, max_tokens, True), n))
        mix.append(summarize_streams(res, wall))
    u = statistics.median(x["output_tok_per_s"] or 0.0 for x in uni)
    m = statistics.median(x["output_tok_per_s"] or 0.0 for x in mix)
    ud = statistics.median(x["decode_tok_s_p50"] or 0.0 for x in uni)
    md = statistics.median(x["decode_tok_s_p50"] or 0.0 for x in mix)
    return {
        "requests": n,
        "max_tokens": max_tokens,
        "uniform": uni,
        "mixed": mix,
        "uniform_tok_s": u,
        "mixed_tok_s": m,
        "mixed_over_uniform": round(m / u, 3) if u else None,
        "mixed_over_uniform_decode": round(md / ud, 3) if ud else None,
        "target": "mixed_over_uniform >= 0.8",
    }


def consistency(server: Server, n: int, max_tokens: int) -> dict[str, Any]:
    """Greedy answers of n prompts sent alone (one at a time) vs all at once."""
    prompts = common.loadgen.BUILTIN_PROMPTS
    log(f"batched-vs-alone consistency: {n} prompts, {max_tokens} tokens")
    bodies = [
        {"model": server.model, "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
         "max_tokens": max_tokens, "temperature": 0}
        for i in range(n)
    ]  # fmt: skip
    alone = [asyncio.run(stream_many(server.url, [b], 1))[0][0] for b in bodies]
    together, _ = asyncio.run(stream_many(server.url, bodies, n))
    diffs = []
    for i, (a, t) in enumerate(zip(alone, together, strict=True)):
        if a.text != t.text:
            at = next((k for k, (x, y) in enumerate(zip(a.text, t.text, strict=False)) if x != y), None)
            at = min(len(a.text), len(t.text)) if at is None else at
            diffs.append({"prompt": i, "first_diff_char": at, "alone_chars": len(a.text), "batched_chars": len(t.text)})
    errors = sum(1 for r in alone + together if not r.ok)
    return {"prompts": n, "max_tokens": max_tokens, "identical": n - len(diffs), "errors": errors, "diffs": diffs}


# ---- phases ----


def run_generate_baseline(snapshot: Path, levels: list[int], max_tokens: int, threads: int, reps: int) -> Any:
    log(f"raw generate(): c={levels}, {reps} batch(es) each, {max_tokens} tokens")
    argv = [sys.executable, str(BENCH / "generate_baseline.py"), str(snapshot), "--max-tokens", str(max_tokens),
            "--threads", str(threads), "--reps", str(reps), "--concurrency", *map(str, levels)]  # fmt: skip
    proc = subprocess.run(argv, env=common.pinned_env(threads), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"generate_baseline failed:\n{proc.stderr[-3000:]}")
    res: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    res["by_c"] = {row["concurrency"]: row for row in res.pop("rows")}
    return res


def run_ours(args: argparse.Namespace, levels: list[int], log_dir: Path) -> dict[str, Any]:
    extra_env = {"HUGLLAMA_NUM_PARALLEL": str(max(32, *levels))}
    out: dict[str, Any] = {}
    log("starting hugllama serve")
    with common.start_ours(args.snapshots, args.threads, log_dir, extra_env) as server:
        log(f"hugllama ready in {server.started_s:.1f}s at {server.url}")
        out["openai"] = drive(server, "openai", levels, args.max_tokens, args.quick)
        out["ollama"] = drive(server, "ollama", levels, args.max_tokens, args.quick)
        if not args.no_extras:
            q = args.quick
            extras: dict[str, Any] = {}
            snapshot = common.ensure_snapshot(args.snapshots, args.threads, log_dir)  # converted by this server
            steps: list[tuple[str, Any]] = [
                ("single_stream", lambda: single_stream_paired(server, snapshot, args, 2 if q else 4)),
                ("mixed_sampling", lambda: mixed_vs_uniform(server, 8 if q else 16, args.max_tokens, 1 if q else 2)),
                ("prefix_cache", lambda: asyncio.run(prefix_cache.measure(server.url, rounds=1 if q else 2))),
                ("constraint_cost", lambda: asyncio.run(constraint_cost.measure(
                    server.url, concurrency=(1, 4) if q else (1, 4, 16), max_tokens=args.max_tokens))),
                ("consistency", lambda: consistency(server, 4 if q else 8, min(args.max_tokens, 48))),
            ]  # fmt: skip
            for name, step in steps:
                log(f"extra: {name}")
                try:
                    extras[name] = step()
                except Exception as e:  # one failed measurement must not lose the others
                    log(f"extra {name} failed: {type(e).__name__}: {e}")
                    extras[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
            out["extras"] = extras
    return out


def run_transformers(args: argparse.Namespace, snapshot: Path, levels: list[int], log_dir: Path, cb: bool) -> Any:
    log(f"starting transformers serve{' --continuous-batching' if cb else ''}")
    with common.start_transformers(snapshot, args.threads, log_dir, continuous_batching=cb) as server:
        log(f"{server.name} ready in {server.started_s:.1f}s at {server.url}")
        return drive(server, "openai", levels, args.max_tokens, args.quick)


def run_paired(args: argparse.Namespace, snapshot: Path, log_dir: Path, c: int, rounds: int) -> dict[str, Any]:
    """Aggregate at concurrency c, ours against `transformers serve --continuous-batching`, alternated round by
    round with both servers up (each idles at under 1% CPU while the other is driven), so every ratio compares
    measurements taken minutes apart instead of the main table's 20-30 minutes."""
    log(f"paired c={c}: starting both servers")
    extra_env = {"HUGLLAMA_NUM_PARALLEL": str(max(32, c))}
    with (
        common.start_ours(args.snapshots, args.threads, log_dir, extra_env) as ours,
        common.start_transformers(snapshot, args.threads, log_dir, continuous_batching=True) as tf,
    ):
        for server in (ours, tf):  # first requests pay one-off costs (template compile, allocator growth)
            run_loadgen(server.url, server.model, protocol="openai", concurrency=2, requests=2,
                        max_tokens=16, warmup=0, label=f"paired/warm/{server.name}")  # fmt: skip
        out_rounds: list[dict[str, Any]] = []
        for r in range(rounds):
            log(f"paired c={c}: round {r + 1}/{rounds}")
            row: dict[str, Any] = {}
            for key, server, proto in (("openai", ours, "openai"), ("ollama", ours, "ollama"), ("cb", tf, "openai")):
                res = run_loadgen(
                    server.url, server.model, protocol=proto, concurrency=c, requests=c, max_tokens=args.max_tokens,
                    warmup=0, label=f"paired/{key}/r{r}",
                )  # fmt: skip
                row[key] = {k: res.get(k) for k in ("output_tok_per_s", "ttft_p50", "errors")}
            out_rounds.append(row)
    out: dict[str, Any] = {"concurrency": c, "rounds": out_rounds}
    for key in ("openai", "ollama"):
        ratios = [
            x[key]["output_tok_per_s"] / x["cb"]["output_tok_per_s"]
            for x in out_rounds
            if x[key]["output_tok_per_s"] and x["cb"]["output_tok_per_s"]
        ]
        out[f"ratio_{key}"] = round(statistics.median(ratios), 3) if ratios else None
        out[f"ttft_p50_{key}"] = statistics.median(x[key]["ttft_p50"] or 0.0 for x in out_rounds)
    out["ttft_p50_cb"] = statistics.median(x["cb"]["ttft_p50"] or 0.0 for x in out_rounds)
    return out


# ---- report ----


def _f(x: Any, nd: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _ratio(a: Any, b: Any) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    levels: list[int] = meta["concurrency"]
    gen = results.get("generate") or {}
    gen_c = gen.get("by_c", {})
    ours = results.get("ours") or {}
    tf = results.get("transformers") or {}
    tfcb = results.get("transformers_cb") or {}
    lines = [
        f"Run {meta['started']} - {meta['machine']}, torch threads {meta['threads']}, {meta['max_tokens']} new tokens,"
        f" greedy, streaming; load average {meta['load_avg_start']} at start, {meta.get('load_avg_end')} at end"
        f"{' (--quick)' if meta['quick'] else ''}.",
        "",
        "| server | protocol | c | requests | agg tok/s | TTFT p50 s | TTFT p95 s | per-stream tok/s | "
        "agg vs tf serve | agg vs tf serve CB | per-stream vs generate() |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def row(name: str, proto: str, c: int, r: dict[str, Any]) -> str:
        agg = r.get("output_tok_per_s")
        base = (tf.get(c) or {}).get("output_tok_per_s")
        base_cb = (tfcb.get(c) or {}).get("output_tok_per_s")
        g = gen_c.get(c) or {}
        vs_gen = _ratio(r.get("decode_tok_s_p50"), g.get("decode_tok_s_p50")) if c == 1 else "-"
        errs = f" ({r['errors']} err)" if r.get("errors") else ""
        return (
            f"| {name} | {proto} | {c} | {r.get('requests')}{errs} | {_f(agg)} | {_f(r.get('ttft_p50'), 2)} | "
            f"{_f(r.get('ttft_p95'), 2)} | {_f(r.get('decode_tok_s_p50'))} | {_ratio(agg, base)} | "
            f"{_ratio(agg, base_cb)} | {vs_gen} |"
        )

    for c in levels:
        for proto in ("openai", "ollama"):
            r = (ours.get(proto) or {}).get(c)
            if r:
                lines.append(row("hugllama", proto, c, r))
        if tf.get(c):
            lines.append(row("transformers serve", "openai", c, tf[c]))
        if tfcb.get(c):
            lines.append(row("transformers serve --continuous-batching", "openai", c, tfcb[c]))
        if gen_c.get(c):
            g = gen_c[c]
            lines.append(
                f"| raw generate() static batch | in-process | {c} | {g['reps']} batch(es) | "
                f"{_f(g['output_tok_per_s'])} | {_f(g.get('ttft_p50'), 2)} | - | {_f(g.get('decode_tok_s_p50'))} | "
                f"- | - | - |"
            )
    pr = results.get("paired") or {}
    if pr:
        per_round = "; ".join(
            f"{_f(x['openai']['output_tok_per_s'])} / {_f(x['ollama']['output_tok_per_s'])} / "
            f"{_f(x['cb']['output_tok_per_s'])}"
            for x in pr["rounds"]
        )
        lines += [
            "",
            f"Paired rounds at c={pr['concurrency']} (both servers up, driven in turn, {pr['concurrency']} requests "
            f"each; hugllama openai / ollama / transformers serve CB aggregate tok/s: {per_round}): "
            f"**{pr['ratio_openai']}x** (OpenAI), **{pr['ratio_ollama']}x** (Ollama) of `transformers serve "
            f"--continuous-batching`; TTFT p50 {_f(pr['ttft_p50_openai'], 2)} / {_f(pr['ttft_p50_ollama'], 2)} s "
            f"against its {_f(pr['ttft_p50_cb'], 2)} s.",
        ]
    ex = ours.get("extras") or {}
    if ex:
        lines += ["", "Extras (hugllama, same run):", ""]
        ss = ex.get("single_stream") or {}
        if "error" in ss or not ss:
            lines.append(f"- single stream vs generate(), paired: {ss.get('error', 'not run')}")
        else:
            per_round = "; ".join(f"{_f(x['generate'])} / {_f(x['openai'])} / {_f(x['ollama'])}" for x in ss["rounds"])
            lines.append(
                f"- single stream, paired with raw generate() round by round ({len(ss['rounds'])} rounds, "
                f"generate / openai / ollama per-stream tok/s: {per_round}): **{ss['ratio_openai']}x** (OpenAI), "
                f"**{ss['ratio_ollama']}x** (Ollama) of generate() (target >= 0.9)"
            )
        m = ex.get("mixed_sampling") or {}
        if "error" in m or not m:
            lines.append(f"- mixed sampling: {m.get('error', 'not run')}")
        else:
            lines.append(
                f"- mixed vs uniform sampling ({m['requests']} concurrent requests, {m['max_tokens']} tokens): "
                f"uniform {m['uniform_tok_s']:.1f} tok/s, mixed {m['mixed_tok_s']:.1f} tok/s -> "
                f"**{m['mixed_over_uniform']}x** aggregate, {m['mixed_over_uniform_decode']}x per-stream "
                "(target >= 0.8)"
            )
        p = ex.get("prefix_cache") or {}
        if "error" in p or not p:
            lines.append(f"- prefix cache: {p.get('error', 'not run')}")
        else:
            r0 = p["rounds"][0]
            lines.append(
                f"- prefix cache ({p['prompt_tokens']}-token conversation): TTFT turn 1 {p['ttft_turn1']} s, "
                f"turn 2 {p['ttft_turn2']} s (**{p['turn2_over_turn1']}x**, "
                f"{r0['turn2_cached_tokens']} cached tokens), "
                f"first turn after /api/v1/cache/warm {p['ttft_warmed']} s (**{p['warmed_over_turn1']}x**, "
                f"{r0['warmed_cached_tokens']} cached tokens); target turn 2 <= 0.3x"
            )
        k = ex.get("constraint_cost") or {}
        if "error" in k or not k:
            lines.append(f"- constraint cost: {k.get('error', 'not run')}")
        else:
            for lv in k["levels"]:
                u, c2 = lv["unconstrained"], lv["constrained"]
                lines.append(
                    f"- JSON-schema constraint, c={lv['concurrency']}: per-stream {_f(u['decode_tok_s_p50'])} -> "
                    f"{_f(c2['decode_tok_s_p50'])} tok/s (**{lv['slowdown_decode']}x slower**), aggregate "
                    f"{_f(u['output_tok_per_s'])} -> {_f(c2['output_tok_per_s'])} tok/s; valid JSON "
                    f"{lv['constrained_valid_json']} (target <= 1.5x)"
                )
        s = ex.get("consistency") or {}
        if "error" in s or not s:
            lines.append(f"- consistency: {s.get('error', 'not run')}")
        else:
            lines.append(
                f"- temperature 0, batched vs alone: {s['identical']}/{s['prompts']} identical over "
                f"{s['max_tokens']} tokens" + (f"; diffs {s['diffs']}" if s["diffs"] else "")
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer requests, c=1,4,16")
    ap.add_argument("--only", choices=["ours", "baselines"], default=None)
    ap.add_argument("--concurrency", type=int, nargs="+", default=None, help="default 1 4 16 32 (quick: 1 4 16)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads of every process")
    ap.add_argument("--snapshots", type=Path, default=DEFAULT_SNAPSHOTS, help="shared HUGLLAMA_SNAPSHOTS")
    ap.add_argument(
        "--no-extras", action="store_true", help="skip mixed sampling, prefix cache, constraint, consistency"
    )
    ap.add_argument("--no-cb", action="store_true", help="skip transformers serve --continuous-batching")
    ap.add_argument("--no-serve", action="store_true", help="skip transformers serve without batching")
    ap.add_argument(
        "--no-paired", action="store_true", help="skip the paired c=16 rounds against transformers serve CB"
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "latest", help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    levels = args.concurrency or ([1, 4, 16] if args.quick else [1, 4, 16, 32])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = RESULTS / "raw" / stamp
    log_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "meta": {
            "started": time.strftime("%Y-%m-%d %H:%M"),
            "command": " ".join([".venv/bin/python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "threads": args.threads,
            "max_tokens": args.max_tokens,
            "concurrency": levels,
            "quick": args.quick,
            "load_avg_start": common.load_average(),
        }
    }
    # Ours first: its start converts the GGUF if needed, and the baselines then read that very snapshot.
    if args.only != "baselines":
        results["ours"] = run_ours(args, levels, log_dir)
    if args.only != "ours":
        snapshot = common.ensure_snapshot(args.snapshots, args.threads, log_dir)
        results["meta"]["snapshot"] = str(snapshot)
        reps = 1 if args.quick else 2
        results["generate"] = run_generate_baseline(snapshot, levels, args.max_tokens, args.threads, reps)
        if not args.no_serve:
            results["transformers"] = run_transformers(args, snapshot, levels, log_dir, cb=False)
        if not args.no_cb:
            results["transformers_cb"] = run_transformers(args, snapshot, levels, log_dir, cb=True)
        if not args.no_cb and not args.no_paired and args.only is None:
            results["paired"] = run_paired(args, snapshot, log_dir, c=16, rounds=2 if args.quick else 3)
    return common.finish(args.out, results, render)


if __name__ == "__main__":
    sys.exit(main())
