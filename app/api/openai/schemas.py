"""OpenAI wire models for /v1: chat completions, legacy completions, embeddings, models, errors (upstream names).

Requests accept unknown fields (`extra="allow"`, logged at debug); `convert.py` rejects the recognised ones that
would change the output and that we do not implement. Pydantic only (no torch); from `app` only the engine's
sampling ranges (app/param_rules.py), so both protocols refuse the same values.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.param_rules import bounds

log = logging.getLogger(__name__)

Bias = Annotated[float, Field(ge=-100, le=100)]


class OpenAIBaseModel(BaseModel):
    """Request base: unknown fields are kept in `model_extra` and logged (vLLM's `__log_extra_fields__`)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @model_validator(mode="after")
    def _log_extra_fields(self) -> Self:
        if self.model_extra:
            log.debug("%s: unrecognised fields %s", type(self).__name__, sorted(self.model_extra))
        return self


class WireModel(BaseModel):
    """Response base: serialised with `exclude_unset`, so every field a response carries is set explicitly."""

    model_config = ConfigDict(populate_by_name=True)


# --- requests ---------------------------------------------------------------------------------------------------


class StreamOptions(OpenAIBaseModel):
    include_usage: bool | None = None


class JsonSchemaSpec(OpenAIBaseModel):
    name: str | None = None
    description: str | None = None
    schema_: Any = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(OpenAIBaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class FunctionDefinition(OpenAIBaseModel):
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatCompletionToolParam(OpenAIBaseModel):
    type: str = "function"
    function: FunctionDefinition | None = None


class ChatCompletionMessageParam(OpenAIBaseModel):
    """One message; `content` is a string, a list of content parts or null (checked in convert.py)."""

    role: str
    content: Any = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    function_call: dict[str, Any] | None = None  # legacy assistant turn


class SamplingFields(OpenAIBaseModel):
    """Fields shared by both generation endpoints.

    Beyond OpenAI's fields, the vLLM extras top_k (-1 or 0 disables), min_p, typical_p, repetition_penalty,
    min_tokens, ignore_eos and guided_json (a JSON schema, like response_format json_schema) are implemented.
    Absent temperature/top_p stay unset: OpenAI's default of 1.0 is not forced, so alias presets apply.
    """

    model: str
    # Ranges are the engine's (app/param_rules.py); OpenAI's own limits are written beside them.
    temperature: float | None = Field(None, **bounds("temperature"), le=2)
    top_p: float | None = Field(None, gt=0, le=bounds("top_p")["le"])  # OpenAI refuses 0: its lower bound is open
    n: int | None = Field(None, ge=1, le=16)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, Bias] | None = None
    # -1 means random (llama.cpp's convention); seeds are signed 64-bit, as the clients send them.
    seed: int | None = Field(None, **bounds("seed"))
    response_format: ResponseFormat | None = None
    user: str | None = None
    # vLLM extras
    top_k: int | None = Field(None, ge=-1, description="0 or -1 disables top-k.")  # vLLM's -1 becomes 0
    min_p: float | None = Field(None, **bounds("min_p"))
    typical_p: float | None = Field(None, **bounds("typical_p"))
    repetition_penalty: float | None = Field(None, **bounds("repetition_penalty"), le=10)
    min_tokens: int | None = Field(None, **bounds("min_tokens"))
    ignore_eos: bool | None = None
    guided_json: dict[str, Any] | str | None = None


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatCompletionMessageParam] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, **bounds("top_logprobs"))
    tools: list[ChatCompletionToolParam] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None  # legacy, mapped to tools
    function_call: str | dict[str, Any] | None = None  # legacy, mapped to tool_choice
    metadata: dict[str, Any] | None = None
    store: bool | None = None


class CompletionRequest(SamplingFields):
    prompt: Any = Field(description="A string or a list of strings (one batch entry each).")
    suffix: str | None = None
    echo: bool | None = False
    best_of: int | None = Field(None, ge=1, le=16)
    logprobs: int | None = Field(None, **bounds("top_logprobs"))
    max_tokens: int | None = Field(16, ge=1)


class EmbeddingRequest(OpenAIBaseModel):
    model: str
    input: Any = Field(description="A string or a non-empty list of strings (token-id inputs are not supported).")
    dimensions: int | None = Field(None, ge=1)
    encoding_format: str | None = None  # "float" (default) or "base64"
    user: str | None = None


# --- responses --------------------------------------------------------------------------------------------------


class TopLogprob(WireModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatCompletionTokenLogprob(WireModel):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(WireModel):
    content: list[ChatCompletionTokenLogprob] | None = None


class FunctionCall(WireModel):
    name: str
    arguments: str  # a JSON string, as OpenAI sends it


class ChatCompletionMessageToolCall(WireModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatCompletionMessage(WireModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ChatCompletionMessageToolCall] | None = None
    function_call: FunctionCall | None = None


class ChatCompletionChoice(WireModel):
    index: int
    message: ChatCompletionMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class PromptTokensDetails(WireModel):
    cached_tokens: int = 0


class CompletionUsage(WireModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class ChatCompletionResponse(WireModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None


class DeltaFunctionCall(WireModel):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(WireModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall | None = None


class DeltaMessage(WireModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None
    function_call: DeltaFunctionCall | None = None


class ChatCompletionStreamChoice(WireModel):
    index: int
    delta: DeltaMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionStreamResponse(WireModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatCompletionStreamChoice]
    usage: CompletionUsage | None = None


class CompletionLogprobs(WireModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(WireModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class CompletionResponse(WireModel):
    """Both the response and, with `stream`, each chunk (OpenAI uses one shape for both)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = None


class Model(WireModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(WireModel):
    object: Literal["list"] = "list"
    data: list[Model]


class Embedding(WireModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str  # str: base64 of little-endian float32
    index: int


class EmbeddingUsage(WireModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(WireModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class ErrorDetail(WireModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(WireModel):
    error: ErrorDetail
