"""Estimate the memory a model needs before loading it: weights (per dtype or bitsandbytes mode) + KV cache.

Reads only file headers (safetensors JSON headers, GGUF tensor infos, config.json); never torch.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from app.errors import InvalidRequest
from app.registry.encoder_info import encoder_spec
from app.registry.gguf_info import GGUFInfo, read_gguf_info
from app.registry.safetensors_info import read_safetensors_header
from app.registry.types import ModelSource

EstimateMethod = Literal["safetensors", "gguf", "config", "file_size"]

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_DTYPE_ALIASES = {"fp32": "float32", "f32": "float32", "bf16": "bfloat16", "fp16": "float16", "f16": "float16"}
# bitsandbytes 4-bit: two weights per byte plus one fp32 absmax per 64-weight block (blocksize 64 is the default).
_NF4_BYTES_PER_PARAM = 0.5 + 4 / 64
# Unknown checkpoints: the "file_size" fallback multiplies the weight files' size by this.
FILE_SIZE_FACTOR = 1.5
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# Tensors bitsandbytes leaves unquantised even though they are 2-D: embeddings and the output head
# (GGUF calls them token_embd and a top-level "output").
_EMBEDDING = re.compile(
    r"(^|\.)(embed_tokens|embed_positions|embeddings?|wte|wpe|word_embeddings|position_embeddings|"
    r"token_embd|lm_head|embed_out)(\.|$)|^output$"
)


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """What loading a model will take, in bytes. `parameters` is 0 when the method could not count them."""

    parameters: int
    weights_bytes: int
    kv_cache_bytes: int
    overhead_bytes: int
    method: EstimateMethod

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.overhead_bytes


@dataclass(frozen=True, slots=True)
class ModelDims:
    """The shape numbers the KV-cache size and the CLI need; None where the files do not say."""

    layers: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    context_length: int | None = None
    vocab_size: int | None = None
    hidden: int | None = None
    heads: int | None = None


@dataclass(frozen=True, slots=True)
class WeightCount:
    """Parameters split by how bitsandbytes treats them.

    `linear` are 2-D weights of Linear layers (quantised in 8/4-bit), `linear_rows` their output rows (one fp32
    scale each in 8-bit); everything else (embeddings, lm_head, norms, biases) stays in the compute dtype.
    """

    total: int
    linear: int
    linear_rows: int
    method: EstimateMethod


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a dtype name; "auto" counts as float32, the largest, so estimates stay conservative."""
    key = dtype.strip().lower().removeprefix("torch.")
    key = _DTYPE_ALIASES.get(key, key)
    if key == "auto":
        return 4
    if key not in _DTYPE_BYTES:
        raise InvalidRequest(f"unknown dtype {dtype!r}", param="dtype")
    return _DTYPE_BYTES[key]


# --- safetensors ---


def safetensors_files(directory: Path) -> list[Path]:
    """The shards a `from_pretrained` would read: the index's files, else model.safetensors, else all."""
    index = directory / "model.safetensors.index.json"
    if not index.is_file():
        found = sorted(directory.glob("*.safetensors.index.json"))
        index = found[0] if found else index
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map") or {}
        return [directory / name for name in sorted(set(weight_map.values())) if (directory / name).is_file()]
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    return sorted(p for p in directory.glob("*.safetensors") if not p.name.startswith("adapter_"))


