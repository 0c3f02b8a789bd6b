"""Ollama's native API (/api/*): thin handlers that take the parsed body, convert it (convert.py), call the engine or
catalog, and frame the answer as one JSON object or NDJSON lines. /api/version and / live in app/api/health.py.

Bodies are read by the one body parser (app/api/body.py) with Ollama's rules (`_OllamaBody`); each route declares
its request and response models, so /docs shows them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from app.api.body import JSONBodyRoute, parse_json_body
from app.api.deps import Call, CallDep, CatalogDep, EngineDep, MetricsDep, SettingsDep
from app.api.errors import ollama_body
from app.api.ollama import convert, responses, schemas
from app.api.streaming import (
    NDJSON,
    Framing,
    aclose_quietly,
    answer,
    encode_ndjson,
    guarded_stream,
    iterate_in_thread,
    start_all,
    stream_response,
    until_disconnect,
)
from app.engine.types import EmbeddingRequest, Embeddings, GenerationRequest
from app.errors import InvalidRequest, ModelNotFound, ServiceError
from app.registry.types import ResolvedModel

log = logging.getLogger(__name__)

JSON = "application/json; charset=utf-8"


class _OllamaBody(JSONBodyRoute):
    """Ollama's body rules (Go's encoding/json): any content type, unknown keys ignored, top-level keys matched
    case-insensitively, and Ollama's messages. The body is validated here, so FastAPI receives the model itself."""

    def decode(self, raw: bytes, model: type[BaseModel]) -> Any:
        return convert.parse_body(model, parse_json_body(raw))


router = APIRouter(prefix="/api", tags=["ollama"], route_class=_OllamaBody)
# A streamed answer is NDJSON lines of the documented object (the last one with "done": true).
_STREAMED: dict[int | str, dict[str, Any]] = {
    200: {"description": 'One object with `"stream": false`, else NDJSON lines of it', "content": {NDJSON: {}}}
}


def _json(obj: BaseModel | dict[str, Any]) -> Response:
    if isinstance(obj, BaseModel):
        return Response(obj.model_dump_json(exclude_none=True), media_type=JSON)
    return JSONResponse(obj)


def _error_line(err: ServiceError) -> str:
    return encode_ndjson(ollama_body(err.message))  # the same rendering (no server paths) as before the stream


NDJSON_FRAMING = Framing(media_type=NDJSON, frame=encode_ndjson, error=_error_line, whole=_json)


def _not_supported(message: str) -> Response:
    return JSONResponse({"error": message}, status_code=501)


# --- generation -------------------------------------------------------------------------------------------------


def _resolved(call: Call, model: str | None, missing: ServiceError) -> tuple[str, ResolvedModel]:
    """The requested model name and the catalog's answer for it, resolved before anything else (a 404 or an
    invalid name comes first, as Ollama orders them) and handed on to the engine, which does not resolve it again;
    `missing` when there is no name (Ollama words that per route)."""
    if not model:
        raise missing
    return model, call.catalog.resolve(model)


async def _generation(
    call: Call, kind: responses.Kind, named: tuple[str, ResolvedModel], gen: GenerationRequest, stream: bool
) -> Response:
    """A load or unload request's one object, else the answer (NDJSON lines or one object)."""
    model, resolved = named
    action = convert.lifecycle_action(gen)
    if action == "unload":
        await call.engine.unload(model, resolved=resolved)
    elif action == "load":
        await call.engine.load(model, keep_alive=gen.keep_alive, resolved=resolved)
    if action is not None:  # a single object even when streaming, like Ollama (Open WebUI reads it with .json())
        return _json(responses.load_response(kind, model, action, time.time_ns()))
    streams = await start_all(call.request, call.engine, [gen], call.metrics, resolved)
    encoder = responses.GenerationStream(kind, model, raw=gen.raw)
    return await answer(call.request, call.metrics, encoder, streams, stream=stream, framing=NDJSON_FRAMING)


