"""ModelCatalog: every servable name (the base models sources.py finds, and aliases) resolved to a source,
and the facts /api/tags and /api/show report about them. No torch; huggingface_hub only lazily (through hfcache).

Decisions:
- An alias may not take the name of an existing base model (refused with InvalidRequest), so a name always
  means one thing; re-creating an existing alias is allowed. An alias built on another alias is flattened
  onto that alias's base (its settings are inherited, then overridden).
- parameter_size: GGUF general.size_label when present, else the counted parameters as "135M" / "1.2B".
- Deleting an HF cache model deletes the whole repo (or only the commit named with @revision).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.errors import InvalidRequest, ModelNotFound
from app.param_rules import validate_options
from app.registry import hfcache
from app.registry.facts import ModelFacts, gguf_facts, hf_dir_facts
from app.registry.gguf_info import GGUFError
from app.registry.limits import check_alias
from app.registry.names import parse_name, validate_alias_name
from app.registry.show import QUANT_LEVELS, capabilities, show_payload
from app.registry.sources import (
    Base,
    cached_bases,
    embedded_base,
    embedding_bases,
    hf_cache_bases,
    models_dir_bases,
    preferred_gguf,
    snapshot_key,
)
from app.registry.store import AliasStore
from app.registry.types import Alias, ModelEntry, ModelSource, ResolvedModel
from app.settings import Settings

log = logging.getLogger(__name__)


class ModelCatalog:
    """The Catalog protocol over the embedded model, settings.models_dir, the HF cache and an AliasStore."""

    def __init__(
        self,
        settings: Settings,
        store: AliasStore | None = None,
        *,
        cache_dir: Path | None = None,
        template_check: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store if store is not None else AliasStore(settings.registry_path)
        self._cache_dir = cache_dir
        # Renders an alias's template once before it is saved (the engine's sandbox); None skips the check.
        self._template_check = template_check
        self._facts_lock = threading.Lock()
        self._facts: dict[tuple[str, str | None, tuple[int, int, int]], ModelFacts] = {}

    @property
    def cache_dir(self) -> Path:
        return self._cache_dir if self._cache_dir is not None else hfcache.default_cache_dir()

    # --- base models ---

    def _bases(self) -> dict[str, Base]:
        found: dict[str, Base] = {}
        embedded = embedded_base(self.settings.default_model)
        sources = models_dir_bases(self.settings.models_dir) + hf_cache_bases(self.cache_dir)
        for base in ([embedded] if embedded else []) + embedding_bases() + sources:
            found.setdefault(base.name.key, base)  # earlier sources win a name clash
        return found

    def _resolve_base(self, text: str) -> Base:
        parsed = parse_name(text)
        if parsed.revision is None:
            base = self._bases().get(parsed.key)
            if base is not None:
                return base
            if parsed.tag == "latest":  # a multi-file GGUF repo asked without a tag: its preferred file
                candidates = [b for b in hf_cache_bases(self.cache_dir) if b.name.repo.lower() == parsed.repo.lower()]
                if candidates:
                    return preferred_gguf(candidates)
            raise ModelNotFound(text)
        rev = parsed.revision.lower()
        for m in hfcache.cached_models(self.cache_dir):
            if m.repo_id.lower() != parsed.repo.lower():
                continue
            if (len(rev) >= 7 and m.commit.startswith(rev)) or parsed.revision in m.refs:
                bases = cached_bases(m, parsed.revision)
                for b in bases:
                    if b.name.key == parsed.key:
                        return b
                if bases and parsed.tag == "latest":
                    return preferred_gguf(bases)
        raise ModelNotFound(text)

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

    def _base_entry(self, base: Base) -> ModelEntry | None:
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
            capabilities=tuple(capabilities(f, f.template)),
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
        facts = self.facts(base.source)  # cached by _base_entry
        manifest = entry.digest + json.dumps(alias.to_json(), sort_keys=True, default=str)
        return dataclasses.replace(
            entry,
            name=validate_alias_name(alias.name),
            digest=hashlib.sha256(manifest.encode()).hexdigest(),
            modified_at=alias.modified_at or entry.modified_at,
            quantization_level=QUANT_LEVELS.get(alias.quantization or "", entry.quantization_level),
            is_alias=True,
            base=base.name.display,
            capabilities=tuple(capabilities(facts, alias.template or facts.template)),
        )

    # --- the Catalog protocol ---

    def list_models(self) -> list[ModelEntry]:
        listed = [b for b in self._bases().values() if b.listed]
        entries = [e for b in listed if (e := self._base_entry(b)) is not None]
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
        return show_payload(name, resolved, self.facts(resolved.source))

    def get_alias(self, name: str) -> Alias | None:
        return self.store.get(name)

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
        validate_options(alias.options)
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
        check_alias(alias, self.settings)  # sizes first: a huge template is refused before it is rendered
        if alias.template and self._template_check is not None:
            self._template_check(alias.template)  # a template that fails or renders nothing is refused now
        self.store.put(
            dataclasses.replace(alias, name=name, model=base.name.display), max_aliases=self.settings.max_aliases
        )

    def delete(self, name: str) -> None:
        parsed = parse_name(name)
        if parsed.revision is None and self.store.remove(parsed.display):
            return
        base = self._resolve_base(name)
        source = base.source
        if source.kind != "hf_cache" or source.repo_id is None:
            where = "an embedded model" if source.kind == "embedded" else "a local model (HUGLLAMA_MODELS_DIR)"
            raise InvalidRequest(f"cannot delete {base.name.display}: it is {where}", param="model")
        revisions = [source.revision] if parsed.revision and source.revision else None
        converted = {snapshot_key(source)}  # every GGUF file of the deleted revisions may have been converted
        for m in hfcache.cached_models(self.cache_dir):
            if m.repo_id == source.repo_id and (revisions is None or m.commit in revisions):
                converted |= {snapshot_key(b.source) for b in cached_bases(m)}
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
