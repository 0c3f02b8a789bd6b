"""Translation to and from upstream protocols: the options table, refusals, tools, formats and stream decoding."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.engine.types import (
    EmbeddingRequest,
    FinishReason,
    GenerationRequest,
    Message,
    SamplingParams,
    ToolCall,
)
from app.errors import InvalidRequest, UpstreamError
from app.remote import ollama_wire, openai_wire
from app.remote.common import arguments, response_format

TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
TWO_ARGS: dict[str, Any] = {
    "type": "function",
    "function": {"name": "add", "parameters": {"type": "object", "properties": {"a": {}, "b": {}}}},
}


def chat(**kw: Any) -> GenerationRequest:
    return GenerationRequest(model="m", messages=(Message(role="user", content="hi"),), **kw)


# --- options table ---


def test_ollama_options_use_ollama_names() -> None:
    params = SamplingParams(
        temperature=0.1, max_tokens=5, repetition_penalty=1.2, top_k=3, min_p=0.1, stop=("x",), seed=7, num_ctx=256
    )
    path, body = ollama_wire.build(chat(sampling=params, protocol="openai"), "llama3:latest", "box", None)
    assert path == "/api/chat"
    assert body["options"] == {
        "temperature": 0.1,
        "num_predict": 5,
        "repeat_penalty": 1.2,
        "top_k": 3,
        "min_p": 0.1,
        "stop": ["x"],
        "seed": 7,
        "num_ctx": 256,
    }
    assert body["model"] == "llama3:latest" and body["stream"] is True and "truncate" not in body
    _, body = ollama_wire.build(chat(truncate=False), "m", "box", None)
    assert body["truncate"] is False


@pytest.mark.parametrize("field", ["logit_bias", "min_tokens", "ignore_eos"])
def test_ollama_refuses_what_it_cannot_do(field: str) -> None:
    value: Any = {"logit_bias": ((5, 1.0),), "min_tokens": 3, "ignore_eos": True}[field]
    with pytest.raises(InvalidRequest) as err:
        ollama_wire.build(chat(sampling=SamplingParams(**{field: value}), protocol="openai"), "m", "box", None)
    assert err.value.param == field and "upstream box" in err.value.message


def test_noop_values_are_not_refused() -> None:
    params = SamplingParams(min_tokens=0, ignore_eos=False, logit_bias=())
    ollama_wire.build(chat(sampling=params), "m", "box", None)
    openai_wire.build(chat(sampling=SamplingParams(top_k=0, min_p=0.0, repetition_penalty=1.0)), "m", "generic", "o")


def test_vllm_extras_and_generic_refusals() -> None:
    params = SamplingParams(top_k=5, min_p=0.05, repetition_penalty=1.1, max_tokens=9, temperature=0.0, min_tokens=2)
    path, body = openai_wire.build(chat(sampling=params), "llama", "vllm", "gpu")
    assert path == "/v1/chat/completions"
    assert body["top_k"] == 5 and body["min_p"] == 0.05 and body["repetition_penalty"] == 1.1
    assert body["max_tokens"] == 9 and body["min_tokens"] == 2 and body["temperature"] == 0.0
    assert body["stream_options"] == {"include_usage": True}
    with pytest.raises(InvalidRequest) as err:
        openai_wire.build(chat(sampling=params, protocol="ollama"), "llama", "generic", "gpu")
    assert err.value.param == "options.top_k"
    with pytest.raises(InvalidRequest) as err:
        openai_wire.build(chat(sampling=SamplingParams(repetition_penalty=1.3), protocol="ollama"), "m", "tgi", "t")
    assert "repeat_penalty" in err.value.message  # named as the Ollama client knows it


def test_llamacpp_spells_repeat_penalty_its_way() -> None:
    _, body = openai_wire.build(chat(sampling=SamplingParams(repetition_penalty=1.2)), "m", "llamacpp", "l")
    assert body["repeat_penalty"] == 1.2 and "repetition_penalty" not in body


def test_num_ctx_is_refused_on_openai_upstreams() -> None:
    with pytest.raises(InvalidRequest) as err:
        openai_wire.build(chat(sampling=SamplingParams(num_ctx=8192), protocol="ollama"), "m", "vllm", "gpu")
    assert err.value.param == "options.num_ctx" and "fixed" in err.value.message


def test_unlimited_max_tokens_is_left_to_the_server() -> None:
    _, body = openai_wire.build(chat(sampling=SamplingParams(max_tokens=-1)), "m", "vllm", "gpu")
    assert "max_tokens" not in body


def test_logprobs_on_chat_and_completions() -> None:
    p = SamplingParams(logprobs=True, top_logprobs=3)
    _, body = openai_wire.build(chat(sampling=p), "m", "vllm", "gpu")
    assert body["logprobs"] is True and body["top_logprobs"] == 3
    raw = GenerationRequest(model="m", prompt="x", raw=True, sampling=p)
    path, body = openai_wire.build(raw, "m", "vllm", "gpu")
    assert path == "/v1/completions" and body["logprobs"] == 3 and body["prompt"] == "x"
    _, body = ollama_wire.build(chat(sampling=p), "m", "box", None)
    assert body["logprobs"] is True and body["top_logprobs"] == 3 and "options" not in body


# --- requests: generate, tools, format ---


def test_generate_without_raw_becomes_a_chat_on_openai_upstreams() -> None:
    req = GenerationRequest(model="m", prompt="Hello", system="Be brief.")
    path, body = openai_wire.build(req, "m", "vllm", "gpu")
    assert path == "/v1/chat/completions"
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    path, body = ollama_wire.build(req, "m", "box", 30.0)
    assert path == "/api/generate" and body["system"] == "Be brief." and body["keep_alive"] == 30.0


def test_context_and_template_are_refused_where_they_cannot_apply() -> None:
    with pytest.raises(InvalidRequest) as err:
        openai_wire.build(GenerationRequest(model="m", prompt="x", context=(1, 2)), "m", "vllm", "gpu")
    assert err.value.param == "context"
    with pytest.raises(InvalidRequest) as err:
        ollama_wire.build(chat(template="{{ x }}"), "m", "box", None)
    assert err.value.param == "template"


def test_tool_messages_are_labelled_for_each_protocol() -> None:
    call = ToolCall(name="get_weather", arguments={"city": "Paris"}, id="call_1")
    messages = (
        Message(role="user", content="weather?"),
        Message(role="assistant", tool_calls=(call,)),
        Message(role="tool", content="sunny", name="get_weather"),  # an Ollama client names the tool
    )
    req = GenerationRequest(model="m", messages=messages, tools=(TOOL,))
    _, body = openai_wire.build(req, "m", "vllm", "gpu")
    assistant, tool = body["messages"][1], body["messages"][2]
    assert assistant["tool_calls"][0]["function"]["arguments"] == json.dumps({"city": "Paris"})
    assert tool["tool_call_id"] == "call_1"
    assert body["tool_choice"] == "auto"
    openai_style = (*messages[:2], Message(role="tool", content="sunny", tool_call_id="call_1"))
    _, body = ollama_wire.build(GenerationRequest(model="m", messages=openai_style, tools=(TOOL,)), "m", "box", None)
    assert body["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert body["messages"][2]["tool_name"] == "get_weather"


def test_forced_tool_choice() -> None:
    req = chat(tools=(TOOL,), tool_choice="get_weather", protocol="openai")
    _, body = openai_wire.build(req, "m", "vllm", "gpu")
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    with pytest.raises(InvalidRequest) as err:
        ollama_wire.build(req, "m", "box", None)
    assert err.value.param == "tool_choice"


def test_formats() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert response_format("json", "vllm") == {"type": "json_object"}
    assert response_format(schema, "vllm") == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema, "strict": True},
    }
    assert response_format(schema, "tgi") == {"type": "json_object", "value": schema}
    _, body = ollama_wire.build(chat(format=schema), "m", "box", None)
    assert body["format"] == schema


# --- tool-call arguments ---


@pytest.mark.parametrize(
    ("raw", "tools", "want"),
    [
        ('{"city": "Paris"}', [TOOL], {"city": "Paris"}),
        ({"city": "Paris"}, [TOOL], {"city": "Paris"}),
        (json.dumps('{"city": "Paris"}'), [TOOL], {"city": "Paris"}),  # double-encoded
        ("Paris", [TOOL], {"city": "Paris"}),  # vLLM forced call: a bare string, one parameter
        ('"Paris"', [TOOL], {"city": "Paris"}),
        ("", [TOOL], {}),
    ],
)
def test_arguments_become_an_object(raw: Any, tools: list[dict[str, Any]], want: dict[str, Any]) -> None:
    assert arguments(raw, "get_weather", tools, "gpu") == want


@pytest.mark.parametrize("raw", ["Paris", "[1, 2]", "{broken"])
def test_unusable_arguments_are_an_error(raw: str) -> None:
    with pytest.raises(UpstreamError) as err:
        arguments(raw, "add", [TWO_ARGS], "gpu")
    assert "add" in err.value.message and "gpu" in err.value.message


# --- decoding ---


def test_ollama_decoder() -> None:
    d = ollama_wire.Decoder("box", [TOOL])
    assert d.feed(json.dumps({"message": {"role": "assistant", "content": "Hel"}, "done": False}))[0].text == "Hel"
    call = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    assert d.feed(json.dumps({"message": {"content": "", "tool_calls": [call]}, "done": False})) == []
    last = d.feed(
        json.dumps(
            {
                "message": {"content": ""},
                "done": True,
                "done_reason": "stop",
                "prompt_eval_count": 7,
                "eval_count": 3,
                "total_duration": 100,
                "eval_duration": 40,
            }
        )
    )
    assert last[0].tool_calls[0].arguments == {"city": "Paris"}
    assert last[1].finish_reason == FinishReason.TOOL_CALLS
    assert last[1].usage is not None and last[1].usage.prompt_tokens == 7 and last[1].usage.completion_tokens == 3
    assert last[1].timings is not None and last[1].timings.total_ns == 100
    assert d.finish() == []


def test_ollama_decoder_errors() -> None:
    with pytest.raises(UpstreamError, match="out of memory"):
        ollama_wire.Decoder("box", []).feed('{"error": "out of memory"}')
    d = ollama_wire.Decoder("box", [])
    d.feed('{"response": "a", "done": false}')
    with pytest.raises(UpstreamError, match="ended the answer early"):
        d.finish()


def sse(obj: dict[str, Any]) -> str:
    return "data: " + json.dumps(obj)


def test_openai_decoder_joins_tool_call_deltas() -> None:
    d = openai_wire.Decoder("gpu", [TOOL])
    assert d.feed(": ping") == []
    d.feed(sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}))
    first = {"index": 0, "id": "call_9", "function": {"name": "get_weather", "arguments": '{"ci'}}
    d.feed(sse({"choices": [{"index": 0, "delta": {"tool_calls": [first]}}]}))
    rest = {"index": 0, "function": {"arguments": 'ty": "Paris"}'}}
    d.feed(sse({"choices": [{"index": 0, "delta": {"tool_calls": [rest]}, "finish_reason": "tool_calls"}]}))
    d.feed(sse({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 8}}))
    d.feed("data: [DONE]")
    calls, final = d.finish()
    assert calls.tool_calls == (ToolCall(name="get_weather", arguments={"city": "Paris"}, id="call_9"),)
    assert final.finish_reason == FinishReason.TOOL_CALLS
    assert final.usage is not None and final.usage.total_tokens == 19


def test_openai_decoder_text_logprobs_and_length() -> None:
    d = openai_wire.Decoder("gpu", [])
    lp = {"content": [{"token": "Hi", "logprob": -0.5, "top_logprobs": [{"token": "Hi", "logprob": -0.5}]}]}
    chunks = d.feed(sse({"choices": [{"index": 0, "delta": {"content": "Hi"}, "logprobs": lp}]}))
    assert chunks[0].text == "Hi" and chunks[0].logprobs[0].top_logprobs[0].logprob == -0.5
    d.feed(sse({"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}))
    assert d.finish()[-1].finish_reason == FinishReason.LENGTH


def test_openai_decoder_error_event_and_early_end() -> None:
    with pytest.raises(UpstreamError, match="boom"):
        openai_wire.Decoder("gpu", []).feed(sse({"error": {"message": "boom"}}))
    d = openai_wire.Decoder("gpu", [])
    d.feed(sse({"choices": [{"index": 0, "delta": {"content": "a"}}]}))
    with pytest.raises(UpstreamError, match="early"):
        d.finish()


def test_embeddings() -> None:
    req = EmbeddingRequest(model="m", inputs=("a", "b"), dimensions=4)
    assert ollama_wire.embed_request(req, "m:latest") == [
        ("/api/embed", {"model": "m:latest", "input": ["a", "b"], "truncate": True, "dimensions": 4})
    ]
    legacy = EmbeddingRequest(model="m", inputs=("a",), normalize=False)
    assert ollama_wire.embed_request(legacy, "m")[0][0] == "/api/embeddings"
    assert openai_wire.embed_request(req, "m", "gpu")[1]["dimensions"] == 4
    with pytest.raises(InvalidRequest):
        openai_wire.embed_request(legacy, "m", "gpu")
    answer = {
        "data": [{"index": 1, "embedding": [2.0]}, {"index": 0, "embedding": [1.0]}],
        "usage": {"prompt_tokens": 3},
    }
    assert openai_wire.embed_vectors(answer) == ([[1.0], [2.0]], 3)
