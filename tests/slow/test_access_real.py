"""Against a real server process on the embedded model: the admin tier with the official clients, the Host check,
deep JSON, pinned models and /readyz, pull limits against the fake Hub (503 + Retry-After, 507), alias limits,
seeds and no server paths in answers. Every answer here is a 4xx or a documented 503/507, never a traceback."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.helpers.fake_hub import FakeHub, FakeRepo, serving, tiny_model_files, two_tiny_repos
from tests.slow.conftest import ServerProcess, running_server

pytestmark = pytest.mark.slow

MODEL = "smollm2:135m"
USER = "user-key-3141"
ADMIN = "admin-key-2718"
TIMEOUT = 120


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with serving(*two_tiny_repos()) as h:
        yield h


@pytest.fixture(scope="module")
def server(shared_snapshots: Path, hub: FakeHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    cache = tmp_path_factory.mktemp("hf-cache")
    env = {
        "HUGLLAMA_API_KEYS": USER,
        "HUGLLAMA_ADMIN_KEYS": ADMIN,
        "HUGLLAMA_MAX_CONCURRENT_PULLS": "1",
        "HUGLLAMA_ALIAS_MAX_SYSTEM_BYTES": "1024",
        "HUGLLAMA_CONTEXT_LENGTH": "512",
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_CACHE": str(cache),
    }
    with running_server(shared_snapshots, env, wait_path="/livez") as s:
        deadline = time.monotonic() + 600
        while httpx.get(s.url + "/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, s.log()[-3000:]
            time.sleep(0.5)
        yield s
    assert "Traceback" not in s.log(), s.log()[-5000:]


def http(server: ServerProcess, key: str | None = USER) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=TIMEOUT)


def oc(server: ServerProcess, key: str) -> ollama.Client:
    return ollama.Client(host=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT)


def test_ordinary_key_uses_models_admin_key_manages(server: ServerProcess) -> None:
    user, admin = oc(server, USER), oc(server, ADMIN)
    # An admin makes a team alias; an ordinary key uses it but cannot overwrite, copy or delete it.
    admin.create(model="team", from_=MODEL, system="Answer in one word.")
    out = user.generate(model="team", prompt="Capital of France?", options={"temperature": 0, "num_predict": 8})
    assert out.response.strip()
    for call in (
        lambda: user.create(model="team", from_=MODEL, system="pwned"),
        lambda: user.copy("team", "team2"),
        lambda: user.delete("team"),
        lambda: user.pull("org/tiny"),
    ):
        with pytest.raises(ollama.ResponseError) as info:
            call()
        assert info.value.status_code == 403 and "admin key" in info.value.error
    assert "pwned" not in (user.show("team").modelfile or "") and "one word" in (user.show("team").modelfile or "")
    with pytest.raises(ollama.ResponseError) as info:
        oc(server, "wrong").list()
    assert info.value.status_code == 401
    # OpenAI protocol with an ordinary key; management changes need the admin key, reads do not.
    oa = openai.OpenAI(base_url=server.url + "/v1", api_key=USER, max_retries=0, timeout=TIMEOUT)
    r = oa.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0
    )
    assert r.choices[0].message.content is not None
    with http(server) as c:
        assert c.get("/api/v1/models/status").status_code == 200
        r2 = c.put("/api/v1/models/config", json={"model": "team", "options": {"temperature": 1}})
        assert r2.status_code == 403 and "admin key" in r2.json()["error"]
        assert c.post("/api/v1/cache/warm", json={"model": MODEL, "messages": []}).status_code == 403
    with http(server, ADMIN) as c:
        assert c.put("/api/v1/models/config", json={"model": "team", "options": {"temperature": 0}}).is_success
    admin.delete("team")


def test_foreign_host_is_403_loopback_names_pass(server: ServerProcess) -> None:
    port = server.url.rsplit(":", 1)[1]
    with http(server) as c:
        for host in ("evil.example", f"evil.example:{port}", f"localhost.evil.example:{port}", "127.0.0.1.nip.io"):
            for path in ("/api/tags", "/v1/models", "/", "/readyz"):
                assert c.get(path, headers={"Host": host}).status_code == 403, (host, path)
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
            assert c.get("/api/tags", headers={"Host": host}).status_code == 200, host
        assert c.get("/api/tags", headers={"Origin": "http://localhost.evil.com"}).status_code == 403
        assert c.get("/api/tags", headers={"Origin": "http://localhost:3000@evil"}).status_code == 403
        ok = c.get("/api/tags", headers={"Origin": "http://localhost:3000"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://localhost:3000"


@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("POST", "/api/generate", '{"model":"smollm2:135m","prompt":"hi","format":%s}'),
        ("POST", "/api/chat", '{"model":"smollm2:135m","messages":%s}'),
        ("POST", "/api/show", '{"model":%s}'),
        ("POST", "/api/embed", '{"model":"smollm2:135m","input":%s}'),
        ("POST", "/v1/chat/completions", '{"model":"smollm2:135m","messages":[{"role":"user","content":"x"}],"x":%s}'),
        ("POST", "/v1/completions", '{"model":"smollm2:135m","prompt":%s}'),
    ],
)
def test_deep_json_is_400(server: ServerProcess, method: str, path: str, template: str) -> None:
    with http(server) as c:
        for depth in (100, 50_000):
            body = template % ("[" * depth + "]" * depth)
            r = c.request(method, path, content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 400 and "nested too deeply" in r.text, (depth, r.text[:200])


def test_pinned_model_survives_keep_alive_zero_readyz_follows_residency(server: ServerProcess) -> None:
    user = oc(server, USER)
    out = user.generate(model=MODEL, prompt="", keep_alive=0)
    assert out.done_reason == "unload"  # answered as Ollama answers ...
    time.sleep(1.0)
    assert [m.model for m in user.ps().models] == [MODEL]  # ... but the pinned model stays
    with http(server) as c:
        assert (
            c.post("/api/chat", json={"model": MODEL, "messages": [], "keep_alive": 0}).json()["done_reason"]
            == "unload"
        )
        assert c.get("/readyz").status_code == 200
    with http(server, ADMIN) as c:
        assert c.post("/api/v1/models/unload", json={"model_name_or_path": MODEL}).json()["unloaded"] is True
        deadline = time.monotonic() + 30
        while c.get("/readyz").status_code != 503:
            assert time.monotonic() < deadline, "readyz stayed 200 with the pinned model unloaded"
            time.sleep(0.2)
        assert c.post("/api/v1/models/load", json={"model_name_or_path": MODEL}).status_code == 202
        deadline = time.monotonic() + 300
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.5)
    # Loaded again, it is pinned again.
    user.generate(model=MODEL, prompt="", keep_alive=0)
    time.sleep(1.0)
    assert [m.model for m in user.ps().models] == [MODEL]


def test_concurrent_pulls_past_the_limit_get_503_then_succeed(server: ServerProcess, hub: FakeHub) -> None:
    hub.get_delay = 1.5
    first: dict[str, Any] = {}

    def pull_first() -> None:
        with http(server, ADMIN) as c:
            first["lines"] = c.post("/api/pull", json={"model": "org/tiny"}).text

    t = threading.Thread(target=pull_first)
    t.start()
    try:
        deadline = time.monotonic() + 30
        while not any("/resolve/" in r.path and r.method == "GET" for r in hub.requests):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with http(server, ADMIN) as c:
            r = c.post("/api/pull", json={"model": "org/other"})
        assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
        assert "HUGLLAMA_MAX_CONCURRENT_PULLS" in r.json()["error"]
    finally:
        t.join(60)
        hub.get_delay = 0.0
    assert first["lines"].strip().splitlines()[-1] == '{"status":"success"}'
    assert oc(server, ADMIN).pull("org/other").status == "success"
    assert any(m.model == "org/other:latest" for m in oc(server, USER).list().models)


def test_pull_larger_than_free_disk_is_507(server: ServerProcess, hub: FakeHub) -> None:
    free = shutil.disk_usage("/").free
    hub.add(FakeRepo("org/huge", tiny_model_files(), claimed_sizes={"model.safetensors": free * 4}))
    before = len(hub.gets("model.safetensors"))
    with pytest.raises(ollama.ResponseError) as info:
        oc(server, ADMIN).pull("org/huge")
    assert info.value.status_code == 507 and "free" in info.value.error
    assert "/" not in info.value.error.split("pull ", 1)[1].split(":", 1)[1]  # no cache path in the message
    assert len(hub.gets("model.safetensors")) == before  # nothing downloaded


def test_alias_fields_are_capped(server: ServerProcess) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        oc(server, ADMIN).create(model="big", from_=MODEL, system="x" * 2000)
    assert info.value.status_code == 400 and "system" in info.value.error
    with http(server, ADMIN) as c:
        r = c.post("/api/create", json={"model": "big", "from": MODEL, "parameters": {"stop": ["s"] * 100}})
        assert r.status_code == 400 and "stop" in r.json()["error"]
        assert c.post("/api/show", json={"model": "big"}).status_code == 404


def test_show_names_the_model_and_seeds_are_checked(server: ServerProcess) -> None:
    shown = oc(server, USER).show(MODEL)
    assert f"FROM {MODEL}" in (shown.modelfile or "")
    with http(server) as c:
        raw = c.post("/api/show", json={"model": MODEL}).text
        assert str(server.home) not in raw and "/snapshots/" not in raw and ".gguf" not in raw.split("FROM", 1)[1][:80]
        for seed in (-5, 2**63, 1e23):
            body = {"model": MODEL, "prompt": "hi", "stream": False, "options": {"seed": seed, "num_predict": 2}}
            r = c.post("/api/generate", json=body)
            assert r.status_code == 400 and "seed" in r.json()["error"], r.text
    oa = openai.OpenAI(base_url=server.url + "/v1", api_key=USER, max_retries=0, timeout=TIMEOUT)
    with pytest.raises(openai.BadRequestError) as bad:
        oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], seed=2**64, max_tokens=2)
    assert "seed" in str(bad.value)


A, U = ADMIN, USER
# (method, path, body, key, status, words in the error): management inputs an attacker would try.
MANAGEMENT_HOSTILE: list[tuple[str, str, Any, str, int, str]] = [
    ("POST", "/api/v1/models/load", {"model_name_or_path": "../../etc/passwd"}, A, 400, "not allowed"),
    ("POST", "/api/v1/models/load", {"model_name_or_path": "/etc/passwd"}, A, 400, "absolute paths"),
    ("POST", "/api/v1/models/load", {"model_name_or_path": MODEL, "device": "cuda:7"}, A, 400, "device"),
    ("POST", "/api/v1/models/load", {"model_name_or_path": MODEL, "quantization": "2bit"}, A, 400, "quantization"),
    ("POST", "/api/v1/models/load", {"model_name_or_path": 5}, A, 400, "model_name_or_path"),
    ("POST", "/api/v1/models/load", {"model_name_or_path": MODEL}, U, 403, "admin key"),
    ("GET", "/api/v1/models/config?model=../../etc/passwd", None, U, 400, "not allowed"),
    ("GET", "/api/v1/models/config?model=%00", None, U, 400, "invalid model name"),
    ("PUT", "/api/v1/models/config", {"model": MODEL, "options": {"stop": ["x"] * 100_000}}, A, 400, "parameters"),
    ("PUT", "/api/v1/models/config", {"model": MODEL, "options": {"stop": ["x"] * 17}}, A, 400, "stop"),
    ("PUT", "/api/v1/models/config", {"model": MODEL, "options": {"seed": 2**70}}, A, 400, "seed"),
    ("PUT", "/api/v1/models/config", {"model": MODEL, "options": {"nope": 1}}, A, 400, "nope"),
    ("POST", "/api/v1/models/unload", {"model_name_or_path": "../x"}, A, 400, "not allowed"),
    ("POST", "/api/v1/cache/warm", {"model": MODEL, "messages": [{"role": "user"}] * 5000}, A, 400, "messages"),
    ("POST", "/api/v1/cache/warm", {"model": MODEL, "messages": [{"content": "x"}]}, A, 400, "role"),
    (
        "POST",
        "/api/v1/cache/warm",
        {"model": MODEL, "messages": [{"role": "user", "content": "x" * 1_000_001}]},
        A,
        400,
        "too long",
    ),  # fmt: skip
    ("DELETE", "/api/delete", {"model": MODEL}, A, 400, "embedded"),
    ("DELETE", "/api/delete", {"model": "../../x"}, A, 400, "not allowed"),
    ("POST", "/api/copy", {"source": MODEL, "destination": MODEL}, A, 400, "existing model"),
    ("POST", "/api/copy", {"source": MODEL, "destination": "../evil"}, A, 400, "not allowed"),
    ("POST", "/api/create", {"model": "x", "from": MODEL, "system": "s" * 2000}, A, 400, "system"),
    ("POST", "/api/create", {"model": "x", "from": MODEL, "template": "{{ '' }}"}, A, 400, "empty"),
    (
        "POST",
        "/api/create",
        {"model": "x", "from": MODEL, "messages": [{"role": "user", "content": "x"}] * 300},
        A,
        400,
        "messages",
    ),  # fmt: skip
    ("POST", "/api/create", {"model": "x", "from": MODEL, "parameters": {"stop": ["s"] * 1000}}, A, 400, "stop"),
    ("POST", "/api/create", {"model": "x" * 500, "from": MODEL}, A, 400, "longer than"),
    ("POST", "/api/pull", {"model": "../../etc"}, A, 400, "not allowed"),
    ("POST", "/api/pull", {"model": "org/x@../../.."}, A, 400, "not allowed"),
    ("POST", "/api/pull", {"model": "smollm2"}, A, 400, "org/name"),
    ("POST", "/api/pull", {"model": "org/missing"}, A, 404, "not found"),
    ("POST", "/api/blobs/sha256:../../etc/passwd", None, U, 403, "admin key"),
    ("POST", "/api/push", {"model": "x"}, A, 501, "not supported"),
]


@pytest.mark.parametrize(("method", "path", "body", "key", "status", "words"), MANAGEMENT_HOSTILE)
def test_management_hostile_inputs(
    server: ServerProcess, method: str, path: str, body: Any, key: str, status: int, words: str
) -> None:
    with http(server, key) as c:
        started = time.monotonic()
        r = c.request(method, path, json=body)
    assert r.status_code == status and words in r.json()["error"], r.text[:300]
    assert time.monotonic() - started < 5
