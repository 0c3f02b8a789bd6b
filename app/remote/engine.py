"""Generation and embeddings on one upstream: translate (ollama_wire / openai_wire), send, and stream its answer
back as Chunks. All pre-byte failures raise from `start`; after that, one exception ends the chunk stream (the
HTTP layer turns it into one in-band error event). Closing the stream closes the upstream request at once."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator
from typing import Protocol

import httpx

from app.engine.types import Chunk, EmbeddingRequest, Embeddings, GenerationRequest, Timings
from app.errors import ModelNotFound, ServiceError, UpstreamError
from app.metrics import Metrics
from app.remote import ollama_wire, openai_wire
from app.remote.upstream import Upstream, lines


class _Decoder(Protocol):
    def feed(self, line: str) -> list[Chunk]: ...
    def finish(self) -> list[Chunk]: ...


class RemoteStream:
    """The chunk iterator of one upstream answer. A class, not an async generator, so that `aclose()` releases
    the upstream connection and concurrency slot even when iteration never started."""

    def __init__(
        self, up: Upstream, resp: httpx.Response, decoder: _Decoder, display: str, sent_at: float, metrics: Metrics
    ) -> None:
        self.up, self.resp, self.decoder, self.display = up, resp, decoder, display
        self.sent_at = sent_at
        self.metrics = metrics
        self.first_at: float | None = None
        self.status = "cancelled"  # until the answer ends one way or another
        self._closed = False
        self._gen = self._chunks()

    def __aiter__(self) -> RemoteStream:
        return self

    async def __anext__(self) -> Chunk:
        try:
            return await self._gen.__anext__()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await self._gen.aclose()
        await self.up.close(self.resp, self.status)
        if self.up.metrics is not None:
            self.up.metrics.latency.labels(upstream=self.up.name).observe(time.perf_counter() - self.sent_at)

    async def _chunks(self) -> AsyncGenerator[Chunk]:
        label = self.metrics.model_label(self.display)
        try:
            async for line in lines(self.resp):
                for chunk in self.decoder.feed(line):
                    yield self._observe(chunk, label)
            for chunk in self.decoder.finish():
                yield self._observe(chunk, label)
        except httpx.HTTPError as e:
            self.status = "timeout" if isinstance(e, httpx.TimeoutException) else "stream_error"
            raise self.up.transport_error(e, started=True) from None
        except ServiceError:
            self.status = "stream_error"
            raise
        self.status = str(self.resp.status_code)

    def _observe(self, chunk: Chunk, label: str) -> Chunk:
        now = time.perf_counter()
        if self.first_at is None and (chunk.text or chunk.tool_calls or chunk.finish_reason):
            self.first_at = now
            self.metrics.ttft.labels(model=label, backend=self.up.name).observe(now - self.sent_at)
            if self.up.metrics is not None:
                self.up.metrics.ttft.labels(upstream=self.up.name).observe(now - self.sent_at)
        if chunk.finish_reason is None:
            return chunk
        self.metrics.request_duration.labels(model=label, backend=self.up.name).observe(now - self.sent_at)
        if chunk.usage is not None:
            self.metrics.prompt_tokens.labels(model=label, backend=self.up.name).inc(chunk.usage.prompt_tokens)
            self.metrics.generation_tokens.labels(model=label, backend=self.up.name).inc(chunk.usage.completion_tokens)
        if chunk.timings is None or not chunk.timings.total_ns:  # OpenAI servers report no timings: ours
            first = self.first_at or now
            chunk = dataclasses.replace(
                chunk,
                timings=Timings(
                    total_ns=int((now - self.sent_at) * 1e9),
                    prompt_eval_ns=int((first - self.sent_at) * 1e9),
                    eval_ns=int((now - first) * 1e9),
                ),
            )
        return chunk


async def start(up: Upstream, req: GenerationRequest, model: str, display: str, metrics: Metrics) -> RemoteStream:
    """Send `req` (already carrying its alias's settings) to `model` on `up`.

    Raises:
        InvalidRequest: a field the upstream cannot honour. Overloaded: the upstream's concurrency limit.
        UpstreamUnavailable / UpstreamTimeout / UpstreamRejected / ModelNotFound: see app/remote/upstream.py.
    """
    decoder: _Decoder
    if up.cfg.kind == "ollama":
        path, body = ollama_wire.build(req, model, up.name, req.keep_alive)
        decoder = ollama_wire.Decoder(up.name, req.tools)
    else:
        path, body = openai_wire.build(req, model, up.cfg.preset, up.name)
        decoder = openai_wire.Decoder(up.name, req.tools)
    sent_at = time.perf_counter()
    resp = await up.open(path, body, display)
    return RemoteStream(up, resp, decoder, display, sent_at, metrics)


async def embed(up: Upstream, req: EmbeddingRequest, model: str, display: str) -> Embeddings:
    started = time.perf_counter()
    if up.cfg.kind == "ollama":
        answers = [await up.post_json(path, body, display) for path, body in ollama_wire.embed_request(req, model)]
        vectors, tokens = ollama_wire.embed_vectors(answers)
    else:
        path, body = openai_wire.embed_request(req, model, up.name)
        vectors, tokens = openai_wire.embed_vectors(await up.post_json(path, body, display))
    if len(vectors) != len(req.inputs):
        raise UpstreamError(f"upstream {up.name} returned {len(vectors)} vectors for {len(req.inputs)} inputs")
    return Embeddings(
        vectors=tuple(tuple(float(x) for x in v) for v in vectors),
        prompt_tokens=tokens,
        total_ns=int((time.perf_counter() - started) * 1e9),
    )


async def load(up: Upstream, model: str, display: str, keep_alive: float | None) -> float:
    """Ollama upstreams load (or, with keep_alive 0, unload) on request; OpenAI servers serve what they serve."""
    started = time.perf_counter()
    if up.cfg.kind == "ollama":
        body: dict[str, object] = {"model": model}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        await up.post_json("/api/generate", {**body, "stream": False}, display)
        return time.perf_counter() - started
    await up.refresh()
    if up.up and model not in up.models:
        raise ModelNotFound(display)
    return 0.0
