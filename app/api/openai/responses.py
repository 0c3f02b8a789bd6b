"""Engine output -> OpenAI wire bodies: chat.completion / text_completion objects, their stream chunks
(ChatStream, CompletionStream), logprobs, usage, and the /v1/models listing. Pure (no HTTP, no torch).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from app.api.openai.choices import ChoiceResult
from app.api.openai.schemas import (
    ChatCompletionChoice,
    ChatCompletionMessage,
    ChatCompletionMessageToolCall,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamChoice,
    ChatCompletionStreamResponse,
    ChatCompletionTokenLogprob,
    ChoiceLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    CompletionUsage,
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    FunctionCall,
    Model,
    ModelList,
    PromptTokensDetails,
    TopLogprob,
)
from app.engine.types import (
    Chunk,
    FinishReason,
    TokenLogprob,
    ToolCall,
    Usage,
)
from app.registry.types import ModelEntry

SYSTEM_FINGERPRINT = "fp_hugllama"
_MIN_LOGPROB = -9999.0  # JSON has no -Infinity


@dataclass(frozen=True, slots=True)
class ResponseIds:
    """What every chunk of one response shares: id, created and the requested model name."""

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, prefix: str, model: str) -> ResponseIds:
        return cls(id=f"{prefix}-{uuid.uuid4().hex}", created=int(time.time()), model=model)

    def envelope(self, kind: str) -> dict[str, Any]:
        """The fields every body of this response carries (`kind` is its `object`)."""
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }


def json_body(model: BaseModel) -> dict[str, Any]:
    """The JSON body of a response model: only the fields it was built with (so chosen nulls stay)."""
    return model.model_dump(mode="json", exclude_unset=True, by_alias=True)


def _lp(value: float) -> float:
    return max(float(value), _MIN_LOGPROB)


def _bytes(token: str, given: tuple[int, ...]) -> list[int]:
    return list(given) if given else list(token.encode("utf-8"))


def to_chat_logprobs(tokens: Iterable[TokenLogprob]) -> ChoiceLogprobs:
    content = [
        ChatCompletionTokenLogprob(
            token=t.token,
            logprob=_lp(t.logprob),
            bytes=_bytes(t.token, t.bytes),
            top_logprobs=[
                TopLogprob(token=x.token, logprob=_lp(x.logprob), bytes=_bytes(x.token, x.bytes))
                for x in t.top_logprobs
            ],
        )
        for t in tokens
    ]
    return ChoiceLogprobs(content=content)


def to_completion_logprobs(tokens: Iterable[TokenLogprob], offset: int) -> tuple[CompletionLogprobs, int]:
    """Legacy logprobs; `text_offset` counts from `offset`. Returns the offset after the last token too."""
    toks: list[str] = []
    values: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    for t in tokens:
        toks.append(t.token)
        values.append(_lp(t.logprob))
        top = {x.token: _lp(x.logprob) for x in t.top_logprobs}
        top.setdefault(t.token, _lp(t.logprob))  # OpenAI: the sampled token is always listed
        tops.append(top)
        offsets.append(offset)
        offset += len(t.token)
    return CompletionLogprobs(tokens=toks, token_logprobs=values, top_logprobs=tops, text_offset=offsets), offset


def to_usage(usages: Sequence[Usage | None], n: int) -> CompletionUsage:
    """Completion tokens summed over all choices; prompt tokens once per prompt (the n choices share it)."""
    prompt = cached = completion = 0
    for i, u in enumerate(usages):
        u = u or Usage()
        completion += u.completion_tokens
        if i % n == 0:
            prompt += u.prompt_tokens
            cached += u.cached_tokens
    return CompletionUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
    )


def finish_reason(reason: FinishReason | None, *, tool_calls: bool, legacy: bool = False) -> str:
    if tool_calls and reason != FinishReason.LENGTH:
        return "function_call" if legacy else "tool_calls"
    return "length" if reason == FinishReason.LENGTH else "stop"


def _call_id(call: ToolCall) -> str:
    return call.id or f"call_{uuid.uuid4().hex[:24]}"


def _arguments(call: ToolCall) -> str:
    return json.dumps(call.arguments, ensure_ascii=False)


def _is_legacy(req: ChatCompletionRequest) -> bool:
    return req.functions is not None


def _kept_calls(req: ChatCompletionRequest, calls: Sequence[ToolCall], already: int) -> list[ToolCall]:
    """parallel_tool_calls=false (and legacy function calling) keep only a choice's first call."""
    if req.parallel_tool_calls is False or _is_legacy(req):
        return list(calls[: max(0, 1 - already)])
    return list(calls)


