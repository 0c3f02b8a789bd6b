"""/api/generate over HTTP with a FakeEngine: framing, what reaches the engine, load/unload, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers.fake_engine import FakeEngine

MODEL = "smollm2:135m"


def lines(text: str) -> list[dict[str, Any]]:
    raw = text.split("\n")
    assert raw[-1] == "" and all(raw[:-1]), "NDJSON: one object per line, no blank lines"
    return [json.loads(line) for line in raw[:-1]]


def test_streams_ndjson_by_default(client: TestClient, fake_engine: FakeEngine) -> None:
    r = client.post("/api/generate", json={"model": MODEL, "prompt": "Hi"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    objs = lines(r.text)
    assert [o["done"] for o in objs] == [False] * (len(objs) - 1) + [True]
    assert "".join(o["response"] for o in objs) == "".join(fake_engine.script)
    final = objs[-1]
    assert final["done_reason"] == "stop" and final["context"] == [1, 2, 3]
    for key in (
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ):
        assert isinstance(final[key], int)
    assert final["eval_count"] == len(fake_engine.script)
    assert all(o["model"] == MODEL and o["created_at"].endswith("Z") for o in objs)
    assert fake_engine.requests[0].prompt == "Hi" and fake_engine.requests[0].protocol == "ollama"


def test_non_stream_is_one_object(client: TestClient, fake_engine: FakeEngine) -> None:
    r = client.post("/api/generate", json={"model": MODEL, "prompt": "Hi", "stream": False})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["response"] == "".join(fake_engine.script) and body["done"] is True
    assert body["done_reason"] == "stop" and body["context"] == [1, 2, 3]


def test_model_is_echoed_verbatim(client: TestClient, fake_catalog: Any, fake_engine: FakeEngine) -> None:
    fake_engine.models.add("smollm2:latest")
    fake_catalog.base = "smollm2:latest"
    r = client.post("/api/generate", json={"model": "SmolLM2", "prompt": "x", "stream": False})
    assert r.status_code == 200 and r.json()["model"] == "SmolLM2"


def test_options_and_fields_reach_the_engine(client: TestClient, fake_engine: FakeEngine) -> None:
    body = {
        "model": MODEL,
        "prompt": "Hi",
        "system": "Be terse",
        "template": "{{ prompt }}",
        "suffix": "END",
        "context": [4, 5],
        "format": {"type": "object"},
        "keep_alive": "2m",
        "truncate": False,
        "shift": False,
        "logprobs": True,
        "top_logprobs": 2,
        "stream": False,
        "options": {
            "temperature": 0,
            "top_k": 1,
            "num_predict": 2,
            "repeat_penalty": 1.3,
            "seed": 7,
            "stop": ["!"],
            "mirostat": 0,
            "num_thread": 4,
        },
        "unknown_top_level": {"ignored": True},
    }
    assert client.post("/api/generate", json=body).status_code == 200
    req = fake_engine.requests[-1]
    assert (req.system, req.template, req.suffix, req.context) == ("Be terse", "{{ prompt }}", "END", (4, 5))
    assert req.format == {"type": "object"} and req.keep_alive == 120.0 and req.truncate is False
    s = req.sampling
    assert (s.temperature, s.top_k, s.max_tokens, s.repetition_penalty, s.seed, s.stop) == (0.0, 1, 2, 1.3, 7, ("!",))
    assert s.logprobs is True and s.top_logprobs == 2


def test_num_predict_reports_length(client: TestClient) -> None:
    r = client.post(
        "/api/generate", json={"model": MODEL, "prompt": "x", "stream": False, "options": {"num_predict": 1}}
    )
    assert r.json()["done_reason"] == "length" and r.json()["eval_count"] == 1


def test_form_encoded_body_is_parsed_as_json(client: TestClient, fake_engine: FakeEngine) -> None:
    # curl -d sends application/x-www-form-urlencoded
    data = json.dumps({"model": MODEL, "prompt": "Hi", "stream": False})
    r = client.post("/api/generate", content=data, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json()["done"] is True


def test_raw_mode_omits_context(client: TestClient, fake_engine: FakeEngine) -> None:
    r = client.post("/api/generate", json={"model": MODEL, "prompt": "x", "raw": True, "stream": False})
    assert "context" not in r.json() and fake_engine.requests[-1].raw is True


def test_empty_prompt_loads(client: TestClient, fake_engine: FakeEngine) -> None:
    r = client.post("/api/generate", json={"model": MODEL, "keep_alive": "10m"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["done"] is True and body["done_reason"] == "load" and body["response"] == ""
    assert MODEL in fake_engine.loaded and fake_engine.requests == []


def test_empty_prompt_with_keep_alive_zero_unloads(client: TestClient, fake_engine: FakeEngine) -> None:
    client.post("/api/generate", json={"model": MODEL})
    assert MODEL in fake_engine.loaded
    # Open WebUI's unload: no "stream" key, read with r.json()
    r = client.post("/api/generate", json={"model": MODEL, "keep_alive": 0, "prompt": ""})
    assert r.json()["done_reason"] == "unload" and MODEL not in fake_engine.loaded


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"prompt": "x"}, 404, "model '' not found"),
        ({"model": "nope:1b", "prompt": "x"}, 404, "model 'nope:1b' not found"),
        ({"model": MODEL, "prompt": "x", "keep_alive": "300"}, 400, 'time: missing unit in duration "300"'),
        ({"model": MODEL, "prompt": "x", "keep_alive": True}, 400, "Unsupported type: 'bool'"),
        (
            {"model": MODEL, "prompt": "x", "raw": True, "system": "s"},
            400,
            "raw mode does not support template, system, or context",
        ),
        ({"model": MODEL, "prompt": "x", "images": ["aGk="]}, 400, "does not support images"),
        ({"model": MODEL, "prompt": "x", "think": True}, 400, f'"{MODEL}" does not support thinking'),
        ({"model": MODEL, "prompt": "x", "think": "deep"}, 400, "invalid think value"),
        ({"model": MODEL, "prompt": "x", "format": "yaml"}, 400, "invalid format"),
        ({"model": MODEL, "prompt": "x", "top_logprobs": 21}, 400, "top_logprobs must be between 0 and 20"),
        ({"model": MODEL, "prompt": "x", "options": {"temperature": -1}}, 400, 'option "temperature" must be'),
        ({"model": MODEL, "prompt": "x", "options": {"stop": "x"}}, 400, 'option "stop" must be'),
        ({"model": MODEL, "prompt": 5}, 400, "prompt"),
    ],
)
def test_errors(client: TestClient, body: dict[str, Any], status: int, message: str) -> None:
    r = client.post("/api/generate", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert message in r.json()["error"]


def test_bad_json_and_empty_body(client: TestClient) -> None:
    r = client.post("/api/generate", content=b"{nope")
    assert r.status_code == 400 and "invalid" in r.json()["error"].lower()
    r = client.post("/api/generate", content=b"")
    assert r.status_code == 400 and r.json()["error"] == "missing request body"


def test_think_false_and_empty_images_are_fine(client: TestClient) -> None:
    r = client.post(
        "/api/generate", json={"model": MODEL, "prompt": "x", "think": False, "images": [], "stream": False}
    )
    assert r.status_code == 200


def test_error_mid_stream_is_one_error_line(client_for: Any) -> None:
    engine = FakeEngine(script=["a", "b", "c"], fail_after=1)
    r = client_for(engine).post("/api/generate", json={"model": MODEL, "prompt": "x"})
    assert r.status_code == 200
    objs = lines(r.text)
    assert objs[0]["response"] == "a" and objs[-1] == {"error": "scripted failure"}


def test_error_in_non_stream_keeps_its_status(client_for: Any) -> None:
    engine = FakeEngine(script=["a", "b"], fail_after=1)
    r = client_for(engine).post("/api/generate", json={"model": MODEL, "prompt": "x", "stream": False})
    assert r.status_code == 500 and r.json() == {"error": "scripted failure"}


def test_wrong_method_is_405_text(client: TestClient) -> None:
    r = client.get("/api/generate")
    assert r.status_code == 405 and r.text == "405 method not allowed"
