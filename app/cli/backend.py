"""The registry commands' two modes behind one interface: a running server's Ollama API (`RemoteRegistry`)
or the registry files in this process (`LocalRegistry`, over app.registry.catalog.ModelCatalog)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from app.cli.client import OllamaClient
from app.cli.errors import CliError
from app.cli.options import OLLAMA_TO_SAMPLING, keep_alive_request, keep_alive_seconds
from app.cli.render import to_epoch
from app.registry.types import Alias, ModelEntry, ModelSource
from app.settings import Settings

log = logging.getLogger(__name__)

_SAMPLING_TO_OLLAMA = {v: k for k, v in OLLAMA_TO_SAMPLING.items()}
_QUANTIZE = {"8bit": "q8_0", "4bit": "q4_0"}
_FITS_LABEL: dict[str | None, str] = {None: "yes", "8bit": "with 8-bit", "4bit": "with 4-bit"}


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One line of `hugllama list`. `fits` is yes / no / with 8-bit / with 4-bit / ? (unknown)."""

    name: str
    size: int | None
    estimate: int | None
    fits: str
    modified: float | None
    base: str | None = None


@dataclass(frozen=True, slots=True)
class AliasSpec:
    """What `hugllama create` asks for. `options` uses SamplingParams field names."""

    name: str
    model: str
    system: str | None = None
    template: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    keep_alive: str | None = None  # as typed: "5m", "300", "-1"
    quantization: Literal["8bit", "4bit"] | None = None
    format: str | None = None


class Registry(Protocol):
    def list_models(self) -> list[ModelRow]: ...
    def show(self, name: str) -> dict[str, Any]: ...
    def create(self, spec: AliasSpec) -> None: ...
    def delete(self, name: str) -> None: ...
    def copy(self, source: str, destination: str) -> None: ...
    def pull(self, name: str) -> Iterator[dict[str, Any]]: ...


def _fits_label(value: Any) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if isinstance(value, str) and value:
        text = value.strip().lower()
        return {"8bit": "with 8-bit", "4bit": "with 4-bit", "true": "yes", "false": "no"}.get(text, text)
    return "?"


