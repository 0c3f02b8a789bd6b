"""Renders errors in each protocol's own shape and registers the app's exception handlers.

Ollama: `{"error": "..."}`. OpenAI: `{"error": {"message", "type", "param", "code"}}`. The protocol is
chosen by path: `/v1/` is OpenAI, everything else Ollama-shaped.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import InvalidRequest, ServiceError

log = logging.getLogger(__name__)


# An absolute filesystem path (two segments or more) not inside a URL: the server's layout is nobody's business.
_ABS_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s/'\"`<>]+/)+([^\s/'\"`<>]*)")


def public_message(message: str) -> str:
    """`message` without absolute paths of the server's filesystem (each becomes its last segment)."""
    return _ABS_PATH.sub(lambda m: m.group(1) or "<path>", message)


def openai_type(status: int) -> str:
    if status in (400, 413):
        return "invalid_request_error"
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status in (429, 503):
        return "server_busy_error" if status == 503 else "rate_limit_error"
    return "api_error"


def ollama_body(message: str) -> dict[str, Any]:
    return {"error": public_message(message)}


def openai_body(message: str, status: int, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": public_message(message), "type": openai_type(status), "param": param, "code": code}}


def is_openai_path(path: str) -> bool:
    return path.startswith("/v1/") or path == "/v1"


def error_body(path: str, exc: ServiceError) -> dict[str, Any]:
    if is_openai_path(path):
        return openai_body(exc.message, exc.status_code, param=exc.param, code=exc.code)
    return ollama_body(exc.message)


def error_response(path: str, exc: ServiceError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return JSONResponse(error_body(path, exc), status_code=exc.status_code, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    field = ".".join(loc) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        ctx = first.get("ctx") or {}
        return f"invalid JSON: {ctx.get('error', first.get('msg', ''))}", None
    if kind == "missing" and field:
        return f"{field} is required", field
    msg = first.get("msg", "invalid value")
    return (f"invalid value for {field}: {msg}" if field else msg), field


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> Response:
        if exc.status_code >= 500:
            log.warning("request failed: %s (%s)", exc.message, exc.code)
        return error_response(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        message, field = _validation_message(exc)
        return error_response(request.url.path, InvalidRequest(message, param=field))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if is_openai_path(request.url.path):
            body = openai_body(str(exc.detail), exc.status_code)
            return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
        # Ollama (gin) answers unknown routes and methods with plain text; other errors are {"error": ...}.
        text = {404: "404 page not found", 405: "405 method not allowed"}.get(exc.status_code)
        if text is None:
            return JSONResponse(ollama_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers)
        return Response(text, status_code=exc.status_code, media_type="text/plain", headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        err = ServiceError("internal error")
        return error_response(request.url.path, err)
