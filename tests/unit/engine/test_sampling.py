"""RowSampler processors against hand-computed logits, truncation against transformers' warpers, seeding."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from app.engine.sampling import RowSampler, logprob_info, sample_rows
from app.engine.types import SamplingParams
from app.errors import InvalidRequest

V = 6
EOS = 5
BASE = [2.0, -2.0, 1.0, 0.5, -1.0, 3.0]


def make(prompt: list[int] | None = None, eos: set[int] | None = None, vocab: int = V, **kw: Any) -> RowSampler:
    params = SamplingParams(**kw).resolved()
    return RowSampler(params, prompt or [], {EOS} if eos is None else eos, vocab)


def row(values: list[float] | None = None) -> torch.Tensor:
    return torch.tensor(BASE if values is None else values, dtype=torch.float32)


def assert_close(actual: torch.Tensor, expected: list[float]) -> None:
    assert actual.tolist() == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------- processors


def test_defaults_do_not_touch_logits() -> None:
    s = make()
    assert not s.needs_processing
    assert_close(s.process(row(), [1, 2, 3]), BASE)


def test_logit_bias_is_additive() -> None:
    s = make(logit_bias=((1, 2.5), (3, -1.5)))
    assert_close(s.process(row(), []), [2.0, 0.5, 1.0, -1.0, -1.0, 3.0])


def test_logit_bias_out_of_vocab_rejected() -> None:
    with pytest.raises(InvalidRequest) as exc:
        make(logit_bias=((V, 1.0),))
    assert exc.value.param == "logit_bias"


def test_min_tokens_bans_eos_until_reached() -> None:
    s = make(min_tokens=2)
    assert s.process(row(), [])[EOS] == -math.inf
    assert s.process(row(), [0])[EOS] == -math.inf
    assert s.process(row(), [0, 1])[EOS] == 3.0
    # eos is the argmax of BASE: greedy only picks it once allowed
    g = make(min_tokens=1, temperature=0.0)
    assert g.sample(g.process(row(), [])) == 0
    assert g.sample(g.process(row(), [0])) == EOS


def test_min_tokens_bans_every_eos_id() -> None:
    s = make(min_tokens=1, eos={4, 5})
    out = s.process(row(), [])
    assert out[4] == -math.inf and out[5] == -math.inf
    assert out[:4].tolist() == BASE[:4]


def test_ignore_eos_always_bans() -> None:
    s = make(ignore_eos=True)
    for generated in ([], [0] * 50):
        assert s.process(row(), generated)[EOS] == -math.inf


@pytest.mark.parametrize(
    ("last_n", "prompt", "generated", "penalised"),
    [
        (2, [0, 1], [2], {1, 2}),  # the window spans prompt and generated
        (64, [0, 1], [2], {0, 1, 2}),
        (-1, [0, 1], [2, 2], {0, 1, 2}),  # whole context
        (1, [0, 1], [], {1}),  # nothing generated yet: the prompt tail
        (0, [0, 1], [2], set()),  # disabled
    ],
)
def test_repetition_penalty(last_n: int, prompt: list[int], generated: list[int], penalised: set[int]) -> None:
    p = 2.0
    s = make(prompt=prompt, repetition_penalty=p, repeat_last_n=last_n)
    expected = [(v * p if v < 0 else v / p) if i in penalised else v for i, v in enumerate(BASE)]
    assert_close(s.process(row(), generated), expected)


def test_repetition_penalty_whole_context_tracks_new_tokens() -> None:
    s = make(prompt=[0], repetition_penalty=2.0, repeat_last_n=-1)
    assert_close(s.process(row(), []), [1.0, -2.0, 1.0, 0.5, -1.0, 3.0])
    assert_close(s.process(row(), [4]), [1.0, -2.0, 1.0, 0.5, -2.0, 3.0])


def test_presence_and_frequency_over_generated_only() -> None:
    s = make(prompt=[0, 0, 0], presence_penalty=0.5, frequency_penalty=0.25)
    # token 3 twice: 0.5 + 2 * 0.25; token 4 once: 0.5 + 0.25; prompt token 0 untouched
    assert_close(s.process(row(), [3, 4, 3]), [2.0, -2.0, 1.0, -0.5, -1.75, 3.0])


def test_penalty_counts_follow_a_growing_and_a_replaced_history() -> None:
    s = make(frequency_penalty=1.0)
    generated: list[int] = []
    for tok in (1, 1, 2):
        generated.append(tok)
        s.process(row(), generated)
    assert_close(s.process(row(), generated), [2.0, -4.0, 0.0, 0.5, -1.0, 3.0])
    # a different history of the same length must not reuse the stale counts
    assert_close(s.process(row(), [0, 0, 0]), [-1.0, -2.0, 1.0, 0.5, -1.0, 3.0])
    assert_close(s.process(row(), [3]), [2.0, -2.0, 1.0, -0.5, -1.0, 3.0])


def test_processing_order() -> None:
    # bias before the repetition penalty: (1 + 1) / 2 = 1, not 1 / 2 + 1
    s = make(prompt=[2], logit_bias=((2, 1.0),), repetition_penalty=2.0, presence_penalty=0.25)
    assert s.process(row(), [2])[2].item() == pytest.approx(0.75)


# ---------------------------------------------------------------- sampling


def test_greedy_is_argmax() -> None:
    s = make(temperature=0.0)
    assert s.greedy and s.plain_greedy
    assert s.sample(row()) == EOS
    assert s.sample(row([0.0, 9.0, 1.0, 0.0, 0.0, 0.0])) == 1


def draws(s: RowSampler, logits: torch.Tensor, n: int) -> list[int]:
    return [s.sample(logits) for _ in range(n)]


@pytest.mark.parametrize(
    "kw",
    [
        {"top_k": 1, "top_p": 1.0},
        {"top_k": 0, "top_p": 1.0, "min_p": 1.0},
        {"top_k": 0, "top_p": 1e-6},
        {"top_k": 0, "top_p": 1.0, "typical_p": 1e-6, "temperature": 1.0},
    ],
)
def test_truncations_that_reduce_to_greedy(kw: dict[str, Any]) -> None:
    s = make(seed=1, temperature=kw.pop("temperature", 1.5), **kw)
    logits = torch.tensor([0.1, 0.3, 0.2, 0.25, 0.0, 0.15])
    if "typical_p" in kw:
        # typical keeps the token whose surprisal is closest to the entropy, not the argmax
        logp = torch.log_softmax(logits, -1)
        entropy = -(logp.exp() * logp).sum()
        expected = int(torch.argmin((-logp - entropy).abs()))
    else:
        expected = 1
    assert set(draws(s, logits, 200)) == {expected}


def test_sampling_covers_the_distribution() -> None:
    s = make(seed=3, temperature=1.0, top_k=0, top_p=1.0)
    picked = draws(s, torch.zeros(V), 600)
    counts = [picked.count(i) for i in range(V)]
    assert all(60 < c < 140 for c in counts), counts


@pytest.mark.parametrize(
    ("kw", "support"),
    [
        ({"top_k": 2, "top_p": 1.0}, {0, 1}),
        ({"top_k": 0, "top_p": 0.8}, {0, 1}),  # cumulative before token 2 is 0.8: not < 0.8
        ({"top_k": 0, "top_p": 0.81}, {0, 1, 2}),
        ({"top_k": 0, "top_p": 1.0, "min_p": 0.5}, {0, 1}),  # p >= 0.25
        ({"top_k": 3, "top_p": 0.6}, {0, 1}),  # top_p over the renormalised top 3
    ],
)
def test_truncation_support(kw: dict[str, Any], support: set[int]) -> None:
    probs = [0.5, 0.3, 0.15, 0.05, 0.0, 0.0]
    logits = torch.tensor([math.log(p) if p else -math.inf for p in probs])
    s = make(seed=0, temperature=1.0, **kw)
    dist = s.distribution(logits)
    assert {i for i, p in enumerate(dist.tolist()) if p > 0} == support
    assert dist.sum().item() == pytest.approx(1.0)
    assert set(draws(s, logits, 300)) == support


def test_temperature_scales_the_distribution() -> None:
    logits = row()
    s = make(temperature=2.0, top_k=0, top_p=1.0)
    assert_close(s.distribution(logits), torch.softmax(logits / 2.0, -1).tolist())


def _hf_distribution(logits: torch.Tensor, kw: dict[str, Any]) -> torch.Tensor:
    from transformers.generation.logits_process import (
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
        TypicalLogitsWarper,
    )

    scores = logits.clone()[None]
    ids = torch.zeros((1, 1), dtype=torch.long)
    warpers: list[Any] = [TemperatureLogitsWarper(kw["temperature"])]
    if kw.get("top_k"):
        warpers.append(TopKLogitsWarper(kw["top_k"]))
    if kw.get("top_p", 1.0) < 1.0:
        warpers.append(TopPLogitsWarper(kw["top_p"]))
    if kw.get("min_p"):
        warpers.append(MinPLogitsWarper(kw["min_p"]))
    if kw.get("typical_p", 1.0) < 1.0:
        warpers.append(TypicalLogitsWarper(kw["typical_p"]))
    for w in warpers:
        scores = w(ids, scores)
    return torch.softmax(scores[0], -1)


@pytest.mark.parametrize(
    "kw",
    [
        {"temperature": 0.7, "top_k": 40, "top_p": 0.9},
        {"temperature": 1.0, "top_k": 0, "top_p": 0.5},
        {"temperature": 1.3, "top_k": 0, "top_p": 0.999},  # the nucleus outgrows the first top-k window
        {"temperature": 0.8, "top_k": 0, "top_p": 1.0, "min_p": 0.05},
        {"temperature": 1.0, "top_k": 100, "top_p": 0.95, "min_p": 0.02},
        {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "typical_p": 0.7},
        {"temperature": 0.9, "top_k": 50, "top_p": 0.9, "typical_p": 0.8},
    ],
)
def test_matches_transformers_warpers(kw: dict[str, Any]) -> None:
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(1000, generator=gen) * 2.5
    ours = make(vocab=1000, eos=set(), **kw).distribution(logits)
    theirs = _hf_distribution(logits, kw)
    assert torch.equal(ours > 0, theirs > 0)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------- seeds


def _sequence(seed: int | None, n: int = 40) -> list[int]:
    return draws(make(seed=seed, temperature=1.0, top_k=0, top_p=1.0), torch.zeros(V), n)


def test_same_seed_same_sequence() -> None:
    assert _sequence(42) == _sequence(42)
    assert _sequence(42) != _sequence(43)


def test_random_seed_when_unset() -> None:
    assert _sequence(None) != _sequence(None)
    assert _sequence(-1) != _sequence(-1)
    assert make(seed=None).seed is not None


def test_global_seed_does_not_affect_rows() -> None:
    expected = _sequence(5)
    s = make(seed=5, temperature=1.0, top_k=0, top_p=1.0)
    got = []
    for i in range(40):
        torch.manual_seed(i)
        torch.rand(3)
        got.append(s.sample(torch.zeros(V)))
    assert got == expected


def test_interleaved_samplers_are_independent() -> None:
    a = make(seed=1, temperature=1.0, top_k=0, top_p=1.0)
    b = make(seed=2, temperature=1.0, top_k=0, top_p=1.0)
    seq_a, seq_b = [], []
    for _ in range(40):
        seq_a.append(a.sample(torch.zeros(V)))
        seq_b.append(b.sample(torch.zeros(V)))
    assert seq_a == _sequence(1)
    assert seq_b == _sequence(2)


# ---------------------------------------------------------------- batch helper and logprobs


def test_sample_rows_mixes_fast_and_slow_rows() -> None:
    logits = torch.stack([row(), row([5.0, 0, 0, 0, 0, 0]), row([0, 0, 7.0, 0, 0, 0]), row()])
    before = logits.clone()
    samplers = [
        make(temperature=0.0),  # plain greedy
        make(temperature=0.0, logit_bias=((3, 10.0),)),  # greedy with processing
        make(seed=0, temperature=1.0, top_k=1),  # sampled
        make(temperature=0.0, min_tokens=5),  # eos banned -> next best
    ]
    assert not samplers[1].plain_greedy and not samplers[3].plain_greedy
    assert sample_rows(logits, samplers, [[], [], [], [1]]) == [EOS, 3, 2, 0]
    assert torch.equal(logits, before)


def test_sample_rows_all_greedy_and_inference_tensors() -> None:
    with torch.inference_mode():
        logits = torch.stack([row(), row([0, 9.0, 0, 0, 0, 0])]).to(torch.bfloat16)
    assert sample_rows(logits, [make(temperature=0.0), make(temperature=0.0)], [[], []]) == [EOS, 1]
    s = make(seed=0, temperature=0.0, repetition_penalty=2.0)
    assert sample_rows(logits, [s, s], [[5], [1]]) == [0, 1]  # 3 / 2 < 2: the penalty moves the argmax


def test_logprob_info() -> None:
    logits = row()
    logp = torch.log_softmax(logits, -1)
    chosen, top = logprob_info(logits, 2, 3)
    assert chosen == pytest.approx(logp[2].item())
    assert [i for i, _ in top] == [5, 0, 2]
    assert [lp for _, lp in top] == pytest.approx([logp[5].item(), logp[0].item(), logp[2].item()])
    chosen, top = logprob_info(logits, 1, 0)
    assert chosen == pytest.approx(logp[1].item())
    assert top == []


def test_min_tokens_yields_when_only_eos_is_allowed() -> None:
    # a grammar that only allows eos wins over min_tokens: banning it would leave nothing to sample
    only_eos = torch.full((V,), -math.inf)
    only_eos[EOS] = 0.0
    kws: list[dict[str, Any]] = [{"temperature": 0.0}, {"temperature": 1.0, "seed": 0}]
    for kw in kws:
        s = make(min_tokens=3, **kw)
        assert s.sample(s.process(only_eos.clone(), [])) == EOS


def test_fully_masked_row_does_not_crash() -> None:
    s = make(seed=0, temperature=1.0, top_k=0, top_p=1.0)
    assert 0 <= s.sample(torch.full((V,), -math.inf)) < V
