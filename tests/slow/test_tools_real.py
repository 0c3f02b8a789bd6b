"""Tool calling on the real model: /api/chat (arguments as objects) and /v1/chat/completions (arguments as JSON
strings, finish_reason tool_calls), streamed and not, tool results sent back, every tool_choice, and the 400s."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jsonschema
import ollama
import openai
import pytest

pytestmark = pytest.mark.slow

MODEL = "smollm2:135m"
WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30}},
    "required": ["city"],
}
TIME_PARAMS = {
    "type": "object",
    "properties": {
        "timezone": {"type": "string", "enum": ["UTC", "CET", "PST"]},
        "hour_format": {"type": "integer", "enum": [12, 24]},
    },
    "required": ["timezone", "hour_format"],
    "additionalProperties": False,
}
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": WEATHER_PARAMS,
    },
}
TIME: Any = {
    "type": "function",
    "function": {"name": "get_time", "description": "Get the current time in a timezone", "parameters": TIME_PARAMS},
}
PARAMS = {"get_weather": WEATHER_PARAMS, "get_time": TIME_PARAMS}
ASK: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
TOKENS = 48


def _shot_ollama(city: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": f"What is the weather in {city}?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather",
                                                                          "arguments": {"city": city}}}]},
    ]  # fmt: skip


def _shot_openai(city: str, n: int) -> list[dict[str, Any]]:
    call = {"id": f"call_{n}", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}  # fmt: skip
    return [{"role": "user", "content": f"What is the weather in {city}?"},
            {"role": "assistant", "content": None, "tool_calls": [call]}]  # fmt: skip


# SmolLM2-135M does not call tools by itself; two earlier calls in the history teach it to (tool_choice auto).
OLLAMA_SHOTS = _shot_ollama("London") + _shot_ollama("Berlin")
OPENAI_SHOTS = _shot_openai("London", 1) + _shot_openai("Berlin", 2)


def parallel(*calls: Callable[[], Any]) -> list[Any]:
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(c) for c in calls]
        return [f.result() for f in futures]


def check_args(name: str, arguments: Any) -> dict[str, Any]:
    """OpenAI arguments are a JSON string, Ollama's an object; either way they must fit the function's schema."""
    args = json.loads(arguments) if isinstance(arguments, str) else arguments
    assert isinstance(args, dict), arguments
    jsonschema.validate(args, PARAMS[name])
    return args


def sse(lines: Iterator[str]) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in lines if line.startswith("data: ") and line != "data: [DONE]"]


# --- Ollama -----------------------------------------------------------------------------------------------------


def test_ollama_chat_tool_call_streamed_and_not(http: httpx.Client, oc: ollama.Client) -> None:
    messages = [*OLLAMA_SHOTS, *ASK]
    opts = {"temperature": 0, "num_predict": TOKENS}

    def raw() -> dict[str, Any]:
        r = http.post("/api/chat", json={"model": MODEL, "messages": messages, "tools": [WEATHER, TIME],
                                         "stream": False, "options": opts})  # fmt: skip
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    body, stream = parallel(
        raw, lambda: list(oc.chat(model=MODEL, messages=messages, tools=[WEATHER, TIME], options=opts, stream=True))
    )
    calls = body["message"]["tool_calls"]
    assert len(calls) == 1 and calls[0]["function"]["name"] == "get_weather"
    assert isinstance(calls[0]["function"]["arguments"], dict)  # an object on the Ollama API, not a string
    check_args("get_weather", calls[0]["function"]["arguments"])
    assert body["done"] and body["done_reason"] == "stop" and not body["message"]["content"]
    streamed = [c for chunk in stream for c in (chunk.message.tool_calls or [])]
    assert len(streamed) == 1 and streamed[0].function.name == "get_weather"
    assert dict(streamed[0].function.arguments) == calls[0]["function"]["arguments"]
    assert stream[-1].done and not "".join(c.message.content or "" for c in stream)


def test_ollama_tool_results_round_trip(oc: ollama.Client) -> None:
    def answer(result: str) -> ollama.ChatResponse:
        messages: Any = [
            *ASK,
            {"role": "assistant", "content": "",
             "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": result, "tool_name": "get_weather"},
        ]  # fmt: skip
        return oc.chat(model=MODEL, messages=messages, tools=[WEATHER], options={"temperature": 0, "num_predict": 24})

    sunny, snowy = parallel(lambda: answer("22 degrees and sunny"), lambda: answer("-7 degrees with heavy snow"))
    for r in (sunny, snowy):
        assert (r.message.content or "").strip() and not r.message.tool_calls
    assert sunny.message.content != snowy.message.content, "the answer must depend on the tool result"


def test_ollama_bad_tools_are_400(http: httpx.Client) -> None:
    bad_tools: list[Any] = [
        [{"type": "function", "function": {"description": "no name", "parameters": WEATHER_PARAMS}}],
        [{"type": "function", "function": {"name": "", "parameters": WEATHER_PARAMS}}],
        [{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}],
        [WEATHER, WEATHER],
    ]
    for tools in bad_tools:
        r = http.post("/api/chat", json={"model": MODEL, "messages": ASK, "tools": tools, "stream": False})
        assert r.status_code == 400, (tools, r.text)
        assert "tools" in r.json()["error"] or "function" in r.json()["error"]


# --- OpenAI -----------------------------------------------------------------------------------------------------


def test_openai_required_and_named_calls_fit_the_schema(oa: openai.OpenAI, http: httpx.Client) -> None:
    def create(tool_choice: Any) -> Any:
        return oa.chat.completions.create(
            model=MODEL, messages=ASK, tools=[WEATHER, TIME], tool_choice=tool_choice, temperature=0.8, seed=4,
            max_tokens=TOKENS,
        )  # fmt: skip

    def streamed(tool_choice: Any) -> list[dict[str, Any]]:
        body = {"model": MODEL, "messages": ASK, "tools": [WEATHER, TIME], "tool_choice": tool_choice,
                "temperature": 0, "max_tokens": TOKENS, "stream": True}  # fmt: skip
        with http.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            return sse(r.iter_lines())

    named = {"type": "function", "function": {"name": "get_time"}}
    required, forced, required_stream, named_stream = parallel(
        lambda: create("required"), lambda: create(named), lambda: streamed("required"), lambda: streamed(named)
    )
    for r, want in ((required, None), (forced, "get_time")):
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
        call = choice.message.tool_calls[0]
        assert call.type == "function" and call.id and isinstance(call.function.arguments, str)
        assert want is None or call.function.name == want
        check_args(call.function.name, call.function.arguments)
    for chunks, want in ((required_stream, None), (named_stream, "get_time")):
        deltas = [tc for c in chunks for ch in c["choices"] for tc in (ch["delta"].get("tool_calls") or [])]
        assert deltas and deltas[0]["id"] and deltas[0]["type"] == "function"
        name = "".join(d["function"].get("name") or "" for d in deltas)
        assert want is None or name == want
        check_args(name, "".join(d["function"].get("arguments") or "" for d in deltas))
        reasons = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
        assert reasons == ["tool_calls"]


def test_openai_auto_and_none(oa: openai.OpenAI) -> None:
    messages: Any = [*OPENAI_SHOTS, *ASK]

    def create(tool_choice: Any, stream: bool = False) -> Any:
        kw: Any = {"stream": True} if stream else {}
        return oa.chat.completions.create(
            model=MODEL, messages=messages, tools=[WEATHER, TIME], tool_choice=tool_choice, temperature=0,
            max_tokens=TOKENS, **kw,
        )  # fmt: skip

    auto, none, auto_stream = parallel(
        lambda: create("auto"), lambda: create("none"), lambda: list(create("auto", stream=True))
    )
    choice = auto.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and check_args("get_weather", call.function.arguments)
    assert none.choices[0].finish_reason in ("stop", "length") and not none.choices[0].message.tool_calls
    assert none.choices[0].message.content
    deltas = [tc for c in auto_stream for ch in c.choices for tc in (ch.delta.tool_calls or [])]
    assert [d.function.name for d in deltas if d.function and d.function.name] == ["get_weather"]
    args = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert json.loads(args) == json.loads(call.function.arguments)
    assert [ch.finish_reason for c in auto_stream for ch in c.choices if ch.finish_reason] == ["tool_calls"]


def test_openai_tool_results_round_trip(oa: openai.OpenAI) -> None:
    def answer(result: str) -> Any:
        messages: Any = [
            *ASK,
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_abc", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_abc", "content": result},
        ]  # fmt: skip
        return oa.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER], temperature=0, max_tokens=24)

    sunny, snowy = parallel(lambda: answer("22 degrees and sunny"), lambda: answer("-7 degrees with heavy snow"))
    for r in (sunny, snowy):
        assert (r.choices[0].message.content or "").strip() and not r.choices[0].message.tool_calls
        assert r.choices[0].finish_reason in ("stop", "length")
    assert sunny.choices[0].message.content != snowy.choices[0].message.content


@pytest.mark.parametrize(
    ("tools", "tool_choice"),
    [
        ([WEATHER], {"type": "function", "function": {"name": "get_stock_price"}}),
        ([WEATHER], "sometimes"),
        (None, "required"),
        ([{"type": "function", "function": {"description": "no name", "parameters": WEATHER_PARAMS}}], None),
        ([{"type": "function", "function": {"name": "", "parameters": WEATHER_PARAMS}}], None),
        ([{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}], "required"),
        ([WEATHER, WEATHER], None),
    ],
)
def test_openai_bad_tools_are_400(http: httpx.Client, tools: Any, tool_choice: Any) -> None:
    body: dict[str, Any] = {"model": MODEL, "messages": ASK, "max_tokens": 4}
    if tools is not None:
        body["tools"] = tools
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and ("tool" in err["message"] or "function" in err["message"])
