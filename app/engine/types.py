"""The engine's vocabulary: what a request asks for and what comes back. No torch, no HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# Part of GenerationRequest; defined below the engine (app/params.py) so the registry can use it too.
from app.params import SamplingParams as SamplingParams


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    role: str  # system | user | assistant | tool
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None  # tool name on role=tool messages


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One generation, protocol-neutral.

    Exactly one of `messages` (chat: rendered with the chat template) or `prompt` is set. `raw` prompts skip
    the template. `format` is None, "json" or a JSON schema dict. `tool_choice` is "none", "auto",
    "required" or a function name to force.
    """

    model: str
    messages: tuple[Message, ...] | None = None
    prompt: str | None = None
    raw: bool = False
    system: str | None = None
    template: str | None = None
    suffix: str | None = None
    context: tuple[int, ...] | None = None
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str = "auto"
    format: str | dict[str, Any] | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    keep_alive: float | None = None  # seconds; None = alias/server default; negative = forever
    truncate: bool = True
    request_id: str = ""
    protocol: str = ""  # "ollama" | "openai", for metrics labels


@dataclass(frozen=True, slots=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...] = ()
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Timings:
    """Nanoseconds, as Ollama reports them."""

    total_ns: int = 0
    load_ns: int = 0
    prompt_eval_ns: int = 0
    eval_ns: int = 0


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of output. The last chunk of a stream has `finish_reason`, `usage` and `timings` set."""

    text: str = ""
    logprobs: tuple[TokenLogprob, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    timings: Timings | None = None
    context: tuple[int, ...] | None = None  # prompt + output token ids (Ollama generate `context`)


@dataclass(frozen=True, slots=True)
class RunningModel:
    """A resident model, for /api/ps and the status API."""

    name: str
    size_bytes: int
    vram_bytes: int
    estimate_bytes: int
    expires_at: float | None  # epoch seconds; None = never
    context_length: int
    device: str
    quantization: str
    details: dict[str, Any] = field(default_factory=dict)
    digest: str = ""


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """Embed each of `inputs` (raw text, no chat template) with a resident model.

    `truncate` cuts an input at the context length (False: a 400 instead); `dimensions` keeps the first N
    components; `normalize` returns unit vectors (Ollama's legacy /api/embeddings does not).
    """

    model: str
    inputs: tuple[str, ...]
    truncate: bool = True
    dimensions: int | None = None
    normalize: bool = True
    num_ctx: int | None = None
    keep_alive: float | None = None
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: tuple[tuple[float, ...], ...]  # one per input, in order
    prompt_tokens: int
    load_ns: int = 0
    total_ns: int = 0
