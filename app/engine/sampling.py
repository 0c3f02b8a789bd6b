"""Per-row logits processing and token sampling for the batching scheduler (pure torch, no model).

Order of operations in `RowSampler.process` (raw model logits in, processed logits out):
  1. logit_bias            additive, per token id
  2. min_tokens/ignore_eos eos ids set to -inf (while len(generated) < min_tokens, or always)
  3. repetition_penalty    CTRL/HF style over the last `repeat_last_n` tokens of prompt + generated:
                           positive logits divided by the penalty, negative ones multiplied
  4. presence/frequency    OpenAI style over generated tokens only: logit -= presence * [count > 0] + frequency * count
`RowSampler.sample` then picks a token: temperature 0 is argmax; otherwise, as in transformers' generate,
  5. temperature           logits / temperature
  6. top_k -> top_p -> min_p -> typical_p   truncation, each over what the previous one kept (at least one token)
  7. a draw from the kept distribution with the row's own torch.Generator (never the global RNG)
Steps 5-7 only touch the candidates: `torch.topk(top_k)` when top_k is set, else a growing top-k window that
covers the top_p nucleus, else the tokens min_p keeps. Only typical_p alone scans (and sorts) the full vocabulary.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

from app.engine.types import SamplingParams
from app.errors import InvalidRequest

_NEG_INF = float("-inf")


class RowSampler:
    """The sampling state of one sequence: resolved params, its RNG and running token counts."""

    def __init__(
        self, params: SamplingParams, prompt_ids: Sequence[int], eos_ids: Collection[int], vocab_size: int
    ) -> None:
        self.vocab_size = vocab_size
        self.temperature = float(params.temperature or 0.0)
        self.top_k = int(params.top_k or 0)
        self.top_p = 1.0 if params.top_p is None else float(params.top_p)
        self.min_p = float(params.min_p or 0.0)
        self.typical_p = 1.0 if params.typical_p is None else float(params.typical_p)
        self.repetition_penalty = 1.0 if params.repetition_penalty is None else float(params.repetition_penalty)
        self.repeat_last_n = 64 if params.repeat_last_n is None else int(params.repeat_last_n)
        self.presence_penalty = float(params.presence_penalty or 0.0)
        self.frequency_penalty = float(params.frequency_penalty or 0.0)
        self.min_tokens = int(params.min_tokens or 0)
        self.ignore_eos = bool(params.ignore_eos)
        if self.temperature < 0:
            raise InvalidRequest("temperature must be >= 0", param="temperature")
        if self.repetition_penalty <= 0:
            raise InvalidRequest("repetition_penalty must be > 0", param="repetition_penalty")

        self._eos = torch.tensor(sorted({int(e) for e in eos_ids if 0 <= int(e) < vocab_size}), dtype=torch.long)
        bias = dict(params.logit_bias or ())
        for tok in bias:
            if not 0 <= int(tok) < vocab_size:
                raise InvalidRequest(f"logit_bias token id {tok} is outside the vocabulary", param="logit_bias")
        self._bias_ids = torch.tensor([int(t) for t in bias], dtype=torch.long)
        self._bias_values = torch.tensor([float(v) for v in bias.values()], dtype=torch.float32)

        self._prompt = list(prompt_ids)
        self._use_rep = self.repetition_penalty != 1.0 and self.repeat_last_n != 0
        self._use_counts = self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
        self._stats = _TokenStats()
        self._prompt_unique: torch.Tensor | None = None  # repeat_last_n == -1: distinct prompt tokens

        self.needs_processing = (
            bool(bias) or self.min_tokens > 0 or self.ignore_eos or self._use_rep or self._use_counts
        )
        self.greedy = self.temperature == 0.0
        self._truncates = (
            (self.top_k > 0 and self.top_k < vocab_size) or self.top_p < 1.0 or self.min_p > 0.0 or self.typical_p < 1.0
        )

        self.seed = int(params.seed) if params.seed is not None and params.seed != -1 else None
        self._cpu_gen = torch.Generator(device="cpu")
        if self.seed is None:
            self.seed = self._cpu_gen.seed()
        else:
            self._cpu_gen.manual_seed(self.seed)
        self._gen_by_device: dict[torch.device, torch.Generator] = {torch.device("cpu"): self._cpu_gen}

    @property
    def plain_greedy(self) -> bool:
        """Argmax of the raw logits: such rows are batched into one argmax by `sample_rows`."""
        return self.greedy and not self.needs_processing

    def _generator(self, device: torch.device) -> torch.Generator:
        gen = self._gen_by_device.get(device)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed or 0)
            self._gen_by_device[device] = gen
        return gen

    def _repeat_window(self, generated: Sequence[int], device: torch.device) -> torch.Tensor | None:
        """Token ids the repetition penalty applies to (duplicates allowed), or a mask for the whole context."""
        n = self.repeat_last_n
        if n < 0:
            return None
        gen_part = list(generated[-n:]) if generated else []
        need = n - len(gen_part)
        prompt_part = self._prompt[-need:] if need > 0 and self._prompt else []
        return torch.tensor(prompt_part + gen_part, dtype=torch.long, device=device)

    @torch.inference_mode()
    def process(self, logits: torch.Tensor, generated: Sequence[int]) -> torch.Tensor:
        """Apply bias, eos bans and penalties to a 1-D float32 [V] row, in place; returns it.

        `generated` is expected to grow by appending between calls (counts are kept incrementally).
        """
        if not self.needs_processing:
            return logits
        device = logits.device
        if self._bias_ids.numel():
            if self._bias_ids.device != device:
                self._bias_ids = self._bias_ids.to(device)
                self._bias_values = self._bias_values.to(device)
            logits.index_add_(0, self._bias_ids, self._bias_values.to(logits.dtype))
        if self._eos.numel() and (self.ignore_eos or len(generated) < self.min_tokens):
            if self._eos.device != device:
                self._eos = self._eos.to(device)
            saved = logits.index_select(0, self._eos)
            logits.index_fill_(0, self._eos, _NEG_INF)
            if not bool(torch.isfinite(logits).any()):
                # Only eos was allowed (e.g. by a grammar): ending beats emitting a token nothing permits.
                logits.index_copy_(0, self._eos, saved)
        if self._use_rep:
            self._apply_repetition(logits, generated)
        if self._use_counts:
            ids, counts = self._stats.update(generated, device)
            if ids.numel():
                penalty = counts * self.frequency_penalty + self.presence_penalty
                logits.index_add_(0, ids, penalty.neg_().to(logits.dtype))
        return logits

    def _apply_repetition(self, logits: torch.Tensor, generated: Sequence[int]) -> None:
        penalty = self.repetition_penalty
        ids = self._repeat_window(generated, logits.device)
        if ids is None:  # the whole context: distinct prompt tokens + distinct generated ones
            if self._prompt_unique is None or self._prompt_unique.device != logits.device:
                self._prompt_unique = torch.tensor(sorted(set(self._prompt)), dtype=torch.long, device=logits.device)
            ids = torch.cat([self._prompt_unique, self._stats.update(generated, logits.device)[0]])
        if ids.numel() == 0:
            return
        score = logits.gather(0, ids)
        score = torch.where(score < 0, score * penalty, score / penalty)
        logits.scatter_(0, ids, score)

    @torch.inference_mode()
    def sample(self, logits: torch.Tensor) -> int:
        """Pick the next token from processed logits (not modified)."""
        if self.greedy:
            return int(torch.argmax(logits).item())
        probs, ids = self._candidates(logits)
        choice = _draw(probs, self._generator(probs.device))
        return int(ids[choice].item()) if ids is not None else choice

    @torch.inference_mode()
    def distribution(self, logits: torch.Tensor) -> torch.Tensor:
        """The normalised [V] distribution `sample` draws from (one-hot at the argmax when greedy)."""
        out = torch.zeros(logits.numel(), dtype=torch.float32, device=logits.device)
        if self.greedy:
            out[torch.argmax(logits)] = 1.0
            return out
        probs, ids = self._candidates(logits)
        probs = probs / probs.sum()
        if ids is None:
            return probs
        return out.index_put_((ids,), probs)

    def _candidates(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Unnormalised probabilities of the kept tokens and their ids (None: `probs` spans the vocabulary)."""
        vocab = logits.numel()
        ids: torch.Tensor | None = None
        if 0 < self.top_k < vocab:
            vals, ids = torch.topk(logits, self.top_k)
            probs = torch.softmax(self._scale(vals), dim=-1)
        elif self.top_p < 1.0:
            # The nucleus is almost always small: grow a top-k window until it holds top_p of the mass, which is
            # exact and avoids sorting the whole vocabulary.
            scaled = self._scale(logits)
            lse = torch.logsumexp(scaled, dim=-1)
            k = min(vocab, 256)
            while True:
                vals, ids = torch.topk(scaled, k)
                probs = torch.exp(vals - lse)
                if k == vocab or float(probs.sum()) >= self.top_p:
                    break
                k = min(vocab, k * 16)
        else:
            probs = torch.softmax(self._scale(logits), dim=-1)
            if self.min_p > 0.0:
                ids = torch.nonzero(probs >= probs.max() * self.min_p).squeeze(1)
                probs = probs[ids]
        if self._truncates:
            probs = self._truncate(probs)
        return probs, ids

    def _scale(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float() / self.temperature if self.temperature != 1.0 else logits.float()

    def _truncate(self, probs: torch.Tensor) -> torch.Tensor:
        # probs is sorted descending whenever top_p is on (see `_candidates`).
        if self.top_p < 1.0:
            keep = (torch.cumsum(probs, dim=-1) - probs) < self.top_p
            keep[0] = True
            probs = probs * keep
        if self.min_p > 0.0:
            probs = probs * (probs >= probs.max() * self.min_p)
        if self.typical_p < 1.0:
            probs = _typical(probs / probs.sum(), self.typical_p)
        return probs


def _draw(probs: torch.Tensor, gen: torch.Generator) -> int:
    """Inverse-CDF draw from unnormalised probabilities (an order of magnitude cheaper than multinomial here)."""
    cum = torch.cumsum(probs, dim=-1)
    if not bool(cum[-1] > 0):  # every token masked (or NaN logits): nothing to draw from
        return int(torch.argmax(torch.nan_to_num(probs, nan=-1.0)).item())
    u = torch.rand(1, generator=gen, device=probs.device) * cum[-1]
    idx = int(torch.searchsorted(cum, u, right=True).clamp_max(probs.numel() - 1).item())
    if probs[idx] <= 0:  # u rounded up onto the total: take the last token that has mass
        idx = int(torch.nonzero(probs).max().item())
    return idx


class _TokenStats:
    """Distinct generated tokens and their counts as sparse tensors, folded in incrementally.

    The scheduler only appends to `generated`, so each step costs O(new tokens); a history that shrank or changed
    under us is recounted from scratch.
    """

    def __init__(self) -> None:
        self._reset(torch.device("cpu"))

    def _reset(self, device: torch.device) -> None:
        self._pos: dict[int, int] = {}
        self._seen = 0
        self._last: int | None = None
        self.ids = torch.empty(0, dtype=torch.long, device=device)
        self.counts = torch.empty(0, dtype=torch.float32, device=device)

    def update(self, generated: Sequence[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(generated)
        if n < self._seen or (self._seen and generated[self._seen - 1] != self._last) or self.ids.device != device:
            self._reset(device)
        if n > self._seen:
            new_ids: list[int] = []
            new_counts: list[float] = []
            bump: list[int] = []
            for tok in generated[self._seen :]:
                tok = int(tok)
                pos = self._pos.get(tok)
                if pos is None:
                    self._pos[tok] = len(self._pos)
                    new_ids.append(tok)
                    new_counts.append(1.0)
                elif pos >= self.ids.numel():
                    new_counts[pos - self.ids.numel()] += 1.0
                else:
                    bump.append(pos)
            if bump:
                where = torch.tensor(bump, dtype=torch.long, device=device)
                self.counts.index_add_(0, where, torch.ones(len(bump), device=device))
            if new_ids:
                self.ids = torch.cat([self.ids, torch.tensor(new_ids, dtype=torch.long, device=device)])
                self.counts = torch.cat([self.counts, torch.tensor(new_counts, dtype=torch.float32, device=device)])
            self._seen = n
            self._last = int(generated[-1])
        return self.ids, self.counts


def _typical(probs: torch.Tensor, mass: float) -> torch.Tensor:
    """Locally typical sampling (Meister et al.), as transformers' TypicalLogitsWarper, over the kept tokens."""
    alive = probs > 0
    logp = torch.where(alive, torch.log(probs.clamp_min(1e-45)), torch.zeros_like(probs))
    entropy = -(logp * probs).sum()
    shifted = torch.where(alive, (-logp - entropy).abs(), torch.full_like(probs, float("inf")))
    order = torch.argsort(shifted)
    cum = torch.cumsum(probs[order], dim=-1)
    last = int((cum < mass).sum().item())
    last = min(last, probs.numel() - 1)
    cutoff = shifted[order[last]]
    keep = (shifted <= cutoff) & alive
    out = probs * keep
    return out / out.sum()


def logprob_info(raw_logits: torch.Tensor, token_id: int, top_n: int) -> tuple[float, list[tuple[int, float]]]:
    """Log-probability of `token_id` under the raw model distribution and the `top_n` most likely tokens."""
    logp = torch.log_softmax(raw_logits.float(), dim=-1)
    chosen = float(logp[token_id].item())
    if top_n <= 0:
        return chosen, []
    values, ids = torch.topk(logp, min(top_n, logp.numel()))
    return chosen, list(zip(ids.tolist(), values.tolist(), strict=True))


def sample_rows(logits: torch.Tensor, samplers: Sequence[RowSampler], generated: Sequence[Sequence[int]]) -> list[int]:
    """Next token for every row of `logits` [B, V]; the input tensor is left unmodified.

    Rows that are plain greedy share one batched argmax; the others are processed and sampled one by one.
    """
    with torch.inference_mode():
        out = [0] * len(samplers)
        fast = [i for i, s in enumerate(samplers) if s.plain_greedy]
        if fast:
            if len(fast) == len(samplers):
                return [int(t) for t in torch.argmax(logits, dim=-1).tolist()]
            picked = torch.argmax(logits[fast], dim=-1).tolist()
            for i, tok in zip(fast, picked, strict=True):
                out[i] = int(tok)
        for i, sampler in enumerate(samplers):
            if sampler.plain_greedy:
                continue
            if sampler.needs_processing:
                row = sampler.process(logits[i].to(torch.float32, copy=True), generated[i])
            else:
                row = logits[i].float()
            out[i] = sampler.sample(row)
        return out
