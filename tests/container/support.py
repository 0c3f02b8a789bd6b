"""Docker helpers for the container tier: the CLI run as subprocesses, waits with deadlines, HTTP against a
published port, and the image build through the loopback wheel index."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
IMAGE = "hugging-llama:cpu"
BASE_IMAGE = "python:3.11-slim"
WHEELS = Path(os.environ.get("HUGLLAMA_TEST_WHEELS", "/var/cache/hugllama-test/wheels"))
# The build the README documents for CPU hosts, with the torch wheel and PyPI served from loopback.
BUILD_ENV = {**os.environ, "DOCKER_BUILDKIT": "0"}
QUESTION = "What is the capital of France?"


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env=BUILD_ENV)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} -> {result.returncode}: {result.stderr.strip()[-2000:]}")
    return result.stdout.strip()


def compose(project: str, *args: str, env: dict[str, str], timeout: float = 300) -> str:
    cmd = ["docker-compose", "-p", project, "-f", str(REPO / "docker-compose.yml"), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**BUILD_ENV, **env})
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {result.returncode}: {result.stderr.strip()[-2000:]}")
    return result.stdout.strip()


def docker_usable() -> str | None:
    """None when the Docker CLI reaches a daemon, else why not."""
    if shutil.which("docker") is None:
        return "no docker CLI"
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "docker info timed out"
    return None if result.returncode == 0 else (result.stderr.strip().splitlines() or ["docker info failed"])[-1]


def build(context: Path, tag: str, index_url: str, torch_version: str, *args: str) -> float:
    """`docker build` of the CPU image with the legacy builder (what compose v1 and DOCKER_BUILDKIT=0 use)."""
    started = time.monotonic()
    docker(
        "build",
        "--network",
        "host",
        "-t",
        tag,
        "--build-arg",
        f"BASE_IMAGE={BASE_IMAGE}",
        "--build-arg",
        f"TORCH_INDEX_URL={index_url}",
        "--build-arg",
        f"PIP_INDEX_URL={index_url}",
        "--build-arg",
        f"TORCH_VERSION={torch_version}",
        *args,
        str(context),
        timeout=1800,
    )
    return time.monotonic() - started


def health(container: str) -> str:
    return docker("inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{end}}", container)


def wait_healthy(container: str, timeout: float = 600) -> float:
    """Seconds until Docker reports the container healthy (its HEALTHCHECK, run by the daemon)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        state = docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", container)
        if not state.startswith("running"):
            raise AssertionError(f"{container} is {state}:\n{docker('logs', '--tail', '40', container)}")
        if health(container) == "healthy":
            return time.monotonic() - started
        time.sleep(1)
    raise AssertionError(f"{container} not healthy after {timeout}s:\n{docker('logs', '--tail', '40', container)}")


def logs(container: str) -> list[str]:
    """Every line the container wrote (stdout and stderr), tqdm's carriage returns split into lines."""
    result = subprocess.run(["docker", "logs", container], capture_output=True, text=True, timeout=60)
    text = (result.stdout + result.stderr).replace("\r", "\n")
    return [line for line in text.splitlines() if line.strip()]


def non_json(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        try:
            if not isinstance(json.loads(line), dict):
                out.append(line)
        except ValueError:
            out.append(line)
    return out


def error_lines(lines: list[str]) -> list[str]:
    bad = []
    for line in lines:
        try:
            record = json.loads(line)
            level = str(record.get("level", "")).lower() if isinstance(record, dict) else ""
        except ValueError:
            level = ""
        if level in {"error", "critical"} or "Traceback" in line or "[ERROR]" in line or " ERROR " in line:
            bad.append(line)
    return bad


def conversions(lines: list[str]) -> int:
    return sum(1 for line in lines if "converting SmolLM2" in line)


def published(container: str) -> str:
    """The host address:port Docker published the container's 11434 on."""
    return docker("port", container, "11434/tcp").splitlines()[0]


def post(base: str, path: str, body: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://{base}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def stream_lines(base: str, path: str, body: dict[str, Any], timeout: float = 300) -> Iterator[str]:
    request = urllib.request.Request(
        f"http://{base}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        for raw in response:
            line = raw.decode().strip()
            if line:
                yield line


def get(base: str, path: str, timeout: float = 30) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://{base}{path}", timeout=timeout) as response:
        return response.status, response.read().decode()


def greedy_chat(base: str) -> str:
    body = {
        "model": "smollm2:135m",
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": False,
        "options": {"temperature": 0, "num_predict": 24},
    }
    return str(post(base, "/api/chat", body)["message"]["content"])


def v1_stream(base: str) -> list[str]:
    body = {
        "model": "smollm2:135m",
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": True,
        "temperature": 0,
        "max_tokens": 16,
    }
    return list(stream_lines(base, "/v1/chat/completions", body))


def smoke(base: str) -> None:
    """The checks every way of running the image gets: greedy /api/chat, a /v1 stream, /metrics."""
    answer = greedy_chat(base)
    assert "Paris" in answer, answer
    events = v1_stream(base)
    assert events[-1] == "data: [DONE]", events[-3:]
    text = "".join(
        (json.loads(e[len("data: ") :])["choices"] or [{}])[0].get("delta", {}).get("content") or ""
        for e in events[:-1]
    )
    assert "Paris" in text, text
    status, metrics = get(base, "/metrics")
    assert status == 200 and "hugllama_requests_total{" in metrics, metrics[:500]
    assert "hugllama_models_loaded 1.0" in metrics, [m for m in metrics.splitlines() if "models_loaded" in m]
