"""POST /v1/chat/completions over TestClient + FakeEngine: mapping into the engine, shapes, framing, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.engine.types import Chunk, FinishReason, TokenLogprob, ToolCall, TopLogprob, Usage
from app.errors import Overloaded
from tests.helpers.fake_engine import FakeEngine

MODEL = "smollm2:135m"
HI = [{"role": "user", "content": "hi"}]


def chat(client: TestClient, **body: Any) -> Any:
    body.setdefault("model", MODEL)
    body.setdefault("messages", HI)
    return client.post("/v1/chat/completions", json=body)


def events(text: str) -> list[str]:
    """The SSE `data:` payloads, asserting the framing (every event is `data: ...` followed by a blank line)."""
    assert text.endswith("\n\n")
    blocks = text[:-2].split("\n\n")
    assert all(b.startswith("data: ") for b in blocks), blocks
    return [b[len("data: ") :] for b in blocks]


def assert_openai_error(r: Any, status: int, param: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    return dict(err)


def test_non_stream_shape(client: TestClient) -> None:
    r = chat(client, model="SmolLM2:135m")
    assert r.status_code == 200
    body = r.json()
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) > len("chatcmpl-")
    assert body["object"] == "chat.completion" and isinstance(body["created"], int)
    assert body["model"] == "SmolLM2:135m"  # echoes the request string
    assert body["system_fingerprint"]
    (choice,) = body["choices"]
    assert choice == {
        "index": 0,
        "message": {"role": "assistant", "content": "Hello!"},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert body["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_fields_reach_the_engine(client: TestClient, fake_engine: FakeEngine) -> None:
    r = chat(
        client,
        messages=[
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        ],
        temperature=0.3,
        top_p=0.5,
        seed=11,
        stop="END",
        max_tokens=9,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias={"42": -100},
        top_k=7,
        min_p=0.1,
        typical_p=0.9,
        repetition_penalty=1.2,
        min_tokens=2,
        ignore_eos=True,
        response_format={"type": "json_object"},
    )
    assert r.status_code == 200, r.text
    (req,) = fake_engine.requests
    assert req.protocol == "openai" and req.model == MODEL and req.request_id
    assert r.headers["x-request-id"] == req.request_id
    assert [(m.role, m.content) for m in req.messages or ()] == [("system", "be brief"), ("user", "a\nb")]
    s = req.sampling
    assert (s.temperature, s.top_p, s.seed, s.stop, s.max_tokens) == (0.3, 0.5, 11, ("END",), 9)
    assert (s.presence_penalty, s.frequency_penalty, s.logit_bias) == (0.5, -0.5, ((42, -100.0),))
    assert (s.top_k, s.min_p, s.typical_p, s.repetition_penalty, s.min_tokens, s.ignore_eos) == (
        7,
        0.1,
        0.9,
        1.2,
        2,
        True,
    )
    assert req.format == "json"


def test_absent_sampling_fields_stay_unset(client: TestClient, fake_engine: FakeEngine) -> None:
    assert chat(client).status_code == 200
    s = fake_engine.requests[0].sampling
    # OpenAI's documented default of 1.0 is not forced: alias presets and model defaults must still apply.
    assert s.temperature is None and s.top_p is None and s.max_tokens is None and s.stop is None


def test_user_metadata_store_do_not_change_the_request(client: TestClient, fake_engine: FakeEngine) -> None:
    chat(client, temperature=0)
    chat(client, temperature=0, user="u-1", metadata={"k": "v"}, store=False, service_tier="auto")
    a, b = fake_engine.requests
    assert (a.messages, a.sampling, a.tools, a.format) == (b.messages, b.sampling, b.tools, b.format)


def test_max_completion_tokens_wins(client: TestClient, fake_engine: FakeEngine) -> None:
    r = chat(client, max_tokens=50, max_completion_tokens=2)
    assert r.json()["choices"][0]["finish_reason"] == "length"
    assert fake_engine.requests[0].sampling.max_tokens == 2
    assert r.json()["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("temperature", 2.5, "temperature"),
        ("temperature", -0.1, "temperature"),
        ("top_p", 0, "top_p"),
        ("top_p", 1.5, "top_p"),
        ("n", 0, "n"),
        ("n", 17, "n"),
        ("max_tokens", -1, "max_tokens"),
        ("max_tokens", 0, "max_tokens"),
        ("max_completion_tokens", 0, "max_completion_tokens"),
        ("presence_penalty", 2.5, "presence_penalty"),
        ("frequency_penalty", -3, "frequency_penalty"),
        ("logit_bias", {"12": 101}, "logit_bias.12"),
        ("logit_bias", {"x": 1}, "logit_bias"),
        ("top_logprobs", 21, "top_logprobs"),
        ("top_logprobs", 2, "top_logprobs"),  # without logprobs (0 is harmless and accepted)
        ("stop", ["s"] * 17, "stop"),
        ("stop", [""], "stop"),
        ("response_format", {"type": "xml"}, "response_format.type"),
        (
            "response_format",
            {"type": "json_schema", "json_schema": {"name": "x"}},
            "response_format.json_schema.schema",
        ),
        ("response_format", {"type": "json_schema"}, "response_format.json_schema"),
        ("audio", {"voice": "alloy", "format": "wav"}, "audio"),
        ("modalities", ["text", "audio"], "modalities"),
        ("prediction", {"type": "content", "content": "x"}, "prediction"),
        ("web_search_options", {}, "web_search_options"),
        ("reasoning_effort", "high", "reasoning_effort"),
        ("stop_token_ids", [2], "stop_token_ids"),
        ("chat_template_kwargs", {"enable_thinking": True}, "chat_template_kwargs"),
        (
            "stream_options",
            {"include_usage": True, "continuous_usage_stats": True},
            "stream_options.continuous_usage_stats",
        ),
    ],
)
def test_bad_or_unsupported_fields_are_400(
    client: TestClient, fake_engine: FakeEngine, field: str, value: Any, param: str
) -> None:
    assert_openai_error(chat(client, **{field: value}), 400, param)
    assert fake_engine.requests == []


def test_harmless_values_of_unsupported_fields_pass(client: TestClient) -> None:
    r = chat(client, modalities=["text"], skip_special_tokens=True, some_future_field={"x": 1}, echo=False)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}],
            "messages[0].content",
        ),
        (
            [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "input_audio"}]}],
            "messages[1].content",
        ),
        ([{"role": "user", "content": None}], "messages[0].content"),
        ([{"role": "user", "content": 5}], "messages[0].content"),
        ([{"role": "wizard", "content": "x"}], "messages[0].role"),
        (
            [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
                    ],
                }
            ],
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            [{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"arguments": "{}"}}]}],
            "messages[0].tool_calls[0].function.name",
        ),
        ([], "messages"),
    ],
)
def test_bad_messages_are_400(client: TestClient, messages: list[Any], param: str) -> None:
    err = assert_openai_error(chat(client, messages=messages), 400, param)
    assert err["type"] == "invalid_request_error"
    if "image_url" in json.dumps(messages):
        assert "image" in err["message"]


def test_missing_model_and_bad_json_are_400(client: TestClient) -> None:
    assert_openai_error(client.post("/v1/chat/completions", json={"messages": HI}), 400, "model")
    r = client.post("/v1/chat/completions", content=b"{oops", headers={"content-type": "application/json"})
    assert_openai_error(r, 400)


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_any_content_type_is_parsed_as_json(client: TestClient, content_type: str | None) -> None:
    raw = json.dumps({"model": MODEL, "messages": HI}).encode()
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/v1/chat/completions", content=raw, headers=headers)
    assert r.status_code == 200, r.text


def test_unknown_model_is_404_openai_shape(client: TestClient) -> None:
    err = assert_openai_error(chat(client, model="no-such-model:7b"), 404, "model")
    assert err["type"] == "not_found_error" and "no-such-model" in err["message"]


def test_tool_history_reaches_the_engine(client: TestClient, fake_engine: FakeEngine) -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    assert chat(client, messages=messages).status_code == 200
    _, assistant, tool = fake_engine.requests[0].messages or ()
    assert assistant.tool_calls == (ToolCall(name="get_weather", arguments={"city": "Paris"}, id="call_1"),)
    assert assistant.content == ""
    assert (tool.role, tool.content, tool.tool_call_id, tool.name) == ("tool", "sunny", "call_1", "get_weather")


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools[0].type"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": TOOLS, "functions": [{"name": "f"}]}, "functions"),
    ],
)
def test_bad_tools_are_400(client: TestClient, extra: dict[str, Any], param: str) -> None:
    assert_openai_error(chat(client, **extra), 400, param)


def test_tools_and_choice_reach_the_engine(client: TestClient, fake_engine: FakeEngine) -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    assert chat(client, tools=TOOLS, tool_choice=choice, parallel_tool_calls=True).status_code == 200
    assert chat(client, tools=TOOLS).status_code == 200
    assert chat(client, tools=TOOLS, tool_choice="none").status_code == 200
    forced, auto, none = fake_engine.requests
    assert forced.tools == tuple(TOOLS) and forced.tool_choice == "get_weather"
    assert auto.tool_choice == "auto" and none.tool_choice == "none"


def test_json_schema_reaches_the_engine(client: TestClient, fake_engine: FakeEngine) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    assert chat(client, response_format=rf).status_code == 200
    assert chat(client, response_format={"type": "text"}).status_code == 200
    assert fake_engine.requests[0].format == schema
    assert fake_engine.requests[1].format is None


CALL = ToolCall(name="get_weather", arguments={"city": "Paris", "unit": "°C"}, id="call_abc")


def test_tool_call_response(client_for: Any) -> None:
    c = client_for(FakeEngine(script=(), tool_calls=[CALL]))
    r = chat(c, tools=TOOLS)
    (choice,) = r.json()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    msg = choice["message"]
    assert msg["content"] is None and msg["role"] == "assistant"
    (tc,) = msg["tool_calls"]
    assert tc["id"] == "call_abc" and tc["type"] == "function" and tc["function"]["name"] == "get_weather"
    assert isinstance(tc["function"]["arguments"], str)
    assert json.loads(tc["function"]["arguments"]) == CALL.arguments


def test_parallel_tool_calls_false_keeps_one_call(client_for: Any) -> None:
    second = ToolCall(name="get_weather", arguments={"city": "Rome"}, id="call_2")
    c = client_for(FakeEngine(script=(), tool_calls=[CALL, second]))
    assert len(chat(c, tools=TOOLS).json()["choices"][0]["message"]["tool_calls"]) == 2
    assert len(chat(c, tools=TOOLS, parallel_tool_calls=False).json()["choices"][0]["message"]["tool_calls"]) == 1


def test_legacy_functions_map_to_tools(client_for: Any) -> None:
    engine = FakeEngine(script=(), tool_calls=[CALL])
    c = client_for(engine)
    r = chat(
        c, functions=[{"name": "get_weather", "parameters": {"type": "object"}}], function_call={"name": "get_weather"}
    )
    assert r.status_code == 200, r.text
    req = engine.requests[0]
    assert req.tools == ({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},)
    assert req.tool_choice == "get_weather"
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"]["function_call"]["name"] == "get_weather"


def test_streamed_tool_call(client_for: Any) -> None:
    c = client_for(FakeEngine(script=(), tool_calls=[CALL]))
    data = [json.loads(e) for e in events(chat(c, tools=TOOLS, stream=True).text)[:-1]]
    calls = [ch["choices"][0]["delta"]["tool_calls"] for ch in data if "tool_calls" in ch["choices"][0]["delta"]]
    assert calls == [
        [
            {
                "index": 0,
                "id": "call_abc",
                "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps(CALL.arguments, ensure_ascii=False)},
            }
        ]
    ]
    assert data[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}


def test_stream_framing_and_order(client: TestClient) -> None:
    r = chat(client, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    payloads = events(r.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]} and chunks[0]["id"].startswith("chatcmpl-")
    assert {c["created"] for c in chunks} == {chunks[0]["created"]}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:-1])
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert text == "Hello!"
    finish = chunks[-2]["choices"][0]
    assert finish["delta"] == {} and finish["finish_reason"] == "stop"
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-2]] == [None] * (len(chunks) - 2)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert chunks[-1]["usage"]["total_tokens"] == 10


def test_stream_without_usage_option_has_no_usage_chunk(client: TestClient) -> None:
    chunks = [json.loads(p) for p in events(chat(client, stream=True).text)[:-1]]
    assert all(c["choices"] for c in chunks) and all("usage" not in c for c in chunks)


def test_stream_equals_non_stream(client: TestClient) -> None:
    full = chat(client).json()["choices"][0]["message"]["content"]
    chunks = [json.loads(p) for p in events(chat(client, stream=True).text)[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == full


def test_mid_stream_error_is_in_band(client_for: Any) -> None:
    c = client_for(FakeEngine(fail_after=1))
    r = chat(c, stream=True)
    assert r.status_code == 200
    payloads = events(r.text)
    assert payloads[-1] == "[DONE]"
    err = json.loads(payloads[-2])["error"]
    assert err["code"] == "generation_failed" and err["message"]
    assert json.loads(payloads[1])["choices"][0]["delta"]["content"] == "Hel"


def test_failure_in_non_stream_is_500_openai_shape(client_for: Any) -> None:
    err = assert_openai_error(chat(client_for(FakeEngine(fail_after=1))), 500)
    assert err["code"] == "generation_failed"


def test_n_choices(client: TestClient, fake_engine: FakeEngine) -> None:
    body = chat(client, n=3, seed=100).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert all(c["message"]["content"] == "Hello!" for c in body["choices"])
    assert [r.sampling.seed for r in fake_engine.requests] == [100, 101, 102]
    # The prompt is counted once (the choices share it); completion tokens add up.
    assert body["usage"]["prompt_tokens"] == 7 and body["usage"]["completion_tokens"] == 9


def test_n_choices_without_seed_stay_unseeded(client: TestClient, fake_engine: FakeEngine) -> None:
    chat(client, n=2)
    assert [r.sampling.seed for r in fake_engine.requests] == [None, None]


def test_n_choices_streamed(client: TestClient) -> None:
    payloads = events(chat(client, n=2, stream=True, stream_options={"include_usage": True}).text)
    chunks = [json.loads(p) for p in payloads[:-1]]
    by_index: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    for c in chunks[:-1]:
        (choice,) = c["choices"]
        by_index[choice["index"]].append(choice)
    for choices in by_index.values():
        assert choices[0]["delta"]["role"] == "assistant"
        assert "".join(ch["delta"].get("content", "") for ch in choices) == "Hello!"
        assert choices[-1]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 6


LOGPROB_CHUNKS = [
    Chunk(
        text="Hi", logprobs=(TokenLogprob("Hi", -0.1, (72, 105), (TopLogprob("Hi", -0.1), TopLogprob("Hey", -2.5))),)
    ),
    Chunk(text="!", logprobs=(TokenLogprob("!", float("-inf"), (), ()),)),
    Chunk(finish_reason=FinishReason.STOP, usage=Usage(prompt_tokens=3, completion_tokens=2, cached_tokens=2)),
]


def test_logprobs(client_for: Any, scripted: Any) -> None:
    engine = scripted(LOGPROB_CHUNKS)
    c = client_for(engine)
    body = chat(c, logprobs=True, top_logprobs=2).json()
    s = engine.requests[0].sampling
    assert s.logprobs is True and s.top_logprobs == 2
    content = body["choices"][0]["logprobs"]["content"]
    assert content[0] == {
        "token": "Hi",
        "logprob": -0.1,
        "bytes": [72, 105],
        "top_logprobs": [
            {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
            {"token": "Hey", "logprob": -2.5, "bytes": [72, 101, 121]},
        ],
    }
    assert content[1]["logprob"] > -1e5 and content[1]["bytes"] == [33]  # finite, valid JSON
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 2}
    streamed = [json.loads(p) for p in events(chat(c, logprobs=True, stream=True).text)[:-1]]
    lps = [t for ch in streamed if (lp := ch["choices"][0]["logprobs"]) for t in lp["content"]]
    assert [t["token"] for t in lps] == ["Hi", "!"]


def test_logprobs_not_requested_are_null(client_for: Any, scripted: Any) -> None:
    engine = scripted(LOGPROB_CHUNKS)
    body = chat(client_for(engine)).json()
    assert body["choices"][0]["logprobs"] is None
    assert engine.requests[0].sampling.logprobs is None


class OverloadedOnSecondStart(FakeEngine):
    """Admits the first choice, then reports a full queue."""

    def __init__(self) -> None:
        super().__init__()
        self.streams: list[Any] = []

    async def start(self, req: Any, resolved: Any = None) -> Any:
        if self.streams:
            raise Overloaded("server busy, please try again")
        stream = await super().start(req, resolved)
        self.streams.append(stream)
        return stream


@pytest.mark.parametrize("stream", [False, True])
def test_failed_start_of_a_later_choice_closes_the_earlier_ones(client_for: Any, stream: bool) -> None:
    engine = OverloadedOnSecondStart()
    r = chat(client_for(engine), n=2, stream=stream)
    err = assert_openai_error(r, 503)
    assert err["code"] == "overloaded" and r.headers["retry-after"] == "1"
    (first,) = engine.streams
    assert first.ag_frame is None  # closed, so the engine releases its slot
