"""Embeddings from the resident generative model: the mean of the last hidden states over an input's tokens.

Decoder-only chat models have no pooling head. Ollama serves /api/embed from them anyway (llama.cpp pools their
hidden states); we take the mean over the input's tokens, the usual choice for decoder models without a trained
pooling (sentence-transformers' default), and L2-normalise it as /api/embed and /v1/embeddings promise.

Passes run on the model's inference thread between decode steps (`BatchScheduler.call`), so they never race a
generation for the weights, and a running generation waits for at most one embedding pass per step.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import TYPE_CHECKING, Any

import torch

from app.engine.types import EmbeddingRequest, Embeddings
from app.errors import InvalidRequest, Overloaded

if TYPE_CHECKING:
    from app.engine.manager import ModelManager, Resident
    from app.metrics import Metrics
    from app.registry.catalog_base import Catalog
    from app.settings import Settings

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


def plan_passes(lengths: list[int], budget: int = PASS_TOKENS) -> list[list[int]]:
    """Input indices grouped into passes, longest first so rows of a pass pad little; each pass fits `budget`
    padded tokens (a single longer input gets a pass of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    passes: list[list[int]] = []
    for i in order:
        # Rows arrive longest first, so a pass's padded size is its first row's length times its row count.
        if passes and lengths[passes[-1][0]] * (len(passes[-1]) + 1) <= budget:
            passes[-1].append(i)
        else:
            passes.append([i])
    return passes


def hidden_states(model: Any, rows: list[list[int]], device: str, pad_id: int) -> torch.Tensor:
    """Mean-pooled last hidden states of right-padded rows (causal attention: padding after a row's tokens cannot
    change them). Runs the base model only, without the LM head."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    with torch.inference_mode():
        out = model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
    return mean_pool(out.last_hidden_state.cpu(), mask)


def hidden_size(model: Any) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.hidden_size)


class EmbeddingMixin:
    """Mixed into TransformersEngine: `embed` shares residency, keep_alive and backpressure with generation."""

    settings: Settings
    catalog: Catalog
    manager: ModelManager
    metrics: Metrics
    _waiting: int

    async def embed(self, req: EmbeddingRequest) -> Embeddings:
        started = time.perf_counter()
        resolved = self.catalog.resolve(req.model)
        if req.dimensions is not None and req.dimensions < 1:
            raise InvalidRequest("dimensions must be a positive integer", param="dimensions")
        if self._waiting >= self.settings.max_queue:
            self.metrics.failures.labels(reason="queue_full").inc()
            raise Overloaded("server busy, please try again.  maximum pending requests exceeded")
        self._waiting += 1
        self.metrics.requests_waiting.inc()
        try:
            res = await self.manager.acquire(resolved, resolved.keep_alive(req.keep_alive))
        finally:
            self._waiting -= 1
            self.metrics.requests_waiting.dec()
        load_ns = int((time.perf_counter() - started) * 1e9)
        try:
            vectors, tokens = await self._embed_on(res, req)
        finally:
            if self.manager.release_and_maybe_unload(res):
                asyncio.get_running_loop().create_task(self.manager.unload(res.resolved))
        self.metrics.prompt_tokens.labels(model=self.metrics.model_label(req.model)).inc(tokens)
        return Embeddings(
            vectors=tuple(tuple(v) for v in vectors),
            prompt_tokens=tokens,
            load_ns=load_ns,
            total_ns=int((time.perf_counter() - started) * 1e9),
        )

    async def _embed_on(self, res: Resident, req: EmbeddingRequest) -> tuple[list[list[float]], int]:
        model = res.weights.model
        size = hidden_size(model)
        if req.dimensions is not None and req.dimensions > size:
            raise InvalidRequest(f"dimensions must be at most {size}, the model's embedding length", param="dimensions")
        limit = min(req.num_ctx or self.settings.context_length, res.context_length)
        rows = await asyncio.to_thread(_tokenize, res.weights.tokenizer, req.inputs, limit, req.truncate)
        pad_id = res.scheduler.pad_id()
        pooled: dict[int, torch.Tensor] = {}
        for group in plan_passes([len(r) for r in rows]):
            batch = [rows[i] for i in group]
            job = functools.partial(hidden_states, model, batch, res.scheduler.device, pad_id)
            out = await asyncio.wrap_future(res.scheduler.call(job))
            pooled.update(zip(group, out, strict=True))
        vectors = [finish(pooled[i], dimensions=req.dimensions, normalize=req.normalize) for i in range(len(rows))]
        return vectors, sum(len(r) for r in rows)


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
