"""Encoder (sentence-transformers) checkpoints as embedding models: loading with `AutoModel`, tokenizing the way
sentence-transformers does, and pooling token states as the checkpoint's `1_Pooling/config.json` says.

The vectors must equal sentence-transformers' own for the same folder, so each step copies its rules: the
default prompt (if the checkpoint names one) goes before each input, inputs are cut to `max_seq_length` by the
tokenizer (the closing special token is kept), lower-cased when `do_lower_case` says so, and the pooled vector is
L2-normalised when `modules.json` has a Normalize module.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoModel, AutoTokenizer

from app.engine.loader import LoadedWeights, quantization_config
from app.errors import InvalidRequest, ModelLoadFailed
from app.registry.encoder_info import DenseSpec, EncoderSpec, encoder_spec
from app.registry.types import ModelSource

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Tokenizers without a real limit report a huge sentinel (int(1e30)) as model_max_length.
_NO_LIMIT = 1_000_000
# Encoder-decoder checkpoints whose encoder alone makes the token states (sentence-t5, gtr-t5), by model_type:
# AutoModel would build the whole model, which wants decoder inputs. sentence-transformers does the same.
_ENCODER_ONLY = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}


_ACTIVATIONS: dict[str, Any] = {
    "tanh": torch.tanh,
    "identity": lambda x: x,
    "relu": torch.relu,
    "gelu": torch.nn.functional.gelu,
    "sigmoid": torch.sigmoid,
    "silu": torch.nn.functional.silu,
}


class DenseHead(torch.nn.Module):
    """sentence-transformers' Dense modules after pooling: Linear layers, each with its activation."""

    def __init__(self, layers: list[tuple[torch.nn.Linear, str]]) -> None:
        super().__init__()
        self.linears = torch.nn.ModuleList(linear for linear, _ in layers)
        self.activations = [activation for _, activation in layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear, activation in zip(self.linears, self.activations, strict=True):
            x = _ACTIVATIONS[activation](linear(x))
        return x


def _dense_layer(folder: Path, dense: DenseSpec) -> torch.nn.Linear:
    """A Dense module's Linear from its folder's model.safetensors (or pytorch_model.bin, tensors only)."""
    where = folder / dense.path
    if (where / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(where / "model.safetensors"))
    elif (where / "pytorch_model.bin").is_file():
        state = torch.load(where / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise ModelLoadFailed(f"the Dense module in {dense.path} has no weights")
    weight, bias = state["linear.weight"], state.get("linear.bias")
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


def spec_of(source: ModelSource) -> EncoderSpec | None:
    """The source's EncoderSpec when it is a sentence-transformers checkpoint (GGUF files never are)."""
    return None if source.gguf_file else encoder_spec(source.path)


def load_encoder(
    source: ModelSource,
    spec: EncoderSpec,
    *,
    device: str,
    dtype: str,
    quantization: str | None,
    trust_remote_code: bool,
) -> LoadedWeights:
    """The base encoder (no task head) and its tokenizer; every failure is ModelLoadFailed naming the folder."""
    if spec.unsupported:
        raise ModelLoadFailed(f"cannot serve {source.path} as an embedding model: {spec.unsupported}")
    started = time.perf_counter()
    torch_dtype = _DTYPES[dtype]
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    qconfig = quantization_config(quantization, torch_dtype)
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
        kwargs["device_map"] = {"": device}
    path: Path = source.path
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        encoder_only = _ENCODER_ONLY.get(str(getattr(config, "model_type", "")))
        model_class = getattr(transformers, encoder_only) if encoder_only else AutoModel
        model = model_class.from_pretrained(path, **kwargs)
        if qconfig is None and device != "cpu":
            model = model.to(device)
        model.eval()
        head = None
        if spec.dense:
            layers = [(_dense_layer(path, d), d.activation) for d in spec.dense]
            head = DenseHead(layers).to(device=model.device, dtype=torch.float32).eval()
    except (OSError, ValueError, RuntimeError, KeyError, ImportError) as e:
        raise ModelLoadFailed(f"could not load embedding model from {path}: {e}") from e
    return LoadedWeights(
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        quantization=quantization,
        load_seconds=time.perf_counter() - started,
        footprint_bytes=int(model.get_memory_footprint())
        + sum(p.numel() * p.element_size() for p in (head.parameters() if head is not None else ())),
        snapshot=path,
        head=head,
    )


def max_length(spec: EncoderSpec, model: Any, tokenizer: Any) -> int:
    """The longest input in tokens: sentence_bert_config's max_seq_length, else the tokenizer's or the
    position embeddings' limit (sentence-transformers' order)."""
    if spec.max_seq_length:
        return spec.max_seq_length
    limits = [int(getattr(model.config, "max_position_embeddings", 0) or 0)]
    tok_max = int(getattr(tokenizer, "model_max_length", 0) or 0)
    if 0 < tok_max < _NO_LIMIT:
        limits.append(tok_max)
    return min((x for x in limits if x > 0), default=512)


def tokenize(tokenizer: Any, spec: EncoderSpec, inputs: tuple[str, ...], limit: int, truncate: bool) -> list[list[int]]:
    """Token ids per input with special tokens; over `limit` tokens is cut by the tokenizer (keeping the
    closing special token, as sentence-transformers does) or a 400 when `truncate` is false."""
    rows: list[list[int]] = []
    for i, text in enumerate(inputs):
        where = "input" if len(inputs) == 1 else f"input[{i}]"
        if not text:
            raise InvalidRequest(f"{where} is empty: there is nothing to embed", param="input")
        text = spec.prompt + text
        text = text.lower() if spec.do_lower_case else text
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        if len(ids) > limit:
            if not truncate:
                raise InvalidRequest("the input length exceeds the context length", param="input")
            ids = list(tokenizer(text, add_special_tokens=True, truncation=True, max_length=limit)["input_ids"])
        rows.append(ids)
    return rows


def pool(states: torch.Tensor, mask: torch.Tensor, modes: tuple[str, ...]) -> torch.Tensor:
    """[B, T, H] token states and a [B, T] right-padded 0/1 mask -> [B, H x len(modes)], in fp32."""
    states = states.to(torch.float32)
    weights = mask.to(torch.float32).unsqueeze(-1)
    counts = weights.sum(1).clamp(min=1e-9)
    out = []
    for mode in modes:
        if mode == "cls":
            out.append(states[:, 0])
        elif mode == "max":
            out.append(states.masked_fill(weights == 0, -1e9).max(1).values)
        elif mode == "mean":
            out.append((states * weights).sum(1) / counts)
        elif mode == "mean_sqrt_len":
            out.append((states * weights).sum(1) / counts.sqrt())
        elif mode == "lasttoken":
            last = mask.sum(1).long().clamp(min=1) - 1
            out.append(states[torch.arange(states.shape[0]), last])
        else:
            raise InvalidRequest(f"pooling mode {mode!r} is not supported")
    return torch.cat(out, dim=-1)


def right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id rows right-padded into one batch: (input ids, attention mask)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def encode(
    model: Any, rows: list[list[int]], device: str, pad_id: int, spec: EncoderSpec, head: Any = None
) -> torch.Tensor:
    """Pooled, projected by the Dense head if any, and (if the checkpoint says so) normalised vectors of token-id
    rows, right-padded into one pass."""
    ids, mask = right_pad(rows, pad_id)
    with torch.inference_mode():
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device))
    pooled = pool(out.last_hidden_state.cpu(), mask, spec.pooling)
    if head is not None:
        with torch.inference_mode():
            pooled = head(pooled.to(next(head.parameters()).device)).cpu()
    if spec.normalize:
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
    return pooled


def pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    return int(pad) if pad is not None else 0
