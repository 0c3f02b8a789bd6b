"""Fault isolation in the batch: one row's failure ends that row alone, and the other rows' greedy outputs are the
same as when they run without it. In-process on a tiny random Llama, with seams that make one row fail."""

from __future__ import annotations

import queue
import threading
from typing import Any

import pytest
import torch

from app.engine.detok import IncrementalDetokenizer
from app.engine.sampling import RowSampler
from app.engine.scheduler import BatchScheduler
from app.engine.sequence import Sequence
from app.engine.stopping import StopMatcher
from app.engine.types import Chunk, FinishReason, SamplingParams
from app.errors import GenerationFailed
from tests.helpers.tiny_llama import tiny_llama

VOCAB = 64
EOS = 1
POISON = 63  # the seams below fail a row whose tokens hold this id


class _Tok:
    pad_token_id = 0

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(0x41 + (i % 26)) for i in ids if not (skip_special_tokens and i == EOS))


class _Outcome:
    def __init__(self) -> None:
        self.items: queue.Queue[Chunk | BaseException | None] = queue.Queue()

    def emit(self, item: Chunk | BaseException | None) -> None:
        self.items.put(item)

    def result(self, timeout: float = 60.0) -> tuple[str, Chunk | BaseException]:
        text = ""
        while True:
            item = self.items.get(timeout=timeout)
            if item is None:
                raise AssertionError("cancelled")
            if isinstance(item, BaseException):
                return text, item
            text += item.text
            if item.finish_reason is not None:
                return text, item


class _RaisingStop(StopMatcher):
    """A stop matcher that fails on its Nth feed: the seam for a failure in one row's own work."""

    def __init__(self, after: int) -> None:
        super().__init__(())
        self.after = after

    def feed(self, text: str) -> tuple[str, bool]:
        self.after -= 1
        if self.after < 0:
            raise RuntimeError("row-local failure")
        return super().feed(text)


class _PoisonModel(torch.nn.Module):
    """The model, except that a forward pass whose input holds POISON raises (a row that breaks a shared pass)."""

    def __init__(self, inner: Any, armed: threading.Event) -> None:
        super().__init__()
        self.inner = inner
        self.armed = armed
        self.calls = 0

    def forward(self, input_ids: torch.Tensor, **kw: Any) -> Any:
        self.calls += 1
        if self.armed.is_set() and bool((input_ids == POISON).any()):
            raise RuntimeError("index out of range in self")
        return self.inner(input_ids=input_ids, **kw)


def _seq(prompt: list[int], out: _Outcome, *, new: int = 12, stop: StopMatcher | None = None) -> Sequence:
    return Sequence(
        prompt_ids=prompt,
        max_new_tokens=new,
        sampler=RowSampler(SamplingParams(temperature=0.0), prompt, {EOS}, VOCAB),
        stop=stop or StopMatcher(()),
        detok=IncrementalDetokenizer(_Tok()),
        emit=out.emit,
    )


def _scheduler(model: Any, max_batch: int = 4) -> BatchScheduler:
    return BatchScheduler(model, _Tok(), name="iso", max_batch=max_batch, eos_ids={EOS}, device="cpu")


PROMPTS = [[5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16]]


def _alone(model: Any, prompts: list[list[int]]) -> list[str]:
    """Each prompt's greedy text when it runs by itself."""
    texts = []
    for p in prompts:
        sched = _scheduler(model)
        try:
            out = _Outcome()
            sched.submit(_seq(p, out))
            text, final = out.result()
            assert isinstance(final, Chunk) and final.finish_reason is not None
            texts.append(text)
        finally:
            sched.stop()
    return texts


def _run_together(sched: BatchScheduler, seqs: list[tuple[Sequence, _Outcome]]) -> list[tuple[str, Any]]:
    # Submitted under the scheduler's lock so they are admitted, prefilled and decoded as one batch.
    with sched._cv:
        for seq, _ in seqs:
            sched._pending.append(seq)
        sched._cv.notify()
    return [out.result() for _, out in seqs]


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_llama(vocab_size=VOCAB)


@pytest.mark.parametrize("after", [0, 3])
def test_a_row_failing_in_its_own_work_ends_alone(model: Any, after: int) -> None:
    expected = _alone(model, PROMPTS)
    sched = _scheduler(model)
    try:
        outs = [_Outcome() for _ in range(4)]
        seqs = [(_seq(p, o), o) for p, o in zip(PROMPTS, outs, strict=False)]
        bad = _Outcome()
        seqs.insert(1, (_seq([20, 21, 22], bad, stop=_RaisingStop(after)), bad))
        results = _run_together(sched, seqs)
        _, failure = results.pop(1)
        assert isinstance(failure, GenerationFailed) and "row-local failure" in str(failure)
        assert [text for text, _ in results] == expected
        assert all(isinstance(f, Chunk) and f.finish_reason == FinishReason.LENGTH for _, f in results)
        assert sched.alive()
    finally:
        sched.stop()


def test_a_row_that_breaks_the_shared_prefill_is_retried_without_the_others(model: Any) -> None:
    armed = threading.Event()
    poisoned = _PoisonModel(model, armed)
    expected = _alone(model, PROMPTS)
    armed.set()
    sched = _scheduler(poisoned)
    try:
        bad = _Outcome()
        seqs = [(_seq(p, o), o) for p, o in ((p, _Outcome()) for p in PROMPTS)]
        seqs.insert(0, (_seq([5, POISON, 7, 8], bad), bad))
        results = _run_together(sched, seqs)
        _, failure = results.pop(0)
        assert isinstance(failure, GenerationFailed) and "index out of range" in str(failure)
        assert [text for text, _ in results] == expected
    finally:
        sched.stop()


def test_a_row_that_breaks_a_decode_step_is_dropped_and_the_rest_rebuilt(model: Any) -> None:
    armed = threading.Event()
    poisoned = _PoisonModel(model, armed)
    expected = _alone(model, PROMPTS)
    # The victim's prompt is clean; it decodes POISON as its next input once it has run for a few steps.
    sched = _scheduler(poisoned)
    try:
        bad = _Outcome()
        seqs = [(_seq(p, o, new=40), o) for p, o in ((p, _Outcome()) for p in PROMPTS)]
        for s, _ in seqs:
            s.max_new_tokens = 12
        rogue = _seq([30, 31, 32], bad, new=40)

        class _Poisoner(StopMatcher):
            def __init__(self) -> None:
                super().__init__(())
                self.n = 0

            def feed(self, text: str) -> tuple[str, bool]:
                self.n += 1
                if self.n == 4:
                    rogue.generated[-1] = POISON  # its next decode input breaks the shared pass
                    rogue.last = POISON
                    armed.set()
                return super().feed(text)

        rogue.stop = _Poisoner()
        seqs.insert(2, (rogue, bad))
        results = _run_together(sched, seqs)
        _, failure = results.pop(2)
        assert isinstance(failure, GenerationFailed)
        assert [text for text, _ in results] == expected
        assert sched.alive()
        # The scheduler serves new work afterwards.
        armed.clear()
        out = _Outcome()
        sched.submit(_seq(PROMPTS[0], out))
        assert out.result()[0] == expected[0]
    finally:
        sched.stop()
