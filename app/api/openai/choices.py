"""Running one OpenAI request's n choices: interleaving their engine streams and collecting each one's output."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field

from app.api.streaming import aclose_quietly
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


async def merge(streams: Sequence[AsyncIterator[Chunk]]) -> AsyncGenerator[tuple[int, Chunk]]:
    """Interleave the choices' streams as (choice index, chunk) in arrival order.

    Closing this iterator (or a failure in any stream) cancels and closes every stream, which cancels the
    engine work behind them.
    """
    if len(streams) == 1:
        try:
            async for chunk in streams[0]:
                yield 0, chunk
        finally:
            await aclose_quietly(streams[0])
        return

    queue: asyncio.Queue[tuple[int, Chunk | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[Chunk]) -> None:
        try:
            async for chunk in stream:
                queue.put_nowait((index, chunk))
        except Exception as e:  # handed to the consumer, which re-raises it
            queue.put_nowait((index, e))
        else:
            queue.put_nowait((index, None))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(streams)
        while remaining:
            index, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in streams:
            await aclose_quietly(stream)


async def collect(streams: Sequence[AsyncIterator[Chunk]]) -> list[ChoiceResult]:
    """Run every choice's stream to the end (for non-streaming responses)."""
    results = [ChoiceResult() for _ in streams]
    async with contextlib.aclosing(merge(streams)) as merged:
        async for index, chunk in merged:
            results[index].add(chunk)
    return results
