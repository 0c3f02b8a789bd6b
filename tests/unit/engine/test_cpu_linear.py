"""SkinnyLinear: same results as nn.Linear up to float rounding, and only where it is faster."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from app.engine import cpu_linear
from app.engine.cpu_linear import PackedLinear, SkinnyLinear, use_cpu_kernels, use_skinny_linears
from tests.helpers.tiny_llama import tiny_llama


def _pair(bias: bool) -> tuple[nn.Linear, nn.Linear]:
    torch.manual_seed(0)
    ref = nn.Linear(48, 80, bias=bias)
    fast = nn.Linear(48, 80, bias=bias)
    fast.load_state_dict(ref.state_dict())
    assert use_skinny_linears(fast) == 1
    assert type(fast) is SkinnyLinear
    return ref, fast


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 48), (4, 48), (2, 3, 48), (16, 1, 48)])
def test_matches_linear(bias: bool, shape: tuple[int, ...]) -> None:
    ref, fast = _pair(bias)
    x = torch.randn(*shape)
    got = fast(x)
    assert got.shape == ref(x).shape
    assert got.is_contiguous()
    torch.testing.assert_close(got, ref(x), rtol=1e-5, atol=1e-5)


def test_many_rows_take_the_usual_path() -> None:
    ref, fast = _pair(True)
    x = torch.randn(cpu_linear.SKINNY_MAX_ROWS + 1, 48)
    assert torch.equal(fast(x), ref(x))  # prefill-sized inputs: nn.Linear itself, bit for bit


def test_other_dtypes_take_the_usual_path() -> None:
    ref, fast = _pair(False)
    x = torch.randn(2, 48, dtype=torch.float64)
    with pytest.raises(RuntimeError):
        ref(x)  # mismatched dtypes fail the same way as in nn.Linear, not silently
    with pytest.raises(RuntimeError):
        fast(x)


def test_bf16_matches_linear() -> None:
    ref, fast = _pair(False)
    ref.to(torch.bfloat16)
    fast.to(torch.bfloat16)
    x = torch.randn(4, 48, dtype=torch.bfloat16)
    torch.testing.assert_close(fast(x), ref(x))  # bf16 tolerances: another summation order only


def test_switches_only_plain_fp32_and_bf16_linears_and_keeps_ties() -> None:
    model = tiny_llama(tie_word_embeddings=True)
    sub = type("QuantLinear", (nn.Linear,), {})  # stands in for bitsandbytes' Linear8bitLt/Linear4bit
    model.model.layers[0].mlp.up_proj.__class__ = sub
    half = model.model.layers[1].mlp.down_proj.to(torch.float16)
    ids = torch.randint(0, 64, (2, 5))
    with torch.inference_mode():
        half.to(torch.float32)
        want = model(input_ids=ids).logits
        half.to(torch.float16)
    switched = use_skinny_linears(model)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert switched == len(linears) - 2
    assert type(model.model.layers[0].mlp.up_proj) is sub
    assert type(half) is nn.Linear
    assert type(model.lm_head) is SkinnyLinear
    assert model.lm_head.weight is model.model.embed_tokens.weight
    half.to(torch.float32)
    with torch.inference_mode():
        got = model(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# ---- PackedLinear: MKL's packed sgemm for fp32 ----

needs_mkl = pytest.mark.skipif(not cpu_linear.packed_sgemm_works(), reason="torch built without MKL's packed sgemm")


def _packed(bias: bool, out: int = 80, inp: int = 48) -> tuple[nn.Linear, nn.Linear]:
    torch.manual_seed(0)
    ref = nn.Linear(inp, out, bias=bias)
    fast = nn.Linear(inp, out, bias=bias)
    fast.load_state_dict(ref.state_dict())
    holder = nn.Sequential(fast)
    assert use_cpu_kernels(holder) == (1, 0)
    assert type(fast) is PackedLinear
    return ref, fast


@needs_mkl
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 48), (4, 48), (2, 3, 48), (16, 1, 48), (300, 48)])
def test_packed_matches_linear(bias: bool, shape: tuple[int, ...]) -> None:
    ref, fast = _packed(bias)
    x = torch.randn(*shape)
    with torch.inference_mode():
        got, want = fast(x), ref(x)
    assert got.shape == want.shape
    assert got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@needs_mkl
def test_packed_rows_are_the_same_bit_for_bit_whatever_the_batch() -> None:
    # What keeps greedy answers batched equal to alone: a row's product does not depend on the rows beside it.
    _, fast = _packed(False, out=1536, inp=576)
    x = torch.randn(40, 576)
    with torch.inference_mode():
        alone = torch.cat([fast(x[i : i + 1]) for i in range(len(x))])
        for rows in (2, 3, 16, 17, 32, 40):
            assert torch.equal(fast(x[:rows]), alone[:rows]), rows


@needs_mkl
def test_use_cpu_kernels_packs_fp32_skinnies_bf16_and_keeps_ties() -> None:
    model = tiny_llama(tie_word_embeddings=True)
    sub = type("QuantLinear", (nn.Linear,), {})  # stands in for bitsandbytes' Linear8bitLt/Linear4bit
    model.model.layers[0].mlp.up_proj.__class__ = sub
    model.model.layers[1].mlp.down_proj.to(torch.bfloat16)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    footprint = model.get_memory_footprint()
    packed, skinny = use_cpu_kernels(model)
    assert (packed, skinny) == (len(linears) - 2, 1)
    assert type(model.model.layers[0].mlp.up_proj) is sub
    assert type(model.model.layers[1].mlp.down_proj) is SkinnyLinear
    # The tied lm_head is packed too but keeps its weight (the input embeddings read its rows): an extra copy.
    assert type(model.lm_head) is PackedLinear
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.lm_head.weight.untyped_storage().nbytes() == model.lm_head.weight.numel() * 4
    assert cpu_linear.packed_copy_bytes(model) == model.lm_head.weight.numel() * 4
    # Any other packed layer's weight storage is released: no second copy, the footprint the manager plans with holds.
    q_proj = model.model.layers[0].self_attn.q_proj
    assert type(q_proj) is PackedLinear and q_proj.weight.untyped_storage().nbytes() <= 4
    assert q_proj.weight.shape == (q_proj.out_features, q_proj.in_features)
    assert model.get_memory_footprint() == footprint


@needs_mkl
def test_packed_model_answers_like_the_plain_one() -> None:
    model = tiny_llama(tie_word_embeddings=True)
    ids = torch.randint(0, 64, (3, 7))
    with torch.inference_mode():
        want = model(input_ids=ids).logits
        use_cpu_kernels(model)
        got = model(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_without_packed_sgemm_fp32_gets_skinny(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_linear, "packed_sgemm_works", lambda: False)
    model = tiny_llama()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert use_cpu_kernels(model) == (0, len(linears))
    assert all(type(m) is SkinnyLinear for m in linears)
