"""Wire models of the model-management API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_name_or_path: str = Field(min_length=1, max_length=300)
    device: Literal["auto", "cuda", "cpu", "mps"] | None = None
    quantization: Literal["8bit", "4bit", "none"] | None = None


class UnloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_name_or_path: str = Field(min_length=1, max_length=300)


class ConfigUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=300)
    options: dict[str, Any]


class WarmRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=300)
    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] = Field(default_factory=list)
