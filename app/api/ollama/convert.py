"""Ollama request bodies -> engine values: /api/generate and /api/chat -> GenerationRequest, /api/embed and
/api/embeddings -> EmbeddingRequest, /api/create -> Alias.

Pure functions (no HTTP, no torch); every 400 is raised here, before the engine is asked.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from app.api.ollama import schemas
from app.api.ollama.options import option_values, parse_options
from app.api.ollama.times import parse_keep_alive
from app.engine.tools import check_tools
from app.engine.types import (
    EmbeddingRequest,
    GenerationRequest,
    Message,
    SamplingParams,
    ToolCall,
)
from app.errors import InvalidRequest
from app.param_rules import check_value
from app.registry.types import Alias, Quantization

M = TypeVar("M", bound=BaseModel)

ROLES = ("system", "user", "assistant", "tool")
THINK_LEVELS = ("low", "medium", "high", "max")


# --- request bodies ---------------------------------------------------------------------------------------------


def _field_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_body(model: type[M], data: Any) -> M:
    """Validate a decoded JSON body into `model`: unknown keys ignored, top-level keys case-insensitive (Go)."""
    if not isinstance(data, dict):
        raise InvalidRequest(f"json: cannot unmarshal {_json_kind(data)} into a request object")
    names: dict[str, str] = {}
    for name, info in model.model_fields.items():
        names[name.lower()] = name
        if isinstance(info.alias, str):
            names[info.alias.lower()] = info.alias
    body = dict(data)
    for key in list(body):
        canonical = names.get(key.lower()) if isinstance(key, str) else None
        if canonical is not None and canonical != key and canonical not in body:
            body[canonical] = body.pop(key)
    try:
        return model.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        field = _field_path(first.get("loc", ())) or None
        if first.get("type") == "missing" and field:
            raise InvalidRequest(f"{field} is required", param=field) from None
        msg = first.get("msg", "invalid value")
        raise InvalidRequest(f'invalid value for "{field}": {msg}' if field else msg, param=field) from None


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "null"


# --- request fields ---------------------------------------------------------------------------------------------


def parse_format(value: Any) -> str | dict[str, Any] | None:
    """`format`: "json", a JSON schema object, or unset ("" / null). The engine checks the schema itself."""
    if value is None or value == "":
        return None
    if value == "json" or isinstance(value, dict):
        return value  # type: ignore[no-any-return]
    shown = json.dumps(value, ensure_ascii=False)
    raise InvalidRequest(f'invalid format: {shown}; expected "json" or a valid JSON Schema object', param="format")


def check_think(value: Any, model: str) -> None:
    """`think`: false/absent is fine; the engine has no thinking channel, so asking for it is a 400."""
    if value is None or value is False:
        return
    if value is True or (isinstance(value, str) and value in THINK_LEVELS):
        raise InvalidRequest(f'"{model}" does not support thinking', param="think")
    shown = json.dumps(value, ensure_ascii=False)
    raise InvalidRequest(
        f'invalid think value: {shown} (must be "high", "medium", "low", "max", true, or false)', param="think"
    )


def check_top_logprobs(value: int | None) -> int | None:
    check_value("top_logprobs", value)  # a top-level field in Ollama: the engine's name and wording
    return value


def _no_images(images: list[str] | None, model: str, param: str) -> None:
    if images:
        raise InvalidRequest(f'"{model}" does not support images', param=param)


def to_tools(value: Any) -> tuple[dict[str, Any], ...]:
    """`tools`, checked by the engine's rule (engine/tools.py); `[]` means no tools, a missing `type` is "function"."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidRequest("tools must be an array", param="tools")
    check_tools(value)
    return tuple({**tool, "type": "function"} for tool in value)


def _arguments(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError:
            raise InvalidRequest(f"{where} must be an object", param=where) from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where} must be an object", param=where)
    return value


