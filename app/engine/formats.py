"""Which output formats a request may ask for: validation of `format` / `response_format` schemas and the
constraint spec they map to. Pure Python (no torch, no xgrammar), so the HTTP layer can import it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from app.errors import InvalidRequest

_FORMAT_HINT = 'expected "json" or a valid JSON Schema object'
_JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})


def check_json_schema(schema: Any, *, param: str, what: str = "format") -> None:
    """Raise InvalidRequest unless `schema` is a well-formed JSON Schema object (jsonschema when installed)."""
    if not isinstance(schema, dict):
        raise InvalidRequest(f"invalid {what}: {_FORMAT_HINT}", param=param)
    try:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError
    except ImportError:  # jsonschema is a dev dependency; fall back to the checks that matter for compiling
        _basic_schema_check(schema, param=param, what=what, path="")
        return
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        where = "/".join(str(p) for p in e.absolute_path)
        at = f" at '{where}'" if where else ""
        raise InvalidRequest(f"invalid {what}{at}: {e.message}; {_FORMAT_HINT}", param=param) from None


def _basic_schema_check(node: Any, *, param: str, what: str, path: str) -> None:
    if isinstance(node, bool):
        return
    if not isinstance(node, dict):
        raise InvalidRequest(
            f"invalid {what} at '{path or '/'}': a schema must be an object; {_FORMAT_HINT}", param=param
        )
    types = node.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not names or not all(isinstance(t, str) and t in _JSON_TYPES for t in names):
            raise InvalidRequest(f"invalid {what} at '{path or '/'}': bad type {types!r}; {_FORMAT_HINT}", param=param)
    props = node.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            raise InvalidRequest(f"invalid {what}: 'properties' must be an object; {_FORMAT_HINT}", param=param)
        for key, sub in props.items():
            _basic_schema_check(sub, param=param, what=what, path=f"{path}/properties/{key}")
    required = node.get("required")
    if required is not None and not (isinstance(required, list) and all(isinstance(r, str) for r in required)):
        raise InvalidRequest(f"invalid {what}: 'required' must be a list of strings; {_FORMAT_HINT}", param=param)
    for key in ("items", "additionalProperties", "not"):
        if key in node:
            _basic_schema_check(node[key], param=param, what=what, path=f"{path}/{key}")
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if key in node:
            subs = node[key]
            if not isinstance(subs, list):
                raise InvalidRequest(f"invalid {what}: '{key}' must be a list; {_FORMAT_HINT}", param=param)
            for i, sub in enumerate(subs):
                _basic_schema_check(sub, param=param, what=what, path=f"{path}/{key}/{i}")


def validate_format(fmt: str | dict[str, Any] | None, *, param: str = "format") -> None:
    """Check a request's `format` without a tokenizer: None, "", "json" or a JSON Schema object."""
    if fmt is None or fmt == "" or fmt == "json":
        return
    if isinstance(fmt, str):
        raise InvalidRequest(f"invalid format: {fmt!r}; {_FORMAT_HINT}", param=param)
    if not isinstance(fmt, dict):
        raise InvalidRequest(f"invalid format: a {type(fmt).__name__}; {_FORMAT_HINT}", param=param)
    check_json_schema(fmt, param=param)


def spec_for_format(fmt: str | dict[str, Any] | None) -> ConstraintSpec | None:
    """The constraint a validated `format` asks for (None: unconstrained)."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return ConstraintSpec(kind="json")
    if isinstance(fmt, dict):
        return ConstraintSpec(kind="schema", schema=fmt)
    raise InvalidRequest(f"invalid format: {fmt!r}; {_FORMAT_HINT}", param="format")


@dataclass(frozen=True)
class ConstraintSpec:
    kind: Literal["json", "schema", "tool_call"]
    schema: dict[str, Any] | None = None

    def cache_key(self) -> str:
        return json.dumps([self.kind, self.schema], sort_keys=True, separators=(",", ":"), default=str)


def close_objects(schema: Any, *, _in_all_of: bool = False) -> Any:
    """A copy of `schema` where objects that list `properties` but say nothing about extra keys forbid them.

    JSON Schema allows unlisted keys by default; a small model fills that freedom with junk keys and never
    closes the object. Objects without `properties` (e.g. bare {"type": "object"}) keep accepting any key, and
    allOf branches are left open because closing one would reject the keys of its siblings.
    """
    if isinstance(schema, list):
        return [close_objects(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas"):
            out[key] = {k: close_objects(v) for k, v in value.items()} if isinstance(value, dict) else value
        elif key == "allOf":
            out[key] = [close_objects(s, _in_all_of=True) for s in value] if isinstance(value, list) else value
        elif key in ("items", "additionalProperties", "not", "contains", "if", "then", "else", "anyOf", "oneOf"):
            out[key] = close_objects(value)
        elif key == "prefixItems":
            out[key] = close_objects(value)
        else:
            out[key] = value
    if (
        not _in_all_of
        and isinstance(out.get("properties"), dict)
        and "additionalProperties" not in out
        and "unevaluatedProperties" not in out
        and "patternProperties" not in out
    ):
        out["additionalProperties"] = False
    return out
