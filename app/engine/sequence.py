"""One generation inside a batch: its state (`Sequence`) and what happens to it when a token is chosen (stops,
detokenizing, constraint, finish), apart from the batch mechanics of app.engine.scheduler."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import torch

from app.engine.constraints import Constraint
from app.engine.detok import IncrementalDetokenizer
from app.engine.sampling import RowSampler, logprob_info
from app.engine.stopping import StopMatcher
from app.engine.types import Chunk, FinishReason, Timings, TokenLogprob, TopLogprob, Usage


@dataclass(eq=False)
class Sequence:
    """One generation inside the batch. `emit` is called from the inference thread (thread-safe put)."""

    prompt_ids: list[int]
    max_new_tokens: int
    sampler: RowSampler
    stop: StopMatcher
    detok: IncrementalDetokenizer
    emit: Callable[[Chunk | BaseException | None], None]
    constraint: Constraint | None = None
    top_logprobs: int = -1  # -1: no logprobs
    cache_prompt: bool = True
    prefill_only: bool = False  # cache warm-up: compute and store the prompt's KV, generate nothing
    cancelled: bool = False
    failed: bool = False  # ended by an error of its own (its client has the error)
    generated: list[int] = field(default_factory=list)
    fed: list[int] = field(default_factory=list)
    last: int = -1
    cached_tokens: int = 0
    enqueued_at: float = field(default_factory=time.perf_counter)
    admitted_at: float = 0.0
    first_token_at: float = 0.0
    finished_at: float = 0.0
    finish: FinishReason | None = None
    token_times: list[float] = field(default_factory=list)


def accept(s: Sequence, token: int, lp: tuple[TokenLogprob, ...], now: float, eos_ids: Collection[int]) -> bool:
    """Take `token` as `s`'s next: emit what is safe to show, and the final chunk when it ends (True)."""
    if not s.generated:
        s.first_token_at = now
    s.token_times.append(now)
    s.generated.append(token)
    s.last = token
    is_eos = token in eos_ids and not s.sampler.ignore_eos
    if s.constraint is not None and not is_eos:
        s.constraint.accept(token)
    text = "" if is_eos else s.detok.add(token)
    out, stopped = s.stop.feed(text)
    finish: FinishReason | None = None
    if stopped:
        finish = FinishReason.STOP
    elif is_eos or (s.constraint is not None and s.constraint.is_finished()):
        finish = FinishReason.STOP
    elif len(s.generated) >= s.max_new_tokens:
        finish = FinishReason.LENGTH
    if finish is not None and not stopped:
        tail, stopped_late = s.stop.feed(s.detok.flush())
        out += tail
        if not stopped_late:
            out += s.stop.flush()
    if is_eos:
        lp = ()  # the end-of-turn token is not part of the text, so neither is its logprob
    if out or lp:
        s.emit(Chunk(text=out, logprobs=lp))
    if finish is not None:
        s.finish = finish
        s.finished_at = time.perf_counter()
        s.emit(final_chunk(s, eos_ids))
        return True
    return False


def final_chunk(s: Sequence, eos_ids: Collection[int]) -> Chunk:
    """The closing chunk: finish reason, usage, timings and (Ollama generate) context."""
    prompt_ns = int(((s.first_token_at or s.finished_at) - s.admitted_at) * 1e9)
    eval_ns = int((s.finished_at - (s.first_token_at or s.finished_at)) * 1e9)
    return Chunk(
        finish_reason=s.finish,
        usage=Usage(prompt_tokens=len(s.prompt_ids), completion_tokens=len(s.generated), cached_tokens=s.cached_tokens),
        timings=Timings(prompt_eval_ns=max(prompt_ns, 1), eval_ns=max(eval_ns, 1)),
        context=tuple(s.prompt_ids + [t for t in s.generated if t not in eos_ids]),
    )


def token_logprob(tokenizer: Any, raw: torch.Tensor, token: int, top_n: int) -> TokenLogprob:
    value, top = logprob_info(raw, token, max(top_n, 0))
    return TokenLogprob(
        token=_piece(tokenizer, token),
        logprob=value,
        bytes=tuple(_piece(tokenizer, token).encode()),
        top_logprobs=tuple(TopLogprob(_piece(tokenizer, t), lp, tuple(_piece(tokenizer, t).encode())) for t, lp in top),
    )


def _piece(tokenizer: Any, token: int) -> str:
    text: str = tokenizer.decode([token], skip_special_tokens=False)
    return text
