"""Engine output and facts -> Ollama response objects: generate/chat NDJSON lines (GenerationStream) and the
/api/embed, /api/tags, /api/ps and /api/show bodies. Pure (no HTTP, no torch).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import tzinfo
from typing import Any, Literal

from app.api.ollama import schemas
from app.api.ollama.times import far_future, local_timestamp, utc_timestamp
from app.engine.types import (
    Chunk,
    Embeddings,
    FinishReason,
    RunningModel,
    TokenLogprob,
    ToolCall,
)
from app.registry.types import ModelEntry

Kind = Literal["generate", "chat"]


# --- embeddings -------------------------------------------------------------------------------------------------


def to_embed_response(model: str, out: Embeddings | None) -> schemas.EmbedResponse:
    """`out` None: nothing was embedded (the request only loaded the model), so no metrics either."""
    if out is None:
        return schemas.EmbedResponse(model=model, embeddings=[])
    return schemas.EmbedResponse(
        model=model,
        embeddings=[list(v) for v in out.vectors],
        total_duration=out.total_ns,
        load_duration=out.load_ns,
        prompt_eval_count=out.prompt_tokens,
    )


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


class GenerationStream:
    """A `ChunkEncoder` (app/api/streaming.py): engine chunks -> Ollama objects; `feed` gives the NDJSON lines,
    `response` the one non-stream object. Ollama has one choice: `index` is always 0.

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

    def start(self) -> list[Response]:
        return []

    def feed(self, index: int, chunk: Chunk) -> list[Response]:
        """The lines to stream for one chunk (accumulating for `response`)."""
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

    def end(self) -> list[Response]:
        """A done line if the engine ended without a final chunk (so clients always see done:true)."""
        if self.done:
            return []
        self.final = Chunk(finish_reason=FinishReason.STOP)
        return [self._finish(self._line(), None)]

    def response(self) -> Response:
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
                capabilities=list(e.capabilities) or None,
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
