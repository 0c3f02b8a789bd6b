"""/v1/embeddings both ways: the request body -> EmbeddingRequest, Embeddings -> the `list` of `embedding`
objects (floats, or base64 of little-endian float32 as the OpenAI SDK asks by default). Pure (no HTTP, no torch)."""

from __future__ import annotations

import base64
import struct
from typing import Any

from app.api.openai.schemas import Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage
from app.engine import types
from app.errors import InvalidRequest

ENCODINGS = ("float", "base64")


def to_inputs(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    if isinstance(value, list) and value and all(isinstance(v, int | list) for v in value):
        raise InvalidRequest("token id inputs are not supported; send text", param="input")
    raise InvalidRequest("invalid input: send a string or a non-empty list of strings", param="input")


def to_embedding_request(req: EmbeddingRequest, *, request_id: str = "") -> types.EmbeddingRequest:
    encoding = req.encoding_format or "float"
    if encoding not in ENCODINGS:
        raise InvalidRequest(
            f"Invalid value for 'encoding_format' = {encoding}. Supported values: ['float', 'base64'].",
            param="encoding_format",
        )
    return types.EmbeddingRequest(
        model=req.model, inputs=to_inputs(req.input), dimensions=req.dimensions, request_id=request_id
    )


def encode(vector: tuple[float, ...], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return list(vector)


def to_embedding_response(req: EmbeddingRequest, out: types.Embeddings) -> EmbeddingResponse:
    encoding = req.encoding_format or "float"
    return EmbeddingResponse(
        object="list",
        data=[Embedding(object="embedding", embedding=encode(v, encoding), index=i) for i, v in enumerate(out.vectors)],
        model=req.model,
        usage=EmbeddingUsage(prompt_tokens=out.prompt_tokens, total_tokens=out.prompt_tokens),
    )
