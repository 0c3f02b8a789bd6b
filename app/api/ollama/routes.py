"""Ollama's native API (/api/*): thin handlers that parse, convert (convert.py), call the engine or catalog, and
frame the answer as one JSON object or NDJSON lines. /api/version and / live in app/api/health.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from app.api.deps import CatalogDep, EngineDep, MetricsDep, SettingsDep
from app.api.errors import ollama_body, parse_json_body
from app.api.ollama import convert, responses, schemas
from app.api.streaming import NDJSON, aclose_quietly, encode_ndjson, guarded_stream, stream_response, until_disconnect
from app.engine.types import Chunk, EmbeddingRequest, Embeddings, GenerationRequest
from app.errors import InvalidRequest, ModelNotFound, ServiceError
from app.metrics import Metrics

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["ollama"])

M = TypeVar("M", bound=BaseModel)
JSON = "application/json; charset=utf-8"


async def _body(request: Request, model: type[M]) -> M:
    return convert.parse_body(model, parse_json_body(await request.body()))


def _json(obj: BaseModel | dict[str, Any]) -> Response:
    if isinstance(obj, BaseModel):
        return Response(obj.model_dump_json(exclude_none=True), media_type=JSON)
    return JSONResponse(obj)


def _error_line(err: ServiceError) -> str:
    return encode_ndjson(ollama_body(err.message))  # the same rendering (no server paths) as before the stream


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "")


def _not_supported(message: str) -> Response:
    return JSONResponse({"error": message}, status_code=501)


# --- generation -------------------------------------------------------------------------------------------------


async def _lines(chunks: AsyncIterator[Chunk], builder: responses.ResponseBuilder) -> AsyncIterator[str]:
    try:
        async for chunk in chunks:
            for obj in builder.feed(chunk):
                yield encode_ndjson(obj)
        for obj in builder.close():
            yield encode_ndjson(obj)
    finally:
        await aclose_quietly(chunks)


async def _fold(chunks: AsyncIterator[Chunk], builder: responses.ResponseBuilder) -> responses.Response:
    try:
        async for chunk in chunks:
            builder.feed(chunk)
        builder.close()
        return builder.fold()
    finally:
        await aclose_quietly(chunks)


async def _generation(
    request: Request,
    kind: responses.Kind,
    model: str,
    gen: GenerationRequest,
    stream: bool,
    engine: EngineDep,
    metrics: Metrics,
) -> Response:
    action = convert.lifecycle_action(gen)
    if action == "unload":
        await engine.unload(model)
    elif action == "load":
        await engine.load(model, keep_alive=gen.keep_alive)
    if action is not None:  # a single object even when streaming, like Ollama (Open WebUI reads it with .json())
        return _json(responses.load_response(kind, model, action, time.time_ns()))
    # Admission, loading and rendering stop when the client leaves (a slow template render is killed).
    chunks = await until_disconnect(request, engine.start(gen), metrics)
    builder = responses.ResponseBuilder(kind, model, raw=gen.raw)
    if stream:
        return stream_response(guarded_stream(_lines(chunks, builder), _error_line, metrics=metrics), NDJSON)
    return _json(await until_disconnect(request, _fold(chunks, builder), metrics))


@router.post("/generate")
async def generate(request: Request, engine: EngineDep, catalog: CatalogDep, metrics: MetricsDep) -> Response:
    """Completion. NDJSON stream unless `"stream": false`. `template` is a Jinja template (not Go); `shift` is
    accepted, but the context is never shifted (generation stops with "length")."""
    req = await _body(request, schemas.GenerateRequest)
    if not req.model:
        raise ModelNotFound("")
    catalog.resolve(req.model)  # 404 / invalid name before any other check, as Ollama orders them
    gen = convert.to_generate_request(req, request_id=_request_id(request))
    return await _generation(request, "generate", req.model, gen, req.stream is not False, engine, metrics)


@router.post("/chat")
async def chat(request: Request, engine: EngineDep, catalog: CatalogDep, metrics: MetricsDep) -> Response:
    """Chat completion. NDJSON stream unless `"stream": false`; tool calls arrive in their own chunk."""
    req = await _body(request, schemas.ChatRequest)
    if not req.model:
        raise InvalidRequest("model is required", param="model")
    catalog.resolve(req.model)
    gen = convert.to_chat_request(req, request_id=_request_id(request))
    return await _generation(request, "chat", req.model, gen, req.stream is not False, engine, metrics)


async def _embeddings(
    request: Request, engine: EngineDep, metrics: Metrics, emb: EmbeddingRequest
) -> Embeddings | None:
    """None when there is nothing to embed: the request only loads the model, as in Ollama."""
    if not emb.inputs:
        await engine.load(emb.model, keep_alive=emb.keep_alive)
        return None
    return await until_disconnect(request, engine.embed(emb), metrics)


@router.post("/embed")
async def embed(request: Request, engine: EngineDep, catalog: CatalogDep, metrics: MetricsDep) -> Response:
    """Embeddings: one L2-normalised vector per input (the mean of the model's last hidden states over the
    input's tokens). An empty or missing `input` only loads the model."""
    req = await _body(request, schemas.EmbedRequest)
    if not req.model:
        raise ModelNotFound("")
    catalog.resolve(req.model)
    out = await _embeddings(request, engine, metrics, convert.to_embed_request(req, request_id=_request_id(request)))
    return _json(responses.to_embed_response(req.model, out))


@router.post("/embeddings")
async def embeddings(request: Request, engine: EngineDep, catalog: CatalogDep, metrics: MetricsDep) -> Response:
    """Legacy single embedding: `prompt` in, `{"embedding": [...]}` out, not normalised (as Ollama does)."""
    req = await _body(request, schemas.EmbeddingsRequest)
    if not req.model:
        raise InvalidRequest("model is required", param="model")
    catalog.resolve(req.model)
    emb = convert.to_legacy_embedding_request(req, request_id=_request_id(request))
    out = await _embeddings(request, engine, metrics, emb)
    return _json(schemas.EmbeddingsResponse(embedding=list(out.vectors[0]) if out else []))


# --- models -----------------------------------------------------------------------------------------------------


@router.api_route("/tags", methods=["GET", "HEAD"])
async def tags(catalog: CatalogDep) -> Response:
    """Local models and aliases, newest first."""
    return _json(responses.to_list_response(catalog.list_models()))


@router.get("/ps")
async def ps(engine: EngineDep) -> Response:
    """Resident models."""
    return _json(responses.to_ps_response(engine.running(), time.time()))


@router.post("/show")
async def show(request: Request, catalog: CatalogDep) -> Response:
    """Model details (`model`, or the deprecated `name`). `template` is a Jinja chat template."""
    req = await _body(request, schemas.ModelRequest)
    if not req.target:
        raise InvalidRequest("model is required", param="model")
    return _json(responses.to_show_response(catalog.show(req.target), verbose=bool(req.verbose)))


@router.post("/create")
async def create(request: Request, catalog: CatalogDep) -> Response:
    """Create an alias over an existing model: `from`, `system`, `template` (Jinja), `parameters`, `messages`,
    `quantize` (q8_0 -> bitsandbytes 8-bit LLM.int8; q4_0/q4_1/q4_K_S/q4_K_M -> bitsandbytes 4-bit NF4 with double
    quantization, applied at load), and, as an extension, a top-level `keep_alive`."""
    req = await _body(request, schemas.CreateRequest)
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


@router.post("/copy")
async def copy(request: Request, catalog: CatalogDep) -> Response:
    """Copy a model or alias under a new alias name; 200 with an empty body."""
    req = await _body(request, schemas.CopyRequest)
    if not (req.source or "").strip():
        raise InvalidRequest("source is required", param="source")
    if not (req.destination or "").strip():
        raise InvalidRequest("destination is required", param="destination")
    catalog.copy(req.source.strip(), req.destination.strip())  # type: ignore[union-attr]
    return Response(status_code=200)


@router.delete("/delete")
async def delete(request: Request, catalog: CatalogDep) -> Response:
    """Delete an alias or a pulled model; 200 with an empty body."""
    req = await _body(request, schemas.ModelRequest)
    if not req.target:
        raise InvalidRequest("model is required", param="model")
    catalog.delete(req.target)
    return Response(status_code=200)


# --- pull / push ------------------------------------------------------------------------------------------------


async def _in_thread(make: Callable[[], Iterator[dict[str, Any]]]) -> AsyncIterator[dict[str, Any]]:
    """Drive a blocking generator on its own thread; items arrive through an asyncio.Queue."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    stop = threading.Event()

    def post(kind: str, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening any more
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def work() -> None:
        gen: Iterator[dict[str, Any]] | None = None
        try:
            gen = make()
            for item in gen:
                if stop.is_set():
                    break
                post("item", item)
        except BaseException as e:  # handed to the event loop side
            post("error", e)
            return
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
        post("end", None)

    threading.Thread(target=work, name="hugllama-pull", daemon=True).start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()


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


async def _head(events: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first events, up to the first past "pulling manifest": resolving the repo on the Hub happens there, so
    an unknown repo or an unreachable Hub still gets a real status code instead of an in-band error."""
    head: list[dict[str, Any]] = []
    async for event in events:
        head.append(event)
        if event.get("status") != "pulling manifest":
            break
    return head


async def _chain(head: list[dict[str, Any]], events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    try:
        for event in head:
            yield encode_ndjson(event)
        async for event in events:
            yield encode_ndjson(event)
    finally:
        await aclose_quietly(events)


@router.post("/pull")
async def pull(request: Request, settings: SettingsDep, metrics: MetricsDep) -> Response:
    """Download a Hugging Face repo (`model`, or the deprecated `name`) into the HF cache, with progress lines."""
    from app.registry.pull import pull as pull_model

    req = await _body(request, schemas.ModelRequest)
    name = req.target
    if not name:
        raise InvalidRequest("model is required", param="model")
    events = _events(_in_thread(lambda: pull_model(name, settings=settings)))
    if req.stream is False:
        return _json(await until_disconnect(request, _last_event(events), metrics))
    try:
        head = await until_disconnect(request, _head(events), metrics)
    except BaseException:
        await aclose_quietly(events)
        raise
    return stream_response(guarded_stream(_chain(head, events), _error_line, metrics=metrics), NDJSON)


@router.post("/push")
async def push() -> Response:
    """Not supported."""
    return _not_supported("push is not supported: models come from the Hugging Face Hub")


@router.api_route("/blobs/{digest}", methods=["HEAD", "POST"])
async def blobs(digest: str) -> Response:
    """Not supported: models are created from existing models (`from`), not from uploaded files."""
    return _not_supported('blob uploads are not supported: create models with "from" an existing model')
