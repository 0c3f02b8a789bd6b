"""OpenAI wire requests -> engine GenerationRequests: messages, tools, format and sampling, with every 400.

Pure functions (no HTTP, no torch). Sampling fields that are absent stay None, so alias presets and model defaults
apply: unlike Ollama's /v1 we do not force OpenAI's default temperature/top_p of 1.0.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from app.api.openai.schemas import (
    ChatCompletionMessageParam,
    ChatCompletionRequest,
    CompletionRequest,
    ResponseFormat,
    SamplingFields,
)
from app.engine.tools import check_choice, check_tools
from app.engine.types import (
    GenerationRequest,
    Message,
    SamplingParams,
    ToolCall,
)
from app.errors import InvalidRequest

MAX_CHOICES = 64  # n x prompts on /v1/completions: each choice is one engine request


# Recognised fields that would change the output and that we do not implement. Any value other than the listed
# no-op values is a 400 naming the field (never silently ignored).
UNSUPPORTED_FIELDS: dict[str, tuple[Any, ...]] = {
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "web_search_options": (None,),
    "reasoning_effort": (None,),
    "reasoning": (None,),
    "verbosity": (None,),
    # vLLM extras we do not implement
    "guided_regex": (None,),
    "guided_choice": (None,),
    "guided_grammar": (None,),
    "structured_outputs": (None,),
    "stop_token_ids": (None, []),
    "bad_words": (None, []),
    "allowed_token_ids": (None,),
    "include_stop_str_in_output": (None, False),
    "skip_special_tokens": (None, True),
    "spaces_between_special_tokens": (None, True),
    "use_beam_search": (None, False),
    "length_penalty": (None, 1.0),
    "prompt_logprobs": (None,),
    "truncate_prompt_tokens": (None,),
    "logits_processors": (None,),
    "echo": (None, False),  # chat only: /v1/completions implements echo
    "add_generation_prompt": (None, True),
    "continue_final_message": (None, False),
    "chat_template": (None,),
    "chat_template_kwargs": (None, {}),
    "documents": (None,),
}
_KEYWORD_CHOICES = ("none", "auto", "required")


def _bad(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def check_unsupported(req: BaseModel) -> None:
    """400 for a recognised but unimplemented field (see UNSUPPORTED_FIELDS); other unknown fields pass."""
    for name, value in (req.model_extra or {}).items():
        allowed = UNSUPPORTED_FIELDS.get(name)
        if allowed is not None and value not in allowed:
            raise _bad(f"'{name}' is not supported by this server", name)
    options = getattr(req, "stream_options", None)
    if options is not None and (options.model_extra or {}).get("continuous_usage_stats"):
        raise _bad("stream_options.continuous_usage_stats is not supported", "stream_options.continuous_usage_stats")


# --- messages ---------------------------------------------------------------------------------------------------


def content_text(content: Any, param: str, *, nullable: bool) -> str:
    """A message's text: a string, or text parts joined by newlines (as vLLM joins them)."""
    if content is None:
        if nullable:
            return ""
        raise _bad(f"{param} is required", param)
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(f"{param} must be a string or a list of content parts", param)
    texts: list[str] = []
    for k, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        key = {"text": "text", "input_text": "text", "refusal": "refusal"}.get(kind or "")
        if key is not None and isinstance(part, dict) and isinstance(part.get(key), str):
            texts.append(part[key])
        elif kind in ("image_url", "input_image", "image"):
            raise _bad(f"{param}: model does not support images (text-only server)", param)
        elif kind in ("input_audio", "audio"):
            raise _bad(f"{param}: model does not support audio input", param)
        elif kind in ("file", "input_file"):
            raise _bad(f"{param}: file content parts are not supported", param)
        else:
            raise _bad(f'{param}[{k}] must be a content part like {{"type": "text", "text": ...}}', param)
    return "\n".join(texts)


def parse_arguments(arguments: Any, param: str) -> dict[str, Any]:
    """Tool-call arguments: OpenAI sends a JSON string; an object is accepted too."""
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as e:
            raise _bad(f"{param}: invalid tool call arguments (not JSON: {e.msg})", param) from None
    if not isinstance(arguments, dict):
        raise _bad(f"{param}: tool call arguments must be a JSON object", param)
    return arguments


def _tool_call(raw: Any, param: str) -> ToolCall:
    fn = raw.get("function") if isinstance(raw, dict) else None
    if not isinstance(fn, dict):
        raise _bad(f"{param}.function is required", f"{param}.function")
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise _bad(f"{param}.function.name is required", f"{param}.function.name")
    call_id = raw.get("id") if isinstance(raw.get("id"), str) else ""
    arguments = parse_arguments(fn.get("arguments"), f"{param}.function.arguments")
    return ToolCall(name=name, arguments=arguments, id=call_id)