def to_chat_response(req: ChatCompletionRequest, results: Sequence[ChoiceResult], ids: ResponseIds) -> dict[str, Any]:
    """The non-streaming chat.completion body."""
    legacy = _is_legacy(req)
    choices = []
    for i, r in enumerate(results):
        calls = _kept_calls(req, r.tool_calls, 0)
        message = ChatCompletionMessage(role="assistant", content=r.text or (None if calls else ""))
        if calls and legacy:
            message.function_call = FunctionCall(name=calls[0].name, arguments=_arguments(calls[0]))
        elif calls:
            message.tool_calls = [
                ChatCompletionMessageToolCall(
                    id=_call_id(c), type="function", function=FunctionCall(name=c.name, arguments=_arguments(c))
                )
                for c in calls
            ]
        choices.append(
            ChatCompletionChoice(
                index=i,
                message=message,
                logprobs=to_chat_logprobs(r.logprobs) if req.logprobs else None,
                finish_reason=finish_reason(r.finish_reason, tool_calls=bool(calls), legacy=legacy),
            )
        )
    usage = to_usage([r.usage for r in results], req.n or 1)
    return json_body(ChatCompletionResponse(**ids.envelope("chat.completion"), choices=choices, usage=usage))


def to_completion_response(
    req: CompletionRequest, prompts: Sequence[str], results: Sequence[ChoiceResult], ids: ResponseIds
) -> dict[str, Any]:
    """The non-streaming text_completion body."""
    n = req.n or 1
    choices = []
    for i, r in enumerate(results):
        prefix = prompts[i // n] if req.echo else ""
        logprobs = to_completion_logprobs(r.logprobs, len(prefix))[0] if req.logprobs is not None else None
        choices.append(
            CompletionChoice(
                index=i,
                text=prefix + r.text,
                logprobs=logprobs,
                finish_reason=finish_reason(r.finish_reason, tool_calls=False),
            )
        )
    usage = to_usage([r.usage for r in results], n)
    return json_body(CompletionResponse(**ids.envelope("text_completion"), choices=choices, usage=usage))


# --- streaming --------------------------------------------------------------------------------------------------


class ChatStream:
    """A `ChunkEncoder` (app/api/streaming.py): (choice index, Chunk) pairs -> chat.completion.chunk bodies, and
    the chat.completion body (`response`) of everything fed.

    Per choice: a role chunk (`delta.role` "assistant", content ""), content and tool-call deltas, a finish
    chunk with an empty delta; then, with `stream_options.include_usage`, one chunk with no choices and the usage.
    """

    def __init__(self, req: ChatCompletionRequest, ids: ResponseIds, choices: int) -> None:
        self.req = req
        self.ids = ids
        self.n = choices
        self.legacy = _is_legacy(req)
        self.calls = [0] * choices
        self.usages: list[Usage | None] = [None] * choices
        self.results = [ChoiceResult() for _ in range(choices)]

    def _body(self, *choices: ChatCompletionStreamChoice, usage: CompletionUsage | None = None) -> dict[str, Any]:
        body = ChatCompletionStreamResponse(**self.ids.envelope("chat.completion.chunk"), choices=list(choices))
        if usage is not None:
            body.usage = usage
        return json_body(body)

    def start(self) -> list[dict[str, Any]]:
        return [
            self._body(
                ChatCompletionStreamChoice(
                    index=i, delta=DeltaMessage(role="assistant", content=""), logprobs=None, finish_reason=None
                )
            )
            for i in range(self.n)
        ]

    def feed(self, index: int, chunk: Chunk) -> list[dict[str, Any]]:
        self.results[index].add(chunk)
        out: list[dict[str, Any]] = []
        if chunk.text or chunk.logprobs:
            logprobs = to_chat_logprobs(chunk.logprobs) if self.req.logprobs else None
            delta = DeltaMessage(content=chunk.text)
            out.append(
                self._body(ChatCompletionStreamChoice(index=index, delta=delta, logprobs=logprobs, finish_reason=None))
            )
        for call in _kept_calls(self.req, chunk.tool_calls, self.calls[index]):
            fn = DeltaFunctionCall(name=call.name, arguments=_arguments(call))
            if self.legacy:
                delta = DeltaMessage(function_call=fn)
            else:
                delta = DeltaMessage(
                    tool_calls=[DeltaToolCall(index=self.calls[index], id=_call_id(call), type="function", function=fn)]
                )
            self.calls[index] += 1
            out.append(
                self._body(ChatCompletionStreamChoice(index=index, delta=delta, logprobs=None, finish_reason=None))
            )
        if chunk.finish_reason is not None:
            self.usages[index] = chunk.usage
            reason = finish_reason(chunk.finish_reason, tool_calls=self.calls[index] > 0, legacy=self.legacy)
            out.append(
                self._body(
                    ChatCompletionStreamChoice(index=index, delta=DeltaMessage(), logprobs=None, finish_reason=reason)
                )
            )
        return out

    def end(self) -> list[dict[str, Any]]:
        if not (self.req.stream_options and self.req.stream_options.include_usage):
            return []
        return [self._body(usage=to_usage(self.usages, self.req.n or 1))]

    def response(self) -> dict[str, Any]:
        return to_chat_response(self.req, self.results, self.ids)


class CompletionStream:
    """A `ChunkEncoder`: (choice index, Chunk) pairs -> text_completion stream bodies (echoed prompts first), and
    the text_completion body (`response`) of everything fed."""

    def __init__(self, req: CompletionRequest, prompts: Sequence[str], ids: ResponseIds) -> None:
        self.req = req
        self.ids = ids
        self.n = req.n or 1
        self.prompts = list(prompts)
        choices = len(prompts) * self.n
        self.offsets = [len(prompts[i // self.n]) if req.echo else 0 for i in range(choices)]
        self.usages: list[Usage | None] = [None] * choices
        self.results = [ChoiceResult() for _ in range(choices)]

    def _body(self, choices: list[CompletionChoice], usage: CompletionUsage | None = None) -> dict[str, Any]:
        body = CompletionResponse(**self.ids.envelope("text_completion"), choices=choices)
        if usage is not None:
            body.usage = usage
        return json_body(body)

    def start(self) -> list[dict[str, Any]]:
        if not self.req.echo:
            return []
        return [
            self._body([CompletionChoice(index=i, text=self.prompts[i // self.n], logprobs=None, finish_reason=None)])
            for i in range(len(self.offsets))
        ]

    def feed(self, index: int, chunk: Chunk) -> list[dict[str, Any]]:
        self.results[index].add(chunk)
        out: list[dict[str, Any]] = []
        if chunk.text or chunk.logprobs:
            logprobs = None
            if self.req.logprobs is not None:
                logprobs, self.offsets[index] = to_completion_logprobs(chunk.logprobs, self.offsets[index])
            out.append(
                self._body([CompletionChoice(index=index, text=chunk.text, logprobs=logprobs, finish_reason=None)])
            )
        if chunk.finish_reason is not None:
            self.usages[index] = chunk.usage
            reason = finish_reason(chunk.finish_reason, tool_calls=False)
            out.append(self._body([CompletionChoice(index=index, text="", logprobs=None, finish_reason=reason)]))
        return out

    def end(self) -> list[dict[str, Any]]:
        if not (self.req.stream_options and self.req.stream_options.include_usage):
            return []
        return [self._body([], usage=to_usage(self.usages, self.n))]

    def response(self) -> dict[str, Any]:
        return to_completion_response(self.req, self.prompts, self.results, self.ids)


# --- models -----------------------------------------------------------------------------------------------------


def owner(name: str) -> str:
    # Ollama reports the namespace; HF ids carry theirs ("org/repo").
    return name.split("/", 1)[0] if "/" in name else "library"


def to_model(entry: ModelEntry) -> Model:
    return Model(id=entry.name, object="model", created=int(entry.modified_at), owned_by=owner(entry.name))


def to_model_list(entries: Iterable[ModelEntry]) -> dict[str, Any]:
    return json_body(ModelList(object="list", data=[to_model(e) for e in entries]))


def find_model(entries: Iterable[ModelEntry], name: str) -> ModelEntry | None:
    """The listed entry for `name`, with Ollama's implicit ":latest" tag."""
    wanted = {name.lower(), name.lower() + ":latest"}
    if name.lower().endswith(":latest"):
        wanted.add(name.lower().removesuffix(":latest"))
    return next((e for e in entries if e.name.lower() in wanted), None)
