"""Continuous batching on the real model: a request's output does not depend on what else is in the batch.

Each request is first run alone, then all of them together (arriving staggered, so newcomers join a batch that is
already decoding); every one must reproduce its alone result exactly: seeded sampling, greedy decoding, and rows
with penalties, biases, stops and grammars side by side.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

MODEL = "smollm2:135m"
TOKENS = 12
PROMPTS = [
    "Tell me a story.",
    "What is the capital of France?",
    "Write a haiku about the sea, please, with a title and a short explanation of the imagery you chose.",
    "Name three fruits.",
    "Why is the sky blue?",
    "hi",
]


@pytest.fixture(scope="module")
def http(real_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=real_server, timeout=600) as client:
        yield client


Request = Callable[[httpx.Client], str]


def ollama_chat(prompt: str, format: Any = None, **options: Any) -> Request:
    def run(http: httpx.Client) -> str:
        body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": False,
                "format": format, "options": {"num_predict": TOKENS, **options}}  # fmt: skip
        r = http.post("/api/chat", json=body)
        assert r.status_code == 200, r.text
        return str(r.json()["message"]["content"])

    return run


def ollama_generate(prompt: str, **options: Any) -> Request:
    def run(http: httpx.Client) -> str:
        body = {"model": MODEL, "prompt": prompt, "stream": False, "options": {"num_predict": TOKENS, **options}}
        r = http.post("/api/generate", json=body)
        assert r.status_code == 200, r.text
        return str(r.json()["response"])

    return run


def openai_chat(prompt: str, **fields: Any) -> Request:
    def run(http: httpx.Client) -> str:
        body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": TOKENS, **fields}
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        return str(r.json()["choices"][0]["message"]["content"])

    return run


def alone_then_together(http: httpx.Client, requests: list[Request], stagger: float = 0.15) -> None:
    alone = [run(http) for run in requests]

    def delayed(i: int) -> str:
        time.sleep(i * stagger)
        return requests[i](http)

    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(delayed, range(len(requests))))
    mismatches = [(i, a, b) for i, (a, b) in enumerate(zip(alone, together, strict=True)) if a != b]
    assert not mismatches, f"batched output differs from alone: {mismatches}"


def test_twelve_seeded_requests_in_flight_each_reproduce_their_alone_result(http: httpx.Client) -> None:
    requests: list[Request] = []
    for i in range(12):
        prompt = PROMPTS[i % len(PROMPTS)]
        seed = 1000 + 37 * i
        if i % 3 == 0:
            requests.append(ollama_chat(prompt, temperature=1.0, seed=seed))
        elif i % 3 == 1:
            requests.append(openai_chat(prompt, temperature=1.0, top_p=0.95, seed=seed))
        else:
            requests.append(ollama_generate(prompt, temperature=0.9, top_k=20, typical_p=0.95, seed=seed))
    alone_then_together(http, requests)


def test_greedy_batched_equals_alone(http: httpx.Client) -> None:
    requests: list[Request] = [ollama_chat(p, temperature=0) for p in PROMPTS]
    requests += [openai_chat(p, temperature=0) for p in PROMPTS[:2]]
    alone_then_together(http, requests, stagger=0.1)


def test_rows_with_different_controls_do_not_interfere(http: httpx.Client) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 20}}, "required": ["answer"]}
    requests: list[Request] = [
        ollama_chat(PROMPTS[1], temperature=0),
        ollama_chat(PROMPTS[1], temperature=0, repeat_penalty=1.5),
        openai_chat(PROMPTS[1], temperature=0, frequency_penalty=1.5, presence_penalty=1.0),
        openai_chat(PROMPTS[1], temperature=0, logit_bias={"7042": -100}),
        ollama_chat(PROMPTS[1], temperature=0, stop=["is"]),
        ollama_chat(PROMPTS[1], temperature=0, format="json"),
        openai_chat(PROMPTS[1], temperature=0, response_format={"type": "json_schema",
                                                                "json_schema": {"name": "a", "schema": schema}}),
        openai_chat(PROMPTS[0], temperature=1.3, seed=5, min_p=0.05, min_tokens=TOKENS),
        ollama_chat(PROMPTS[0], temperature=0.7, seed=6, top_k=5, num_ctx=64),
    ]  # fmt: skip
    alone_then_together(http, requests, stagger=0.1)