def to_messages(params: Sequence[ChatCompletionMessageParam]) -> tuple[Message, ...]:
    """OpenAI messages to engine messages (developer -> system, legacy function -> tool)."""
    names_by_id: dict[str, str] = {}
    out: list[Message] = []
    for i, m in enumerate(params):
        p = f"messages[{i}]"
        role = "system" if m.role == "developer" else m.role
        if role in ("system", "user"):
            out.append(Message(role=role, content=content_text(m.content, f"{p}.content", nullable=False)))
        elif role == "assistant":
            calls = [_tool_call(tc, f"{p}.tool_calls[{j}]") for j, tc in enumerate(m.tool_calls or [])]
            if m.function_call is not None:
                calls.append(_tool_call({"function": m.function_call}, p))
            names_by_id.update({c.id: c.name for c in calls if c.id})
            text = content_text(m.content, f"{p}.content", nullable=True)
            out.append(Message(role="assistant", content=text, tool_calls=tuple(calls)))
        elif role in ("tool", "function"):
            name = m.name or names_by_id.get(m.tool_call_id or "")
            text = content_text(m.content, f"{p}.content", nullable=True)
            out.append(Message(role="tool", content=text, tool_call_id=m.tool_call_id, name=name))
        else:
            raise _bad(
                f"{p}.role: unsupported role {m.role!r} (expected system, developer, user, assistant or tool)",
                f"{p}.role",
            )
    return tuple(out)


# --- format, tools, sampling ------------------------------------------------------------------------------------


def to_format(response_format: ResponseFormat | None, guided_json: Any = None) -> str | dict[str, Any] | None:
    """`response_format` (or vLLM's `guided_json`) to GenerationRequest.format: None, "json" or a schema."""
    fmt: str | dict[str, Any] | None = None
    if response_format is not None and response_format.type == "json_object":
        fmt = "json"
    elif response_format is not None and response_format.type == "json_schema":
        spec = response_format.json_schema
        if spec is None:
            raise _bad("response_format.json_schema is required for type json_schema", "response_format.json_schema")
        if spec.schema_ is None:
            raise _bad("response_format.json_schema.schema is required", "response_format.json_schema.schema")
        if not isinstance(spec.schema_, dict):
            raise _bad(
                "response_format.json_schema.schema must be a JSON schema object", "response_format.json_schema.schema"
            )
        fmt = spec.schema_
    if guided_json is not None:
        if fmt is not None:
            raise _bad("send either response_format or guided_json, not both", "guided_json")
        if isinstance(guided_json, str):
            try:
                guided_json = json.loads(guided_json)
            except json.JSONDecodeError:
                raise _bad("guided_json must be a JSON schema", "guided_json") from None
        if not isinstance(guided_json, dict):
            raise _bad("guided_json must be a JSON schema object", "guided_json")
        fmt = guided_json
    return fmt


def to_tools(req: ChatCompletionRequest) -> tuple[tuple[dict[str, Any], ...], str]:
    """The raw tool dicts and the normalised tool choice ("none" | "auto" | "required" | a function name)."""
    tools: list[dict[str, Any]] = []
    if req.functions is not None:
        if req.tools:
            raise _bad("send either tools or the legacy functions, not both", "functions")
        for i, f in enumerate(req.functions):
            if not isinstance(f.get("name"), str) or not f["name"]:
                raise _bad(f"functions[{i}].name is required", f"functions[{i}].name")
            tools.append({"type": "function", "function": f})
    tools += [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in req.tools or []]
    names = check_tools(tools)  # the engine's rule; its `param` is the JSON path, as OpenAI clients write it

    choice, param = req.tool_choice, "tool_choice"
    if req.function_call is not None:
        if req.tool_choice is not None:
            raise _bad("send either tool_choice or the legacy function_call, not both", "function_call")
        fc = req.function_call
        choice, param = (fc if isinstance(fc, str) else {"type": "function", "function": fc}), "function_call"
    return tuple(tools), to_tool_choice(choice, set(names), param)


def to_tool_choice(choice: str | dict[str, Any] | None, names: set[str], param: str = "tool_choice") -> str:
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        if choice not in _KEYWORD_CHOICES:
            raise _bad(f"{param} must be 'none', 'auto', 'required' or a function, got {choice!r}", param)
        check_choice(choice, sorted(names), param)
        return choice  # "auto" stays "auto" without tools: the engine reads it as "none"
    fn = choice.get("function")
    name = fn.get("name") if isinstance(fn, dict) else None
    if choice.get("type", "function") != "function" or not isinstance(name, str) or not name:
        raise _bad(f'{param} must look like {{"type": "function", "function": {{"name": ...}}}}', param)
    if name in _KEYWORD_CHOICES:
        raise _bad(f"cannot force a function named {name!r}", param)
    check_choice(name, sorted(names), param)  # the engine's rule: tools to choose from, a function among them
    return name


