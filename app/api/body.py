"""The one body parser of every side (Ollama `/api/*`, OpenAI `/v1/*`, management `/api/v1/*`).

`JSONBodyRoute` is the route class of all three routers. It reads a route's body itself, as JSON whatever the
Content-Type (`curl -d` sends form-encoded, and Ollama accepts it), refuses nesting deeper than `MAX_JSON_DEPTH`,
and only then hands the value to FastAPI, which validates it into the route's declared body model (so /docs
shows every request body). The body-size limit is the service middleware's: it cuts the read here with a 413.

What a bad body is told is the protocol's own wording: `JSONBodyRoute.decode` words JSON errors as FastAPI does
(OpenAI, management); Ollama's routes override it with Go's leniencies and messages (ollama/routes.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.errors import InvalidRequest

MAX_JSON_DEPTH = 64
TOO_DEEP = f"JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)"


def check_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """InvalidRequest when arrays/objects nest deeper than `limit` (no request needs more; recursive code
    further on, from pydantic to JSON-schema compilers, would fail on it). Iterative: no recursion here."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            raise InvalidRequest(f"JSON nested too deeply (more than {limit} levels)")
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def parse_json_body(raw: bytes) -> Any:
    """Ollama-style body decoding: any content type, clear errors (Go's wording for a missing or broken body)."""
    if not raw.strip():
        raise InvalidRequest("missing request body")
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidRequest(f"invalid JSON: {e}") from None
    except RecursionError:
        raise InvalidRequest(TOO_DEEP) from None
    check_depth(value)
    return value


class _ParsedRequest(Request):
    """A request whose JSON body the route class has decoded: FastAPI takes `parsed` instead of parsing again."""

    parsed: Any = None

    async def json(self) -> Any:
        return self.parsed


class JSONBodyRoute(APIRoute):
    """Route class of every router: the body decoded by `decode` (JSON, depth-guarded) before FastAPI validates."""

    def decode(self, raw: bytes, model: type[BaseModel]) -> Any:
        """The body's JSON value, parse errors worded as FastAPI words its own. An empty body is left to FastAPI
        (None: it never asks for the value), which reports the missing body."""
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as e:
            error = {"type": "json_invalid", "loc": ("body", e.pos), "msg": "JSON decode error", "input": {}}
            raise RequestValidationError([{**error, "ctx": {"error": e.msg}}], body=e.doc) from None
        except RecursionError:  # as FastAPI's own parse failed on it: an HTTP error (no error code)
            raise HTTPException(400, TOO_DEEP) from None
        except ValueError:  # not UTF-8
            raise HTTPException(400, "There was an error parsing the body") from None
        check_depth(value)
        return value

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        model = self.body_field.field_info.annotation if self.body_field is not None else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return handler
        body_model: type[BaseModel] = model

        async def route(request: Request) -> Response:
            headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
            scope = {**request.scope, "headers": [*headers, (b"content-type", b"application/json")]}
            parsed = _ParsedRequest(scope, request.receive)
            parsed.parsed = self.decode(await parsed.body(), body_model)
            return await handler(parsed)

        return route
