"""The engine's vocabulary: what a request asks for and what comes back. No torch, no HTTP."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Generation options. `None` means "not set here": a lower layer's value (alias, model, server) applies.

    `merged(base)` overlays self on base; `resolved()` fills what is still unset with the server defaults.
    """

    temperature: float | None = None  # 0 = greedy
    top_p: float | None = None
    top_k: int | None = None  # 0 = disabled
    min_p: float | None = None
    typical_p: float | None = None
    repetition_penalty: float | None = None  # multiplicative over the last repeat_last_n tokens
    repeat_last_n: int | None = None  # 0 disabled, -1 = whole context
    presence_penalty: float | None = None  # additive, OpenAI style
    frequency_penalty: float | None = None
    logit_bias: tuple[tuple[int, float], ...] | None = None
    seed: int | None = None  # None or -1 = random
    stop: tuple[str, ...] | None = None
    max_tokens: int | None = None  # None/-1 = up to the context; -2 = fill the context
    min_tokens: int | None = None
    ignore_eos: bool | None = None
    num_ctx: int | None = None
    num_keep: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    def merged(self, base: SamplingParams | None) -> SamplingParams:
        if base is None:
            return self
        values = {}
        for f in dataclasses.fields(self):
            mine = getattr(self, f.name)
            values[f.name] = mine if mine is not None else getattr(base, f.name)
        return SamplingParams(**values)

    def resolved(self) -> SamplingParams:
        return self.merged(DEFAULT_SAMPLING)

    def as_dict(self) -> dict[str, Any]:
        """Only the fields that are set (for rendering aliases and `parameters`)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingParams:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for k, v in data.items():
            if k not in names or v is None:
                continue
            if k == "stop":
                v = tuple(v) if isinstance(v, list | tuple) else (v,)
            elif k == "logit_bias":
                items = v.items() if isinstance(v, dict) else v
                v = tuple((int(a), float(b)) for a, b in items)
            kwargs[k] = v
        return cls(**kwargs)


# Ollama's defaults (temperature 0.8, top_k 40, top_p 0.9), used by both protocols unless an alias or the
# model's generation_config says otherwise.
DEFAULT_SAMPLING = SamplingParams(
    temperature=0.8,
    top_p=0.9,
    top_k=40,
    min_p=0.0,
    typical_p=1.0,
    repetition_penalty=1.0,
    repeat_last_n=64,
    presence_penalty=0.0,
    frequency_penalty=0.0,
    logit_bias=(),
    seed=None,
    stop=(),
    max_tokens=None,
    min_tokens=0,
    ignore_eos=False,
    num_ctx=None,
    num_keep=4,
    logprobs=False,
    top_logprobs=0,
)


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
