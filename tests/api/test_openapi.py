"""/openapi.json (what /docs shows and the schema fuzzer reads) documents both protocols' bodies, Ollama's too."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    node: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return _resolve(spec, node)


def _request_schema(spec: dict[str, Any], path: str, method: str = "post") -> dict[str, Any]:
    body = spec["paths"][path][method]["requestBody"]
    return _resolve(spec, body["content"]["application/json"]["schema"])


def _response_schema(spec: dict[str, Any], path: str, method: str = "post") -> dict[str, Any]:
    ok = spec["paths"][path][method]["responses"]["200"]
    return _resolve(spec, ok["content"]["application/json"]["schema"])


@pytest.fixture
def spec(client: TestClient) -> dict[str, Any]:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    out: dict[str, Any] = r.json()
    return out


def test_ollama_chat_documents_its_request_and_response(spec: dict[str, Any]) -> None:
    req = _request_schema(spec, "/api/chat")
    assert {"model", "messages", "options", "tools", "format", "stream", "keep_alive"} <= set(req["properties"])
    message = _resolve(spec, req["properties"]["messages"]["anyOf"][0]["items"])
    assert {"role", "content", "images", "tool_calls"} <= set(message["properties"])
    assert message["required"] == ["role"]
    resp = _response_schema(spec, "/api/chat")
    assert {"model", "created_at", "message", "done", "done_reason", "eval_count"} <= set(resp["properties"])
    # Streamed answers are NDJSON lines of the same object.
    assert "application/x-ndjson" in spec["paths"]["/api/chat"]["post"]["responses"]["200"]["content"]


@pytest.mark.parametrize(
    ("path", "method", "fields", "response_fields"),
    [
        ("/api/generate", "post", {"model", "prompt", "suffix", "system", "template", "raw", "options"}, {"response"}),
        ("/api/embed", "post", {"model", "input", "truncate", "dimensions"}, {"embeddings"}),
        ("/api/embeddings", "post", {"model", "prompt"}, {"embedding"}),
        ("/api/show", "post", {"model", "name", "verbose"}, {"details", "model_info", "template"}),
        ("/api/create", "post", {"model", "from", "system", "parameters", "quantize"}, {"status"}),
        ("/api/pull", "post", {"model", "name", "stream"}, {"status", "completed", "total"}),
        ("/api/copy", "post", {"source", "destination"}, None),
        ("/api/delete", "delete", {"model", "name"}, None),
    ],
)
def test_every_ollama_body_is_documented(
    spec: dict[str, Any], path: str, method: str, fields: set[str], response_fields: set[str] | None
) -> None:
    assert fields <= set(_request_schema(spec, path, method)["properties"])
    if response_fields is not None:
        assert response_fields <= set(_response_schema(spec, path, method)["properties"])


@pytest.mark.parametrize(("path", "fields"), [("/api/tags", {"models"}), ("/api/ps", {"models"})])
def test_ollama_listings_document_their_response(spec: dict[str, Any], path: str, fields: set[str]) -> None:
    assert fields <= set(_response_schema(spec, path, "get")["properties"])


def test_openai_bodies_are_still_documented(spec: dict[str, Any]) -> None:
    assert {"model", "messages", "tools"} <= set(_request_schema(spec, "/v1/chat/completions")["properties"])
    assert {"choices", "usage"} <= set(_response_schema(spec, "/v1/chat/completions")["properties"])
