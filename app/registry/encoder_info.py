"""What a sentence-transformers checkpoint says about itself: pooling (`1_Pooling/config.json`), normalisation
(`modules.json`), the longest input (`sentence_bert_config.json`). Pure file reading, no torch: the registry
uses it to list a folder as an embedding model, the engine to pool and normalise like sentence-transformers.

Decision: a folder is an embedding model when its `modules.json` starts with a sentence-transformers
`Transformer` module. Plain encoder folders without it (a bare BertModel) are not recognised: nothing says how
to pool them, and guessing would serve vectors no retrieval index was built with.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# sentence-transformers' order when several modes are set: the pooled vectors are concatenated in it.
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len", "weightedmean", "lasttoken")
SUPPORTED_POOLING = frozenset({"cls", "max", "mean", "mean_sqrt_len", "lasttoken"})
_LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# The modules served, by class name (releases save different paths: `sentence_transformers.models.Pooling`,
# `sentence_transformers.sentence_transformer.modules.pooling.Pooling`, ...), in the order served: the encoder,
# pooling, dense projections, and normalisation last.
_ORDER = {"Transformer": 0, "Pooling": 1, "Dense": 2, "Normalize": 3}
# Dense activations by sentence-transformers' class path (never imported: a checkpoint names no code to run).
ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.GELU": "gelu",
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.activation.SiLU": "silu",
}


@dataclass(frozen=True, slots=True)
class DenseSpec:
    """A sentence-transformers Dense module: a Linear (weights in its folder) and an activation."""

    path: str
    activation: str
    out_features: int | None = None


@dataclass(frozen=True, slots=True)
class EncoderSpec:
    """How to turn an encoder's token states into one vector per input.

    `unsupported` names a module or pooling mode this server cannot reproduce (loading such a model fails with
    that message rather than serving different vectors).
    """

    pooling: tuple[str, ...] = ("mean",)
    normalize: bool = False
    max_seq_length: int | None = None
    do_lower_case: bool = False
    dimension: int | None = None
    prompt: str = ""  # config_sentence_transformers.json's default prompt, put before every input
    dense: tuple[DenseSpec, ...] = ()
    unsupported: str | None = None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def pooling_modes(config: dict[str, Any]) -> tuple[str, ...]:
    """The modes a Pooling config asks for: `pooling_mode` (newer releases) or the `pooling_mode_*_tokens` flags."""
    mode = config.get("pooling_mode")
    if isinstance(mode, str) and mode:
        return (mode.lower().replace("_tokens", "").replace("-", "_"),)
    chosen = {name for key, name in _LEGACY_KEYS.items() if config.get(key) is True}
    return tuple(m for m in POOLING_MODES if m in chosen) or ("mean",)


def module_kind(entry: dict[str, Any]) -> str:
    """A modules.json entry's class name when sentence-transformers defines it ("Pooling"), else its full type."""
    kind = str(entry.get("type", ""))
    return kind.rsplit(".", 1)[-1] if kind.startswith("sentence_transformers.") else kind


