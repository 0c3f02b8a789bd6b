"""Which output formats a request may ask for: the constraint spec a `format` / `response_format` maps to (the
validity rules are app/param_rules.py's, re-exported here). Pure Python (no torch, no xgrammar), so the HTTP layer
can import it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from app.errors import InvalidRequest
from app.param_rules import FORMAT_HINT, check_json_schema, validate_format

__all__ = ["ConstraintSpec", "check_json_schema", "close_objects", "spec_for_format", "validate_format"]


def spec_for_format(fmt: str | dict[str, Any] | None) -> ConstraintSpec | None:
    """The constraint a validated `format` asks for (None: unconstrained)."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return ConstraintSpec(kind="json")
    if isinstance(fmt, dict):
        return ConstraintSpec(kind="schema", schema=fmt)
    raise InvalidRequest(f"invalid format: {fmt!r}; {FORMAT_HINT}", param="format")


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
