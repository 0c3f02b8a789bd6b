"""Pure translations for the Ollama API: request bodies -> GenerationRequest, engine chunks -> NDJSON objects,
registry and engine facts -> /api/tags, /api/ps, /api/show, create -> Alias, and Ollama's durations and timestamps.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from app.api.ollama import schemas
from app.api.ollama.options import option_values, parse_options
from app.engine.types import (
    Chunk,
    FinishReason,
    GenerationRequest,
    Message,
    RunningModel,
    SamplingParams,
    TokenLogprob,
    ToolCall,
)
from app.errors import InvalidRequest
from app.registry.types import Alias, ModelEntry, Quantization

M = TypeVar("M", bound=BaseModel)
Kind = Literal["generate", "chat"]

ROLES = ("system", "user", "assistant", "tool")
THINK_LEVELS = ("low", "medium", "high", "max")
MAX_TOP_LOGPROBS = 20

# --- timestamps and durations -----------------------------------------------------------------------------------

# Go's time.Duration tops out at ~292 years; Ollama's expires_at for keep_alive < 0 is now + that.
_FOREVER = timedelta(days=292 * 365)


def _fraction(nanos: int) -> str:
    # RFC3339Nano as Go prints it: trailing zeros trimmed, no dot when whole.
    return f".{nanos:09d}".rstrip("0") if nanos else ""


def utc_timestamp(ns: int) -> str:
    """`created_at`: RFC3339Nano in UTC ("2024-07-22T20:47:51.147561Z") from epoch nanoseconds."""
    secs, nanos = divmod(int(ns), 1_000_000_000)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + _fraction(nanos) + "Z"


def _local(dt: datetime) -> str:
    text = dt.strftime("%Y-%m-%dT%H:%M:%S") + _fraction(dt.microsecond * 1000)
    # Always "+hh:mm" (also for UTC, where Go writes "Z"): Open WebUI parses these with datetime.fromisoformat,
    # which rejects "Z" before Python 3.11.
    offset = dt.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def local_timestamp(epoch_s: float, tz: tzinfo | None = None) -> str:
    """`modified_at` / `expires_at`: local time with its offset ("2025-05-10T08:06:48.639712-07:00")."""
    micros = round(float(epoch_s) * 1_000_000)
    dt = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=micros)
    return _local(dt.astimezone(tz) if tz is not None else dt.astimezone())


def far_future(now_s: float, tz: tzinfo | None = None) -> str:
    """`expires_at` of a model kept forever (Ollama: now + the largest Go duration)."""
    dt = datetime.fromtimestamp(float(now_s), UTC) + _FOREVER
    return _local(dt.astimezone(tz) if tz is not None else dt.astimezone())


_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_NUMBER = re.compile(r"(\d*)(?:\.(\d*))?")
_GO_UNIT = re.compile(r"[^\d.]*")


def parse_go_duration(text: str) -> float:
    """Seconds from a Go `time.ParseDuration` string ("5m", "1h30m", "-1m", "0", ".5s"), with Go's error texts."""
    quoted = json.dumps(text, ensure_ascii=False)
    s = text
    negative = False
    if s[:1] in ("-", "+"):
        negative = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"time: invalid duration {quoted}")
    total = 0.0
    while s:
        number = _GO_NUMBER.match(s)
        assert number is not None  # the pattern matches the empty string
        whole, frac = number.group(1), number.group(2)
        if not whole and not frac:
            raise ValueError(f"time: invalid duration {quoted}")
        s = s[number.end() :]
        unit_match = _GO_UNIT.match(s)
        unit = unit_match.group(0) if unit_match else ""
        if not unit:
            raise ValueError(f"time: missing unit in duration {quoted}")
        if unit not in _GO_UNITS:
            raise ValueError(f"time: unknown unit {json.dumps(unit, ensure_ascii=False)} in duration {quoted}")
        s = s[len(unit) :]
        total += float(f"{whole or '0'}.{frac or '0'}") * _GO_UNITS[unit]
    return -total if negative else total


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return type(value).__name__


def parse_keep_alive(value: Any) -> float | None:
    """`keep_alive` -> seconds (None = server/alias default, negative = forever, 0 = unload when done).

    Numbers are seconds; strings are Go durations (a unitless "300" is an error, as in Ollama).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequest(f"Unsupported type: '{_go_type(value)}'", param="keep_alive")
    if isinstance(value, str):
        try:
            seconds = parse_go_duration(value)
        except ValueError as e:
            raise InvalidRequest(str(e), param="keep_alive") from None
    else:
        seconds = float(value)
        if seconds != seconds or seconds in (float("inf"), float("-inf")):
            raise InvalidRequest("keep_alive must be a finite number", param="keep_alive")
    return -1.0 if seconds < 0 else seconds


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
    if value is not None and not 0 <= value <= MAX_TOP_LOGPROBS:
        raise InvalidRequest(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}", param="top_logprobs")
    return value


def _no_images(images: list[str] | None, model: str, param: str) -> None:
    if images:
        raise InvalidRequest(f'"{model}" does not support images', param=param)


def to_tools(value: Any) -> tuple[dict[str, Any], ...]:
    """Structural check of `tools` (objects with function.name); `[]` means no tools. The engine checks the rest."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidRequest("tools must be an array", param="tools")
    tools: list[dict[str, Any]] = []
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise InvalidRequest(f"{where} must be an object", param=where)
        kind = tool.get("type", "function")
        if kind != "function":
            raise InvalidRequest(f'{where}.type must be "function"', param=f"{where}.type")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise InvalidRequest(f"{where}.function must be an object", param=f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"{where}.function.name is required", param=f"{where}.function.name")
        params = function.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise InvalidRequest(f"{where}.function.parameters must be an object", param=f"{where}.function.parameters")
        tools.append({**tool, "type": "function"})
    return tuple(tools)


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


