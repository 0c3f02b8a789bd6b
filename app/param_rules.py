"""The rules for generation options: the range of each SamplingParams field, the stop-sequence limits, which
output formats (JSON schemas) are valid, and what stored options (an alias's, a model's defaults) may hold. One
home for every caller: the engine checks each request's merged options, the registry checks what it stores, and
the protocols check their wire values with the same rules.

It lives beside SamplingParams (app/params.py), below the registry and the engine, because both use it.
Each rule raises InvalidRequest with `param` set to the SamplingParams field name; the protocols translate the
name and the wording into their own (Ollama `options.repeat_penalty`, OpenAI `top_p`), and the OpenAI schema
takes its Field bounds from `bounds()`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from app.errors import InvalidRequest
from app.params import SamplingParams
from app.settings import Settings

# torch seeds are 64-bit; OpenAI and Ollama clients send signed 64-bit integers. -1 means "random" (llama.cpp's
# and Ollama's convention).
SEED_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Range:
    """Inclusive (ge, le) or exclusive (gt) bounds of one field, and how the rule reads after "must be"."""

    text: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None

    def ok(self, value: float) -> bool:
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
        )

    def bounds(self) -> dict[str, float]:
        return {k: v for k, v in (("ge", self.ge), ("gt", self.gt), ("le", self.le)) if v is not None}


# Keyed by SamplingParams field. The order is the order problems are reported in.
RANGES: dict[str, Range] = {
    "temperature": Range(">= 0", ge=0),
    "top_p": Range("between 0 and 1", ge=0, le=1),
    "top_k": Range(">= 0", ge=0),
    "min_p": Range("between 0 and 1", ge=0, le=1),
    "typical_p": Range("in (0, 1]", gt=0, le=1),
    "repetition_penalty": Range("> 0", gt=0),
    "repeat_last_n": Range(">= -1 (-1 = the whole context, 0 = off)", ge=-1),
    "max_tokens": Range(">= -2 (-1 = unbounded, -2 = fill the context)", ge=-2),
    "min_tokens": Range(">= 0", ge=0),
    "num_ctx": Range(">= 4", ge=4),
    "num_keep": Range(">= -1", ge=-1),
    "top_logprobs": Range("between 0 and 20", ge=0, le=20),
    # integers only, so ge=-1 is "-1 or from 0"
    "seed": Range(f"-1 (random) or between 0 and {SEED_MAX}", ge=-1, le=SEED_MAX),
}

# Stored options use SamplingParams names, plus an alias's response format.
OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(SamplingParams)) | {"format"}


def bounds(field: str) -> dict[str, Any]:
    """pydantic Field(...) keyword arguments for a field's range (the OpenAI schema uses them)."""
    return dict(RANGES[field].bounds())


def broken(field: str, value: Any) -> Range | None:
    """The rule `value` breaks, or None (unset values and fields without a range break nothing)."""
    rule = RANGES.get(field)
    if rule is None or value is None or rule.ok(value):
        return None
    return rule


def check_value(field: str, value: Any) -> None:
    if field in RANGES and value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise InvalidRequest(f"{field} must be a number", param=field)  # stored options keep values as given
    rule = broken(field, value)
    if rule is not None:
        raise InvalidRequest(f"{field} must be {rule.text}", param=field)


def check_params(p: SamplingParams) -> None:
    """Range checks that apply whatever protocol the options came from (aliases and model defaults included)."""
    for field in RANGES:
        check_value(field, getattr(p, field))


def check_stop(stop: Any, settings: Settings) -> None:
    """Stop sequences, a request's or stored ones: strings, how many, how long (HUGLLAMA_MAX_STOP, _MAX_STOP_CHARS)."""
    if not stop:
        return
    items = (stop,) if isinstance(stop, str) else stop  # stored options may hold one string (from_dict takes it)
    if not isinstance(items, list | tuple):
        raise InvalidRequest("stop must be a list of strings", param="stop")
    if len(items) > settings.max_stop:
        raise InvalidRequest(f"stop allows at most {settings.max_stop} sequences (HUGLLAMA_MAX_STOP)", param="stop")
    for s in items:
        if not isinstance(s, str):
            raise InvalidRequest("stop sequences must be strings", param="stop")
        if len(s) > settings.max_stop_chars:
            raise InvalidRequest(
                f"a stop sequence is longer than {settings.max_stop_chars} characters (HUGLLAMA_MAX_STOP_CHARS)",
                param="stop",
            )


