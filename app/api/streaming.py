"""Stream framing for both protocols, and the one place that turns failures into in-band error events.

Ollama streams NDJSON lines; OpenAI streams SSE `data:` events ending with `data: [DONE]`. Errors before the
first byte keep their real status (raised before the response is built); after it, `guarded_stream` emits
one protocol error event and ends the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from app.errors import Cancelled, ServiceError
from app.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

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


def stream_response(body: AsyncIterator[str], media_type: str) -> StreamingResponse:
    return StreamingResponse(body, media_type=media_type, headers=STREAM_HEADERS)


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
