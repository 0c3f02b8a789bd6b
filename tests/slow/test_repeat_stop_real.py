"""HUGLLAMA_STOP_REPEATS_CHARS with the real model: a verbatim loop ends early (what it did emit is what the
unguarded server emits too), and answers that do not loop are the same, token for token."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.slow.conftest import MODEL

pytestmark = pytest.mark.slow

LOOP = "Laugh: say ha ha ha without stopping."
PLAIN = [
    "What is the capital of France?",
    "Write a short story about a dragon who learns to bake bread.",
    "List five fruits, one per line.",
]


def answer(url: str, content: str, num_predict: int) -> dict[str, Any]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "stream": False,
        "options": {"temperature": 0, "num_predict": num_predict},
    }
    r = httpx.post(url + "/api/chat", json=body, timeout=600)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def test_loops_end_and_other_answers_do_not_change(real_server: str, server_factory: Any) -> None:
    guarded = server_factory({"HUGLLAMA_STOP_REPEATS_CHARS": "200"}).url
    free = answer(real_server, LOOP, 200)
    stopped = answer(guarded, LOOP, 200)
    assert free["eval_count"] > stopped["eval_count"] + 50, (free, stopped)
    assert stopped["done_reason"] == "stop"
    assert free["message"]["content"].startswith(stopped["message"]["content"])
    assert stopped["message"]["content"].count("ha ha ha ha") >= 10
    for question in PLAIN:
        a, b = answer(real_server, question, 64), answer(guarded, question, 64)
        assert (a["message"]["content"], a["eval_count"], a["done_reason"]) == (
            b["message"]["content"],
            b["eval_count"],
            b["done_reason"],
        ), question
