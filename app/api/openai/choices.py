"""What one choice of an OpenAI request produced, collected for the non-streamed body."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.engine.types import (
    Chunk,
    FinishReason,
    TokenLogprob,
    ToolCall,
    Usage,
)


@dataclass
class ChoiceResult:
    """Everything one choice's engine stream produced."""

    parts: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    usage: Usage | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def add(self, chunk: Chunk) -> None:
        if chunk.text:
            self.parts.append(chunk.text)
        self.logprobs.extend(chunk.logprobs)
        self.tool_calls.extend(chunk.tool_calls)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
