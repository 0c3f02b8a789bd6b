"""What every request goes through, one pure-ASGI middleware per concern, outermost first (`install` stacks them):

1. `RequestIdMiddleware`: the request id (the client's X-Request-Id when well-formed), on the response and in logs.
2. `HostOriginMiddleware`: the Host check (DNS rebinding) and CORS (Ollama's OLLAMA_ORIGINS semantics).
3. `AccessLogMiddleware`: the access log line and request counting (probes are neither).
4. `KeyMiddleware`: API keys and their tiers.
5. `DrainingMiddleware`: refusing work while the server drains.
6. `BodySizeMiddleware`: the body size limit (Content-Length up front, the bytes as they arrive).
7. `InFlightMiddleware`: counting the requests a drain waits for.
8. `ErrorMiddleware`: the one log line (with the request id) for an unexpected error, and its 500.

A refusal at any step is answered in the protocol's error shape and ends the request there, so the order is the
precedence: Host and Origin, then keys, then draining, then size."""

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


def _is_probe(scope: Scope) -> bool:
    return scope["path"] in PROBE_PATHS


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    """`send` with `extra` headers added to the response start."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped


async def _send_error(send: Send, path: str, exc: ServiceError) -> None:
    body = json.dumps(error_body(path, exc)).encode()
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    if exc.status_code == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _too_large(limit: int) -> InvalidRequest:
    err = InvalidRequest(f"request body larger than {limit} bytes")
    err.status_code = 413
    return err


class _HTTPMiddleware:
    """Base: `handle` sees HTTP requests; other scopes (lifespan), and probes where `skips_probes`, pass through."""

    skips_probes = False

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.skips_probes and _is_probe(scope)):
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class RequestIdMiddleware(_HTTPMiddleware):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = _headers(scope).get("x-request-id", "")
        if not _REQUEST_ID.match(rid):
            rid = uuid.uuid4().hex
        token = request_id.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        try:
            await self.app(scope, receive, _with_headers(send, [(b"x-request-id", rid.encode())]))
        finally:
            request_id.reset(token)


class HostOriginMiddleware(_HTTPMiddleware):
    """403 for a Host or an Origin from elsewhere (logged and counted here: the access log never sees them); CORS
    headers on every answer to an allowed Origin, and the preflight answered here."""

    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics) -> None:
        super().__init__(app)
        self.metrics = metrics
        self.hosts = HostPolicy(settings)
        self.origins = OriginPolicy(settings)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        if not self.hosts.allowed(headers.get("host")):
            # DNS rebinding: a page on another site that resolves its own name to 127.0.0.1 sends its own Host.
            err = Forbidden("host not allowed (set HUGLLAMA_ALLOWED_HOSTS to serve this name)", param="host")
            await self._refuse(scope, send, err, "host", headers.get("host"))
            return
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        if not self.origins.allowed(origin):
            err = Forbidden("origin not allowed (add it to HUGLLAMA_ORIGINS)", param="origin")
            await self._refuse(scope, send, err, "origin", origin)
            return
        cors = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"vary", b"Origin"),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-expose-headers", b"X-Request-Id, Retry-After"),
        ]
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            cors += [
                (b"access-control-allow-methods", b"GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"),
                (b"access-control-allow-headers", _ALLOW_HEADERS.encode()),
                (b"access-control-max-age", b"86400"),
            ]
            await send({"type": "http.response.start", "status": 204, "headers": cors})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, _with_headers(send, cors))

    async def _refuse(self, scope: Scope, send: Send, err: ServiceError, what: str, value: str | None) -> None:
        method, path = scope["method"], scope["path"]
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
        body = json.dumps(error_body(path, err)).encode()
        await send({"type": "http.response.start", "status": 403, "headers": _JSON})
        await send({"type": "http.response.body", "body": body})


class AccessLogMiddleware(_HTTPMiddleware):
    """One log line and one count per request (not probes), with its status; a stream the client left is 499."""

    skips_probes = True

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        # The status sent, whether the response body finished and whether the client went away.
        flow = {"status": 500, "completed": False, "disconnected": False}

        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                flow["disconnected"] = True
            return message

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                flow["completed"] = True
            if message["type"] == "http.response.start":
                flow["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            self._log(scope, int(flow["status"]), cut=bool(flow["disconnected"] and not flow["completed"]), start=start)

    def _log(self, scope: Scope, sent: int, *, cut: bool, start: float) -> None:
        method, path = scope["method"], scope["path"]
        # Started, never finished, and the client went away: a stopped stream (Starlette ends the body without
        # an error). Logged and counted as 499, as a non-streamed request the client abandons is.
        cut = sent < 400 and cut
        status = 499 if cut else sent
        self.metrics.requests.labels(protocol=_protocol(path), route=_route_label(path), status=str(status)).inc()
        if status in (503, 429):
            self.metrics.failures.labels(reason="overloaded" if status == 503 else "rate_limited").inc()
        log.info(
            "%s %s %d %.1fms%s",
            method,
            path,
            status,
            (time.perf_counter() - start) * 1000,
            f" (client disconnected mid-stream; {sent} had been sent)" if cut else "",
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round((time.perf_counter() - start) * 1000, 1),
                **({"client_disconnected": True, "sent_status": sent} if cut else {}),
            },
        )


class KeyMiddleware(_HTTPMiddleware):
    """401 without a valid key, 403 with a key of too low a tier (probes only with HUGLLAMA_AUTH_PROBES; / never)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        super().__init__(app)
        self.tiers = KeyTiers(settings)
        self.auth_probes = settings.auth_probes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        error = None
        if (not _is_probe(scope) or self.auth_probes) and path != "/":
            error = self.access_error(scope["method"], path, _headers(scope).get("authorization", ""))
        if error is not None:
            await _send_error(send, path, error)
            return
        await self.app(scope, receive, send)

    def access_error(self, method: str, path: str, authorization: str) -> ServiceError | None:
        """None when the caller may go on."""
        needed = self.tiers.required(method, path)
        if needed is Tier.NONE:
            return None
        given = self.tiers.tier(authorization)
        if given is Tier.NONE:
            return Unauthorized("missing or invalid API key (send Authorization: Bearer <key>)")
        if given.value < needed.value:
            # No path in the message: error bodies drop anything that looks like a server path.
            return Forbidden("this operation needs an admin key (HUGLLAMA_ADMIN_KEYS); this key may only use models")
        return None