@router.post("/generate", response_model=schemas.GenerateResponse, responses=_STREAMED)
async def generate(req: schemas.GenerateRequest, call: CallDep) -> Response:
    """Completion. NDJSON stream unless `"stream": false`. `template` is a Jinja template (not Go); `shift` is
    accepted, but the context is never shifted (generation stops with "length")."""
    named = _resolved(call, req.model, ModelNotFound(""))
    gen = convert.to_generate_request(req, request_id=call.request_id)
    return await _generation(call, "generate", named, gen, req.stream is not False)


@router.post("/chat", response_model=schemas.ChatResponse, responses=_STREAMED)
async def chat(req: schemas.ChatRequest, call: CallDep) -> Response:
    """Chat completion. NDJSON stream unless `"stream": false`; tool calls arrive in their own chunk."""
    named = _resolved(call, req.model, InvalidRequest("model is required", param="model"))
    gen = convert.to_chat_request(req, request_id=call.request_id)
    return await _generation(call, "chat", named, gen, req.stream is not False)


async def _embeddings(call: Call, emb: EmbeddingRequest, resolved: ResolvedModel) -> Embeddings | None:
    """None when there is nothing to embed: the request only loads the model, as in Ollama."""
    if not emb.inputs:
        await call.engine.load(emb.model, keep_alive=emb.keep_alive, resolved=resolved)
        return None
    return await until_disconnect(call.request, call.engine.embed(emb, resolved), call.metrics)


@router.post("/embed", response_model=schemas.EmbedResponse)
async def embed(req: schemas.EmbedRequest, call: CallDep) -> Response:
    """Embeddings: one L2-normalised vector per input (the mean of the model's last hidden states over the
    input's tokens). An empty or missing `input` only loads the model."""
    model, resolved = _resolved(call, req.model, ModelNotFound(""))
    out = await _embeddings(call, convert.to_embed_request(req, request_id=call.request_id), resolved)
    return _json(responses.to_embed_response(model, out))


@router.post("/embeddings", response_model=schemas.EmbeddingsResponse)
async def embeddings(req: schemas.EmbeddingsRequest, call: CallDep) -> Response:
    """Legacy single embedding: `prompt` in, `{"embedding": [...]}` out, not normalised (as Ollama does)."""
    _, resolved = _resolved(call, req.model, InvalidRequest("model is required", param="model"))
    out = await _embeddings(call, convert.to_legacy_embedding_request(req, request_id=call.request_id), resolved)
    return _json(schemas.EmbeddingsResponse(embedding=list(out.vectors[0]) if out else []))


# --- models -----------------------------------------------------------------------------------------------------


@router.get("/tags", response_model=schemas.ListResponse)
@router.head("/tags", include_in_schema=False)
async def tags(catalog: CatalogDep) -> Response:
    """Local models and aliases, newest first."""
    return _json(responses.to_list_response(catalog.list_models()))


@router.get("/ps", response_model=schemas.ProcessResponse)
async def ps(engine: EngineDep) -> Response:
    """Resident models."""
    return _json(responses.to_ps_response(engine.running(), time.time()))


@router.post("/show", response_model=schemas.ShowResponse)
async def show(req: schemas.ModelRequest, catalog: CatalogDep) -> Response:
    """Model details (`model`, or the deprecated `name`). `template` is a Jinja chat template."""
    if not req.target:
        raise InvalidRequest("model is required", param="model")
    return _json(responses.to_show_response(catalog.show(req.target), verbose=bool(req.verbose)))


@router.post("/create", response_model=schemas.ProgressResponse, responses=_STREAMED)
async def create(req: schemas.CreateRequest, catalog: CatalogDep) -> Response:
    """Create an alias over an existing model: `from`, `system`, `template` (Jinja), `parameters`, `messages`,
    `quantize` (q8_0 -> bitsandbytes 8-bit LLM.int8; q4_0/q4_1/q4_K_S/q4_K_M -> bitsandbytes 4-bit NF4 with double
    quantization, applied at load), and, as an extension, a top-level `keep_alive`."""
    alias = convert.to_alias(req, now=time.time(), existing=catalog.get_alias(req.target) if req.target else None)
    # Validates names, the base and the template (rendered in the sandbox: off the event loop) before any reply.
    await asyncio.to_thread(catalog.put_alias, alias)
    statuses = convert.create_statuses(req, alias)
    if req.stream is False:
        return _json(statuses[-1])
    return stream_response(_iterate(encode_ndjson(s) for s in statuses), NDJSON)


