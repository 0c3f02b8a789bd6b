"""The prefix cache on the real model: later turns and warmed prompts reuse cached KV, and the answers are the
same as computed from scratch by a server without a prefix cache (greedy)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.slow.conftest import running_server

pytestmark = pytest.mark.slow

MODEL = "smollm2:135m"
TOKENS = 16


def _system() -> dict[str, str]:
    # Unique per test run, so nothing from earlier tests is cached for it.
    tag = uuid.uuid4().hex[:8]
    text = (
        f"You are a terse assistant for project {tag}. Answer in one sentence. Never use lists. Prefer concrete "
        "facts over opinions, name units when you give numbers, and say so plainly when you do not know."
    )
    return {"role": "system", "content": text}


def _chat(http: httpx.Client, messages: list[dict[str, str]]) -> tuple[str, int, int]:
    r = http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": messages, "max_tokens": TOKENS, "temperature": 0},
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    usage = body["usage"]
    return (
        body["choices"][0]["message"]["content"],
        usage["prompt_tokens"],
        usage["prompt_tokens_details"]["cached_tokens"],
    )


def _prefill_passes(http: httpx.Client) -> float:
    for line in http.get("/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        labels = name.removeprefix("hugllama_forward_passes_total{")
        if labels != name and 'kind="prefill"' in labels and f'model="{MODEL}"' in labels:
            return float(value)
    return 0.0


@pytest.fixture(scope="module")
def http(real_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=real_server, timeout=600) as client:
        yield client


@pytest.fixture(scope="module")
def uncached(shared_snapshots: Path) -> Iterator[httpx.Client]:
    with (
        running_server(shared_snapshots, {"HUGLLAMA_PREFIX_CACHE_BYTES": "0"}) as server,
        httpx.Client(base_url=server.url, timeout=600) as client,
    ):
        yield client


def test_second_turn_reuses_the_first_and_answers_the_same(http: httpx.Client, uncached: httpx.Client) -> None:
    system = _system()
    turn1 = [system, {"role": "user", "content": "What is the boiling point of water at sea level?"}]
    answer1, prompt1, cached1 = _chat(http, turn1)
    assert cached1 == 0
    turn2 = [*turn1, {"role": "assistant", "content": answer1}, {"role": "user", "content": "And in Fahrenheit?"}]
    answer2, prompt2, cached2 = _chat(http, turn2)
    # The first turn's prompt is cached. Its reply is not: the embedded model's decode steps are 4-bit, so the
    # reply's keys and values differ from what a prefill computes, and reusing them would change the answer.
    assert prompt1 - 4 <= cached2 < prompt1 + 4, (cached2, prompt1)
    assert cached2 < prompt2
    assert (answer1, answer2) == (_chat(uncached, turn1)[0], _chat(uncached, turn2)[0])


def test_warmed_prefix_serves_concurrent_newcomers_together(http: httpx.Client, uncached: httpx.Client) -> None:
    system = _system()
    r = http.post("/api/v1/cache/warm", json={"model": MODEL, "messages": [system]})
    assert r.status_code == 200, r.text
    warmed = r.json()["prompt_tokens"]
    assert warmed > 30
    questions = ["Why is the sky blue?", "How far is the Moon?", "What is iron made of?", "Who wrote Hamlet?"]
    prompts = [[system, {"role": "user", "content": q}] for q in questions]
    before = _prefill_passes(http)
    with ThreadPoolExecutor(len(prompts)) as pool:
        results = list(pool.map(lambda p: _chat(http, p), prompts))
    # Arriving together, they share prefill passes (the first may start alone while the others arrive).
    assert 1 <= _prefill_passes(http) - before < len(prompts)
    for _, _, cached in results:
        assert cached >= warmed - 8, (cached, warmed)  # the system turn, up to the generation-prompt tokens
    assert [answer for answer, _, _ in results] == [_chat(uncached, p)[0] for p in prompts]
