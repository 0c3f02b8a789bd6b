"""PrefixCache: longest usable prefix, LRU by bytes, redundant prefixes dropped."""

from __future__ import annotations

import torch

from app.engine.prefix_cache import PrefixCache, kv_bytes


def kv(n: int, layers: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.full((1, 1, n, 2), float(i)), torch.full((1, 1, n, 2), float(-i))) for i in range(layers)]


def test_longest_prefix_leaves_one_token_to_compute() -> None:
    cache = PrefixCache(budget_bytes=1 << 20, min_tokens=2)
    cache.store(list(range(10)), kv(10))
    n, got = cache.lookup(list(range(10)))
    assert n == 9 and got is not None and got[0][0].shape[2] == 9  # the last prompt token is always recomputed
    n, got = cache.lookup([*range(6), 99, 100])
    assert n == 6 and got is not None and got[1][1].shape[2] == 6
    assert cache.lookup([5, 6, 7]) == (0, None)


def test_below_min_tokens_is_a_miss() -> None:
    cache = PrefixCache(budget_bytes=1 << 20, min_tokens=4)
    cache.store(list(range(10)), kv(10))
    assert cache.lookup([0, 1, 2, 50]) == (0, None)


def test_lru_eviction_by_bytes() -> None:
    one = kv_bytes(kv(10))
    cache = PrefixCache(budget_bytes=2 * one, min_tokens=1)
    cache.store([1] * 10, kv(10))
    cache.store([2] * 10, kv(10))
    cache.lookup([1] * 10 + [3])  # touch the first: the second becomes least recently used
    cache.store([3] * 10, kv(10))
    assert len(cache) == 2 and cache.size_bytes <= 2 * one
    assert cache.lookup([2] * 10 + [0]) == (0, None)
    assert cache.lookup([1] * 10 + [0])[0] == 10


def test_a_longer_entry_replaces_its_prefixes() -> None:
    cache = PrefixCache(budget_bytes=1 << 20, min_tokens=1)
    cache.store([1, 2, 3], kv(3))
    cache.store([1, 2, 3, 4, 5], kv(5))
    assert len(cache) == 1
    assert cache.lookup([1, 2, 3, 4, 5, 6])[0] == 5


def test_disabled_and_oversized() -> None:
    assert len(_stored(PrefixCache(budget_bytes=0))) == 0
    tiny = PrefixCache(budget_bytes=10, min_tokens=1)
    tiny.store([1, 2, 3], kv(3))
    assert len(tiny) == 0


def _stored(cache: PrefixCache) -> PrefixCache:
    cache.store(list(range(100)), kv(100))
    return cache