def _first(entry: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if entry.get(key) is not None:
            return entry[key]
    return None


class RemoteRegistry:
    """The registry commands over a running server's Ollama (and management) API."""

    def __init__(self, client: OllamaClient) -> None:
        self.client = client

    def _available_rows(self, data: Any, modified: dict[str, float | None]) -> list[ModelRow] | None:
        """Rows from /api/v1/models/available (estimates made by the server, on its hardware)."""
        entries = data.get("models", data.get("data")) if isinstance(data, dict) else data
        if not isinstance(entries, list):
            return None
        rows = []
        for e in entries:
            if not isinstance(e, dict):
                continue
            nested = e.get("fit")
            fit: dict[str, Any] = nested if isinstance(nested, dict) else e
            suggestion = _first(fit, "fits_with", "suggestion")
            fits_raw = fit.get("fits")
            label = _fits_label(fits_raw)
            if fits_raw is False and suggestion in ("8bit", "4bit"):
                label = _FITS_LABEL[suggestion]
            name = str(_first(e, "name", "model", "id") or "?")
            rows.append(
                ModelRow(
                    name=name,
                    size=_first(e, "size", "size_bytes"),
                    estimate=_first(fit, "estimated_memory", "estimated_bytes", "need_bytes"),
                    fits=label,
                    modified=to_epoch(e["modified_at"]) if e.get("modified_at") else modified.get(name),
                    base=e.get("base") or None,
                )
            )
        return rows

    def list_models(self) -> list[ModelRow]:
        tags = self.client.request("GET", "/api/tags") or {}
        models = [m for m in tags.get("models") or [] if isinstance(m, dict)]
        modified = {str(m.get("name") or m.get("model")): to_epoch(m.get("modified_at")) for m in models}
        available = self.client.get_optional("/api/v1/models/available")
        rows = self._available_rows(available, modified) if available is not None else None
        if rows is not None:
            return rows
        return [
            ModelRow(
                name=str(m.get("name") or m.get("model") or "?"),
                size=m.get("size"),
                estimate=None,
                fits="?",
                modified=to_epoch(m.get("modified_at")),
                base=(m.get("details") or {}).get("parent_model") or None,
            )
            for m in models
        ]

    def show(self, name: str) -> dict[str, Any]:
        data = self.client.request("POST", "/api/show", {"model": name})
        return data if isinstance(data, dict) else {}

    def create(self, spec: AliasSpec) -> None:
        parameters = {_SAMPLING_TO_OLLAMA.get(k, k): v for k, v in spec.options.items()}
        if spec.format is not None:
            parameters["format"] = spec.format
        body: dict[str, Any] = {"model": spec.name, "from": spec.model, "stream": True}
        if spec.system is not None:
            body["system"] = spec.system
        if spec.template is not None:
            body["template"] = spec.template
        if parameters:
            body["parameters"] = parameters
        if spec.quantization is not None:
            body["quantize"] = _QUANTIZE[spec.quantization]
        if spec.keep_alive is not None:
            body["keep_alive"] = keep_alive_request(spec.keep_alive)
        for _ in self.client.stream("POST", "/api/create", body):
            pass  # status lines; an {"error"} line raises
        if spec.format is not None and not self._has_format(spec.name):
            # A server of an older version drops the alias's format: say so rather than leave a silent default.
            raise CliError(
                f"created '{spec.name}', but the server did not store --json-mode (an older version?); "
                "pass --json-mode to run/chat instead"
            )

    def _has_format(self, name: str) -> bool:
        params = self.show(name).get("parameters")
        text = params if isinstance(params, str) else "\n".join(map(str, params or ()))
        return any(line.split()[:1] == ["format"] for line in text.splitlines())

    def delete(self, name: str) -> None:
        self.client.request("DELETE", "/api/delete", {"model": name})

    def copy(self, source: str, destination: str) -> None:
        self.client.request("POST", "/api/copy", {"source": source, "destination": destination})

    def pull(self, name: str) -> Iterator[dict[str, Any]]:
        return self.client.stream("POST", "/api/pull", {"model": name, "stream": True})


@dataclass(frozen=True, slots=True)
class _Pool:
    device: str
    dtype: str
    free_bytes: int


class LocalRegistry:
    """The registry commands in this process: ModelCatalog over $HUGLLAMA_HOME/registry.json and the HF cache."""

    def __init__(self, settings: Settings) -> None:
        try:
            from app.registry.catalog import ModelCatalog
            from app.registry.store import AliasStore
        except ImportError as exc:
            raise CliError(f"the model registry is not available in this build: {exc}") from None
        from app.engine.template_sandbox import AliasTemplateCheck, TemplateSandbox

        sandbox = TemplateSandbox.from_settings(settings)
        self.settings = settings
        self.catalog = ModelCatalog(
            settings,
            AliasStore(settings.registry_path),
            template_check=AliasTemplateCheck(sandbox, settings.max_template_bytes),  # as the server checks them
        )

    # --- list, with the memory columns ---

    def _pool(self) -> _Pool | None:
        """Where models would load and how much is free, without importing torch (NVML decides cuda vs cpu)."""
        try:
            from app.hardware.detect import gpu_memory, memory_for

            device = self.settings.device
            if device == "auto":
                device = "cuda" if gpu_memory() else "cpu"
            dtype = self.settings.dtype
            if dtype == "auto":
                dtype = "float32" if device == "cpu" else "float16"
            free = self.settings.memory_budget_bytes or memory_for(device).free_bytes
        except Exception as exc:  # memory columns are a nicety: never fail `list` over them
            log.debug("memory detection failed: %s", exc)
            return None
        return _Pool(device, dtype, free)

    def _fit(self, source: ModelSource | None, quantization: str | None, pool: _Pool | None) -> tuple[int | None, str]:
        if source is None or pool is None:
            return None, "?"
        try:
            from app.hardware.estimate import estimate
            from app.hardware.planning import fits

            def need(q: str | None) -> int:
                return estimate(
                    source,
                    dtype=pool.dtype,
                    quantization=q,
                    num_ctx=self.settings.context_length,
                    parallel=1,
                    overhead_bytes=self.settings.memory_overhead_bytes,
                ).total_bytes

            wanted = need(quantization)
            if fits(wanted, pool.free_bytes):
                return wanted, "yes"
            # Estimating reads file headers: try the smaller loads only when the requested one does not fit.
            order: list[str | None] = [None, "8bit", "4bit"]
            start = order.index(quantization) + 1 if quantization in order else 0
            for q in order[start:]:
                if fits(need(q), pool.free_bytes):
                    return wanted, _FITS_LABEL[q]
        except Exception as exc:
            log.debug("estimate failed for %s: %s", source.path, exc)
            return None, "?"
        return wanted, "no"

    def _row(self, entry: ModelEntry, pool: _Pool | None) -> ModelRow:
        quantization: str | None = None
        if entry.is_alias:
            alias = self.catalog.get_alias(entry.name)
            quantization = alias.quantization if alias else None
        need, label = self._fit(entry.source, quantization, pool)
        return ModelRow(entry.name, entry.size_bytes, need, label, entry.modified_at, entry.base)

    def list_models(self) -> list[ModelRow]:
        entries = self.catalog.list_models()
        pool = self._pool() if entries else None
        return [self._row(e, pool) for e in entries]

    # --- the rest ---

    def show(self, name: str) -> dict[str, Any]:
        return self.catalog.show(name)

    def create(self, spec: AliasSpec) -> None:
        options = dict(spec.options)
        if spec.format is not None:
            # Aliases keep JSON mode or a schema with their options; the engine applies it per request.
            options["format"] = spec.format
        alias = Alias(
            name=spec.name,
            model=spec.model,
            system=spec.system,
            template=spec.template,
            options=options,
            keep_alive=keep_alive_seconds(spec.keep_alive),
            quantization=spec.quantization,
        )
        self.catalog.put_alias(alias)

    def delete(self, name: str) -> None:
        self.catalog.delete(name)

    def copy(self, source: str, destination: str) -> None:
        self.catalog.copy(source, destination)

    def pull(self, name: str) -> Iterator[dict[str, Any]]:
        try:
            from app.registry.pull import pull
        except ImportError as exc:
            raise CliError(f"pulling is not available in this build: {exc}") from None
        return pull(name, settings=self.settings)

    def cache_report(self) -> list[dict[str, Any]]:
        return self.catalog.cache_report()

    def clear_cache(self, repo_id: str | None = None) -> int:
        freed: int = self.catalog.clear_cache(repo_id)
        return freed
