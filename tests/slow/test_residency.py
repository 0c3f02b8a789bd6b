"""Residency on the real engine: quantized aliases side by side, LRU eviction (model count and memory budget),
keep_alive expiry freeing memory, single-flight loads, failed loads, background loads and the 507 answer."""

from __future__ import annotations

import json
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from app.engine.cpu_linear import packed_sgemm_works
from app.hardware import estimate as estimating
from app.registry.types import ModelSource
from tests.slow.conftest import running_server

pytestmark = pytest.mark.slow

MODEL = "smollm2:135m"
CTX = 512
OVERHEAD = 64 * 1024 * 1024
TIMEOUT = 300


# ---- helpers ----


def generate(url: str, model: str, *, keep_alive: Any = None, n: int = 1) -> httpx.Response:
    body: dict[str, Any] = {
        "model": model,
        "prompt": "Hello",
        "raw": True,
        "stream": False,
        "options": {"num_predict": n, "temperature": 0},
    }
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    return httpx.post(url + "/api/generate", json=body, timeout=TIMEOUT)


def ps(url: str) -> dict[str, dict[str, Any]]:
    return {m["name"].removesuffix(":latest"): m for m in httpx.get(url + "/api/ps", timeout=30).json()["models"]}


def statuses(url: str) -> dict[str, dict[str, Any]]:
    return {
        m["model"].removesuffix(":latest"): m
        for m in httpx.get(url + "/api/v1/models/status", timeout=30).json()["models"]
    }


def available(url: str) -> dict[str, dict[str, Any]]:
    return {
        m["name"].removesuffix(":latest"): m
        for m in httpx.get(url + "/api/v1/models/available", timeout=60).json()["models"]
    }


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def metric(url: str, name: str, labels: str = "") -> float:
    """Sum of the samples of `name` whose label text contains `labels` (0 when absent)."""
    total = 0.0
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if m and labels in (m.group(1) or ""):
            total += float(m.group(2))
    return total


def kv_bytes(snapshot: Path, parallel: int) -> int:
    cfg: dict[str, int] = json.loads((snapshot / "config.json").read_text())
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim * CTX * parallel * 4  # fp32 on CPU


def snapshot_of(shared: Path, url: str) -> Path:
    """The converted snapshot of the embedded model (loading it once on `url` if no server converted it yet)."""
    found = sorted(p.parent for p in shared.glob("SmolLM2-135M-Instruct*/config.json"))
    if not found:
        assert generate(url, MODEL).status_code == 200
        found = sorted(p.parent for p in shared.glob("SmolLM2-135M-Instruct*/config.json"))
    assert found, "no converted snapshot of the embedded model"
    return found[0]


def header_only_safetensors(path: Path, tensors: dict[str, list[int]]) -> None:
    """A safetensors file whose header declares `tensors` (F32) but holds no data: a truncated checkpoint."""
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in tensors.items():
        size = 4
        for d in shape:
            size *= d
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


# ---- server A: no budget, two models at most ----


@pytest.fixture(scope="module")
def server_a(shared_snapshots: Path) -> Iterator[Any]:
    with running_server(
        shared_snapshots,
        {
            "HUGLLAMA_PRELOAD": "",
            "HUGLLAMA_CONTEXT_LENGTH": str(CTX),
            "HUGLLAMA_NUM_PARALLEL": "2",
            "HUGLLAMA_MAX_LOADED_MODELS": "2",
            "HUGLLAMA_MEMORY_OVERHEAD_BYTES": str(OVERHEAD),
        },
    ) as server:
        for name, quantize in (("a8", "q8_0"), ("a4", "q4_0")):
            r = httpx.post(
                server.url + "/api/create",
                json={"model": name, "from": MODEL, "quantize": quantize, "stream": False},
                timeout=60,
            )
            assert r.status_code == 200, r.text
        yield server


def test_background_load_answers_202_and_livez_stays_up(server_a: Any) -> None:
    url = server_a.url
    assert ps(url) == {}, "HUGLLAMA_PRELOAD='' must start with nothing loaded"
    r = httpx.post(url + "/api/v1/models/load", json={"model_name_or_path": "a8"}, timeout=30)
    assert r.status_code == 202 and r.json()["state"] in ("loading", "loaded") and r.json()["quantization"] == "8bit"
    live_while_loading = 0
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        state = statuses(url).get("a8", {}).get("state")
        if state == "loaded":
            break
        assert state in ("loading", None), statuses(url)
        assert httpx.get(url + "/livez", timeout=10).status_code == 200
        live_while_loading += 1
        time.sleep(0.2)
    assert statuses(url)["a8"]["state"] == "loaded"
    assert live_while_loading >= 1, "the load finished before /livez could be asked during it"


