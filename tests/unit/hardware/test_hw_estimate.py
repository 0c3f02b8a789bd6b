from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from app.errors import InvalidRequest
from app.hardware.estimate import (
    ModelDims,
    config_count,
    count_tensors,
    dtype_bytes,
    estimate,
    kv_cache_bytes,
    model_dims,
    read_safetensors_header,
    tied_output_bytes,
    weight_count,
)
from app.registry.gguf_info import read_gguf_info
from app.registry.types import ModelSource

# A tiny llama: the shapes, not the values, are what the estimate reads.
VOCAB, HIDDEN, HEADS, KV_HEADS, HEAD_DIM, INTER, LAYERS, CTX = 64, 16, 4, 2, 4, 24, 2, 128


def _llama_tensors(tied: bool = True) -> dict[str, tuple[int, ...]]:
    t: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        t[p + "self_attn.q_proj.weight"] = (HEADS * HEAD_DIM, HIDDEN)
        t[p + "self_attn.k_proj.weight"] = (KV_HEADS * HEAD_DIM, HIDDEN)
        t[p + "self_attn.v_proj.weight"] = (KV_HEADS * HEAD_DIM, HIDDEN)
        t[p + "self_attn.o_proj.weight"] = (HIDDEN, HEADS * HEAD_DIM)
        t[p + "mlp.gate_proj.weight"] = (INTER, HIDDEN)
        t[p + "mlp.up_proj.weight"] = (INTER, HIDDEN)
        t[p + "mlp.down_proj.weight"] = (HIDDEN, INTER)
        t[p + "input_layernorm.weight"] = (HIDDEN,)
        t[p + "post_attention_layernorm.weight"] = (HIDDEN,)
    if not tied:
        t["lm_head.weight"] = (VOCAB, HIDDEN)
    return t


def _config(tied: bool = True) -> dict[str, object]:
    return {
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "max_position_embeddings": CTX,
        "vocab_size": VOCAB,
        "tie_word_embeddings": tied,
    }


def _linear(shapes: dict[str, tuple[int, ...]]) -> tuple[int, int]:
    """(linear params, their output rows), by name: the projections only."""
    names = [n for n in shapes if n.endswith("_proj.weight")]
    return sum(math.prod(shapes[n]) for n in names), sum(shapes[n][0] for n in names)


def _write_snapshot(d: Path, tied: bool = True, shards: int = 1) -> dict[str, tuple[int, ...]]:
    d.mkdir(parents=True, exist_ok=True)
    shapes = _llama_tensors(tied)
    arrays = {n: np.zeros(s, dtype=np.float16) for n, s in shapes.items()}
    (d / "config.json").write_text(json.dumps(_config(tied)))
    if shards == 1:
        save_file(arrays, str(d / "model.safetensors"))
        return shapes
    names = sorted(arrays)
    weight_map: dict[str, str] = {}
    for k in range(shards):
        part = names[k::shards]
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: arrays[n] for n in part}, str(d / fname))
        weight_map.update(dict.fromkeys(part, fname))
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    # Mistral-style repos also ship a consolidated copy that from_pretrained never reads.
    save_file(
        {"tok_embeddings.weight": np.zeros((VOCAB, HIDDEN), dtype=np.float16)}, str(d / "consolidated.safetensors")
    )
    return shapes


def _total(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(s) for s in shapes.values())


# --- safetensors ---


def test_safetensors_header_is_read_without_torch(tmp_path: Path) -> None:
    _write_snapshot(tmp_path)
    header = read_safetensors_header(tmp_path / "model.safetensors")
    assert header["model.embed_tokens.weight"]["shape"] == [VOCAB, HIDDEN]


@pytest.mark.parametrize("tied", [True, False])
def test_safetensors_parameter_count(tmp_path: Path, tied: bool) -> None:
    shapes = _write_snapshot(tmp_path, tied=tied)
    count = weight_count(ModelSource("hf_dir", tmp_path))
    assert count is not None
    assert count.method == "safetensors"
    assert count.total == _total(shapes)
    assert (count.linear, count.linear_rows) == _linear(shapes)  # embeddings, lm_head and norms are not linear


def test_sharded_snapshot_reads_only_the_indexed_shards(tmp_path: Path) -> None:
    shapes = _write_snapshot(tmp_path, shards=3)
    est = estimate(
        ModelSource("hf_cache", tmp_path), dtype="float32", quantization=None, num_ctx=8, parallel=1, overhead_bytes=0
    )
    assert est.method == "safetensors"
    assert est.parameters == _total(shapes)


