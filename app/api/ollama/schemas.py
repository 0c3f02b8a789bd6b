"""Ollama wire models (names from ollama `api/types.go`): requests as clients send them, responses as they parse them.

Pydantic only, never torch. Fields whose JSON type varies (`format`, `keep_alive`, `think`, `options`, `tools`)
are `Any` here and validated in convert.py / options.py, so their errors read like Ollama's.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Go's encoding/json ignores unknown fields; so do we.
_REQUEST = ConfigDict(extra="ignore", populate_by_name=True)
_RESPONSE = ConfigDict(extra="forbid")


# --- requests ---------------------------------------------------------------------------------------------------


class ToolCallFunction(BaseModel):
    model_config = _REQUEST

    index: int | None = None
    name: str
    arguments: Any = None  # an object; a JSON string is tolerated (langchain history) and parsed


class ToolCall(BaseModel):
    model_config = _REQUEST

    id: str | None = None
    function: ToolCallFunction


class Message(BaseModel):
    """A chat message. `content` may be absent (ollama-python drops falsy keys): it then means ""."""

    model_config = _REQUEST

    role: str
    content: str | None = None
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class GenerationFields(BaseModel):
    """Fields shared by /api/generate and /api/chat."""

    model_config = _REQUEST

    model: str | None = None
    stream: bool | None = None  # None = true (Ollama streams by default)
    format: Any = None  # "json" | JSON schema object | "" / null
    options: Any = None
    keep_alive: Any = None  # seconds (number) or a Go duration string
    think: Any = None
    truncate: bool | None = None
    shift: bool | None = Field(
        None,
        description="Accepted for compatibility. The engine never shifts the context: generation stops with "
        'done_reason "length" at the context limit, which is what shift=false asks for.',
    )
    logprobs: bool | None = None
    top_logprobs: int | None = None


class GenerateRequest(GenerationFields):
    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = Field(
        None,
        description="Prompt template override. Hugging Llama uses Jinja (transformers chat-template syntax, "
        "e.g. `{% for m in messages %}...{% endfor %}`), not Ollama's Go templates.",
    )
    context: list[int] | None = None
    raw: bool | None = None
    images: list[str] | None = None


class ChatRequest(GenerationFields):
    messages: list[Message] | None = None
    tools: Any = None


class ModelRequest(BaseModel):
    """Show / delete / pull / push: `model`, with the deprecated `name` still accepted."""

    model_config = _REQUEST

    model: str | None = None
    name: str | None = None
    verbose: bool | None = None
    insecure: bool | None = None
    stream: bool | None = None

    @property
    def target(self) -> str:
        return (self.model or self.name or "").strip()


class CopyRequest(BaseModel):
    model_config = _REQUEST

    source: str | None = None
    destination: str | None = None


class CreateRequest(BaseModel):
    """Ollama's JSON create form. `keep_alive` at the top level is a Hugging Llama extension (alias default)."""

    model_config = _REQUEST

    model: str | None = None
    name: str | None = None
    from_: str | None = Field(None, alias="from")
    system: str | None = None
    template: str | None = None
    parameters: Any = None
    messages: list[Message] | None = None
    quantize: str | None = None
    license: str | list[str] | None = None
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    keep_alive: Any = None
    stream: bool | None = None

    @property
    def target(self) -> str:
        return (self.model or self.name or "").strip()


class EmbedRequest(BaseModel):
    """/api/embed. `input` is a string or a list of strings (checked in convert.py, with Ollama's messages)."""

    model_config = _REQUEST

    model: str | None = None
    input: Any = None
    truncate: bool | None = None
    dimensions: int | None = None
    options: Any = None
    keep_alive: Any = None


class EmbeddingsRequest(BaseModel):
    """/api/embeddings (legacy): one `prompt`, an unnormalised vector back."""

    model_config = _REQUEST

    model: str | None = None
    prompt: str | None = None
    options: Any = None
    keep_alive: Any = None


# --- responses --------------------------------------------------------------------------------------------------


class TokenLogprob(BaseModel):
    model_config = _RESPONSE

    token: str
    logprob: float
    bytes: list[int] | None = None


class Logprob(TokenLogprob):
    top_logprobs: list[TokenLogprob] | None = None


class ToolCallFunctionOut(BaseModel):
    model_config = _RESPONSE

    index: int
    name: str
    arguments: dict[str, Any]


class ToolCallOut(BaseModel):
    model_config = _RESPONSE

    id: str | None = None
    function: ToolCallFunctionOut


class ChatMessageOut(BaseModel):
    model_config = _RESPONSE

    role: str = "assistant"
    content: str = ""
    tool_calls: list[ToolCallOut] | None = None


class _Metrics(BaseModel):
    """What generate and chat lines end with: Ollama's embedded `Metrics` (on the done line), then `logprobs`.
    A response class lists it first among its bases, so these fields follow the class's own (as in Ollama's JSON)."""

    model_config = _RESPONSE

    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None
    logprobs: list[Logprob] | None = None


class _GenerateLine(BaseModel):
    model_config = _RESPONSE

    model: str
    created_at: str
    response: str = ""
    done: bool = False
    done_reason: str | None = None
    context: list[int] | None = None


class GenerateResponse(_Metrics, _GenerateLine):
    """One /api/generate line (or the one non-streamed object)."""


class _ChatLine(BaseModel):
    model_config = _RESPONSE

    model: str
    created_at: str
    message: ChatMessageOut = Field(default_factory=ChatMessageOut)
    done: bool = False
    done_reason: str | None = None


class ChatResponse(_Metrics, _ChatLine):
    """One /api/chat line (or the one non-streamed object)."""


class ModelDetails(BaseModel):
    model_config = _RESPONSE

    parent_model: str = ""
    format: str = ""
    family: str = ""
    families: list[str] = Field(default_factory=list)
    parameter_size: str = ""
    quantization_level: str = ""


class ListModel(BaseModel):
    model_config = _RESPONSE

    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails
    capabilities: list[str] | None = None  # Ollama HEAD lists them in /api/tags too


class ListResponse(BaseModel):
    model_config = _RESPONSE

    models: list[ListModel]


class ProcessModel(BaseModel):
    model_config = _RESPONSE

    name: str
    model: str
    size: int
    digest: str
    details: ModelDetails
    expires_at: str
    size_vram: int
    context_length: int


class ProcessResponse(BaseModel):
    model_config = _RESPONSE

    models: list[ProcessModel]


class ShowResponse(BaseModel):
    """`model_info` is always serialised (ollama-python requires the key); the rest is omitted when unset."""

    model_config = _RESPONSE

    license: str | None = None
    modelfile: str | None = None
    parameters: str | None = None
    template: str | None = None
    system: str | None = None
    details: ModelDetails = Field(default_factory=ModelDetails)
    model_info: dict[str, Any] = Field(default_factory=dict)
    capabilities: list[str] | None = None
    messages: list[dict[str, Any]] | None = None
    modified_at: str | None = None


class ProgressResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: str | None = None
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class EmbedResponse(BaseModel):
    model_config = _RESPONSE

    model: str
    embeddings: list[list[float]]
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None


class EmbeddingsResponse(BaseModel):
    model_config = _RESPONSE

    embedding: list[float]