def _is_linear(name: str, shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 and name.endswith("weight") and _EMBEDDING.search(name.rsplit(".", 1)[0]) is None


def count_tensors(
    tensors: Iterable[tuple[str, tuple[int, ...]]], method: EstimateMethod, *, rows_axis: int = 0
) -> WeightCount:
    """Sum parameters over (name, shape); `rows_axis` is where the output dimension sits (GGUF reverses)."""
    total = linear = rows = 0
    for name, shape in tensors:
        n = math.prod(shape)
        total += n
        if _is_linear(name, shape):
            linear += n
            rows += shape[rows_axis]
    return WeightCount(total, linear, rows, method)


def _safetensors_count(directory: Path) -> WeightCount | None:
    files = safetensors_files(directory)
    if not files:
        return None
    tensors: list[tuple[str, tuple[int, ...]]] = []
    for path in files:
        for name, info in read_safetensors_header(path).items():
            if name == "__metadata__" or not isinstance(info, dict):
                continue
            tensors.append((name, tuple(int(d) for d in info.get("shape", ()))))
    return count_tensors(tensors, "safetensors")


# --- GGUF ---


def _gguf_count(info: GGUFInfo) -> WeightCount:
    # GGUF stores [in, out]: the output rows are the second dimension.
    return count_tensors(((t.name, t.shape) for t in info.tensors), "gguf", rows_axis=1)


def _first_int(value: Any) -> int | None:
    if isinstance(value, list):  # per-layer counts (some architectures): the largest bounds the cache
        ints = [int(v) for v in value if isinstance(v, int | float)]
        return max(ints) if ints else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _gguf_dims(info: GGUFInfo) -> ModelDims:
    arch = str(info.metadata.get("general.architecture", "llama"))

    def get(key: str) -> int | None:
        return _first_int(info.value(f"{arch}.{key}"))

    hidden, heads = get("embedding_length"), get("attention.head_count")
    kv_heads = get("attention.head_count_kv") or heads
    head_dim = get("attention.key_length") or (hidden // heads if hidden and heads else None)
    vocab = get("vocab_size")
    if vocab is None:
        vocab = info.array_lengths.get("tokenizer.ggml.tokens")
    return ModelDims(
        layers=get("block_count"),
        kv_heads=kv_heads,
        head_dim=head_dim,
        context_length=get("context_length"),
        vocab_size=vocab,
        hidden=hidden,
        heads=heads,
    )


# --- config.json ---

# Architectures whose MLP is up/down only (no gate projection).
_UNGATED_MLP = {"gpt2", "gpt_neox", "gptj", "opt", "bloom", "falcon", "phi", "gpt_bigcode", "mpt", "codegen", "bert"}


def _text_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Multimodal configs nest the language model under text_config / llm_config."""
    for key in ("text_config", "llm_config", "language_config"):
        inner = config.get(key)
        if isinstance(inner, dict):
            merged = dict(inner)
            merged.setdefault("model_type", config.get("model_type"))
            if "tie_word_embeddings" in config:
                merged.setdefault("tie_word_embeddings", config["tie_word_embeddings"])
            return merged
    return dict(config)


def _cfg_int(config: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        v = config.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def _config_dims(config: Mapping[str, Any]) -> ModelDims:
    c = _text_config(config)
    hidden = _cfg_int(c, "hidden_size", "n_embd", "d_model", "dim")
    heads = _cfg_int(c, "num_attention_heads", "n_head", "num_heads", "n_heads")
    kv_heads = _cfg_int(c, "num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num")
    if kv_heads is None and c.get("multi_query") is True:
        kv_heads = 1
    head_dim = _cfg_int(c, "head_dim") or (hidden // heads if hidden and heads else None)
    return ModelDims(
        layers=_cfg_int(c, "num_hidden_layers", "n_layer", "num_layers", "n_layers"),
        kv_heads=kv_heads or heads,
        head_dim=head_dim,
        context_length=_cfg_int(c, "max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx"),
        vocab_size=_cfg_int(c, "vocab_size", "padded_vocab_size"),
        hidden=hidden,
        heads=heads,
    )


def config_count(config: Mapping[str, Any]) -> WeightCount | None:
    """Parameters of a standard decoder from its config: embeddings, attention, (gated) MLP or MoE, norms."""
    c = _text_config(config)
    d = _config_dims(config)
    if not (d.hidden and d.layers and d.vocab_size and d.heads and d.head_dim and d.kv_heads):
        return None
    h, hd = d.hidden, d.head_dim
    inter = _cfg_int(c, "intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size") or 4 * h
    q_out, kv_out = d.heads * hd, d.kv_heads * hd
    attn = h * q_out + 2 * h * kv_out + q_out * h
    attn_rows = q_out + 2 * kv_out + h
    mats = 2 if c.get("model_type") in _UNGATED_MLP else 3
    experts = _cfg_int(c, "num_local_experts", "num_experts", "n_routed_experts") or 0
    if experts:
        moe_inter = _cfg_int(c, "moe_intermediate_size", "expert_intermediate_size") or inter
        shared = _cfg_int(c, "n_shared_experts", "num_shared_experts") or 0
        mlp = (experts + shared) * mats * h * moe_inter
        mlp_rows = (experts + shared) * ((mats - 1) * moe_inter + h)
        router = experts * h  # the gate is a Linear too, but tiny
        mlp, mlp_rows = mlp + router, mlp_rows + experts
    else:
        mlp = mats * h * inter
        mlp_rows = (mats - 1) * inter + h
    linear_per_layer = attn + mlp
    norms_per_layer = 2 * h
    tied = bool(c.get("tie_word_embeddings", True))
    embeddings = d.vocab_size * h * (1 if tied else 2)
    linear = d.layers * linear_per_layer
    total = linear + d.layers * norms_per_layer + h + embeddings
    return WeightCount(total, linear, d.layers * (attn_rows + mlp_rows), "config")


def _read_config(directory: Path) -> dict[str, Any] | None:
    path = directory / "config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- public ---


def _gguf_path(source: ModelSource) -> Path | None:
    if source.kind in ("embedded", "gguf") or source.gguf_file:
        if source.gguf_file:
            return source.path / source.gguf_file
        if source.path.is_file():
            return source.path
    return None


def model_dims(source: ModelSource) -> ModelDims:
    """Layer/head/context numbers from the GGUF metadata or config.json (empty ModelDims when neither exists)."""
    gguf = _gguf_path(source)
    if gguf is not None:
        return _gguf_dims(read_gguf_info(gguf))
    config = _read_config(source.path)
    return _config_dims(config) if config is not None else ModelDims()


# GGUF architectures whose transformers class the lean CPU decode step takes (app/engine/decode_step.py), and the
# ggml types it multiplies 4-bit (Q4_0, Q4_1).
LEAN_ARCHITECTURES = ("llama", "mistral", "qwen2")
FOUR_BIT_TYPES = (2, 3)


def four_bit_decode_bytes(source: ModelSource) -> int:
    """What the lean CPU decode step adds for a GGUF whose layers are Q4_0/Q4_1: a 4-bit copy of each such weight
    (half a byte per weight, plus a 16-bit scale and offset per 32) and an int8 copy of the output projection (which
    then needs no packed fp32 copy); 0 for any other model."""
    gguf = _gguf_path(source)
    if gguf is None:
        return 0
    info = read_gguf_info(gguf)
    if str(info.metadata.get("general.architecture", "")) not in LEAN_ARCHITECTURES:
        return 0
    four = [
        t for t in info.tensors if t.ggml_type in FOUR_BIT_TYPES and t.name.startswith("blk.") and len(t.shape) == 2
    ]
    if not four:
        return 0
    dims = _gguf_dims(info)
    # The head: int8 weights with a 16-bit scale and weight sum per 32 (cpu_w4a8.W8A8Linear; torch's path takes less).
    return sum(t.n_elements * 5 // 8 for t in four) + (dims.vocab_size or 0) * ((dims.hidden or 0) * 9 // 8)


def tied_output_bytes(source: ModelSource, *, dtype: str) -> int:
    """The size of the output projection when it shares its weight with the input embeddings (0 when it has its
    own): the engine's CPU kernels keep one extra packed copy of such a weight (app/engine/cpu_linear.py)."""
    gguf = _gguf_path(source)
    if gguf is not None:
        info = read_gguf_info(gguf)
        if any(t.name == "output.weight" for t in info.tensors):
            return 0
        dims = _gguf_dims(info)
    else:
        config = _read_config(source.path)
        if config is None or not _text_config(config).get("tie_word_embeddings", True):
            return 0
        dims = _config_dims(config)
    if not (dims.vocab_size and dims.hidden):
        return 0
    return dims.vocab_size * dims.hidden * dtype_bytes(dtype)


def kv_cache_bytes(dims: ModelDims, *, num_ctx: int, parallel: int, dtype: str) -> int:
    """2 (K and V) x layers x kv_heads x head_dim x tokens x sequences x bytes; 0 when the dims are unknown."""
    if not (dims.layers and dims.kv_heads and dims.head_dim):
        return 0
    return 2 * dims.layers * dims.kv_heads * dims.head_dim * max(0, num_ctx) * max(1, parallel) * dtype_bytes(dtype)


def weight_count(source: ModelSource) -> WeightCount | None:
    """Parameter counts by the best available method, or None if only file sizes are known."""
    gguf = _gguf_path(source)
    if gguf is not None:
        return _gguf_count(read_gguf_info(gguf))
    counted = _safetensors_count(source.path)
    if counted is not None:
        return counted
    config = _read_config(source.path)
    return config_count(config) if config is not None else None


def weights_bytes(count: WeightCount, *, dtype: str, quantization: str | None) -> int:
    """Resident bytes of the weights: linear layers at the bitsandbytes rate, the rest in the compute dtype."""
    per = dtype_bytes(dtype)
    if quantization is None:
        return count.total * per
    rest = (count.total - count.linear) * per
    if quantization == "8bit":
        return int(count.linear + 4 * count.linear_rows + rest)  # int8 weights + one fp32 scale per row
    if quantization == "4bit":
        return int(count.linear * _NF4_BYTES_PER_PARAM + rest)
    raise InvalidRequest(f"unknown quantization {quantization!r}; expected 8bit or 4bit", param="quantization")


def _weight_file_bytes(directory: Path) -> int:
    if not directory.is_dir():
        return 0
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))