class DrainingMiddleware(_HTTPMiddleware):
    """503 for new work while the server drains (probes still answer: they report the drain)."""

    skips_probes = True

    def __init__(self, app: ASGIApp, lifecycle: Lifecycle) -> None:
        super().__init__(app)
        self.lifecycle = lifecycle

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.lifecycle.draining:
            await _send_error(send, scope["path"], ShuttingDown("server is shutting down"))
            return
        await self.app(scope, receive, send)


class BodySizeMiddleware(_HTTPMiddleware):
    """413 when Content-Length says the body is over the limit; otherwise the bytes are counted as they arrive, and
    reading past the limit raises the same 413 (answered in the protocol's shape by the app's error handlers)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        super().__init__(app)
        self.max_body = settings.max_body_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = _headers(scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _send_error(send, scope["path"], _too_large(self.max_body))
            return
        await self.app(scope, receive if _is_probe(scope) else self._limited(receive), send)

    def _limited(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.max_body

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _too_large(limit)
            return message

        return wrapped


class InFlightMiddleware(_HTTPMiddleware):
    """Counts the requests at work (not probes): a drain waits for them."""

    skips_probes = True

    def __init__(self, app: ASGIApp, lifecycle: Lifecycle) -> None:
        super().__init__(app)
        self.lifecycle = lifecycle

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.lifecycle.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.lifecycle.leave()


class ErrorMiddleware(_HTTPMiddleware):
    """An unexpected error: logged here, once, with the request id, and answered with a 500 in the protocol's shape
    (not re-raised, or the server would log it again). After the first byte the stream is cut instead. Probes are
    left to the server's own error handling."""

    skips_probes = True

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log_errors.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not started:  # else the stream is cut; the client sees the connection end
                await _send_error(send, scope["path"], ServiceError("internal error"))


def install(app: FastAPI, settings: Settings, metrics: Metrics, lifecycle: Lifecycle) -> None:
    # add_middleware puts each one outside those added before it: innermost first.
    app.add_middleware(ErrorMiddleware)
    app.add_middleware(InFlightMiddleware, lifecycle=lifecycle)
    app.add_middleware(BodySizeMiddleware, settings=settings)
    app.add_middleware(DrainingMiddleware, lifecycle=lifecycle)
    app.add_middleware(KeyMiddleware, settings=settings)
    app.add_middleware(AccessLogMiddleware, metrics=metrics)
    app.add_middleware(HostOriginMiddleware, settings=settings, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
