"""Prefix cache: KV states of recent prompts (and finished conversations), reused when a new prompt starts
with the same tokens. LRU, bounded by bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each [1, heads, tokens, head_dim]


def kv_bytes(kv: KV) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)


class PrefixCache:
    """Maps token sequences to their KV states. `lookup` returns the longest cached prefix of a prompt."""

    def __init__(self, budget_bytes: int, min_tokens: int = 16) -> None:
        self.budget = budget_bytes
        self.min_tokens = min_tokens
        self._entries: OrderedDict[tuple[int, ...], KV] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def store(self, tokens: Sequence[int], kv: KV) -> None:
        if self.budget <= 0 or len(tokens) < self.min_tokens:
            return
        key = tuple(tokens)
        size = kv_bytes(kv)
        if size > self.budget:
            return
        with self._lock:
            # An entry that is a prefix of the new one is redundant: the new one serves every lookup it would.
            for other in [k for k in self._entries if len(k) <= len(key) and key[: len(k)] == k]:
                self._bytes -= kv_bytes(self._entries.pop(other))
            if key in self._entries:
                self._entries.move_to_end(key)
                return
            self._entries[key] = kv
            self._bytes += size
            while self._bytes > self.budget and self._entries:
                _, old = self._entries.popitem(last=False)
                self._bytes -= kv_bytes(old)

    def lookup(self, tokens: Sequence[int]) -> tuple[int, KV | None]:
        """(n, kv) for the longest usable cached prefix: at most len(tokens) - 1 tokens, so that at least one
        prompt token is left to compute the first logits from."""
        limit = len(tokens) - 1
        best_key: tuple[int, ...] | None = None
        best_n = 0
        with self._lock:
            for key in self._entries:
                n = _common_prefix(key, tokens, limit)
                if n > best_n:
                    best_key, best_n = key, n
            if best_key is None or best_n < self.min_tokens:
                return 0, None
            self._entries.move_to_end(best_key)
            kv = self._entries[best_key]
        return best_n, [(k[:, :, :best_n, :], v[:, :, :best_n, :]) for k, v in kv]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


def _common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
