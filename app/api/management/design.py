"""The original design's shapes of /api/v1/models/{available,status,config,load}, computed from the richer
ModelAdmin answers (which stay in the payloads as a superset), for the local backend and for an upstream one
(LLM_BACKEND_TYPE). Pure functions: no HTTP types."""

from __future__ import annotations

from typing import Any

from app.engine.base import ModelAdmin
from app.params import DEFAULT_SAMPLING
from app.settings import Settings

# The design's flat config fields -> SamplingParams option names.
FLAT_FIELDS = {
    "max_new_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "repetition_penalty": "repetition_penalty",
}
_STATES = {"loading": "Loading", "loaded": "Ready", "failed": "Failed", "unloading": "Unloading"}
_LOCAL_SOURCES = ("embedded", "gguf", "hf_dir")


def available_payload(models: list[dict[str, Any]]) -> dict[str, Any]:
    """`local_model_paths` and `cached_hub_models` hold the names to pass to /load (server paths are never shown)."""
    bases = [m for m in models if not m.get("alias")]
    out: dict[str, Any] = {
        "local_model_paths": [m["name"] for m in bases if m.get("source") in _LOCAL_SOURCES],
        "cached_hub_models": [m["name"] for m in bases if m.get("source") == "hf_cache"],
        "models": models,
    }
    upstream = [m["name"] for m in bases if m.get("source") == "upstream"]
    if upstream:
        out["upstream_models"] = upstream
    return out


def _upstream(admin: ModelAdmin | None, name: str) -> dict[str, Any] | None:
    if admin is None:
        return None
    return next((u for u in admin.upstream_statuses() if u["name"] == name), None)


def load_name(name: str, settings: Settings, admin: ModelAdmin) -> str:
    """With the one-upstream shorthand, /load names a model on that backend (`X` means `<type>/X`)."""
    kind = settings.llm_backend_type
    if kind == "local" or _upstream(admin, kind) is None:
        return name
    upstreams = {u["name"] for u in admin.upstream_statuses()}
    return name if name.split("/", 1)[0].lower() in upstreams else f"{kind}/{name}"


def active_model(admin: ModelAdmin | None, settings: Settings) -> str | None:
    """The model the design's single-model answers describe: the backend's selected (last loaded) model, else
    DEFAULT_MODEL_NAME_OR_PATH, else (locally) the default model."""
    kind = settings.llm_backend_type
    default = settings.default_model_name_or_path or None
    if kind != "local":
        up = _upstream(admin, kind)
        if up is not None and up.get("active_model"):
            return str(up["active_model"])
        return f"{kind}/{default}" if default else None
    local = [s for s in (admin.statuses() if admin is not None else []) if not s.get("backend")]
    if local:
        latest = max(local, key=lambda s: s.get("started_at") or s.get("finished_at") or 0)
        return str(latest["model"])
    return default or settings.default_model


def flat_config(config: dict[str, Any], *, upstream: bool, settings: Settings) -> dict[str, Any]:
    """The design's flat fields from a model's options; unset ones show the default that applies (None on an
    upstream: its own default)."""
    options = config.get("options") or {}
    out: dict[str, Any] = {}
    for flat, name in FLAT_FIELDS.items():
        value = options.get(name)
        if value is None and not upstream:
            value = settings.default_num_predict if name == "max_tokens" else getattr(DEFAULT_SAMPLING, name)
        out[flat] = value
    return out


def config_payload(config: dict[str, Any], settings: Settings) -> dict[str, Any]:
    upstream = "/" in str(config.get("model", "")) and settings.llm_backend_type != "local"
    return {**flat_config(config, upstream=upstream, settings=settings), **config}


def status_payload(admin: ModelAdmin, settings: Settings) -> dict[str, Any]:
    statuses = admin.statuses()
    kind = settings.llm_backend_type
    active = active_model(admin, settings)
    out: dict[str, Any] = {"backend_type": kind, "active_model": active, "status": "Inactive", "last_error": None}
    generation_config: dict[str, Any] | None = None
    if kind == "local":
        entry = next((s for s in statuses if s.get("model") == active and not s.get("backend")), None)
        if entry is not None:
            out["status"] = _STATES.get(str(entry.get("state")), "Inactive")
            out["last_error"] = entry.get("error")
        details: dict[str, Any] = {
            "active_model": active,
            "load_config": {k: entry.get(k) for k in ("device", "dtype", "quantization")} if entry else None,
            "max_model_length": entry.get("context_length") if entry else None,
        }
    else:
        up = _upstream(admin, kind) or {}
        if active is not None:
            health = up.get("up")
            out["status"] = "Ready" if health is True else "Failed" if health is False else "Loading"
        out["last_error"] = up.get("last_error")
        details = {
            "backend_url": up.get("backend_url"),
            "upstream": kind,
            "up": up.get("up"),
            "models": up.get("models"),
        }
    if active is not None:
        try:
            generation_config = flat_config(admin.get_config(active), upstream=kind != "local", settings=settings)
        except Exception:  # a model that no longer resolves has no config to show
            generation_config = None
    out["generation_config"] = generation_config
    out["backend_details"] = details
    out["models"] = statuses
    upstreams = admin.upstream_statuses()
    if upstreams:  # only with upstreams configured (the local payload has no such key)
        out["upstreams"] = upstreams
    return out
