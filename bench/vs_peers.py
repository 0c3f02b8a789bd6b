"""Our server against vLLM's CPU build and llama-cpp-python, paired round by round (bench/README.md, "Peers").

Phase 1: hugllama (its defaults, plus any --ours-variant), vLLM with its default `VLLM_CPU_OMP_THREADS_BIND=auto`
(one compute thread) and llama-cpp-python (2 threads). Phase 2: the same configurations of ours and vLLM with
`VLLM_CPU_OMP_THREADS_BIND=0-1` (both cores). Every round drives each server in turn at c = 1, 16, 32
(llama-cpp-python at 1 and 16: it serves one request at a time), the others stopped meanwhile. Ratios are ours /
the peer's aggregate in the same round; the report gives their median and min-max over rounds, peak RSS of each
server's process tree at each level, and the load average.

    .venv/bin/python bench/vs_peers.py [--rounds 3] [--concurrency 1 16 32] [--max-tokens 128] [--no-bind01]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import common
import peers
from common import BENCH, DEFAULT_SNAPSHOTS

GOALS = "c=16 and c=32 aggregate >= 1.2x vLLM; TTFT p50 at c=32 <= 1.5 s; c=1 >= 1.0x llama-cpp-python"


def run_phase(
    args: argparse.Namespace, snapshot: Path, log_dir: Path, bind: str, with_llama: bool, ours_env: dict[str, str]
) -> dict[str, Any]:
    with ExitStack() as stack:
        servers: dict[str, common.Server] = {}
        peers.log("starting hugllama serve (defaults)")
        servers["hugllama"] = stack.enter_context(
            common.start_ours(args.snapshots, args.ours_threads, log_dir, ours_env)
        )
        for label, env in variants(args.ours_variant).items():
            peers.log(f"starting hugllama serve ({label}: {env})")
            servers[f"hugllama-{label}"] = stack.enter_context(
                common.start_ours(args.snapshots, args.ours_threads, log_dir, {**ours_env, **env})
            )
        if not args.no_vllm:
            peers.log(f"starting vLLM (VLLM_CPU_OMP_THREADS_BIND={bind})")
            servers[f"vllm-{bind}"] = stack.enter_context(
                peers.start_vllm(snapshot, log_dir, bind=bind, kv_gib=args.vllm_kv_gib)
            )
        if with_llama:
            peers.log("starting llama-cpp-python")
            servers["llama-cpp-python"] = stack.enter_context(peers.start_llamacpp(log_dir, threads=args.threads))
        started = {k: round(s.started_s, 1) for k, s in servers.items()}
        idle_rss = {k: peers.rss_bytes(s.proc.pid) >> 20 for k, s in servers.items()}

        def skip(key: str, c: int) -> bool:
            return key == "llama-cpp-python" and c > 16

        res = peers.paired_rounds(servers, args.concurrency, args.rounds, args.max_tokens, skip)
        res["started_s"] = started
        res["idle_rss_mib"] = idle_rss
        res["summary"] = peers.summarize(res)
        return res


def variants(specs: list[str]) -> dict[str, dict[str, str]]:
    """`bf16:HUGLLAMA_DTYPE=bfloat16` -> {"bf16": {"HUGLLAMA_DTYPE": "bfloat16"}} (several KEY=VALUE with commas)."""
    out: dict[str, dict[str, str]] = {}
    for spec in specs:
        label, _, pairs = spec.partition(":")
        out[label] = dict(kv.split("=", 1) for kv in pairs.split(",") if kv)
    return out


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"Run {meta['started']} - {meta['machine']}, {meta['max_tokens']} new tokens, greedy, streaming OpenAI chat, "
        f"{meta['rounds']} paired rounds; load average {meta['load_avg_start']} at start, {meta.get('load_avg_end')} "
        f"at end. Goals: {GOALS}.",
    ]
    for phase in results["phases"]:
        summ = phase["summary"]
        lines += [
            "",
            f"**{phase['title']}** (start-up s: {phase['started_s']}; idle RSS MiB: {phase['idle_rss_mib']})",
            "",
            "| server | c | agg tok/s median (min-max) | TTFT p50 s | per-stream tok/s | peak RSS MiB | "
            "ours / this, median (min-max) |",
            "|---|---|---|---|---|---|---|",
        ]
        for key, by_c in summ["servers"].items():
            for c, s in by_c.items():
                rts = (summ["ratios"].get(key) or {}).get(c) or {}
                ratio = (
                    "; ".join(f"{ours}: **{rt['median']}x** ({rt['min']}-{rt['max']})" for ours, rt in rts.items())
                    or "-"
                )
                errs = f" ({s['errors']} err)" if s["errors"] else ""
                lines.append(
                    f"| {key} | {c} | {s['agg_p50']} ({s['agg_min']}-{s['agg_max']}){errs} | {s['ttft_p50']} | "
                    f"{s['decode_p50']} | {s['peak_rss_mib']} | {ratio} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 32])
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="llama-cpp-python's threads")
    ap.add_argument(
        "--ours-threads", type=int, default=0, help="our torch threads; 0 = the server's default (all cores)"
    )
    # Unset, vLLM 0.32 reserves 92% of the machine's memory (--gpu-memory-utilization means CPU memory there) and
    # refuses to start when less is free, as on any shared machine.
    ap.add_argument("--vllm-kv-gib", type=int, default=4, help="VLLM_CPU_KVCACHE_SPACE (GiB)")
    ap.add_argument("--no-bind01", action="store_true", help="skip the phase with vLLM on both cores")
    ap.add_argument("--no-llama", action="store_true", help="leave llama-cpp-python out")
    ap.add_argument("--no-vllm", action="store_true", help="leave vLLM out (implies --no-bind01)")
    ap.add_argument("--ours-env", nargs="*", default=[], help="KEY=VALUE settings for our server (default: none)")
    ap.add_argument(
        "--ours-variant",
        nargs="*",
        default=[],
        help="more configurations of ours, up beside the default one: LABEL:KEY=VALUE[,KEY=VALUE]",
    )
    ap.add_argument("--snapshots", type=Path, default=DEFAULT_SNAPSHOTS)
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "peers")
    args = ap.parse_args(argv)
    # A TERM (timeout, CI) must unwind the with-blocks so every server started here is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ours_env = dict(kv.split("=", 1) for kv in args.ours_env)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = BENCH / "results" / "raw" / f"peers-{stamp}"
    log_dir.mkdir(parents=True, exist_ok=True)
    # Both venvs first: a missing one is built before any server runs (minutes, once per machine).
    if not args.no_vllm:
        peers.ensure_vllm()
    snapshot = common.ensure_snapshot(args.snapshots, args.threads, log_dir)
    results: dict[str, Any] = {
        "meta": {
            "started": time.strftime("%Y-%m-%d %H:%M"),
            "command": " ".join([".venv/bin/python", "bench/vs_peers.py", *(sys.argv[1:] if argv is None else argv)]),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "max_tokens": args.max_tokens,
            "rounds": args.rounds,
            "threads": args.threads,
            "ours_threads": args.ours_threads,
            "vllm_kv_gib": args.vllm_kv_gib,
            "ours_env": ours_env,
            "snapshot": str(snapshot),
            "gguf": str(peers.gguf_file()),
            "load_avg_start": common.load_average(),
        },
        "phases": [],
    }
    # vLLM's default binding first (the comparison the goals name); both cores after it.
    phases = [("auto", not args.no_llama)] + ([] if args.no_bind01 or args.no_vllm else [("0-1", False)])
    for bind, with_llama in phases:
        if with_llama:
            peers.ensure_llamacpp()
        res = run_phase(args, snapshot, log_dir, bind, with_llama, ours_env)
        peers_in = "vLLM bind " + bind + (" + llama-cpp-python" if with_llama else "")
        res["title"] = f"hugllama (defaults{', ' + str(ours_env) if ours_env else ''}) vs {peers_in}"
        results["phases"].append(res)
        common.write_results(args.out, results, render(results))  # partial results too
    return common.finish(args.out, results, render)


if __name__ == "__main__":
    sys.exit(main())
