"""Structured output on the real model: Ollama `format` ("json" and a JSON schema) and OpenAI `response_format`
(json_object, json_schema strict and not) give valid, schema-valid JSON on every one of a batch of varied prompts
decoded together, streamed or not; bad schemas are refused with a 400."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jsonschema
import ollama
import openai
import pytest

pytestmark = pytest.mark.slow

MODEL = "smollm2:135m"
# Varied on purpose: questions, instructions, code, nonsense, another language, an empty-ish ask.
PROMPTS = [
    "Describe a cat as JSON.",
    "What is the capital of France?",
    "Give me three colors.",
    "Write a Python function that adds two numbers.",
    "asdf qwer zxcv",
    "Quelle est la couleur du ciel ?",
    "Tell me about yourself in JSON with your name and age.",
    "?",
]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "likes_cats": {"type": "boolean"},
        "color": {"enum": ["red", "green", "blue"]},
    },
    "required": ["name", "age", "likes_cats", "color"],
    "additionalProperties": False,
}
# Long enough for PERSON with a short name; the engine also closes the JSON when the budget runs out.
TOKENS = 40


def parallel(calls: list[Callable[[], Any]]) -> list[Any]:
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(c) for c in calls]
        return [f.result() for f in futures]


def user(prompt: str) -> Any:
    return [{"role": "user", "content": prompt}]


def parsed(texts: list[str]) -> list[Any]:
    out = []
    for text in texts:
        try:
            out.append(json.loads(text))
        except json.JSONDecodeError as e:
            raise AssertionError(f"not valid JSON ({e}): {text!r}") from None
    return out


def test_ollama_format_json_and_schema_on_a_concurrent_batch(oc: ollama.Client) -> None:
    opts = {"temperature": 0.7, "seed": 5, "num_predict": TOKENS}

    def one(prompt: str, fmt: Any) -> str:
        return oc.chat(model=MODEL, messages=user(prompt), format=fmt, options=opts).message.content or ""

    def gen(prompt: str) -> str:
        return oc.generate(model=MODEL, prompt=prompt, format=PERSON, options=opts).response or ""

    calls: list[Callable[[], Any]] = [lambda p=p: one(p, "json") for p in PROMPTS]  # type: ignore[misc]
    calls += [lambda p=p: one(p, PERSON) for p in PROMPTS]  # type: ignore[misc]
    calls += [lambda: gen(PROMPTS[0]), lambda: gen(PROMPTS[4])]
    texts = parallel(calls)
    n = len(PROMPTS)
    assert all(isinstance(v, dict) for v in parsed(texts[:n])), "JSON mode is a JSON object"
    for value in parsed(texts[n:]):
        jsonschema.validate(value, PERSON)


def test_openai_response_format_on_a_concurrent_batch(oa: openai.OpenAI) -> None:
    def one(prompt: str, response_format: Any) -> str:
        r = oa.chat.completions.create(
            model=MODEL, messages=user(prompt), temperature=0.7, seed=9, max_tokens=TOKENS,
            response_format=response_format,
        )  # fmt: skip
        return r.choices[0].message.content or ""

    modes: list[Any] = [
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
        {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": False}},
    ]
    calls: list[Callable[[], Any]] = [lambda p=p, m=m: one(p, m) for m in modes for p in PROMPTS]  # type: ignore[misc]
    texts = parallel(calls)
    n = len(PROMPTS)
    assert all(isinstance(v, dict) for v in parsed(texts[:n]))
    for value in parsed(texts[n:]):
        jsonschema.validate(value, PERSON)


def test_schema_with_nesting_arrays_and_a_completion(http: httpx.Client) -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 16},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "minItems": 1, "maxItems": 3},
            "where": {
                "type": "object",
                "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                "required": ["lat", "lon"],
            },
        },
        "required": ["city", "tags", "where"],
    }

    def comp() -> Any:
        r = http.post(
            "/v1/completions",
            json={"model": MODEL, "prompt": "The capital of France as JSON:", "max_tokens": 48, "temperature": 0,
                  "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"]

    def vllm() -> Any:
        r = http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": user("Where is Paris?"), "max_tokens": 48, "temperature": 0,
                  "guided_json": schema},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]

    for value in parsed(parallel([comp, vllm])):
        jsonschema.validate(value, schema)


def test_streamed_structured_output_is_valid_json(http: httpx.Client, oa: openai.OpenAI) -> None:
    def ollama_stream() -> str:
        body = {"model": MODEL, "messages": user("Describe a dog."), "format": PERSON,
                "options": {"temperature": 0, "num_predict": TOKENS}}  # fmt: skip
        pieces = []
        with http.stream("POST", "/api/chat", json=body) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.strip():
                    pieces.append(json.loads(line)["message"]["content"])
        return "".join(pieces)

    def openai_stream() -> str:
        stream = oa.chat.completions.create(
            model=MODEL, messages=user("Describe a dog."), temperature=0, max_tokens=TOKENS, stream=True,
            response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}},
        )  # fmt: skip
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    a, b = parallel([ollama_stream, openai_stream])
    for value in parsed([a, b]):
        jsonschema.validate(value, PERSON)
    assert a == b  # same constraint, same greedy decode, on both protocols


def test_a_budget_too_small_still_closes_the_json(oc: ollama.Client) -> None:
    r = oc.chat(
        model=MODEL, messages=user("Describe a cat."), format="json", options={"temperature": 0, "num_predict": 6}
    )
    assert isinstance(json.loads(r.message.content or ""), dict) and (r.eval_count or 0) <= 6


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", {"messages": user("hi"), "format": {"type": "nonsense"}}),
        ("/api/generate", {"prompt": "hi", "format": {"properties": {"a": {"type": 5}}}}),
        ("/api/generate", {"prompt": "hi", "format": "yaml"}),
        ("/v1/chat/completions", {"messages": user("hi"), "response_format": {"type": "json_schema",
                                  "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}}),
        ("/v1/chat/completions", {"messages": user("hi"), "response_format": {"type": "json_schema",
                                  "json_schema": {"name": "x"}}}),
        ("/v1/chat/completions", {"messages": user("hi"), "response_format": {"type": "json_schema"}}),
        ("/v1/chat/completions", {"messages": user("hi"), "response_format": {"type": "xml"}}),
        ("/v1/completions", {"prompt": "hi", "response_format": {"type": "json_schema",
                             "json_schema": {"name": "x", "schema": {"required": "a"}}}}),
    ],
)  # fmt: skip
def test_invalid_formats_are_400(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    r = http.post(path, json={"model": MODEL, "stream": False, **body})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    message = err if isinstance(err, str) else err["message"]
    assert "format" in message or "schema" in message or "response_format" in message, message
