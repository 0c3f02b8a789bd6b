"""Model management over HTTP: tags, ps, show, create, copy, delete, pull (fake generator), push."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.errors import InvalidRequest, ModelNotFound, UpstreamUnavailable
from app.registry.types import Alias
from tests.helpers.fake_engine import FakeEngine

MODEL = "smollm2:135m"


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


# --- tags / ps / show -------------------------------------------------------------------------------------------


def test_tags(client: TestClient, fake_catalog: Any) -> None:
    fake_catalog.aliases["mario:latest"] = Alias(name="mario:latest", model=MODEL, modified_at=time.time() + 100)
    r = client.get("/api/tags")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    models = r.json()["models"]
    assert [m["name"] for m in models] == ["mario:latest", MODEL]  # newest first
    for m in models:
        assert m["model"] == m["name"] and ":" in m["name"]
        assert m["size"] > 0 and len(m["digest"]) == 64
        assert datetime.fromisoformat(m["modified_at"]).utcoffset() is not None
        assert set(m["details"]) == {
            "parent_model",
            "format",
            "family",
            "families",
            "parameter_size",
            "quantization_level",
        }
        assert isinstance(m["details"]["families"], list)
    assert models[0]["details"]["parent_model"] == MODEL
    assert client.head("/api/tags").status_code == 200


def test_ps(client: TestClient, fake_engine: FakeEngine) -> None:
    assert client.get("/api/ps").json() == {"models": []}
    client.post("/api/generate", json={"model": MODEL})
    (m,) = client.get("/api/ps").json()["models"]
    assert m["name"] == MODEL and m["model"] == MODEL
    assert m["size"] == 1000 and m["size_vram"] == 0 and m["context_length"] == 4096
    expires = datetime.fromisoformat(m["expires_at"])
    assert expires.utcoffset() is not None and expires.timestamp() > time.time()
    assert m["details"]["quantization_level"] == "F32"


def test_ps_forever(client: TestClient, fake_engine: FakeEngine, monkeypatch: Any) -> None:
    from app.engine.types import RunningModel

    rm = RunningModel(
        name=MODEL,
        size_bytes=1,
        vram_bytes=0,
        estimate_bytes=1,
        expires_at=None,
        context_length=8,
        device="cpu",
        quantization="Q4_1",
    )
    monkeypatch.setattr(fake_engine, "running", lambda: [rm])
    (m,) = client.get("/api/ps").json()["models"]
    assert datetime.fromisoformat(m["expires_at"]).year > 2300


@pytest.mark.parametrize("key", ["model", "name"])
def test_show(client: TestClient, key: str) -> None:
    r = client.post("/api/show", json={key: MODEL})
    assert r.status_code == 200
    body = r.json()
    assert "model_info" in body and body["model_info"]["general.architecture"] == "llama"
    assert body["details"]["family"] == "llama" and "completion" in body["capabilities"]
    assert body["template"] and body["modelfile"].startswith("FROM")
    assert datetime.fromisoformat(body["modified_at"]).utcoffset() is not None


def test_show_errors(client: TestClient) -> None:
    r = client.post("/api/show", json={"model": "ghost"})
    assert r.status_code == 404 and r.json()["error"] == "model 'ghost' not found"
    r = client.post("/api/show", json={})
    assert r.status_code == 400 and r.json()["error"] == "model is required"


# --- create / copy / delete -------------------------------------------------------------------------------------


def test_create_streams_status_and_stores_the_alias(client: TestClient, fake_catalog: Any) -> None:
    body = {
        "model": "mario",
        "from": MODEL,
        "system": "You are Mario.",
        "parameters": {"temperature": 0.2, "num_predict": 40, "repeat_penalty": 1.1, "stop": ["END"]},
        "quantize": "q4_K_M",
        "keep_alive": "15m",
    }
    r = client.post("/api/create", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    statuses = [o["status"] for o in lines(r.text)]
    assert statuses[0] == "using existing model" and statuses[-1] == "success"
    alias = fake_catalog.aliases["mario:latest"]
    assert alias.model == MODEL and alias.system == "You are Mario."
    assert alias.options == {"temperature": 0.2, "max_tokens": 40, "repetition_penalty": 1.1, "stop": ["END"]}
    assert alias.quantization == "4bit" and alias.keep_alive == 900.0
    assert any(m["name"] == "mario:latest" for m in client.get("/api/tags").json()["models"])


def test_create_non_stream_and_legacy_name(client: TestClient, fake_catalog: Any) -> None:
    r = client.post("/api/create", json={"name": "luigi:1", "from": MODEL, "stream": False, "quantize": "q8_0"})
    assert r.status_code == 200 and r.json() == {"status": "success"}
    assert fake_catalog.aliases["luigi:1"].quantization == "8bit"


def test_recreate_keeps_created_at(client: TestClient, fake_catalog: Any) -> None:
    fake_catalog.aliases["mario:latest"] = Alias(name="mario:latest", model=MODEL, created_at=5.0)
    client.post("/api/create", json={"model": "mario:latest", "from": MODEL, "stream": False})
    assert fake_catalog.aliases["mario:latest"].created_at == 5.0


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"from": MODEL}, 400, "model is required"),
        ({"model": "x"}, 400, "neither 'from' or 'files' was specified"),
        ({"model": "x", "from": "ghost"}, 404, "not found"),
        ({"model": "x", "from": MODEL, "quantize": "q6_K"}, 400, "unsupported quantization"),
        ({"model": "x", "from": MODEL, "parameters": {"top_k": -3}}, 400, 'option "top_k" must be'),
        ({"model": "x", "files": {"a.gguf": "sha256:00"}}, 400, "not supported"),
    ],
)
def test_create_errors_have_real_statuses(client: TestClient, body: dict[str, Any], status: int, message: str) -> None:
    r = client.post("/api/create", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_copy_and_delete(client: TestClient, fake_catalog: Any) -> None:
    r = client.post("/api/copy", json={"source": MODEL, "destination": "copy:1"})
    assert r.status_code == 200 and r.content == b""
    assert "copy:1" in fake_catalog.aliases
    r = client.request("DELETE", "/api/delete", json={"model": "copy:1"})
    assert r.status_code == 200 and r.content == b""
    assert "copy:1" not in fake_catalog.aliases
    r = client.request("DELETE", "/api/delete", json={"name": "copy:1"})
    assert r.status_code == 404 and "not found" in r.json()["error"]


def test_copy_and_delete_errors(client: TestClient) -> None:
    assert client.post("/api/copy", json={"source": "ghost", "destination": "x"}).status_code == 404
    r = client.post("/api/copy", json={"source": MODEL})
    assert r.status_code == 400 and r.json()["error"] == "destination is required"
    r = client.request("DELETE", "/api/delete", json={})
    assert r.status_code == 400 and r.json()["error"] == "model is required"
    assert client.post("/api/delete", json={"model": MODEL}).status_code == 405


# --- pull -------------------------------------------------------------------------------------------------------


def _fake_pull(events: list[dict[str, Any]], fail: Exception | None = None, *, fail_at: int | None = None) -> Any:
    calls: list[tuple[str, Any, str]] = []

    def pull(repo: str, *, settings: Any, **kw: Any) -> Iterator[dict[str, Any]]:
        calls.append((repo, settings, threading.current_thread().name))
        for i, e in enumerate(events):
            if fail is not None and fail_at == i:
                raise fail
            yield e
        if fail is not None and fail_at is None:
            raise fail

    pull.calls = calls  # type: ignore[attr-defined]
    return pull


PROGRESS = [
    {"status": "pulling manifest"},
    {"status": "pulling 0123456789ab", "digest": "sha256:" + "0" * 64, "total": 100, "completed": None},
    {"status": "pulling 0123456789ab", "digest": "sha256:" + "0" * 64, "total": 100, "completed": 100},
    {"status": "verifying sha256 digest"},
    {"status": "writing manifest"},
    {"status": "success"},
]


def test_pull_streams_progress(client: TestClient, monkeypatch: Any) -> None:
    fake = _fake_pull(PROGRESS)
    monkeypatch.setattr("app.registry.pull.pull", fake)
    r = client.post("/api/pull", json={"model": "org/repo", "insecure": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    objs = lines(r.text)
    assert [o["status"] for o in objs] == [e["status"] for e in PROGRESS]
    assert "completed" not in objs[1] and objs[2]["completed"] == 100  # None values are dropped
    repo, settings, thread = fake.calls[0]
    assert repo == "org/repo" and settings is not None
    assert thread == "hugllama-pull"  # the blocking generator never runs on the event loop


def test_pull_non_stream_and_legacy_name(client: TestClient, monkeypatch: Any) -> None:
    fake = _fake_pull(PROGRESS)
    monkeypatch.setattr("app.registry.pull.pull", fake)
    r = client.post("/api/pull", json={"name": "org/repo", "stream": False})
    assert r.status_code == 200 and r.json() == {"status": "success"}
    assert fake.calls[0][0] == "org/repo"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ModelNotFound("org/none"), 404),
        (UpstreamUnavailable("the Hub is unreachable"), 502),
        (InvalidRequest("only Hugging Face repos"), 400),
    ],
)
def test_pull_errors_before_progress_keep_their_status(
    client: TestClient, monkeypatch: Any, error: Exception, status: int
) -> None:
    # the repo is resolved while "pulling manifest" is pending: that line is held back until it succeeds
    monkeypatch.setattr("app.registry.pull.pull", _fake_pull(PROGRESS[:1], error))
    for stream in (True, False):
        r = client.post("/api/pull", json={"model": "org/none", "stream": stream})
        assert r.status_code == status and r.json()["error"] == str(error)


def test_pull_error_after_progress_is_in_band(client: TestClient, monkeypatch: Any) -> None:
    monkeypatch.setattr(
        "app.registry.pull.pull", _fake_pull(PROGRESS, UpstreamUnavailable("connection reset"), fail_at=3)
    )
    r = client.post("/api/pull", json={"model": "org/repo"})
    assert r.status_code == 200
    objs = lines(r.text)
    assert objs[-1] == {"error": "connection reset"} and objs[0]["status"] == "pulling manifest"


def test_pull_unexpected_exception_is_an_error_not_a_trace(client: TestClient, monkeypatch: Any) -> None:
    monkeypatch.setattr("app.registry.pull.pull", _fake_pull([], RuntimeError("disk full")))
    r = client.post("/api/pull", json={"model": "org/repo"})
    assert r.status_code == 500 and r.json()["error"] == "pull failed: disk full"


def test_pull_requires_a_model(client: TestClient) -> None:
    r = client.post("/api/pull", json={})
    assert r.status_code == 400 and r.json()["error"] == "model is required"


# --- unsupported ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/push", "/api/blobs/sha256:00"])
def test_unsupported_endpoints_say_so(client: TestClient, path: str) -> None:
    r = client.post(path, json={"model": MODEL, "input": "x"})
    assert r.status_code == 501 and "not supported" in r.json()["error"]


def test_ollama_modules_do_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import app.api.ollama.routes, app.api.ollama.convert, app.api.ollama.schemas;"
        "sys.exit(1 if 'torch' in sys.modules or 'transformers' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