def validate_options(options: dict[str, Any]) -> SamplingParams:
    """Stored options (an alias's, or a model's defaults): known names, valid types and ranges, a valid format."""
    unknown = sorted(set(options) - OPTION_NAMES)
    if unknown:
        valid = ", ".join(sorted(OPTION_NAMES))
        raise InvalidRequest(f"unknown option {unknown[0]!r} (valid options: {valid})", param=f"options.{unknown[0]}")
    fmt = options.get("format")
    if "format" in options:
        if not (fmt == "json" or isinstance(fmt, dict)):
            raise InvalidRequest('alias format must be "json" or a JSON schema object', param="format")
        validate_format(fmt)  # a schema the engine would refuse on every request is refused when it is stored
    try:
        params = SamplingParams.from_dict({k: v for k, v in options.items() if k != "format"})
    except (TypeError, ValueError) as e:
        raise InvalidRequest(f"invalid options: {e}", param="options") from None
    try:
        check_params(params)
    except InvalidRequest as e:
        raise InvalidRequest(e.message, param=f"options.{e.param}") from None  # named where the request holds it
    return params


FORMAT_HINT = 'expected "json" or a valid JSON Schema object'
_JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})


def check_json_schema(schema: Any, *, param: str, what: str = "format") -> None:
    """Raise InvalidRequest unless `schema` is a well-formed JSON Schema object (jsonschema when installed)."""
    if not isinstance(schema, dict):
        raise InvalidRequest(f"invalid {what}: {FORMAT_HINT}", param=param)
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
        raise InvalidRequest(f"invalid {what}{at}: {e.message}; {FORMAT_HINT}", param=param) from None


def _basic_schema_check(node: Any, *, param: str, what: str, path: str) -> None:
    if isinstance(node, bool):
        return
    if not isinstance(node, dict):
        raise InvalidRequest(
            f"invalid {what} at '{path or '/'}': a schema must be an object; {FORMAT_HINT}", param=param
        )
    types = node.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not names or not all(isinstance(t, str) and t in _JSON_TYPES for t in names):
            raise InvalidRequest(f"invalid {what} at '{path or '/'}': bad type {types!r}; {FORMAT_HINT}", param=param)
    props = node.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            raise InvalidRequest(f"invalid {what}: 'properties' must be an object; {FORMAT_HINT}", param=param)
        for key, sub in props.items():
            _basic_schema_check(sub, param=param, what=what, path=f"{path}/properties/{key}")
    required = node.get("required")
    if required is not None and not (isinstance(required, list) and all(isinstance(r, str) for r in required)):
        raise InvalidRequest(f"invalid {what}: 'required' must be a list of strings; {FORMAT_HINT}", param=param)
    for key in ("items", "additionalProperties", "not"):
        if key in node:
            _basic_schema_check(node[key], param=param, what=what, path=f"{path}/{key}")
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if key in node:
            subs = node[key]
            if not isinstance(subs, list):
                raise InvalidRequest(f"invalid {what}: '{key}' must be a list; {FORMAT_HINT}", param=param)
            for i, sub in enumerate(subs):
                _basic_schema_check(sub, param=param, what=what, path=f"{path}/{key}/{i}")


def validate_format(fmt: str | dict[str, Any] | None, *, param: str = "format") -> None:
    """Check a request's `format` without a tokenizer: None, "", "json" or a JSON Schema object."""
    if fmt is None or fmt == "" or fmt == "json":
        return
    if isinstance(fmt, str):
        raise InvalidRequest(f"invalid format: {fmt!r}; {FORMAT_HINT}", param=param)
    if not isinstance(fmt, dict):
        raise InvalidRequest(f"invalid format: a {type(fmt).__name__}; {FORMAT_HINT}", param=param)
    check_json_schema(fmt, param=param)