def to_stop(stop: str | list[str] | None) -> tuple[str, ...] | None:
    if stop is None or stop == []:
        return None  # unset, so an alias's stop sequences still apply
    items = [stop] if isinstance(stop, str) else list(stop)
    if any(not s for s in items):
        raise _bad("stop sequences must be non-empty strings", "stop")
    return tuple(items)


def to_logit_bias(bias: dict[str, float] | None) -> tuple[tuple[int, float], ...] | None:
    if not bias:
        return None
    out: list[tuple[int, float]] = []
    for key, value in bias.items():
        try:
            token = int(key)
        except ValueError:
            raise _bad(f"logit_bias keys must be token ids, got {key!r}", "logit_bias") from None
        if token < 0:
            raise _bad(f"logit_bias token id {token} is negative", "logit_bias")
        out.append((token, float(value)))
    return tuple(out)


def to_sampling(
    req: SamplingFields, *, max_tokens: int | None, logprobs: bool | None, top_logprobs: int | None
) -> SamplingParams:
    """The request's sampling fields; absent ones stay None so lower layers (alias, model, server) apply."""
    if req.min_tokens is not None and max_tokens is not None and req.min_tokens > max_tokens:
        raise _bad("min_tokens must not exceed max_tokens", "min_tokens")
    seed = None if req.seed is None or req.seed == -1 else req.seed
    return SamplingParams(
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=0 if req.top_k == -1 else req.top_k,
        min_p=req.min_p,
        typical_p=req.typical_p,
        repetition_penalty=req.repetition_penalty,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        logit_bias=to_logit_bias(req.logit_bias),
        seed=seed,
        stop=to_stop(req.stop),
        max_tokens=max_tokens,
        min_tokens=req.min_tokens,
        ignore_eos=req.ignore_eos,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
    )


def _fan_out(base: GenerationRequest, n: int) -> list[GenerationRequest]:
    """n independent requests; with a seed, choice i uses seed + i so the choices differ yet reproduce."""
    seed = base.sampling.seed
    out = []
    for i in range(n):
        sampling = base.sampling if seed is None or i == 0 else dataclasses.replace(base.sampling, seed=seed + i)
        out.append(dataclasses.replace(base, sampling=sampling))
    return out


def to_chat_requests(req: ChatCompletionRequest, *, request_id: str = "") -> list[GenerationRequest]:
    """One GenerationRequest per choice (`n`).

    Raises:
        InvalidRequest: a field is invalid or not supported; `param` names it.
    """
    check_unsupported(req)
    if req.top_logprobs and not req.logprobs:
        raise _bad("top_logprobs requires logprobs to be true", "top_logprobs")
    tools, tool_choice = to_tools(req)
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    base = GenerationRequest(
        model=req.model,
        messages=to_messages(req.messages),
        tools=tools,
        tool_choice=tool_choice,
        format=to_format(req.response_format, req.guided_json),
        sampling=to_sampling(
            req,
            max_tokens=max_tokens,
            logprobs=True if req.logprobs else None,
            top_logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        ),
        request_id=request_id,
        protocol="openai",
    )
    return _fan_out(base, req.n or 1)


def to_prompts(prompt: Any) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, int | list) for p in prompt):
        raise _bad("token id prompts are not supported; send text", "prompt")
    raise _bad("prompt must be a string or a non-empty list of strings", "prompt")


def to_completion_requests(req: CompletionRequest, *, request_id: str = "") -> list[GenerationRequest]:
    """One raw-prompt GenerationRequest per choice: prompt-major, so choice index = prompt * n + j.

    Raises:
        InvalidRequest: a field is invalid or not supported; `param` names it.
    """
    check_unsupported(req)
    n = req.n or 1
    if req.best_of is not None and req.best_of != n:
        raise _bad("best_of must equal n (ranking candidates is not supported)", "best_of")
    if req.echo and req.logprobs is not None:
        raise _bad("echo with logprobs needs prompt logprobs, which are not supported", "echo")
    prompts = to_prompts(req.prompt)
    if len(prompts) * n > MAX_CHOICES:
        raise _bad(f"at most {MAX_CHOICES} choices (prompts x n) per request", "prompt")
    sampling = to_sampling(
        req,
        max_tokens=16 if req.max_tokens is None else req.max_tokens,
        logprobs=True if req.logprobs is not None else None,
        top_logprobs=req.logprobs,
    )
    fmt = to_format(req.response_format, req.guided_json)
    out: list[GenerationRequest] = []
    for prompt in prompts:
        base = GenerationRequest(
            model=req.model,
            prompt=prompt,
            raw=True,
            suffix=req.suffix,
            format=fmt,
            sampling=sampling,
            request_id=request_id,
            protocol="openai",
        )
        out.extend(_fan_out(base, n))
    return out
