"""The estimates against what transformers and bitsandbytes actually allocate (real model, slow tier)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.hardware.estimate import estimate, model_dims
from app.registry.types import ModelSource

pytestmark = pytest.mark.slow


def _load(snapshot: Path, quantization: str | None) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if quantization is not None:
        pytest.importorskip("bitsandbytes")
        bnb = BitsAndBytesConfig(load_in_8bit=True) if quantization == "8bit" else BitsAndBytesConfig(load_in_4bit=True)
        kwargs.update(quantization_config=bnb, device_map="cpu")
    return AutoModelForCausalLM.from_pretrained(snapshot, **kwargs)


def _side_tensor_bytes(model: Any) -> int:
    """bitsandbytes scales that get_memory_footprint does not count (8-bit SCB, 4-bit absmax)."""
    total = 0
    for p in model.parameters():
        for t in (getattr(p, "SCB", None), getattr(getattr(p, "quant_state", None), "absmax", None)):
            if t is not None:
                total += t.numel() * t.element_size()
    return total


@pytest.mark.parametrize("quantization", [None, "8bit", "4bit"])
def test_estimate_matches_loaded_footprint(embedded_snapshot: Path, quantization: str | None) -> None:
    est = estimate(
        ModelSource("hf_dir", embedded_snapshot),
        dtype="float32",
        quantization=quantization,
        num_ctx=1,
        parallel=1,
        overhead_bytes=0,
    )
    model = _load(embedded_snapshot, quantization)
    footprint = int(model.get_memory_footprint())
    assert abs(est.weights_bytes - footprint) / footprint < 0.25
    real = footprint + _side_tensor_bytes(model)
    assert abs(est.weights_bytes - real) / real < 0.05
    assert (
        est.parameters == sum(p.numel() for p in _load(embedded_snapshot, None).parameters())
        if quantization is None
        else True
    )


def test_gguf_estimate_matches_the_snapshot_of_the_same_model(embedded_snapshot: Path, embedded_gguf: Path) -> None:
    gguf_src = ModelSource("embedded", embedded_gguf.parent, gguf_file=embedded_gguf.name)
    est = estimate(gguf_src, dtype="float32", quantization=None, num_ctx=1, parallel=1, overhead_bytes=0)
    model = _load(embedded_snapshot, None)
    footprint = int(model.get_memory_footprint())
    assert abs(est.weights_bytes - footprint) / footprint < 0.25
    dims, cfg = model_dims(gguf_src), model.config
    assert (dims.layers, dims.kv_heads, dims.hidden) == (
        cfg.num_hidden_layers,
        cfg.num_key_value_heads,
        cfg.hidden_size,
    )
    assert dims == model_dims(ModelSource("hf_dir", embedded_snapshot))
