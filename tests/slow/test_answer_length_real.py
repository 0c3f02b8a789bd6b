"""A bound on answer length for clients that send none (Open WebUI sends no num_predict): the server default
HUGLLAMA_DEFAULT_NUM_PREDICT, an alias's num_predict over it, the request's over both, -1 lifting it; `length`
when reached, on both protocols, with the real model."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.helpers.prompts import FRANCE
from tests.slow.conftest import MODEL, ServerProcess, running_server

pytestmark = pytest.mark.slow

STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]
DEFAULT = 6


def chat(url: str, model: str, messages: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    body = {"model": model, "messages": messages, "stream": False, "options": {"temperature": 0, **options}}
    r = httpx.post(url + "/api/chat", json=body, timeout=600)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


@pytest.fixture(scope="module")
def bounded(shared_snapshots: Any) -> Any:
    with running_server(shared_snapshots, {"HUGLLAMA_DEFAULT_NUM_PREDICT": str(DEFAULT)}) as server:
        yield server


def test_server_default_bounds_an_answer_with_no_limit(bounded: ServerProcess) -> None:
    r = chat(bounded.url, MODEL, STORY)
    assert (r["done_reason"], r["eval_count"]) == ("length", DEFAULT)
    oa = openai.OpenAI(base_url=bounded.url + "/v1", api_key="x", max_retries=0)
    c = oa.chat.completions.create(model=MODEL, messages=STORY, temperature=0)  # type: ignore[arg-type]
    assert c.choices[0].finish_reason == "length" and c.usage is not None and c.usage.completion_tokens == DEFAULT


def test_request_and_alias_limits_win_and_minus_one_lifts_it(bounded: ServerProcess) -> None:
    assert chat(bounded.url, MODEL, STORY, num_predict=9)["eval_count"] == 9
    # -1 = up to the context: the 8-token greedy answer ends by itself, past the server's 6.
    free = chat(bounded.url, MODEL, FRANCE, num_predict=-1)
    assert free["done_reason"] == "stop" and "Paris" in free["message"]["content"] and free["eval_count"] > DEFAULT
    created = httpx.post(
        bounded.url + "/api/create",
        json={"model": "short", "from": MODEL, "parameters": {"num_predict": 3, "temperature": 0}},
        timeout=60,
    )
    assert created.status_code == 200, created.text
    shown = httpx.post(bounded.url + "/api/show", json={"model": "short"}, timeout=60).json()
    assert "num_predict" in shown["parameters"]
    r = chat(bounded.url, "short", STORY)
    assert (r["done_reason"], r["eval_count"]) == ("length", 3)
    assert chat(bounded.url, "short", STORY, num_predict=5)["eval_count"] == 5
