"""One pure-ASGI middleware for what every request goes through: request id, access log, request counting,
CORS (Ollama's OLLAMA_ORIGINS semantics), API keys, the body size limit and refusing work while draining."""

from __future__ import annotations

import fnmatch
import hmac
import json
import logging
import re
import time
import uuid

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_body
from app.api.health import Lifecycle
from app.errors import InvalidRequest, ServiceError, ShuttingDown, Unauthorized
from app.log import request_id
from app.metrics import Metrics
from app.settings import Settings

log = logging.getLogger("hugllama.access")

PROBE_PATHS = ("/livez", "/readyz", "/health", "/metrics")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Ollama's default allowed origins (envconfig.AllowedOrigins), before OLLAMA_ORIGINS is appended.
_DEFAULT_ORIGINS = [
    f"{scheme}://{host}{port}"
    for host in ("localhost", "127.0.0.1", "0.0.0.0")
    for scheme in ("http", "https")
    for port in ("", ":*")
] + ["app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*"]
_ALLOW_HEADERS = (
    "Authorization, Content-Type, User-Agent, Accept, X-Requested-With, OpenAI-Beta, X-Request-Id, "
    "x-stainless-arch, x-stainless-async, x-stainless-custom-poll-interval, x-stainless-helper-method, "
    "x-stainless-lang, x-stainless-os, x-stainless-package-version, x-stainless-poll-helper, "
    "x-stainless-retry-count, x-stainless-runtime, x-stainless-runtime-version, x-stainless-timeout"
)


def _route_label(path: str) -> str:
    # Bounded label values: the first segments of known prefixes, never free text.
    parts = path.split("/")
    if path.startswith("/api/v1/"):
        return "/".join(parts[:5])
    if path.startswith(("/api/", "/v1/")):
        return "/".join(parts[:4]) if path.startswith("/v1/chat") else "/".join(parts[:3])
    return path if path == "/" else "other"


def _protocol(path: str) -> str:
    if path.startswith("/v1/"):
        return "openai"
    if path.startswith("/api/v1/"):
        return "management"
    return "ollama"


class ServiceMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics, lifecycle: Lifecycle) -> None:
        self.app = app
        self.metrics = metrics
        self.lifecycle = lifecycle
        self.keys = [k.encode() for k in settings.api_key_list]
        self.auth_probes = settings.auth_probes
        self.max_body = settings.max_body_bytes
        extra = [o.strip() for o in settings.origins.split(",") if o.strip()]
        self.origins = _DEFAULT_ORIGINS + extra

    def origin_allowed(self, origin: str) -> bool:
        return any(o == "*" or fnmatch.fnmatchcase(origin, o) for o in self.origins)

    def authorized(self, headers: dict[str, str]) -> bool:
        if not self.keys:
            return True
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        given = token.strip().encode()
        # Compare against every key (no early exit) so timing does not tell which key nearly matched.
        ok = False
        for key in self.keys:
            ok |= hmac.compare_digest(given, key)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        rid = headers.get("x-request-id", "")
        if not _REQUEST_ID.match(rid):
            rid = uuid.uuid4().hex
        token = request_id.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        is_probe = path in PROBE_PATHS or path.startswith("/metrics")
        origin = headers.get("origin")
        cors_headers: list[tuple[bytes, bytes]] = []
        if origin is not None:
            if not self.origin_allowed(origin):
                await self._plain(send, 403, b"", rid)
                request_id.reset(token)
                return
            cors_headers = [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"vary", b"Origin"),
                (b"access-control-allow-credentials", b"true"),
                (b"access-control-expose-headers", b"X-Request-Id, Retry-After"),
            ]
            if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
                cors_headers += [
                    (b"access-control-allow-methods", b"GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"),
                    (b"access-control-allow-headers", _ALLOW_HEADERS.encode()),
                    (b"access-control-max-age", b"86400"),
                ]
                await self._plain(send, 204, b"", rid, cors_headers)
                request_id.reset(token)
                return

        start = time.perf_counter()
        status_holder = {"status": 500}

        # Whether the response body finished and whether the client went away, for the access log.
        flow = {"completed": False, "disconnected": False}

        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                flow["disconnected"] = True
            return message

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                flow["completed"] = True
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                hdrs = list(message.get("headers", []))
                hdrs.append((b"x-request-id", rid.encode()))
                hdrs.extend(cors_headers)
                message = {**message, "headers": hdrs}
            await send(message)

        try:
            error: ServiceError | None = None
            needs_auth = (not is_probe or self.auth_probes) and path != "/"
            if needs_auth and not self.authorized(headers):
                error = Unauthorized("missing or invalid API key (send Authorization: Bearer <key>)")
            if error is None and not is_probe and self.lifecycle.draining:
                error = ShuttingDown("server is shutting down")
            length = headers.get("content-length")
            if error is None and length is not None and length.isdigit() and int(length) > self.max_body:
                error = InvalidRequest(f"request body larger than {self.max_body} bytes")
                error.status_code = 413
            if error is not None:
                await self._error(send_wrapper, path, error)
            elif is_probe:
                await self.app(scope, receive, send_wrapper)
            else:
                self.lifecycle.enter()
                try:
                    await self.app(scope, self._limited(receive_wrapper), send_wrapper)
                finally:
                    self.lifecycle.leave()
        finally:
            status = sent = status_holder["status"]
            # Started, never finished, and the client went away: a stopped stream (Starlette ends the body without
            # an error). Logged and counted as 499, as a non-streamed request the client abandons is.
            cut = sent < 400 and flow["disconnected"] and not flow["completed"]
            if cut:
                status = 499
            if not is_probe:
                self.metrics.requests.labels(
                    protocol=_protocol(path), route=_route_label(path), status=str(status)
                ).inc()
                if status in (503, 429):
                    self.metrics.failures.labels(reason="overloaded" if status == 503 else "rate_limited").inc()
                log.info(
                    "%s %s %d %.1fms%s",
                    scope["method"],
                    path,
                    status,
                    (time.perf_counter() - start) * 1000,
                    f" (client disconnected mid-stream; {sent} had been sent)" if cut else "",
                    extra={
                        "method": scope["method"],
                        "path": path,
                        "status": status,
                        "duration_ms": round((time.perf_counter() - start) * 1000, 1),
                        **({"client_disconnected": True, "sent_status": sent} if cut else {}),
                    },
                )
            request_id.reset(token)

    def _limited(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.max_body

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    err = InvalidRequest(f"request body larger than {limit} bytes")
                    err.status_code = 413
                    raise err
            return message

        return wrapped

    async def _error(self, send: Send, path: str, exc: ServiceError) -> None:
        body = json.dumps(error_body(path, exc)).encode()
        headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
        if exc.retry_after is not None:
            headers.append((b"retry-after", str(exc.retry_after).encode()))
        if exc.status_code == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _plain(
        self, send: Send, status: int, body: bytes, rid: str, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        headers = [(b"x-request-id", rid.encode()), *(extra or [])]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def install(app: FastAPI, settings: Settings, metrics: Metrics, lifecycle: Lifecycle) -> None:
    app.add_middleware(ServiceMiddleware, settings=settings, metrics=metrics, lifecycle=lifecycle)
