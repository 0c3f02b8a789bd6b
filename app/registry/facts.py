"""What a model's files say about it (size, digest, family, parameters, quantization, template, model_info),
read from GGUF headers, config.json and safetensors headers without loading weights or importing torch."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.registry.encoder_info import encoder_spec
from app.registry.gguf_info import FIM_SPELLINGS, read_gguf_info
from app.registry.safetensors_info import read_safetensors_header

# llama.cpp's pooling_type numbers, which Ollama reports in model_info for embedding models.
_POOLING_TYPES = {"mean": 1, "cls": 2, "lasttoken": 3}
_SAFETENSORS_LEVEL = {"F32": "F32", "BF16": "BF16", "F16": "F16", "F64": "F64"}

_TOOLS_RE = re.compile(r"\btools\b")


def renders_tools(template: str | None) -> bool:
    """Whether a chat template renders a `tools` list itself (else the engine teaches tools in a fallback prompt);
    /api/show advertises the `tools` capability from this, and the engine's renderer decides with it too."""
    return bool(template) and _TOOLS_RE.search(template or "") is not None


@dataclass(frozen=True, slots=True)
class ModelFacts:
    size_bytes: int
    digest: str
    modified_at: float
    format: str
    family: str
    parameter_count: int
    parameter_size: str
    quantization_level: str
    context_length: int | None
    model_info: dict[str, Any] = field(default_factory=dict)
    template: str | None = None
    license: str | None = None
    fim: bool = False
    location: str = ""
    embedding: bool = False  # a sentence-transformers checkpoint (encoder_info.py): served for embeddings only


