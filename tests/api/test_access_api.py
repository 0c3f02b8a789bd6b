"""Over HTTP (FakeEngine): admin tier, Host check, CORS, pinned models and keep_alive 0, deep JSON on every route,
seeds, no server paths in error bodies, and one log record per unexpected error."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.engine.types import GenerationRequest
from app.errors import ServiceError
from app.log import request_id
from tests.helpers.fake_engine import FakeEngine

MODEL = "smollm2:135m"
USER = {"Authorization": "Bearer user-key"}
ADMIN = {"Authorization": "Bearer admin-key"}

# (method, path, body) of every admin operation, with bodies that would succeed or fail on their own merits.
ADMIN_CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/api/create", {"model": "team-a", "from": MODEL, "system": "be terse"}),
    ("POST", "/api/copy", {"source": MODEL, "destination": "team-b"}),
    ("DELETE", "/api/delete", {"model": "team-a"}),
    ("POST", "/api/pull", {"model": "org/repo", "stream": False}),
    ("POST", "/api/push", {"model": "team-a"}),
    ("POST", "/api/blobs/sha256:" + "0" * 64, None),
    ("POST", "/api/v1/models/load", {"model_name_or_path": MODEL}),
    ("POST", "/api/v1/models/unload", {"model_name_or_path": MODEL}),
    ("PUT", "/api/v1/models/config", {"model": MODEL, "options": {"temperature": 0}}),
    ("POST", "/api/v1/cache/warm", {"model": MODEL, "messages": [{"role": "system", "content": "x"}]}),
]


@pytest.fixture
def tiered(app_factory: Any) -> Iterator[TestClient]:
    with TestClient(app_factory(api_keys="user-key", admin_keys="admin-key"), base_url="http://localhost") as c:
        yield c


def call(c: TestClient, method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str]) -> Any:
    return c.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
def test_ordinary_key_gets_403_on_admin_routes(
    tiered: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    r = call(tiered, method, path, body, USER)
    assert r.status_code == 403, r.text
    assert "admin key" in r.json()["error"]
    assert call(tiered, method, path, body, {}).status_code == 401
    assert call(tiered, method, path, body, {"Authorization": "Bearer nope"}).status_code == 401
    assert call(tiered, method, path, body, ADMIN).status_code not in (401, 403)


def test_ordinary_key_uses_models(tiered: TestClient, fake_catalog: Any) -> None:
    for key in (USER, ADMIN):  # admin keys work wherever ordinary keys do
        assert tiered.post(
            "/api/generate", json={"model": MODEL, "prompt": "hi", "stream": False}, headers=key
        ).is_success
        assert tiered.post("/api/chat", json={"model": MODEL, "messages": [], "stream": False}, headers=key).is_success
        assert tiered.post("/api/embed", json={"model": MODEL, "input": "x"}, headers=key).is_success
        assert tiered.post("/api/show", json={"model": MODEL}, headers=key).is_success
        for path in ("/api/tags", "/api/ps", "/api/version", "/v1/models"):
            assert tiered.get(path, headers=key).is_success, path
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        assert tiered.post("/v1/chat/completions", json=body, headers=key).is_success
    # The team alias an admin made is usable with an ordinary key, and cannot be overwritten with one.
    assert tiered.post("/api/create", json={"model": "team", "from": MODEL}, headers=ADMIN).is_success
    assert tiered.post("/api/show", json={"model": "team"}, headers=USER).is_success
    r = tiered.post("/api/create", json={"model": "team", "from": MODEL, "system": "pwned"}, headers=USER)
    assert r.status_code == 403 and fake_catalog.get_alias("team").system is None


def test_admin_keys_alone_protect_only_management(app_factory: Any) -> None:
    with TestClient(app_factory(admin_keys="admin-key"), base_url="http://localhost") as c:
        assert c.post("/api/generate", json={"model": MODEL, "prompt": "hi", "stream": False}).is_success
        assert c.post("/api/create", json={"model": "x", "from": MODEL}).status_code == 401
        assert c.post("/api/create", json={"model": "x", "from": MODEL}, headers=ADMIN).is_success


def test_403_in_each_protocols_shape(app_factory: Any) -> None:
    with TestClient(app_factory(), base_url="http://localhost") as c:
        ollama = c.get("/api/tags", headers={"Host": "evil.example"})
        assert ollama.status_code == 403 and isinstance(ollama.json()["error"], str)
        openai = c.get("/v1/models", headers={"Host": "evil.example"})
        err = openai.json()["error"]
        assert openai.status_code == 403 and err["type"] == "permission_error" and err["param"] == "host"


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:11434", "localhost.evil.example", "127.0.0.1.nip.io:11434", "localhost@evil", ""],
)
def test_foreign_host_is_refused_on_every_path(client: TestClient, host: str) -> None:
    for path in ("/", "/api/tags", "/readyz", "/metrics", "/v1/models"):
        assert client.get(path, headers={"Host": host}).status_code == 403, (host, path)


@pytest.mark.parametrize("host", ["localhost", "localhost:11434", "127.0.0.1:11434", "[::1]:11434"])
def test_loopback_hosts_pass(client: TestClient, host: str) -> None:
    assert client.get("/api/tags", headers={"Host": host}).status_code == 200


def test_all_interfaces_accept_any_host(app_factory: Any) -> None:
    with TestClient(app_factory(host="0.0.0.0:11434"), base_url="http://pod-10-0-0-7") as c:
        assert c.get("/api/tags").status_code == 200
    with TestClient(app_factory(allowed_hosts="llm.internal"), base_url="http://llm.internal") as c:
        assert c.get("/api/tags").status_code == 200
        assert c.get("/api/tags", headers={"Host": "localhost"}).status_code == 403


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("http://localhost:3000", 200),
        ("http://localhost.evil.com", 403),
        ("http://localhost:3000@evil", 403),
        ("http://localhost:3000@evil.com", 403),
        ("http://127.0.0.1:5173", 200),
        ("https://evil.com", 403),
    ],
)
def test_cors_origins_are_parsed(client: TestClient, origin: str, status: int) -> None:
    r = client.get("/api/version", headers={"Origin": origin})
    assert r.status_code == status
    assert (r.headers.get("access-control-allow-origin") == origin) is (status == 200)


@pytest.mark.parametrize("path", ["/metricsx", "/livez/x", "/readyzz", "/healthcheck", "/metrics/../api/tags"])
def test_auth_exemptions_are_exact_paths(app_factory: Any, path: str) -> None:
    with TestClient(app_factory(api_keys="k"), base_url="http://localhost") as c:
        assert c.get(path).status_code == 401
        assert c.get("/metrics").status_code == 200


def test_keep_alive_zero_does_not_unload_a_pinned_model(client: TestClient, fake_engine: FakeEngine) -> None:
    fake_engine.loaded[MODEL] = 1.0
    fake_engine.pinned.add(MODEL)
    for path, body in (
        ("/api/generate", {"model": MODEL, "keep_alive": 0}),
        ("/api/chat", {"model": MODEL, "messages": [], "keep_alive": 0}),
    ):
        r = client.post(path, json=body)
        assert r.status_code == 200 and r.json()["done_reason"] == "unload"  # answered as Ollama answers
        assert MODEL in fake_engine.loaded
    # The admin unload does unload it.
    r = client.post("/api/v1/models/unload", json={"model_name_or_path": MODEL})
    assert r.json()["unloaded"] is True and MODEL not in fake_engine.loaded


def nest(depth: int) -> str:
    return "[" * depth + "]" * depth


DEEP_BODIES = [
    ("POST", "/api/generate", '{"model":"smollm2:135m","prompt":"hi","format":%s}'),
    ("POST", "/api/chat", '{"model":"smollm2:135m","messages":%s}'),
    ("POST", "/api/embed", '{"model":"smollm2:135m","input":%s}'),
    ("POST", "/api/embeddings", '{"model":"smollm2:135m","prompt":%s}'),
    ("POST", "/api/show", '{"model":%s}'),
    ("POST", "/api/create", '{"model":"x","from":"smollm2:135m","messages":%s}'),
    ("POST", "/api/copy", '{"source":%s}'),
    ("DELETE", "/api/delete", '{"model":%s}'),
    ("POST", "/api/pull", '{"model":%s}'),
    ("POST", "/v1/chat/completions", '{"model":"smollm2:135m","messages":[{"role":"user","content":"hi"}],"x":%s}'),
    ("POST", "/v1/completions", '{"model":"smollm2:135m","prompt":%s}'),
    ("POST", "/v1/embeddings", '{"model":"smollm2:135m","input":%s}'),
    ("PUT", "/api/v1/models/config", '{"model":"smollm2:135m","options":{"stop":%s}}'),
    ("POST", "/api/v1/models/load", '{"model_name_or_path":%s}'),
    ("POST", "/api/v1/cache/warm", '{"model":"smollm2:135m","messages":%s}'),
]


@pytest.mark.parametrize("depth", [100, 5000, 100_000])
@pytest.mark.parametrize(("method", "path", "template"), DEEP_BODIES)
def test_deep_json_is_400_everywhere(client: TestClient, method: str, path: str, template: str, depth: int) -> None:
    r = client.request(method, path, content=template % nest(depth), headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    body = r.json()
    message = body["error"]["message"] if path.startswith("/v1/") else body["error"]
    assert "nested too deeply" in message


@pytest.mark.parametrize("seed", [-2, -(2**63), 2**63, 2**64, 1e23, 99999999999999999999999])
def test_seed_out_of_range_is_400_on_both_protocols(client: TestClient, seed: float) -> None:
    r = client.post("/api/generate", json={"model": MODEL, "prompt": "hi", "options": {"seed": seed}})
    assert r.status_code == 400 and "seed" in r.json()["error"]
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "seed": seed}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "seed"
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": "hi", "seed": seed})
    assert r.status_code == 400 and r.json()["error"]["param"] == "seed"


@pytest.mark.parametrize("seed", [-1, 0, 42, 2**63 - 1])
def test_seed_in_range_is_accepted(client: TestClient, seed: int) -> None:
    assert client.post("/api/generate", json={"model": MODEL, "prompt": "hi", "options": {"seed": seed}}).is_success
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "seed": seed}
    assert client.post("/v1/chat/completions", json=body).is_success


class PathLeakingEngine(FakeEngine):
    async def start(self, req: GenerationRequest, resolved: Any = None) -> Any:
        raise ServiceError("cannot read /home/svc/.cache/huggingface/hub/models--org--m/blobs/0a1b2c: bad magic")


class CrashingEngine(FakeEngine):
    async def start(self, req: GenerationRequest, resolved: Any = None) -> Any:
        raise RuntimeError("boom in /opt/secret/layout/engine.py")


def test_error_bodies_carry_no_server_paths(client_for: Any) -> None:
    c = client_for(PathLeakingEngine())
    r = c.post("/api/generate", json={"model": MODEL, "prompt": "hi"})
    assert r.status_code == 500 and r.json()["error"] == "cannot read 0a1b2c: bad magic"
    r = c.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert "/home/" not in r.text and "0a1b2c" in r.json()["error"]["message"]


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[logging.LogRecord, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record, request_id.get()))


def test_unexpected_error_is_logged_once_with_request_id(client_for: Any) -> None:
    capture = _Capture()
    root = logging.getLogger()
    root.addHandler(capture)
    try:
        c = client_for(CrashingEngine())
        r = c.post("/api/generate", json={"model": MODEL, "prompt": "hi"}, headers={"X-Request-Id": "req-77"})
        r2 = c.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
            headers={"X-Request-Id": "req-78"},
        )
    finally:
        root.removeHandler(capture)
    assert r.status_code == 500 and r.json() == {"error": "internal error"}
    assert r2.status_code == 500 and r2.json()["error"]["message"] == "internal error"
    assert "boom" not in r.text + r2.text
    traces = [(rec, rid) for rec, rid in capture.seen if rec.exc_info]
    assert [rid for _, rid in traces] == ["req-77", "req-78"], [(rec.getMessage(), rid) for rec, rid in traces]


@pytest.mark.parametrize("stream", [True, False])
def test_pull_past_the_limit_is_503_with_retry_after(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    from app.registry.pull import PULL_SLOTS

    monkeypatch.setattr(PULL_SLOTS, "active", 2)  # the default limit's worth of pulls already running
    r = client.post("/api/pull", json={"model": "org/repo", "stream": stream})
    assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
    assert "HUGLLAMA_MAX_CONCURRENT_PULLS" in r.json()["error"]


def test_management_payloads_carry_no_server_paths() -> None:
    from app.api.management.routes import _scrubbed

    payload = {"models": [{"name": "m", "error": "cannot read /srv/models/m/config.json: bad"}], "last_error": None}
    assert _scrubbed(payload) == {
        "models": [{"name": "m", "error": "cannot read config.json: bad"}],
        "last_error": None,
    }


def test_refused_origin_gets_an_error_body(client: TestClient) -> None:
    r = client.get("/v1/models", headers={"Origin": "http://localhost.evil.com"})
    assert r.status_code == 403 and r.json()["error"]["param"] == "origin"
    r = client.get("/api/tags", headers={"Origin": "http://localhost.evil.com"})
    assert r.status_code == 403 and "HUGLLAMA_ORIGINS" in r.json()["error"]


def test_refused_host_and_origin_are_logged_and_counted(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hugllama.access"):
        client.get("/api/tags", headers={"Host": "rebind.evil.example"})
        client.get("/api/tags", headers={"Origin": "http://localhost.evil.com"})
    lines = [r.getMessage() for r in caplog.records if r.name == "hugllama.access"]
    assert any("host 'rebind.evil.example' not allowed" in m for m in lines), lines
    assert any("origin 'http://localhost.evil.com' not allowed" in m for m in lines), lines
    metrics = client.get("/metrics").text
    assert 'hugllama_requests_total{protocol="ollama",route="/api/tags",status="403"} 2.0' in metrics
