"""HUGLLAMA_TOOLS_FALLBACK with the real model, whose template renders no tools: `prompt` (default) teaches the
tools in a system prompt, `ignore` leaves them out (Open WebUI sends its ~36 built-in tools with every browser chat),
`reject` answers Ollama's 400. A forced call (tool_choice required) is never affected."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers.prompts import FRANCE
from tests.slow.conftest import MODEL, ServerProcess

pytestmark = pytest.mark.slow

# Many tools, like a UI's built-in set: enough to crowd a small model's context when prompted.
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": f"tool_{i}",
            "description": f"Does thing number {i} with the given query and options.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
                "required": ["query"],
            },
        },
    }
    for i in range(12)
]


def chat(url: str, **extra: Any) -> httpx.Response:
    body = {"model": MODEL, "messages": FRANCE, "stream": False, "options": {"temperature": 0, "num_predict": 24}}
    return httpx.post(url + "/api/chat", json={**body, **extra}, timeout=600)


def test_prompt_is_the_default(real_server: str) -> None:
    plain = chat(real_server).json()
    prompted = chat(real_server, tools=TOOLS).json()
    assert prompted["prompt_eval_count"] > plain["prompt_eval_count"] + 12 * 20


def test_ignore_leaves_tools_out(server_factory: Any) -> None:
    server: ServerProcess = server_factory({"HUGLLAMA_TOOLS_FALLBACK": "ignore"})
    plain = chat(server.url).json()
    r = chat(server.url, tools=TOOLS)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["prompt_eval_count"] == plain["prompt_eval_count"]
    assert "Paris" in out["message"]["content"] and not out["message"].get("tool_calls")
    assert "cannot render tools: left out 12" in server.log()
    # A forced call still constrains decoding to the tools' schemas.
    forced = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": FRANCE, "tools": TOOLS[:2], "tool_choice": "required", "temperature": 0},
        timeout=600,
    ).json()
    assert forced["choices"][0]["message"]["tool_calls"][0]["function"]["name"] in ("tool_0", "tool_1")


def test_reject_is_ollamas_400(server_factory: Any) -> None:
    server: ServerProcess = server_factory({"HUGLLAMA_TOOLS_FALLBACK": "reject"})
    r = chat(server.url, tools=TOOLS)
    assert r.status_code == 400 and r.json()["error"] == f"{MODEL} does not support tools"
    assert chat(server.url).status_code == 200
