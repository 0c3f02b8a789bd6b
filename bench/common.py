"""Benchmark helpers: pinned environment, server processes (ours and `transformers serve`), the snapshot of the
embedded model, loadgen runs in-process and a small streaming client for per-request bodies."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENV_BIN = REPO / ".venv" / "bin"
HUGLLAMA = VENV_BIN / "hugllama"
TRANSFORMERS = VENV_BIN / "transformers"
MODEL = "smollm2:135m"
READY_TIMEOUT = 900.0

# loadgen.py is a script next to this file (a copy of ../shared/bench/loadgen.py), untyped: imported as Any.
sys.path.insert(0, str(BENCH))
loadgen: Any = importlib.import_module("loadgen")
# The bench runs from a checkout (it starts .venv/bin/hugllama): it takes the tests' free-port helper.
sys.path.insert(1, str(REPO))
from tests.helpers.env import snapshots_dir  # noqa: E402
from tests.helpers.net import free_port  # noqa: E402

DEFAULT_SNAPSHOTS = snapshots_dir()  # the slow tier's, so the embedded model is converted once per machine


def pinned_env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every process of a run gets: same torch/OpenMP thread count, offline Hub. threads=0 leaves
    the thread count to the process (for our server: its own default, HUGLLAMA_TORCH_THREADS=0)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUGLLAMA_", "OLLAMA_"))}
    if threads > 0:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HUGLLAMA_TORCH_THREADS=str(threads))
    else:
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.pop(key, None)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.update(extra or {})
    return env


@dataclass
class Server:
    """A server child process (own session, so it is stopped with its children)."""

    name: str
    url: str
    model: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    workdir: Path | None = None
    started_s: float = 0.0

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawn(name: str, argv: list[str], env: dict[str, str], log_path: Path, url: str, model: str) -> Server:
    log = open(log_path, "ab")  # the child keeps its own descriptor
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return Server(name=name, url=url, model=model, proc=proc, log_path=log_path)


def wait_ready(server: Server, path: str, timeout: float = READY_TIMEOUT) -> None:
    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.url + path, timeout=5, trust_env=False).status_code == 200:
                server.started_s = time.perf_counter() - t0
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f}s:\n{server.log_tail()}")


def start_ours(snapshots: Path, threads: int, log_dir: Path, extra_env: dict[str, str] | None = None) -> Server:
    """`hugllama serve` with its own HUGLLAMA_HOME and the shared snapshot directory; ready once preloaded."""
    home = Path(tempfile.mkdtemp(prefix="hl-bench-home-"))
    port = free_port()
    env = pinned_env(
        threads,
        {"HUGLLAMA_HOME": str(home), "HUGLLAMA_SNAPSHOTS": str(snapshots), "HUGLLAMA_LOG_LEVEL": "WARNING"},
    )
    env.update(extra_env or {})
    argv = [str(HUGLLAMA), "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = _spawn("hugllama", argv, env, log_dir / "hugllama.log", f"http://127.0.0.1:{port}", MODEL)
    server.workdir = home
    wait_ready(server, "/readyz")
    return server


def start_transformers(snapshot: Path, threads: int, log_dir: Path, *, continuous_batching: bool) -> Server:
    """`transformers serve <snapshot dir>`: a local path is served under that exact path as the model name."""
    port = free_port()
    argv = [str(TRANSFORMERS), "serve", str(snapshot), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    argv.append("--continuous-batching" if continuous_batching else "--no-continuous-batching")
    name = "transformers-cb" if continuous_batching else "transformers"
    server = _spawn(name, argv, pinned_env(threads), log_dir / f"{name}.log", f"http://127.0.0.1:{port}", str(snapshot))
    wait_ready(server, "/health")
    return server


def find_snapshot(snapshots: Path) -> Path | None:
    """The converted snapshot of the embedded GGUF (<stem>-<digest>/ with weights), if one exists; the newest
    one when a loader change left older digests behind (our server has just written or read it)."""
    if not snapshots.is_dir():
        return None
    found = [
        d
        for d in snapshots.glob("SmolLM2-135M-Instruct*")
        if (d / "config.json").is_file() and any(d.glob("*.safetensors"))
    ]
    return max(found, key=lambda d: d.stat().st_mtime) if found else None


def ensure_snapshot(snapshots: Path, threads: int, log_dir: Path) -> Path:
    found = find_snapshot(snapshots)
    if found is not None:
        return found
    with start_ours(snapshots, threads, log_dir):  # the first start converts the GGUF
        pass
    found = find_snapshot(snapshots)
    if found is None:
        raise RuntimeError(f"no converted snapshot under {snapshots}")
    return found


# ---- load generation ----


def run_loadgen(
    url: str,
    model: str,
    *,
    protocol: str,
    concurrency: int,
    requests: int,
    max_tokens: int,
    warmup: int = 1,
    label: str = "",
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    """One loadgen run (streaming chat), in this process; returns its summary dict."""
    argv = [
        "--url", url, "--protocol", protocol, "--model", model, "--concurrency", str(concurrency),
        "--requests", str(requests), "--max-tokens", str(max_tokens), "--warmup", str(warmup), "--stream",
        "--timeout", "1800", "--deadline", "3600", *extra,
    ]  # fmt: skip
    if protocol == "openai":
        argv.append("--stream-usage")
    args = loadgen.parse_args(argv)
    res: dict[str, Any] = asyncio.run(loadgen.run(args))
    res["label"] = label
    return res


@dataclass
class StreamResult:
    """One streamed OpenAI chat completion as seen by the client."""

    ok: bool
    text: str = ""
    tokens: int = 0
    ttft: float | None = None
    latency: float = 0.0
    decode_tok_s: float | None = None
    finish: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    token_times: list[float] = field(default_factory=list)


async def stream_chat(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> StreamResult:
    """POST /v1/chat/completions with stream=true and usage; times the first and last content chunks."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    out = StreamResult(ok=False)
    parts: list[str] = []
    try:
        async with client.stream("POST", url.rstrip("/") + "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                chunk = json.loads(payload)
                if "error" in chunk:
                    raise RuntimeError(f"stream error: {chunk['error']}")
                usage = chunk.get("usage")
                if usage:
                    out.tokens = int(usage.get("completion_tokens") or 0)
                    out.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                    out.cached_tokens = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
                for ch in chunk.get("choices") or []:
                    text = (ch.get("delta") or {}).get("content") or ""
                    if text:
                        out.token_times.append(time.perf_counter())
                        parts.append(text)
                    if ch.get("finish_reason"):
                        out.finish = ch["finish_reason"]
        out.ok = True
    except Exception as e:  # recorded, reported in the summary
        out.error = f"{type(e).__name__}: {e}"[:300]
    out.latency = time.perf_counter() - t0
    out.text = "".join(parts)
    if out.token_times:
        out.ttft = out.token_times[0] - t0
        if not out.tokens:
            out.tokens = len(out.token_times)
        span = out.token_times[-1] - out.token_times[0]
        if out.tokens > 1 and span > 0:
            out.decode_tok_s = (out.tokens - 1) / span
    return out


async def stream_many(url: str, bodies: Sequence[dict[str, Any]], concurrency: int) -> tuple[list[StreamResult], float]:
    """Run `bodies` with at most `concurrency` in flight; results in input order, and the wall time."""
    sem = asyncio.Semaphore(concurrency)
    timeout = httpx.Timeout(1800.0, connect=10.0)
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:

        async def one(body: dict[str, Any]) -> StreamResult:
            async with sem:
                return await stream_chat(client, url, body)

        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(b) for b in bodies))
        return list(results), time.perf_counter() - t0


