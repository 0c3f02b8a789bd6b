"""Translation helpers both upstream protocols share: refusing what an upstream cannot honour, tool-call
arguments, and matching tool results to their calls."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from app.engine.types import Message, TokenLogprob, TopLogprob
from app.errors import InvalidRequest, UpstreamError
from app.params import OLLAMA_OPTION_NAMES


def shown(name: str, protocol: str) -> str:
    """The name clients of `protocol` know a SamplingParams field by."""
    return OLLAMA_OPTION_NAMES.get(name, name) if protocol == "ollama" else name


def refuse(name: str, protocol: str, upstream: str, why: str = "") -> InvalidRequest:
    """A 400 naming a field the upstream cannot honour (never silently dropped)."""
    field = shown(name, protocol)
    param = f"options.{field}" if protocol == "ollama" and name not in ("tool_choice", "suffix", "context") else field
    tail = f": {why}" if why else ""
    return InvalidRequest(f"{field} is not supported by upstream {upstream}{tail}", param=param)


# Values of a sampling field that ask for nothing, so an upstream without the field can still take them.
_NOOP: dict[str, tuple[Any, ...]] = {
    "top_k": (0, -1),
    "min_p": (0,),
    "typical_p": (1,),
    "repetition_penalty": (1,),
    "presence_penalty": (0,),
    "frequency_penalty": (0,),
    "min_tokens": (0,),
    "ignore_eos": (False,),
}


def is_set(name: str, value: Any) -> bool:
    """True when a sampling field's value changes the output (None, empty and the field's no-op values do not)."""
    if value is None:
        return False
    if isinstance(value, tuple | list | dict) and not value:
        return False
    return not any(value == noop and type(value) is not bool or value is noop for noop in _NOOP.get(name, ()))


def arguments(raw: Any, name: str, tools: Sequence[dict[str, Any]], upstream: str) -> dict[str, Any]:
    """A tool call's arguments as an object, whatever the upstream sent.

    OpenAI-compatible servers send a JSON string; Ollama an object. A forced call on vLLM may come back as a bare
    string (or a JSON-encoded string): when the tool takes exactly one parameter it becomes that parameter's
    value; anything else is an error, never a malformed call.
    """
    value = raw
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text else {}
        except json.JSONDecodeError:
            value = text
        if isinstance(value, str):  # double-encoded JSON object
            try:
                inner = json.loads(value)
            except json.JSONDecodeError:
                inner = None
            if isinstance(inner, dict):
                value = inner
    if isinstance(value, dict):
        return value
    only = _single_parameter(name, tools)
    if only is not None and isinstance(value, str | int | float | bool):
        return {only: value}
    shown_raw = raw if isinstance(raw, str) else json.dumps(raw)
    raise UpstreamError(f"upstream {upstream} returned unusable arguments for tool {name!r}: {shown_raw[:200]!r}")


def _single_parameter(name: str, tools: Sequence[dict[str, Any]]) -> str | None:
    for tool in tools:
        fn = tool.get("function") or {}
        if fn.get("name") == name:
            props = (fn.get("parameters") or {}).get("properties") or {}
            return next(iter(props)) if len(props) == 1 else None
    return None


def call_ids(messages: Sequence[Message]) -> tuple[dict[str, str], dict[str, str]]:
    """(tool-call id -> tool name, tool name -> last call id) over the assistant turns, so a tool result can be
    labelled the way the upstream's protocol wants (Ollama: tool_name; OpenAI: tool_call_id)."""
    by_id: dict[str, str] = {}
    by_name: dict[str, str] = {}
    for m in messages:
        for i, c in enumerate(m.tool_calls):
            cid = c.id or f"call_{c.name}_{i}"
            by_id[cid] = c.name
            by_name[c.name] = cid
    return by_id, by_name


def response_format(fmt: str | dict[str, Any] | None, preset: str) -> dict[str, Any] | None:
    """Ollama's `format` as an OpenAI `response_format` (TGI spells a schema its own way)."""
    if fmt is None:
        return None
    if preset == "tgi":
        return {"type": "json_object", "value": fmt if isinstance(fmt, dict) else {"type": "object"}}
    if fmt == "json":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt, "strict": True}}


def token_logprobs(items: Any) -> tuple[TokenLogprob, ...]:
    """Per-token logprobs in the shape Ollama and OpenAI chat share (token, logprob, bytes, top_logprobs)."""
    if not isinstance(items, list):
        return ()
    return tuple(
        TokenLogprob(
            token=str(i.get("token", "")),
            logprob=float(i.get("logprob", 0.0)),
            bytes=tuple(i.get("bytes") or ()),
            top_logprobs=tuple(
                TopLogprob(
                    token=str(t.get("token", "")),
                    logprob=float(t.get("logprob", 0.0)),
                    bytes=tuple(t.get("bytes") or ()),
                )
                for t in i.get("top_logprobs") or ()
            ),
        )
        for i in items
        if isinstance(i, dict)
    )
