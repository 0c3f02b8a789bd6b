"""How both protocols answer from engine streams: one encoder lifecycle, stream framing, and the one place that
turns failures into in-band error events.

Both protocols answer the same way (`start_all`, then `answer`): every engine stream is started before the first
byte, then the protocol's encoder (`ChunkEncoder`: Ollama's `GenerationStream`, OpenAI's `ChatStream` and
`CompletionStream`) turns the chunks into its bodies, framed by the protocol's `Framing` (Ollama NDJSON lines;
OpenAI SSE `data:` events ending with `data: [DONE]`) or folded into the one non-streamed body. Errors before the
first byte keep their real status (raised before the response is built); after it, `guarded_stream` emits one
protocol error event and ends the stream. `iterate_in_thread` drives a blocking generator (a pull) from the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from app.engine.base import Engine
from app.engine.types import Chunk, GenerationRequest
from app.errors import Cancelled, ServiceError
from app.metrics import Metrics
from app.registry.types import ResolvedModel

log = logging.getLogger(__name__)

T = TypeVar("T")
Body = TypeVar("Body")
Body_co = TypeVar("Body_co", covariant=True)

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
SSE_DONE = "data: [DONE]\n\n"
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def dump(obj: BaseModel | dict[str, Any]) -> str:
    if isinstance(obj, BaseModel):
        return obj.model_dump_json(exclude_none=True)
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def encode_ndjson(obj: BaseModel | dict[str, Any]) -> str:
    return dump(obj) + "\n"


def encode_sse(obj: BaseModel | dict[str, Any]) -> str:
    return f"data: {dump(obj)}\n\n"


async def aclose_quietly(stream: Any) -> None:
    """Close an async iterator if it can be closed; a failure while closing is not the caller's problem."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


class ChunkEncoder(Protocol[Body_co]):
    """Engine chunks -> one protocol's response bodies, the same lifecycle on both sides: `start()` once,
    `feed(index, chunk)` for each chunk of choice `index`, `end()` once (each returns the bodies to stream), then
    `response()`: the one body of a non-streamed answer, from everything fed."""

    def start(self) -> Sequence[Body_co]: ...
    def feed(self, index: int, chunk: Chunk) -> Sequence[Body_co]: ...
    def end(self) -> Sequence[Body_co]: ...
    def response(self) -> Body_co: ...


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


async def encode_stream(
    encoder: ChunkEncoder[Body], chunks: AsyncIterator[tuple[int, Chunk]], frame: Callable[[Body], str]
) -> AsyncIterator[str]:
    """A streamed answer: every body of the encoder's lifecycle, framed (an NDJSON line or an SSE event)."""
    try:
        for body in encoder.start():
            yield frame(body)
        async for index, chunk in chunks:
            for body in encoder.feed(index, chunk):
                yield frame(body)
        for body in encoder.end():
            yield frame(body)
    finally:
        await aclose_quietly(chunks)


async def encode_response(encoder: ChunkEncoder[Body], chunks: AsyncIterator[tuple[int, Chunk]]) -> Body:
    """A non-streamed answer: the same lifecycle run to the end, then the encoder's one body."""
    try:
        encoder.start()
        async for index, chunk in chunks:
            encoder.feed(index, chunk)
        encoder.end()
        return encoder.response()
    finally:
        await aclose_quietly(chunks)


async def guarded_stream(
    source: AsyncIterator[str],
    on_error: Callable[[ServiceError], str],
    *,
    metrics: Metrics | None = None,
    closing: str | None = None,
) -> AsyncIterator[str]:
    """Relay `source`; an exception becomes one `on_error` event, then `closing` (e.g. `[DONE]`).

    A client disconnect closes this generator: `aclose()` on the source propagates cancellation to the
    engine, and the exit is re-raised so Starlette finishes the response.
    """
    try:
        async for item in source:
            yield item
    except (GeneratorExit, asyncio.CancelledError):
        if metrics is not None:
            metrics.disconnects.inc()
        raise
    except Exception as e:  # every failure must end as one in-band event
        err = e if isinstance(e, ServiceError) else ServiceError(f"generation failed: {e}")
        if not isinstance(e, ServiceError):
            log.exception("stream failed")
        if metrics is not None:
            metrics.stream_errors.inc()
            metrics.failures.labels(reason=err.code).inc()
        yield on_error(err)
        if closing is not None:
            yield closing
    else:
        if closing is not None:
            yield closing
    finally:
        await aclose_quietly(source)


