"""Service configuration: the one place that reads the environment.

Every field reads `HUGLLAMA_<FIELD>`; the Ollama variables an existing deployment already sets
(`OLLAMA_HOST`, `OLLAMA_KEEP_ALIVE`, ...) are accepted as aliases.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | float | int) -> float:
    """Seconds from an Ollama-style duration ("5m", "1h30m", "-1", 300). Negative means forever."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    if text in ("", "0"):
        return 0.0
    parts = re.findall(r"(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if parts and "".join(n + u for n, u in parts) == text.replace(" ", ""):
        return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    m = _DURATION.match(text)
    if m and m.group(2) is None:
        return float(m.group(1))
    raise ValueError(f"invalid duration {value!r}")


class Settings(BaseSettings):
    """All runtime configuration, from the environment (12-factor)."""

    model_config = SettingsConfigDict(
        env_prefix="HUGLLAMA_", env_file=None, extra="ignore", env_ignore_empty=True, populate_by_name=True
    )

    # --- server ---
    host: str = Field(
        "127.0.0.1:11434",
        validation_alias=AliasChoices("HUGLLAMA_HOST", "OLLAMA_HOST"),
        description="Bind address, host[:port] (the container sets 0.0.0.0).",
    )
    port: int | None = Field(None, ge=1, le=65535, description="Port; overrides the port in HUGLLAMA_HOST.")
    api_keys: str = Field("", description="Comma-separated API keys; empty disables auth.")
    auth_probes: bool = Field(False, description="Also require an API key on /livez, /readyz and /metrics.")
    origins: str = Field(
        "",
        validation_alias=AliasChoices("HUGLLAMA_ORIGINS", "OLLAMA_ORIGINS"),
        description="Extra CORS origins (comma list, * allowed), added to Ollama's local defaults.",
    )
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Largest accepted request body.")
    log_format: Literal["plain", "json"] = Field("plain", description="Log line format.")
    log_level: str = Field("INFO", description="Root log level.")
    log_content: bool = Field(False, description="Log prompt and completion text (off: never logged).")
    shutdown_grace_seconds: float = Field(30.0, ge=0, description="On SIGTERM, how long in-flight requests may finish.")
    readiness: Literal["server", "preload", "generate"] = Field(
        "preload",
        description="What /readyz waits for: the server up, the preloaded models loaded, or a one-token generation.",
    )

    # --- access tiers, browser safety and management limits (issue 12) ---
    admin_keys: str = Field(
        "",
        description="Comma-separated admin keys. When set, create/copy/delete/pull/push, model-management changes "
        "and cache warm-up need one; HUGLLAMA_API_KEYS keys then only use models. Admin keys work everywhere.",
    )
    allowed_hosts: str = Field(
        "",
        description="Host header values accepted (comma list; *.example.com for subdomains, * for any). Empty: "
        "loopback names while bound to loopback, any host when bound elsewhere (as in the container).",
    )
    max_concurrent_pulls: int = Field(2, ge=1, description="Pulls running at once; more get 503 with Retry-After.")
    max_aliases: int = Field(1000, ge=1, description="Aliases the registry holds at most.")
    alias_max_system_bytes: int = Field(64 * 1024, ge=1, description="Largest alias system prompt (UTF-8 bytes).")
    # An alias's template is capped by HUGLLAMA_MAX_TEMPLATE_BYTES (request limits below), like a request's.
    alias_max_messages: int = Field(256, ge=0, description="Most messages an alias may carry.")
    alias_max_messages_bytes: int = Field(
        256 * 1024, ge=1, description="Largest total size of an alias's messages (UTF-8 bytes of their JSON)."
    )
    alias_max_options_bytes: int = Field(
        64 * 1024, ge=1, description="Largest alias options/parameters object (UTF-8 bytes of its JSON)."
    )

    # --- models and registry ---
    home: Path = Field(Path("~/.hugllama"), description="Alias registry and converted snapshots.")
    models_dir: Path | None = Field(None, description="Local models directory (HF folders and .gguf files).")
    snapshots: Path | None = Field(
        None, description="Where converted GGUF snapshots go; default $HUGLLAMA_HOME/snapshots."
    )
    default_model: str = Field("smollm2:135m", description="The embedded default model's name.")
    preload: str = Field(
        "smollm2:135m", description="Comma list of models loaded at start and kept resident; empty for none."
    )
    trust_remote_code: bool = Field(False, description="Allow models to run their own code (off by default).")
    pull_timeout_seconds: float = Field(10.0, gt=0, description="Connect/read timeout for Hub requests.")

    # --- remote backends (app/remote/; README "Remote backends") ---
    # The original design's one-upstream shorthand. OLLAMA_BASE_URL is the *upstream* Ollama; OLLAMA_HOST stays
    # this service's own bind address.
    llm_backend_type: Literal["local", "ollama", "vllm", "instructlab"] = Field(
        "local",
        validation_alias=AliasChoices("HUGLLAMA_LLM_BACKEND_TYPE", "LLM_BACKEND_TYPE"),
        description="local, or one upstream named after its type (models served as '<type>/<model>').",
    )
    ollama_base_url: str = Field(
        "http://localhost:11434",
        validation_alias=AliasChoices("HUGLLAMA_OLLAMA_BASE_URL", "OLLAMA_BASE_URL"),
        description="Upstream Ollama server for LLM_BACKEND_TYPE=ollama.",
    )
    vllm_base_url: str = Field(
        "http://localhost:8000",
        validation_alias=AliasChoices("HUGLLAMA_VLLM_BASE_URL", "VLLM_BASE_URL"),
        description="Upstream vLLM server for LLM_BACKEND_TYPE=vllm.",
    )
    instructlab_base_url: str = Field(
        "http://localhost:8000",
        validation_alias=AliasChoices("HUGLLAMA_INSTRUCTLAB_BASE_URL", "INSTRUCTLAB_BASE_URL"),
        description="Upstream `ilab model serve` for LLM_BACKEND_TYPE=instructlab.",
    )
    default_model_name_or_path: str = Field(
        "",
        validation_alias=AliasChoices("HUGLLAMA_DEFAULT_MODEL_NAME_OR_PATH", "DEFAULT_MODEL_NAME_OR_PATH"),
        description="The active model the status/config API describes by default (upstream: a model there).",
    )
    upstream_api_key_env: str = Field(
        "", description="Shorthand upstream: the environment variable holding its API key (never logged)."
    )
    upstream_api_key_file: Path | None = Field(None, description="Shorthand upstream: a file holding its API key.")
    upstreams: str = Field("", description="JSON list of named upstreams (README 'Remote backends').")
    upstreams_file: Path | None = Field(None, description="A mounted JSON file with the same list.")

    # --- engine ---
    device: Literal["auto", "cuda", "cpu", "mps"] = Field("auto", description="Where models run.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bf16 on GPUs that support it, fp16 on other GPUs, fp32 on CPU."
    )
    torch_threads: int = Field(
        0,
        ge=0,
        description="torch intra-op threads; 0 leaves torch's default (the physical cores). 1 is steadier on a "
        "2-core machine that other heavy processes share (bench/README.md, 'Peers').",
    )
    cpu_skinny_matmul: bool = Field(
        True,
        description="CPU matmul kernels: fp32 through MKL's packed sgemm (about 1.3x faster decode at 16 rows, rows "
        "independent of the batch; a second copy of the weights), else W @ x.T for few rows (rounding only).",
    )
    cpu_lean_decode: bool = Field(
        True,
        description="CPU decode steps of Llama-family models (Llama, Mistral, Qwen2) in about a dozen ops per layer "
        "instead of transformers' forward, with exactly-4-bit weights (GGUF Q4_0/Q4_1) multiplied 4-bit with bf16 "
        "activations: 2.4x faster for a single stream of the embedded model; false keeps transformers' fp32 forward.",
    )
    cpu_native_kernels: bool = Field(
        True,
        description="4-bit decode products through our own AVX-512 VNNI kernel (app/engine/kernels/w4a8.c, built "
        "once by the system's C compiler into ~/.cache/hugllama; inputs rounded to 8 bits per 32, as llama.cpp does) "
        "where the CPU has VNNI and a compiler is found; false, or elsewhere, torch's int4 kernel with bf16 inputs.",
    )
    keep_alive: float = Field(
        300.0,
        validation_alias=AliasChoices("HUGLLAMA_KEEP_ALIVE", "OLLAMA_KEEP_ALIVE"),
        description="Default idle time before unloading, seconds or a duration; negative keeps forever.",
    )
    # issue 17: unset = sized by memory (app/hardware/planning.py batch_slots), so c=32 decodes 32 rows.
    num_parallel: int | None = Field(
        None,
        ge=1,
        validation_alias=AliasChoices("HUGLLAMA_NUM_PARALLEL", "OLLAMA_NUM_PARALLEL"),
        description="Sequences decoded together per model (batch slots); unset = as many full-context rows as half "
        "of the memory free after loading holds, at most 64.",
    )
    max_loaded_models: int = Field(
        3,
        ge=1,
        validation_alias=AliasChoices("HUGLLAMA_MAX_LOADED_MODELS", "OLLAMA_MAX_LOADED_MODELS"),
        description="Models resident at once.",
    )
    max_queue: int = Field(
        512,
        ge=1,
        validation_alias=AliasChoices("HUGLLAMA_MAX_QUEUE", "OLLAMA_MAX_QUEUE"),
        description="Requests waiting for a slot before 503.",
    )
    context_length: int = Field(
        4096,
        ge=16,
        validation_alias=AliasChoices("HUGLLAMA_CONTEXT_LENGTH", "OLLAMA_CONTEXT_LENGTH"),
        description="Default num_ctx (capped by the model's own limit).",
    )
    # --- answer length for clients that send no limit (issue 16: Open WebUI sends no num_predict/max_tokens) ---
    default_num_predict: int = Field(
        2048,
        ge=-1,
        description="Tokens an answer may have when neither the request, the alias nor the model sets "
        "num_predict/max_tokens; -1 (or 0) = up to the context, as Ollama. Reaching it ends with `length`.",
    )
    tools_fallback: Literal["prompt", "ignore", "reject"] = Field(
        "prompt",
        description="Tools sent (tool_choice auto) to a model whose chat template cannot render them: `prompt` "
        "lists them in a system prompt, `ignore` leaves them out, `reject` answers 400 (Ollama's behaviour).",
    )
    stop_repeats_chars: int = Field(
        0,
        ge=0,
        description="Opt-in loop stop: end an answer (done_reason stop) once its last N characters are one block of "
        "up to 512 characters repeated verbatim at least 4 times; 0 = off. Answers without such a repeat never change.",
    )
    memory_budget_bytes: int = Field(0, ge=0, description="Memory models may use; 0 = what the device has free.")
    memory_overhead_bytes: int = Field(
        64 * 1024 * 1024, ge=0, description="Added to every estimate (activations, allocator slack)."
    )
    prefix_cache_bytes: int = Field(256 * 1024 * 1024, ge=0, description="Prefix KV cache budget per model.")
    kv_cache_bytes: int = Field(
        0, ge=0, description="KV budget for running sequences per model; 0 = derived from num_parallel x num_ctx."
    )

    # --- request limits: what one request may ask of shared resources (each violation is a 400 naming the field) ---
    max_messages: int = Field(2048, ge=1, description="Messages in one chat request (after the alias's own).")
    max_prompt_chars: int = Field(
        2_000_000, ge=1, description="Characters of one request's prompt text in all (messages, system, suffix)."
    )
    max_message_chars: int = Field(1_000_000, ge=1, description="Characters of one message, prompt or system.")
    max_stop: int = Field(16, ge=0, description="Stop sequences per request (both protocols).")
    max_stop_chars: int = Field(256, ge=1, description="Characters of one stop sequence.")
    max_tools: int = Field(128, ge=0, description="Tools per request.")
    max_tools_bytes: int = Field(256 * 1024, ge=0, description="Size of a request's tool definitions as JSON.")
    max_embed_inputs: int = Field(2048, ge=1, description="Inputs in one embedding request.")
    max_template_bytes: int = Field(64 * 1024, ge=1, description="Size of a request or alias template.")
    request_templates: bool = Field(
        True, description="Accept per-request templates (Ollama `template`, OpenAI `chat_template`)."
    )
    template_timeout_seconds: float = Field(
        2.0, gt=0, description="Wall-clock limit for rendering a request or alias template (sandboxed process)."
    )
    template_memory_bytes: int = Field(
        512 * 1024 * 1024, ge=256 * 1024 * 1024, description="Address-space limit of the template-rendering process."
    )

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _duration(cls, v: object) -> object:
        if isinstance(v, str):
            return parse_duration(v)
        return v

    @field_validator("home", "models_dir", "snapshots", mode="after")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return v.expanduser() if v is not None else None

    @model_validator(mode="after")
    def _check(self) -> Settings:
        self.bind()  # validates host/port early
        if "preload" not in self.model_fields_set and os.environ.get("HUGLLAMA_PRELOAD") == "":
            self.preload = ""  # env_ignore_empty drops the variable, but an empty HUGLLAMA_PRELOAD means none
        return self

    def bind(self) -> tuple[str, int]:
        """(host, port) from HUGLLAMA_HOST / OLLAMA_HOST, with an optional scheme and port."""
        text = self.host.strip()
        text = re.sub(r"^https?://", "", text).rstrip("/")
        host, port = text, 11434
        if text.startswith("["):
            end = text.index("]")
            host, rest = text[1:end], text[end + 1 :]
            if rest.startswith(":"):
                port = int(rest[1:])
        elif text.count(":") == 1:
            host, p = text.split(":")
            port = int(p) if p else 11434
        host = host or "127.0.0.1"
        if self.port is not None:
            port = self.port
        if not 0 < port < 65536:
            raise ValueError(f"invalid port {port}")
        return host, port

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    @property
    def admin_key_list(self) -> list[str]:
        return [k.strip() for k in self.admin_keys.split(",") if k.strip()]

    @property
    def allowed_host_list(self) -> list[str]:
        return [h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip()]

    @property
    def preload_list(self) -> list[str]:
        return [m.strip() for m in self.preload.split(",") if m.strip()]

    @property
    def registry_path(self) -> Path:
        return self.home / "registry.json"

    @property
    def snapshots_dir(self) -> Path:
        return self.snapshots if self.snapshots is not None else self.home / "snapshots"

    def env_secret(self, name: str) -> str | None:
        """An upstream's API key from the variable its config names (read here: the one module reading env)."""
        return os.environ.get(name) or None


@lru_cache
def get_settings() -> Settings:
    return Settings()
