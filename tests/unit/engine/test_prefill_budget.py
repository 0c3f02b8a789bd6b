"""A burst of newcomers is prefilled in slices within the prefill token budget, with decode steps between them,
and every row's greedy text is the same as when it runs alone. In-process on a tiny random Llama."""

from __future__ import annotations

from typing import Any

from app.engine.scheduler import BatchScheduler
from tests.helpers.tiny_llama import tiny_llama
from tests.unit.engine.test_scheduler_isolation import EOS, PROMPTS, VOCAB, _alone, _Outcome, _run_together, _seq, _Tok


def test_a_burst_over_the_budget_takes_several_passes_and_answers_as_alone() -> None:
    model: Any = tiny_llama(vocab_size=VOCAB)
    expected = _alone(model, PROMPTS)
    kinds: list[str] = []
    sched = BatchScheduler(
        model, _Tok(), name="budget", max_batch=4, eos_ids={EOS}, device="cpu", on_forward=kinds.append,
        prefill_tokens=6,  # 4 + 3 + 5 prompt tokens: one row per pass at most
    )  # fmt: skip
    try:
        outs = [_Outcome() for _ in PROMPTS]
        results = _run_together(sched, [(_seq(p, o), o) for p, o in zip(PROMPTS, outs, strict=True)])
    finally:
        sched.stop()
    assert [text for text, _ in results] == expected
    assert kinds.count("prefill") == len(PROMPTS)
    # Decode steps of the first rows ran between the slices, before the last row's prefill.
    assert kinds.index("decode") < len(kinds) - 1 - kinds[::-1].index("prefill")
