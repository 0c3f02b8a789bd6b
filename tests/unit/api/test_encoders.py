"""Both protocols' encoders follow one lifecycle (streaming.ChunkEncoder): what a non-streamed answer says is what
its streamed bodies add up to, on each side, from the same engine chunks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from app.api import streaming
from app.api.ollama import responses as ollama
from app.api.openai import responses as openai
from app.api.openai.schemas import ChatCompletionRequest, CompletionRequest
from app.engine.types import Chunk, FinishReason, Timings, TokenLogprob, ToolCall, Usage

CHUNKS = (
    Chunk(text="The capital ", logprobs=(TokenLogprob("The", -0.1), TokenLogprob(" capital ", -0.2))),
    Chunk(text="is Paris.", logprobs=(TokenLogprob("is Paris.", -0.3),)),
    Chunk(tool_calls=(ToolCall("lookup", {"city": "Paris"}, id="call_1"),)),
    Chunk(
        finish_reason=FinishReason.TOOL_CALLS,
        usage=Usage(prompt_tokens=9, completion_tokens=4),
        timings=Timings(total_ns=900, load_ns=100, prompt_eval_ns=200, eval_ns=300),
    ),
)


async def _chunks() -> AsyncIterator[Chunk]:
    for chunk in CHUNKS:
        yield chunk


def _stream_bodies(make: Any) -> list[Any]:
    out: list[Any] = []
    encoder = make()

    async def run() -> None:
        async for body in streaming.encode_stream(encoder, streaming.merge([_chunks()]), lambda b: b):
            out.append(body)

    asyncio.run(run())
    return out


def _response(make: Any) -> Any:
    return asyncio.run(streaming.encode_response(make(), streaming.merge([_chunks()])))


def test_ollama_chat_answer_is_what_its_lines_add_up_to() -> None:
    def make() -> ollama.GenerationStream:
        return ollama.GenerationStream("chat", "m", wall_ns=lambda: 0, clock_ns=lambda: 0)

    lines = [line.model_dump(exclude_none=True) for line in _stream_bodies(make)]
    whole = _response(make).model_dump(exclude_none=True)
    assert (
        whole["message"]["content"] == "".join(line["message"]["content"] for line in lines) == "The capital is Paris."
    )
    streamed_calls = [c for line in lines for c in line["message"].get("tool_calls", [])]
    assert whole["message"]["tool_calls"] == streamed_calls and len(streamed_calls) == 1
    assert [lp for line in lines for lp in line.get("logprobs", [])] == whole["logprobs"]
    done = lines[-1]
    assert done["done"] is whole["done"] is True
    metrics = ("done_reason", "total_duration", "load_duration", "prompt_eval_count", "eval_count", "eval_duration")
    assert {k: done[k] for k in metrics} == {k: whole[k] for k in metrics}


def test_openai_chat_answer_is_what_its_chunks_add_up_to() -> None:
    req = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "logprobs": True}
    )

    def make() -> openai.ChatStream:
        return openai.ChatStream(req, openai.ResponseIds("chatcmpl-x", 1, "m"), 1)

    chunks = _stream_bodies(make)
    whole = _response(make)
    deltas = [c["choices"][0] for c in chunks]
    message = whole["choices"][0]["message"]
    assert message["content"] == "".join(d["delta"].get("content") or "" for d in deltas) == "The capital is Paris."
    (call,) = [t for d in deltas for t in d["delta"].get("tool_calls", [])]
    assert [json.loads(t["function"]["arguments"]) for t in message["tool_calls"]] == [{"city": "Paris"}]
    assert message["tool_calls"][0]["id"] == call["id"] == "call_1"
    assert [t for d in deltas if d["logprobs"] for t in d["logprobs"]["content"]] == whole["choices"][0]["logprobs"][
        "content"
    ]
    assert deltas[-1]["finish_reason"] == whole["choices"][0]["finish_reason"] == "tool_calls"
    assert whole["usage"]["completion_tokens"] == 4


def test_openai_completion_answer_is_what_its_chunks_add_up_to() -> None:
    req = CompletionRequest.model_validate({"model": "m", "prompt": "Q: ", "echo": True})

    def make() -> openai.CompletionStream:
        return openai.CompletionStream(req, ["Q: "], openai.ResponseIds("cmpl-x", 1, "m"))

    chunks = _stream_bodies(make)
    whole = _response(make)
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert whole["choices"][0]["text"] == text == "Q: The capital is Paris."
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"] == "stop"
