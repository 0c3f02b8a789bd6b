"""What the registry knows about models and aliases. Plain data; no torch, no HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

SourceKind = Literal["embedded", "gguf", "hf_dir", "hf_cache", "upstream"]  # upstream: app/remote
Quantization = Literal["8bit", "4bit"]


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where a base model's files are.

    `path` is a directory for `from_pretrained` (for GGUF: the directory holding `gguf_file`).
    """

    kind: SourceKind
    path: Path
    gguf_file: str | None = None
    repo_id: str | None = None
    revision: str | None = None


@dataclass(frozen=True, slots=True)
class Alias:
    """A named preset over a base model. `options` uses SamplingParams field names."""

    name: str
    model: str
    system: str | None = None
    template: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    keep_alive: float | None = None
    quantization: Quantization | None = None
    messages: tuple[dict[str, Any], ...] = ()
    created_at: float = 0.0
    modified_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "system": self.system,
            "template": self.template,
            "options": self.options,
            "keep_alive": self.keep_alive,
            "quantization": self.quantization,
            "messages": list(self.messages),
            "created_at": self.created_at,
            "modified_at": self.modified_at,
        }

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> Alias:
        return cls(
            name=name,
            model=str(data["model"]),
            system=data.get("system"),
            template=data.get("template"),
            options=dict(data.get("options") or {}),
            keep_alive=data.get("keep_alive"),
            quantization=data.get("quantization"),
            messages=tuple(data.get("messages") or ()),
            created_at=float(data.get("created_at") or 0.0),
            modified_at=float(data.get("modified_at") or 0.0),
        )


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One line of /api/tags: a base model or an alias."""

    name: str  # display name with tag, e.g. "smollm2:135m", "org/repo:latest"
    size_bytes: int
    digest: str  # 64 hex, no prefix
    modified_at: float  # epoch seconds
    format: str  # "gguf" | "safetensors"
    family: str
    parameter_size: str  # "135M"
    quantization_level: str  # "Q4_1", "F32", "8bit", ...
    context_length: int | None = None
    is_alias: bool = False
    base: str | None = None  # for aliases: the base model's name
    source: ModelSource | None = None
    capabilities: tuple[str, ...] = ()  # as /api/show reports them ("completion", "tools", "embedding", ...)


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A request's model name resolved to files plus the alias layered on them.

    `load_key` identifies one resident copy: the same base with different quantization loads twice.
    """

    requested: str
    base_name: str
    source: ModelSource
    alias: Alias | None = None
    quantization: Quantization | None = None

    @property
    def load_key(self) -> str:
        return f"{self.base_name}#{self.quantization or 'none'}"

    def keep_alive(self, requested: float | None) -> float | None:
        """The request's keep_alive, else the alias's; None leaves it to the server default."""
        if requested is not None:
            return requested
        return self.alias.keep_alive if self.alias else None
