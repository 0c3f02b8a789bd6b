"""Every Prometheus metric the service exports (prefix `hugllama_`, base units), on one registry per app."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from app import __version__

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
# Model label values beyond this many distinct names collapse into "other", so a client cycling through
# names cannot blow up cardinality.
MAX_MODEL_LABELS = 64


# The `backend` label of request metrics: "local" for the models this process runs, else the upstream's name.
LOCAL_BACKEND = "local"


class Metrics:
    """The metric objects; one instance per app so tests can build many apps."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._models_seen: set[str] = set()
        self.requests = Counter(
            "hugllama_requests_total", "HTTP requests answered.", ["protocol", "route", "status"], registry=r
        )
        self.requests_running = Gauge("hugllama_requests_running", "Requests being generated.", registry=r)
        self.requests_waiting = Gauge("hugllama_requests_waiting", "Requests waiting for a batch slot.", registry=r)
        self.failures = Counter("hugllama_request_failures_total", "Failed requests by reason.", ["reason"], registry=r)
        self.prompt_tokens = Counter(
            "hugllama_prompt_tokens_total", "Prompt tokens processed.", ["model", "backend"], registry=r
        )
        self.generation_tokens = Counter(
            "hugllama_generation_tokens_total", "Tokens generated.", ["model", "backend"], registry=r
        )
        self.ttft = Histogram(
            "hugllama_time_to_first_token_seconds",
            "Time to first token.",
            ["model", "backend"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "hugllama_time_per_output_token_seconds",
            "Time per output token after the first.",
            ["model", "backend"],
            buckets=_TPOT_BUCKETS,
            registry=r,
        )
        self.request_duration = Histogram(
            "hugllama_request_duration_seconds",
            "Generation request duration.",
            ["model", "backend"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "hugllama_queue_time_seconds",
            "Time waiting for a batch slot.",
            ["model", "backend"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.models_loaded = Gauge("hugllama_models_loaded", "Resident models.", registry=r)
        self.model_memory = Gauge(
            "hugllama_model_memory_bytes", "Measured memory of a resident model.", ["model", "device"], registry=r
        )
        self.model_memory_estimate = Gauge(
            "hugllama_model_memory_estimate_bytes", "Estimated memory of a resident model.", ["model"], registry=r
        )
        self.model_load = Histogram(
            "hugllama_model_load_seconds", "Model load time.", ["model"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.evictions = Counter("hugllama_model_evictions_total", "Models evicted to make room.", registry=r)
        self.disconnects = Counter(
            "hugllama_client_disconnects_total", "Clients that went away before the answer ended.", registry=r
        )
        self.stream_errors = Counter(
            "hugllama_stream_errors_total", "Errors reported in-band after a stream started.", registry=r
        )
        self.prefix_cache_hits = Counter(
            "hugllama_prefix_cache_hit_tokens_total",
            "Prompt tokens served from the prefix cache.",
            ["model", "backend"],
            registry=r,
        )
        self.forward_passes = Counter(
            "hugllama_forward_passes_total",
            "Model forward passes: prefill (newcomers, grouped) and decode (one per step for all rows).",
            ["model", "kind"],
            registry=r,
        )
        self.build_info = Info("hugllama_build", "Build information.", registry=r)
        self.build_info.info({"version": __version__, "python": platform.python_version()})

    def model_label(self, name: str) -> str:
        if name in self._models_seen:
            return name
        if len(self._models_seen) >= MAX_MODEL_LABELS:
            return "other"
        self._models_seen.add(name)
        return name