async def _iterate(items: Iterator[str]) -> AsyncIterator[str]:
    for item in items:
        yield item


@router.post("/copy", response_class=Response)
async def copy(req: schemas.CopyRequest, catalog: CatalogDep) -> Response:
    """Copy a model or alias under a new alias name; 200 with an empty body."""
    source, destination = (req.source or "").strip(), (req.destination or "").strip()
    if not source:
        raise InvalidRequest("source is required", param="source")
    if not destination:
        raise InvalidRequest("destination is required", param="destination")
    catalog.copy(source, destination)
    return Response(status_code=200)


@router.delete("/delete", response_class=Response)
async def delete(req: schemas.ModelRequest, catalog: CatalogDep) -> Response:
    """Delete an alias or a pulled model; 200 with an empty body."""
    if not req.target:
        raise InvalidRequest("model is required", param="model")
    catalog.delete(req.target)
    return Response(status_code=200)


# --- pull / push ------------------------------------------------------------------------------------------------


async def _events(source: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    try:
        async for event in source:
            if not isinstance(event, dict):
                continue
            if event.get("error"):
                raise ServiceError(str(event["error"]))
            yield {k: v for k, v in event.items() if v is not None}
    except ServiceError:
        raise
    except Exception as e:  # a registry failure reaches the client as an error, not a trace
        log.warning("pull failed: %s", e)
        raise ServiceError(f"pull failed: {e}") from e
    finally:
        await aclose_quietly(source)


async def _last_event(events: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    last: dict[str, Any] = {"status": "success"}
    try:
        async for event in events:
            last = event
    finally:
        await aclose_quietly(events)
    return last


async def _through_manifest(events: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first events, up to the first past "pulling manifest": resolving the repo on the Hub happens there, so
    an unknown repo or an unreachable Hub still gets a real status code instead of an in-band error."""
    head: list[dict[str, Any]] = []
    async for event in events:
        head.append(event)
        if event.get("status") != "pulling manifest":
            break
    return head


async def _ndjson_lines(first: list[dict[str, Any]], events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """The events already read (`first`), then the rest as they come, as NDJSON lines."""
    try:
        for event in first:
            yield encode_ndjson(event)
        async for event in events:
            yield encode_ndjson(event)
    finally:
        await aclose_quietly(events)


@router.post("/pull", response_model=schemas.ProgressResponse, responses=_STREAMED)
async def pull(req: schemas.ModelRequest, request: Request, settings: SettingsDep, metrics: MetricsDep) -> Response:
    """Download a Hugging Face repo (`model`, or the deprecated `name`) into the HF cache, with progress lines."""
    from app.registry.pull import pull as pull_model

    name = req.target
    if not name:
        raise InvalidRequest("model is required", param="model")
    events = _events(iterate_in_thread(lambda: pull_model(name, settings=settings), name="hugllama-pull"))
    if req.stream is False:
        return _json(await until_disconnect(request, _last_event(events), metrics))
    try:
        first = await until_disconnect(request, _through_manifest(events), metrics)
    except BaseException:
        await aclose_quietly(events)
        raise
    return stream_response(guarded_stream(_ndjson_lines(first, events), _error_line, metrics=metrics), NDJSON)


@router.post("/push")
async def push() -> Response:
    """Not supported."""
    return _not_supported("push is not supported: models come from the Hugging Face Hub")


@router.post("/blobs/{digest}")
@router.head("/blobs/{digest}", include_in_schema=False)
async def blobs(digest: str) -> Response:
    """Not supported: models are created from existing models (`from`), not from uploaded files."""
    return _not_supported('blob uploads are not supported: create models with "from" an existing model')
