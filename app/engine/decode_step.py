"""The decode step of Llama-family models on CPU, without transformers' per-layer Python.

A one-row decode step of the embedded model spent about 20 of its 48 ms outside the matmuls: transformers'
modules run some 200 small ops per step per layer group (dtype casts, mask building, reshapes, RoPE's
rotate_half), each a few microseconds of dispatch (bench/profile_step.py). This step runs the same model in about
a dozen ops per layer: RMSNorm from vector_norm, one q/k/v product, RoPE as one multiply-add with a rolled copy,
the cache append, SDPA with grouped-query heads (one call for all rows of up to 512 keys, `_groups`), one gate/up
product. Weights that are exactly 4-bit (a GGUF Q4_0/Q4_1 model) are multiplied 4-bit and the output projection
int8 (cpu_int4.four_bit: our VNNI kernel, cpu_w4a8.py, or torch's int4 kernel); other weights use the model's own
modules (MKL's packed sgemm). bench/lean_step.py: 2.4x faster for one row (bench/README.md).

The scheduler calls it for decode steps; prefill passes run the model's forward and keep fp32 numerics and speed,
except that with 4-bit products each prompt's last token goes through this step too (prefill.prefill_pass), so a
prefix-cache hit computes what a cold prompt does. Every op computes a row the same whatever rows are beside it,
so batched answers equal alone, bit for bit.

Models whose layers are not plain Llama (another attention, a sliding window, biases on the MLP, another
activation), models on a GPU and bf16 ones keep transformers' forward: `build` returns None for them.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from math import inf
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from app.engine import cpu_w4a8, kv_cache
from app.engine.cpu_int4 import Int4Linear, Int8Head, four_bit

log = logging.getLogger(__name__)

# transformers classes whose decoder layers are Llama's (RMSNorm, RoPE, GQA attention, SiLU-gated MLP).
ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")


@dataclass
class _Out:
    logits: torch.Tensor


class _Projections:
    """Several projections of one input, computed as one 4-bit layer (cpu_int4.four_bit) when their weights are
    4-bit, else each by the model's own module; returns the outputs concatenated."""

    def __init__(self, modules: list[nn.Module], lib: ctypes.CDLL | None) -> None:
        weights = [getattr(m, "weight", None) for m in modules]
        self.fused: Int4Linear | cpu_w4a8.W4A8Linear | None = None
        if all(isinstance(w, torch.Tensor) and w.stride() != (0, 0) for w in weights):
            self.fused = four_bit(
                [w for w in weights if w is not None], [getattr(m, "bias", None) for m in modules], lib
            )
        self.modules = modules

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """A 4-bit product in its kernel's dtype (the step adds bf16 to fp32 by promotion), else x's dtype."""
        if self.fused is not None:
            return self.fused.native(x)
        outs = [m(x) for m in self.modules]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)

    def extra_bytes(self) -> int:
        if self.fused is None:
            return 0
        return sum(b.numel() * b.element_size() for b in self.fused.buffers())


@dataclass
class _Layer:
    norm1: torch.Tensor
    norm2: torch.Tensor
    eps1: float
    eps2: float
    qkv: _Projections
    o: _Projections
    gate_up: _Projections
    down: _Projections


