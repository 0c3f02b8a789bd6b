"""The Ollama surface on the real engine (embedded SmolLM2-135M), driven by the official `ollama` client."""

from __future__ import annotations

import json

import httpx
import ollama
import pytest

from tests.helpers.prompts import FRANCE as Q

pytestmark = pytest.mark.slow

MODEL = "smollm2:135m"


@pytest.fixture(scope="module")
def oc(real_server: str) -> ollama.Client:
    return ollama.Client(host=real_server, timeout=300)


def test_paris_and_stream_equals_non_stream(oc: ollama.Client) -> None:
    opts = {"temperature": 0, "num_predict": 40}
    r = oc.chat(model=MODEL, messages=Q, options=opts)
    assert r.message.role == "assistant" and "Paris" in r.message.content
    assert r.done and r.prompt_eval_count and r.eval_count and r.eval_duration and r.total_duration
    chunks = list(oc.chat(model=MODEL, messages=Q, options=opts, stream=True))
    assert len(chunks) > 2 and chunks[-1].done and not any(c.done for c in chunks[:-1])
    assert "".join(c.message.content or "" for c in chunks) == r.message.content
    assert chunks[-1].eval_count == r.eval_count


def test_generate_stream_equals_non_stream_and_context(oc: ollama.Client) -> None:
    opts = {"temperature": 0, "num_predict": 24}
    whole = oc.generate(model=MODEL, prompt="The capital of France is", options=opts)
    chunks = list(oc.generate(model=MODEL, prompt="The capital of France is", options=opts, stream=True))
    assert "".join(c.response for c in chunks) == whole.response and whole.response.strip()
    assert whole.context and len(whole.context) > (whole.eval_count or 0)
    raw = oc.generate(model=MODEL, prompt="The capital of France is", raw=True, options=opts)
    assert raw.context is None and raw.done


def test_stop_and_num_predict(oc: ollama.Client) -> None:
    r = oc.chat(model=MODEL, messages=Q, options={"temperature": 0, "stop": ["Paris"]})
    assert "Paris" not in r.message.content and r.done_reason == "stop"
    story = oc.generate(model=MODEL, prompt="Write a long story about a dragon.", options={"num_predict": 5})
    assert story.eval_count == 5 and story.done_reason == "length"


def test_json_schema_format_is_valid(oc: ollama.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    }
    r = oc.chat(model=MODEL, messages=Q, format=schema, options={"temperature": 0, "num_predict": 60})
    data = json.loads(r.message.content)
    assert set(data) == {"city"} and isinstance(data["city"], str) and len(data["city"]) <= 20


def test_load_unload_and_ps(real_server: str, oc: ollama.Client) -> None:
    r = httpx.post(real_server + "/api/generate", json={"model": MODEL}, timeout=300)
    assert r.status_code == 200 and r.json()["done_reason"] == "load"
    assert MODEL in [m.model for m in oc.ps().models]
    ps = oc.ps().models[0]
    assert ps.size and ps.context_length and ps.expires_at is not None


def test_alias_applies_system_and_options(oc: ollama.Client) -> None:
    oc.create(
        model="terse-test",
        from_=MODEL,
        system="Always answer with one word.",
        parameters={"num_predict": 3, "temperature": 0},
    )
    try:
        r = oc.generate(model="terse-test", prompt="Tell me about dragons.")
        assert r.eval_count is not None and r.eval_count <= 3
        shown = oc.show("terse-test")
        assert shown.details is not None and shown.details.family
    finally:
        oc.delete("terse-test")
