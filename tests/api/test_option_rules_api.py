"""One bad sampling value through every door of the HTTP layer: each protocol refuses it before the engine is asked,
in its own error shape, naming the field the way its clients wrote it (the rule itself is app/param_rules.py)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

MODEL = "smollm2:135m"
USER = [{"role": "user", "content": "hi"}]

# (Ollama option, OpenAI field, a value the engine refuses, the rule's text)
CASES = [
    ("typical_p", "typical_p", 0, "in (0, 1]"),
    ("min_p", "min_p", 1.5, "between 0 and 1"),
    ("repeat_penalty", "repetition_penalty", 0, "> 0"),
    ("seed", "seed", -7, "-1 (random) or between 0 and"),
]


@pytest.mark.parametrize(("ollama", "openai", "value", "rule"), CASES)
def test_ollama_names_the_option(
    client: TestClient, fake_engine: Any, ollama: str, openai: str, value: Any, rule: str
) -> None:
    bodies = [
        ("/api/chat", {"model": MODEL, "messages": USER, "options": {ollama: value}}),
        ("/api/generate", {"model": MODEL, "prompt": "hi", "options": {ollama: value}}),
        ("/api/create", {"model": "bad-alias", "from": MODEL, "parameters": {ollama: value}, "stream": False}),
    ]
    for path, body in bodies:
        r = client.post(path, json=body)
        assert r.status_code == 400, (path, r.text)
        assert list(r.json()) == ["error"]
        assert r.json()["error"].startswith(f'option "{ollama}" must be {rule}'), (path, r.text)
    assert fake_engine.requests == []


@pytest.mark.parametrize(("ollama", "openai", "value", "rule"), CASES)
def test_openai_names_the_field(
    client: TestClient, fake_engine: Any, ollama: str, openai: str, value: Any, rule: str
) -> None:
    bodies = [
        ("/v1/chat/completions", {"model": MODEL, "messages": USER, openai: value}),
        ("/v1/completions", {"model": MODEL, "prompt": "hi", openai: value}),
    ]
    for path, body in bodies:
        r = client.post(path, json=body)
        assert r.status_code == 400, (path, r.text)
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["param"] == openai and openai in error["message"], (path, error)
    assert fake_engine.requests == []


def test_typical_p_edges_agree_across_protocols(client: TestClient, fake_engine: Any) -> None:
    # 0 used to pass Ollama's range and fail later in the engine, named `typical_p` instead of `options.typical_p`.
    ok = client.post("/api/chat", json={"model": MODEL, "messages": USER, "stream": False, "options": {"typical_p": 1}})
    assert ok.status_code == 200, ok.text
    ok = client.post("/v1/chat/completions", json={"model": MODEL, "messages": USER, "typical_p": 1})
    assert ok.status_code == 200, ok.text
    assert [r.sampling.typical_p for r in fake_engine.requests] == [1.0, 1.0]
