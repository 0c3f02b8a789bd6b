"""Embeddings on a resident model: from a chat model (the mean of its last hidden states over an input's tokens)
or from an encoder checkpoint (pooled and normalised as its sentence-transformers files say, encoders.py).

Decoder-only chat models have no pooling head. Ollama serves /api/embed from them anyway (llama.cpp pools their
hidden states); we take the mean over the input's tokens, the usual choice for decoder models without a trained
pooling (sentence-transformers' default), and L2-normalise it as /api/embed and /v1/embeddings promise.

Rows of concurrent requests are gathered into shared passes (`EmbedBatcher`) that run on the model's inference
thread between decode steps (`BatchScheduler.call`), so they never race a generation for the weights, and a
running generation waits for at most one embedding pass per step.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from app.engine import encoders, limits
from app.engine.types import EmbeddingRequest, Embeddings, GenerationRequest
from app.errors import InvalidRequest
from app.metrics import LOCAL_BACKEND

if TYPE_CHECKING:
    from app.engine.manager import Resident
    from app.engine.parts import EngineParts
    from app.engine.scheduler import BatchScheduler
    from app.registry.types import ResolvedModel

log = logging.getLogger(__name__)

# Tokens per embedding pass (padded rows x longest row): bounds the activations of one pass, and how long a
# running generation waits for it.
PASS_TOKENS = 2048


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T, H] hidden states, [B, T] 0/1 mask -> [B, H] mean over each row's real tokens (fp32)."""
    weights = mask.to(torch.float32).unsqueeze(-1)
    return (hidden.to(torch.float32) * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def finish(vector: torch.Tensor, *, dimensions: int | None, normalize: bool) -> list[float]:
    """Keep the first `dimensions` components, then L2-normalise (again: a cut unit vector is no longer one)."""
    if dimensions is not None:
        vector = vector[..., :dimensions]
    if normalize:
        vector = torch.nn.functional.normalize(vector, dim=-1)
    return [float(x) for x in vector.tolist()]


def take_pass(lengths: list[int], *, max_rows: int, budget: int = PASS_TOKENS) -> list[int]:
    """Which of the waiting rows (oldest first) share the next pass: the oldest always, then every later row
    that keeps the pass within `budget` padded tokens and `max_rows` rows. Skipping a row that does not fit
    (instead of stopping) lets short rows of later requests fill the pass; the oldest goes first, so none waits
    forever."""
    if not lengths:
        return []
    chosen, width = [0], lengths[0]
    for i in range(1, len(lengths)):
        if len(chosen) >= max_rows:
            break
        wider = max(width, lengths[i])
        if wider * (len(chosen) + 1) <= budget:
            chosen.append(i)
            width = wider
    return chosen


def hidden_states(model: Any, rows: list[list[int]], device: str, pad_id: int) -> torch.Tensor:
    """Mean-pooled last hidden states of right-padded rows (causal attention: padding after a row's tokens cannot
    change them). Runs the base model only, without the LM head."""
    ids, mask = encoders.right_pad(rows, pad_id)
    with torch.inference_mode():
        out = model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
    return mean_pool(out.last_hidden_state.cpu(), mask)


def hidden_size(model: Any) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.hidden_size)


Row = tuple[list[int], "concurrent.futures.Future[torch.Tensor]"]