def to_messages(messages: Iterable[schemas.Message], model: str, *, where: str = "messages") -> tuple[Message, ...]:
    out: list[Message] = []
    for i, m in enumerate(messages):
        at = f"{where}[{i}]"
        role = m.role.strip().lower()
        if role not in ROLES:
            raise InvalidRequest(
                f'invalid role "{m.role}" in {at}: expected system, user, assistant or tool', param=f"{at}.role"
            )
        _no_images(m.images, model, f"{at}.images")
        calls = tuple(
            ToolCall(
                name=c.function.name,
                arguments=_arguments(c.function.arguments, f"{at}.tool_calls[{j}].function.arguments"),
                id=c.id or "",
            )
            for j, c in enumerate(m.tool_calls or ())
        )
        out.append(
            Message(
                role=role,
                content=m.content or "",
                tool_calls=calls,
                tool_call_id=m.tool_call_id or None,
                name=m.tool_name or None,
            )
        )
    return tuple(out)


def _sampling(req: schemas.GenerationFields) -> SamplingParams:
    sampling = parse_options(req.options)
    extra: dict[str, Any] = {}
    if req.logprobs is not None:
        extra["logprobs"] = req.logprobs
    top = check_top_logprobs(req.top_logprobs)
    if top is not None:
        extra["top_logprobs"] = top
    return dataclasses.replace(sampling, **extra) if extra else sampling


def to_generate_request(req: schemas.GenerateRequest, *, request_id: str = "") -> GenerationRequest:
    """/api/generate body -> GenerationRequest; every 400 is raised here, before the engine is asked."""
    model = req.model or ""
    raw = bool(req.raw)
    if raw and (req.template or req.system or req.context):
        raise InvalidRequest("raw mode does not support template, system, or context", param="raw")
    _no_images(req.images, model, "images")
    check_think(req.think, model)
    return GenerationRequest(
        model=model,
        prompt=req.prompt or "",
        raw=raw,
        system=req.system or None,
        template=req.template or None,
        suffix=req.suffix or None,
        context=tuple(req.context) if req.context else None,
        format=parse_format(req.format),
        sampling=_sampling(req),
        keep_alive=parse_keep_alive(req.keep_alive),
        truncate=req.truncate if req.truncate is not None else True,
        request_id=request_id,
        protocol="ollama",
    )


def to_chat_request(req: schemas.ChatRequest, *, request_id: str = "") -> GenerationRequest:
    """/api/chat body -> GenerationRequest (messages rendered by the engine with the chat template)."""
    model = req.model or ""
    check_think(req.think, model)
    messages = to_messages(req.messages or (), model)
    tools = to_tools(req.tools)
    return GenerationRequest(
        model=model,
        messages=messages,
        tools=tools,
        format=parse_format(req.format),
        sampling=_sampling(req),
        keep_alive=parse_keep_alive(req.keep_alive),
        truncate=req.truncate if req.truncate is not None else True,
        request_id=request_id,
        protocol="ollama",
    )


def lifecycle_action(gen: GenerationRequest) -> Literal["load", "unload"] | None:
    """An empty prompt / message list only loads (or, with keep_alive 0, unloads) the model."""
    empty = not gen.messages if gen.messages is not None else not gen.prompt and not gen.suffix
    if not empty:
        return None
    return "unload" if gen.keep_alive == 0 else "load"


# --- embeddings -------------------------------------------------------------------------------------------------


