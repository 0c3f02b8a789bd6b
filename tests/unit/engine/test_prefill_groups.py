"""Newcomers share prefill passes when the numbers of prompt tokens they must compute are close."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.engine.prefill import Newcomer as _Newcomer
from app.engine.prefill import prefill_groups as _prefill_groups


@dataclass
class _Seq:
    prompt_ids: list[int] = field(default_factory=list)


def _items(*spec: tuple[int, int]) -> list[_Newcomer]:
    """(prompt length, cached hit) per newcomer; tagged by index through the prompt's first token."""
    return [_Newcomer(_Seq([i] * n), hit, None) for i, (n, hit) in enumerate(spec)]  # type: ignore[arg-type]


def _tags(groups: list[list[_Newcomer]]) -> list[list[int]]:
    return [sorted(g.seq.prompt_ids[0] for g in group) for group in groups]


def test_short_suffixes_share_one_pass() -> None:
    # Same system prompt cached (24 tokens), different questions: 6-16 tokens to compute each.
    assert _tags(_prefill_groups(_items((30, 24), (40, 24), (36, 24), (35, 24)))) == [[0, 1, 2, 3]]


def test_fresh_prompts_of_similar_length_share_a_pass() -> None:
    assert _tags(_prefill_groups(_items((30, 0), (50, 0), (20, 24 - 24)))) == [[0, 1, 2]]


def test_a_long_fresh_prompt_does_not_pad_out_short_suffixes() -> None:
    groups = _prefill_groups(_items((30, 24), (1500, 0), (36, 24), (1400, 0)))
    assert _tags(groups) == [[0, 2], [1, 3]]


def test_no_newcomers_no_groups() -> None:
    assert _prefill_groups([]) == []


def test_a_burst_is_prefilled_in_slices_within_the_token_budget() -> None:
    from app.engine.prefill import within_budget

    # 8 newcomers of 30 tokens each against a 100-token budget: 3 rows now, 5 after the next decode step.
    groups, deferred = within_budget(_prefill_groups(_items(*[(30, 0)] * 8)), 100)
    assert [len(g) for g in groups] == [3]
    assert len(deferred) == 5
    assert sorted(x for g in groups for x in _tags([g])[0]) + sorted(d.seq.prompt_ids[0] for d in deferred) == list(
        range(8)
    )


def test_a_prompt_longer_than_the_budget_goes_whole_and_alone() -> None:
    from app.engine.prefill import within_budget

    groups, deferred = within_budget(_prefill_groups(_items((30, 24), (1500, 0))), 100)
    assert _tags(groups) == [[0]]  # the short suffix first; the long prompt next step, whole
    assert [d.seq.prompt_ids[0] for d in deferred] == [1]
    groups, deferred = within_budget(_prefill_groups(_items((1500, 0))), 100)
    assert (_tags(groups), deferred) == ([[0]], [])


def test_no_budget_takes_everyone() -> None:
    from app.engine.prefill import within_budget

    items = _prefill_groups(_items(*[(30, 0)] * 8))
    assert within_budget(items, 0) == (items, [])
