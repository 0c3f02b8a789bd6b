"""Production operations on the real engine: admission (503 + Retry-After) and a 64-client load, client
disconnects, the SIGTERM drain, API keys with the official clients, /metrics, request ids and JSON logs."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.slow.conftest import ServerProcess, running_server

pytestmark = pytest.mark.slow

MODEL = "smollm2:135m"
TIMEOUT = 300
SECRET = "zebra-pineapple-7731"  # a prompt word that must never reach the logs unless asked


def samples(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=30).text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def value(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for lab, v in found.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


def ollama_body(n: int, prompt: str = "Write a long story about a dragon.") -> dict[str, Any]:
    return {"model": MODEL, "prompt": prompt, "stream": False, "options": {"num_predict": n, "temperature": 0}}


def openai_body(n: int) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "Write a long story about a dragon.", "max_tokens": n, "temperature": 0}


# ---- a server with one slot and a one-request queue ----


@pytest.fixture(scope="module")
def tight(shared_snapshots: Path) -> Iterator[ServerProcess]:
    with running_server(
        shared_snapshots, {"HUGLLAMA_NUM_PARALLEL": "1", "HUGLLAMA_MAX_QUEUE": "1", "HUGLLAMA_CONTEXT_LENGTH": "512"}
    ) as server:
        yield server


def _fire(url: str, jobs: list[tuple[str, dict[str, Any]]], workers: int) -> list[httpx.Response]:
    with httpx.Client(timeout=TIMEOUT, limits=httpx.Limits(max_connections=workers)) as client:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda job: client.post(url + job[0], json=job[1]), jobs))


def test_queue_full_answers_503_with_retry_after_on_both_protocols(tight: ServerProcess) -> None:
    jobs = [("/api/generate", ollama_body(12)), ("/v1/completions", openai_body(12))] * 4
    responses = _fire(tight.url, jobs, len(jobs))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and 200 in codes, codes
    for (path, _), r in zip(jobs, responses, strict=True):
        if r.status_code == 503:
            assert int(r.headers["retry-after"]) >= 1
            body = r.json()
            if path.startswith("/v1/"):
                assert body["error"]["type"] and "busy" in body["error"]["message"]
            else:
                assert "busy" in body["error"]
    busy = {path for (path, _), r in zip(jobs, responses, strict=True) if r.status_code == 503}
    assert busy == {"/api/generate", "/v1/completions"}, codes


def test_64_clients_get_200_or_503_and_readyz_answers_throughout(tight: ServerProcess) -> None:
    url = tight.url
    stop = threading.Event()
    probes: list[int] = []

    def probe() -> None:
        while not stop.is_set():
            try:
                probes.append(httpx.get(url + "/readyz", timeout=10).status_code)
            except httpx.HTTPError:
                probes.append(0)
            time.sleep(0.2)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        jobs = [
            ("/api/generate", ollama_body(2, "Hi")) if i % 2 else ("/v1/completions", openai_body(2)) for i in range(64)
        ]
        responses = _fire(url, jobs, 64)
    finally:
        stop.set()
        prober.join()
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503}, codes
    assert codes.count(200) >= 1 and codes.count(503) >= 1, codes
    assert all("retry-after" in r.headers for r in responses if r.status_code == 503)
    assert probes and set(probes) == {200}, probes


def test_client_disconnect_stops_generation(tight: ServerProcess) -> None:
    url = tight.url
    before = samples(url)
    with httpx.Client(timeout=TIMEOUT) as client:
        body = {**ollama_body(400), "stream": True}
        with client.stream("POST", url + "/api/generate", json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            for _ in range(3):
                assert not json.loads(next(lines))["done"]
        # leaving the block closes the connection mid-stream

    def running() -> float:
        return value(samples(url), "hugllama_requests_running")

    deadline = time.monotonic() + 30
    while running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running() == 0
    after = samples(url)
    assert value(after, "hugllama_client_disconnects_total") >= value(before, "hugllama_client_disconnects_total") + 1
    tokens = value(after, "hugllama_generation_tokens_total", model=MODEL)
    # With one slot, a sequence still decoding its 400 tokens would hold this request back for minutes.
    r = httpx.post(url + "/api/generate", json=ollama_body(2, "Hi"), timeout=120)
    assert r.status_code == 200 and r.json()["eval_count"] == 2
    time.sleep(2)
    assert value(samples(url), "hugllama_generation_tokens_total", model=MODEL) == tokens + 2


# ---- API keys, metrics, request ids and JSON logs ----


@pytest.fixture(scope="module")
def keyed(shared_snapshots: Path) -> Iterator[ServerProcess]:
    with running_server(
        shared_snapshots,
        {"HUGLLAMA_API_KEYS": "k1,k2", "HUGLLAMA_LOG_FORMAT": "json", "HUGLLAMA_CONTEXT_LENGTH": "512"},
    ) as server:
        yield server


def test_api_keys_with_official_clients(keyed: ServerProcess) -> None:
    url = keyed.url
    good = ollama.Client(host=url, headers={"Authorization": "Bearer k1"}, timeout=TIMEOUT)
    r = good.chat(model=MODEL, messages=[{"role": "user", "content": f"Repeat: {SECRET}"}], options={"num_predict": 3})
    assert r.done and r.eval_count
    bad = ollama.Client(host=url, headers={"Authorization": "Bearer nope"}, timeout=TIMEOUT)
    with pytest.raises(ollama.ResponseError) as err:
        bad.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 401

    oc = openai.OpenAI(base_url=url + "/v1", api_key="k2", timeout=TIMEOUT)
    c = oc.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert c.usage is not None and c.usage.completion_tokens >= 1
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    r2 = httpx.get(url + "/api/tags", timeout=30)
    assert r2.status_code == 401 and r2.headers.get("www-authenticate") == "Bearer"
    assert httpx.get(url + "/livez", timeout=30).status_code == 200  # probes stay open (HUGLLAMA_AUTH_PROBES off)


def test_metrics_request_id_and_json_logs(keyed: ServerProcess) -> None:
    url = keyed.url
    auth = {"Authorization": "Bearer k1"}
    r = httpx.post(
        url + "/api/generate",
        json=ollama_body(3, f"Say {SECRET}"),
        headers={**auth, "X-Request-Id": "req-ops-42"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-ops-42"
    assert len(httpx.get(url + "/api/tags", headers=auth, timeout=30).headers["x-request-id"]) >= 16  # generated
    o = httpx.post(
        url + "/v1/chat/completions",
        headers=auth,
        timeout=TIMEOUT,
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
    )
    assert o.status_code == 200
    httpx.get(url + "/api/tags", timeout=30)  # a 401

    m = samples(url)
    assert value(m, "hugllama_requests_total", protocol="ollama", route="/api/generate", status="200") >= 1
    assert value(m, "hugllama_requests_total", protocol="openai", route="/v1/chat/completions", status="200") >= 1
    assert value(m, "hugllama_requests_total", status="401") >= 1
    assert value(m, "hugllama_prompt_tokens_total", model=MODEL, backend="local") >= r.json()["prompt_eval_count"]
    assert value(m, "hugllama_generation_tokens_total", model=MODEL) >= r.json()["eval_count"] + 1
    assert value(m, "hugllama_time_to_first_token_seconds_count", model=MODEL) >= 2
    assert value(m, "hugllama_time_to_first_token_seconds_sum", model=MODEL) > 0
    assert value(m, "hugllama_models_loaded") == 1
    assert value(m, "hugllama_model_memory_bytes", model=MODEL, device="cpu") > 100 * 1024 * 1024
    assert value(m, "hugllama_model_load_seconds_count", model=MODEL) == 1
    assert value(m, "hugllama_model_load_seconds_sum", model=MODEL) > 0
    assert "hugllama_model_evictions_total" in m

    records = [json.loads(line) for line in keyed.log().splitlines() if line.startswith("{")]
    assert records and all({"time", "level", "logger", "message", "request_id"} <= set(x) for x in records)
    access = [x for x in records if x.get("path") == "/api/generate"]
    assert any(x["request_id"] == "req-ops-42" and x["status"] == 200 for x in access)
    other = [line for line in keyed.log().splitlines() if line.strip() and not line.startswith("{")]
    assert not other, other[:5]  # every line is JSON (uvicorn's and the app's)
    assert SECRET not in keyed.log(), "prompt text logged without HUGLLAMA_LOG_CONTENT"


# ---- SIGTERM drain ----


def test_sigterm_drains_then_exits_zero(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(
        {
            "HUGLLAMA_CONTEXT_LENGTH": "512",
            "HUGLLAMA_LOG_FORMAT": "json",
            "HUGLLAMA_LOG_CONTENT": "true",
            "HUGLLAMA_SHUTDOWN_GRACE_SECONDS": "120",
        }
    )
    url = server.url
    lines: list[dict[str, Any]] = []
    with httpx.Client(timeout=TIMEOUT) as client:
        body = {**ollama_body(16, f"Tell me about {SECRET}."), "stream": True}
        with client.stream("POST", url + "/api/generate", json=body) as r:
            assert r.status_code == 200
            it = r.iter_lines()
            lines.append(json.loads(next(it)))
            server.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            while httpx.get(url + "/readyz", timeout=10).status_code != 503:
                assert time.monotonic() < deadline, "/readyz did not turn 503 after SIGTERM"
                time.sleep(0.1)
            refused = httpx.post(url + "/api/generate", json=ollama_body(2), timeout=30)
            assert refused.status_code == 503 and "retry-after" in refused.headers
            refused_v1 = httpx.post(url + "/v1/completions", json=openai_body(2), timeout=30)
            assert refused_v1.status_code == 503 and refused_v1.json()["error"]["message"]
            lines += [json.loads(line) for line in it if line.strip()]
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 16, lines[-1]
    assert "error" not in lines[-1]
    assert server.proc.wait(timeout=60) == 0, server.log()[-3000:]
    assert SECRET in server.log(), "HUGLLAMA_LOG_CONTENT=true logs the prompt"