def embed_inputs(value: Any) -> tuple[str, ...]:
    """/api/embed `input`: a string or a list of strings; `""`, null and [] mean "just load the model"."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise InvalidRequest("invalid input type", param="input")


def to_embed_request(req: schemas.EmbedRequest, *, request_id: str = "") -> EmbeddingRequest:
    if req.dimensions is not None and req.dimensions < 0:
        raise InvalidRequest("dimensions must be a positive integer", param="dimensions")
    return EmbeddingRequest(
        model=req.model or "",
        inputs=embed_inputs(req.input),
        truncate=req.truncate if req.truncate is not None else True,
        dimensions=req.dimensions or None,  # 0 = the model's full length, as in Ollama
        num_ctx=parse_options(req.options).num_ctx,
        keep_alive=parse_keep_alive(req.keep_alive),
        request_id=request_id,
    )


def to_legacy_embedding_request(req: schemas.EmbeddingsRequest, *, request_id: str = "") -> EmbeddingRequest:
    return EmbeddingRequest(
        model=req.model or "",
        inputs=(req.prompt,) if req.prompt else (),
        normalize=False,  # Ollama's /api/embeddings returns the raw pooled vector
        num_ctx=parse_options(req.options).num_ctx,
        keep_alive=parse_keep_alive(req.keep_alive),
        request_id=request_id,
    )


# --- create -----------------------------------------------------------------------------------------------------

# Ollama's GGUF quantization names -> bitsandbytes at load time: q8_0 is LLM.int8 (8-bit), every q4_* is 4-bit NF4
# with double quantization. The weights on disk stay as they are.
QUANTIZE: dict[str, Quantization] = {
    "q8_0": "8bit",
    "8bit": "8bit",
    "q4_0": "4bit",
    "q4_1": "4bit",
    "q4_k": "4bit",
    "q4_k_s": "4bit",
    "q4_k_m": "4bit",
    "4bit": "4bit",
}


def quantize_to(value: str | None) -> Quantization | None:
    if not value:
        return None
    found = QUANTIZE.get(value.strip().lower())
    if found is None:
        raise InvalidRequest(
            f'unsupported quantization type "{value}": use q8_0 (bitsandbytes 8-bit LLM.int8) or '
            "q4_0, q4_1, q4_K_S, q4_K_M (bitsandbytes 4-bit NF4)",
            param="quantize",
        )
    return found


def _message_dict(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [{"function": {"name": c.name, "arguments": c.arguments}} for c in m.tool_calls]
    if m.name:
        out["tool_name"] = m.name
    return out


def to_alias(req: schemas.CreateRequest, *, now: float, existing: Alias | None = None) -> Alias:
    """/api/create body -> Alias (options under SamplingParams names). The catalog validates names and the base."""
    name = req.target
    if not name:
        raise InvalidRequest("model is required", param="model")
    if req.files or req.adapters:
        raise InvalidRequest(
            "creating a model from files or adapters is not supported: "
            'use "from" with an existing model or a Hugging Face repo',
            param="files" if req.files else "adapters",
        )
    base = (req.from_ or "").strip()
    if not base:
        raise InvalidRequest("neither 'from' or 'files' was specified", param="from")
    options = SamplingParams(**option_values(req.parameters, where="parameters")).as_dict()
    # Our extension: an alias may carry JSON mode or a schema (`hugllama create --json-mode`).
    fmt = parse_format(req.parameters.get("format")) if isinstance(req.parameters, dict) else None
    if fmt is not None:
        options["format"] = fmt
    messages = tuple(_message_dict(m) for m in to_messages(req.messages or (), base))
    return Alias(
        name=name,
        model=base,
        system=req.system if req.system else None,
        template=req.template if req.template else None,
        options=options,
        keep_alive=parse_keep_alive(req.keep_alive),
        quantization=quantize_to(req.quantize),
        messages=messages,
        created_at=existing.created_at if existing is not None and existing.created_at else now,
        modified_at=now,
    )


def create_statuses(req: schemas.CreateRequest, alias: Alias) -> list[dict[str, str]]:
    """Progress lines for /api/create (cosmetic: the alias is stored before the first one is sent)."""
    lines = [{"status": "using existing model"}, {"status": "creating alias"}]
    if req.quantize and alias.quantization:
        lines.append({"status": f"quantization {req.quantize} -> bitsandbytes {alias.quantization} (applied at load)"})
    lines.append({"status": "success"})
    return lines
