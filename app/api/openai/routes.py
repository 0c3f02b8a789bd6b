"""The OpenAI-compatible endpoints: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models. Thin handlers
over convert, embeddings and responses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from app.api.body import JSONBodyRoute
from app.api.deps import CatalogDep, EngineDep, MetricsDep, RequestIdDep
from app.api.errors import openai_body
from app.api.openai import convert, embeddings, responses
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
    ChunkEncoder,
    aclose_quietly,
    encode_response,
    encode_sse,
    encode_stream,
    guarded_stream,
    merge,
    stream_response,
    until_disconnect,
)
from app.engine.base import Engine
from app.engine.types import Chunk, GenerationRequest
from app.errors import ServiceError
from app.metrics import Metrics

router = APIRouter(prefix="/v1", tags=["openai"], route_class=JSONBodyRoute)


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


async def _answer(
    request: Request,
    encoder: ChunkEncoder[dict[str, Any]],
    streams: Sequence[AsyncIterator[Chunk]],
    stream: bool | None,
    metrics: Metrics,
) -> Response:
    """SSE events when streaming, else the one JSON body: both from the same encoder."""
    chunks = merge(streams)
    if stream:
        events = encode_stream(encoder, chunks, encode_sse)
        return stream_response(guarded_stream(events, sse_error, metrics=metrics, closing=SSE_DONE), SSE)
    return JSONResponse(await until_disconnect(request, encode_response(encoder, chunks), metrics))


@router.post("/chat/completions", response_model=ChatCompletionResponse)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, engine: EngineDep, metrics: MetricsDep, request_id: RequestIdDep
) -> Response:
    """Create a chat completion (SSE chunks when `stream` is true)."""
    requests = convert.to_chat_requests(body, request_id=request_id)
    streams = await start_all(request, engine, requests, metrics)
    ids = responses.ResponseIds.new("chatcmpl", body.model)
    return await _answer(request, responses.ChatStream(body, ids, len(streams)), streams, body.stream, metrics)


@router.post("/completions", response_model=CompletionResponse)
async def create_completion(
    body: CompletionRequest, request: Request, engine: EngineDep, metrics: MetricsDep, request_id: RequestIdDep
) -> Response:
    """Create a text completion from raw prompts (no chat template; SSE chunks when `stream` is true)."""
    requests = convert.to_completion_requests(body, request_id=request_id)
    prompts = convert.to_prompts(body.prompt)
    streams = await start_all(request, engine, requests, metrics)
    ids = responses.ResponseIds.new("cmpl", body.model)
    return await _answer(request, responses.CompletionStream(body, prompts, ids), streams, body.stream, metrics)


@router.post("/embeddings", response_model=EmbeddingResponse)
async def create_embedding(
    body: EmbeddingRequest, request: Request, engine: EngineDep, metrics: MetricsDep, request_id: RequestIdDep
) -> Response:
    """Embed each input: L2-normalised mean of the model's last hidden states (`dimensions` keeps the first N)."""
    req = embeddings.to_embedding_request(body, request_id=request_id)
    out = await until_disconnect(request, engine.embed(req), metrics)
    return JSONResponse(responses.json_body(embeddings.to_embedding_response(body, out)))


@router.get("/models", response_model=ModelList)
def list_models(catalog: CatalogDep) -> Response:
    """List the servable models and aliases."""
    return JSONResponse(responses.to_model_list(catalog.list_models()))


@router.get("/models/{model:path}", response_model=Model)
def retrieve_model(model: str, catalog: CatalogDep) -> Response:
    """Describe one model (404 when unknown); HF ids may contain '/'."""
    entry = responses.find_model(catalog.list_models(), model)
    if entry is not None:
        return JSONResponse(responses.json_body(responses.to_model(entry)))
    catalog.resolve(model)  # raises ModelNotFound (404) or InvalidRequest (400)
    unlisted = Model(id=model, object="model", created=0, owned_by=responses.owner(model))
    return JSONResponse(responses.json_body(unlisted))
