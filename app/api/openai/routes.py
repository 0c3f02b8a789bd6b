"""The OpenAI-compatible endpoints: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models. Thin handlers
over convert, embeddings and responses."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from app.api.body import JSONBodyRoute
from app.api.deps import CallDep, CatalogDep
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
from app.api.streaming import SSE, SSE_DONE, Framing, answer, encode_sse, start_all, until_disconnect
from app.errors import ServiceError

router = APIRouter(prefix="/v1", tags=["openai"], route_class=JSONBodyRoute)


def sse_error(err: ServiceError) -> str:
    return encode_sse(openai_body(err.message, err.status_code, param=err.param, code=err.code))


SSE_FRAMING = Framing(media_type=SSE, frame=encode_sse, error=sse_error, whole=JSONResponse, closing=SSE_DONE)


@router.post("/chat/completions", response_model=ChatCompletionResponse)
async def create_chat_completion(body: ChatCompletionRequest, call: CallDep) -> Response:
    """Create a chat completion (SSE chunks when `stream` is true)."""
    requests = convert.to_chat_requests(body, request_id=call.request_id)
    # The choices' one model, resolved once for all of them after the body's checks (the engine does not again).
    resolved = call.catalog.resolve(body.model)
    streams = await start_all(call.request, call.engine, requests, call.metrics, resolved)
    encoder = responses.ChatStream(body, responses.ResponseIds.new("chatcmpl", body.model), len(streams))
    return await answer(call.request, call.metrics, encoder, streams, stream=bool(body.stream), framing=SSE_FRAMING)


@router.post("/completions", response_model=CompletionResponse)
async def create_completion(body: CompletionRequest, call: CallDep) -> Response:
    """Create a text completion from raw prompts (no chat template; SSE chunks when `stream` is true)."""
    requests = convert.to_completion_requests(body, request_id=call.request_id)
    prompts = convert.to_prompts(body.prompt)
    resolved = call.catalog.resolve(body.model)  # once for every choice, after the body's checks
    streams = await start_all(call.request, call.engine, requests, call.metrics, resolved)
    encoder = responses.CompletionStream(body, prompts, responses.ResponseIds.new("cmpl", body.model))
    return await answer(call.request, call.metrics, encoder, streams, stream=bool(body.stream), framing=SSE_FRAMING)


@router.post("/embeddings", response_model=EmbeddingResponse)
async def create_embedding(body: EmbeddingRequest, call: CallDep) -> Response:
    """Embed each input: L2-normalised mean of the model's last hidden states (`dimensions` keeps the first N)."""
    req = embeddings.to_embedding_request(body, request_id=call.request_id)
    resolved = call.catalog.resolve(req.model)  # once: the engine does not resolve it again
    out = await until_disconnect(call.request, call.engine.embed(req, resolved), call.metrics)
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
