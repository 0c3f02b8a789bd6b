"""The one body parser (app/api/body.py) on all three sides: any Content-Type, the size limit, each protocol's shape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
CHAT = b'{"model":"smollm2:135m","messages":[{"role":"user","content":"hi"}],"stream":false}'


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/chat", CHAT),
        ("POST", "/v1/chat/completions", CHAT),
        ("POST", "/api/v1/models/unload", b'{"model_name_or_path":"smollm2:135m"}'),
    ],
)
def test_curl_d_bodies_are_json_on_every_side(client: TestClient, method: str, path: str, body: bytes) -> None:
    r = client.request(method, path, content=body, headers=FORM)
    assert r.status_code == 200, r.text


def _chunks(total: int) -> Iterator[bytes]:
    # A generator body goes out chunked: no Content-Length, so the limit is met while the body is read.
    for _ in range(total // 4096):
        yield b" " * 4096


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/api/chat", "ollama"), ("/v1/chat/completions", "openai"), ("/api/v1/models/load", "ollama")],
)
def test_a_body_over_the_limit_without_content_length_is_413(app_factory: Any, path: str, shape: str) -> None:
    with TestClient(app_factory(max_body_bytes=64 * 1024), base_url="http://localhost") as c:
        r = c.post(path, content=_chunks(256 * 1024))
    assert r.status_code == 413
    error = r.json()["error"]
    message = error if shape == "ollama" else error["message"]
    assert message == "request body larger than 65536 bytes"