def _parse(folder: Path) -> EncoderSpec | None:
    modules = _read_json(folder / "modules.json")
    if not isinstance(modules, list) or not modules or not all(isinstance(m, dict) for m in modules):
        return None
    modules = sorted(modules, key=lambda m: int(m.get("idx", 0)))
    kinds = [module_kind(m) for m in modules]
    if kinds[0] != "Transformer":
        return None
    unsupported = _not_a_sentence_embedder(folder)
    pooling: tuple[str, ...] = ("mean",)
    dimension = None
    include_prompt = True
    dense: list[DenseSpec] = []
    ranks = [_ORDER[k] for k in kinds if k in _ORDER]
    if ranks != sorted(ranks) or ranks.count(1) > 1 or ranks.count(3) > 1:
        unsupported = unsupported or "this order of sentence-transformers modules is not supported"
    for m, kind in zip(modules, kinds, strict=True):
        if kind not in _ORDER:
            unsupported = unsupported or f"the sentence-transformers module {m.get('type')} is not supported"
        if kind == "Dense":
            spec, why = _dense(folder, str(m.get("path", "")))
            dense.append(spec)
            unsupported = unsupported or why
        if kind == "Pooling":
            config = _read_json(folder / str(m.get("path", "")) / "config.json")
            if isinstance(config, dict):
                pooling = pooling_modes(config)
                dim = config.get("word_embedding_dimension") or config.get("embedding_dimension")
                dimension = dim if isinstance(dim, int) else None
                include_prompt = config.get("include_prompt") is not False
    bad = [p for p in pooling if p not in SUPPORTED_POOLING]
    if bad:
        unsupported = unsupported or f"pooling mode {bad[0]!r} is not supported"
    st_config = _read_json(folder / "sentence_bert_config.json")
    st_config = st_config if isinstance(st_config, dict) else {}
    max_len = st_config.get("max_seq_length")
    prompt = _default_prompt(folder)
    if prompt and not include_prompt:
        unsupported = unsupported or "pooling without the prompt's tokens (include_prompt: false) is not supported"
    return EncoderSpec(
        pooling=pooling,
        normalize="Normalize" in kinds,
        max_seq_length=max_len if isinstance(max_len, int) and max_len > 0 else None,
        do_lower_case=st_config.get("do_lower_case") is True,
        dimension=(dense[-1].out_features if dense else (dimension * len(pooling) if dimension else None)),
        prompt=prompt,
        dense=tuple(dense),
        unsupported=unsupported,
    )


def _dense(folder: Path, path: str) -> tuple[DenseSpec, str | None]:
    config = _read_json(folder / path / "config.json")
    if not isinstance(config, dict):
        return DenseSpec(path, "identity"), f"the Dense module in {path} has no readable config.json"
    name = config.get("activation_function", "torch.nn.modules.activation.Tanh")  # sentence-transformers' default
    out = config.get("out_features")
    spec = DenseSpec(path, ACTIVATIONS.get(str(name), ""), out if isinstance(out, int) else None)
    if not spec.activation:
        return spec, f"the Dense activation {name} is not supported"
    if config.get("use_residual") is True:
        return spec, "Dense modules with a residual connection are not supported"
    return spec, None


def _not_a_sentence_embedder(folder: Path) -> str | None:
    """Why a checkpoint saved by sentence-transformers is not one vector per text (a reranker, a sparse model)."""
    config = _read_json(folder / "config_sentence_transformers.json")
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if isinstance(model_type, str) and model_type != "SentenceTransformer":
        return f"a sentence-transformers {model_type} is not an embedding model served here"
    st_config = _read_json(folder / "sentence_bert_config.json")
    task = st_config.get("transformer_task") if isinstance(st_config, dict) else None
    if isinstance(task, str) and task != "feature-extraction":
        return f"a sentence-transformers Transformer for {task!r} is not an embedding model served here"
    return None


def _default_prompt(folder: Path) -> str:
    """The prompt sentence-transformers puts before every input when none is named: `default_prompt_name`'s."""
    config = _read_json(folder / "config_sentence_transformers.json")
    if not isinstance(config, dict):
        return ""
    prompts, name = config.get("prompts"), config.get("default_prompt_name")
    if isinstance(prompts, dict) and isinstance(name, str) and isinstance(prompts.get(name), str):
        return str(prompts[name])
    return ""


_lock = threading.Lock()
_cache: dict[str, tuple[tuple[int, ...], EncoderSpec | None]] = {}
_STAMPED = ("sentence_bert_config.json", "config_sentence_transformers.json")


def _mtime(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def encoder_spec(folder: Path) -> EncoderSpec | None:
    """The folder's EncoderSpec, or None when it is not a sentence-transformers checkpoint (cached per mtimes of
    its config files: listings and every request ask)."""
    try:
        stamp = (os.stat(folder / "modules.json").st_mtime_ns, *(_mtime(folder / name) for name in _STAMPED))
    except OSError:
        return None
    key = str(folder)
    with _lock:
        hit = _cache.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    spec = _parse(folder)
    with _lock:
        if len(_cache) > 512:
            _cache.clear()
        _cache[key] = (stamp, spec)
    return spec


def is_embedding_folder(folder: Path, gguf_file: str | None = None) -> bool:
    """True for a sentence-transformers folder (GGUF files are always served as generative models)."""
    return gguf_file is None and encoder_spec(folder) is not None
