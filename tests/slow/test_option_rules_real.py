"""One rule, every door, on the real server: a sampling value or a tool the engine refuses is refused by the Ollama API,
the OpenAI API (official clients and raw HTTP), /api/create and the model-config API, each naming the field its own
way; the same value at its edge is accepted and generates."""

from __future__ import annotations

from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.helpers.prompts import FRANCE

pytestmark = pytest.mark.slow

MODEL = "smollm2:135m"


def test_typical_p_zero_is_refused_at_every_door(http: httpx.Client, oc: ollama.Client, oa: openai.OpenAI) -> None:
    # Ollama: it passed Ollama's own range and was refused later by the engine, named `typical_p`.
    r = http.post("/api/chat", json={"model": MODEL, "messages": FRANCE, "stream": False, "options": {"typical_p": 0}})
    assert r.status_code == 400 and r.json() == {"error": 'option "typical_p" must be in (0, 1]'}
    with pytest.raises(ollama.ResponseError) as oe:
        oc.generate(model=MODEL, prompt="Hi", options={"typical_p": 0})
    assert oe.value.status_code == 400 and 'option "typical_p"' in oe.value.error

    # OpenAI: the same range, its own shape, param = the field.
    with pytest.raises(openai.BadRequestError) as be:
        oa.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=2, extra_body={"typical_p": 0})  # type: ignore[arg-type]
    body: Any = be.value.body
    assert body["param"] == "typical_p" and body["type"] == "invalid_request_error"

    # Stored options: an alias (/api/create, Ollama names) and a model's defaults (config API, SamplingParams names).
    r = http.post("/api/create", json={"model": "rules-c", "from": MODEL, "parameters": {"typical_p": 0}})
    assert r.status_code == 400 and r.json()["error"].startswith('option "typical_p"')
    r = http.put("/api/v1/models/config", json={"model": MODEL, "options": {"typical_p": 0}})
    assert r.status_code == 400 and r.json() == {"error": "typical_p must be in (0, 1]"}
    assert http.post("/api/show", json={"model": "rules-c"}).status_code == 404  # nothing was stored


def test_stored_options_follow_the_engine_ranges(http: httpx.Client) -> None:
    # num_keep and repeat_last_n had ranges only for Ollama requests; the config API stored anything.
    for options, field in (({"num_keep": -5}, "num_keep"), ({"repeat_last_n": -9}, "repeat_last_n")):
        r = http.put("/api/v1/models/config", json={"model": MODEL, "options": options})
        assert r.status_code == 400 and r.json()["error"].startswith(f"{field} must be"), r.text
    r = http.put("/api/v1/models/config", json={"model": MODEL, "options": {"temprature": 0}})
    assert r.status_code == 400 and "temprature" in r.json()["error"]


def test_the_edge_value_is_accepted_everywhere_and_generates(http: httpx.Client, oa: openai.OpenAI) -> None:
    name = "rules-edge"
    r = http.post("/api/create", json={"model": name, "from": MODEL, "parameters": {"typical_p": 1}, "stream": False})
    assert r.status_code == 200, r.text
    try:
        options = {"typical_p": 1, "temperature": 0, "num_predict": 8}
        r = http.post("/api/chat", json={"model": name, "messages": FRANCE, "stream": False, "options": options})
        assert r.status_code == 200 and "Paris" in r.json()["message"]["content"], r.text
        answer = oa.chat.completions.create(
            model=name,
            messages=FRANCE,  # type: ignore[arg-type]
            max_tokens=8,
            temperature=0,
            extra_body={"typical_p": 1},
        )
        assert "Paris" in (answer.choices[0].message.content or "")
    finally:
        http.request("DELETE", "/api/delete", json={"model": name})


def test_a_bad_tool_is_named_by_its_path_on_both_protocols(http: httpx.Client, oa: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "get weather", "parameters": {"type": "object"}}}]
    r = http.post("/api/chat", json={"model": MODEL, "messages": FRANCE, "tools": tools, "stream": False})
    assert r.status_code == 400 and "tools[0].function.name" in r.json()["error"]
    with pytest.raises(openai.BadRequestError) as be:
        oa.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=2, tools=tools)  # type: ignore[arg-type]
    body: Any = be.value.body
    assert body["param"] == "tools[0].function.name"
