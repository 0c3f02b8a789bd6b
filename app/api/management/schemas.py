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
    """Either `options` (replaces the model's defaults) or the original design's flat fields (each updates one
    default); `model` defaults to the active model."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, min_length=1, max_length=300)
    options: dict[str, Any] | None = None
    max_new_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=1)
    repetition_penalty: float | None = Field(None, ge=1)


class WarmRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=300)
    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] = Field(default_factory=list)
