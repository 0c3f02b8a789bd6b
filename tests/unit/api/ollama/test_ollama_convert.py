"""Pure Ollama conversions: timestamps, durations, request fields, chunk framing, tags/ps/show, create."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from app.api.ollama import convert, responses, schemas, times
from app.engine.types import Chunk, FinishReason, RunningModel, Timings, TokenLogprob, ToolCall, TopLogprob, Usage
from app.errors import InvalidRequest
from app.registry.types import Alias, ModelEntry

PDT = timezone(timedelta(hours=-7))
IST = timezone(timedelta(hours=5, minutes=30))

# --- timestamps -------------------------------------------------------------------------------------------------


def test_utc_timestamp_is_rfc3339nano_with_trimmed_zeros() -> None:
    base = int(datetime(2024, 7, 22, 20, 47, 51, tzinfo=UTC).timestamp()) * 1_000_000_000
    assert times.utc_timestamp(base + 147_561_000) == "2024-07-22T20:47:51.147561Z"
    assert times.utc_timestamp(base + 147_561_123) == "2024-07-22T20:47:51.147561123Z"
    assert times.utc_timestamp(base + 100_000_000) == "2024-07-22T20:47:51.1Z"
    assert times.utc_timestamp(base) == "2024-07-22T20:47:51Z"


def test_local_timestamp_has_the_offset() -> None:
    epoch = datetime(2025, 5, 10, 15, 6, 48, 639712, tzinfo=UTC).timestamp()
    assert times.local_timestamp(epoch, PDT) == "2025-05-10T08:06:48.639712-07:00"
    assert times.local_timestamp(epoch, IST) == "2025-05-10T20:36:48.639712+05:30"
    # UTC as an explicit offset: datetime.fromisoformat before 3.11 (Open WebUI) rejects "Z"
    assert times.local_timestamp(epoch, UTC).endswith("+00:00")
    parsed = datetime.fromisoformat(times.local_timestamp(epoch))
    assert parsed.utcoffset() is not None and abs(parsed.timestamp() - epoch) < 1e-5


def test_far_future_is_centuries_ahead_and_parseable() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    text = times.far_future(now, PDT)
    parsed = datetime.fromisoformat(text)
    assert parsed.year > 2300 and text.endswith("-07:00")


# --- durations --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("-1m", -60.0),
        ("0", 0.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("300ms", 0.3),
        ("2h45m30.5s", 9930.5),
        ("+10s", 10.0),
        ("1µs", 1e-6),
        ("90ns", 9e-8),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert times.parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("300", 'time: missing unit in duration "300"'),
        ("-1", 'time: missing unit in duration "-1"'),
        ("5x", 'time: unknown unit "x" in duration "5x"'),
        ("", 'time: invalid duration ""'),
        ("m", 'time: invalid duration "m"'),
        ("1h30", 'time: missing unit in duration "1h30"'),
    ],
)
def test_go_duration_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        times.parse_go_duration(text)
    assert str(e.value) == message


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (0, 0.0),
        (300, 300.0),
        (1.5, 1.5),
        (-1, -1.0),
        (-500, -1.0),
        ("5m", 300.0),
        ("-1m", -1.0),
        ("0", 0.0),
    ],
)
def test_keep_alive(value: Any, seconds: float | None) -> None:
    assert times.parse_keep_alive(value) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("300", 'time: missing unit in duration "300"'),
        (True, "Unsupported type: 'bool'"),
        ([1], "Unsupported type: '[]interface {}'"),
        ({}, "Unsupported type: 'map[string]interface {}'"),
    ],
)
def test_keep_alive_errors(value: Any, message: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        times.parse_keep_alive(value)
    assert e.value.message == message and e.value.param == "keep_alive"


# --- bodies and fields ------------------------------------------------------------------------------------------


def test_parse_body_ignores_unknown_and_matches_keys_case_insensitively() -> None:
    req = convert.parse_body(schemas.GenerateRequest, {"Model": "m", "PROMPT": "p", "metadata": {"x": 1}})
    assert req.model == "m" and req.prompt == "p"
    create = convert.parse_body(schemas.CreateRequest, {"model": "a", "From": "b"})
    assert create.from_ == "b"


def test_parse_body_names_the_bad_field() -> None:
    with pytest.raises(InvalidRequest) as e:
        convert.parse_body(schemas.ChatRequest, {"model": "m", "messages": [{"role": "user", "content": 5}]})
    assert "messages[0].content" in e.value.message and e.value.param == "messages[0].content"
    with pytest.raises(InvalidRequest) as e:
        convert.parse_body(schemas.ChatRequest, {"model": "m", "messages": [{"content": "x"}]})
    assert e.value.message == "messages[0].role is required"
    with pytest.raises(InvalidRequest):
        convert.parse_body(schemas.ChatRequest, [1, 2])


def test_format() -> None:
    assert convert.parse_format(None) is None
    assert convert.parse_format("") is None
    assert convert.parse_format("json") == "json"
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert convert.parse_format(schema) == schema
    for bad in ("yaml", 3, ["json"]):
        with pytest.raises(InvalidRequest) as e:
            convert.parse_format(bad)
        assert e.value.param == "format" and "invalid format" in e.value.message


def test_think() -> None:
    convert.check_think(None, "m")
    convert.check_think(False, "m")
    for on in (True, "high", "low", "medium", "max"):
        with pytest.raises(InvalidRequest) as e:
            convert.check_think(on, "smollm2:135m")
        assert e.value.message == '"smollm2:135m" does not support thinking'
    for bad in ("extreme", 1, {}):
        with pytest.raises(InvalidRequest) as e:
            convert.check_think(bad, "m")
        assert e.value.message.startswith("invalid think value")


def test_generate_request_mapping() -> None:
    req = schemas.GenerateRequest(
        model="smollm2",
        prompt="Hi",
        system="Be brief",
        template="{{ x }}",
        suffix="end",
        context=[1, 2],
        format="json",
        options={"temperature": 0, "num_predict": 7, "repeat_penalty": 1.1},
        keep_alive="1m",
        truncate=False,
        logprobs=True,
        top_logprobs=3,
    )
    gen = convert.to_generate_request(req, request_id="rid")
    assert gen.model == "smollm2" and gen.prompt == "Hi" and gen.messages is None
    assert (gen.system, gen.template, gen.suffix, gen.context) == ("Be brief", "{{ x }}", "end", (1, 2))
    assert gen.format == "json" and gen.keep_alive == 60.0 and gen.truncate is False
    s = gen.sampling
    assert (s.temperature, s.max_tokens, s.repetition_penalty, s.logprobs, s.top_logprobs) == (0.0, 7, 1.1, True, 3)
    assert gen.request_id == "rid" and gen.protocol == "ollama"


def test_generate_defaults_leave_layers_unset() -> None:
    gen = convert.to_generate_request(schemas.GenerateRequest(model="m", prompt="x", system="", template=""))
    assert gen.system is None and gen.template is None and gen.keep_alive is None and gen.truncate is True
    assert gen.sampling.temperature is None and gen.sampling.logprobs is None


@pytest.mark.parametrize("extra", [{"system": "s"}, {"template": "t"}, {"context": [1]}])
def test_raw_conflicts(extra: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as e:
        convert.to_generate_request(schemas.GenerateRequest(model="m", prompt="x", raw=True, **extra))
    assert e.value.message == "raw mode does not support template, system, or context"


def test_images_are_rejected_but_empty_lists_are_fine() -> None:
    with pytest.raises(InvalidRequest) as e:
        convert.to_generate_request(schemas.GenerateRequest(model="m", prompt="x", images=["aGk="]))
    assert "does not support images" in e.value.message
    convert.to_generate_request(schemas.GenerateRequest(model="m", prompt="x", images=[]))
    msg = schemas.Message(role="user", content="x", images=[])
    convert.to_chat_request(schemas.ChatRequest(model="m", messages=[msg]))
    with pytest.raises(InvalidRequest) as e:
        bad = schemas.Message(role="user", content="x", images=["aGk="])
        convert.to_chat_request(schemas.ChatRequest(model="m", messages=[bad]))
    assert e.value.param == "messages[0].images"


def test_top_logprobs_range() -> None:
    for bad in (-1, 21):
        with pytest.raises(InvalidRequest) as e:
            convert.to_generate_request(schemas.GenerateRequest(model="m", prompt="x", top_logprobs=bad))
        assert e.value.message == "top_logprobs must be between 0 and 20"


def test_chat_messages() -> None:
    req = convert.parse_body(
        schemas.ChatRequest,
        {
            "model": "m",
            "messages": [
                {"role": "System", "content": "sys"},
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "tool_calls": [{"function": {"name": "get", "arguments": {"city": "Paris"}}}]},
                {"role": "tool", "content": "sunny", "tool_name": "get", "tool_call_id": "c1"},
                {"role": "assistant", "tool_calls": [{"id": "c2", "function": {"name": "f", "arguments": '{"a": 1}'}}]},
            ],
            "tools": [],
        },
    )
    gen = convert.to_chat_request(req)
    roles = [m.role for m in gen.messages or ()]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert gen.messages is not None
    assert gen.messages[2].content == "" and gen.messages[2].tool_calls == (ToolCall("get", {"city": "Paris"}),)
    assert gen.messages[3].name == "get" and gen.messages[3].tool_call_id == "c1"
    assert gen.messages[4].tool_calls == (ToolCall("f", {"a": 1}, id="c2"),)
    assert gen.tools == () and gen.prompt is None


def test_chat_rejects_bad_roles_and_arguments() -> None:
    with pytest.raises(InvalidRequest) as e:
        convert.to_chat_request(schemas.ChatRequest(model="m", messages=[schemas.Message(role="robot", content="x")]))
    assert "robot" in e.value.message and e.value.param == "messages[0].role"
    bad = {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": [1]}}]}
    req = convert.parse_body(schemas.ChatRequest, {"model": "m", "messages": [bad]})
    with pytest.raises(InvalidRequest) as e:
        convert.to_chat_request(req)
    assert e.value.param == "messages[0].tool_calls[0].function.arguments"


def test_tools_structure() -> None:
    tool = {"type": "function", "function": {"name": "get", "parameters": {"type": "object", "properties": {}}}}
    assert convert.to_tools([tool]) == (tool,)
    assert convert.to_tools(None) == () and convert.to_tools([]) == ()
    for bad, param in [
        ("x", "tools"),
        ([1], "tools[0]"),
        ([{"type": "code"}], "tools[0].type"),
        ([{"function": {}}], "tools[0].function.name"),
        ([{"function": {"name": "f", "parameters": []}}], "tools[0].function.parameters"),
    ]:
        with pytest.raises(InvalidRequest) as e:
            convert.to_tools(bad)
        assert e.value.param == param


def test_lifecycle_action() -> None:
    def gen(**kw: Any) -> Any:
        return convert.to_generate_request(schemas.GenerateRequest(model="m", **kw))

    def chat(**kw: Any) -> Any:
        return convert.to_chat_request(schemas.ChatRequest(model="m", **kw))

    assert convert.lifecycle_action(gen()) == "load"
    assert convert.lifecycle_action(gen(prompt="", keep_alive=0)) == "unload"
    assert convert.lifecycle_action(gen(prompt="", keep_alive="0")) == "unload"
    assert convert.lifecycle_action(gen(prompt="x", keep_alive=0)) is None
    assert convert.lifecycle_action(gen(suffix="x")) is None
    assert convert.lifecycle_action(chat()) == "load"
    assert convert.lifecycle_action(chat(messages=[], keep_alive=0)) == "unload"
    assert convert.lifecycle_action(chat(messages=[schemas.Message(role="user", content="x")])) is None


# --- response framing -------------------------------------------------------------------------------------------

FINAL = Chunk(
    finish_reason=FinishReason.STOP,
    usage=Usage(prompt_tokens=11, completion_tokens=3),
    timings=Timings(total_ns=900, load_ns=100, prompt_eval_ns=200, eval_ns=300),
    context=(5, 6, 7),
)


def _builder(kind: responses.Kind, **kw: Any) -> responses.GenerationStream:
    return responses.GenerationStream(kind, "Smol", wall_ns=lambda: 1_700_000_000_123_000_000, clock_ns=lambda: 0, **kw)


def _dump(objs: list[Any]) -> list[dict[str, Any]]:
    return [o.model_dump(exclude_none=True) for o in objs]


def test_generate_stream_lines() -> None:
    b = _builder("generate")
    lines = _dump(b.feed(0, Chunk(text="Hel")) + b.feed(0, Chunk(text="lo")) + b.feed(0, FINAL))
    assert [line["response"] for line in lines] == ["Hel", "lo", ""]
    assert all(line["model"] == "Smol" and line["created_at"].endswith("Z") for line in lines)
    assert [line["done"] for line in lines] == [False, False, True]
    assert "done_reason" not in lines[0]
    last = lines[-1]
    assert last["done_reason"] == "stop" and last["context"] == [5, 6, 7]
    assert (last["total_duration"], last["load_duration"], last["prompt_eval_count"]) == (900, 100, 11)
    assert (last["prompt_eval_duration"], last["eval_count"], last["eval_duration"]) == (200, 3, 300)
    assert b.end() == []


def test_raw_generate_has_no_context() -> None:
    b = _builder("generate", raw=True)
    (last,) = _dump(b.feed(0, FINAL))
    assert "context" not in last


def test_final_chunk_text_goes_in_the_done_line() -> None:
    b = _builder("generate")
    lines = _dump(b.feed(0, Chunk(text="tail", finish_reason=FinishReason.LENGTH, usage=Usage(1, 1))))
    assert len(lines) == 1 and lines[0]["response"] == "tail" and lines[0]["done_reason"] == "length"


def test_metrics_always_present_even_without_engine_timings() -> None:
    ticks = iter([0, 5_000])
    b = responses.GenerationStream("chat", "m", clock_ns=lambda: next(ticks))
    (last,) = _dump(b.feed(0, Chunk(finish_reason=FinishReason.STOP)))
    for key in ("load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"):
        assert last[key] == 0
    assert last["total_duration"] == 5_000


def test_chat_tool_calls_get_their_own_chunk() -> None:
    b = _builder("chat")
    calls = (ToolCall("get", {"city": "Paris"}, id="call_1"), ToolCall("time", {}))
    lines = _dump(
        b.feed(0, Chunk(text="ok"))
        + b.feed(0, Chunk(tool_calls=calls))
        + b.feed(0, Chunk(finish_reason=FinishReason.TOOL_CALLS, usage=Usage(2, 2)))
    )
    assert [line["done"] for line in lines] == [False, False, True]
    assert lines[0]["message"] == {"role": "assistant", "content": "ok"}
    tool_line = lines[1]["message"]
    assert tool_line["content"] == "" and tool_line["role"] == "assistant"
    assert tool_line["tool_calls"] == [
        {"id": "call_1", "function": {"index": 0, "name": "get", "arguments": {"city": "Paris"}}},
        {"function": {"index": 1, "name": "time", "arguments": {}}},
    ]
    assert lines[2]["done_reason"] == "stop" and lines[2]["message"] == {"role": "assistant", "content": ""}
    folded = b.response().model_dump(exclude_none=True)
    assert folded["message"]["content"] == "ok" and len(folded["message"]["tool_calls"]) == 2
    assert folded["done"] is True


def test_tool_calls_on_the_final_chunk_come_before_the_done_line() -> None:
    b = _builder("chat")
    lines = _dump(b.feed(0, Chunk(text="x", tool_calls=(ToolCall("f", {}),), finish_reason=FinishReason.TOOL_CALLS)))
    assert [("tool_calls" in line["message"], line["done"]) for line in lines] == [
        (False, False),
        (True, False),
        (False, True),
    ]
    assert lines[0]["message"]["content"] == "x"


def test_fold_concatenates_text_and_logprobs() -> None:
    lp1 = TokenLogprob("He", -0.1, bytes=(72, 101), top_logprobs=(TopLogprob("He", -0.1), TopLogprob("Hi", -2.0)))
    lp2 = TokenLogprob("y", -0.5)
    b = _builder("generate")
    b.feed(0, Chunk(text="He", logprobs=(lp1,)))
    b.feed(0, Chunk(text="y", logprobs=(lp2,)))
    b.feed(0, FINAL)
    out = b.response().model_dump(exclude_none=True)
    assert out["response"] == "Hey" and out["done"] is True and out["context"] == [5, 6, 7]
    assert out["logprobs"] == [
        {
            "token": "He",
            "logprob": -0.1,
            "bytes": [72, 101],
            "top_logprobs": [{"token": "He", "logprob": -0.1}, {"token": "Hi", "logprob": -2.0}],
        },
        {"token": "y", "logprob": -0.5},
    ]


def test_streamed_logprobs_ride_on_their_chunk() -> None:
    b = _builder("chat")
    (line,) = _dump(b.feed(0, Chunk(text="a", logprobs=(TokenLogprob("a", -1.0),))))
    assert line["logprobs"] == [{"token": "a", "logprob": -1.0}]


def test_close_synthesises_a_done_line() -> None:
    b = _builder("chat")
    b.feed(0, Chunk(text="partial"))
    (last,) = _dump(b.end())
    assert last["done"] is True and last["done_reason"] == "stop"
    assert b.response().model_dump()["message"]["content"] == "partial"


def test_done_reasons() -> None:
    assert responses.done_reason(FinishReason.STOP) == "stop"
    assert responses.done_reason(FinishReason.TOOL_CALLS) == "stop"
    assert responses.done_reason(FinishReason.LENGTH) == "length"


def test_load_responses() -> None:
    g = responses.load_response("generate", "m", "load", 0).model_dump(exclude_none=True)
    assert g == {
        "model": "m",
        "created_at": "1970-01-01T00:00:00Z",
        "response": "",
        "done": True,
        "done_reason": "load",
    }
    c = responses.load_response("chat", "m", "unload", 0).model_dump(exclude_none=True)
    assert c["message"] == {"role": "assistant", "content": ""} and c["done_reason"] == "unload"


# --- tags, ps, show ---------------------------------------------------------------------------------------------


def _entry(name: str, modified: float, **kw: Any) -> ModelEntry:
    return ModelEntry(
        name=name,
        size_bytes=123,
        digest="d" * 64,
        modified_at=modified,
        format="gguf",
        family="llama",
        parameter_size="135M",
        quantization_level="Q4_1",
        **kw,
    )


def test_list_response() -> None:
    out = responses.to_list_response(
        [_entry("old", 1000.0), _entry("org/new:q8", 2000.0, is_alias=True, base="smollm2:135m")], PDT
    ).model_dump()
    assert [m["name"] for m in out["models"]] == ["org/new:q8", "old:latest"]
    first = out["models"][0]
    assert first["model"] == first["name"] and first["size"] == 123 and first["digest"] == "d" * 64
    assert first["modified_at"].endswith("-07:00")
    assert first["details"] == {
        "parent_model": "smollm2:135m",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "135M",
        "quantization_level": "Q4_1",
    }


def _running(name: str, expires: float | None) -> RunningModel:
    return RunningModel(
        name=name,
        size_bytes=10,
        vram_bytes=4,
        estimate_bytes=12,
        expires_at=expires,
        context_length=2048,
        device="cpu",
        quantization="8bit",
        details={"family": "llama"},
        digest="e" * 64,
    )


def test_ps_response() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    out = responses.to_ps_response([_running("a", now + 60), _running("b:1b", None)], now, PDT).model_dump()
    names = [m["name"] for m in out["models"]]
    assert names == ["b:1b", "a:latest"]  # forever sorts first (expires_at descending)
    forever, soon = out["models"]
    assert datetime.fromisoformat(forever["expires_at"]).year > 2300
    assert datetime.fromisoformat(soon["expires_at"]).timestamp() == pytest.approx(now + 60)
    assert soon["size"] == 10 and soon["size_vram"] == 4 and soon["context_length"] == 2048
    assert soon["details"]["quantization_level"] == "8bit" and soon["details"]["families"] == ["llama"]
    assert soon["details"]["parent_model"] == "" and soon["digest"] == "e" * 64


def test_show_response() -> None:
    facts = {
        "details": {
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "135M",
            "quantization_level": "Q4_1",
            "context_length": 8192,
        },
        "model_info": {"general.architecture": "llama", "tokenizer.ggml.tokens": list(range(10))},
        "template": "{{ messages }}",
        "system": None,
        "parameters": {"stop": ["a", "b"], "temperature": 0.5},
        "modelfile": "FROM x\n",
        "capabilities": ["completion"],
        "modified_at": 1_700_000_000.5,
        "license": ["MIT", "Apache"],
        "messages": [{"role": "user", "content": "hi"}],
    }
    out = responses.to_show_response(facts, tz=PDT).model_dump(exclude_none=True)
    assert out["model_info"] == {"general.architecture": "llama", "tokenizer.ggml.tokens": []}
    assert out["parameters"].splitlines() == [f'{"stop":<30} "a"', f'{"stop":<30} "b"', f"{'temperature':<30} 0.5"]
    assert out["license"] == "MIT\nApache" and "system" not in out
    assert out["modified_at"].endswith("-07:00") and out["details"]["family"] == "llama"
    assert out["messages"] == [{"role": "user", "content": "hi"}]
    verbose = responses.to_show_response(facts, verbose=True).model_dump()
    assert verbose["model_info"]["tokenizer.ggml.tokens"] == list(range(10))


def test_show_always_has_model_info() -> None:
    out = responses.to_show_response({"template": "", "parameters": ""}).model_dump(exclude_none=True)
    assert out["model_info"] == {} and "details" in out


# --- create -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("q8_0", "8bit"),
        ("Q8_0", "8bit"),
        ("q4_0", "4bit"),
        ("q4_1", "4bit"),
        ("q4_K_M", "4bit"),
        ("q4_K_S", "4bit"),
        ("8bit", "8bit"),
    ],
)
def test_quantize(value: str | None, expected: str | None) -> None:
    assert convert.quantize_to(value) == expected


@pytest.mark.parametrize("value", ["q5_K_M", "f16", "q2_K", "fp8"])
def test_unsupported_quantize(value: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        convert.quantize_to(value)
    assert value in e.value.message and e.value.param == "quantize"


def test_to_alias() -> None:
    req = convert.parse_body(
        schemas.CreateRequest,
        {
            "name": "mario:latest",
            "from": "smollm2:135m",
            "system": "You are Mario.",
            "template": "{{ x }}",
            "parameters": {"temperature": 0.3, "num_predict": 50, "stop": ["END"], "repeat_penalty": 1.2, "num_gpu": 1},
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "It's-a me"}],
            "quantize": "q8_0",
            "keep_alive": "10m",
        },
    )
    a = convert.to_alias(req, now=50.0, existing=Alias(name="mario:latest", model="x", created_at=10.0))
    assert (a.name, a.model, a.system, a.template) == ("mario:latest", "smollm2:135m", "You are Mario.", "{{ x }}")
    assert a.options == {"temperature": 0.3, "max_tokens": 50, "stop": ["END"], "repetition_penalty": 1.2}
    assert a.quantization == "8bit" and a.keep_alive == 600.0
    assert a.messages == ({"role": "user", "content": "hi"}, {"role": "assistant", "content": "It's-a me"})
    assert (a.created_at, a.modified_at) == (10.0, 50.0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"from": "x"}, "model is required"),
        ({"model": "a"}, "neither 'from' or 'files' was specified"),
        ({"model": "a", "files": {"m.gguf": "sha256:00"}}, "not supported"),
        ({"model": "a", "from": "b", "parameters": {"temperature": -1}}, 'option "temperature" must be'),
        ({"model": "a", "from": "b", "parameters": {"stop": "x"}}, 'option "stop" must be'),
        ({"model": "a", "from": "b", "quantize": "q6_K"}, "unsupported quantization"),
        ({"model": "a", "from": "b", "keep_alive": "300"}, "missing unit"),
    ],
)
def test_to_alias_errors(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        convert.to_alias(convert.parse_body(schemas.CreateRequest, body), now=0.0)
    assert message in e.value.message


def test_display_name() -> None:
    assert responses.display_name("smollm2") == "smollm2:latest"
    assert responses.display_name("smollm2:135m") == "smollm2:135m"
    assert responses.display_name("org/repo") == "org/repo:latest"
    assert responses.display_name("host:5000/org/repo") == "host:5000/org/repo:latest"
