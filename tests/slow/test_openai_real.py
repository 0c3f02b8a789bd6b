"""The OpenAI surface on the real engine (embedded SmolLM2-135M), driven by the official `openai` client."""

from __future__ import annotations

import json
import math
from typing import Any

import openai
import pytest

from tests.helpers.prompts import FRANCE as Q

pytestmark = pytest.mark.slow

MODEL = "smollm2:135m"


@pytest.fixture(scope="module")
def oa(real_server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=real_server + "/v1", api_key="unused", timeout=300, max_retries=0)


def test_paris_and_stream_equals_non_stream(oa: openai.OpenAI) -> None:
    r = oa.chat.completions.create(model=MODEL, messages=Q, temperature=0, max_tokens=40)
    text = r.choices[0].message.content or ""
    assert "Paris" in text
    assert r.usage is not None and r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    chunks = list(
        oa.chat.completions.create(
            model=MODEL,
            messages=Q,
            temperature=0,
            max_tokens=40,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_stop_and_max_tokens(oa: openai.OpenAI) -> None:
    r = oa.chat.completions.create(model=MODEL, messages=Q, temperature=0, stop=["Paris"])
    assert "Paris" not in (r.choices[0].message.content or "") and r.choices[0].finish_reason == "stop"
    story: Any = [{"role": "user", "content": "Write a long story about a dragon."}]
    r = oa.chat.completions.create(model=MODEL, messages=story, max_completion_tokens=5)
    assert r.usage is not None and r.usage.completion_tokens <= 5 and r.choices[0].finish_reason == "length"


def test_json_schema_output_is_valid(oa: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    }
    r = oa.chat.completions.create(
        model=MODEL,
        messages=Q,
        temperature=0,
        max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    )
    data = json.loads(r.choices[0].message.content or "")
    assert isinstance(data, dict) and set(data) == {"city"} and isinstance(data["city"], str)


def test_seeded_n_choices_reproduce(oa: openai.OpenAI) -> None:
    story: Any = [{"role": "user", "content": "Tell me a story."}]
    kw: dict[str, Any] = {"model": MODEL, "messages": story, "temperature": 1.0, "max_tokens": 12, "seed": 1234, "n": 2}
    a = oa.chat.completions.create(**kw)
    b = oa.chat.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert a.usage is not None and 2 <= a.usage.completion_tokens <= 24  # summed over both choices


def test_legacy_completion_with_logprobs(oa: openai.OpenAI) -> None:
    r = oa.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0, logprobs=3)
    choice = r.choices[0]
    assert choice.text.strip() and r.usage is not None and 0 < r.usage.completion_tokens <= 6
    lp = choice.logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) <= r.usage.completion_tokens
    assert all(v is not None and v <= 0 and math.isfinite(v) for v in lp.token_logprobs)
    assert all(top is not None and 1 <= len(top) <= 4 for top in lp.top_logprobs)
    echoed = oa.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0, echo=True
    )
    assert echoed.choices[0].text == "The capital of France is" + choice.text


def test_chat_logprobs(oa: openai.OpenAI) -> None:
    r = oa.chat.completions.create(
        model=MODEL,
        messages=Q,
        temperature=0,
        max_tokens=5,
        logprobs=True,
        top_logprobs=2,
    )
    content = r.choices[0].logprobs.content if r.choices[0].logprobs else None
    assert content and r.usage is not None and len(content) <= r.usage.completion_tokens
    # Greedy decoding picks the most likely token, so it heads its own top list.
    assert all(t.top_logprobs and t.top_logprobs[0].token == t.token for t in content)
