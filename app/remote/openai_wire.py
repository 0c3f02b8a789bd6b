"""GenerationRequest -> an OpenAI-compatible upstream's /v1/chat/completions or /v1/completions body, and its SSE
events -> Chunks. Presets differ only in the sampling extras the server accepts (EXTRAS)."""

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
    TokenLogprob,
    ToolCall,
    TopLogprob,
    Usage,
)
from app.errors import InvalidRequest, UpstreamError
from app.remote.common import arguments, call_ids, is_set, refuse, response_format, token_logprobs

# Fields every OpenAI-compatible server takes.
STANDARD = {
    "temperature": "temperature",
    "top_p": "top_p",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "seed": "seed",
    "stop": "stop",
}
# Sampling extras each preset accepts as top-level body fields (SamplingParams name -> the server's name).
EXTRAS: dict[str, dict[str, str]] = {
    "generic": {},
    "tgi": {},
    "vllm": {
        "top_k": "top_k",
        "min_p": "min_p",
        "repetition_penalty": "repetition_penalty",
        "min_tokens": "min_tokens",
        "ignore_eos": "ignore_eos",
    },
    # llama.cpp's server, and llama-cpp-python (what `ilab model serve` runs by default)
    "llamacpp": {
        "top_k": "top_k",
        "min_p": "min_p",
        "typical_p": "typical_p",
        "repetition_penalty": "repeat_penalty",
        "repeat_last_n": "repeat_last_n",
        "ignore_eos": "ignore_eos",
    },
    "instructlab": {
        "top_k": "top_k",
        "min_p": "min_p",
        "typical_p": "typical_p",
        "repetition_penalty": "repeat_penalty",
    },
}
_HANDLED = {"max_tokens", "logprobs", "top_logprobs", "logit_bias"}


def sampling(params: SamplingParams, preset: str, protocol: str, upstream: str, *, chat: bool) -> dict[str, Any]:
    extras = EXTRAS[preset]
    out: dict[str, Any] = {}
    for name, value in params.as_dict().items():
        if name in STANDARD:
            out[STANDARD[name]] = value
        elif name in extras:
            out[extras[name]] = -1 if preset == "vllm" and name == "top_k" and value == 0 else value
        elif name not in _HANDLED and is_set(name, value):
            why = (
                "its context length is fixed by the server"
                if name == "num_ctx"
                else f"not accepted by {preset} servers"
            )
            raise refuse(name, protocol, upstream, why)
    if params.max_tokens is not None and params.max_tokens >= 0:
        out["max_tokens"] = params.max_tokens  # -1 / -2 (to the end of the context) is the server's own default
    if params.logit_bias:
        out["logit_bias"] = {str(t): b for t, b in params.logit_bias}
    if params.logprobs:
        if chat:
            out["logprobs"] = True
            if params.top_logprobs:
                out["top_logprobs"] = params.top_logprobs
        else:
            out["logprobs"] = params.top_logprobs or 0
    return out


def _messages(req: GenerationRequest) -> list[dict[str, Any]]:
    if req.messages is None:  # Ollama /api/generate without raw: the upstream's chat template applies
        msgs: list[dict[str, Any]] = []
        if req.system:
            msgs.append({"role": "system", "content": req.system})
        msgs.append({"role": "user", "content": req.prompt or ""})
        return msgs
    _, by_name = call_ids(req.messages)
    out: list[dict[str, Any]] = []
    for m in req.messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            item["content"] = m.content or None
            item["tool_calls"] = [
                {
                    "id": c.id or f"call_{c.name}_{i}",
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for i, c in enumerate(m.tool_calls)
            ]
        if m.role == "tool":
            item["tool_call_id"] = m.tool_call_id or by_name.get(m.name or "", f"call_{m.name or 'tool'}")
        out.append(item)
    return out


def build(req: GenerationRequest, model: str, preset: str, upstream: str) -> tuple[str, dict[str, Any]]:
    """(path, body) for `req`; a 400 naming whatever this upstream cannot honour."""
    if req.template is not None:
        raise InvalidRequest(
            f"template is not supported for upstream {upstream}: the upstream applies its own template",
            param="template",
        )
    if req.context:
        raise refuse("context", req.protocol, upstream, "OpenAI-compatible servers keep no token context")
    chat = not req.raw
    body: dict[str, Any] = {"model": model, "stream": True, "stream_options": {"include_usage": True}}
    body.update(sampling(req.sampling, preset, req.protocol, upstream, chat=chat))
    fmt = response_format(req.format if isinstance(req.format, dict) or req.format == "json" else None, preset)
    if fmt is not None:
        body["response_format"] = fmt
    if chat:
        if req.suffix is not None:
            raise refuse("suffix", req.protocol, upstream, "only raw completions take a suffix there")
        body["messages"] = _messages(req)
        if req.tools:
            body["tools"] = list(req.tools)
            choice = req.tool_choice
            body["tool_choice"] = (
                choice if choice in ("auto", "none", "required") else {"type": "function", "function": {"name": choice}}
            )
        return "/v1/chat/completions", body
    if req.system:
        raise refuse("system", req.protocol, upstream, "raw prompts take no system prompt")
    body["prompt"] = req.prompt or ""
    if req.suffix is not None:
        body["suffix"] = req.suffix
    return "/v1/completions", body


def _logprobs(choice: dict[str, Any]) -> tuple[TokenLogprob, ...]:
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return ()
    if isinstance(lp.get("content"), list):  # chat
        return token_logprobs(lp["content"])
    tokens, values, tops = lp.get("tokens") or [], lp.get("token_logprobs") or [], lp.get("top_logprobs") or []
    out = []
    for k, token in enumerate(tokens):
        top = tops[k] if k < len(tops) and isinstance(tops[k], dict) else {}
        value = values[k] if k < len(values) and values[k] is not None else 0.0
        out.append(
            TokenLogprob(
                token=str(token),
                logprob=float(value),
                top_logprobs=tuple(TopLogprob(token=str(t), logprob=float(v)) for t, v in top.items()),
            )
        )
    return tuple(out)


_FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH, "tool_calls": FinishReason.TOOL_CALLS}


