"""Upstream (remote backend) configuration: the named list from HUGLLAMA_UPSTREAMS / HUGLLAMA_UPSTREAMS_FILE and
the original design's one-upstream shorthand (LLM_BACKEND_TYPE + <TYPE>_BASE_URL).

Decisions:
- `kind` is the wire protocol (`ollama` or `openai`); `preset` says which OpenAI-compatible server it is, because
  they differ in the sampling extras they accept (vLLM's top_k/min_p/repetition_penalty, llama.cpp's
  repeat_penalty...). Writing `"kind": "vllm"` is short for `"kind": "openai", "preset": "vllm"`.
- An API key comes from an environment variable or a file (a mounted Secret) and is held as a SecretStr: never
  logged, never in /api/show or the status API.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from app.settings import Settings

Kind = Literal["ollama", "openai"]
Preset = Literal["generic", "vllm", "instructlab", "tgi", "llamacpp"]
_PRESET_KINDS = ("vllm", "instructlab", "tgi", "llamacpp")
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.\-]{0,62}$"


class UpstreamConfig(BaseModel):
    """One remote backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="Prefix of its models' names here: '<name>/<model>'.")
    kind: Kind
    preset: Preset = "generic"
    base_url: str = Field(min_length=1)
    api_key_env: str | None = None
    api_key_file: Path | None = None
    api_key: SecretStr | None = Field(None, exclude=True)  # resolved from the two above; never from JSON
    models: list[str] | None = Field(None, description="Serve only these; None discovers the upstream's list.")
    refresh_seconds: float = Field(30.0, gt=0)
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(300.0, gt=0)
    max_concurrency: int = Field(32, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _preset_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") in _PRESET_KINDS:
            data = {**data, "preset": data["kind"], "kind": "openai"}
        if isinstance(data, dict) and "api_key" in data:
            raise ValueError("api_key may not be written in the config; use api_key_env or api_key_file")
        return data

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not v.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        # OpenAI-style URLs are often written with /v1; the client adds the paths itself.
        return v.removesuffix("/v1")

    @model_validator(mode="after")
    def _preset_matches(self) -> UpstreamConfig:
        if self.kind == "ollama" and self.preset != "generic":
            raise ValueError(f"preset {self.preset} is for OpenAI-compatible upstreams (kind openai)")
        return self


class UpstreamConfigError(ValueError):
    pass


def _with_key(cfg: UpstreamConfig, settings: Settings) -> UpstreamConfig:
    key: str | None = None
    if cfg.api_key_file is not None:
        try:
            key = cfg.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise UpstreamConfigError(f"upstream {cfg.name}: cannot read api_key_file: {e.strerror}") from None
    elif cfg.api_key_env:
        key = settings.env_secret(cfg.api_key_env)
        if key is None:
            raise UpstreamConfigError(f"upstream {cfg.name}: environment variable {cfg.api_key_env} is not set")
    return cfg.model_copy(update={"api_key": SecretStr(key) if key else None})


def _shorthand(settings: Settings) -> dict[str, Any] | None:
    kind = settings.llm_backend_type
    if kind == "local":
        return None
    url = {
        "ollama": settings.ollama_base_url,
        "vllm": settings.vllm_base_url,
        "instructlab": settings.instructlab_base_url,
    }[kind]
    out: dict[str, Any] = {"name": kind, "kind": kind, "base_url": url}
    if settings.upstream_api_key_env:
        out["api_key_env"] = settings.upstream_api_key_env
    if settings.upstream_api_key_file is not None:
        out["api_key_file"] = str(settings.upstream_api_key_file)
    return out


def load_upstreams(settings: Settings) -> list[UpstreamConfig]:
    """Every configured upstream, keys resolved.

    Raises:
        UpstreamConfigError: malformed JSON or fields, a duplicate name, an unreadable key.
    """
    raw: list[Any] = []
    sources: list[tuple[str, str]] = []
    if settings.upstreams.strip():
        sources.append(("HUGLLAMA_UPSTREAMS", settings.upstreams))
    if settings.upstreams_file is not None:
        try:
            sources.append((str(settings.upstreams_file), settings.upstreams_file.read_text(encoding="utf-8")))
        except OSError as e:
            raise UpstreamConfigError(f"cannot read {settings.upstreams_file}: {e.strerror}") from None
    for where, text in sources:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UpstreamConfigError(f"{where}: invalid JSON: {e}") from None
        if isinstance(data, dict):
            data = data.get("upstreams", [data])
        if not isinstance(data, list):
            raise UpstreamConfigError(f"{where}: expected a JSON list of upstreams")
        raw += data
    short = _shorthand(settings)
    if short is not None:
        raw.insert(0, short)
    out: list[UpstreamConfig] = []
    for item in raw:
        try:
            cfg = UpstreamConfig.model_validate(item)
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            name = item.get("name") if isinstance(item, dict) else None
            raise UpstreamConfigError(f"upstream {name or '?'}: {loc}: {first['msg']}") from None
        if any(o.name == cfg.name for o in out):
            raise UpstreamConfigError(f"upstream name {cfg.name!r} is used twice")
        out.append(_with_key(cfg, settings))
    return out
