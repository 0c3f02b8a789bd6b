"""Embedding maths and plumbing: mean pooling over real tokens, dimensions and normalisation, pass planning,
batched rows equal to rows alone on a tiny Llama, and jobs on the scheduler's inference thread."""

from __future__ import annotations

import threading

import pytest
import torch

from app.engine import embeddings
from app.engine.scheduler import BatchScheduler
from app.errors import GenerationFailed
from tests.helpers.tiny_llama import tiny_llama


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert embeddings.mean_pool(hidden, mask).tolist() == [[2.0, 3.0], [7.0, 8.0]]


def test_finish_cuts_then_renormalises() -> None:
    v = torch.tensor([3.0, 4.0, 12.0])
    assert embeddings.finish(v, dimensions=None, normalize=False) == [3.0, 4.0, 12.0]
    assert embeddings.finish(v, dimensions=None, normalize=True) == pytest.approx([3 / 13, 4 / 13, 12 / 13])
    assert embeddings.finish(v, dimensions=2, normalize=True) == pytest.approx([0.6, 0.8])


@pytest.mark.parametrize(
    ("lengths", "budget"),
    [([5, 1, 9, 3, 3], 12), ([100], 10), ([2] * 50, 16), ([7, 7, 7], 7), ([], 8)],
)
def test_passes_cover_every_input_once_within_budget(lengths: list[int], budget: int) -> None:
    waiting = list(range(len(lengths)))
    passes = []
    while waiting:
        picked = [waiting[i] for i in embeddings.take_pass([lengths[i] for i in waiting], max_rows=4, budget=budget)]
        assert picked and picked[0] == waiting[0]  # the oldest row always goes
        passes.append(picked)
        waiting = [i for i in waiting if i not in picked]
    assert sorted(i for p in passes for i in p) == list(range(len(lengths)))
    for p in passes:
        width = max(lengths[i] for i in p)
        assert len(p) == 1 or (width * len(p) <= budget and len(p) <= 4)


def test_batched_rows_equal_rows_alone_and_differ_by_input() -> None:
    model = tiny_llama()
    rows = [[5, 6, 7, 8, 9, 10], [11, 12], [5, 6, 7]]
    together = embeddings.hidden_states(model, rows, "cpu", pad_id=0)
    assert together.shape == (3, embeddings.hidden_size(model))
    for i, r in enumerate(rows):
        alone = embeddings.hidden_states(model, [r], "cpu", pad_id=0)[0]
        torch.testing.assert_close(together[i], alone, rtol=1e-5, atol=1e-5)
    # A prefix is not the whole: pooling covers every token of each row, and only those.
    assert not torch.allclose(together[0], together[2], atol=1e-3)


class _Tok:
    pad_token_id = 0


def _scheduler() -> BatchScheduler:
    return BatchScheduler(None, _Tok(), name="t", max_batch=2, eos_ids={1}, device="cpu")


def test_call_runs_on_the_inference_thread_and_survives_a_failing_job() -> None:
    s = _scheduler()
    try:
        assert s.call(lambda: threading.current_thread().name).result(timeout=5) == "infer-t"
        with pytest.raises(ZeroDivisionError):
            s.call(lambda: 1 / 0).result(timeout=5)
        assert s.alive() and s.call(lambda: 42).result(timeout=5) == 42
    finally:
        s.stop()


def test_stop_fails_queued_jobs_and_later_calls() -> None:
    s = _scheduler()
    release = threading.Event()
    started = threading.Event()

    def blocker() -> str:
        started.set()
        release.wait(5)
        return "done"

    first = s.call(blocker)
    assert started.wait(5)
    queued = s.call(lambda: "never")
    threading.Timer(0.2, release.set).start()
    s.stop()
    assert first.result(timeout=5) == "done"
    with pytest.raises(GenerationFailed):
        queued.result(timeout=5)
    with pytest.raises(GenerationFailed):
        s.call(lambda: 1).result(timeout=1)