def test_config_formula_matches_the_tensors(tmp_path: Path) -> None:
    for tied in (True, False):
        shapes = _llama_tensors(tied)
        count = config_count(_config(tied))
        assert count is not None
        assert count.total == _total(shapes)
        assert (count.linear, count.linear_rows) == _linear(shapes)


def test_config_is_the_fallback_without_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(_config()))
    est = estimate(
        ModelSource("hf_dir", tmp_path), dtype="bfloat16", quantization=None, num_ctx=8, parallel=1, overhead_bytes=0
    )
    assert est.method == "config"
    assert est.weights_bytes == 2 * _total(_llama_tensors())


def test_config_nested_text_config() -> None:
    outer = {"model_type": "llava", "text_config": _config(), "vision_config": {"hidden_size": 999}}
    count = config_count(outer)
    assert count is not None and count.total == _total(_llama_tensors())


def test_file_size_fallback(tmp_path: Path) -> None:
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0" * 1000)
    (tmp_path / "README.md").write_text("x" * 5000)
    src = ModelSource("hf_dir", tmp_path)
    fp16 = estimate(src, dtype="float16", quantization=None, num_ctx=8, parallel=1, overhead_bytes=0)
    fp32 = estimate(src, dtype="float32", quantization=None, num_ctx=8, parallel=1, overhead_bytes=0)
    assert (fp16.method, fp16.weights_bytes, fp16.kv_cache_bytes) == ("file_size", 1500, 0)
    assert fp32.weights_bytes == 2000  # 500 assumed 16-bit params at 4 bytes beats 1.5 x the file


# --- weights per dtype and quantization ---


@pytest.mark.parametrize(("dtype", "per"), [("float32", 4), ("bfloat16", 2), ("float16", 2), ("fp16", 2), ("auto", 4)])
def test_weights_scale_with_dtype(tmp_path: Path, dtype: str, per: int) -> None:
    shapes = _write_snapshot(tmp_path)
    est = estimate(
        ModelSource("hf_dir", tmp_path), dtype=dtype, quantization=None, num_ctx=1, parallel=1, overhead_bytes=7
    )
    assert est.weights_bytes == per * _total(shapes)
    assert est.total_bytes == est.weights_bytes + est.kv_cache_bytes + 7


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_bitsandbytes_weights(tmp_path: Path, dtype: str) -> None:
    shapes = _write_snapshot(tmp_path)
    src = ModelSource("hf_dir", tmp_path)
    linear, rows = _linear(shapes)
    rest = (_total(shapes) - linear) * dtype_bytes(dtype)
    e8 = estimate(src, dtype=dtype, quantization="8bit", num_ctx=1, parallel=1, overhead_bytes=0)
    e4 = estimate(src, dtype=dtype, quantization="4bit", num_ctx=1, parallel=1, overhead_bytes=0)
    full = estimate(src, dtype=dtype, quantization=None, num_ctx=1, parallel=1, overhead_bytes=0)
    assert e8.weights_bytes == linear + 4 * rows + rest  # int8 + an fp32 scale per row; the rest unquantised
    assert e4.weights_bytes == int(linear * (0.5 + 4 / 64)) + rest  # nf4 pairs + an fp32 absmax per 64
    assert e4.weights_bytes < e8.weights_bytes < full.weights_bytes


def test_unknown_quantization_and_dtype(tmp_path: Path) -> None:
    _write_snapshot(tmp_path)
    src = ModelSource("hf_dir", tmp_path)
    with pytest.raises(InvalidRequest) as q:
        estimate(src, dtype="float32", quantization="3bit", num_ctx=1, parallel=1, overhead_bytes=0)
    assert q.value.param == "quantization"
    with pytest.raises(InvalidRequest) as d:
        estimate(src, dtype="int4", quantization=None, num_ctx=1, parallel=1, overhead_bytes=0)
    assert d.value.param == "dtype"


# --- KV cache and dims ---


