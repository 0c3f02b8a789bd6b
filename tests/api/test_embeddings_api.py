"""Embeddings over HTTP (FakeEngine): /api/embed, /api/embeddings and /v1/embeddings shapes, field mapping and
errors in each protocol's shape, and the official `ollama` and `openai` clients over a real socket. Whether the
vectors mean anything is the slow tier's business (tests/slow/test_embeddings_real.py)."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import ollama
import openai
import pytest
from fastapi.testclient import TestClient

from tests.helpers.fake_engine import FAKE_DIMS, FakeEngine

MODEL = "smollm2:135m"


def _norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


# --- Ollama /api/embed -------------------------------------------------------------------------------------------


def test_embed_list_gives_one_unit_vector_per_input_in_order(client: TestClient, fake_engine: FakeEngine) -> None:
    r = client.post("/api/embed", json={"model": MODEL, "input": ["a", "b c"], "truncate": False})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == MODEL
    assert len(body["embeddings"]) == 2 and all(len(v) == FAKE_DIMS for v in body["embeddings"])
    assert all(abs(_norm(v) - 1) < 1e-6 for v in body["embeddings"])
    assert body["embeddings"][0] != body["embeddings"][1]
    assert body["prompt_eval_count"] == 3 and body["total_duration"] > 0 and "load_duration" in body
    req = fake_engine.embed_requests[-1]
    assert req.inputs == ("a", "b c") and req.truncate is False and req.normalize is True


def test_embed_string_input_and_options(client: TestClient, fake_engine: FakeEngine) -> None:
    r = client.post(
        "/api/embed",
        json={
            "model": MODEL,
            "input": "hello",
            "dimensions": 4,
            "options": {"num_ctx": 64, "temperature": None},
            "keep_alive": "1m",
        },
    )
    assert r.status_code == 200, r.text
    (vector,) = r.json()["embeddings"]
    assert len(vector) == 4 and abs(_norm(vector) - 1) < 1e-6
    req = fake_engine.embed_requests[-1]
    assert (req.dimensions, req.num_ctx, req.keep_alive, req.truncate) == (4, 64, 60.0, True)


@pytest.mark.parametrize("body", [{"input": ""}, {"input": None}, {}, {"input": []}])
def test_embed_without_input_only_loads(client: TestClient, fake_engine: FakeEngine, body: dict[str, Any]) -> None:
    r = client.post("/api/embed", json={"model": MODEL, **body})
    assert r.status_code == 200, r.text
    assert r.json() == {"model": MODEL, "embeddings": []}
    assert MODEL in fake_engine.loaded and not fake_engine.embed_requests


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"model": MODEL, "input": [1, 2]}, 400, "invalid input type"),
        ({"model": MODEL, "input": {"a": 1}}, 400, "invalid input type"),
        ({"model": MODEL, "input": "x", "dimensions": -1}, 400, "dimensions"),
        ({"model": MODEL, "input": "x", "dimensions": FAKE_DIMS + 1}, 400, "dimensions"),
        ({"model": MODEL, "input": "x", "options": {"num_ctx": "many"}}, 400, "num_ctx"),
        ({"input": "x"}, 404, "not found"),
        ({"model": "nope", "input": "x"}, 404, "not found"),
        ({"model": "a/../etc", "input": "x"}, 400, "invalid model name"),
    ],
)
def test_embed_errors_are_ollama_shaped(client: TestClient, body: dict[str, Any], status: int, needle: str) -> None:
    r = client.post("/api/embed", json=body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and needle in r.json()["error"]


# --- Ollama /api/embeddings (legacy) -----------------------------------------------------------------------------


def test_legacy_embeddings_is_not_normalised(client: TestClient, fake_engine: FakeEngine) -> None:
    r = client.post("/api/embeddings", json={"model": MODEL, "prompt": "hello"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"embedding"} and len(body["embedding"]) == FAKE_DIMS
    assert abs(_norm(body["embedding"]) - 1) > 1e-3
    assert fake_engine.embed_requests[-1].normalize is False


def test_legacy_embeddings_empty_prompt_and_errors(client: TestClient) -> None:
    assert client.post("/api/embeddings", json={"model": MODEL, "prompt": ""}).json() == {"embedding": []}
    r = client.post("/api/embeddings", json={"prompt": "x"})
    assert r.status_code == 400 and r.json() == {"error": "model is required"}
    assert client.post("/api/embeddings", json={"model": "nope", "prompt": "x"}).status_code == 404


# --- OpenAI /v1/embeddings ---------------------------------------------------------------------------------------


def test_openai_embeddings_float_and_usage(client: TestClient, fake_engine: FakeEngine) -> None:
    r = client.post("/v1/embeddings", json={"model": MODEL, "input": ["one two", "three"], "user": "u1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == MODEL
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" and abs(_norm(d["embedding"]) - 1) < 1e-6 for d in body["data"])
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert fake_engine.embed_requests[-1].inputs == ("one two", "three")


def test_openai_embeddings_base64_is_little_endian_float32(client: TestClient) -> None:
    plain = client.post("/v1/embeddings", json={"model": MODEL, "input": "x"}).json()["data"][0]["embedding"]
    r = client.post("/v1/embeddings", json={"model": MODEL, "input": "x", "encoding_format": "base64"})
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(plain, abs=1e-7)


def test_openai_embeddings_dimensions(client: TestClient) -> None:
    r = client.post("/v1/embeddings", json={"model": MODEL, "input": "x", "dimensions": 3})
    assert len(r.json()["data"][0]["embedding"]) == 3


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": MODEL, "input": None}, 400, "input"),
        ({"model": MODEL, "input": []}, 400, "input"),
        ({"model": MODEL, "input": [[1, 2, 3]]}, 400, "input"),
        ({"model": MODEL, "input": [1, 2]}, 400, "input"),
        ({"model": MODEL, "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
        ({"model": MODEL, "input": "x", "dimensions": 0}, 400, "dimensions"),
        ({"input": "x"}, 400, "model"),
        ({"model": "nope", "input": "x"}, 404, "model"),
    ],
)
def test_openai_embedding_errors_are_openai_shaped(
    client: TestClient, body: dict[str, Any], status: int, param: str
) -> None:
    r = client.post("/v1/embeddings", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and param in str(error["param"])


# --- official clients over a real socket ---------------------------------------------------------------------------


def test_official_clients(live_server: Any) -> None:
    engine = FakeEngine()
    url = live_server(engine)
    ol = ollama.Client(host=url)
    out = ol.embed(model=MODEL, input=["a", "b"])
    assert len(out.embeddings) == 2 and all(len(v) == FAKE_DIMS for v in out.embeddings)
    assert len(ol.embeddings(model=MODEL, prompt="a").embedding) == FAKE_DIMS
    oa = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=10)
    floats = oa.embeddings.create(model=MODEL, input="a", encoding_format="float").data[0].embedding
    default = oa.embeddings.create(model=MODEL, input="a").data[0].embedding  # the SDK asks for base64, decodes
    assert default == pytest.approx(floats, abs=1e-7) and floats == pytest.approx(out.embeddings[0], abs=1e-7)
