"""Metrics of remote backends, on the app's registry (names `hugllama_upstream_*`, `hugllama_backend_*`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class UpstreamMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.backend_requests = Counter(
            "hugllama_backend_requests_total",
            "Generation and embedding requests by the backend that served them (local or an upstream's name).",
            ["backend", "kind"],
            registry=r,
        )
        self.requests = Counter(
            "hugllama_upstream_requests_total",
            "Requests sent to an upstream, by outcome (the upstream's HTTP status, or unreachable/timeout/busy/"
            "stream_error/cancelled).",
            ["upstream", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "hugllama_upstream_request_duration_seconds",
            "Upstream request duration, to the end of the answer.",
            ["upstream"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "hugllama_upstream_time_to_first_token_seconds",
            "Time from sending a generation request upstream to its first token.",
            ["upstream"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.up = Gauge(
            "hugllama_upstream_up", "1 when the upstream's last health check succeeded.", ["upstream"], registry=r
        )
        self.in_flight = Gauge("hugllama_upstream_in_flight", "Requests open on an upstream.", ["upstream"], registry=r)
