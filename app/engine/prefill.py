"""Prefill planning: which newcomers share a forward pass, and their cached KV stacked as one batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from app.engine.kv_cache import BatchKVCache, lpad
from app.engine.prefix_cache import KV

if TYPE_CHECKING:
    from app.engine.decode_step import DecodeStep
    from app.engine.sequence import Sequence


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


# Prompt tokens computed per prefill step before the running rows get their next decode step. A burst of newcomers
# (32 requests in the same second) is prefilled in slices with decode steps between them, so the first rows answer
# sooner and running rows do not stall for the whole burst (vLLM's CPU build schedules by a token budget too).
PREFILL_TOKEN_BUDGET = 512


def within_budget(groups: list[list[Newcomer]], budget: int) -> tuple[list[list[Newcomer]], list[Newcomer]]:
    """The groups' rows whose computed tokens (rows x the group's width) fit `budget` in this step, and the rows
    left for the next one. The first row always goes: a prompt longer than the budget is prefilled whole."""
    if budget <= 0:
        return groups, []
    out: list[list[Newcomer]] = []
    deferred: list[Newcomer] = []
    spent = 0
    for group in groups:
        width = max(g.need for g in group)
        take: list[Newcomer] = []
        for item in group:
            if spent + width <= budget or (not out and not take):
                take.append(item)
                spent += width
            else:
                deferred.append(item)
        if take:
            out.append(take)
    return out, deferred


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


def prefill_pass(
    model: Any,
    last_token_step: DecodeStep | None,
    device: str,
    ids: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    cache: BatchKVCache,
) -> torch.Tensor:
    """The last column's logits of a prefill pass over right-aligned rows, `cache` updated in place.

    With a `last_token_step` (decode steps that compute unlike the model: 4-bit), the model's trunk computes every
    prompt token but the last, without logits, and each row's last prompt token goes through that decode step: its
    keys, values and logits then come out the same whether the earlier tokens were computed in this pass or reused
    from the prefix cache, so a cache hit never changes an answer."""
    forward: Any = model
    if last_token_step is not None:
        if ids.shape[1] > 1:
            head = ids[:, :-1].to(device), mask[:, :-1].to(device), positions[:, :-1].to(device)
            last_token_step.trunk(input_ids=head[0], attention_mask=head[1], position_ids=head[2], cache=cache)
        ids, positions, forward = ids[:, -1:], positions[:, -1:], last_token_step
    out = forward(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                  cache=cache, use_cache=True, logits_to_keep=1)  # fmt: skip
    return out.logits[:, -1, :].float().cpu()  # type: ignore[no-any-return]
