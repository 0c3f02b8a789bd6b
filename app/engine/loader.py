"""Loads a model's weights and tokenizer: GGUF conversion into a cached snapshot, device, dtype, quantization.

A GGUF file is dequantised and converted by transformers once (tens of seconds, mostly tokenizer
conversion), saved as a safetensors snapshot under `$HUGLLAMA_HOME/snapshots/<key>`, and later loads read
the snapshot (about a second). The snapshot appears atomically (written to a temporary directory, then
renamed), so a crash mid-conversion never leaves a half snapshot behind. Snapshots are keyed on the GGUF's
content, readable by the group, and removed once their GGUF is gone or changed (app/engine/snapshot_store.py).
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PreTrainedModel

from app.engine import decode_step
from app.engine.cpu_linear import packed_copy_bytes, use_cpu_kernels
from app.engine.snapshot_store import prune_unused, share_with_group, write_marker
from app.errors import InvalidRequest, ModelLoadFailed
from app.registry.sources import snapshot_key
from app.registry.types import ModelSource
from app.settings import Settings

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class CpuKernels:
    """Which decode kernels a CPU load may use (the HUGLLAMA_CPU_* settings)."""

    skinny_matmul: bool = True  # cpu_linear: MKL's packed sgemm for fp32
    lean_decode: bool = True  # decode_step: the lean step of Llama-family models
    native: bool = True  # cpu_w4a8: our VNNI kernel for its 4-bit and int8 products

    @classmethod
    def of(cls, settings: Settings) -> CpuKernels:
        return cls(settings.cpu_skinny_matmul, settings.cpu_lean_decode, settings.cpu_native_kernels)


@dataclass
class LoadedWeights:
    model: PreTrainedModel
    tokenizer: Any
    device: str
    dtype: str
    quantization: str | None
    load_seconds: float
    footprint_bytes: int
    snapshot: Path
    # Embedding models: the sentence-transformers layers after pooling (encoders.DenseHead), if any.
    head: Any = None
    # What the scheduler calls for decode steps when not the model (CPU Llama family).
    decode: decode_step.DecodeStep | None = None


def snapshot_dir(snapshots: Path, source: ModelSource) -> Path:
    """Where a GGUF source's converted snapshot lives (the catalog removes it with the model)."""
    return snapshots / snapshot_key(source)


def ensure_snapshot(snapshots: Path, source: ModelSource) -> Path:
    """The directory to `from_pretrained`: the source itself, or the GGUF's converted snapshot."""
    if source.gguf_file is None:
        return source.path
    target = snapshot_dir(snapshots, source)
    if (target / "config.json").exists():
        prune_unused(snapshots, keep=target)
        return target
    snapshots.mkdir(parents=True, exist_ok=True)
    log.info("converting %s into %s (once)", source.gguf_file, target)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=snapshots))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(source.path, gguf_file=source.gguf_file, dtype=torch.float32)
        # The GGUF quantizer marks the model as non-serialisable although its weights are already dequantised.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        del model
        gc.collect()
        write_marker(tmp, source.path / source.gguf_file, embedded=source.kind == "embedded")
        share_with_group(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished the same conversion first: keep theirs.
            if not (target / "config.json").exists():
                raise
    except Exception as e:
        raise ModelLoadFailed(f"could not convert {source.gguf_file}: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s in %.1fs", source.gguf_file, time.perf_counter() - started)
    prune_unused(snapshots, keep=target)
    return target


def quantization_config(quantization: str | None, dtype: torch.dtype) -> BitsAndBytesConfig | None:
    if quantization is None:
        return None
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)  # type: ignore[no-untyped-call]
    if quantization == "4bit":
        return BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    raise InvalidRequest(f"unknown quantization {quantization!r} (use 8bit or 4bit)", param="quantization")


def load(
    source: ModelSource,
    *,
    snapshots: Path,
    device: str,
    dtype: str,
    quantization: str | None,
    trust_remote_code: bool,
    device_map: Any = None,
    kernels: CpuKernels = CpuKernels(),
) -> LoadedWeights:
    """Load weights and tokenizer; every failure becomes ModelLoadFailed naming the model."""
    started = time.perf_counter()
    path = ensure_snapshot(snapshots, source)
    torch_dtype = _DTYPES[dtype]
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    qconfig = quantization_config(quantization, torch_dtype)
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
        kwargs["device_map"] = device_map or ({"": device} if device != "cpu" else {"": "cpu"})
    elif device_map is not None:
        kwargs["device_map"] = device_map
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        if qconfig is None and device_map is None and device != "cpu":
            model = model.to(device)  # type: ignore[arg-type]
        model.eval()  # type: ignore[no-untyped-call]
        cpu_plain = qconfig is None and device == "cpu"
        # Before the fp32 kernels release the weights: the lean step recovers exactly-4-bit ones from them.
        step = decode_step.build(model, kernels.native) if kernels.lean_decode and cpu_plain else None
        if kernels.skinny_matmul and cpu_plain:
            use_cpu_kernels(model, skip=(model.lm_head,) if step is not None and step.owns_head else ())
    except (OSError, ValueError, RuntimeError, KeyError, ImportError) as e:
        raise ModelLoadFailed(f"could not load model from {path}: {e}") from e
    return LoadedWeights(
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        quantization=quantization,
        load_seconds=time.perf_counter() - started,
        # A packed layer's weight is a zero-stride view counted at its full size: the packed copy's size. A tied
        # lm_head keeps its weight for the embeddings, and its packed copy comes on top.
        # The lean step's 4-bit copies come on top (decode reads them, prefill the fp32 weights).
        footprint_bytes=int(model.get_memory_footprint())  # type: ignore[no-untyped-call]
        + packed_copy_bytes(model)
        + (step.extra_bytes if step is not None else 0),
        snapshot=path,
        decode=step,
    )


def eos_ids(model: PreTrainedModel, tokenizer: Any) -> set[int]:
    """Every token id that ends a turn: generation_config's, the tokenizer's, and common end-of-turn markers."""
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    for value in (getattr(gen, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    vocab = tokenizer.get_vocab()
    for marker in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<end_of_turn>", "</s>", "<|end|>"):
        if marker in vocab and marker in tokenizer.all_special_tokens:
            ids.add(vocab[marker])
    return ids


def generation_defaults(model: PreTrainedModel) -> dict[str, Any]:
    """The sampling settings the model's generation_config asks for (lowest precedence above the server's)."""
    gen = getattr(model, "generation_config", None)
    if gen is None:
        return {}
    # Only what the model's generation_config.json states, not transformers' own defaults.
    diff = gen.to_diff_dict() if hasattr(gen, "to_diff_dict") else {}
    out: dict[str, Any] = {}
    for name in ("temperature", "top_p", "top_k", "min_p", "typical_p", "repetition_penalty"):
        value = diff.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = value
    return out
