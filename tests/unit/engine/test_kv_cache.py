"""The preallocated batch KV cache must behave exactly like transformers' DynamicCache."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from app.engine import kv_cache
from app.engine.kv_cache import BatchKVCache, GrowingLayer
from tests.helpers.tiny_llama import tiny_llama


def _kv(b: int, t: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 2, t, 4, generator=g), torch.randn(b, 2, t, 4, generator=g)


def test_updates_match_concatenation_across_growth() -> None:
    layer = GrowingLayer()
    ref_k, ref_v = _kv(3, 5, 0)
    layer.update(ref_k, ref_v)
    capacity = None
    grew = 0
    for step in range(kv_cache.GROW * 2 + 7):
        k, v = _kv(3, 1, step + 1)
        ref_k, ref_v = torch.cat([ref_k, k], dim=-2), torch.cat([ref_v, v], dim=-2)
        out_k, out_v = layer.update(k, v)
        assert torch.equal(out_k, ref_k) and torch.equal(out_v, ref_v)
        assert layer.get_seq_length() == ref_k.shape[-2]
        assert layer._kbuf is not None
        if layer._kbuf.shape[-2] != capacity:
            capacity, grew = layer._kbuf.shape[-2], grew + 1
    # One allocation for the seed and one per GROW tokens, not one per step.
    assert 2 <= grew <= 4


def test_writes_in_place_between_growths() -> None:
    layer = GrowingLayer()
    layer.update(*_kv(2, 4, 0))
    assert layer._kbuf is not None
    buffer = layer._kbuf[:, :, kv_cache.MARGIN :].data_ptr()
    for step in range(10):
        keys, _ = layer.update(*_kv(2, 1, step + 1))
        assert keys.data_ptr() == buffer


def test_window_reads_zeros_in_front_without_copying() -> None:
    """The decode step's batched attention reads windows up to MARGIN columns wider than the cache."""
    layer = GrowingLayer()
    k0, v0 = _kv(2, 5, 0)
    layer.update(k0, v0)
    k1, v1 = _kv(2, 1, 1)
    keys, values = layer.update(k1, v1)
    for width in (3, 6, 6 + kv_cache.MARGIN):
        wk, wv = layer.window(width)
        assert wk.shape == (2, 2, width, 4) and wv.shape == (2, 2, width, 4)
        real = min(width, 6)
        assert torch.equal(wk[:, :, width - real :], keys[:, :, 6 - real :])
        assert torch.equal(wv[:, :, width - real :], values[:, :, 6 - real :])
        assert not wk[:, :, : width - real].any() and not wv[:, :, : width - real].any()
        assert wk.untyped_storage().data_ptr() == keys.untyped_storage().data_ptr()  # a view, not a copy
    # Wider than the margin: a zero-padded copy, same values.
    wk, _ = layer.window(6 + kv_cache.MARGIN + 3)
    assert torch.equal(wk[:, :, -6:], keys) and not wk[:, :, :-6].any()


def test_replaced_views_reseed_the_buffer() -> None:
    """crop / batch_select_indices replace `keys` from outside; the next update must start from those."""
    layer = GrowingLayer()
    k0, v0 = _kv(4, 6, 0)
    layer.update(k0, v0)
    layer.batch_select_indices(torch.tensor([0, 2]))
    layer.crop(-2)
    k1, v1 = _kv(2, 1, 9)
    out_k, out_v = layer.update(k1, v1)
    assert torch.equal(out_k, torch.cat([k0[[0, 2], :, :4], k1], dim=-2))
    assert torch.equal(out_v, torch.cat([v0[[0, 2], :, :4], v1], dim=-2))


def test_seeded_cache_holds_the_given_tensors() -> None:
    layers = [_kv(2, 3, i) for i in range(3)]
    cache = BatchKVCache(layers)
    assert isinstance(cache, DynamicCache)
    assert cache.get_seq_length() == 3
    for layer, (k, v) in zip(cache.layers, layers, strict=True):
        assert torch.equal(layer.keys, k) and torch.equal(layer.values, v)


def test_model_decoding_is_bit_identical_to_dynamic_cache() -> None:
    model = tiny_llama()
    prompt = torch.randint(0, 64, (3, 7))

    def decode(cache: DynamicCache) -> tuple[list[list[int]], torch.Tensor]:
        with torch.inference_mode():
            out = model(input_ids=prompt, cache=cache, use_cache=True)
            mask = torch.ones(3, 7, dtype=torch.long)
            tokens = []
            for _ in range(kv_cache.GROW + 20):  # crosses one reallocation
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                tokens.append(nxt)
                mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], dim=1)
                out = model(input_ids=nxt, attention_mask=mask, cache=cache, use_cache=True)
        return torch.cat(tokens, dim=1).tolist(), out.logits

    want_tokens, want_logits = decode(DynamicCache())
    got_tokens, got_logits = decode(BatchKVCache())
    assert got_tokens == want_tokens
    assert torch.equal(got_logits, want_logits)
