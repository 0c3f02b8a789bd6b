"""One remote backend at run time: its HTTP client, concurrency gate, model list, health, and the mapping of its
transport failures and HTTP errors onto the service's error tree (app/errors.py).

Failure rules (README "Remote backends"): unreachable -> 502 within the connect timeout; upstream 404 -> our
model-not-found; other 4xx -> the upstream's status and message; 401/403 -> 502 (our client did nothing wrong);
429 or our own concurrency limit -> 503 with Retry-After; read timeout -> 504. Nothing is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from app.errors import (
    ModelNotFound,
    Overloaded,
    ServiceError,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from app.remote.config import UpstreamConfig
from app.remote.metrics import UpstreamMetrics

log = logging.getLogger(__name__)

_ERROR_BODY_LIMIT = 64 * 1024
_HEALTH_READ_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class RemoteModel:
    """A model an upstream serves, as its /api/tags or /v1/models describes it."""

    id: str
    size_bytes: int = 0
    digest: str = ""
    modified_at: float = 0.0
    format: str = ""
    family: str = ""
    parameter_size: str = ""
    quantization_level: str = ""
    context_length: int | None = None


def error_message(body: bytes) -> str:
    """The upstream's own message from an Ollama `{"error": "..."}` or OpenAI `{"error": {"message"}}` body."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text[:500] or "no message"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)[:500]
        if err is not None:
            return str(err)[:500]
        if "message" in data:
            return str(data["message"])[:500]
    return text[:500]


