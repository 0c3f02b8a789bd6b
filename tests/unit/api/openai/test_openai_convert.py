"""Pure translation rules of app.api.openai.convert (no HTTP)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.api import streaming
from app.api.openai import choices, convert, responses
from app.api.openai.schemas import ChatCompletionRequest, CompletionRequest, ResponseFormat
from app.engine.types import Chunk, FinishReason, TokenLogprob, ToolCall, TopLogprob, Usage
from app.errors import GenerationFailed, InvalidRequest
from app.registry.types import ModelEntry


def chat_req(**kw: Any) -> ChatCompletionRequest:
    kw.setdefault("model", "m")
    kw.setdefault("messages", [{"role": "user", "content": "hi"}])
    return ChatCompletionRequest.model_validate(kw)


def param_of(fn: Any, *args: Any, **kwargs: Any) -> str | None:
    with pytest.raises(InvalidRequest) as e:
        fn(*args, **kwargs)
    return e.value.param


# --- messages -----------------------------------------------------------------------------------------------------


def test_messages_roles_parts_and_tool_history() -> None:
    req = chat_req(
        messages=[
            {"role": "developer", "content": "dev"},
            {"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c9", "type": "function", "function": {"name": "f", "arguments": '{"q": [1, 2]}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c9", "content": [{"type": "text", "text": "42"}]},
            {"role": "assistant", "content": "", "function_call": {"name": "g", "arguments": "{}"}},
            {"role": "function", "name": "g", "content": "ok"},
        ]
    )
    msgs = convert.to_messages(req.messages)
    assert [m.role for m in msgs] == ["system", "user", "assistant", "tool", "assistant", "tool"]
    assert msgs[1].content == "x\ny"
    assert msgs[2].tool_calls == (ToolCall(name="f", arguments={"q": [1, 2]}, id="c9"),)
    assert (msgs[3].name, msgs[3].tool_call_id, msgs[3].content) == ("f", "c9", "42")
    assert msgs[4].tool_calls == (ToolCall(name="g", arguments={}),)
    assert (msgs[5].name, msgs[5].content) == ("g", "ok")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ([{"type": "image_url", "image_url": {"url": "https://x/y.png"}}], "images"),
        ([{"type": "input_audio", "input_audio": {}}], "audio"),
        ([{"type": "file", "file": {}}], "file"),
        ([{"type": "text"}], "content part"),
        (["plain string"], "content part"),
        ({"text": "dict"}, "string or a list"),
    ],
)
def test_unsupported_content(content: Any, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        convert.content_text(content, "messages[3].content", nullable=False)
    assert e.value.param == "messages[3].content" and fragment in e.value.message


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [('{"a": 1}', {"a": 1}), ({"a": 1}, {"a": 1}), ("", {}), (None, {})],
)
def test_arguments(arguments: Any, expected: dict[str, Any]) -> None:
    assert convert.parse_arguments(arguments, "p") == expected


@pytest.mark.parametrize("arguments", ["{bad", "[1, 2]", "3"])
def test_bad_arguments(arguments: str) -> None:
    assert param_of(convert.parse_arguments, arguments, "messages[1].tool_calls[0].function.arguments") == (
        "messages[1].tool_calls[0].function.arguments"
    )


# --- format, tools, sampling --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rf", "expected"),
    [
        (None, None),
        ({"type": "text"}, None),
        ({"type": "json_object"}, "json"),
        ({"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}}, {"type": "object"}),
    ],
)
def test_format(rf: dict[str, Any] | None, expected: Any) -> None:
    parsed = ResponseFormat.model_validate(rf) if rf is not None else None
    assert convert.to_format(parsed) == expected


def test_format_errors_and_guided_json() -> None:
    no_schema = ResponseFormat.model_validate({"type": "json_schema", "json_schema": {"name": "n"}})
    assert param_of(convert.to_format, no_schema) == "response_format.json_schema.schema"
    not_obj = ResponseFormat.model_validate({"type": "json_schema", "json_schema": {"schema": [1]}})
    assert param_of(convert.to_format, not_obj) == "response_format.json_schema.schema"
    assert convert.to_format(None, '{"type": "integer"}') == {"type": "integer"}
    assert param_of(convert.to_format, ResponseFormat(type="json_object"), {"type": "object"}) == "guided_json"


def test_tool_choice_normalisation() -> None:
    names = {"f"}
    assert convert.to_tool_choice(None, names) == "auto"
    assert convert.to_tool_choice("none", set()) == "none"
    assert convert.to_tool_choice("required", names) == "required"
    assert convert.to_tool_choice({"type": "function", "function": {"name": "f"}}, names) == "f"
    assert param_of(convert.to_tool_choice, {"type": "function", "function": {"name": "g"}}, names) == "tool_choice"
    assert param_of(convert.to_tool_choice, "required", set()) == "tool_choice"
    assert param_of(convert.to_tool_choice, {"type": "function", "function": {}}, names) == "tool_choice"


def test_tools_raw_dicts_and_legacy_functions() -> None:
    tool = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}
    tools, choice = convert.to_tools(chat_req(tools=[tool], tool_choice="required"))
    assert tools == (tool,) and choice == "required"
    tools, choice = convert.to_tools(chat_req(functions=[{"name": "g"}], function_call="none"))
    assert tools == ({"type": "function", "function": {"name": "g"}},) and choice == "none"
    dup = chat_req(tools=[tool, tool])
    assert param_of(convert.to_tools, dup) == "tools"
    both = chat_req(tools=[tool], tool_choice="auto", function_call="auto", functions=None)
    assert param_of(convert.to_tools, both) == "function_call"


def test_stop_and_logit_bias() -> None:
    assert convert.to_stop(None) is None and convert.to_stop([]) is None
    assert convert.to_stop("x") == ("x",) and convert.to_stop(["a", "b"]) == ("a", "b")
    assert convert.to_logit_bias({"5": 2, "7": -100}) == ((5, 2.0), (7, -100.0))
    assert convert.to_logit_bias({}) is None
    assert param_of(convert.to_logit_bias, {"-1": 1}) == "logit_bias"


def test_sampling_absent_fields_stay_none() -> None:
    (gen,) = convert.to_chat_requests(chat_req())
    assert gen.sampling.as_dict() == {}
    assert gen.tool_choice == "auto" and gen.format is None and gen.protocol == "openai"


def test_sampling_mapping() -> None:
    (gen,) = convert.to_chat_requests(chat_req(top_k=-1, seed=-1, logprobs=True, max_tokens=3, min_tokens=1))
    s = gen.sampling
    assert (s.top_k, s.seed, s.logprobs, s.top_logprobs, s.max_tokens, s.min_tokens) == (0, None, True, 0, 3, 1)
    assert param_of(convert.to_chat_requests, chat_req(max_tokens=2, min_tokens=3)) == "min_tokens"


def test_fan_out_seeds() -> None:
    gens = convert.to_chat_requests(chat_req(n=3, seed=7, temperature=1.0), request_id="rid")
    assert [g.sampling.seed for g in gens] == [7, 8, 9]
    assert {g.request_id for g in gens} == {"rid"} and {g.sampling.temperature for g in gens} == {1.0}


@pytest.mark.parametrize(
    ("field", "value", "rejected"),
    [
        ("audio", {"voice": "x"}, True),
        ("audio", None, False),
        ("modalities", ["text"], False),
        ("modalities", ["text", "audio"], True),
        ("prediction", {"type": "content"}, True),
        ("web_search_options", {}, True),
        ("skip_special_tokens", False, True),
        ("skip_special_tokens", True, False),
        ("include_stop_str_in_output", True, True),
        ("totally_unknown", 1, False),
    ],
)
def test_unsupported_fields(field: str, value: Any, rejected: bool) -> None:
    req = chat_req(**{field: value})
    if rejected:
        assert param_of(convert.check_unsupported, req) == field
    else:
        convert.check_unsupported(req)


def test_completion_requests() -> None:
    req = CompletionRequest.model_validate({"model": "m", "prompt": ["a", "b"], "n": 2, "suffix": "s", "logprobs": 3})
    gens = convert.to_completion_requests(req)
    assert [(g.prompt, g.raw, g.suffix) for g in gens] == [("a", True, "s")] * 2 + [("b", True, "s")] * 2
    assert {(g.sampling.max_tokens, g.sampling.logprobs, g.sampling.top_logprobs) for g in gens} == {(16, True, 3)}
    assert all(g.messages is None for g in gens)


@pytest.mark.parametrize("prompt", [[1, 2], [[1], [2]], [], 5, None, ["a", 1]])
def test_bad_prompts(prompt: Any) -> None:
    assert param_of(convert.to_prompts, prompt) == "prompt"


# --- responses ----------------------------------------------------------------------------------------------------


def test_usage_counts_each_prompt_once() -> None:
    usages = [Usage(5, 2, 1), Usage(5, 3, 1), Usage(9, 4, 0), None]
    u = responses.to_usage(usages, 2)
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (14, 9, 23)
    assert u.prompt_tokens_details is not None and u.prompt_tokens_details.cached_tokens == 1


@pytest.mark.parametrize(
    ("reason", "tools", "legacy", "expected"),
    [
        (FinishReason.STOP, False, False, "stop"),
        (FinishReason.LENGTH, False, False, "length"),
        (FinishReason.STOP, True, False, "tool_calls"),
        (FinishReason.TOOL_CALLS, True, False, "tool_calls"),
        (FinishReason.TOOL_CALLS, True, True, "function_call"),
        (FinishReason.LENGTH, True, False, "length"),
        (None, False, False, "stop"),
    ],
)
def test_finish_reason(reason: FinishReason | None, tools: bool, legacy: bool, expected: str) -> None:
    assert responses.finish_reason(reason, tool_calls=tools, legacy=legacy) == expected


def test_chat_response_with_text_and_calls() -> None:
    r = choices.ChoiceResult()
    r.add(Chunk(text="Let me check."))
    r.add(Chunk(tool_calls=(ToolCall("f", {"x": "é"}),)))
    r.add(Chunk(finish_reason=FinishReason.TOOL_CALLS, usage=Usage(4, 6)))
    ids = responses.ResponseIds(id="chatcmpl-1", created=5, model="m")
    body = responses.to_chat_response(chat_req(), [r], ids)
    msg = body["choices"][0]["message"]
    assert msg["content"] == "Let me check."
    (tc,) = msg["tool_calls"]
    assert tc["id"].startswith("call_") and json.loads(tc["function"]["arguments"]) == {"x": "é"}
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert (body["id"], body["created"], body["object"]) == ("chatcmpl-1", 5, "chat.completion")


def test_completion_logprobs_offsets() -> None:
    toks = [TokenLogprob("He", -1.0, (), (TopLogprob("He", -1.0), TopLogprob("A", -2.0))), TokenLogprob("llo", -0.5)]
    lp, end = responses.to_completion_logprobs(toks, 4)
    assert lp.text_offset == [4, 6] and end == 9
    assert lp.top_logprobs == [{"He": -1.0, "A": -2.0}, {"llo": -0.5}]


def test_chat_stream_sequence() -> None:
    req = chat_req(stream=True, stream_options={"include_usage": True}, n=2, parallel_tool_calls=False)
    s = responses.ChatStream(req, responses.ResponseIds("chatcmpl-x", 1, "m"), 2)
    start = s.start()
    assert [c["choices"][0]["delta"] for c in start] == [{"role": "assistant", "content": ""}] * 2
    out = s.feed(1, Chunk(text="a"))
    out += s.feed(1, Chunk(tool_calls=(ToolCall("f", {}, "c1"), ToolCall("g", {}, "c2"))))
    out += s.feed(1, Chunk(tool_calls=(ToolCall("h", {}, "c3"),)))
    out += s.feed(1, Chunk(finish_reason=FinishReason.STOP, usage=Usage(3, 2)))
    out += s.feed(0, Chunk(finish_reason=FinishReason.LENGTH, usage=Usage(3, 1)))
    deltas = [(c["choices"][0]["index"], c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in out]
    assert deltas == [
        (1, {"content": "a"}, None),
        (
            1,
            {
                "tool_calls": [
                    {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ]
            },
            None,
        ),
        (1, {}, "tool_calls"),
        (0, {}, "length"),
    ]
    (usage,) = s.end()
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3 and usage["usage"]["prompt_tokens"] == 3
    assert {c["id"] for c in start + out + [usage]} == {"chatcmpl-x"}


def test_find_model_and_owner() -> None:
    entries = [
        ModelEntry("smollm2:135m", 1, "a" * 64, 10.0, "gguf", "llama", "135M", "Q4_1"),
        ModelEntry("org/repo:latest", 1, "b" * 64, 20.0, "safetensors", "llama", "1B", "F16"),
    ]
    assert responses.find_model(entries, "SMOLLM2:135m") is entries[0]
    assert responses.find_model(entries, "org/repo") is entries[1]
    assert responses.find_model(entries, "smollm2") is None
    assert responses.to_model(entries[1]).owned_by == "org" and responses.to_model(entries[0]).owned_by == "library"


# --- merging ------------------------------------------------------------------------------------------------------


class Probe:
    """An async chunk generator that records whether it was closed before finishing."""

    def __init__(self, n: int, delay: float, fail_at: int | None = None) -> None:
        self.n, self.delay, self.fail_at = n, delay, fail_at
        self.closed_early = False
        self.finished = False

    async def run(self) -> AsyncIterator[Chunk]:
        try:
            for i in range(self.n):
                await asyncio.sleep(self.delay)
                if i == self.fail_at:
                    raise GenerationFailed("boom")
                yield Chunk(text=str(i))
            self.finished = True
        except (GeneratorExit, asyncio.CancelledError):
            self.closed_early = True
            raise


def test_merge_interleaves_all_streams() -> None:
    probes = [Probe(3, 0.001), Probe(3, 0.002)]

    async def go() -> list[tuple[int, str]]:
        return [(i, c.text) async for i, c in streaming.merge([p.run() for p in probes])]

    got = asyncio.run(go())
    assert sorted(got) == [(0, "0"), (0, "1"), (0, "2"), (1, "0"), (1, "1"), (1, "2")]
    assert [t for i, t in got if i == 1] == ["0", "1", "2"]
    assert all(p.finished for p in probes)


def test_merge_close_and_failure_cancel_every_stream() -> None:
    async def close_early() -> list[Probe]:
        probes = [Probe(100, 0.001), Probe(100, 0.001)]
        merged = streaming.merge([p.run() for p in probes])
        await merged.__anext__()
        await merged.aclose()
        return probes

    assert all(p.closed_early for p in asyncio.run(close_early()))

    async def fail() -> Probe:
        slow = Probe(100, 0.01)
        with pytest.raises(GenerationFailed):
            async for _ in streaming.merge([Probe(5, 0.001, fail_at=1).run(), slow.run()]):
                pass
        return slow

    assert asyncio.run(fail()).closed_early


def test_collect_single_stream() -> None:
    async def stream() -> AsyncIterator[Chunk]:
        yield Chunk(text="a", logprobs=(TokenLogprob("a", -1.0),))
        yield Chunk(text="b", finish_reason=FinishReason.LENGTH, usage=Usage(1, 2))

    encoder = responses.ChatStream(chat_req(), responses.ResponseIds("chatcmpl-x", 1, "m"), 1)
    asyncio.run(streaming.encode_response(encoder, streaming.merge([stream()])))
    (r,) = encoder.results
    assert (r.text, r.finish_reason, r.usage, len(r.logprobs)) == ("ab", FinishReason.LENGTH, Usage(1, 2), 1)