class _ClosingStreamingResponse(StreamingResponse):
    """Closes the body and the engine streams behind it when the response ends, however it ends. A client gone
    before the body is first iterated leaves the body's generators unstarted, and an unstarted async generator's
    `finally` never runs, so closing them would not reach the engine streams: they are closed here directly."""

    def __init__(self, body: AsyncIterator[str], media_type: str, owned: Sequence[AsyncIterator[Chunk]]) -> None:
        super().__init__(body, media_type=media_type, headers=STREAM_HEADERS)
        self._owned = owned

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await aclose_quietly(self.body_iterator)
            for stream in self._owned:
                await aclose_quietly(stream)


def stream_response(
    body: AsyncIterator[str], media_type: str, owned: Sequence[AsyncIterator[Chunk]] = ()
) -> StreamingResponse:
    """`body` as a streamed response; `owned` are the engine streams it reads, closed when the response ends."""
    return _ClosingStreamingResponse(body, media_type, owned)


async def until_disconnect(request: Request, work: Awaitable[T], metrics: Metrics | None = None) -> T:
    """Run a non-streaming request's work, cancelling it when the client goes away (vLLM's with_cancellation)."""
    task: asyncio.Task[T] = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        if metrics is not None:
            metrics.disconnects.inc()
        raise Cancelled("client disconnected")
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


async def iterate_in_thread(make: Callable[[], Iterator[T]], *, name: str) -> AsyncIterator[T]:
    """Drive a blocking generator on its own thread (a pull's downloads); items arrive through an asyncio.Queue.
    Closing this iterator stops the thread's generator at its next item."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    stop = threading.Event()

    def post(kind: str, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening any more
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def work() -> None:
        gen: Iterator[T] | None = None
        try:
            gen = make()
            for item in gen:
                if stop.is_set():
                    break
                post("item", item)
        except BaseException as e:  # handed to the event loop side
            post("error", e)
            return
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
        post("end", None)

    threading.Thread(target=work, name=name, daemon=True).start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()


# --- answering ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Framing:
    """How one protocol puts bodies on the wire: each streamed body (`frame`), an in-band error (`error`), the
    stream's last event (`closing`), and the one non-streamed body as a response (`whole`)."""

    media_type: str
    frame: Callable[[Any], str]
    error: Callable[[ServiceError], str]
    whole: Callable[[Any], Response]
    closing: str | None = None


async def start_all(
    request: Request,
    engine: Engine,
    requests: Sequence[GenerationRequest],
    metrics: Metrics,
    resolved: ResolvedModel | None = None,
) -> list[AsyncIterator[Chunk]]:
    """Start every choice before the first byte; if one start fails, the ones already started are closed.
    `resolved` is the route's catalog answer for the requests' one model, handed on so it is not resolved again."""
    streams: list[AsyncIterator[Chunk]] = []
    try:
        for req in requests:
            # Admission, loading and rendering stop when the client leaves (a slow template render is killed).
            streams.append(await until_disconnect(request, engine.start(req, resolved), metrics))
    except BaseException:
        for stream in streams:
            await aclose_quietly(stream)
        raise
    return streams


async def answer(
    request: Request,
    metrics: Metrics,
    encoder: ChunkEncoder[Any],
    streams: Sequence[AsyncIterator[Chunk]],
    *,
    stream: bool,
    framing: Framing,
) -> Response:
    """The started streams as the protocol's answer: framed events when streaming, else the one body. Both come
    from the same encoder."""
    chunks = merge(streams)
    if stream:
        events = encode_stream(encoder, chunks, framing.frame)
        guarded = guarded_stream(events, framing.error, metrics=metrics, closing=framing.closing)
        return stream_response(guarded, framing.media_type, streams)
    try:
        return framing.whole(await until_disconnect(request, encode_response(encoder, chunks), metrics))
    finally:
        for started in streams:  # closed already unless the work was cancelled before it first ran
            await aclose_quietly(started)