class Upstream:
    """Runtime state of one configured upstream."""

    def __init__(self, cfg: UpstreamConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self.models: dict[str, RemoteModel] = {m: RemoteModel(id=m) for m in cfg.models or ()}
        self.up: bool | None = None  # None: not checked yet
        self.last_error: str | None = None
        self.checked_at: float | None = None
        self.in_flight = 0
        self.active_model: str | None = None  # chosen with POST /api/v1/models/load (the original design)
        self.metrics: UpstreamMetrics | None = None
        self._refresher: asyncio.Task[None] | None = None

    # --- lifecycle ---

    @property
    def client(self) -> httpx.AsyncClient:
        # Created on first use inside the running loop (a pool must not outlive its event loop).
        if self._client is None:
            headers = {"User-Agent": "hugllama-upstream"}
            if self.cfg.api_key is not None:
                headers["Authorization"] = f"Bearer {self.cfg.api_key.get_secret_value()}"
            self._client = httpx.AsyncClient(
                base_url=self.cfg.base_url,
                headers=headers,
                transport=self._transport,
                timeout=httpx.Timeout(
                    connect=self.cfg.connect_timeout,
                    read=self.cfg.read_timeout,
                    write=self.cfg.read_timeout,
                    pool=self.cfg.connect_timeout,
                ),
                limits=httpx.Limits(max_connections=self.cfg.max_concurrency + 2, max_keepalive_connections=8),
                trust_env=False,
            )
        return self._client

    def start(self, metrics: UpstreamMetrics | None) -> None:
        self.metrics = metrics
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def aclose(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(BaseException):
                await self._refresher
            self._refresher = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _refresh_loop(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.cfg.refresh_seconds)

    async def refresh(self) -> bool:
        """Health check and model discovery in one request; never raises."""
        path = "/api/tags" if self.cfg.kind == "ollama" else "/v1/models"
        try:
            resp = await self.client.get(
                path, timeout=httpx.Timeout(self.cfg.connect_timeout, read=_HEALTH_READ_TIMEOUT)
            )
            if resp.status_code != 200:
                raise UpstreamError(f"{path} answered {resp.status_code}: {error_message(resp.content)}")
            found = _parse_models(self.cfg.kind, resp.json())
        except Exception as e:  # a malformed answer must not end the refresh loop
            message = e.message if isinstance(e, ServiceError) else f"{type(e).__name__}: {e}"
            if self.up is not False:
                log.warning("upstream %s is down: %s", self.name, message)
            self.up, self.last_error = False, message
        else:
            if self.up is not True:
                log.info("upstream %s is up (%d models)", self.name, len(found))
            self.up, self.last_error = True, None
            if self.cfg.models is None:
                self.models = {m.id: m for m in found}
            else:  # a static list is an allow-list; the upstream's answer only adds facts
                self.models = {m: next((f for f in found if f.id == m), RemoteModel(id=m)) for m in self.cfg.models}
        self.checked_at = time.time()
        if self.metrics is not None:
            self.metrics.up.labels(upstream=self.name).set(1 if self.up else 0)
        return bool(self.up)

    # --- requests ---

    def count(self, status: str) -> None:
        if self.metrics is not None:
            self.metrics.requests.labels(upstream=self.name, status=status).inc()

    def _acquire(self) -> None:
        if self.in_flight >= self.cfg.max_concurrency:
            self.count("busy")
            err = Overloaded(
                f"upstream {self.name} is at its concurrency limit ({self.cfg.max_concurrency}); try again later"
            )
            raise err
        self.in_flight += 1
        if self.metrics is not None:
            self.metrics.in_flight.labels(upstream=self.name).inc()

    def release(self) -> None:
        self.in_flight -= 1
        if self.metrics is not None:
            self.metrics.in_flight.labels(upstream=self.name).dec()

    def transport_error(self, e: httpx.HTTPError, *, started: bool) -> ServiceError:
        """Our error for a transport failure before the first byte, or in the middle of an answer (then the
        stream that owns the request counts it when it closes)."""
        if isinstance(e, httpx.ConnectError | httpx.ConnectTimeout) and not started:
            self.count("unreachable")
            self.up, self.last_error = False, f"{type(e).__name__}: {e}"
            if self.metrics is not None:
                self.metrics.up.labels(upstream=self.name).set(0)
            return UpstreamUnavailable(f"upstream {self.name} is unreachable: {type(e).__name__}: {e}".rstrip(": "))
        if isinstance(e, httpx.TimeoutException):
            if not started:
                self.count("timeout")
            return UpstreamTimeout(f"upstream {self.name} did not answer within {self.cfg.read_timeout:g}s")
        if not started:
            self.count("unreachable")
        where = "in the middle of the answer" if started else "before answering"
        return UpstreamError(f"upstream {self.name} failed {where}: {type(e).__name__}: {e}".rstrip(": "))

    def http_error(self, status: int, body: bytes, display: str, headers: httpx.Headers) -> ServiceError:
        self.count(str(status))
        message = error_message(body)
        if status == 404:
            return ModelNotFound(display)
        if status in (401, 403):
            return UpstreamError(f"upstream {self.name} refused this service's credentials ({status}): {message}")
        if status == 429 or status == 503:
            err = Overloaded(f"upstream {self.name} is busy: {message}")
            retry = headers.get("retry-after", "")
            err.retry_after = int(retry) if retry.isdigit() else 1
            return err
        if 400 <= status < 500:
            return UpstreamRejected(f"upstream {self.name}: {message}", status=400 if status == 422 else status)
        return UpstreamError(f"upstream {self.name} answered {status}: {message}")

    async def open(self, path: str, body: dict[str, Any], display: str) -> httpx.Response:
        """POST `body` and return the streaming response once its headers arrived (a 2xx). The caller must
        `close(resp)` it; every failure before that raises here with the slot released."""
        self._acquire()
        try:
            request = self.client.build_request("POST", path, json=body)
            try:
                resp = await self.client.send(request, stream=True)
            except httpx.HTTPError as e:
                raise self.transport_error(e, started=False) from None
            if resp.status_code >= 400:
                try:
                    data = await _read_limited(resp)
                except httpx.HTTPError:
                    data = b""
                finally:
                    await resp.aclose()
                raise self.http_error(resp.status_code, data, display, resp.headers)
        except BaseException:
            self.release()
            raise
        return resp

    async def close(self, resp: httpx.Response, status: str) -> None:
        try:
            await resp.aclose()
        finally:
            self.count(status)
            self.release()

    async def post_json(self, path: str, body: dict[str, Any], display: str) -> Any:
        """A non-streaming request (embeddings, loads) with the same gate and error mapping."""
        resp = await self.open(path, body, display)
        status = str(resp.status_code)
        try:
            data = await resp.aread()
        except httpx.HTTPError as e:
            status = "timeout" if isinstance(e, httpx.TimeoutException) else "stream_error"
            raise self.transport_error(e, started=True) from None
        finally:
            await self.close(resp, status)
        try:
            return json.loads(data)
        except json.JSONDecodeError:
            raise UpstreamError(f"upstream {self.name} answered invalid JSON") from None

    def status(self) -> dict[str, Any]:
        """For the status API: never the API key."""
        return {
            "name": self.name,
            "kind": self.cfg.kind,
            "preset": self.cfg.preset,
            "backend_url": self.cfg.base_url,
            "up": self.up,
            "last_error": self.last_error,
            "checked_at": self.checked_at,
            "in_flight": self.in_flight,
            "max_concurrency": self.cfg.max_concurrency,
            "models": sorted(self.models),
            "active_model": self.active_model,
        }


async def _read_limited(resp: httpx.Response) -> bytes:
    data = b""
    async for part in resp.aiter_bytes():
        data += part
        if len(data) > _ERROR_BODY_LIMIT:
            break
    return data


async def lines(resp: httpx.Response) -> AsyncIterator[str]:
    async for line in resp.aiter_lines():
        if line.strip():
            yield line


def _parse_models(kind: str, data: Any) -> list[RemoteModel]:
    out: list[RemoteModel] = []
    if kind == "ollama":
        for m in data.get("models") or []:
            details = m.get("details") or {}
            out.append(
                RemoteModel(
                    id=str(m.get("model") or m.get("name")),
                    size_bytes=int(m.get("size") or 0),
                    digest=str(m.get("digest") or ""),
                    modified_at=_timestamp(m.get("modified_at")),
                    format=str(details.get("format") or ""),
                    family=str(details.get("family") or ""),
                    parameter_size=str(details.get("parameter_size") or ""),
                    quantization_level=str(details.get("quantization_level") or ""),
                )
            )
        return out
    for m in data.get("data") or []:
        ctx = m.get("max_model_len")
        out.append(
            RemoteModel(
                id=str(m["id"]),
                modified_at=float(m.get("created") or 0),
                context_length=int(ctx) if isinstance(ctx, int) else None,
            )
        )
    return out


def _timestamp(value: Any) -> float:
    if not isinstance(value, str):
        return 0.0
    from datetime import datetime

    # Go writes nanoseconds; fromisoformat takes at most microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0