class DecodeStep:
    """Called like the model by the scheduler (input_ids, attention_mask, position_ids, cache, ...)."""

    def __init__(self, model: nn.Module, layers: list[_Layer]) -> None:
        cfg: Any = model.config
        self.model = model
        self.layers = layers
        self.heads = int(cfg.num_attention_heads)
        self.kv_heads = int(getattr(cfg, "num_key_value_heads", None) or self.heads)
        self.head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads)
        self.intermediate = int(cfg.intermediate_size)
        self.scale = self.head_dim**-0.5
        inner: Any = model.model  # type: ignore[union-attr]
        self.embed = inner.embed_tokens
        self.rotary = inner.rotary_emb
        self.norm_w = inner.norm.weight
        self.norm_eps = float(_eps(inner.norm))
        self.head: Any = model.lm_head
        half = self.head_dim // 2
        # rotate_half(x) * sin == roll(x, half) * (sin with its first half negated): one op instead of four.
        self.sign = torch.cat([-torch.ones(half), torch.ones(self.head_dim - half)])

    @property
    def extra_bytes(self) -> int:
        """Memory the 4-bit copies and the int8 head take beyond the model's own weights."""
        head = self.head.extra_bytes() if isinstance(self.head, Int8Head) else 0
        return head + sum(p.extra_bytes() for lay in self.layers for p in (lay.qkv, lay.o, lay.gate_up, lay.down))

    @property
    def owns_head(self) -> bool:
        """Whether the step computes logits with its own head (the model's output projection then serves no
        pass and needs no faster kernel)."""
        return isinstance(self.head, Int8Head)

    def trunk(self, **kwargs: Any) -> Any:
        """The model's forward without its output projection: a 4-bit step's prefill computes keys and values
        only, since each row's logits come from its last prompt token's decode step."""
        return self.model.model(use_cache=True, **kwargs)  # type: ignore[operator,union-attr]

    @property
    def prefill_numerics(self) -> bool:
        """Whether a step computes like the model's own forward (fp32 throughout), up to float rounding."""
        return self.int4_layers == 0

    @property
    def int4_layers(self) -> int:
        return sum(
            p.fused is not None for layer in self.layers for p in (layer.qkv, layer.o, layer.gate_up, layer.down)
        )

    def __call__(
        self,
        *,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: Any,
        use_cache: bool = True,
        logits_to_keep: int = 1,
    ) -> Any:
        if input_ids.shape[1] != 1:
            return self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                logits_to_keep=logits_to_keep,
            )
        return _Out(self._step(input_ids, attention_mask, position_ids, cache))

    def _step(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> torch.Tensor:
        groups = _groups(mask)
        if groups is None:  # not right-aligned (never from the scheduler): one masked pass over the padded columns
            return self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache).logits  # type: ignore[no-any-return]
        b = ids.shape[0]
        nh, nkv, hd = self.heads, self.kv_heads, self.head_dim
        x = self.embed(ids)  # [B, 1, H]
        cos, sin = self.rotary(x, positions)  # [B, 1, hd]
        sin = sin * self.sign.to(sin.dtype)
        for i, layer in enumerate(self.layers):
            h = _rms_norm(x, layer.norm1, layer.eps1)
            qkv = layer.qkv(h).view(b, nh + 2 * nkv, hd).float()  # the cache holds fp32, as prefill writes it
            qk = qkv[:, : nh + nkv]
            qk = torch.addcmul(qk * cos, qk.roll(hd // 2, dims=-1), sin)
            q = qk[:, :nh].unsqueeze(2)  # [B, nh, 1, hd]
            k = qk[:, nh:].unsqueeze(2)
            v = qkv[:, nh + nkv :].unsqueeze(2)
            cache.update(k, v, i)
            a = _attend(q, cache, i, groups, self.scale)
            x = x + layer.o(a.reshape(b, 1, nh * hd))
            gu = layer.gate_up(_rms_norm(x, layer.norm2, layer.eps2))
            x = x + layer.down(F.silu(gu[..., : self.intermediate]) * gu[..., self.intermediate :])
        logits: torch.Tensor = self.head(_rms_norm(x, self.norm_w, self.norm_eps))
        return logits


def _attend(q: torch.Tensor, cache: Any, layer: int, groups: list[_Group], scale: float) -> torch.Tensor:
    """Each row's attention over its cached keys and values (queries [B, heads, 1, head_dim], grouped-query heads
    allowed), grouped as `_groups` says."""
    outs = []
    for g in groups:
        k, v = kv_cache.window(cache, layer, g.width)
        gqa = q.shape[1] != k.shape[1]
        outs.append(
            F.scaled_dot_product_attention(
                q[g.lo : g.hi], k[g.lo : g.hi], v[g.lo : g.hi], attn_mask=g.mask, scale=scale, enable_gqa=gqa
            )
        )
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm in six small ops: a one-row F.rms_norm (or transformers' mean of squares) took 18-20 us of
    reduction overhead, vector_norm 2.5 us; 61 norms per step."""
    norm: torch.Tensor = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return (x * norm.square_().mul_(1 / x.shape[-1]).add_(eps).rsqrt_()).mul_(weight)


# The CPU SDPA kernel's key block (kv_split_size in aten's FlashAttentionKernel.cpp) and its vector width in fp32.
KEY_BLOCK = 512
LANES = 16


@dataclass
class _Group:
    """Rows lo..hi of a step attend together over their cache's last `width` columns; `mask` marks each row's
    real ones (None: one row over exactly its own columns)."""

    lo: int
    hi: int
    width: int
    mask: torch.Tensor | None


def _groups(mask: torch.Tensor) -> list[_Group] | None:
    """How a step's rows attend so that each row computes the same whatever rows are beside it; None when rows are
    not right-aligned (never from the scheduler).

    SDPA's CPU kernel sums a row's keys in blocks of KEY_BLOCK from the first column it is given, and within a block
    in LANES-wide vectors from the block's start, with a scalar tail. A row whose real columns fit one block
    (at most KEY_BLOCK) attends over a window of a multiple of LANES columns, masked: its real columns then land in
    the same lanes whatever the window's width, the masked ones add exact zeros, and one call serves a whole run of
    such rows (one call per layer instead of one per row: 2x less attention time at 32 rows). A longer row attends
    alone over exactly its own columns, as a one-row batch does."""
    real = mask.sum(1)
    if not bool((mask.flip(1).cumprod(1).sum(1) == real).all()):
        return None
    lens = [int(n) for n in real.tolist()]
    groups: list[_Group] = []
    i = 0
    while i < len(lens):
        if lens[i] > KEY_BLOCK:
            groups.append(_Group(i, i + 1, lens[i], None))
            i += 1
            continue
        j = i
        while j < len(lens) and lens[j] <= KEY_BLOCK:
            j += 1
        width = -(-max(lens[i:j]) // LANES) * LANES
        cols = torch.arange(width)
        # Additive (0 / -inf), as SDPA turns a boolean mask into on every call: built once per step, not per layer.
        masks = torch.zeros(j - i, 1, 1, width).masked_fill_((cols < (width - real[i:j])[:, None])[:, None, None], -inf)
        groups.append(_Group(i, j, width, masks))
        i = j
    return groups


# Prefill attention in float64 when decode steps are 4-bit: a prompt token's keys and values must come out the same
# whether its pass started at the prompt's first token or after a prefix-cache hit. Every other op of the pass
# computes a token the same either way; SDPA's blocked fp32 sums do not (its query blocks start elsewhere), and
# the rounding of inputs in front of every 4-bit product turns their last-bit differences into other answers. In
# float64 those differences stay below fp32's last bit, so the pass's fp32 result is the same.
EXACT_ATTENTION = "hugllama_sdpa_float64"


def _sdpa_float64(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:  # fmt: skip
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is not None and attention_mask.dtype.is_floating_point:
        attention_mask = attention_mask.double()
    out, _ = sdpa_attention_forward(module, query.double(), key.double(), value.double(), attention_mask, **kwargs)
    return out.to(query.dtype), None


def _use_exact_prefill_attention(model: nn.Module) -> None:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(EXACT_ATTENTION, _sdpa_float64)
    AttentionMaskInterface.register(EXACT_ATTENTION, sdpa_mask)
    model.set_attn_implementation(EXACT_ATTENTION)  # type: ignore[operator]


def _eps(norm: nn.Module) -> float:
    return float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))


def build(model: nn.Module, native: bool = True) -> DecodeStep | None:
    """The lean step for a plain Llama-family model on CPU (called before the fp32 kernels release the weights,
    so exactly-4-bit ones can be recovered), else None. `native`: 4-bit and int8 products through our kernel where
    it runs here (cpu_w4a8), else torch's."""
    cfg = getattr(model, "config", None)
    if cfg is None or type(model).__name__ not in ARCHITECTURES:
        return None
    if getattr(cfg, "hidden_act", "silu") != "silu" or getattr(cfg, "mlp_bias", False):
        return None
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return None
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in model.parameters()):
        return None  # GPUs keep transformers' forward; so do bf16 CPU models (opt-in, batched != alone anyway)
    inner: Any = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "rotary_emb") or not hasattr(inner, "layers"):
        return None
    lib = cpu_w4a8.library() if native else None
    layers: list[_Layer] = []
    for layer in inner.layers:
        attn, mlp = layer.self_attn, layer.mlp
        if type(layer.input_layernorm).__name__.endswith("RMSNorm") is False:
            return None
        layers.append(
            _Layer(
                norm1=layer.input_layernorm.weight,
                norm2=layer.post_attention_layernorm.weight,
                eps1=_eps(layer.input_layernorm),
                eps2=_eps(layer.post_attention_layernorm),
                qkv=_Projections([attn.q_proj, attn.k_proj, attn.v_proj], lib),
                o=_Projections([attn.o_proj], lib),
                gate_up=_Projections([mlp.gate_proj, mlp.up_proj], lib),
                down=_Projections([mlp.down_proj], lib),
            )
        )
    step = DecodeStep(model, layers)
    if not step.prefill_numerics:
        _use_exact_prefill_attention(model)
        head = getattr(model, "lm_head", None)
        if isinstance(head, nn.Linear) and head.bias is None and head.weight.dtype == torch.float32:
            step.head = Int8Head(head.weight, lib)
    kernel = next(
        (
            type(p.fused).__name__
            for lay in layers
            for p in (lay.qkv, lay.o, lay.gate_up, lay.down)
            if p.fused is not None
        ),
        "-",
    )
    log.info(
        "lean decode step: %d layers, %d of %d projections 4-bit (%s)",
        len(layers),
        step.int4_layers,
        4 * len(layers),
        kernel,
    )
    return step