# --- generation responses ---------------------------------------------------------------------------------------


def done_reason(reason: FinishReason | None) -> str:
    # Ollama reports "stop" when the model produced tool calls.
    if reason in (None, FinishReason.STOP, FinishReason.TOOL_CALLS):
        return "stop"
    return str(reason)


def to_logprobs(items: Iterable[TokenLogprob]) -> list[schemas.Logprob]:
    return [
        schemas.Logprob(
            token=t.token,
            logprob=t.logprob,
            bytes=list(t.bytes) if t.bytes else None,
            top_logprobs=[
                schemas.TokenLogprob(token=top.token, logprob=top.logprob, bytes=list(top.bytes) if top.bytes else None)
                for top in t.top_logprobs
            ]
            or None,
        )
        for t in items
    ]


Response = schemas.GenerateResponse | schemas.ChatResponse


def load_response(kind: Kind, model: str, reason: Literal["load", "unload"], now_ns: int) -> Response:
    created = utc_timestamp(now_ns)
    if kind == "generate":
        return schemas.GenerateResponse(model=model, created_at=created, done=True, done_reason=reason)
    return schemas.ChatResponse(model=model, created_at=created, done=True, done_reason=reason)


class ResponseBuilder:
    """Turns engine chunks into Ollama objects: `feed` gives the NDJSON lines, `fold` the one non-stream object.

    Tool calls get their own `done:false` line (content "") before the done line; indices count across the
    answer. The final line carries done_reason and all six metrics (ns).
    """

    def __init__(
        self,
        kind: Kind,
        model: str,
        *,
        raw: bool = False,
        wall_ns: Callable[[], int] = time.time_ns,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.kind = kind
        self.model = model
        self.raw = raw
        self._wall = wall_ns
        self._clock = clock_ns
        self._started = clock_ns()
        self._text: list[str] = []
        self._logprobs: list[TokenLogprob] = []
        self._tools: list[schemas.ToolCallOut] = []
        self.final: Chunk | None = None

    @property
    def done(self) -> bool:
        return self.final is not None

    def _line(self, text: str = "", logprobs: Sequence[TokenLogprob] = ()) -> Response:
        lp = to_logprobs(logprobs) if logprobs else None
        created = utc_timestamp(self._wall())
        if self.kind == "generate":
            return schemas.GenerateResponse(model=self.model, created_at=created, response=text, logprobs=lp)
        message = schemas.ChatMessageOut(content=text)
        return schemas.ChatResponse(model=self.model, created_at=created, message=message, logprobs=lp)

    def _tool_calls(self, calls: Sequence[ToolCall]) -> list[schemas.ToolCallOut]:
        out = []
        for call in calls:
            fn = schemas.ToolCallFunctionOut(index=len(self._tools), name=call.name, arguments=dict(call.arguments))
            item = schemas.ToolCallOut(id=call.id or None, function=fn)
            self._tools.append(item)
            out.append(item)
        return out

    def _finish(self, response: Response, final: Chunk | None) -> Response:
        usage = final.usage if final is not None else None
        timings = final.timings if final is not None else None
        total = timings.total_ns if timings is not None and timings.total_ns > 0 else self._clock() - self._started
        response.done = True
        response.done_reason = done_reason(final.finish_reason if final is not None else None)
        response.total_duration = total
        response.load_duration = timings.load_ns if timings is not None else 0
        response.prompt_eval_count = usage.prompt_tokens if usage is not None else 0
        response.prompt_eval_duration = timings.prompt_eval_ns if timings is not None else 0
        response.eval_count = usage.completion_tokens if usage is not None else 0
        response.eval_duration = timings.eval_ns if timings is not None else 0
        if isinstance(response, schemas.GenerateResponse) and not self.raw and final is not None:
            response.context = list(final.context) if final.context is not None else None
        return response

    def feed(self, chunk: Chunk) -> list[Response]:
        """The lines to stream for one chunk (accumulating for `fold`)."""
        lines: list[Response] = []
        final = chunk.finish_reason is not None
        calls = chunk.tool_calls if self.kind == "chat" else ()
        text_in_done = final and not calls
        self._text.append(chunk.text)
        self._logprobs.extend(chunk.logprobs)
        if (chunk.text or chunk.logprobs) and not text_in_done:
            lines.append(self._line(chunk.text, chunk.logprobs))
        if calls:
            line = self._line()
            assert isinstance(line, schemas.ChatResponse)
            line.message.tool_calls = self._tool_calls(calls)
            lines.append(line)
        if final:
            self.final = chunk
            done = self._line(chunk.text, chunk.logprobs) if text_in_done else self._line()
            lines.append(self._finish(done, chunk))
        return lines

    def close(self) -> list[Response]:
        """A done line if the engine ended without a final chunk (so clients always see done:true)."""
        if self.done:
            return []
        self.final = Chunk(finish_reason=FinishReason.STOP)
        return [self._finish(self._line(), None)]

    def fold(self) -> Response:
        """The non-stream object: all text, all tool calls and logprobs, the final metrics."""
        text = "".join(self._text)
        out = self._line(text, self._logprobs)
        if isinstance(out, schemas.ChatResponse) and self._tools:
            out.message.tool_calls = list(self._tools)
        return self._finish(out, self.final)


# --- models: tags, ps, show -------------------------------------------------------------------------------------


def display_name(name: str) -> str:
    """Ollama's display form always carries a tag."""
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last or "@" in last else f"{name}:latest"


def _details(data: dict[str, Any] | None, *, quantization: str = "") -> schemas.ModelDetails:
    data = data or {}
    family = str(data.get("family") or "")
    families = data.get("families")
    return schemas.ModelDetails(
        parent_model=str(data.get("parent_model") or ""),
        format=str(data.get("format") or ""),
        family=family,
        families=[str(f) for f in families] if isinstance(families, list) else ([family] if family else []),
        parameter_size=str(data.get("parameter_size") or ""),
        quantization_level=str(data.get("quantization_level") or quantization),
    )


def to_list_response(entries: Iterable[ModelEntry], tz: tzinfo | None = None) -> schemas.ListResponse:
    models = []
    for e in sorted(entries, key=lambda e: e.modified_at, reverse=True):
        name = display_name(e.name)
        details = _details(
            {
                "parent_model": e.base if e.is_alias and e.base else "",
                "format": e.format,
                "family": e.family,
                "parameter_size": e.parameter_size,
                "quantization_level": e.quantization_level,
            }
        )
        models.append(
            schemas.ListModel(
                name=name,
                model=name,
                modified_at=local_timestamp(e.modified_at, tz),
                size=e.size_bytes,
                digest=e.digest,
                details=details,
            )
        )
    return schemas.ListResponse(models=models)


def to_ps_response(running: Iterable[RunningModel], now_s: float, tz: tzinfo | None = None) -> schemas.ProcessResponse:
    def expiry(rm: RunningModel) -> float:
        return float("inf") if rm.expires_at is None or rm.expires_at < 0 else rm.expires_at

    models = []
    for rm in sorted(running, key=expiry, reverse=True):
        name = display_name(rm.name)
        expires = far_future(now_s, tz) if expiry(rm) == float("inf") else local_timestamp(expiry(rm), tz)
        details = _details({**rm.details, "parent_model": ""}, quantization=rm.quantization)
        models.append(
            schemas.ProcessModel(
                name=name,
                model=name,
                size=rm.size_bytes,
                digest=rm.digest,
                details=details,
                expires_at=expires,
                size_vram=rm.vram_bytes,
                context_length=rm.context_length,
            )
        )
    return schemas.ProcessResponse(models=models)


def _parameters_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        lines = []
        for key, v in value.items():
            for item in v if isinstance(v, list | tuple) else [v]:
                shown = json.dumps(item, ensure_ascii=False) if isinstance(item, str) else json.dumps(item)
                lines.append(f"{key:<30} {shown}")
        return "\n".join(lines)
    return str(value)


def _model_info(info: Any, verbose: bool) -> dict[str, Any]:
    if not isinstance(info, dict):
        return {}
    if verbose:
        return dict(info)
    # Ollama blanks long arrays (tokenizer vocabularies) unless verbose.
    return {k: ([] if isinstance(v, list | tuple) and len(v) > 5 else v) for k, v in info.items()}


def to_show_response(facts: dict[str, Any], *, verbose: bool = False, tz: tzinfo | None = None) -> schemas.ShowResponse:
    license_ = facts.get("license")
    if isinstance(license_, list | tuple):
        license_ = "\n".join(str(x) for x in license_)
    modified = facts.get("modified_at")
    if isinstance(modified, int | float) and not isinstance(modified, bool):
        modified = local_timestamp(modified, tz) if modified > 0 else None
    messages = facts.get("messages")
    capabilities = facts.get("capabilities")
    return schemas.ShowResponse(
        license=str(license_) if license_ else None,
        modelfile=facts.get("modelfile"),
        parameters=_parameters_text(facts.get("parameters")),
        template=facts.get("template"),
        system=facts.get("system") or None,
        details=_details(facts.get("details")),
        model_info=_model_info(facts.get("model_info"), verbose),
        capabilities=[str(c) for c in capabilities] if isinstance(capabilities, list) else None,
        messages=list(messages) if isinstance(messages, list | tuple) and messages else None,
        modified_at=modified if isinstance(modified, str) else None,
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
