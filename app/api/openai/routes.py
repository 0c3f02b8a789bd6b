"""The OpenAI-compatible endpoints: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models. Thin handlers
over convert, embeddings and responses."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, Protocol

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from app.api.deps import CatalogDep, EngineDep, MetricsDep
from app.api.errors import json_depth_guard, openai_body
from app.api.openai import choices, convert, embeddings, responses
from app.api.openai.schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Model,
    ModelList,
)
from app.api.streaming import (
    SSE,
    SSE_DONE,
    aclose_quietly,
    encode_sse,
    guarded_stream,
    stream_response,
    until_disconnect,
)
from app.engine.base import Engine
from app.engine.types import Chunk, GenerationRequest
from app.errors import ServiceError
from app.metrics import Metrics


class _JSONBodyRoute(APIRoute):
    """Parses every request body as JSON whatever its Content-Type (`curl -d` sends form-encoded), as Ollama does."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
            scope = {**request.scope, "headers": [*headers, (b"content-type", b"application/json")]}
            return await handler(Request(scope, request.receive))

        return route


router = APIRouter(prefix="/v1", tags=["openai"], route_class=_JSONBodyRoute, dependencies=[Depends(json_depth_guard)])


class _Encoder(Protocol):
    def start(self) -> list[dict[str, Any]]: ...
    def feed(self, index: int, chunk: Chunk) -> list[dict[str, Any]]: ...
    def end(self) -> list[dict[str, Any]]: ...


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "")


def sse_error(err: ServiceError) -> str:
    return encode_sse(openai_body(err.message, err.status_code, param=err.param, code=err.code))


async def start_all(
    request: Request, engine: Engine, requests: Sequence[GenerationRequest], metrics: Metrics
) -> list[AsyncIterator[Chunk]]:
    """Start every choice before the first byte; if one start fails, the ones already started are closed."""
    streams: list[AsyncIterator[Chunk]] = []
    try:
        for req in requests:
            # Admission, loading and rendering stop when the client leaves (a slow template render is killed).
            streams.append(await until_disconnect(request, engine.start(req), metrics))
    except BaseException:
        for stream in streams:
            await aclose_quietly(stream)
        raise
    return streams


async def sse_events(encoder: _Encoder, streams: Sequence[AsyncIterator[Chunk]]) -> AsyncIterator[str]:
    for body in encoder.start():
        yield encode_sse(body)
    async with contextlib.aclosing(choices.merge(streams)) as merged:
        async for index, chunk in merged:
            for body in encoder.feed(index, chunk):
                yield encode_sse(body)
    for body in encoder.end():
        yield encode_sse(body)


def _sse(encoder: _Encoder, streams: Sequence[AsyncIterator[Chunk]], metrics: Metrics) -> Response:
    body = guarded_stream(sse_events(encoder, streams), sse_error, metrics=metrics, closing=SSE_DONE)
    return stream_response(body, SSE)


@router.post("/chat/completions", response_model=ChatCompletionResponse)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, engine: EngineDep, metrics: MetricsDep
) -> Response:
    """Create a chat completion (SSE chunks when `stream` is true)."""
    requests = convert.to_chat_requests(body, request_id=_request_id(request))
    streams = await start_all(request, engine, requests, metrics)
    ids = responses.ResponseIds.new("chatcmpl", body.model)
    if body.stream:
        return _sse(responses.ChatStream(body, ids, len(streams)), streams, metrics)
    results = await until_disconnect(request, choices.collect(streams), metrics)
    return JSONResponse(responses.to_chat_response(body, results, ids))


@router.post("/completions", response_model=CompletionResponse)
async def create_completion(
    body: CompletionRequest, request: Request, engine: EngineDep, metrics: MetricsDep
) -> Response:
    """Create a text completion from raw prompts (no chat template; SSE chunks when `stream` is true)."""
    requests = convert.to_completion_requests(body, request_id=_request_id(request))
    prompts = convert.to_prompts(body.prompt)
    streams = await start_all(request, engine, requests, metrics)
    ids = responses.ResponseIds.new("cmpl", body.model)
    if body.stream:
        return _sse(responses.CompletionStream(body, prompts, ids), streams, metrics)
    results = await until_disconnect(request, choices.collect(streams), metrics)
    return JSONResponse(responses.to_completion_response(body, prompts, results, ids))


@router.post("/embeddings", response_model=EmbeddingResponse)
async def create_embedding(
    body: EmbeddingRequest, request: Request, engine: EngineDep, metrics: MetricsDep
) -> Response:
    """Embed each input: L2-normalised mean of the model's last hidden states (`dimensions` keeps the first N)."""
    req = embeddings.to_embedding_request(body, request_id=_request_id(request))
    out = await until_disconnect(request, engine.embed(req), metrics)
    return JSONResponse(responses.wire(embeddings.to_embedding_response(body, out)))


@router.get("/models", response_model=ModelList)
def list_models(catalog: CatalogDep) -> Response:
    """List the servable models and aliases."""
    return JSONResponse(responses.to_model_list(catalog.list_models()))


@router.get("/models/{model:path}", response_model=Model)
def retrieve_model(model: str, catalog: CatalogDep) -> Response:
    """Describe one model (404 when unknown); HF ids may contain '/'."""
    entry = responses.find_model(catalog.list_models(), model)
    if entry is not None:
        return JSONResponse(responses.wire(responses.to_model(entry)))
    catalog.resolve(model)  # raises ModelNotFound (404) or InvalidRequest (400)
    return JSONResponse(responses.wire(Model(id=model, object="model", created=0, owned_by=responses.owner(model))))
