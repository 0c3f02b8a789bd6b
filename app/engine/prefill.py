"""Prefill planning: which newcomers share a forward pass, and their cached KV stacked as one batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from app.engine.kv_cache import lpad
from app.engine.prefix_cache import KV

if TYPE_CHECKING:
    from app.engine.scheduler import Sequence


@dataclass
class Newcomer:
    seq: Sequence
    hit: int  # cached prompt tokens available
    kv: KV | None

    @property
    def need(self) -> int:
        return len(self.seq.prompt_ids) - self.hit


def prefill_groups(items: list[Newcomer]) -> list[list[Newcomer]]:
    """Newcomers grouped for shared prefill passes: a row joins a group when the group's width (the most new
    tokens any of its rows computes) stays within max(32, 2x) of the fewest, so short suffixes are not padded out
    to a long fresh prompt."""
    groups: list[list[Newcomer]] = []
    for item in sorted(items, key=lambda n: n.need):
        if groups and item.need - groups[-1][0].need <= max(32, groups[-1][0].need):
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def stack_pasts(group: list[Newcomer], reuse: list[int], offset: int) -> KV:
    """The group's cached KV as one batch, each row's `reuse` tokens right-aligned in `offset` columns."""
    sample = next(g.kv for g, used in zip(group, reuse, strict=True) if used and g.kv is not None)
    out: KV = []
    for layer, (k0, v0) in enumerate(sample):
        ks, vs = [], []
        for g, used in zip(group, reuse, strict=True):
            if used and g.kv is not None:
                k, v = g.kv[layer][0][:, :, :used], g.kv[layer][1][:, :, :used]
            else:
                k, v = k0[:, :, :0], v0[:, :, :0]
            ks.append(lpad(k, offset))
            vs.append(lpad(v, offset))
        out.append((torch.cat(ks), torch.cat(vs)))
    return out