def test_two_quantized_aliases_resident_and_cold_load_is_single_flight(server_a: Any) -> None:
    url = server_a.url
    results: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda: results.append(generate(url, "a4"))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200, 200], [r.text for r in results]
    assert server_a.log().count(f"loaded {MODEL} (4bit) in") == 1, "two concurrent cold requests loaded twice"
    running = ps(url)
    assert set(running) == {"a8", "a4"}
    assert {m["details"]["quantization_level"] for m in running.values()} == {"8bit", "4bit"}
    st = statuses(url)
    assert (st["a8"]["quantization"], st["a4"]["quantization"]) == ("8bit", "4bit")
    assert st["a4"]["memory_bytes"] < st["a8"]["memory_bytes"]


def test_estimate_within_25_percent_of_measured_weights(server_a: Any, shared_snapshots: Path) -> None:
    url = server_a.url
    kv = kv_bytes(snapshot_of(shared_snapshots, url), parallel=2)
    st = statuses(url)
    avail = available(url)
    for name in ("a8", "a4"):
        s = st[name]
        # The status reports the whole estimate (weights + KV for num_parallel x num_ctx + overhead) but measures
        # only the weights (get_memory_footprint): compare like with like.
        weights_estimate = s["estimated_bytes"] - kv - OVERHEAD
        assert weights_estimate > 0
        assert abs(weights_estimate - s["memory_bytes"]) <= 0.25 * s["memory_bytes"], (name, weights_estimate, s)
        assert avail[name]["estimated_memory"] == s["estimated_bytes"]


def test_lru_eviction_keep_alive_expiry_frees_memory(server_a: Any) -> None:
    url = server_a.url
    assert set(ps(url)) == {"a8", "a4"}
    evictions = metric(url, "hugllama_model_evictions_total")
    assert generate(url, "a8").status_code == 200  # a4 is now the least recently used
    r = generate(url, MODEL, keep_alive=-1)
    assert r.status_code == 200, r.text
    assert set(ps(url)) == {"a8", MODEL}, "HUGLLAMA_MAX_LOADED_MODELS=2 must evict the LRU model (a4)"
    assert metric(url, "hugllama_model_evictions_total") == evictions + 1

    # Negative keep_alive keeps the model past any timer.
    base = statuses(url)[MODEL]
    assert base["keep_alive"] < 0 and base["expires_at"] is None
    time.sleep(3)
    assert MODEL in ps(url)

    # keep_alive "2s" re-arms the timer; expiry unloads it and its memory goes back to the OS.
    proc = psutil.Process(server_a.proc.pid)
    assert generate(url, MODEL, keep_alive="2s").status_code == 200
    footprint = statuses(url)[MODEL]["memory_bytes"]
    rss_loaded = proc.memory_info().rss
    wait_until(lambda: MODEL not in ps(url), 30, "keep_alive 2s to unload the model")
    assert MODEL not in statuses(url)
    wait_until(
        lambda: rss_loaded - proc.memory_info().rss >= footprint // 2,
        15,
        f"RSS to drop by half the model's {footprint >> 20} MiB",
    )

    # keep_alive 0 unloads right after the request.
    r = generate(url, "a8", keep_alive=0)
    assert r.status_code == 200
    wait_until(lambda: ps(url) == {}, 30, "keep_alive 0 to unload a8")
    assert metric(url, "hugllama_models_loaded") == 0


# ---- server B: a memory budget, a models_dir with copies and broken models ----


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    # "huge": a valid config and a truncated safetensors whose header declares 600M linear weights.
    huge = root / "huge"
    huge.mkdir()
    (huge / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "architectures": ["LlamaForCausalLM"],
                "num_hidden_layers": 1,
                "hidden_size": 64,
                "num_attention_heads": 1,
                "num_key_value_heads": 1,
                "head_dim": 64,
                "intermediate_size": 64,
                "vocab_size": 128,
                "max_position_embeddings": CTX,
            }
        )
    )
    header_only_safetensors(huge / "model.safetensors", {"model.layers.0.mlp.down_proj.weight": [20000, 30000]})
    # "broken": config.json is not JSON, the weights are garbage.
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"\x00garbage")
    return root


