"""Probes, middleware (request id, API keys, CORS, body limit, draining) and metrics over a FakeEngine."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from fastapi.testclient import TestClient

from tests.helpers.fake_engine import FakeEngine


def test_root_and_version(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.text == "Ollama is running"
    assert client.head("/").status_code == 200
    v = client.get("/api/version").json()["version"]
    assert all(part.isdigit() for part in v.split("."))


def test_probes(client: TestClient) -> None:
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/health").status_code == 200


def test_readyz_waits_for_engine(app_factory: Any, fake_engine: FakeEngine, monkeypatch: Any) -> None:
    monkeypatch.setattr(fake_engine, "ready", lambda: False)
    with TestClient(app_factory(), base_url="http://localhost") as c:
        assert c.get("/readyz").status_code == 503
        assert c.get("/livez").status_code == 200
    with TestClient(app_factory(readiness="server"), base_url="http://localhost") as c:
        assert c.get("/readyz").status_code == 200


def test_livez_reports_dead_engine(app_factory: Any, fake_engine: FakeEngine, monkeypatch: Any) -> None:
    monkeypatch.setattr(fake_engine, "alive", lambda: False)
    with TestClient(app_factory(), base_url="http://localhost") as c:
        assert c.get("/livez").status_code == 503


def test_request_id_taken_or_made(client: TestClient) -> None:
    assert client.get("/api/version", headers={"X-Request-Id": "abc-123"}).headers["x-request-id"] == "abc-123"
    made = client.get("/api/version").headers["x-request-id"]
    assert len(made) == 32
    # A hostile id is replaced, never echoed.
    assert (
        client.get("/api/version", headers={"X-Request-Id": "a\tb<script>"}).headers["x-request-id"] != "a\tb<script>"
    )


def test_api_keys(app_factory: Any) -> None:
    with TestClient(app_factory(api_keys="k1,k2"), base_url="http://localhost") as c:
        r = c.get("/api/tags")
        assert r.status_code == 401 and "error" in r.json()
        r = c.get("/v1/models")
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert c.get("/api/tags", headers={"Authorization": "Bearer k2"}).status_code == 200
        assert c.get("/api/tags", headers={"Authorization": "Bearer k3"}).status_code == 401
        assert c.get("/api/tags", headers={"Authorization": "Basic k1"}).status_code == 401
        assert c.get("/api/v1/models/status").status_code == 401
        # Probes, metrics and "/" stay open unless configured.
        assert c.get("/livez").status_code == 200
        assert c.get("/metrics").status_code == 200
        assert c.get("/").status_code == 200
    with TestClient(app_factory(api_keys="k1", auth_probes=True), base_url="http://localhost") as c:
        assert c.get("/readyz").status_code == 401
        assert c.get("/readyz", headers={"Authorization": "Bearer k1"}).status_code == 200


def test_cors_ollama_semantics(app_factory: Any) -> None:
    with TestClient(app_factory(origins="https://webui.example.com"), base_url="http://localhost") as c:
        ok = c.get("/api/version", headers={"Origin": "http://localhost:3000"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert c.get("/api/version", headers={"Origin": "https://webui.example.com"}).status_code == 200
        assert c.get("/api/version", headers={"Origin": "https://evil.example.com"}).status_code == 403
        pre = c.options(
            "/api/chat",
            headers={"Origin": "http://127.0.0.1:8080", "Access-Control-Request-Method": "POST"},
        )
        assert pre.status_code == 204 and "POST" in pre.headers["access-control-allow-methods"]
        assert c.get("/api/version").status_code == 200  # no Origin: always allowed
    with TestClient(app_factory(origins="*"), base_url="http://localhost") as c:
        assert c.get("/api/version", headers={"Origin": "https://anything.example"}).status_code == 200


def test_body_limit(app_factory: Any) -> None:
    with TestClient(app_factory(max_body_bytes=2048), base_url="http://localhost") as c:
        r = c.post("/api/chat", content=b"{" + b" " * 4096 + b"}", headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "larger than" in r.json()["error"]


def test_draining_refuses_new_work(client: TestClient) -> None:
    client.app.state.lifecycle.begin_drain()  # type: ignore[attr-defined]
    assert client.get("/readyz").status_code == 503
    r = client.get("/api/tags")
    assert r.status_code == 503 and r.headers["retry-after"]
    assert client.get("/livez").status_code == 200


def test_metrics_exposed_and_counted(client: TestClient) -> None:
    client.get("/api/version")
    client.get("/livez")
    text = client.get("/metrics").text
    for name in (
        "hugllama_requests_total",
        "hugllama_requests_running",
        "hugllama_requests_waiting",
        "hugllama_models_loaded",
        "hugllama_build_info",
        "hugllama_time_to_first_token_seconds",
        "hugllama_model_evictions_total",
        "hugllama_client_disconnects_total",
    ):
        assert name in text, name
    assert 'route="/api/version"' in text
    assert "livez" not in text  # probes are not counted as requests


def test_unknown_route_and_method(client: TestClient) -> None:
    r = client.get("/api/nope")
    assert r.status_code == 404 and r.text == "404 page not found"
    r = client.get("/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_http_layer_does_not_import_torch() -> None:
    code = (
        "import sys; import app.main, app.api.ollama.routes, app.api.openai.routes, app.cli.main; "
        "from tests.helpers.fake_engine import FakeEngine; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, "
        "[m for m in sys.modules if m.startswith(('torch', 'transformers'))][:5]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_readyz_generation_probe(app_factory: Any, fake_engine: FakeEngine, monkeypatch: Any) -> None:
    calls: list[bool] = []

    async def probe(ok: bool) -> bool:
        calls.append(ok)
        return ok

    monkeypatch.setattr(fake_engine, "probe", lambda: probe(True), raising=False)
    with TestClient(app_factory(readiness="generate"), base_url="http://localhost") as c:
        assert c.get("/readyz").status_code == 200
    monkeypatch.setattr(fake_engine, "probe", lambda: probe(False), raising=False)
    with TestClient(app_factory(readiness="generate"), base_url="http://localhost") as c:
        assert c.get("/readyz").status_code == 503
    assert calls == [True, False]