class Decoder:
    """SSE events -> Chunks. Tool-call deltas are joined per index and sent as one chunk before the last."""

    def __init__(self, upstream: str, tools: Sequence[dict[str, Any]]) -> None:
        self.upstream = upstream
        self.tools = tools
        self.calls: dict[int, dict[str, str]] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.done = False

    def feed(self, line: str) -> list[Chunk]:
        if not line.startswith("data:"):
            return []  # comments (": ping"), event names, ids
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return []
        try:
            obj = json.loads(data)
        except json.JSONDecodeError:
            raise UpstreamError(f"upstream {self.upstream} sent a malformed event: {data[:200]!r}") from None
        if not isinstance(obj, dict):
            raise UpstreamError(f"upstream {self.upstream} sent a malformed event: {data[:200]!r}")
        if "error" in obj or obj.get("object") == "error":
            err = obj.get("error", obj)
            message = err.get("message") if isinstance(err, dict) else err
            raise UpstreamError(f"upstream {self.upstream}: {message}")
        if isinstance(obj.get("usage"), dict):
            u = obj["usage"]
            cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
            self.usage = Usage(
                prompt_tokens=int(u.get("prompt_tokens") or 0),
                completion_tokens=int(u.get("completion_tokens") or 0),
                cached_tokens=int(cached),
            )
        out: list[Chunk] = []
        for choice in obj.get("choices") or ():
            delta = choice.get("delta")
            text = (delta.get("content") if isinstance(delta, dict) else choice.get("text")) or ""
            lps = _logprobs(choice)
            if text or lps:
                out.append(Chunk(text=str(text), logprobs=lps))
            deltas = delta.get("tool_calls") if isinstance(delta, dict) else None
            for tc in deltas or ():
                slot = self.calls.setdefault(int(tc.get("index", len(self.calls))), {"id": "", "name": "", "args": ""})
                fn = tc.get("function") or {}
                slot["id"] = slot["id"] or str(tc.get("id") or "")
                slot["name"] += str(fn.get("name") or "")
                args = fn.get("arguments")
                if isinstance(args, str):
                    slot["args"] += args
                elif args:  # some servers send the object itself
                    slot["args"] += json.dumps(args)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        return out

    def finish(self) -> list[Chunk]:
        if self.finish_reason is None:
            raise UpstreamError(f"upstream {self.upstream} ended the answer early")
        out: list[Chunk] = []
        calls = []
        for index in sorted(self.calls):
            c = self.calls[index]
            if not c["name"]:
                raise UpstreamError(f"upstream {self.upstream} sent a tool call without a name")
            calls.append(
                ToolCall(
                    name=c["name"],
                    arguments=arguments(c["args"], c["name"], self.tools, self.upstream),
                    id=c["id"] or f"call_{index}",
                )
            )
        if calls:
            out.append(Chunk(tool_calls=tuple(calls)))
        reason = FinishReason.TOOL_CALLS if calls else _FINISH.get(self.finish_reason, FinishReason.STOP)
        out.append(Chunk(finish_reason=reason, usage=self.usage or Usage()))
        return out


def embed_request(req: EmbeddingRequest, model: str, upstream: str) -> tuple[str, dict[str, Any]]:
    if not req.normalize:
        raise InvalidRequest(
            f"unnormalised vectors (the legacy /api/embeddings) are not available from upstream {upstream}; "
            "use /api/embed",
            param="model",
        )
    if req.num_ctx is not None:
        raise refuse("num_ctx", "ollama", upstream, "its context length is fixed by the server")
    body: dict[str, Any] = {"model": model, "input": list(req.inputs), "encoding_format": "float"}
    if req.dimensions:
        body["dimensions"] = req.dimensions
    return "/v1/embeddings", body


def embed_vectors(answer: Any) -> tuple[list[list[float]], int]:
    data = sorted(answer.get("data") or [], key=lambda d: d.get("index", 0))
    tokens = int((answer.get("usage") or {}).get("prompt_tokens") or 0)
    return [d["embedding"] for d in data], tokens
