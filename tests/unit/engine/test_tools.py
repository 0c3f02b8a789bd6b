"""Tool calling: validation, the fallback prompt, forced-call schemas and parsing calls out of model text."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from app.engine.tools import (
    call_schema,
    content_holdback,
    new_call_id,
    parse_forced_call,
    parse_tool_calls,
    tool_prompt,
    validate_tools,
)
from app.engine.types import ToolCall
from app.errors import GenerationFailed, InvalidRequest

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
CLOCK: dict[str, Any] = {"type": "function", "function": {"name": "clock.now"}}
TOOLS = [WEATHER, CLOCK]


def _tool(**fn: Any) -> dict[str, Any]:
    return {"type": "function", "function": fn}


# ---------------------------------------------------------------- validate_tools


@pytest.mark.parametrize(
    ("tools", "choice", "expected"),
    [
        (TOOLS, None, "auto"),
        (TOOLS, "", "auto"),
        (TOOLS, "auto", "auto"),
        (TOOLS, "none", "none"),
        (TOOLS, "required", "required"),
        (TOOLS, "get_weather", "get_weather"),
        (TOOLS, {"type": "function", "function": {"name": "clock.now"}}, "clock.now"),
        (TOOLS, {"type": "function", "name": "clock.now"}, "clock.now"),
        ([], None, "none"),
        ([], "auto", "none"),
        ([], "none", "none"),
        ([{"function": {"name": "no_type_given"}}], None, "auto"),
        ([_tool(name="a-b.c_9", parameters={})], "a-b.c_9", "a-b.c_9"),
    ],
)
def test_validate_tools_ok(tools: list[dict[str, Any]], choice: Any, expected: str) -> None:
    assert validate_tools(tools, choice) == expected


@pytest.mark.parametrize(
    ("tools", "choice", "param", "needle"),
    [
        ("get_weather", None, "tools", "list"),
        (["x"], None, "tools[0]", "tools[0] must be an object"),
        ([{"type": "retrieval", "function": {"name": "a"}}], None, "tools[0].type", "'function'"),
        ([{"type": "function"}], None, "tools[0].function", "tools[0].function"),
        ([_tool(name="")], None, "tools[0].function.name", "non-empty"),
        ([_tool(name=3)], None, "tools[0].function.name", "non-empty"),
        ([_tool(name="has space")], None, "tools[0].function.name", "'has space'"),
        ([_tool(name="x" * 65)], None, "tools[0].function.name", "1-64"),
        ([WEATHER, WEATHER], None, "tools", "duplicate"),
        ([_tool(name="a", description=5)], None, "tools[0].function.description", "description"),
        ([_tool(name="a", parameters="object")], None, "tools[0].function.parameters", "parameters"),
        (
            [_tool(name="a", parameters={"type": "strin"})],
            None,
            "tools[0].function.parameters",
            "tools[0].function.parameters",
        ),
        (
            [CLOCK, _tool(name="b", parameters={"type": "object", "required": "x"})],
            None,
            "tools[1].function.parameters",
            "tools[1]",
        ),
        (TOOLS, "get_time", "tool_choice", "'get_time'"),
        (TOOLS, {"type": "function", "function": {"name": "nope"}}, "tool_choice", "'nope'"),
        (TOOLS, {"type": "function", "function": {}}, "tool_choice", "tool_choice must be"),
        (TOOLS, {"type": "code"}, "tool_choice", "tool_choice must be"),
        (TOOLS, 7, "tool_choice", "string or an object"),
        ([], "required", "tool_choice", "at least one tool"),
        ([], "get_weather", "tool_choice", "at least one tool"),
        ([], {"type": "function", "function": {"name": "get_weather"}}, "tool_choice", "at least one tool"),
    ],
)
def test_validate_tools_errors(tools: Any, choice: Any, param: str, needle: str) -> None:
    with pytest.raises(InvalidRequest) as ei:
        validate_tools(tools, choice)
    assert ei.value.param == param
    assert needle in ei.value.message


# ---------------------------------------------------------------- prompt and schema


def test_tool_prompt_lists_every_function_as_json() -> None:
    text = tool_prompt(TOOLS)
    assert "<tool_call>" in text and "</tool_call>" in text
    listed = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert [e["name"] for e in listed] == ["get_weather", "clock.now"]
    assert listed[0]["parameters"] == WEATHER["function"]["parameters"]
    assert listed[0]["description"] == "Current weather for a city"
    assert listed[1]["parameters"]["type"] == "object"
    assert len(text) < 1000


def test_call_schema_named() -> None:
    schema = call_schema(TOOLS, "get_weather")
    assert schema == {
        "type": "object",
        "properties": {"name": {"const": "get_weather"}, "arguments": WEATHER["function"]["parameters"]},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def test_call_schema_without_parameters_allows_only_empty_arguments() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = call_schema(TOOLS, "clock.now")
    jsonschema.validate({"name": "clock.now", "arguments": {}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "clock.now", "arguments": {"tz": "UTC"}}, schema)


@pytest.mark.parametrize(
    ("doc", "valid"),
    [
        ({"name": "get_weather", "arguments": {"city": "Oslo"}}, True),
        ({"name": "clock.now", "arguments": {}}, True),
        ({"name": "get_weather", "arguments": {}}, False),
        ({"name": "other", "arguments": {}}, False),
        ({"name": "clock.now"}, False),
        ({"name": "clock.now", "arguments": {}, "extra": 1}, False),
    ],
)
def test_call_schema_required_is_any_tool(doc: dict[str, Any], valid: bool) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = call_schema(TOOLS, None)
    if valid:
        jsonschema.validate(doc, schema)
    else:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, schema)


def test_call_schema_errors() -> None:
    with pytest.raises(InvalidRequest) as ei:
        call_schema(TOOLS, "missing")
    assert ei.value.param == "tool_choice"
    with pytest.raises(InvalidRequest):
        call_schema([], None)


def test_call_schema_compiles_and_forces_a_call() -> None:
    # The schema must be something xgrammar accepts (no tokenizer needed for the grammar itself).
    xgr = pytest.importorskip("xgrammar")
    for name in ("get_weather", None):
        grammar = xgr.Grammar.from_json_schema(json.dumps(call_schema(TOOLS, name)), any_whitespace=False)
        assert "get_weather" in str(grammar)


# ---------------------------------------------------------------- parsing


def test_new_call_id() -> None:
    ids = {new_call_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"call_[A-Za-z0-9]{24}", i) for i in ids)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"name": "get_weather", "arguments": {"city": "Oslo"}}', ("get_weather", {"city": "Oslo"})),
        ('{"name": "clock.now", "arguments": {}}', ("clock.now", {})),
        ('{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}', ("get_weather", {"city": "Rome"})),
    ],
)
def test_parse_forced_call(text: str, expected: tuple[str, dict[str, Any]]) -> None:
    call = parse_forced_call(text)
    assert (call.name, call.arguments) == expected
    assert call.id.startswith("call_")


@pytest.mark.parametrize("text", ['{"name": "get_weather", "arguments": {"ci', "", '{"arguments": {}}', "[]"])
def test_parse_forced_call_errors(text: str) -> None:
    with pytest.raises(GenerationFailed):
        parse_forced_call(text)


def _calls(calls: list[ToolCall]) -> list[tuple[str, dict[str, Any]]]:
    return [(c.name, c.arguments) for c in calls]


OSLO = ("get_weather", {"city": "Oslo"})


@pytest.mark.parametrize(
    ("text", "content", "calls"),
    [
        # Plain answers.
        ("It is sunny.", "It is sunny.", []),
        ("", "", []),
        # <tool_call> blocks (Hermes / Qwen style), with or without newlines, several, with prose around.
        ('<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>', "", [OSLO]),
        ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>', "", [OSLO]),
        (
            'Let me check.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>',
            "Let me check.",
            [OSLO],
        ),
        (
            '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>\n'
            '<tool_call>{"name": "clock.now", "arguments": {}}</tool_call>',
            "",
            [OSLO, ("clock.now", {})],
        ),
        # The model stopped before the closing tag.
        ('<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}', "", [OSLO]),
        # "parameters" instead of "arguments", and arguments as a JSON string.
        ('<tool_call>{"name": "get_weather", "parameters": {"city": "Oslo"}}</tool_call>', "", [OSLO]),
        ('<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}</tool_call>', "", [OSLO]),
        # Unknown tools and broken JSON stay as content.
        (
            '<tool_call>{"name": "launch_rockets", "arguments": {}}</tool_call>',
            '<tool_call>{"name": "launch_rockets", "arguments": {}}</tool_call>',
            [],
        ),
        ("<tool_call>{not json}</tool_call>", "<tool_call>{not json}</tool_call>", []),
        (
            '<tool_call>{"name": "launch_rockets", "arguments": {}}</tool_call>'
            '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>',
            '<tool_call>{"name": "launch_rockets", "arguments": {}}</tool_call>',
            [OSLO],
        ),
        ('<tool_call>{"name": "get_weather", "arguments": "not json"}</tool_call>', None, []),
        ('<tool_call>{"name": "get_weather", "arguments": [1]}</tool_call>', None, []),
        # A bare JSON object (or a list of them) as the whole answer.
        ('{"name": "get_weather", "arguments": {"city": "Oslo"}}', "", [OSLO]),
        ('  {"name": "get_weather", "parameters": {"city": "Oslo"}}\n', "", [OSLO]),
        (
            '[{"name": "get_weather", "arguments": {"city": "Oslo"}}, {"name": "clock.now"}]',
            "",
            [OSLO, ("clock.now", {})],
        ),
        ('```json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```', "", [OSLO]),
        ('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}', "", [OSLO]),
        ('{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}', "", [OSLO]),
        ('[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Oslo"}}]', "", [OSLO]),
        # JSON that is not a call, or names an unknown tool, is just an answer.
        ('{"city": "Oslo"}', '{"city": "Oslo"}', []),
        ('{"name": "Bob", "age": 3}', '{"name": "Bob", "age": 3}', []),
        ('{"name": "launch_rockets", "arguments": {}}', '{"name": "launch_rockets", "arguments": {}}', []),
        (
            'The call is {"name": "get_weather", "arguments": {"city": "Oslo"}}',
            'The call is {"name": "get_weather", "arguments": {"city": "Oslo"}}',
            [],
        ),
    ],
)
def test_parse_tool_calls(text: str, content: str | None, calls: list[tuple[str, dict[str, Any]]]) -> None:
    got_content, got_calls = parse_tool_calls(text, TOOLS)
    assert _calls(got_calls) == calls
    assert got_content == (text if content is None else content)
    assert all(c.id.startswith("call_") for c in got_calls)
    assert len({c.id for c in got_calls}) == len(got_calls)


def test_parse_tool_calls_without_tools_is_content() -> None:
    text = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    assert parse_tool_calls(text, []) == (text, [])


@pytest.mark.parametrize(
    ("text", "safe"),
    [
        ("Hello there", 11),
        ("Hello <tool_call>{", 6),
        ("Hello <tool", 6),
        ("Hello <", 6),
        ("Hello <b>", 9),
        ('{"name"', 0),
        ("  [", 0),
        ("``", 0),
        ("<|python", 0),
        ("", 0),
        ("   ", 0),
    ],
)
def test_content_holdback(text: str, safe: int) -> None:
    assert content_holdback(text) == safe
