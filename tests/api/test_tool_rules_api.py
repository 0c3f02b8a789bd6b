"""One bad tool through both protocols: the engine's rule (engine/tools.py) refuses it before the engine is asked,
in each protocol's error shape, naming the JSON path both protocols' clients wrote."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

MODEL = "smollm2:135m"
USER = [{"role": "user", "content": "hi"}]
OK_PARAMS = {"type": "object", "properties": {"city": {"type": "string"}}}


def tool(name: Any, parameters: Any = None) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": name}
    if parameters is not None:
        fn["parameters"] = parameters
    return {"type": "function", "function": fn}


# (tools, the param each protocol names)
CASES = [
    ([tool("get weather")], "tools[0].function.name"),  # passed both converters before, refused later as "tools"
    ([tool("a"), tool("b", {"type": "strin"})], "tools[1].function.parameters"),
    ([tool("a", OK_PARAMS), tool("a")], "tools"),
    ([{"type": "retrieval", "function": {"name": "a"}}], "tools[0].type"),
    ([{"type": "function", "function": {"description": "no name"}}], "tools[0].function.name"),
]


@pytest.mark.parametrize(("tools", "param"), CASES)
def test_both_protocols_refuse_a_bad_tool_naming_its_path(
    client: TestClient, fake_engine: Any, tools: list[dict[str, Any]], param: str
) -> None:
    r = client.post("/api/chat", json={"model": MODEL, "messages": USER, "tools": tools, "stream": False})
    assert r.status_code == 400, r.text
    assert list(r.json()) == ["error"] and param in r.json()["error"]

    r = client.post("/v1/chat/completions", json={"model": MODEL, "messages": USER, "tools": tools})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and param in error["message"]
    assert fake_engine.requests == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [tool("a")], "tool_choice": {"type": "function", "function": {"name": "b"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"functions": [{"name": "a"}], "function_call": {"name": "b"}}, "function_call"),
        ({"function_call": {"name": "b"}}, "function_call"),
    ],
)
def test_openai_tool_choice_is_named_as_sent(client: TestClient, body: dict[str, Any], param: str) -> None:
    r = client.post("/v1/chat/completions", json={"model": MODEL, "messages": USER, **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["message"].startswith(param)


def test_a_good_tool_reaches_the_engine_from_both_protocols(client: TestClient, fake_engine: Any) -> None:
    tools = [tool("get_weather", OK_PARAMS)]
    r = client.post("/api/chat", json={"model": MODEL, "messages": USER, "tools": tools, "stream": False})
    assert r.status_code == 200, r.text
    r = client.post("/v1/chat/completions", json={"model": MODEL, "messages": USER, "tools": tools})
    assert r.status_code == 200, r.text
    assert [req.tools for req in fake_engine.requests] == [tuple(tools), tuple(tools)]