@pytest.fixture(scope="module")
def server_b(shared_snapshots: Path, models_dir: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    converted = list(shared_snapshots.glob("SmolLM2-135M-Instruct*/config.json"))
    snap = snapshot_of(shared_snapshots, "" if converted else request.getfixturevalue("server_a").url)
    source = ModelSource("hf_dir", snap)
    est = estimating.estimate(
        source, dtype="float32", quantization=None, num_ctx=CTX, parallel=1, overhead_bytes=OVERHEAD
    )
    # fp32 on CPU keeps an extra packed copy of the tied output projection (app/engine/cpu_linear.py), which the
    # engine's estimate counts.
    packed = estimating.tied_output_bytes(source, dtype="float32") if packed_sgemm_works() else 0
    # Room for one copy's estimate plus 1.5 resident copies: two fit, a third evicts exactly one.
    budget = est.total_bytes + packed + int(1.5 * (est.weights_bytes + packed))
    for name in ("m1", "m2", "m3"):
        (models_dir / name).symlink_to(snap, target_is_directory=True)
    with running_server(
        shared_snapshots,
        {
            "HUGLLAMA_PRELOAD": "",
            "HUGLLAMA_CONTEXT_LENGTH": str(CTX),
            "HUGLLAMA_NUM_PARALLEL": "1",
            "HUGLLAMA_MEMORY_BUDGET_BYTES": str(budget),
            "HUGLLAMA_MEMORY_OVERHEAD_BYTES": str(OVERHEAD),
            "HUGLLAMA_MODELS_DIR": str(models_dir),
        },
    ) as server:
        server.expected_estimate = est.total_bytes + packed  # type: ignore[attr-defined]
        yield server


def test_507_names_need_free_and_quantization_and_failed_loads_are_clear(server_b: Any) -> None:
    url = server_b.url
    avail = available(url)
    assert avail["m1"]["estimated_memory"] == server_b.expected_estimate
    assert avail["huge"]["fits"] is False and avail["huge"]["fits_with"] == "8bit"

    r = httpx.post(url + "/api/generate", json={"model": "huge", "prompt": "hi", "stream": False}, timeout=60)
    assert r.status_code == 507, r.text
    msg = r.json()["error"]
    assert "needs" in msg and "free" in msg and "8-bit" in msg, msg
    r = httpx.post(
        url + "/v1/chat/completions",
        json={"model": "huge", "messages": [{"role": "user", "content": "hi"}]},
        timeout=60,
    )
    assert r.status_code == 507 and "8-bit" in r.json()["error"]["message"]

    # Loading the truncated checkpoint (it fits in 8-bit) fails in the background with a clear status.
    r = httpx.post(url + "/api/v1/models/load", json={"model_name_or_path": "huge", "quantization": "8bit"}, timeout=30)
    assert r.status_code == 202
    wait_until(lambda: statuses(url).get("huge", {}).get("state") == "failed", 120, "the load of huge to fail")
    assert "huge" in (statuses(url)["huge"]["error"] or "")

    # A model whose files are corrupt: a clear error, not a hang or a crash.
    r = httpx.post(url + "/api/generate", json={"model": "broken", "prompt": "hi", "stream": False}, timeout=120)
    assert 400 <= r.status_code < 600 and r.status_code != 500, (r.status_code, r.text)
    assert "broken" in r.json()["error"], r.text
    assert httpx.get(url + "/api/tags", timeout=30).status_code == 200

    # ... and the server still serves the others.
    assert httpx.get(url + "/readyz", timeout=10).status_code == 200
    assert generate(url, "m1").status_code == 200


def test_lru_eviction_under_memory_budget(server_b: Any) -> None:
    url = server_b.url
    assert generate(url, "m1").status_code == 200
    assert generate(url, "m2").status_code == 200
    assert set(ps(url)) >= {"m1", "m2"}
    assert generate(url, "m1").status_code == 200  # m2 is now the least recently used
    r = generate(url, "m3")
    assert r.status_code == 200, r.text
    assert set(ps(url)) == {"m1", "m3"}, ps(url)
    assert metric(url, "hugllama_model_evictions_total") >= 1
