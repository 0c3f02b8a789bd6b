"""Continuous batching for one resident model: one inference thread, one forward pass per step over every
active sequence, each sequence with its own sampler, constraint, stop matcher and seed.

The batch KV cache is left-padded: every row's real tokens are right-aligned, so a decode step appends one
column for all rows. Newcomers are prefilled (together, or on top of a prefix-cache hit) and merged in by
left-padding the shorter of the two caches. Finished rows are dropped and all-padding columns trimmed.

A batch is a shared fate only for what is truly shared. A failure in one row's own work (sampling, constraint,
detokenizing, stop matching, logprobs) ends that row alone. A failed forward pass is retried row by row: a failed
prefill without its group, a failed decode step by rebuilding each row's cache from its tokens; only the rows that
fail alone get the error, and the others go on.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from app.engine.kv_cache import BatchKVCache
from app.engine.prefill import (
    PREFILL_TOKEN_BUDGET,
    Newcomer,
    prefill_groups,
    prefill_pass,
    stack_pasts,
    within_budget,
)
from app.engine.prefix_cache import PrefixCache
from app.engine.sampling import sample_rows
from app.engine.sequence import Sequence, accept, final_chunk, token_logprob
from app.engine.types import FinishReason, TokenLogprob
from app.errors import GenerationFailed

if TYPE_CHECKING:
    from app.engine.decode_step import DecodeStep

log = logging.getLogger(__name__)

T = TypeVar("T")


class BatchScheduler:
    """Owns the model's inference thread. `submit` queues a sequence; the thread batches and decodes."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        max_batch: int,
        eos_ids: set[int],
        device: str,
        prefix_cache: PrefixCache | None = None,
        kv_budget_tokens: int = 0,
        on_forward: Callable[[str], None] | None = None,
        prefill_tokens: int = PREFILL_TOKEN_BUDGET,
        decode: DecodeStep | None = None,
    ) -> None:
        self.model = model
        # Decode steps may run a leaner forward; prefill passes run the model's. When that step computes unlike the
        # model (4-bit), each prompt's last token goes through it too (prefill.prefill_pass), and generated
        # tokens' keys and values are never stored for reuse: a later prompt reusing them would answer unlike one
        # computed cold.
        self.decode = decode
        self.last_token_step = decode if decode is not None and not decode.prefill_numerics else None
        self.tokenizer = tokenizer
        self.name = name
        self.max_batch = max_batch
        self.eos_ids = eos_ids
        self.device = device
        self.prefix_cache = prefix_cache
        self.kv_budget_tokens = kv_budget_tokens
        self.on_forward = on_forward
        self.prefill_tokens = prefill_tokens  # per step; 0 = every newcomer at once
        self._pending: collections.deque[Sequence] = collections.deque()
        self._jobs: collections.deque[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = collections.deque()
        self._active: list[Sequence] = []
        self._cache: BatchKVCache | None = None
        self._mask: torch.Tensor | None = None  # [B, T] long
        self._cv = threading.Condition()
        self._running = True
        self.steps = 0
        log.info("%s: %d batch slots", name, max_batch)
        self._thread = threading.Thread(target=self._loop, name=f"infer-{name}", daemon=True)
        self._thread.start()

    # ---- called from the event loop ----
    def submit(self, seq: Sequence) -> None:
        with self._cv:
            self._pending.append(seq)
            self._cv.notify()

    def call(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run `fn` on the inference thread between two steps (embeddings use the model without a batch row)."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._cv:
            if not self._running:
                fut.set_exception(GenerationFailed("model unloaded"))
                return fut
            self._jobs.append((fn, fut))
            self._cv.notify()
        return fut

    def cancel(self, seq: Sequence) -> None:
        seq.cancelled = True
        with self._cv:
            self._cv.notify()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._running = False
            self._cv.notify()
        self._thread.join(timeout)
        for seq in list(self._pending) + self._active:
            seq.emit(GenerationFailed("model unloaded"))
        for _, fut in self._jobs:
            if fut.set_running_or_notify_cancel():
                fut.set_exception(GenerationFailed("model unloaded"))
        self._jobs.clear()
        self._pending.clear()
        self._active = []
        self._cache = None
        self._mask = None

    # ---- inference thread ----
    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cv:
                    while self._running and not self._pending and not self._active and not self._jobs:
                        self._cv.wait()
                    if not self._running:
                        return
                    newcomers = self._admit()
                    job = self._jobs.popleft() if self._jobs else None
                if job is not None:
                    _run_job(*job)
                try:
                    if newcomers:
                        self._prefill(newcomers)
                    if self._active:
                        self._decode()
                except Exception as e:  # shared state itself failed (not one row): fail its rows, start afresh
                    log.exception("inference step failed on %s", self.name)
                    for seq in self._active + newcomers:
                        if seq.finish is None:
                            seq.emit(GenerationFailed(f"generation failed: {e}"))
                    self._active = []
                    self._cache = None
                    self._mask = None

    def _fail(self, seq: Sequence, exc: BaseException) -> None:
        """End `seq` alone with `exc`; the caller drops it from the batch."""
        log.error("sequence failed on %s: %s: %s", self.name, type(exc).__name__, exc, exc_info=exc)
        seq.failed = True
        seq.finish = FinishReason.CANCELLED  # dropped like a cancelled row, never stored in the prefix cache
        seq.finished_at = time.perf_counter()
        seq.emit(exc if isinstance(exc, GenerationFailed) else GenerationFailed(f"generation failed: {exc}"))

    def _admit(self) -> list[Sequence]:
        out: list[Sequence] = []
        width = self._mask.shape[1] if self._mask is not None else 0
        rows = len(self._active)
        while self._pending and rows + len(out) < self.max_batch:
            seq = self._pending[0]
            if seq.cancelled:
                self._pending.popleft()
                seq.emit(None)
                continue
            need = max(width, len(seq.prompt_ids)) + seq.max_new_tokens
            if self.kv_budget_tokens and (rows + len(out)) and (rows + len(out) + 1) * need > self.kv_budget_tokens:
                break  # wait until running rows finish: the KV budget bounds memory under load
            out.append(self._pending.popleft())
        now = time.perf_counter()
        for seq in out:
            seq.admitted_at = seq.admitted_at or now  # a row deferred by the prefill budget keeps its first time
        return out

    def _prefill(self, newcomers: list[Sequence]) -> None:
        # Every prefill pass streams all the weights however few tokens it computes, so newcomers share passes:
        # grouped by how many prompt tokens each must compute (the rest comes from the prefix cache).
        items: list[Newcomer] = []
        for seq in newcomers:
            hit, kv = self.prefix_cache.lookup(seq.prompt_ids) if self.prefix_cache is not None else (0, None)
            items.append(Newcomer(seq, hit if kv is not None else 0, kv))
        groups, deferred = within_budget(prefill_groups(items), self.prefill_tokens)
        if deferred:  # back to the head of the queue, in their order: admitted again after this step's decode
            with self._cv:
                self._pending.extendleft(reversed([d.seq for d in deferred]))
        for group in groups:
            try:
                computed = self._prefill_forward(group)
            except Exception as exc:
                if len(group) == 1:
                    self._fail(group[0].seq, exc)
                    continue
                log.warning("prefill of %d rows failed on %s (%s); retrying each row alone", len(group), self.name, exc)
                for item in group:
                    try:
                        alone = self._prefill_forward([item])
                    except Exception as solo:
                        self._fail(item.seq, solo)
                        continue
                    self._prefill_commit([item], *alone)
                continue
            self._prefill_commit(group, *computed)

    def _prefill_forward(self, group: list[Newcomer]) -> tuple[BatchKVCache, torch.Tensor, torch.Tensor]:
        """One forward pass over newcomers. All rows compute the same number of new tokens (`width`), each row
        reusing `len(prompt) - width` cached tokens (never more than its hit): every row's tokens stay contiguous
        and right-aligned, with padding only on the left, which the prefix cache and the batch cache rely on."""
        seqs = [g.seq for g in group]
        width = max(g.need for g in group)
        reuse = [max(0, len(g.seq.prompt_ids) - width) for g in group]
        offset = max(reuse)
        ids = torch.full((len(seqs), width), self.pad_id(), dtype=torch.long)
        mask = torch.zeros((len(seqs), offset + width), dtype=torch.long)
        for i, (s, used) in enumerate(zip(seqs, reuse, strict=True)):
            p = s.prompt_ids[used:]
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, offset + width - len(p) :] = 1
            mask[i, offset - used : offset] = 1
            s.cached_tokens = used
        past = stack_pasts(group, reuse, offset) if offset else None
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, offset:]
        cache = BatchKVCache(past)
        logits = prefill_pass(self.model, self.last_token_step, self.device, ids, mask, positions, cache)
        if self.on_forward is not None:
            self.on_forward("prefill")
        for s in seqs:
            s.fed = list(s.prompt_ids)
        return cache, mask, logits

    def _prefill_commit(
        self, group: list[Newcomer], cache: BatchKVCache, mask: torch.Tensor, logits: torch.Tensor
    ) -> None:
        """Store the prompts in the prefix cache, finish warm-ups, merge the rest into the batch and sample."""
        seqs = [g.seq for g in group]
        if self.prefix_cache is not None:
            # A 4-bit step computed each prompt's last token, unlike the trunk a later prompt's cold pass runs: keep it
            # out, so a hit reuses only keys and values a cold pass computes the same (prefill.prefill_pass).
            drop = int(self.last_token_step is not None)
            for i, s in enumerate(seqs):
                if s.cache_prompt:
                    cols = slice(-len(s.prompt_ids), -drop or None)
                    kv = [(k[i : i + 1, :, cols].clone(), v[i : i + 1, :, cols].clone()) for k, v in cache.tensors()]
                    self.prefix_cache.store(s.prompt_ids[: len(s.prompt_ids) - drop], kv)
        warm = [i for i, s in enumerate(seqs) if s.prefill_only]
        for i in warm:
            s = seqs[i]
            s.finish = FinishReason.STOP
            s.finished_at = time.perf_counter()
            s.emit(final_chunk(s, self.eos_ids))
        keep = [i for i in range(len(seqs)) if i not in warm]
        if not keep:
            return
        if warm:
            idx = torch.tensor(keep, device=mask.device)
            cache = cache.select(idx.to(self.device))
            mask = mask[idx]
            logits = logits[idx]
        live = [seqs[i] for i in keep]
        self._merge(cache, mask)
        self._active.extend(live)
        self._sample(live, logits)

    def _decode(self) -> None:
        assert self._cache is not None and self._mask is not None
        rows = self._active
        ids = torch.tensor([[s.last] for s in rows], dtype=torch.long)
        positions = torch.tensor([[len(s.fed)] for s in rows], dtype=torch.long)
        mask = torch.cat([self._mask, torch.ones((len(rows), 1), dtype=torch.long)], dim=1)
        try:
            out = (self.decode or self.model)(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=positions.to(self.device),
                cache=self._cache,  # updated in place
                use_cache=True,
                logits_to_keep=1,
            )
        except Exception as exc:
            self._recover(rows, exc)
            return
        self._mask = mask
        self.steps += 1
        if self.on_forward is not None:
            self.on_forward("decode")
        for s in rows:
            s.fed.append(s.last)
        self._sample(rows, out.logits[:, -1, :].float().cpu())

    def _recover(self, rows: list[Sequence], exc: Exception) -> None:
        """A decode step failed and may have half-updated the shared cache: rebuild each row's cache from its own
        tokens in a pass of its own, fail the rows that fail alone, and carry on with the others."""
        log.warning("decode step over %d rows failed on %s (%s); rebuilding each row alone", len(rows), self.name, exc)
        if len(rows) == 1:
            self._fail(rows[0], exc)
            self._active, self._cache, self._mask = [], None, None
            return
        self._active, self._cache, self._mask = [], None, None
        survivors: list[Sequence] = []
        logits: list[torch.Tensor] = []
        for s in rows:
            if s.cancelled:
                s.finish = FinishReason.CANCELLED
                s.emit(None)
                continue
            tokens = [*s.fed, s.last]
            try:
                ids = torch.tensor([tokens], dtype=torch.long)
                cache = BatchKVCache()
                positions = torch.arange(len(tokens)).unsqueeze(0)
                row_logits = prefill_pass(
                    self.model, self.last_token_step, self.device, ids, torch.ones_like(ids), positions, cache
                )
            except Exception as solo:
                self._fail(s, solo)
                continue
            s.fed.append(s.last)
            self._merge(cache, torch.ones_like(ids))
            survivors.append(s)
            logits.append(row_logits)
        self._active = survivors
        if survivors:
            self._sample(survivors, torch.cat(logits))

    def _sample(self, rows: list[Sequence], logits: torch.Tensor) -> None:
        now = time.perf_counter()
        raws: dict[int, torch.Tensor] = {}
        constrained: list[int] = []
        for i, s in enumerate(rows):
            if s.top_logprobs >= 0:
                raws[i] = logits[i].clone()  # logprobs report the model's distribution, before any masking
            if s.constraint is not None:
                constrained.append(i)
        tokens = [0] * len(rows)
        free = [i for i in range(len(rows)) if rows[i].constraint is None]
        if free:
            sub = logits if len(free) == len(rows) else logits[free]
            try:
                picked = sample_rows(sub, [rows[i].sampler for i in free], [rows[i].generated for i in free])
            except Exception:  # find the row at fault: sample each alone
                picked = []
                for j, i in enumerate(free):
                    try:
                        picked.extend(sample_rows(sub[j : j + 1], [rows[i].sampler], [rows[i].generated]))
                    except Exception as exc:
                        self._fail(rows[i], exc)
                        picked.append(0)
            for i, tok in zip(free, picked, strict=True):
                tokens[i] = tok
        for i in constrained:
            s = rows[i]
            assert s.constraint is not None
            try:
                # The grammar mask goes after penalties and bias but before temperature and truncation, so the
                # filters choose among allowed tokens only.
                row = s.sampler.process(logits[i], s.generated)
                s.constraint.apply(row)
                tokens[i] = s.sampler.sample(row)
            except Exception as exc:
                self._fail(s, exc)
        finished = False
        for i, s in enumerate(rows):
            if s.failed:
                finished = True
                continue
            if s.cancelled:
                s.finish = FinishReason.CANCELLED
                finished = True
                s.emit(None)
                continue
            try:
                lp: tuple[TokenLogprob, ...] = ()
                if i in raws:
                    lp = (token_logprob(self.tokenizer, raws[i], tokens[i], s.top_logprobs),)
                if accept(s, tokens[i], lp, now, self.eos_ids):
                    finished = True
            except Exception as exc:
                self._fail(s, exc)
                finished = True
        if finished:
            self._drop_finished()

    def _drop_finished(self) -> None:
        assert self._cache is not None and self._mask is not None
        keep = [i for i, s in enumerate(self._active) if s.finish is None]
        # The prompt itself was stored at its prefill; its generated tokens only when decode computes like prefill.
        if self.prefix_cache is not None and self.last_token_step is None:
            for i, s in enumerate(self._active):
                if s.finish is not None and s.finish != FinishReason.CANCELLED and s.cache_prompt:
                    n = len(s.fed)
                    self.prefix_cache.store(
                        s.fed,
                        [
                            (k[i : i + 1, :, -n:, :].clone(), v[i : i + 1, :, -n:, :].clone())
                            for k, v in self._cache.tensors()
                        ],
                    )
        if not keep:
            self._active, self._cache, self._mask = [], None, None
            return
        idx = torch.tensor(keep)
        self._active = [self._active[i] for i in keep]
        mask = self._mask[idx]
        start = int((mask.sum(0) > 0).nonzero()[0].item())
        self._mask = mask[:, start:]
        self._cache = self._cache.select(idx.to(self.device), start)

    def _merge(self, cache: BatchKVCache, mask: torch.Tensor) -> None:
        if self._cache is None or self._mask is None:
            self._cache, self._mask = cache, mask
            return
        old_t, new_t = self._mask.shape[1], mask.shape[1]
        width = max(old_t, new_t)
        self._mask = torch.cat(
            [torch.nn.functional.pad(self._mask, (width - old_t, 0)), torch.nn.functional.pad(mask, (width - new_t, 0))]
        )
        self._cache = self._cache.stacked(cache, width)

    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = next(iter(self.eos_ids), 0)
        return int(pad)


def _run_job(fn: Callable[[], Any], fut: concurrent.futures.Future[Any]) -> None:
    if not fut.set_running_or_notify_cancel():
        return  # its caller went away while it waited
    try:
        fut.set_result(fn())
    except Exception as e:  # the job's failure is its caller's, never the thread's
        fut.set_exception(e)