def summarize_streams(results: Sequence[StreamResult], wall: float) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    tokens = sum(r.tokens for r in ok)
    ttfts = [r.ttft for r in ok if r.ttft is not None]
    decs = [r.decode_tok_s for r in ok if r.decode_tok_s]
    return {
        "requests": len(results),
        "errors": len(results) - len(ok),
        "error_samples": [r.error for r in results if not r.ok][:3],
        "wall_s": round(wall, 3),
        "output_tokens": tokens,
        "output_tok_per_s": round(tokens / wall, 2) if wall > 0 else None,
        "ttft_p50": _r(loadgen.percentile(ttfts, 50)),
        "decode_tok_s_p50": _r(statistics.median(decs) if decs else None, 2),
        "mean_completion_tokens": round(tokens / len(ok), 1) if ok else None,
    }


def _r(x: float | None, n: int = 3) -> float | None:
    return None if x is None else round(x, n)


def post_json(url: str, path: str, body: dict[str, Any], timeout: float = 1800.0) -> dict[str, Any]:
    r = httpx.post(url.rstrip("/") + path, json=body, timeout=timeout, trust_env=False)
    r.raise_for_status()
    data: dict[str, Any] = r.json()
    return data


def write_results(out: Path, results: dict[str, Any], report: str) -> None:
    """OUT.json (every number) and OUT.md (the command, then the report)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    out.with_suffix(".md").write_text(f"Command: `{results['meta']['command']}`\n\n{report}\n")


def finish(out: Path, results: dict[str, Any], render: Callable[[dict[str, Any]], str]) -> int:
    """A run's end: the load average then, the report written (write_results) and printed; the exit status."""
    results["meta"]["load_avg_end"] = load_average()
    report = render(results)
    write_results(out, results, report)
    print(report)
    return 0


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None