class EmbedBatcher:
    """Gathers the token rows of concurrent embedding requests of one model into shared passes.

    `submit` queues rows and returns one future per row; one job at a time sits on the scheduler's inference
    thread and runs one pass of the oldest waiting rows (`take_pass`), then queues itself again while rows wait.
    A pass holds at most `max_rows` inputs (the per-request input limit) and `budget` padded tokens.
    """

    def __init__(
        self,
        scheduler: BatchScheduler,
        run: Callable[[list[list[int]]], torch.Tensor],
        *,
        max_rows: int,
        budget: int = PASS_TOKENS,
        on_pass: Callable[[int], None] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.run = run
        self.max_rows = max_rows
        self.budget = budget
        self.on_pass = on_pass
        self._lock = threading.Lock()
        self._waiting: collections.deque[Row] = collections.deque()
        self._scheduled = False
        self.passes = 0

    @property
    def waiting_rows(self) -> int:
        return len(self._waiting)

    def submit(self, rows: list[list[int]]) -> list[concurrent.futures.Future[torch.Tensor]]:
        futures: list[concurrent.futures.Future[torch.Tensor]] = [concurrent.futures.Future() for _ in rows]
        # A request's own rows wait longest first, so rows of similar length share a pass and pad little.
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        with self._lock:
            self._waiting.extend((rows[i], futures[i]) for i in order)
            schedule = not self._scheduled
            self._scheduled = True
        if schedule:
            self._schedule()
        return futures

    def _schedule(self) -> None:
        job = self.scheduler.call(self._step)
        job.add_done_callback(self._job_done)

    def _job_done(self, job: concurrent.futures.Future[None]) -> None:
        error = RuntimeError("embedding job cancelled") if job.cancelled() else job.exception()
        if error is None:
            return
        # The scheduler stopped (the model was unloaded): nothing will run the waiting rows.
        with self._lock:
            waiting = list(self._waiting)
            self._waiting.clear()
            self._scheduled = False
        for _, fut in waiting:
            if fut.set_running_or_notify_cancel():
                fut.set_exception(error)

    def _step(self) -> None:
        """On the inference thread: one pass, then queue the next job if rows still wait."""
        with self._lock:
            # Rows whose request went away (a client disconnect cancels its futures) are dropped unrun.
            live = [r for r in self._waiting if not r[1].cancelled()]
            picked = [live[i] for i in take_pass([len(r[0]) for r in live], max_rows=self.max_rows, budget=self.budget)]
            taken = {id(r) for r in picked}
            self._waiting = collections.deque(r for r in live if id(r) not in taken)
        rows = [r for r in picked if r[1].set_running_or_notify_cancel()]
        if rows:
            try:
                out = self.run([ids for ids, _ in rows])
            except Exception as e:  # this pass's requests fail, later passes still run
                log.exception("embedding pass failed on %s", self.scheduler.name)
                for _, fut in rows:
                    fut.set_exception(e)
            else:
                self.passes += 1
                if self.on_pass is not None:
                    self.on_pass(len(rows))
                for (_, fut), vector in zip(rows, out, strict=True):
                    fut.set_result(vector)
        with self._lock:
            again = bool(self._waiting)
            self._scheduled = again
        if again:
            self._schedule()


class Embedder:
    """`embed` on resident models: shares residency, keep_alive and backpressure (the parts) with generation."""

    def __init__(self, parts: EngineParts) -> None:
        self.settings = parts.settings
        self.catalog = parts.catalog
        self.manager = parts.manager
        self.metrics = parts.metrics
        self.admission = parts.admission

    def refuse_embedding_only(self, req: GenerationRequest, resolved: ResolvedModel) -> None:
        """A chat or generate request to an embedding model is a 400 before anything loads (Ollama's words)."""
        if encoders.spec_of(resolved.source) is not None:
            kind = "chat" if req.messages is not None else "generate"
            raise InvalidRequest(f'"{req.model}" does not support {kind}', param="model")

    async def probe(self, model: str) -> bool:
        """The readiness probe of an embedding model (it cannot generate a token): one vector. False for others."""
        resolved = self.catalog.resolve(model)
        if encoders.spec_of(resolved.source) is None:
            return False
        await self.embed(EmbeddingRequest(model=model, inputs=("Hi",)), resolved)
        return True

    async def embed(self, req: EmbeddingRequest, resolved: ResolvedModel | None = None) -> Embeddings:
        started = time.perf_counter()
        resolved = resolved or self.catalog.resolve(req.model)
        if req.dimensions is not None and req.dimensions < 1:
            raise InvalidRequest("dimensions must be a positive integer", param="dimensions")
        limits.check_embedding(req, self.settings)
        with self.admission.enter() as ticket:
            res = await self.manager.acquire(resolved, resolved.keep_alive(req.keep_alive))
            load_ns = int((time.perf_counter() - started) * 1e9)
            label = self.metrics.model_label(req.model)
            ticket.run()
            try:
                vectors, tokens = await self._embed_on(res, req)
            finally:
                ticket.close()
                if self.manager.release_and_maybe_unload(res):
                    asyncio.get_running_loop().create_task(self.manager.unload(res.resolved))
        self.metrics.prompt_tokens.labels(model=label, backend=LOCAL_BACKEND).inc(tokens)
        total = time.perf_counter() - started
        self.metrics.request_duration.labels(model=label, backend=LOCAL_BACKEND).observe(total)
        return Embeddings(
            vectors=tuple(tuple(v) for v in vectors),
            prompt_tokens=tokens,
            load_ns=load_ns,
            total_ns=int(total * 1e9),
        )

    async def _embed_on(self, res: Resident, req: EmbeddingRequest) -> tuple[list[list[float]], int]:
        model = res.weights.model
        size = res.encoder_dim or hidden_size(model)
        if req.dimensions is not None and req.dimensions > size:
            raise InvalidRequest(f"dimensions must be at most {size}, the model's embedding length", param="dimensions")
        limit = min(req.num_ctx or self.settings.context_length, res.context_length)
        tokenizer = res.weights.tokenizer
        if res.encoder is not None:
            rows = await asyncio.to_thread(encoders.tokenize, tokenizer, res.encoder, req.inputs, limit, req.truncate)
        else:
            rows = await asyncio.to_thread(_tokenize, tokenizer, req.inputs, limit, req.truncate)
        pooled = await asyncio.gather(*(asyncio.wrap_future(f) for f in self.batcher(res).submit(rows)))
        # A checkpoint with a Normalize module returns unit vectors even on the legacy endpoint, as
        # sentence-transformers does; /api/embed and /v1/embeddings always do.
        normalize = req.normalize or (res.encoder is not None and res.encoder.normalize)
        vectors = [finish(v, dimensions=req.dimensions, normalize=normalize) for v in pooled]
        return vectors, sum(len(r) for r in rows)

    def batcher(self, res: Resident) -> EmbedBatcher:
        """The resident's batcher, made on its first embedding request."""
        if res.batcher is None:
            label = self.metrics.model_label(res.name)
            model, device = res.weights.model, res.scheduler.device
            run: Callable[[list[list[int]]], torch.Tensor]
            if res.encoder is not None:
                pad = encoders.pad_id(res.weights.tokenizer)
                head = res.weights.head
                run = functools.partial(encoders.encode, model, device=device, pad_id=pad, spec=res.encoder, head=head)
            else:
                run = functools.partial(hidden_states, model, device=device, pad_id=res.scheduler.pad_id())
            res.batcher = EmbedBatcher(
                res.scheduler,
                run,
                max_rows=self.settings.max_embed_inputs,
                on_pass=lambda n: self.metrics.forward_passes.labels(model=label, kind="embed").inc(),
            )
        batcher: EmbedBatcher = res.batcher
        return batcher


def _tokenize(tokenizer: Any, inputs: tuple[str, ...], limit: int, truncate: bool) -> list[list[int]]:
    rows: list[list[int]] = []
    for i, text in enumerate(inputs):
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        where = "input" if len(inputs) == 1 else f"input[{i}]"
        if not ids:
            raise InvalidRequest(f"{where} is empty: there is nothing to embed", param="input")
        if len(ids) > limit:
            if not truncate:
                raise InvalidRequest("the input length exceeds the context length", param="input")
            ids = ids[:limit]
        rows.append(ids)
    return rows
