"""What one request may ask of the shared engine: size limits checked before admission, for both protocols.

Every check here runs on the event loop before a request takes a queue place, so each must be cheap (lengths and
counts, never tokenizing). The limits come from Settings (HUGLLAMA_MAX_*); each violation is an InvalidRequest
naming the field, which each protocol renders in its own error shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from app.engine.types import EmbeddingRequest, GenerationRequest, SamplingParams
from app.errors import InvalidRequest
from app.param_rules import check_stop, check_value
from app.settings import Settings


def check_generation(req: GenerationRequest, settings: Settings) -> None:
    """Counts and sizes of a generation request (the alias's own fields are checked when it is saved)."""
    total = 0
    if req.messages is not None:
        if len(req.messages) > settings.max_messages:
            raise InvalidRequest(
                f"too many messages: {len(req.messages)} > {settings.max_messages} (HUGLLAMA_MAX_MESSAGES)",
                param="messages",
            )
        for i, m in enumerate(req.messages):
            total += _chars(m.content, f"messages[{i}].content", settings)
    for name, text in (("prompt", req.prompt), ("system", req.system), ("suffix", req.suffix)):
        if text:
            total += _chars(text, name, settings)
    if total > settings.max_prompt_chars:
        raise InvalidRequest(
            f"the prompt is too long: {total} characters > {settings.max_prompt_chars} (HUGLLAMA_MAX_PROMPT_CHARS)",
            param="messages" if req.messages is not None else "prompt",
        )
    if req.template is not None:
        if not settings.request_templates:
            raise InvalidRequest(
                "per-request templates are disabled on this server (HUGLLAMA_REQUEST_TEMPLATES)", param="template"
            )
        check_template_size(req.template, settings)
    if req.context is not None:
        for t in req.context:
            # bool is an int subclass; anything else non-integral would crash the embedding lookup
            if isinstance(t, bool) or not isinstance(t, int) or t < 0:
                raise InvalidRequest("context must be a list of token ids (non-negative integers)", param="context")
    _check_tools(req.tools, settings)
    check_sampling_limits(req.sampling, settings)


def check_sampling_limits(p: SamplingParams, settings: Settings) -> None:
    check_stop(p.stop, settings)
    check_value("seed", p.seed)


def check_template_size(template: str, settings: Settings, param: str = "template") -> None:
    size = len(template.encode("utf-8", "surrogatepass"))
    if size > settings.max_template_bytes:
        raise InvalidRequest(
            f"the template is too large: {size} bytes > {settings.max_template_bytes} (HUGLLAMA_MAX_TEMPLATE_BYTES)",
            param=param,
        )


def check_embedding(req: EmbeddingRequest, settings: Settings) -> None:
    if len(req.inputs) > settings.max_embed_inputs:
        raise InvalidRequest(
            f"too many inputs: {len(req.inputs)} > {settings.max_embed_inputs} (HUGLLAMA_MAX_EMBED_INPUTS)",
            param="input",
        )
    total = 0
    for i, text in enumerate(req.inputs):
        total += _chars(text, f"input[{i}]", settings)
    if total > settings.max_prompt_chars:
        raise InvalidRequest(
            f"the input is too long: {total} characters > {settings.max_prompt_chars} (HUGLLAMA_MAX_PROMPT_CHARS)",
            param="input",
        )


def _chars(text: str, param: str, settings: Settings) -> int:
    if len(text) > settings.max_message_chars:
        raise InvalidRequest(
            f"{param} is too long: {len(text)} characters > {settings.max_message_chars} (HUGLLAMA_MAX_MESSAGE_CHARS)",
            param=param,
        )
    return len(text)


def _check_tools(tools: Iterable[object], settings: Settings) -> None:
    items = list(tools)
    if not items:
        return
    if len(items) > settings.max_tools:
        raise InvalidRequest(f"too many tools: {len(items)} > {settings.max_tools} (HUGLLAMA_MAX_TOOLS)", param="tools")
    size = len(json.dumps(items, ensure_ascii=False, default=str))
    if size > settings.max_tools_bytes:
        raise InvalidRequest(
            f"the tool definitions are too large: {size} bytes > {settings.max_tools_bytes} (HUGLLAMA_MAX_TOOLS_BYTES)",
            param="tools",
        )