def estimate(
    source: ModelSource,
    *,
    dtype: str,
    quantization: str | None,
    num_ctx: int,
    parallel: int,
    overhead_bytes: int,
) -> MemoryEstimate:
    """Memory to load `source` and serve `parallel` sequences of `num_ctx` tokens.

    Parameters come from safetensors headers or GGUF tensor infos (exact), else config.json (a standard decoder
    formula), else the weight files' size x 1.5. GGUF weights count at `dtype` because transformers dequantises
    them on load. `num_ctx` is capped at the model's own context length.
    """
    dims = model_dims(source)
    ctx = min(num_ctx, dims.context_length) if dims.context_length else num_ctx
    # An embedding model keeps no KV cache: each pass's activations are bounded by the pass size (overhead).
    embedding = source.gguf_file is None and encoder_spec(source.path) is not None
    kv = 0 if embedding else kv_cache_bytes(dims, num_ctx=ctx, parallel=parallel, dtype=dtype)
    count = weight_count(source)
    if count is not None:
        return MemoryEstimate(
            parameters=count.total,
            weights_bytes=weights_bytes(count, dtype=dtype, quantization=quantization),
            kv_cache_bytes=kv,
            overhead_bytes=overhead_bytes,
            method=count.method,
        )
    files = _weight_file_bytes(source.path)
    params = files // 2  # assume a 16-bit checkpoint: the common case on the Hub
    if quantization is None:
        weights = max(int(files * FILE_SIZE_FACTOR), params * dtype_bytes(dtype))
    else:
        weights = weights_bytes(WeightCount(params, params, 0, "file_size"), dtype=dtype, quantization=quantization)
    return MemoryEstimate(params, weights, kv, overhead_bytes, "file_size")