def format_parameter_count(n: int) -> str:
    """'135M', '1.2B', '7B', '500K'."""
    if n >= 1_000_000_000:
        return f"{n / 1e9:.1f}".removesuffix(".0") + "B"
    if n >= 1_000_000:
        return f"{n / 1e6:.0f}M"
    if n >= 1_000:
        return f"{n / 1e3:.0f}K"
    return str(n)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The header, or nothing for a file that is not safetensors: facts describe what is there, never fail."""
    try:
        return read_safetensors_header(path)
    except (OSError, ValueError):
        return {}


def _estimate_params(config: dict[str, Any]) -> int:
    """Rough parameter count from a transformer config, for checkpoints without safetensors headers."""
    try:
        h = int(config["hidden_size"])
        layers = int(config["num_hidden_layers"])
        vocab = int(config.get("vocab_size") or 0)
        inter = int(config.get("intermediate_size") or 4 * h)
        heads = int(config.get("num_attention_heads") or 1)
        kv = int(config.get("num_key_value_heads") or heads)
    except (KeyError, TypeError, ValueError):
        return 0
    head_dim = int(config.get("head_dim") or h // max(heads, 1))
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2
    embeddings = vocab * h * (1 if config.get("tie_word_embeddings", True) else 2)
    return embeddings + layers * (attn + 3 * h * inter + 2 * h) + h


def _config_context_length(config: dict[str, Any]) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx"):
        v = config.get(key)
        if isinstance(v, int) and v > 0:
            return v
    return None


def _chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        try:
            return jinja.read_text(encoding="utf-8")
        except OSError:
            pass
    tpl = _read_json(folder / "tokenizer_config.json").get("chat_template")
    if isinstance(tpl, str):
        return tpl
    if isinstance(tpl, list):  # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in tpl if isinstance(t, dict)}
        chosen = named.get("default") or next(iter(named.values()), None)
        return chosen if isinstance(chosen, str) else None
    return None


def _digest(files: list[Path]) -> tuple[str, int, float]:
    """(sha256 of path+size+mtime per file, total size, newest mtime)."""
    lines, total, newest = [], 0, 0
    for p in sorted(files):
        try:
            st = p.stat()
        except OSError:
            continue
        lines.append(f"{p.resolve()}\t{st.st_size}\t{st.st_mtime_ns}")
        total += st.st_size
        newest = max(newest, st.st_mtime_ns)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest(), total, newest / 1e9


def gguf_facts(path: Path) -> ModelFacts:
    info = read_gguf_info(path)
    digest, size, mtime = _digest([path])
    arch = info.architecture
    md = info.metadata
    model_info = {k: v for k, v in md.items() if k not in ("general.name", "tokenizer.chat_template")}
    model_info["general.parameter_count"] = info.parameter_count
    label = md.get("general.size_label")
    license_ = md.get("general.license")
    return ModelFacts(
        size_bytes=size,
        digest=digest,
        modified_at=mtime,
        format="gguf",
        family=arch,
        parameter_count=info.parameter_count,
        parameter_size=label if isinstance(label, str) and label else format_parameter_count(info.parameter_count),
        quantization_level=info.file_type_name,
        context_length=info.context_length,
        model_info=model_info,
        template=info.chat_template,
        license=license_ if isinstance(license_, str) else None,
        fim=info.has_fim,
        location=str(path),
    )


def hf_dir_facts(folder: Path) -> ModelFacts:
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    digest, size, mtime = _digest(files)
    config = _read_json(folder / "config.json")
    arch = str(config.get("model_type") or "")
    params = 0
    by_dtype: dict[str, int] = {}
    for st_file in sorted(folder.glob("*.safetensors")):
        for name, entry in _safetensors_header(st_file).items():
            if name == "__metadata__" or not isinstance(entry, dict):
                continue
            n = 1
            for d in entry.get("shape") or []:
                n *= int(d)
            params += n
            dtype = str(entry.get("dtype", ""))
            by_dtype[dtype] = by_dtype.get(dtype, 0) + n
    if not params:
        params = _estimate_params(config)
    if by_dtype:
        dominant = max(by_dtype, key=lambda k: by_dtype[k])
        level = _SAFETENSORS_LEVEL.get(dominant, dominant)
    else:
        torch_dtype = str(config.get("torch_dtype") or config.get("dtype") or "")
        level = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}.get(torch_dtype, torch_dtype.upper())
    ctx = _config_context_length(config)
    model_info: dict[str, Any] = {"general.architecture": arch, "general.parameter_count": params}
    for key, gguf_key in (
        ("hidden_size", "embedding_length"),
        ("num_hidden_layers", "block_count"),
        ("intermediate_size", "feed_forward_length"),
        ("num_attention_heads", "attention.head_count"),
        ("num_key_value_heads", "attention.head_count_kv"),
        ("vocab_size", "vocab_size"),
        ("rope_theta", "rope.freq_base"),
        ("rms_norm_eps", "attention.layer_norm_rms_epsilon"),
    ):
        if isinstance(config.get(key), int | float):
            model_info[f"{arch}.{gguf_key}"] = config[key]
    if ctx is not None:
        model_info[f"{arch}.context_length"] = ctx
    fim = False
    tok = folder / "tokenizer.json"
    if tok.is_file():
        try:
            data = tok.read_bytes()
            fim = any(all(json.dumps(t, ensure_ascii=False).encode() in data for t in s) for s in FIM_SPELLINGS)
        except OSError:
            pass
    readme_license = None
    spec = encoder_spec(folder)
    if spec is not None:
        ctx = min(spec.max_seq_length, ctx) if spec.max_seq_length and ctx else (spec.max_seq_length or ctx)
        if ctx is not None:
            model_info[f"{arch}.context_length"] = ctx
        if spec.dimension:
            model_info[f"{arch}.embedding_length"] = spec.dimension
        if len(spec.pooling) == 1 and spec.pooling[0] in _POOLING_TYPES:
            model_info[f"{arch}.pooling_type"] = _POOLING_TYPES[spec.pooling[0]]
    return ModelFacts(
        size_bytes=size,
        digest=digest,
        modified_at=mtime,
        format="safetensors",
        family=arch,
        parameter_count=params,
        parameter_size=format_parameter_count(params) if params else "",
        quantization_level=level,
        context_length=ctx,
        model_info=model_info,
        template=_chat_template(folder),
        license=readme_license,
        fim=fim,
        location=str(folder),
        embedding=spec is not None,
    )
