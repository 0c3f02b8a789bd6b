"""GenerationRequest -> an Ollama upstream's /api/chat or /api/generate body, and its NDJSON lines -> Chunks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from app.engine.types import (
    Chunk,
    EmbeddingRequest,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    Timings,
    ToolCall,
    Usage,
)
from app.errors import InvalidRequest, UpstreamError
from app.params import OLLAMA_OPTION_NAMES
from app.remote.common import arguments, call_ids, is_set, refuse, token_logprobs

# What is not in OLLAMA_OPTION_NAMES (logit_bias, min_tokens, ignore_eos) Ollama cannot do.
_NOT_OPTIONS = ("logprobs", "top_logprobs")


def options(params: SamplingParams, protocol: str, upstream: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in params.as_dict().items():
        if name in OLLAMA_OPTION_NAMES:
            out[OLLAMA_OPTION_NAMES[name]] = value
        elif name not in _NOT_OPTIONS and is_set(name, value):
            raise refuse(name, protocol, upstream, "Ollama has no such option")
    return out


def _messages(req: GenerationRequest) -> list[dict[str, Any]]:
    by_id, _ = call_ids(req.messages or ())
    out: list[dict[str, Any]] = []
    for m in req.messages or ():
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            item["tool_calls"] = [{"function": {"name": c.name, "arguments": c.arguments}} for c in m.tool_calls]
        if m.role == "tool":
            name = m.name or by_id.get(m.tool_call_id or "")
            if name:
                item["tool_name"] = name
        out.append(item)
    return out


def build(req: GenerationRequest, model: str, upstream: str, keep_alive: float | None) -> tuple[str, dict[str, Any]]:
    """(path, body) for `req` on an Ollama upstream; a 400 for what it cannot honour."""
    body: dict[str, Any] = {"model": model, "stream": True}
    opts = options(req.sampling, req.protocol, upstream)
    if opts:
        body["options"] = opts
    if req.sampling.logprobs:
        body["logprobs"] = True
        if req.sampling.top_logprobs:
            body["top_logprobs"] = req.sampling.top_logprobs
    if req.format is not None:
        body["format"] = req.format
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    if not req.truncate:  # an error instead of cutting the prompt (Ollama's default is to cut)
        body["truncate"] = False
    if req.template is not None:
        raise InvalidRequest(
            f"template is not supported for upstream {upstream}: the upstream applies its own template",
            param="template",
        )
    if req.messages is not None:
        if req.tool_choice not in ("auto", "none") and req.tools:
            raise refuse("tool_choice", req.protocol, upstream, "Ollama cannot force a tool call (use auto or none)")
        body["messages"] = _messages(req)
        if req.tools and req.tool_choice != "none":
            body["tools"] = list(req.tools)
        return "/api/chat", body
    body["prompt"] = req.prompt or ""
    for key in ("system", "suffix"):
        if getattr(req, key) is not None:
            body[key] = getattr(req, key)
    if req.raw:
        body["raw"] = True
    if req.context:
        body["context"] = list(req.context)
    return "/api/generate", body


class Decoder:
    """Ollama NDJSON lines -> Chunks. Tool calls are held until `done` and sent as one chunk before the last."""

    def __init__(self, upstream: str, tools: Sequence[dict[str, Any]]) -> None:
        self.upstream = upstream
        self.tools = tools
        self.calls: list[ToolCall] = []
        self.done = False

    def feed(self, line: str) -> list[Chunk]:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise UpstreamError(f"upstream {self.upstream} sent a malformed line: {line[:200]!r}") from None
        if not isinstance(obj, dict):
            raise UpstreamError(f"upstream {self.upstream} sent a malformed line: {line[:200]!r}")
        if "error" in obj:
            raise UpstreamError(f"upstream {self.upstream}: {obj['error']}")
        message = obj.get("message") or {}
        text = message.get("content") if "message" in obj else obj.get("response")
        out: list[Chunk] = []
        lps = token_logprobs(obj.get("logprobs"))
        if text or lps:
            out.append(Chunk(text=str(text or ""), logprobs=lps))
        for i, c in enumerate(message.get("tool_calls") or ()):
            fn = c.get("function") or {}
            name = str(fn.get("name") or "")
            if not name:
                raise UpstreamError(f"upstream {self.upstream} sent a tool call without a name")
            args = arguments(fn.get("arguments"), name, self.tools, self.upstream)
            self.calls.append(ToolCall(name=name, arguments=args, id=str(c.get("id") or f"call_{len(self.calls)}_{i}")))
        if obj.get("done"):
            self.done = True
            if self.calls:
                out.append(Chunk(tool_calls=tuple(self.calls)))
            reason = FinishReason.LENGTH if obj.get("done_reason") == "length" else FinishReason.STOP
            out.append(
                Chunk(
                    finish_reason=FinishReason.TOOL_CALLS if self.calls else reason,
                    usage=Usage(
                        prompt_tokens=int(obj.get("prompt_eval_count") or 0),
                        completion_tokens=int(obj.get("eval_count") or 0),
                    ),
                    timings=Timings(
                        total_ns=int(obj.get("total_duration") or 0),
                        load_ns=int(obj.get("load_duration") or 0),
                        prompt_eval_ns=int(obj.get("prompt_eval_duration") or 0),
                        eval_ns=int(obj.get("eval_duration") or 0),
                    ),
                    context=tuple(obj["context"]) if isinstance(obj.get("context"), list) else None,
                )
            )
        return out

    def finish(self) -> list[Chunk]:
        if not self.done:
            raise UpstreamError(f"upstream {self.upstream} ended the answer early")
        return []


def embed_request(req: EmbeddingRequest, model: str) -> list[tuple[str, dict[str, Any]]]:
    """The request(s) for `req`: /api/embed, or one legacy /api/embeddings per input for raw vectors."""
    extra: dict[str, Any] = {}
    if req.keep_alive is not None:
        extra["keep_alive"] = req.keep_alive
    if req.num_ctx is not None:
        extra["options"] = {"num_ctx": req.num_ctx}
    if not req.normalize:
        return [("/api/embeddings", {"model": model, "prompt": text, **extra}) for text in req.inputs]
    body: dict[str, Any] = {"model": model, "input": list(req.inputs), "truncate": req.truncate, **extra}
    if req.dimensions:
        body["dimensions"] = req.dimensions
    return [("/api/embed", body)]


def embed_vectors(answers: list[Any]) -> tuple[list[list[float]], int]:
    vectors: list[list[float]] = []
    tokens = 0
    for a in answers:
        if "embeddings" in a:
            vectors += a["embeddings"]
        else:
            vectors.append(a["embedding"])
        tokens += int(a.get("prompt_eval_count") or 0)
    return vectors, tokens
