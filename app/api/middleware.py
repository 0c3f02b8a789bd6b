"""One pure-ASGI middleware for what every request goes through: request id, access log, request counting,
the Host check, CORS (Ollama's OLLAMA_ORIGINS semantics), API keys and their tiers, the body size limit, refusing
work while draining, and the one log line (with the request id) for an unexpected error."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.access import HostPolicy, KeyTiers, OriginPolicy, Tier
from app.api.errors import error_body
from app.errors import Forbidden, InvalidRequest, ServiceError, ShuttingDown, Unauthorized
from app.lifecycle import Lifecycle
from app.log import request_id
from app.metrics import Metrics
from app.settings import Settings

log = logging.getLogger("hugllama.access")
log_errors = logging.getLogger("hugllama.errors")
_JSON = [(b"content-type", b"application/json")]

# Exact paths: an exemption never covers a path that merely starts like one.
PROBE_PATHS = frozenset({"/livez", "/readyz", "/health", "/metrics"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
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
        self.tiers = KeyTiers(settings)
        self.auth_probes = settings.auth_probes
        self.max_body = settings.max_body_bytes
        self.hosts = HostPolicy(settings)
        self.origins = OriginPolicy(settings)

    def origin_allowed(self, origin: str) -> bool:
        return self.origins.allowed(origin)

    def access_error(self, method: str, path: str, headers: dict[str, str]) -> ServiceError | None:
        """401 without a valid key, 403 with a key of too low a tier; None when the caller may go on."""
        needed = self.tiers.required(method, path)
        if needed is Tier.NONE:
            return None
        given = self.tiers.tier(headers.get("authorization", ""))
        if given is Tier.NONE:
            return Unauthorized("missing or invalid API key (send Authorization: Bearer <key>)")
        if given.value < needed.value:
            # No path in the message: error bodies drop anything that looks like a server path.
            return Forbidden("this operation needs an admin key (HUGLLAMA_ADMIN_KEYS); this key may only use models")
        return None

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
        is_probe = path in PROBE_PATHS
        if not self.hosts.allowed(headers.get("host")):
            # DNS rebinding: a page on another site that resolves its own name to 127.0.0.1 sends its own Host.
            err = Forbidden("host not allowed (set HUGLLAMA_ALLOWED_HOSTS to serve this name)", param="host")
            self._log_refusal(scope["method"], path, "host", headers.get("host"))
            await self._plain(send, 403, json.dumps(error_body(path, err)).encode(), rid, _JSON)
            request_id.reset(token)
            return
        origin = headers.get("origin")
        cors_headers: list[tuple[bytes, bytes]] = []
        if origin is not None:
            if not self.origin_allowed(origin):
                err = Forbidden("origin not allowed (add it to HUGLLAMA_ORIGINS)", param="origin")
                self._log_refusal(scope["method"], path, "origin", origin)
                await self._plain(send, 403, json.dumps(error_body(path, err)).encode(), rid, _JSON)
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
        status_holder = {"status": 500, "started": 0}

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
                status_holder["started"] = 1
                hdrs = list(message.get("headers", []))
                hdrs.append((b"x-request-id", rid.encode()))
                hdrs.extend(cors_headers)
                message = {**message, "headers": hdrs}
            await send(message)

        try:
            error: ServiceError | None = None
            if (not is_probe or self.auth_probes) and path != "/":
                error = self.access_error(scope["method"], path, headers)
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
                except Exception:
                    # Logged here, once, with the request id; not re-raised, or the server would log it again.
                    log_errors.exception("unhandled error on %s %s", scope["method"], path)
                    if status_holder["started"]:
                        return  # the stream is cut; the client sees the connection end
                    await self._error(send_wrapper, path, ServiceError("internal error"))
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

    def _log_refusal(self, method: str, path: str, what: str, value: str | None) -> None:
        # Refused before the request is counted: a Host or Origin from elsewhere is worth a line (DNS rebinding).
        self.metrics.requests.labels(protocol=_protocol(path), route=_route_label(path), status="403").inc()
        log.warning(
            "%s %s 403: %s %r not allowed",
            method,
            path,
            what,
            (value or "")[:200],
            extra={"method": method, "path": path, "status": 403},
        )

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
