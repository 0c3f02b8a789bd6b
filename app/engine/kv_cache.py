"""The batch KV cache: a DynamicCache whose layers write new tokens into preallocated room.

transformers' DynamicLayer concatenates the whole cache with every new token (`torch.cat` per layer per step):
at c=16 on the embedded model that was 15% of a decode step (bench/README.md). Here each layer keeps a buffer with
spare columns and exposes `keys`/`values` as views of its filled part, so a decode step copies one column; the buffer
is reallocated only every `GROW` tokens. Everything else (`crop`, `batch_select_indices`, our scheduler's
select/merge) keeps working on the views; a layer whose `keys` were replaced from outside re-seeds its buffer.

Each buffer also keeps `MARGIN` zeroed columns in front of its first token, so the decode step's batched attention
can read a window a few columns wider than the cache (`window`) without copying it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

GROW = 128  # spare columns per (re)allocation: one buffer copy every GROW decode steps
MARGIN = 16  # zeroed columns before the first token (decode_step rounds attention windows up to 16 columns)


class GrowingLayer(DynamicLayer):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self._kbuf: torch.Tensor | None = None
        self._vbuf: torch.Tensor | None = None
        self._len = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if not self._owns_views():
            self._reseed()
        n = key_states.shape[-2]
        end = self._len + n
        kbuf, vbuf = self._kbuf, self._vbuf
        if kbuf is None or vbuf is None or MARGIN + end > kbuf.shape[-2] or kbuf.shape[:2] != key_states.shape[:2]:
            kbuf, vbuf = self._grow(key_states, value_states, end)
        kbuf[:, :, MARGIN + self._len : MARGIN + end].copy_(key_states)
        vbuf[:, :, MARGIN + self._len : MARGIN + end].copy_(value_states)
        self._len = end
        self.keys = kbuf[:, :, MARGIN : MARGIN + end]
        self.values = vbuf[:, :, MARGIN : MARGIN + end]
        return self.keys, self.values

    def window(self, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the last `width` columns; up to MARGIN columns more than the cache holds read as
        zeros (views of the buffer's margin, no copy)."""
        extra = width - self._len
        if self._kbuf is None or self._vbuf is None or not self._owns_views() or extra > MARGIN:
            return _last_columns(self.keys, width), _last_columns(self.values, width)  # type: ignore[arg-type]
        cols = slice(MARGIN + self._len - width, MARGIN + self._len)
        return self._kbuf[:, :, cols], self._vbuf[:, :, cols]

    def _owns_views(self) -> bool:
        """False when `keys` no longer views our buffer (crop, select or reorder replaced it)."""
        k = self.keys
        if self._kbuf is None:
            return k is None or k.numel() == 0
        return (
            k is not None
            and k.numel() > 0
            and k.data_ptr() == self._kbuf[:, :, MARGIN:].data_ptr()
            and k.shape[-2] == self._len
            and k.shape[:2] == self._kbuf.shape[:2]
        )

    def _reseed(self) -> None:
        k, v = self.keys, self.values
        self._kbuf = self._vbuf = None
        self._len = 0
        if k is not None and v is not None and k.numel() > 0:
            self._kbuf, self._vbuf = _alloc(k, v, k.shape[-2])
            self._kbuf[:, :, MARGIN : MARGIN + k.shape[-2]].copy_(k)
            self._vbuf[:, :, MARGIN : MARGIN + v.shape[-2]].copy_(v)
            self._len = k.shape[-2]

    def _grow(self, keys: torch.Tensor, values: torch.Tensor, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        kbuf, vbuf = _alloc(keys, values, end)
        if self._kbuf is not None and self._vbuf is not None and self._len:
            kept = slice(MARGIN, MARGIN + self._len)
            kbuf[:, :, kept].copy_(self._kbuf[:, :, kept])
            vbuf[:, :, kept].copy_(self._vbuf[:, :, kept])
        self._kbuf, self._vbuf = kbuf, vbuf
        return kbuf, vbuf

    def reset(self) -> None:
        self._kbuf = self._vbuf = None
        self._len = 0
        super().reset()


def _alloc(k: torch.Tensor, v: torch.Tensor, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    cap = -(-(tokens + GROW) // 64) * 64
    b, h, _, dk = k.shape
    kbuf, vbuf = k.new_empty((b, h, MARGIN + cap, dk)), v.new_empty((b, h, MARGIN + cap, v.shape[-1]))
    kbuf[:, :, :MARGIN].zero_()
    vbuf[:, :, :MARGIN].zero_()
    return kbuf, vbuf


class BatchKVCache(DynamicCache):
    """A DynamicCache of GrowingLayers, empty or seeded with per-layer (keys, values)."""

    def __init__(self, kv: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        if kv is None:
            Cache.__init__(self, layer_class_to_replicate=GrowingLayer)
            return
        layers: list[Any] = []
        for k, v in kv:
            layer = GrowingLayer()
            layer.update(k, v)
            layers.append(layer)
        Cache.__init__(self, layers=layers)

    def tensors(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's keys and values, [B, heads, T, head_dim]."""
        return [(layer.keys, layer.values) for layer in self.layers]  # type: ignore[union-attr,misc]

    def select(self, idx: torch.Tensor, start: int = 0) -> BatchKVCache:
        """Rows `idx` from column `start` on: what is left after finished rows and all-padding columns go."""
        return BatchKVCache([(k[idx, :, start:, :], v[idx, :, start:, :]) for k, v in self.tensors()])

    def stacked(self, other: BatchKVCache, width: int) -> BatchKVCache:
        """This cache's rows above `other`'s, both left-padded to `width` columns."""
        return BatchKVCache(
            (torch.cat([lpad(k1, width), lpad(k2, width)]), torch.cat([lpad(v1, width), lpad(v2, width)]))
            for (k1, v1), (k2, v2) in zip(self.tensors(), other.tensors(), strict=True)
        )


def lpad(t: torch.Tensor, width: int) -> torch.Tensor:
    """Left-pad a [B, heads, T, head_dim] tensor with zeros to `width` columns (real tokens stay right-aligned)."""
    missing = width - t.shape[-2]
    if missing <= 0:
        return t
    return torch.nn.functional.pad(t, (0, 0, missing, 0))


def _last_columns(t: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - t.shape[-2]
    return lpad(t, width) if missing > 0 else t[:, :, t.shape[-2] - width :]


def window(cache: Any, layer: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`width` last columns of a cache layer's keys and values (GrowingLayer.window; a copy for other caches)."""
    lay = cache.layers[layer]
    if isinstance(lay, GrowingLayer):
        return lay.window(width)
    return _last_columns(lay.keys, width), _last_columns(lay.values, width)