def test_kv_cache_formula_and_context_cap(tmp_path: Path) -> None:
    _write_snapshot(tmp_path)
    src = ModelSource("hf_dir", tmp_path)
    est = estimate(src, dtype="float16", quantization=None, num_ctx=100, parallel=3, overhead_bytes=0)
    assert est.kv_cache_bytes == 2 * LAYERS * KV_HEADS * HEAD_DIM * 100 * 3 * 2
    capped = estimate(src, dtype="float16", quantization=None, num_ctx=10 * CTX, parallel=1, overhead_bytes=0)
    assert capped.kv_cache_bytes == 2 * LAYERS * KV_HEADS * HEAD_DIM * CTX * 1 * 2


def test_model_dims_from_config(tmp_path: Path) -> None:
    _write_snapshot(tmp_path)
    assert model_dims(ModelSource("hf_dir", tmp_path)) == ModelDims(
        LAYERS, KV_HEADS, HEAD_DIM, CTX, VOCAB, HIDDEN, HEADS
    )


def test_model_dims_defaults_kv_heads_and_head_dim() -> None:
    dims = model_dims_from({"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 8, "vocab_size": 10})
    assert (dims.kv_heads, dims.head_dim) == (8, 4)


def model_dims_from(config: dict[str, object]) -> ModelDims:
    from app.hardware.estimate import _config_dims

    return _config_dims(config)


def test_unknown_dims_mean_no_kv_term() -> None:
    assert kv_cache_bytes(ModelDims(), num_ctx=4096, parallel=4, dtype="float16") == 0


# --- GGUF ---


def _write_gguf(path: Path, n_tokens: int = 2000) -> dict[str, tuple[int, ...]]:
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(LAYERS)
    w.add_context_length(CTX)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(INTER)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_token_list([f"tok{i}" for i in range(n_tokens)])  # long arrays are skipped, not materialised
    w.add_uint32("llama.some_small_array_len", 3)
    w.add_array("llama.small_array", [1, 2, 3])
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (VOCAB, HIDDEN), "output_norm.weight": (HIDDEN,)}
    for i in range(LAYERS):
        p = f"blk.{i}."
        shapes[p + "attn_q.weight"] = (HEADS * HEAD_DIM, HIDDEN)
        shapes[p + "attn_k.weight"] = (KV_HEADS * HEAD_DIM, HIDDEN)
        shapes[p + "attn_v.weight"] = (KV_HEADS * HEAD_DIM, HIDDEN)
        shapes[p + "attn_output.weight"] = (HIDDEN, HEADS * HEAD_DIM)
        shapes[p + "ffn_gate.weight"] = (INTER, HIDDEN)
        shapes[p + "ffn_up.weight"] = (INTER, HIDDEN)
        shapes[p + "ffn_down.weight"] = (HIDDEN, INTER)
        shapes[p + "attn_norm.weight"] = (HIDDEN,)
        shapes[p + "ffn_norm.weight"] = (HIDDEN,)
    for name, shape in shapes.items():
        w.add_tensor(name, np.zeros(shape, dtype=np.float32))  # numpy (out, in): GGUF stores it as [in, out]
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return shapes


def test_gguf_header(tmp_path: Path) -> None:
    _write_gguf(tmp_path / "m.gguf")
    header = read_gguf_info(tmp_path / "m.gguf")
    assert header.architecture == "llama"
    assert header.metadata["llama.block_count"] == LAYERS
    assert header.value("tokenizer.ggml.tokens") == []  # long arrays are kept only as their length
    assert header.array_lengths["tokenizer.ggml.tokens"] == 2000
    assert header.metadata["llama.small_array"] == [1, 2, 3]
    assert {t.name: t.shape for t in header.tensors}["blk.0.ffn_up.weight"] == (HIDDEN, INTER)


def test_gguf_estimate_dequantises_into_dtype(tmp_path: Path) -> None:
    shapes = _write_gguf(tmp_path / "m.gguf")
    src = ModelSource("gguf", tmp_path, gguf_file="m.gguf")
    est = estimate(src, dtype="bfloat16", quantization=None, num_ctx=64, parallel=2, overhead_bytes=0)
    assert est.method == "gguf"
    assert est.parameters == _total(shapes)
    assert est.weights_bytes == 2 * _total(shapes)
    assert est.kv_cache_bytes == 2 * LAYERS * KV_HEADS * HEAD_DIM * 64 * 2 * 2
    kinds = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    names = [n for n in shapes if n.rsplit(".", 2)[-2] in kinds]
    linear = sum(math.prod(shapes[n]) for n in names)
    rows = sum(shapes[n][0] for n in names)
    e8 = estimate(src, dtype="float32", quantization="8bit", num_ctx=1, parallel=1, overhead_bytes=0)
    assert e8.weights_bytes == linear + 4 * rows + 4 * (_total(shapes) - linear)


def test_gguf_dims(tmp_path: Path) -> None:
    _write_gguf(tmp_path / "m.gguf")
    dims = model_dims(ModelSource("gguf", tmp_path, gguf_file="m.gguf"))
    assert dims == ModelDims(LAYERS, KV_HEADS, HEAD_DIM, CTX, 2000, HIDDEN, HEADS)  # vocab from the token list


def test_not_a_gguf(tmp_path: Path) -> None:
    (tmp_path / "x.gguf").write_bytes(b"NOPE" + b"\0" * 32)
    with pytest.raises(ValueError):
        read_gguf_info(tmp_path / "x.gguf")


def test_embedded_gguf_parameter_count(embedded_gguf: Path) -> None:
    src = ModelSource("embedded", embedded_gguf.parent, gguf_file=embedded_gguf.name)
    t0 = time.perf_counter()
    est = estimate(src, dtype="float32", quantization=None, num_ctx=2048, parallel=1, overhead_bytes=0)
    assert time.perf_counter() - t0 < 2.0
    assert est.method == "gguf"
    assert abs(est.parameters - 134.5e6) / 134.5e6 < 0.01  # SmolLM2-135M
    dims = model_dims(src)
    assert dims.layers and dims.kv_heads and dims.head_dim and dims.heads and dims.hidden
    assert dims.heads * dims.head_dim == dims.hidden
    assert est.kv_cache_bytes == 2 * dims.layers * dims.kv_heads * dims.head_dim * 2048 * 4
    # Tied embeddings: no separate output tensor, and the embedding stays unquantised under bitsandbytes.
    e4 = estimate(src, dtype="float32", quantization="4bit", num_ctx=1, parallel=1, overhead_bytes=0)
    assert dims.vocab_size
    assert e4.weights_bytes > dims.vocab_size * dims.hidden * 4


@pytest.mark.parametrize(
    ("name", "shape", "linear"),
    [
        ("output.weight", (10, 4), False),  # GGUF's lm_head
        ("bert.encoder.layer.0.attention.output.dense.weight", (4, 4), True),
        ("transformer.wte.weight", (10, 4), False),
        ("model.embed_tokens.weight", (10, 4), False),
        ("lm_head.weight", (10, 4), False),
        ("model.layers.0.mlp.down_proj.weight", (4, 8), True),
        ("model.layers.0.mlp.down_proj.bias", (4,), False),
        ("model.norm.weight", (4,), False),
    ],
)
def test_which_tensors_bitsandbytes_quantises(name: str, shape: tuple[int, ...], linear: bool) -> None:
    count = count_tensors([(name, shape)], "safetensors")
    assert (count.linear == math.prod(shape)) is linear


def test_gguf_per_layer_kv_heads_bound_the_cache(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(8)
    w.add_embedding_length(HIDDEN)
    w.add_head_count(HEADS)
    w.add_array("llama.attention.head_count_kv", [1, 2, 1, 2, 1, 2, 1, 1])  # longer than Ollama shows
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    dims = model_dims(ModelSource("gguf", tmp_path, gguf_file="m.gguf"))
    assert (dims.layers, dims.kv_heads, dims.heads) == (8, 2, HEADS)


@pytest.mark.parametrize("tied", [True, False])
def test_tied_output_bytes_from_config(tmp_path: Path, tied: bool) -> None:
    # fp32 CPU models keep one extra packed copy of a tied output projection; an untied one is packed in place.
    (tmp_path / "config.json").write_text(json.dumps(_config(tied=tied)))
    source = ModelSource("hf_dir", tmp_path)
    assert tied_output_bytes(source, dtype="float32") == (VOCAB * HIDDEN * 4 if tied else 0)


def test_tied_output_bytes_from_gguf(tmp_path: Path) -> None:
    _write_gguf(tmp_path / "m.gguf")  # no output.weight tensor: the output reuses token_embd
    source = ModelSource("gguf", tmp_path / "m.gguf")
    dims = model_dims(source)
    assert dims.vocab_size and dims.hidden
    assert tied_output_bytes(source, dtype="float32") == dims.vocab_size * dims.hidden * 4
