"""Names for upstream models: the local catalog plus every upstream's models as `<upstream>/<model>`, and aliases
whose base is such a model.

Decision: an upstream model's name here is always `<upstream name>/<its own name>` (Ollama names get their
`:latest`). The prefix is configuration, not discovery: a name that starts with a configured upstream's name means
that upstream whether or not it is up or lists the model at the moment (down: 502; model gone: 404), and never
falls back to a local model or another upstream. Consequently no alias or local model can be named `<upstream>/...`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.errors import InvalidRequest, ModelNotFound
from app.param_rules import validate_options
from app.registry.catalog import ModelCatalog
from app.registry.facts import ModelFacts
from app.registry.names import parse_name, validate_alias_name
from app.registry.show import show_payload
from app.registry.store import AliasStore
from app.registry.types import Alias, ModelEntry, ModelSource, ResolvedModel
from app.remote.upstream import RemoteModel, Upstream
from app.settings import Settings


def upstream_prefix(name: str) -> str:
    head, sep, _ = name.strip().partition("/")
    return head.lower() if sep else ""


class LocalCatalog(ModelCatalog):
    """The local catalog, leaving aliases of upstream models (and their names) to UpstreamCatalog."""

    def __init__(
        self,
        settings: Settings,
        store: AliasStore,
        upstream_names: set[str],
        template_check: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(settings, store, template_check=template_check)
        self.upstream_names = upstream_names

    def _alias_entry(self, alias: Alias) -> ModelEntry | None:
        if upstream_prefix(alias.model) in self.upstream_names:
            return None
        return super()._alias_entry(alias)


class UpstreamCatalog:
    """The Catalog protocol over a LocalCatalog and the configured upstreams (app/registry/catalog_base.py)."""

    def __init__(self, local: LocalCatalog, upstreams: dict[str, Upstream]) -> None:
        self.local = local
        self.upstreams = upstreams

    def __getattr__(self, name: str) -> Any:  # cache maintenance, store, settings...: the local catalog's
        return getattr(self.local, name)

    # --- names ---

    def target(self, name: str) -> tuple[Upstream, str] | None:
        """(upstream, its model name) when `name` is `<upstream>/<model>`; None for local names.

        Raises:
            InvalidRequest: a malformed model part. ModelNotFound: not on the upstream's allow-list.
        """
        up = self.upstreams.get(upstream_prefix(name))
        if up is None:
            return None
        rest = name.strip().partition("/")[2]
        if not rest or len(rest) > 300 or ".." in rest or any(ch.isspace() or ord(ch) < 32 for ch in rest):
            raise InvalidRequest(f"invalid model name {name!r}", param="model")
        if up.cfg.kind == "ollama":
            model = rest if ":" in rest.rsplit("/", 1)[-1] else f"{rest}:latest"
        else:  # /api/tags shows every name with a tag; OpenAI servers' names have none
            model = rest[: -len(":latest")] if rest.endswith(":latest") and rest not in up.models else rest
        if up.cfg.models is not None and model not in up.models:
            raise ModelNotFound(name)
        return up, model

    def split(self, resolved: ResolvedModel) -> tuple[Upstream, str]:
        target = self.target(resolved.base_name)
        assert target is not None
        return target

    @staticmethod
    def display(up: Upstream, model: str) -> str:
        return f"{up.name}/{model}"

    def _alias(self, name: str) -> Alias | None:
        try:
            parsed = parse_name(name)
        except InvalidRequest:
            return None
        return self.local.store.get(parsed.display) if parsed.revision is None else None

    # --- the Catalog protocol ---

    def resolve(self, name: str) -> ResolvedModel:
        target = self.target(name)
        alias: Alias | None = None
        if target is None:
            alias = self._alias(name)
            target = self.target(alias.model) if alias is not None else None
        if target is None:
            return self.local.resolve(name)
        up, model = target
        return ResolvedModel(
            requested=name,
            base_name=self.display(up, model),
            source=ModelSource("upstream", Path(), repo_id=model, revision=up.name),
            alias=alias,
        )

    def _entry(self, up: Upstream, m: RemoteModel) -> ModelEntry:
        name = self.display(up, m.id)
        return ModelEntry(
            name=name,
            size_bytes=m.size_bytes,
            digest=m.digest.removeprefix("sha256:") or hashlib.sha256(name.encode()).hexdigest(),
            modified_at=m.modified_at,
            format=m.format or up.cfg.kind,
            family=m.family,
            parameter_size=m.parameter_size,
            quantization_level=m.quantization_level,
            context_length=m.context_length,
            source=ModelSource("upstream", Path(), repo_id=m.id, revision=up.name),
        )

    def _remote_model(self, up: Upstream, model: str) -> RemoteModel:
        return up.models.get(model) or RemoteModel(id=model)

    def list_models(self) -> list[ModelEntry]:
        entries = self.local.list_models()
        for up in self.upstreams.values():
            entries += [self._entry(up, m) for m in up.models.values()]
        for alias in self.local.store.list():
            try:
                target = self.target(alias.model)
            except (InvalidRequest, ModelNotFound):
                continue
            if target is None:
                continue
            base = self._entry(target[0], self._remote_model(*target))
            manifest = base.digest + json.dumps(alias.to_json(), sort_keys=True, default=str)
            entries.append(
                dataclasses.replace(
                    base,
                    name=validate_alias_name(alias.name),
                    digest=hashlib.sha256(manifest.encode()).hexdigest(),
                    modified_at=alias.modified_at or base.modified_at,
                    is_alias=True,
                    base=base.name,
                )
            )
        return sorted(entries, key=lambda e: e.modified_at, reverse=True)

    def show(self, name: str) -> dict[str, Any]:
        resolved = self.resolve(name)
        if resolved.source.kind != "upstream":
            return self.local.show(name)
        up, model = self.split(resolved)
        m = self._remote_model(up, model)
        facts = ModelFacts(
            size_bytes=m.size_bytes,
            digest=m.digest,
            modified_at=m.modified_at,
            format=m.format or up.cfg.kind,
            family=m.family,
            parameter_count=0,
            parameter_size=m.parameter_size,
            quantization_level=m.quantization_level,
            context_length=m.context_length,
            # Where it lives, never how to authenticate there.
            model_info={"upstream.name": up.name, "upstream.kind": up.cfg.kind, "upstream.model": model},
            location=resolved.base_name,
        )
        return show_payload(name, resolved, facts)

    def get_alias(self, name: str) -> Alias | None:
        return self.local.get_alias(name)

    def _check_alias_name(self, name: str) -> str:
        shown = validate_alias_name(name)
        if upstream_prefix(shown) in self.upstreams:
            raise InvalidRequest(f"{name}: names starting with '{upstream_prefix(shown)}/' belong to that upstream")
        return shown

    def put_alias(self, alias: Alias) -> None:
        """An alias over an upstream model (or a local one, left to the local catalog)."""
        name = self._check_alias_name(alias.name)
        parent = self._alias(alias.model)
        if parent is not None and self.target(parent.model) is not None:
            alias = dataclasses.replace(
                alias,
                model=parent.model,
                system=alias.system if alias.system is not None else parent.system,
                options={**parent.options, **alias.options},
                keep_alive=alias.keep_alive if alias.keep_alive is not None else parent.keep_alive,
                messages=alias.messages or parent.messages,
            )
        target = self.target(alias.model)
        if target is None:
            self.local.put_alias(alias)
            return
        if alias.quantization is not None:
            raise InvalidRequest("quantize applies to local models only", param="quantization")
        if alias.template is not None:
            raise InvalidRequest(
                "template applies to local models only (an upstream applies its own template)", param="template"
            )
        validate_options(alias.options)
        if self.local.store.get(name) is None:
            try:
                self.local.resolve(name)
            except (ModelNotFound, InvalidRequest):
                pass
            else:
                raise InvalidRequest(
                    f"{name} is the name of an existing model; choose another alias name", param="model"
                )
        self.local.store.put(dataclasses.replace(alias, name=name, model=self.display(*target)))

    def delete(self, name: str) -> None:
        if self.target(name) is not None:
            raise InvalidRequest(f"cannot delete {name}: it lives on an upstream", param="model")
        self.local.delete(name)

    def copy(self, source: str, destination: str) -> None:
        alias = self._alias(source)
        if self.target(source) is not None:
            self.put_alias(Alias(name=destination, model=source))
        elif alias is not None and self.target(alias.model) is not None:
            self.put_alias(dataclasses.replace(alias, name=destination, created_at=0.0))
        else:
            self._check_alias_name(destination)
            self.local.copy(source, destination)
